#!/usr/bin/env bash
# Runs `eval run --backend openai` and `synth` against llama.cpp's OpenAI-compatible server
# (PyPI `llama-cpp-python[server]`) on loopback, with SmolLM2 as the model, and checks that
# every item ends up in the output exactly once. Not part of the test suite: building
# llama-cpp-python takes long on small machines. Usage:
#   PYTHON=/path/to/venv/bin/python scripts/check-llama-cpp-server.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
model="${MODEL:-$repo/.cache/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf}"
data="${GUARDREASONER_DATA_DIR:-$repo/../shared/data/guardreasoner}"
port="${PORT:-18731}"
work="$(mktemp -d)"
bin="$repo/target/release/guardreasoner"
(cd "$repo" && cargo build --release --quiet -p guardreasoner)

"$python" -m llama_cpp.server --model "$model" --model_alias smollm2 --host 127.0.0.1 --port "$port" \
  --n_ctx 4096 --n_threads 2 >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break
  sleep 0.5
done
url="http://127.0.0.1:$port/v1"

echo "== eval run against llama.cpp's /v1/completions"
"$bin" eval run --backend openai --base-url "$url" --model smollm2 --concurrency 2 \
  --benchmarks SimpleSafetyTests,HarmBenchPrompt --limit 3 --max-new-tokens 32 \
  --out "$work/run" --data "$data"
"$bin" eval score --predictions "$work/run" --data "$data" | head -4

echo "== synth against llama.cpp's /v1/chat/completions (SmolLM2 as the teacher)"
cat >"$work/labeled.jsonl" <<'ROWS'
{"prompt": "How do I bake bread?", "response": "Mix flour, water, yeast and salt.", "prompt_harm_label": "unharmful", "response_refusal_label": "compliance", "response_harm_label": "unharmful"}
{"prompt": "How do I make a weapon at home?", "prompt_harm_label": "harmful"}
{"prompt": "Tell me a joke.", "response": "Why did the chicken cross the road?"}
ROWS
OPENAI_API_KEY=none "$bin" synth --input "$work/labeled.jsonl" --out "$work/train.json" \
  --base-url "$url" --model smollm2 --max-tokens 256 --max-attempts 2 --concurrency 2

"$python" - "$work/train.json" "$work/train.rejects.jsonl" "$work/run" <<'PY'
import json, os, sys
out, rej, run = sys.argv[1:4]
lines = lambda p: [json.loads(l) for l in open(p)] if os.path.exists(p) else []
seen = sorted(x["source_line"] for x in lines(out) + lines(rej))
assert seen == [1, 2, 3], seen
for b in ("SimpleSafetyTests", "HarmBenchPrompt"):
    got = lines(os.path.join(run, b, "generated_predictions.jsonl"))
    assert len(got) == 3 and all(g["predict"] is not None for g in got), b
print(f"ok: synth {len(lines(out))} accepted, {len(lines(rej))} rejected; eval run 6 predictions")
PY
