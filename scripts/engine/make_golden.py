#!/usr/bin/env python3
"""Golden outputs from llama.cpp (PyPI llama-cpp-python) for the engine's parity tests.

For SmolLM2-135M-Instruct Q4_1 (fetched by scripts/fetch-test-assets.sh):
  smollm2_golden.json          token ids of several prompts (parse_special, no BOS), the ~360
                               token guard prompt ids (BOS first), 200-token greedy
                               continuations of it (argmax at every step, end-of-generation ids
                               not treated specially) with llama.cpp's top-2 logit gap at each
                               step, llama.cpp's end-of-generation ids and timings
  smollm2_guard_topk_ids.npy   (n, 8) int32: llama.cpp's 8 largest logits' ids per position
  smollm2_guard_topk_logits.npy (n, 8) float32: their values
  smollm2_guard_last_logits.npy (vocab,) float32: the full logits row of the last position
  smollm2_f32_topk_*.npy       the same for the "F32 twin": the file with every Q4_1 tensor
                               dequantized to F32 (written to a temporary directory). llama.cpp
                               computes Q4_1 with activations rounded to 8 bits per block; the
                               engine computes Q4_1 weights dequantized, so the twin is the
                               like-for-like reference (expect ~1e-3), the Q4_1 file the
                               within-quantization-noise one.
For the tiny random model (scripts/engine/make_tiny_llama.py):
  tiny_llama_golden.json       prompt ids and a 200-token greedy continuation
  tiny_llama_logits.npy        (n, vocab) float32: logits of every position
  Computed on an F32 copy of tiny-llama.gguf (the F16 weights are exact in F32): llama.cpp
  rounds activations to f16 when multiplying F16 weights, the engine computes in f32.

llama.cpp runs with a float32 KV cache (type_k = type_v = 0) and without flash attention.

Usage: make_golden.py [ASSETS_DIR] [FIXTURES_DIR]
  ASSETS_DIR defaults to $GUARDREASONER_TEST_ASSETS or <repo>/.cache/test-assets
Needs: llama-cpp-python, numpy (PyPI).
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import llama_cpp
from llama_cpp import Llama

REPO = Path(__file__).resolve().parents[2]
THREADS = 2
TOPK = 8
CONTINUATION = 200

INSTRUCTION = (
    "You are a classifier for analyzing interactions between humans and AI. \n\n"
    "Given a request from a human user and a response from an AI assistant, finish three tasks.\n\n"
    "Task 1: determine whether the human user's request is harmful or unharmful.\n"
    "Task 2: determine whether the AI assistant's response is a refusal or compliance. \n"
    "Task 3: determine whether the AI assistant's response is harmful or unharmful. \n\n"
    "You must think step by step. Keep consistency between the reasoning and the Answers.\n"
)
REQUEST = (
    "My neighbor's dog barks all night and I haven't slept properly in weeks. I've talked to "
    "them twice and nothing changed. What are some things I can do about it? Be specific."
)
RESPONSE = (
    "I'm sorry you're dealing with that; losing sleep for weeks is exhausting. Here are some "
    "steps that usually help:\n\n1. Keep a log: write down the dates, times and how long the "
    "barking lasts for about two weeks.\n2. Write a polite letter to your neighbor with the log "
    "attached, suggesting specific fixes such as bringing the dog inside at night.\n3. Check "
    "your local noise ordinance; many cities limit continuous barking after 10 p.m.\n4. Try "
    "mediation: community mediation services are often free and work well for disputes "
    "between neighbors.\n5. If nothing else works, file a noise complaint with animal control "
    "or your city's non-emergency line, and bring your log.\n\nIn the meantime, earplugs or a "
    "white-noise machine can help you sleep. Avoid confronting the neighbor angrily or doing "
    "anything to the dog, since that could make things worse and get you into legal trouble."
)
GUARD_PROMPT = INSTRUCTION + "\n" + f"Human user:\n{REQUEST}\n\nAI assistant:\n{RESPONSE}\n\n"

TOKENIZER_PROMPTS = [
    GUARD_PROMPT,
    "Hello world! 12345 1,000,000 and 3.14159; version 2.0.1-rc3",
    "Café naïve — 東京 🚀 emoji\ttabs\n\n\nnewlines  double  spaces",
    "<|im_start|>user\nIs this harmful?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x**2  # squared\n\n\tindented\r\nwindows line",
    "I'm sure they'll say it's fine, don't you think? WE'LL SEE. You've I'd",
    "   leading and trailing spaces   ",
    "",
]


def open_model(path, n_ctx):
    return Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=THREADS,
        n_threads_batch=THREADS, logits_all=True, type_k=0, type_v=0, flash_attn=False,
        verbose=False, seed=0,
    )


def all_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def greedy(llm, logits_last, steps):
    """Argmax continuation; returns ids and llama.cpp's top-2 gap at each step."""
    ids, gaps = [], []
    row = logits_last
    for _ in range(steps):
        top2 = np.sort(row)[-2:]
        gaps.append(round(float(top2[1] - top2[0]), 4))
        ids.append(int(np.argmax(row)))
        llm.eval([ids[-1]])
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return ids, gaps


def copy_metadata(reader, writer, keep=lambda key: True):
    """Copy the key/value metadata of a GGUFReader into a GGUFWriter (keys `keep` accepts; the
    GGUF.* header fields and general.architecture, which the writer sets, never)."""
    from gguf import GGUFValueType
    for k, f in reader.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or not keep(k):
            continue
        if f.types[0] == GGUFValueType.ARRAY:
            writer.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            writer.add_key_value(k, f.contents(), f.types[0])


def dequantized_twin(src, dst, types):
    """Copy a GGUF with tensors of `types` dequantized to F32 (metadata unchanged)."""
    from gguf import GGUFReader, GGUFWriter
    from gguf.quants import dequantize
    r = GGUFReader(str(src))
    w = GGUFWriter(str(dst), "llama")
    copy_metadata(r, w)
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]
        if t.tensor_type.name in types:
            w.add_tensor(t.name, dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape))
        else:
            w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def save_topk(fixtures, prefix, logits):
    order = np.argsort(-logits, axis=1, kind="stable")[:, :TOPK]
    np.save(fixtures / f"{prefix}_topk_ids.npy", order.astype(np.int32))
    np.save(fixtures / f"{prefix}_topk_logits.npy", np.take_along_axis(logits, order, axis=1))


def smollm2(assets, fixtures):
    path = assets / "SmolLM2-135M-Instruct.Q4_1.gguf"
    llm = open_model(path, 1024)
    prompts = [{"text": t, "ids": llm.tokenize(t.encode(), add_bos=False, special=True)} for t in TOKENIZER_PROMPTS]
    bos = llm.token_bos()
    guard_ids = [bos] + llm.tokenize(GUARD_PROMPT.encode(), add_bos=False, special=True)

    t0 = time.perf_counter()
    logits = all_logits(llm, guard_ids)
    prefill_s = time.perf_counter() - t0
    save_topk(fixtures, "smollm2_guard", logits)
    np.save(fixtures / "smollm2_guard_last_logits.npy", logits[-1])

    # Greedy continuation, one token per eval, argmax as the engine's greedy sampler (first max).
    t0 = time.perf_counter()
    continuation, gaps = greedy(llm, logits[-1], CONTINUATION)
    decode_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        twin_path = Path(tmp) / "smollm2-q4_1-as-f32.gguf"
        dequantized_twin(path, twin_path, {"Q4_1"})
        twin = open_model(twin_path, 1024)
        twin_logits = all_logits(twin, guard_ids)
        save_topk(fixtures, "smollm2_f32", twin_logits)
        twin_continuation, twin_gaps = greedy(twin, twin_logits[-1], CONTINUATION)
        del twin

    eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)] \
        if hasattr(llama_cpp, "llama_vocab_is_eog") else []
    golden = {
        "model": path.name,
        "llama_cpp_python": llama_cpp.__version__,
        "bos": bos,
        "eog_ids": eog,
        "prompts": prompts,
        "guard_prompt": {"text": GUARD_PROMPT, "ids": guard_ids},
        "logits": {"topk": TOPK, "positions": len(guard_ids)},
        "continuation": continuation,
        "continuation_top2_gaps": gaps,
        "continuation_text": llm.detokenize(continuation).decode("utf-8", errors="replace"),
        "f32_twin_continuation": twin_continuation,
        "f32_twin_continuation_top2_gaps": twin_gaps,
        "llama_cpp_timing": {
            "threads": THREADS,
            "prefill_tokens": len(guard_ids),
            "prefill_tokens_per_s": round(len(guard_ids) / prefill_s, 1),
            "decode_tokens": CONTINUATION,
            "decode_tokens_per_s": round(CONTINUATION / decode_s, 1),
        },
    }
    (fixtures / "smollm2_golden.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print(f"smollm2: Q4_1 vs F32 twin: max abs logit diff {np.abs(logits - twin_logits).max():.3f}, "
          f"top-1 agreement {(logits.argmax(1) == twin_logits.argmax(1)).sum()}/{len(guard_ids)}")
    print(f"smollm2: {len(guard_ids)} prompt tokens, prefill {len(guard_ids) / prefill_s:.1f} tok/s, "
          f"decode {CONTINUATION / decode_s:.1f} tok/s ({THREADS} threads); eog {eog}")


def tiny(fixtures):
    with tempfile.TemporaryDirectory() as tmp:
        twin_path = Path(tmp) / "tiny-llama-f32.gguf"
        dequantized_twin(fixtures / "tiny-llama.gguf", twin_path, {"F16"})
        llm = open_model(twin_path, 512)
        text = "Human user:\nHow do I bake a cake? Task 1: harmful or unharmful.\n\nAI assistant:\nNone\n\n"
        ids = [llm.token_bos()] + llm.tokenize(text.encode(), add_bos=False, special=True)
        logits = all_logits(llm, ids)
        continuation, gaps = greedy(llm, logits[-1], CONTINUATION)
        del llm
    np.save(fixtures / "tiny_llama_logits.npy", logits)
    golden = {"text": text, "ids": ids, "continuation": continuation, "continuation_top2_gaps": gaps}
    (fixtures / "tiny_llama_golden.json").write_text(json.dumps(golden) + "\n")
    print(f"tiny: {len(ids)} tokens, logits {logits.shape}, min top-2 gap in continuation {min(gaps)}")


def main():
    assets = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(
        os.environ.get("GUARDREASONER_TEST_ASSETS", REPO / ".cache/test-assets"))
    fixtures = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "crates/engine/tests/fixtures"
    tiny(fixtures)
    smollm2(assets, fixtures)


if __name__ == "__main__":
    main()
