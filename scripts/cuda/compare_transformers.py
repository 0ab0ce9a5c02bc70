#!/usr/bin/env python3
"""On a GPU machine: our engine on CUDA against Hugging Face transformers on a model with the
exact Llama-3.2-1B shape (random weights, llama3 rope scaling, tied embeddings), greedy.

Builds the model with transformers (seed 0; the embedding table scaled up so that logits have
clear winners instead of the near-ties of a freshly initialised model), saves it as a bf16
safetensors directory with the real Llama 3.2 tokenizer.json, then runs on the same guard prompt
  - transformers, float32 weights (from the saved bf16 values), greedy `generate`;
  - `guardreasoner classify --device cuda` (and, shorter, `--device cpu`) on that directory;
and prints whether the generated texts agree, and each side's timings.

Usage: compare_transformers.py GUARDREASONER_BIN TOKENIZER_JSON CASE_JSON WORKDIR [NEW_TOKENS=64]
CASE_JSON: {"prompt_text": the rendered guard prompt, "request": ..., "response": ...}
(scripts/cuda/run-checks.sh passes one built from the released 1B prediction files).
Needs torch, transformers, tokenizers (present on the GPU machines).
"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    exe, tok_path, case_path, work = sys.argv[1:5]
    new = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    case = json.loads(Path(case_path).read_text())
    work = Path(work)
    model_dir = work / "llama32-1b-shape"
    cfg = LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009], torch_dtype="bfloat16")
    torch.manual_seed(0)
    t = time.time()
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(25.0)
    model.to(torch.bfloat16).save_pretrained(model_dir, safe_serialization=True)
    shutil.copy(tok_path, model_dir / "tokenizer.json")
    del model
    print(f"model written in {time.time() - t:.1f} s")

    ids = Tokenizer.from_file(tok_path).encode(case["prompt_text"], add_special_tokens=False).ids
    ids = [128000] + ids
    ref = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).cuda().eval()
    x = torch.tensor([ids], device="cuda")
    with torch.no_grad():
        ref.generate(x, max_new_tokens=4, do_sample=False)  # warm-up
        torch.cuda.synchronize()
        t = time.time()
        out = ref.generate(x, max_new_tokens=new, do_sample=False, eos_token_id=[128001, 128008, 128009])
        torch.cuda.synchronize()
        hf_s = time.time() - t
        logits = ref(x).logits[0, -1].float()
    gen = out[0, len(ids):].tolist()
    top2 = torch.topk(logits, 2).values
    hf_text = Tokenizer.from_file(tok_path).decode([g for g in gen if g < 128000])
    print(f"transformers fp32 cuda: {len(ids)} prompt tokens, {len(gen)} generated in {hf_s * 1000:.0f} ms "
          f"({len(gen) / hf_s:.1f} tok/s incl. prefill); first-step top-2 margin {float(top2[0] - top2[1]):.3f}")
    del ref
    torch.cuda.empty_cache()

    results = {}
    for device, n in (("cuda", new), ("cpu", min(new, 24))):
        cmd = [exe, "classify", "--model", str(model_dir), "--device", device, "--prompt", case["request"],
               "--max-new-tokens", str(n), "--json"]
        if case.get("response") is not None:
            cmd += ["--response", case["response"]]
        t = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t
        if p.returncode != 0:
            print(f"ours on {device}: FAILED rc={p.returncode}\n{p.stderr[-2000:]}")
            results[device] = None
            continue
        r = json.loads(p.stdout)
        results[device] = r
        tm, us = r["timing"], r["usage"]
        dec = (us["generated_tokens"] - 1) / (tm["decode_ms"] / 1000) if tm["decode_ms"] > 0 else 0
        same = hf_text.startswith(r["raw_output"]) if n < new else hf_text == r["raw_output"]
        print(f"ours on {device}: {us['prompt_tokens']} prompt tokens (transformers {len(ids)}), "
              f"{us['generated_tokens']} generated; prefill {tm['prefill_ms']:.0f} ms "
              f"({us['prompt_tokens'] / tm['prefill_ms'] * 1000:.0f} tok/s), decode {dec:.1f} tok/s, "
              f"process wall {wall:.1f} s; text equal to transformers' greedy output: {same}")
        if not same:
            print(f"  ours:         {r['raw_output'][:300]!r}\n  transformers: {hf_text[:300]!r}")
    ok = results.get("cuda") is not None and hf_text == results["cuda"]["raw_output"]
    print("COMPARE", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
