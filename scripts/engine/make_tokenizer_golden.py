#!/usr/bin/env python3
"""Expected Llama 3.2 token ids of every GuardReasoner benchmark prompt, from Python `tokenizers`.

For each file in <data>/benchmark/*.json (sorted by name) and each item in order, the prompt is
item["instruction"] + "\\n" + item["input"] (REFERENCE.md, "Prompt"), encoded with the Llama 3.2
tokenizer.json (fetched by scripts/fetch-test-assets.sh) with add_special_tokens=True, i.e. BOS
first. Stored compactly:

  llama32_benchmark_tokens.json  files (name, item count), 3 full id sequences, the tokenizers
                                 version, and the hash definition
  llama32_benchmark_tokens.bin   per prompt, in file then item order: u32 length, u64 FNV-1a
                                 hash of the ids as u32 little-endian bytes (12 bytes, LE)

Usage: make_tokenizer_golden.py [TOKENIZER_JSON] [DATA_DIR] [FIXTURES_DIR]
Needs: tokenizers (PyPI).
"""

import json
import os
import struct
import sys
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[2]
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def fnv1a64(ids):
    h = FNV_OFFSET
    for b in struct.pack(f"<{len(ids)}I", *ids):
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    assets = Path(os.environ.get("GUARDREASONER_TEST_ASSETS", REPO / ".cache/test-assets"))
    tok_path = Path(sys.argv[1]) if len(sys.argv) > 1 else assets / "llama-3.2/tokenizer.json"
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(
        os.environ.get("GUARDREASONER_DATA_DIR", REPO.parent / "shared/data/guardreasoner"))
    fixtures = Path(sys.argv[3]) if len(sys.argv) > 3 else REPO / "crates/engine/tests/fixtures"
    tok = Tokenizer.from_file(str(tok_path))
    files, records, longest, samples = [], bytearray(), (0, None), []
    for path in sorted((data / "benchmark").glob("*.json")):
        items = json.loads(path.read_text())
        prompts = [item["instruction"] + "\n" + item["input"] for item in items]
        encodings = tok.encode_batch(prompts, add_special_tokens=True)
        for i, enc in enumerate(encodings):
            ids = enc.ids
            records += struct.pack("<IQ", len(ids), fnv1a64(ids))
            if len(ids) > longest[0]:
                longest = (len(ids), {"file": path.name, "index": i, "ids": ids})
        files.append({"name": path.name, "items": len(items)})
        if len(samples) < 2:
            samples.append({"file": path.name, "index": 0, "ids": encodings[0].ids})
    samples.append(longest[1])
    (fixtures / "llama32_benchmark_tokens.bin").write_bytes(bytes(records))
    manifest = {
        "tokenizers": tokenizers.__version__,
        "prompt": "item['instruction'] + '\\n' + item['input'], add_special_tokens=True (BOS first)",
        "record": "u32 length, u64 FNV-1a-64 of ids as u32 LE bytes; little endian",
        "files": files,
        "full_sequences": samples,
    }
    (fixtures / "llama32_benchmark_tokens.json").write_text(json.dumps(manifest) + "\n")
    total = sum(f["items"] for f in files)
    print(f"{total} prompts in {len(files)} files; longest {longest[0]} tokens ({longest[1]['file']})")


if __name__ == "__main__":
    main()
