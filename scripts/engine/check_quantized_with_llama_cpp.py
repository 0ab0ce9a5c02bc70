#!/usr/bin/env python3
"""Check that `quantize` output loads in llama.cpp and store llama.cpp's logits as a fixture.

Quantizes the tiny fixture model (crates/engine/tests/fixtures/tiny-llama, HF directory) with
our quantizer (the engine's `quantize` example, the library behind `guardreasoner quantize`)
to f16, q8_0 and q4_k_m, loads each file in llama.cpp (PyPI llama-cpp-python) and writes

  crates/engine/tests/fixtures/tiny_llama_quantized_golden.json
    ids                      the prompt (tiny_llama_golden.json's ids)
    types.<type>.tensor_types  GGML type of every tensor, as gguf-py reads the file
    types.<type>.top1         llama.cpp's argmax at every position
    types.<type>.top2_gaps    llama.cpp's top-1 minus top-2 logit at every position
    types.<type>.positions / logits   llama.cpp's full logits rows at a few positions
    types.<type>.vs_reference llama.cpp on this file vs llama.cpp on the F32 golden
                              (tiny_llama_logits.npy): max abs diff and top-1 agreement
    types.<type>.activation_noise  max abs logit diff between llama.cpp on this file and on
                              its "F32 twin" (the same weights dequantized to F32): what
                              llama.cpp's own rounding of activations (8 bits per block for
                              Q8_0/Q5_0/K-quants, f16 for F16) does to the logits; the test's
                              tolerance for our engine against llama.cpp

crates/engine/tests/quantize.rs quantizes the model again and checks our engine against this.
With --model FILE.gguf [...] it instead loads the given GGUF files in llama.cpp and prints
their metadata summary and the top-1 tokens of a short prompt (a smoke check for the
Llama-3.2-1B-shaped benchmark files).

llama.cpp runs with 2 threads, f32 KV cache, no flash attention (as make_golden.py).

Usage: check_quantized_with_llama_cpp.py [--quantize CMD] [--model FILE.gguf ...]
  CMD defaults to target-engine/release/examples/quantize (built on demand with cargo).
Needs: llama-cpp-python, gguf, numpy (PyPI).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from llama_cpp import Llama

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import dequantized_twin  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates/engine/tests/fixtures"
TYPES = ["f16", "q8_0", "q4_k_m"]
POSITIONS = [0, 1, 7, 20, 40, 57]
THREADS = 2


def quantize_command():
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target-engine"))
    exe = target / "release/examples/quantize"
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "guardreasoner-engine", "--example", "quantize"],
                   cwd=REPO, check=True, env={**os.environ, "CARGO_TARGET_DIR": str(target)})
    return [str(exe)]


def open_model(path, n_ctx=256):
    return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=THREADS,
                 n_threads_batch=THREADS, logits_all=True, type_k=0, type_v=0, flash_attn=False,
                 verbose=False, seed=0)


def all_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def tensor_types(path):
    return {t.name: t.tensor_type.name for t in GGUFReader(str(path)).tensors}


def golden(quantize):
    ids = json.loads((FIXTURES / "tiny_llama_golden.json").read_text())["ids"]
    reference = np.load(FIXTURES / "tiny_llama_logits.npy")
    out = {"ids": ids, "positions": POSITIONS, "types": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for t in TYPES:
            path = Path(tmp) / f"tiny-{t}.gguf"
            subprocess.run(quantize + [str(FIXTURES / "tiny-llama"), str(path), t], check=True,
                           stderr=subprocess.DEVNULL)
            llm = open_model(path)
            logits = all_logits(llm, ids)
            twin_path = Path(tmp) / f"tiny-{t}-f32.gguf"
            dequantized_twin(path, twin_path, {"F16", "Q8_0", "Q5_0", "Q4_K", "Q6_K"})
            twin = open_model(twin_path)
            noise = float(np.abs(logits - all_logits(twin, ids)).max())
            del twin
            top2 = np.sort(logits, axis=1)[:, -2:]
            diff = float(np.abs(logits - reference).max())
            agree = float((logits.argmax(1) == reference.argmax(1)).mean())
            print(f"{t}: llama.cpp loads {path.name} ({path.stat().st_size} bytes); "
                  f"vs F32 golden: max abs logit diff {diff:.4f}, top-1 agreement {agree:.3f}; "
                  f"activation rounding noise {noise:.4f}")
            out["types"][t] = {
                "tensor_types": tensor_types(path),
                "top1": [int(i) for i in logits.argmax(1)],
                "top2_gaps": [round(float(g), 4) for g in top2[:, 1] - top2[:, 0]],
                "positions": POSITIONS,
                "logits": [[round(float(v), 5) for v in logits[p]] for p in POSITIONS],
                "vs_reference": {"max_abs_diff": round(diff, 5), "top1_agreement": agree},
                "activation_noise": round(noise, 5),
            }
            del llm
    dest = FIXTURES / "tiny_llama_quantized_golden.json"
    dest.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {dest.relative_to(REPO)}")


def smoke(paths):
    for path in paths:
        r = GGUFReader(str(path))
        kinds = {}
        for t in r.tensors:
            kinds[t.tensor_type.name] = kinds.get(t.tensor_type.name, 0) + 1
        llm = open_model(path, n_ctx=64)
        ids = [llm.token_bos()] + llm.tokenize(b"You are a classifier for analyzing interactions", add_bos=False)
        logits = all_logits(llm, ids)
        print(f"{path}: llama.cpp loads it; {len(r.tensors)} tensors {kinds}; "
              f"vocab {llm.n_vocab()}, top-1 ids {logits.argmax(1).tolist()}")
        del llm


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quantize", help="command that runs: CMD HF_DIR OUT.gguf TYPE")
    ap.add_argument("--model", nargs="+", type=Path, help="only load these GGUF files in llama.cpp")
    args = ap.parse_args()
    if args.model:
        smoke(args.model)
        return
    golden(args.quantize.split() if args.quantize else quantize_command())


if __name__ == "__main__":
    sys.exit(main())
