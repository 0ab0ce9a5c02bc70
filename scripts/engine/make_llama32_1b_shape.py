#!/usr/bin/env python3
"""Random-weight models with the Llama-3.2-1B shape, for docs/BENCHMARKS.md.

Writes a Hugging Face checkpoint with random BF16 weights (N(0, 0.02), norms 1) and exactly
Llama-3.2-1B's architecture (hidden 2048, 16 layers, 32 heads, 8 KV heads, head_dim 64,
intermediate 8192, vocab 128256, rope_theta 500000 with llama3 scaling factor 32, tied
embeddings) plus the real Llama 3.2 tokenizer, then converts it with our own quantizer
(the engine's `quantize` example, the library behind `guardreasoner quantize`) to

  .cache/bench-models/llama32-1b-shape/                 HF directory (~2.5 GB, BF16)
  .cache/bench-models/llama32-1b-shape-{f16,q8_0,q4_k_m}.gguf

The files are git-ignored (.cache/). Random weights make the output text meaningless but
the compute per token identical to the real model's, which is all a throughput benchmark
needs. Existing files are kept; pass --force to rewrite them.

Usage: make_llama32_1b_shape.py [--out DIR] [--tokenizer tokenizer.json] [--force]
  --tokenizer defaults to .cache/test-assets/llama-3.2/tokenizer.json
  (fetched by scripts/fetch-test-assets.sh)
Needs: numpy (PyPI); cargo (builds the engine's quantize example in release mode).
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SEED = 1234
HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 2048, 8192, 16, 32, 8, 64, 128256
TYPES = ["f16", "q8_0", "q4_k_m"]

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": True, "vocab_size": VOCAB, "max_position_embeddings": 131072,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16",
    "attention_bias": False, "mlp_bias": False,
}
GENERATION = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}


def shapes():
    yield "model.embed_tokens.weight", (VOCAB, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        yield f"{p}.input_layernorm.weight", (HIDDEN,)
        yield f"{p}.self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN)
        yield f"{p}.self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)
        yield f"{p}.self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)
        yield f"{p}.self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM)
        yield f"{p}.post_attention_layernorm.weight", (HIDDEN,)
        yield f"{p}.mlp.gate_proj.weight", (INTER, HIDDEN)
        yield f"{p}.mlp.up_proj.weight", (INTER, HIDDEN)
        yield f"{p}.mlp.down_proj.weight", (HIDDEN, INTER)
    yield "model.norm.weight", (HIDDEN,)


def bf16_bytes(a):
    """float32 -> bfloat16 (round to nearest even) little-endian bytes."""
    bits = a.astype(np.float32).view(np.uint32)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).astype("<u2").tobytes()


def write_safetensors(path):
    """Streamed BF16 safetensors writer (no torch): header first, then one tensor at a time."""
    rng = np.random.default_rng(SEED)
    header, offset = {}, 0
    for name, shape in shapes():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape in shapes():
            if len(shape) == 1:
                a = np.ones(shape, dtype=np.float32)
            else:
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            f.write(bf16_bytes(a))


def quantize_command():
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target-engine"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "guardreasoner-engine", "--example", "quantize"],
                   cwd=REPO, check=True, env={**os.environ, "CARGO_TARGET_DIR": str(target)})
    return [str(target / "release/examples/quantize")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / ".cache/bench-models")
    ap.add_argument("--tokenizer", type=Path, default=REPO / ".cache/test-assets/llama-3.2/tokenizer.json")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    hf = args.out / "llama32-1b-shape"
    hf.mkdir(parents=True, exist_ok=True)
    if args.force or not (hf / "model.safetensors").exists():
        (hf / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
        (hf / "generation_config.json").write_text(json.dumps(GENERATION, indent=2) + "\n")
        shutil.copy(args.tokenizer, hf / "tokenizer.json")
        write_safetensors(hf / "model.safetensors.partial")
        os.replace(hf / "model.safetensors.partial", hf / "model.safetensors")
        print(f"wrote {hf}/")
    quantize = quantize_command()
    for t in TYPES:
        out = args.out / f"llama32-1b-shape-{t}.gguf"
        if out.exists() and not args.force:
            print(f"kept {out}")
            continue
        subprocess.run(quantize + [str(hf), str(out), t], check=True)


if __name__ == "__main__":
    main()
