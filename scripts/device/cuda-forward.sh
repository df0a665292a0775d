#!/usr/bin/env bash
# GPU end-to-end run of the resident CUDA decode path (llama-model feature `cuda`) on a machine
# with an NVIDIA GPU and driver but no Rust toolchain and no network. Build on the development
# machine:
#
#   cargo test -p vramless-llama-model --features cuda --test cuda_forward --test cuda_kernels --no-run
#   cargo build --release -p vramless-examples --features cuda --bin generate
#   mkdir -p .device/cuda && strip -o .device/cuda/<name> <each executable>   (cuda_forward,
#   cuda_kernels, generate; the bench as bench_cuda_kernels)
#   cargo bench -p vramless-benches --features cuda --bench cuda_kernels --no-run   (-> bench_cuda_kernels)
#
# The SmolLM2 GGUF: $VRAMLESS_MODEL if set; else .device/model.a + .device/model.b (the file cut
# in two, e.g. `head -c 50000000`, `tail -c +50000001`, when one transfer cannot hold it), joined
# and checked against the fixture README's sha256; else /tmp/smollm2.gguf from an earlier run.
# Run from the repository root there. Logs go to $OUT (default /tmp/cuda-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cuda-out}
mkdir -p "$OUT"
BIN=.device/cuda
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache}
export RUST_BACKTRACE=1 VRAMLESS_SMOLLM2_FIXTURES="$PWD/llama-model/tests/fixtures/smollm2"
model=${VRAMLESS_MODEL:-}
if [ -z "$model" ]; then
    a=.device/model.a; b=.device/model.b
    [ -e "$a" ] || a=/tmp/parts/model.a
    [ -e "$b" ] || b=/tmp/parts/model.b
    if [ -e "$a" ] && [ -e "$b" ]; then
        cat "$a" "$b" > /tmp/smollm2.gguf
    fi
    model=/tmp/smollm2.gguf
fi
if [ ! -e "$model" ] || [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$SHA" ]; then
    echo "SmolLM2 model missing or corrupt at $model (need sha256 $SHA)"; exit 2
fi
export VRAMLESS_MODEL="$model"
rc=0
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    echo "== cuda_forward (GPU vs CPU f32 vs llama.cpp on the SmolLM2 fixtures)"
    "$BIN/cuda_forward" --nocapture --test-threads=1 || rc=1
    echo "== generate --device cuda (greedy, argmax on the GPU) + bench"
    "$BIN/generate" --device cuda --model "$model" --prompt "The capital of France is" \
        --max-tokens 32 --ctx 1024 --json "$OUT/gen-cuda.json" --bench || rc=1
    echo "== generate --device cuda, sampled (logits downloaded, host sampler)"
    "$BIN/generate" --device cuda --model "$model" --prompt "Once upon a time" \
        --max-tokens 24 --temperature 0.8 --top-k 40 --seed 7 --ctx 256 || rc=1
    echo "== generate --device cpu (same greedy prompt, default Q8 kernel; informational)"
    "$BIN/generate" --device cpu --model "$model" --prompt "The capital of France is" \
        --max-tokens 32 --ctx 1024 --json "$OUT/gen-cpu.json" --bench || rc=1
    echo "== small decode kernels, time per launch (report only; products: the cuda_matvec bench)"
    "$BIN/bench_cuda_kernels" || rc=1
    echo "== exit $rc"
    exit $rc
} 2>&1 | tee "$OUT/cuda-forward.log"
exit "${PIPESTATUS[0]}"
