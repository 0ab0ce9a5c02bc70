#!/usr/bin/env bash
# Renders an eval report in headless Chromium (Debian package `chromium`) and saves a PNG, to
# check that report.html shows its tables and charts without a network.
#
# Usage: scripts/eval/screenshot-report.sh [RUN_DIR] [OUT.png]
#   RUN_DIR defaults to the released 1B predictions (compared with 3B) under
#   $GUARDREASONER_DATA_DIR (default ../shared/data/guardreasoner); OUT defaults to
#   .cache/report-demo/report.png.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
data="${GUARDREASONER_DATA_DIR:-$repo/../shared/data/guardreasoner}"
run="${1:-$data/predictions/1B}"
png="${2:-$repo/.cache/report-demo/report.png}"
out="$(dirname "$png")"
mkdir -p "$out"
compare=()
if [[ $# -eq 0 ]]; then compare=(--compare "$data/predictions/3B"); fi
cargo run --release --quiet -p guardreasoner -- eval report "$run" "${compare[@]}" --out "$out" --data "$data"
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1000,2600 \
  --screenshot="$png" "file://$out/report.html" 2>/dev/null
echo "screenshot: $png"
