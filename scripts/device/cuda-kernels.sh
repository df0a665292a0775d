#!/usr/bin/env bash
# GPU correctness run of the CUDA kernels (llama-model feature `cuda`), on a machine with an
# NVIDIA GPU and driver but no Rust toolchain. Build the test binaries on the development machine:
#
#   cargo test -p vramless-llama-model --features cuda --test cuda_kernels --test cuda_nvrtc --no-run
#   cargo bench -p vramless-benches --features cuda --bench cuda_kernels --no-run
#   mkdir -p .device/cuda && cp <the three printed executables> \
#       .device/cuda/{cuda_kernels,cuda_nvrtc,bench_cuda_kernels}
#
# then run this script from the repository root there. Logs go to $OUT (default /tmp/cuda-out).
# NVRTC (libnvrtc.so.13) is taken from VRAMLESS_NVRTC_LIB, else python's site-packages
# (nvidia-cuda-nvrtc), else the first one found on the file system.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cuda-out}
mkdir -p "$OUT"
BIN=.device/cuda
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_KERNEL_CACHE=/tmp/vramless-kernel-cache RUST_BACKTRACE=1
rm -rf "$VRAMLESS_KERNEL_CACHE"
rc=0
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    echo "== cuda_nvrtc"; "$BIN/cuda_nvrtc" --nocapture || rc=1
    echo "== cuda_kernels (cold: NVRTC compiles, fills the cache)"
    "$BIN/cuda_kernels" --nocapture --test-threads=1 || rc=1
    echo "== kernel cache"; ls -l "$VRAMLESS_KERNEL_CACHE"
    echo "== cuda_kernels (warm: cubins from the cache)"
    "$BIN/cuda_kernels" --nocapture --test-threads=1 || rc=1
    echo "== small decode kernels, time per launch (report only; products: the cuda_matvec bench)"
    "$BIN/bench_cuda_kernels" || rc=1
    echo "== exit $rc"
    exit $rc
} 2>&1 | tee "$OUT/cuda-kernels.log"
exit "${PIPESTATUS[0]}"
