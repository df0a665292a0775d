#!/usr/bin/env bash
# GPU run of the batched (tensor-core) prefill path of llama-model's CUDA backend, on a machine
# with an NVIDIA GPU and driver but no Rust toolchain and no network. Build on the development
# machine (release: the speed report times host-side launches too):
#
#   cargo test --release -p vramless-llama-model --features cuda --test cuda_batch --no-run
#   cargo bench -p vramless-benches --features cuda --bench cuda_batch --no-run   (-> cuda_batch_bench)
#   cargo build --release -p vramless-examples --bin synth-model
#   mkdir -p .device-prefill && strip -o .device-prefill/<name> <each executable>
#
# The real SmolLM2 GGUF (98 MB) does not fit one transfer: carry its first part as
# .device-prefill/model.a (`head -c N`) in one call and the rest as .device-prefill/model.b
# (`tail -c +N+1`) in a later call on the same warm machine; parts are kept under
# /tmp/prefill-parts and joined (sha256-checked) once both are there. Without it the real-model
# comparison skips loudly and only the synthetic models run.
#
# Steps: (1) GEMM vs f64 reference for all ten weight types; (2) speed report on a synthetic
# Llama-3.1-8B Q4_K_M (prefill tok/s at 512 tokens, K+1 = 2..9 positions vs a one-token pass,
# GEMM TFLOP/s); (3) batched prefill vs token-by-token vs CPU on the SmolLM2 fixture prompts
# (real SmolLM2 if present, synthetic SmolLM2-shaped Q4_K_M and Q8_0, synthetic 8B).
# Run from the repository root there. Logs go to $OUT (default /tmp/cuda-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cuda-out}
mkdir -p "$OUT"
BIN=.device-prefill
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache}
export RUST_BACKTRACE=1 VRAMLESS_SMOLLM2_FIXTURES="$PWD/llama-model/tests/fixtures/smollm2"

mkdir -p /tmp/prefill-parts
for p in a b; do [ -e "$BIN/model.$p" ] && cp "$BIN/model.$p" /tmp/prefill-parts/; done
model=/tmp/smollm2.gguf
if [ -e /tmp/prefill-parts/model.a ] && [ -e /tmp/prefill-parts/model.b ]; then
    cat /tmp/prefill-parts/model.a /tmp/prefill-parts/model.b > "$model"
fi
if [ -e "$model" ] && [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$SHA" ]; then
    echo "real SmolLM2 GGUF: $model"
else
    echo "!!! real SmolLM2 GGUF not assembled on this machine: its comparison is skipped"
    model=/nonexistent/smollm2.gguf
fi
export VRAMLESS_MODEL="$model"

rc=0
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    for spec in "smollm2-135m q4_k_m s135q4" "smollm2-135m q8_0 s135q8" "llama3.1-8b q4_k_m l8b"; do
        set -- $spec
        echo "== synth-model --shape $1 --quant $2"
        "$BIN/synth-model" --shape "$1" --quant "$2" --vocab llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf --out "/tmp/$3.gguf" >/dev/null || rc=1
        ls -l "/tmp/$3.gguf"
    done
    echo "== (1) GEMM vs f64 reference, every weight type"
    timeout 150 "$BIN/cuda_batch" --nocapture --test-threads=1 gemm_every_type || rc=1
    echo "== (2) speed report, synthetic Llama-3.1-8B Q4_K_M"
    VRAMLESS_BENCH_MODEL=/tmp/l8b.gguf VRAMLESS_BENCH_JSON="$OUT/prefill-bench.json" \
        timeout 120 "$BIN/cuda_batch_bench" || rc=1
    echo "== (3) batched prefill vs token by token vs CPU"
    VRAMLESS_BATCH_MODELS=/tmp/s135q4.gguf:/tmp/s135q8.gguf:/tmp/l8b.gguf \
        timeout 140 "$BIN/cuda_batch" --nocapture --test-threads=1 batched_prefill || rc=1
    echo "== exit $rc"
    exit $rc
} 2>&1 | tee "$OUT/cuda-prefill.log"
exit "${PIPESTATUS[0]}"
