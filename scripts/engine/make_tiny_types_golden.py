#!/usr/bin/env python3
"""GGUF files of the tiny fixture model in more tensor types, with llama.cpp's logits on them.

Reads crates/engine/tests/fixtures/tiny-llama.gguf (F16 weights, F32 norms), converts every 2-D
weight tensor to BF16, Q4_0 and Q4_1 with gguf-py's own quantizers (PyPI `gguf`; these are the
reference implementations of llama.cpp's formats), writes

  crates/engine/tests/fixtures/tiny-llama-<type>.gguf     (a few dozen KB each)
  crates/engine/tests/fixtures/tiny_llama_types_golden.json
    ids                          the prompt (tiny_llama_golden.json's)
    types.<type>.top1            llama.cpp's argmax at every position
    types.<type>.top2_gaps       llama.cpp's top-1 minus top-2 logit at every position
    types.<type>.positions / logits   llama.cpp's full logits rows at a few positions
    types.<type>.continuation / continuation_top2_gaps   40 greedy tokens after the prompt
    types.<type>.activation_noise   max abs logit diff between llama.cpp on this file and on
                                 its F32 twin (the same weights dequantized): what llama.cpp's
                                 rounding of activations does (8 bits per block for Q4_0/Q4_1)

crates/engine/tests/tensor_types.rs loads these files and compares our engine with llama.cpp.
llama.cpp: PyPI llama-cpp-python, 2 threads, f32 KV cache, no flash attention (as make_golden.py).

Usage: make_tiny_types_golden.py
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType
from gguf.quants import dequantize, quantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import all_logits, copy_metadata, dequantized_twin, greedy, open_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates/engine/tests/fixtures"
TYPES = {"bf16": GGMLQuantizationType.BF16, "q4_0": GGMLQuantizationType.Q4_0,
         "q4_1": GGMLQuantizationType.Q4_1}
POSITIONS = [0, 1, 7, 20, 40, 57]
CONTINUATION = 40


def convert(src, dst, qtype):
    r = GGUFReader(str(src))
    w = GGUFWriter(str(dst), "llama")
    copy_metadata(r, w)
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]
        values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        if len(shape) == 2 and t.name != "rope_freqs.weight":
            q = quantize(values, qtype)
            w.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=qtype)
        else:
            w.add_tensor(t.name, values)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_cpp_record(path, ids, twin_types):
    """llama.cpp on the GGUF at `path` for the prompt `ids`: the golden entry the engine's
    tensor-type tests read (top-1 and top-2 gaps everywhere, full rows at POSITIONS, a greedy
    continuation, and the activation noise against the file's F32 twin, where the tensors of
    `twin_types` are dequantized)."""
    llm = open_model(path, 512)
    logits = all_logits(llm, ids)
    continuation, gaps = greedy(llm, logits[-1], CONTINUATION)
    del llm
    with tempfile.TemporaryDirectory() as tmp:
        twin = Path(tmp) / "twin.gguf"
        dequantized_twin(path, twin, twin_types)
        llm = open_model(twin, 512)
        twin_logits = all_logits(llm, ids)
        del llm
    top = np.sort(logits, axis=1)
    return {
        "top1": [int(i) for i in np.argmax(logits, axis=1)],
        "top2_gaps": [round(float(g), 5) for g in top[:, -1] - top[:, -2]],
        "positions": POSITIONS,
        "logits": [[float(v) for v in logits[p]] for p in POSITIONS],
        "continuation": continuation,
        "continuation_top2_gaps": gaps,
        "activation_noise": float(np.abs(logits - twin_logits).max()),
    }


def main():
    ids = json.loads((FIXTURES / "tiny_llama_golden.json").read_text())["ids"]
    golden = {"ids": ids, "types": {}}
    for name, qtype in TYPES.items():
        path = FIXTURES / f"tiny-llama-{name}.gguf"
        convert(FIXTURES / "tiny-llama.gguf", path, qtype)
        record = llama_cpp_record(path, ids, {qtype.name})
        golden["types"][name] = record
        print(f"{name}: {path.stat().st_size} bytes, activation noise "
              f"{record['activation_noise']:.5f}, min continuation gap {min(record['continuation_top2_gaps'])}")
    (FIXTURES / "tiny_llama_types_golden.json").write_text(json.dumps(golden) + "\n")


if __name__ == "__main__":
    main()
