#!/usr/bin/env bash
# GPU proof of llama-model's multi-sequence step (issue 15) on the GPU machine (no Rust toolchain,
# no network there; this script builds nothing). Build on the development machine:
#
#   cargo test --release -p vramless-llama-model --features cuda --test cuda_multi \
#       --test cuda_nvrtc --no-run
#   cargo bench -p vramless-benches --features cuda --bench cuda_multi --no-run
#   cargo build --release -p vramless-examples --bin synth-model
#
# strip the three test executables (named cuda_multi, cuda_nvrtc; the bench as cuda_multi_bench) and
# synth-model into $BATCH_DIR (default .device-h15a) and carry that folder. Stages ($STAGES,
# default "nvrtc multi bench"):
#   nvrtc  the multi-sequence kernels compile for sm_80/sm_90 (cuda_nvrtc multi)
#   multi  cuda_multi on synthetic SmolLM2-135M and Llama-3.1-8B Q4_K_M: GPU multi-sequence step
#          vs the CPU multi-sequence step (cosine >= 0.99999 per row, greedy tokens) and vs each
#          sequence alone through CudaModel (greedy tokens); pool exhaustion is a typed error
#   bench  cuda_multi_bench on the synthetic 8B, resident: aggregate decode tok/s for B = 1..64
#          at 512 positions per sequence vs the single-sequence CudaModel decode of the same run
# Logs and JSON go to $OUT (default /tmp/batch-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/batch-out}
STAGES=${STAGES:-nvrtc multi bench}
D=${BATCH_DIR:-.device-h15a}
mkdir -p "$OUT"
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_KERNEL_CACHE=/tmp/vramless-kernel-cache RUST_BACKTRACE=1
rc=0
synth() { # shape, out
    [ -e "$2" ] && return
    local t0=$SECONDS
    "$D/synth-model" --shape "$1" --quant q4_k_m --vocab "$VOCAB" --out "$2" > /dev/null || rc=1
    echo "synth-model $1 took $((SECONDS - t0)) s"
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    for stage in $STAGES; do
        echo "======== $stage ($(date -u +%T))"
        t0=$SECONDS
        case $stage in
        nvrtc) "$D/cuda_nvrtc" multi 2>&1 | tail -3 || rc=1 ;;
        multi)
            synth smollm2-135m /tmp/s135.gguf
            synth llama3.1-8b /tmp/l8b.gguf
            VRAMLESS_SYNTH_MODELS=/tmp/s135.gguf:/tmp/l8b.gguf "$D/cuda_multi" --nocapture \
                --test-threads 1 2>&1 | grep -vE "^\s*$" | tail -40 || rc=1
            ;;
        bench)
            synth llama3.1-8b /tmp/l8b.gguf
            VRAMLESS_BENCH_MODEL=/tmp/l8b.gguf VRAMLESS_BENCH_JSON="$OUT/multi-bench-8b.json" \
                "$D/cuda_multi_bench" 2>&1 | grep -vE "^\s*$" | tail -20 || rc=1
            ;;
        *) echo "unknown stage $stage"; rc=1 ;;
        esac
        echo "stage $stage: $((SECONDS - t0)) s"
    done
    echo "exit $rc"
} 2>&1 | tee "$OUT/batch-model.log"
exit $rc
