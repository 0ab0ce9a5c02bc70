#!/usr/bin/env bash
# Build the CUDA (feature `cuda`) binaries on a machine with no GPU and no CUDA toolkit,
# using NVIDIA's CUDA 13.0 wheels from PyPI, and collect stripped, xz-compressed artefacts in
# .gpu/ (git-ignored) for scripts/cuda/run-checks.sh on a GPU machine.
#
# Usage:  scripts/cuda/build.sh [toolchain|build|collect|all]
# The toolchain step downloads nvcc, cudart, cuBLAS, cuRAND and NVRTC wheels (~1 GB) and
# builds a link-only stub libcuda.so (the real driver library is on the GPU machine).
# Env: CUDA_TOOLCHAIN_DIR (default /work/cuda13), CARGO_TARGET_DIR (default $PWD/target-cuda),
#      CUDA_COMPUTE_CAP (default 90 = H100/H200), JOBS (default 2), GPU_OUT (default $PWD/.gpu).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
TC=${CUDA_TOOLCHAIN_DIR:-/work/cuda13}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
JOBS=${JOBS:-2}
OUT=${GPU_OUT:-$REPO/.gpu}
STEP=${1:-all}
# Engine integration tests that run on the GPU (GUARDREASONER_TEST_DEVICE=cuda).
TESTS="tiny_model batch quantize tensor_types speculative prefix"

# CUDA 13.0 component wheels (the versions that go with the 13.0 toolkit / driver >= 580).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary, nvlink, cudafe++
  nvidia-cuda-crt==13.0.88      # crt/ headers nvcc needs (host_config.h ...)
  nvidia-nvvm==13.0.88          # cicc + libdevice
  nvidia-cuda-cccl==13.0.85     # cuda/std, cub, thrust headers
  nvidia-cuda-runtime==13.0.96  # cudart + cuda_runtime.h, cuda.h, cuda_fp16.h ...
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14      # libcublas.so.13, libcublasLt.so.13
  nvidia-curand==10.4.0.35      # libcurand.so.10 (CUDA 13.0)
)
CUDA_HOME=$TC/site/nvidia/cu13

toolchain() {
  mkdir -p "$TC/wheels"
  python3 -m pip download --no-deps --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --python-version 3.11 -d "$TC/wheels" "${WHEELS[@]}"
  rm -rf "$TC/site"
  python3 -m pip install --no-deps --no-compile --no-index --target "$TC/site" "$TC"/wheels/*.whl
  cd "$CUDA_HOME"
  # CUDA_HOME-like layout: lib64/, unversioned .so links for the linker.
  ln -sfn lib lib64
  ( cd lib
    for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
      ln -sfn "$l" "${l%.so.*}.so"
    done )
  # Stub libcuda.so (soname libcuda.so.1) for linking only: the real driver library is on the
  # GPU machine. It exports every driver entry point cuda.h and cudarc's bindings name.
  mkdir -p lib/stubs
  local reg; reg=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)
  { grep -ohE 'CUDAAPI\s+cu\w+\s*\(' include/cuda.h | grep -oE 'cu\w+'
    grep -ohE '#\s*define\s+cu\w+\s+cu\w+' include/cuda.h | awk '{print $2; print $3}'
    grep -A1 'extern "C" {' "$reg/src/driver/sys/mod.rs" | grep -oE '^\s*fn cu\w+' | awk '{print $2}'
  } | sort -u | awk '{print "int " $1 "(void) { return 999; }"}' > lib/stubs/libcuda_stub.c
  gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o lib/stubs/libcuda.so lib/stubs/libcuda_stub.c
  ln -sfn libcuda.so lib/stubs/libcuda.so.1
  echo "stub libcuda.so: $(wc -l < lib/stubs/libcuda_stub.c) symbols"
  "$CUDA_HOME/bin/nvcc" --version | tail -2
  cd "$REPO"
}

cuda_env() {
  export CUDA_HOME CUDA_PATH=$CUDA_HOME CUDA_ROOT=$CUDA_HOME
  export PATH=$CUDA_HOME/bin:$PATH
  export CUDARC_CUDA_VERSION=13000
  # build scripts / nvcc may load cudart, nvrtc ... while building
  export LD_LIBRARY_PATH=$CUDA_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LIBRARY_PATH=$CUDA_HOME/lib:$CUDA_HOME/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
}

build() {
  cuda_env
  cargo test -j"$JOBS" -p guardreasoner-engine --release --features cuda --no-run
  cargo build -j"$JOBS" --release -p guardreasoner --features cuda
}

collect() {
  # Each stripped binary is ~57 MB (33 MB .nv_fatbin of sm_90 cubins from candle-kernels'
  # libmoe.a, ~10 MB of embedded PTX): only xz-compressed copies (~7 MB each) go to $OUT.
  local STRIPPED=$CARGO_TARGET_DIR/gpu-stripped
  mkdir -p "$OUT" "$STRIPPED"
  local t f
  for t in $TESTS; do
    # newest executable deps/<name>-<hash>
    f=$(find "$CARGO_TARGET_DIR/release/deps" -maxdepth 1 -type f -executable -name "$t-*" \
          -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
    [ -n "$f" ] || { echo "missing test binary for $t" >&2; exit 1; }
    echo "$t <- $f"
    strip -o "$STRIPPED/$t" "$f"
  done
  strip -o "$STRIPPED/guardreasoner" "$CARGO_TARGET_DIR/release/guardreasoner"
  for f in $TESTS guardreasoner; do
    xz -9 -T0 -c "$STRIPPED/$f" > "$OUT/$f.xz"
    echo "== $f: stripped $(stat -c %s "$STRIPPED/$f") bytes, $f.xz $(stat -c %s "$OUT/$f.xz") bytes"
    readelf -d "$STRIPPED/$f" | grep NEEDED | sed 's/.*\[\(.*\)\]/   NEEDED \1/'
    echo "   max GLIBC: $(objdump -T "$STRIPPED/$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
  done
  du -cb "$OUT"/*.xz | tail -1
}

case $STEP in
  toolchain) toolchain ;;
  build) build ;;
  collect) collect ;;
  all) [ -x "$CUDA_HOME/bin/nvcc" ] && [ -e "$CUDA_HOME/lib/stubs/libcuda.so" ] || toolchain
       build; collect ;;
  *) echo "usage: $0 [toolchain|build|collect|all]" >&2; exit 2 ;;
esac
