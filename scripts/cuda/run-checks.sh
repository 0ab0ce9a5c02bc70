#!/usr/bin/env bash
# Run the CUDA-built artefacts of scripts/cuda/build.sh (.gpu/*.xz) on a GPU machine:
#   scripts/cuda/run-checks.sh   (env: STEP_TIMEOUT=seconds per step, default 300;
#                       GPU_BIN_DIR=where .gpu/*.xz are unpacked, default /tmp/guardreasoner-gpu-bin)
# Needs no cargo: it finds the CUDA 13 libraries (system toolkit or PyTorch's wheels), runs
# the engine's integration tests with GUARDREASONER_TEST_DEVICE=cuda, then the CLI.
# Every step runs even if an earlier one failed; one PASS/FAIL line per step at the end.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GPU_DIR=$REPO/.gpu
TESTS="tiny_model batch quantize tensor_types speculative prefix"
cd "$REPO" || exit 1
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
declare -a SUMMARY=()
FAILS=0
record() { # name rc
  if [ "$2" -eq 0 ]; then SUMMARY+=("PASS  $1"); else SUMMARY+=("FAIL  $1 (rc=$2)"); FAILS=$((FAILS + 1)); fi
  echo "---- $1: $([ "$2" -eq 0 ] && echo PASS || echo "FAIL rc=$2")"
}

# ---- binaries: .gpu/NAME.xz unpacked into $BIN_DIR (kept out of .gpu/, ~57 MB each) -------
BIN_DIR=${GPU_BIN_DIR:-/tmp/guardreasoner-gpu-bin}
mkdir -p "$BIN_DIR"
echo "==== unpacking binaries into $BIN_DIR"
for b in $TESTS guardreasoner; do
  if [ -f "$GPU_DIR/$b.xz" ]; then
    if command -v xz >/dev/null; then
      xz -dc "$GPU_DIR/$b.xz" > "$BIN_DIR/$b.tmp"
    else
      py=$(command -v python3 || echo /opt/torch/.venv/bin/python3)
      "$py" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' \
        "$GPU_DIR/$b.xz" "$BIN_DIR/$b.tmp"
    fi && chmod +x "$BIN_DIR/$b.tmp" && mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b" \
      || echo "could not unpack $GPU_DIR/$b.xz"
  elif [ -x "$GPU_DIR/$b" ]; then
    cp "$GPU_DIR/$b" "$BIN_DIR/$b"
  else
    echo "missing $GPU_DIR/$b.xz"
  fi
done

# ---- (a) CUDA libraries -> LD_LIBRARY_PATH ----------------------------------------------
echo "==== finding CUDA libraries"
SONAMES=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13
         libnvrtc-builtins.so.13.0 libcuda.so.1)
ROOTS=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib \
         /opt/torch/.venv/lib/python3.12/site-packages/nvidia \
         /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib; do
  [ -d "$d" ] && ROOTS+=("$d")
done
echo "search roots: ${ROOTS[*]:-(none)}"
LIBDIRS=()
MISSING=()
for so in "${SONAMES[@]}"; do
  found=""
  for r in "${ROOTS[@]}"; do
    # never a stub (lib64/stubs/libcuda.so would shadow the real driver)
    found=$(find -L "$r" -maxdepth 4 -name "$so" ! -path '*/stubs/*' 2>/dev/null | head -1)
    [ -n "$found" ] && break
  done
  if [ -z "$found" ]; then
    # last chance: the dynamic loader's cache
    found=$(/sbin/ldconfig -p 2>/dev/null | awk -v s="$so" '$1 == s {print $NF; exit}')
  fi
  if [ -n "$found" ]; then
    echo "  found   $so -> $found"
    dir=$(dirname "$found")
    case " ${LIBDIRS[*]:-} " in *" $dir "*) ;; *) LIBDIRS+=("$dir") ;; esac
  else
    echo "  MISSING $so"
    MISSING+=("$so")
  fi
done
if [ ${#LIBDIRS[@]} -gt 0 ]; then
  LD_LIBRARY_PATH=$(IFS=:; echo "${LIBDIRS[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LD_LIBRARY_PATH
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
record "find CUDA libraries${MISSING[*]:+ (missing: ${MISSING[*]})}" "${#MISSING[@]}"

for b in $TESTS guardreasoner; do
  if [ -x "$BIN_DIR/$b" ] && command -v ldd >/dev/null; then
    nf=$(ldd "$BIN_DIR/$b" 2>&1 | grep 'not found' | awk '{print $1}' | tr '\n' ' ')
    [ -n "$nf" ] && echo "  ldd $b: not found: $nf"
  fi
done

# ---- (b) the GPU ---------------------------------------------------------------------------
echo "==== nvidia-smi -L"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L; rc=$?
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>/dev/null
else
  echo "nvidia-smi not found"; rc=127
fi
record "nvidia-smi" "$rc"

# ---- fixtures: the test binaries have /work/main/crates/engine compiled in ------------------
BUILT_REPO=/work/main
if [ "$REPO" != "$BUILT_REPO" ] && [ ! -e "$BUILT_REPO" ]; then
  mkdir -p "$(dirname "$BUILT_REPO")" 2>/dev/null && ln -s "$REPO" "$BUILT_REPO" \
    && echo "linked $BUILT_REPO -> $REPO" || echo "could not link $BUILT_REPO -> $REPO"
fi
if [ ! -e "$BUILT_REPO/crates/engine/tests/fixtures/tiny-llama/model.safetensors" ]; then
  echo "WARNING: $BUILT_REPO/crates/engine/tests/fixtures/tiny-llama is missing: tests will fail to find fixtures"
fi
# batch.rs also has a SmolLM2 test that needs .cache/test-assets; skip it if that is absent
if [ -z "${GUARDREASONER_SKIP_ASSET_TESTS:-}" ] && [ ! -d "$BUILT_REPO/.cache/test-assets" ] \
   && [ -z "${GUARDREASONER_TEST_ASSETS:-}" ]; then
  export GUARDREASONER_SKIP_ASSET_TESTS=1
  echo "no .cache/test-assets: GUARDREASONER_SKIP_ASSET_TESTS=1"
fi

run_step() { # name cmd...
  local name=$1; shift
  echo "==== $name: $*"
  if [ ! -x "$1" ]; then echo "$1 is missing or not executable"; record "$name" 126; return; fi
  timeout --kill-after=10 "$STEP_TIMEOUT" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "(timed out after ${STEP_TIMEOUT}s)"
  record "$name" "$rc"
}

# ---- (c) engine tests on the GPU ----------------------------------------------------------
export GUARDREASONER_TEST_DEVICE=cuda
for t in $TESTS; do
  run_step "test $t (cuda)" "$BIN_DIR/$t" --test-threads=1 --nocapture
done
unset GUARDREASONER_TEST_DEVICE

# ---- (d) the CLI ----------------------------------------------------------------------------
TINY=crates/engine/tests/fixtures/tiny-llama
run_step "cli classify (cuda)" "$BIN_DIR/guardreasoner" classify --model "$TINY" --device cuda \
  --prompt hello --max-new-tokens 16 --json
# the same on the CPU, for comparison (informational: not counted)
echo "==== (info) cli classify on cpu for comparison"
timeout 120 "$BIN_DIR/guardreasoner" classify --model "$TINY" --device cpu --prompt hello \
  --max-new-tokens 16 --json 2>&1 | grep -E '"raw_output"|generated_tokens|total_ms' || true

# ---- (e) against transformers on a Llama-3.2-1B-shaped model (when the inputs were carried) --
# .gpu/case.json: a rendered guard prompt with its request/response; .gpu/llama-3.2/tokenizer.json
if [ -f "$GPU_DIR/case.json" ] && [ -f "$GPU_DIR/llama-3.2/tokenizer.json" ]; then
  PY=$(command -v python3 || echo /opt/torch/.venv/bin/python3)
  WORK=$(mktemp -d)
  echo "==== transformers comparison in $WORK"
  timeout --kill-after=10 "$STEP_TIMEOUT" "$PY" "$REPO/scripts/cuda/compare_transformers.py" \
    "$BIN_DIR/guardreasoner" "$GPU_DIR/llama-3.2/tokenizer.json" "$GPU_DIR/case.json" "$WORK" 64
  record "same greedy text as transformers (1B shape, cuda)" $?
  rm -rf "$WORK"
fi

echo
echo "==== SUMMARY"
printf '%s\n' "${SUMMARY[@]}"
echo "$(( ${#SUMMARY[@]} - FAILS )) passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
