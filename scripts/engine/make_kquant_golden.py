#!/usr/bin/env python3
"""K-quant GGUF files made by llama.cpp itself, with llama.cpp's logits on them.

The tiny fixture model is 64 wide, too narrow for K-quants (rows must be multiples of 256), so
this writes a small random model 256 wide (2 layers, 4 heads of 64, 2 KV heads, intermediate
512, the tiny model's tokenizer and vocabulary of 307, tied embeddings, plain RoPE) as F32 GGUF,
has llama.cpp quantize it (`llama_model_quantize`, PyPI llama-cpp-python) to Q4_K_M and Q5_K_M
(so the files hold Q4_K, Q5_K and Q6_K tensors exactly as llama.cpp writes them), and stores

  crates/engine/tests/fixtures/wide-llama-<type>.gguf
  crates/engine/tests/fixtures/wide_llama_kquant_golden.json
    ids                        the prompt (tiny_llama_golden.json's)
    types.<type>.tensor_types  GGML type of every tensor in the file
    types.<type>.top1 / top2_gaps / positions / logits / continuation / continuation_top2_gaps
    types.<type>.activation_noise  llama.cpp on this file vs on its F32 twin (the same weights
                               dequantized): the noise of llama.cpp's 8-bit activation rounding

crates/engine/tests/tensor_types.rs compares our engine with these.
Usage: make_kquant_golden.py      Needs: numpy, gguf, llama-cpp-python (PyPI).
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import llama_cpp
from gguf import GGUFReader, GGUFWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import copy_metadata  # noqa: E402
from make_tiny_types_golden import llama_cpp_record  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates/engine/tests/fixtures"
HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, VOCAB = 256, 512, 2, 4, 2, 307
HEAD_DIM = HIDDEN // HEADS
TYPES = {"q4_k_m": 15, "q5_k_m": 17}  # llama_ftype
SEED = 20251128


def write_f32(path):
    src = GGUFReader(str(FIXTURES / "tiny-llama.gguf"))
    w = GGUFWriter(str(path), "llama")
    w.add_name("wide-llama")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)
    copy_metadata(src, w, keep=lambda k: k.startswith("tokenizer."))
    rng = np.random.default_rng(SEED)

    def mat(rows, cols, scale):
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(VOCAB, HIDDEN, 0.1))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    for i in range(LAYERS):
        p = f"blk.{i}"
        w.add_tensor(f"{p}.attn_norm.weight", (1 + rng.standard_normal(HIDDEN) * 0.1).astype(np.float32))
        w.add_tensor(f"{p}.attn_q.weight", mat(HIDDEN, HIDDEN, HIDDEN ** -0.5))
        w.add_tensor(f"{p}.attn_k.weight", mat(KV_HEADS * HEAD_DIM, HIDDEN, HIDDEN ** -0.5))
        w.add_tensor(f"{p}.attn_v.weight", mat(KV_HEADS * HEAD_DIM, HIDDEN, HIDDEN ** -0.5))
        w.add_tensor(f"{p}.attn_output.weight", mat(HIDDEN, HIDDEN, HIDDEN ** -0.5))
        w.add_tensor(f"{p}.ffn_norm.weight", (1 + rng.standard_normal(HIDDEN) * 0.1).astype(np.float32))
        w.add_tensor(f"{p}.ffn_gate.weight", mat(INTER, HIDDEN, HIDDEN ** -0.5))
        w.add_tensor(f"{p}.ffn_up.weight", mat(INTER, HIDDEN, HIDDEN ** -0.5))
        w.add_tensor(f"{p}.ffn_down.weight", mat(HIDDEN, INTER, INTER ** -0.5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ids = json.loads((FIXTURES / "tiny_llama_golden.json").read_text())["ids"]
    golden = {"ids": ids, "types": {}}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "wide-f32.gguf"
        write_f32(f32)
        for name, ftype in TYPES.items():
            out = FIXTURES / f"wide-llama-{name}.gguf"
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(), params)
            assert rc == 0, f"llama_model_quantize failed: {rc}"
            types = {t.name: t.tensor_type.name for t in GGUFReader(str(out)).tensors}
            record = llama_cpp_record(out, ids, {"Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q5_0", "Q5_1"})
            golden["types"][name] = {"tensor_types": types, **record}
            kinds = sorted(set(types.values()))
            print(f"{name}: {out.stat().st_size} bytes, types {kinds}, activation noise "
                  f"{record['activation_noise']:.4f}, min continuation gap "
                  f"{min(record['continuation_top2_gaps'])}")
    (FIXTURES / "wide_llama_kquant_golden.json").write_text(json.dumps(golden) + "\n")


if __name__ == "__main__":
    main()
