#!/usr/bin/env python3
"""Golden logits from llama.cpp with an f16 KV cache, for the engine's `KvType::F16` test.

Writes into the fixtures directory, for SmolLM2-135M-Instruct's "F32 twin" (every Q4_1 tensor
dequantized to F32, as scripts/engine/make_golden.py builds it) over the guard prompt of
smollm2_golden.json:
  smollm2_f32_kvf16_topk_ids.npy     (n, 8) int32: llama.cpp's 8 largest logits' ids per position
  smollm2_f32_kvf16_topk_logits.npy  (n, 8) float32: their values
llama.cpp runs with type_k = type_v = 1 (f16, its default cache type) and without flash
attention; everything else as make_golden.py. It also prints how far those logits are from
its own f32-cache ones, the scale of what an f16 cache changes on this model.

Usage: LLAMA_CPP_NO_EXTRA_BUFFERS=1 make_golden_kv_f16.py [ASSETS_DIR] [FIXTURES_DIR]
(needs llama-cpp-python, gguf, numpy; without extra buffers: llama-cpp-python 0.3.36 crashed
in its AMX buffer type on this project's Xeon, see llama_cpp_options.py)
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_cpp_options  # noqa: E402,F401  (LLAMA_CPP_NO_EXTRA_BUFFERS=1, see there)
import make_golden as mg  # noqa: E402  (its constants and helpers)
from llama_cpp import Llama  # noqa: E402


def open_model(path, type_kv):
    return Llama(
        model_path=str(path), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=mg.THREADS,
        n_threads_batch=mg.THREADS, logits_all=True, type_k=type_kv, type_v=type_kv,
        flash_attn=False, verbose=False, seed=0,
    )


def main():
    assets = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(
        os.environ.get("GUARDREASONER_TEST_ASSETS", mg.REPO / ".cache/test-assets"))
    fixtures = Path(sys.argv[2]) if len(sys.argv) > 2 else mg.REPO / "crates/engine/tests/fixtures"
    ids = json.loads((fixtures / "smollm2_golden.json").read_text())["guard_prompt"]["ids"]
    with tempfile.TemporaryDirectory() as tmp:
        twin_path = Path(tmp) / "smollm2-q4_1-as-f32.gguf"
        mg.dequantized_twin(assets / "SmolLM2-135M-Instruct.Q4_1.gguf", twin_path, {"Q4_1"})
        half = mg.all_logits(open_model(twin_path, 1), ids)
        full = mg.all_logits(open_model(twin_path, 0), ids)
    mg.save_topk(fixtures, "smollm2_f32_kvf16", half)
    print(f"llama.cpp, F32 twin, {len(ids)} positions: f16 vs f32 cache max abs logit diff "
          f"{np.abs(half - full).max():.3f}, mean {np.abs(half - full).mean():.4f}, top-1 agreement "
          f"{(half.argmax(1) == full.argmax(1)).sum()}/{len(ids)}")


if __name__ == "__main__":
    main()
