#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) time for the same guard verdicts as the engine's
`examples/verdict.rs`: for each item of IDS.json (written by that example: the prompt ids and
the output ids of a released GuardReasoner-1B verdict), one batch prefill of the prompt, then
one single-token step per output token after the first (greedy decoding of that output),
f32 KV cache, no flash attention.

Usage: bench_verdict_llama_cpp.py MODEL.gguf IDS.json [THREADS=2]

LLAMA_CPP_NO_EXTRA_BUFFERS=1: see llama_cpp_options.py.
"""
import json
import sys
import time

import llama_cpp_options  # noqa: F401  (LLAMA_CPP_NO_EXTRA_BUFFERS)
from llama_cpp import Llama


def main():
    path, ids_path = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    items = json.load(open(ids_path))
    n_ctx = max(len(i["prompt"]) + len(i["output"]) for i in items) + 8
    llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, type_k=0, type_v=0, flash_attn=False, logits_all=False,
                verbose=False)
    total = 0.0
    for k, item in enumerate(items):
        llm.reset()
        t = time.perf_counter()
        llm.eval(item["prompt"])
        for token in item["output"][:-1]:
            llm.eval([token])
        ms = (time.perf_counter() - t) * 1000
        total += ms
        print(f"item {k}: {len(item['prompt'])} prompt + {len(item['output'])} generated tokens: {ms:.0f} ms")
    print(f"llama.cpp ({threads} threads) total: {total:.0f} ms")


if __name__ == "__main__":
    main()
