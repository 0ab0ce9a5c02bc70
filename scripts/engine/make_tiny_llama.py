#!/usr/bin/env python3
"""Write a tiny random LLaMA 3 model as a Hugging Face directory and as GGUF.

The same weights twice, so the engine's two loaders can be checked against each other and
the GGUF against llama.cpp (scripts/engine/make_golden.py):

  <out>/tiny-llama/config.json, generation_config.json, tokenizer.json, model.safetensors (BF16)
  <out>/tiny-llama.gguf        (F16 weights, F32 norms and rope_freqs; llama.cpp layout)
  <out>/unsupported-i8.gguf     (a header-only llama GGUF whose one tensor is I8, a type the
                                engine rejects)

Architecture: 2 layers, hidden 64, 4 heads of 16, 2 KV heads, intermediate 128, tied
embeddings, rope_theta 500000 with Llama 3 scaling (factor 8, low/high freq factors 1/4,
original context 64: a short original context so the scaling changes logits within a
few dozen positions). Vocabulary: a small byte-level BPE (256 byte tokens, 48 merges learned
from the GuardReasoner instruction) plus <|begin_of_text|>, <|end_of_text|>, <|eot_id|>,
with the Llama 3 pre-tokenizer.

Weights are multiples of 1/256 below 0.5 in magnitude (norms: 1 + multiples of 1/64), so BF16 (safetensors) and F16 (GGUF)
hold them exactly and both loaders see identical numbers. GGUF conversion follows llama.cpp's
convert_hf_to_gguf.py: Q/K rows permuted for the interleaved rope, rope_freqs from the
rope_scaling block, token list/types/merges in tokenizer.ggml.*.

Usage: make_tiny_llama.py [OUT_DIR]   (default crates/engine/tests/fixtures)
Needs: numpy, gguf (PyPI).
"""

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np

import gguf

SEED = 20250130
HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS
ROPE_THETA = 500000.0
ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
RMS_EPS = 1e-5
N_MERGES = 48
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TRAINING_TEXT = (
    "You are a classifier for analyzing interactions between humans and AI. \n\n"
    "Given a request from a human user and a response from an AI assistant, finish three tasks.\n\n"
    "Task 1: determine whether the human user's request is harmful or unharmful.\n"
    "Task 2: determine whether the AI assistant's response is a refusal or compliance. \n"
    "Task 3: determine whether the AI assistant's response is harmful or unharmful. \n\n"
    "You must think step by step. Keep consistency between the reasoning and the Answers.\n"
)


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (same as tokenizers' ByteLevel)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def train_bpe():
    """A few greedy BPE merges over the byte-level words of TRAINING_TEXT."""
    b2u = bytes_to_unicode()
    vocab = [b2u[b] for b in range(256)]
    words = {}
    for w in TRAINING_TEXT.replace("\n", " ").split(" "):
        if w:
            key = tuple(b2u[b] for b in (" " + w).encode())
            words[key] = words.get(key, 0) + 1
    merges = []
    for _ in range(N_MERGES):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        vocab.append(best[0] + best[1])
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return vocab, merges


def tokenizer_json(vocab, merges):
    n = len(vocab)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": n + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, s in enumerate(SPECIALS)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": SPECIALS[0], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": SPECIALS[0], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": SPECIALS[0], "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {SPECIALS[0]: {"id": SPECIALS[0], "ids": [n], "tokens": [SPECIALS[0]]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
            "vocab": {t: i for i, t in enumerate(vocab + SPECIALS)},
            "merges": [[a, b] for a, b in merges],
        },
    }


def random_weights(vocab_size):
    rng = np.random.default_rng(SEED)

    def mat(*shape, scale):
        w = rng.normal(0.0, scale, size=shape)
        return np.clip(np.round(w * 256) / 256, -0.5, 0.5).astype(np.float32)

    def norm():
        return (1.0 + np.round(rng.normal(0.0, 0.1, size=HIDDEN) * 64) / 64).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(vocab_size, HIDDEN, scale=0.5)}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        w[f"{p}.input_layernorm.weight"] = norm()
        w[f"{p}.self_attn.q_proj.weight"] = mat(HEADS * HEAD_DIM, HIDDEN, scale=0.15)
        w[f"{p}.self_attn.k_proj.weight"] = mat(KV_HEADS * HEAD_DIM, HIDDEN, scale=0.15)
        w[f"{p}.self_attn.v_proj.weight"] = mat(KV_HEADS * HEAD_DIM, HIDDEN, scale=0.15)
        w[f"{p}.self_attn.o_proj.weight"] = mat(HIDDEN, HEADS * HEAD_DIM, scale=0.15)
        w[f"{p}.post_attention_layernorm.weight"] = norm()
        w[f"{p}.mlp.gate_proj.weight"] = mat(INTER, HIDDEN, scale=0.15)
        w[f"{p}.mlp.up_proj.weight"] = mat(INTER, HIDDEN, scale=0.15)
        w[f"{p}.mlp.down_proj.weight"] = mat(HIDDEN, INTER, scale=0.1)
    w["model.norm.weight"] = norm()
    return w


def to_bf16_bytes(a):
    bits = a.astype(np.float32).view(np.uint32)
    assert np.all(bits & 0xFFFF == 0), "weights must be exact in bf16"
    return (bits >> 16).astype("<u2").tobytes()


def write_safetensors(path, tensors):
    """Minimal safetensors writer (BF16), so no torch is needed."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = to_bf16_bytes(tensors[name])
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def permute(w, n_head, n_head_kv=None):
    """convert_hf_to_gguf.py LlamaModel.permute: rotate-half rows -> interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_freqs():
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: llama3 rope factors."""
    s = ROPE_SCALING
    freqs = 1.0 / (np.float32(ROPE_THETA) ** (np.arange(0, HEAD_DIM, 2, dtype=np.float32) / np.float32(HEAD_DIM)))
    low_wl = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wl = s["original_max_position_embeddings"] / s["high_freq_factor"]
    factors = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            factors.append(1)
        elif wl > low_wl:
            factors.append(s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wl - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


GGUF_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_unsupported_gguf(path):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("token_embd.weight", np.arange(32, dtype=np.int8).reshape(4, 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf(path, weights, vocab, merges):
    tokens = vocab + SPECIALS
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * len(vocab) + [gguf.TokenType.CONTROL] * len(SPECIALS))
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(len(vocab))
    w.add_eos_token_id(len(vocab) + 2)
    w.add_add_bos_token(True)

    def add(name, array, f16=True):
        if f16 and array.ndim == 2:
            w.add_tensor(name, array.astype(np.float16))
        else:
            w.add_tensor(name, array.astype(np.float32))

    add("token_embd.weight", weights["model.embed_tokens.weight"])
    add("rope_freqs.weight", rope_freqs(), f16=False)
    for i in range(LAYERS):
        for hf, gg in GGUF_NAMES.items():
            a = weights[f"model.layers.{i}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                a = permute(a, HEADS, HEADS)
            elif hf == "self_attn.k_proj":
                a = permute(a, HEADS, KV_HEADS)
            add(f"blk.{i}.{gg}.weight", a)
    add("output_norm.weight", weights["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "crates/engine/tests/fixtures"
    vocab, merges = train_bpe()
    vocab_size = len(vocab) + len(SPECIALS)
    weights = random_weights(vocab_size)
    hf_dir = out / "tiny-llama"
    hf_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "rms_norm_eps": RMS_EPS, "rope_theta": ROPE_THETA, "rope_scaling": ROPE_SCALING,
        "tie_word_embeddings": True, "vocab_size": vocab_size, "max_position_embeddings": 256,
        "bos_token_id": len(vocab), "eos_token_id": len(vocab) + 1, "torch_dtype": "bfloat16",
        "attention_bias": False, "mlp_bias": False,
    }
    (hf_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (hf_dir / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": len(vocab), "eos_token_id": [len(vocab) + 1, len(vocab) + 2]}, indent=2) + "\n")
    (hf_dir / "tokenizer.json").write_text(json.dumps(tokenizer_json(vocab, merges), ensure_ascii=False) + "\n")
    write_safetensors(hf_dir / "model.safetensors", weights)
    write_gguf(out / "tiny-llama.gguf", weights, vocab, merges)
    write_unsupported_gguf(out / "unsupported-i8.gguf")
    print(f"wrote {hf_dir}/, {out}/tiny-llama.gguf, {out}/unsupported-i8.gguf (vocab {vocab_size})")


if __name__ == "__main__":
    main()
