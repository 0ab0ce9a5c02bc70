#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) prefill/decode throughput, the same measurement as the engine's
`examples/bench.rs`: the GuardReasoner instruction repeated to N prompt tokens (BOS first), one
batch prefill (logits of the last position only, as the engine computes), then M single-token
greedy decode steps, f32 KV cache (LLAMA_CPP_KV_CACHE=f16: llama.cpp's default f16 cache, as
the engine's GUARDREASONER_KV_CACHE=f16).

Usage: bench_llama_cpp.py MODEL.gguf [PROMPT_TOKENS=357] [NEW_TOKENS=200] [THREADS=2]

LLAMA_CPP_NO_EXTRA_BUFFERS=1: see llama_cpp_options.py.
"""
import os
import sys
import time

import llama_cpp_options  # noqa: F401  (LLAMA_CPP_NO_EXTRA_BUFFERS)
import numpy as np
from llama_cpp import Llama


def main():
    path = sys.argv[1]
    n_prompt = int(sys.argv[2]) if len(sys.argv) > 2 else 357
    n_new = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    kv = {"f32": 0, "f16": 1}[os.environ.get("LLAMA_CPP_KV_CACHE", "f32")]  # GGML types
    llm = Llama(model_path=path, n_ctx=n_prompt + n_new + 8, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, type_k=kv, type_v=kv, flash_attn=False, logits_all=False, verbose=False)
    text = "You are a classifier for analyzing interactions between humans and AI. " * 64
    ids = ([llm.token_bos()] + llm.tokenize(text.encode(), add_bos=False, special=True))[:n_prompt]
    n_vocab = llm.n_vocab()

    def last_logits():
        # logits_all=False: llama.cpp computed only the last position's row; read it directly
        # (llama-cpp-python's `scores` are filled only with logits_all=True).
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))

    t = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - t
    nxt = int(np.argmax(last_logits()))
    t = time.perf_counter()
    for _ in range(n_new):
        llm.eval([nxt])
        nxt = int(np.argmax(last_logits()))
    decode = time.perf_counter() - t
    print(f"llama.cpp ({threads} threads): prefill {len(ids)} tokens = {len(ids) / prefill:.1f} tok/s; "
          f"decode {n_new} tokens = {n_new / decode:.1f} tok/s")


if __name__ == "__main__":
    main()
