#!/usr/bin/env bash
# The project's test command (README "Set-up", and what .ci/run calls).
# Benchmark data: $GUARDREASONER_DATA_DIR, default ../shared/data/guardreasoner beside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
export GUARDREASONER_DATA_DIR="${GUARDREASONER_DATA_DIR:-$(cd .. && pwd)/shared/data/guardreasoner}"
if [ -x scripts/fetch-test-assets.sh ]; then
  scripts/fetch-test-assets.sh
fi
cargo test --workspace --release --locked
