#!/usr/bin/env bash
# Resident CUDA decode speed on synthetic Llama-shaped GGUFs (random weights, real shapes and
# quant mixes), written on the GPU machine by synth-model. Needs in .device/cuda: generate and
# synth-model (release, --features cuda), cuda_kernels (test binary); and the Llama 3 vocabulary
# GGUF at .device/vocab.gguf (a copy of ../shared/fixtures/vocab/ggml-vocab-llama-bpe.gguf).
# Runs cudarc's per-buffer event tracking off (the default) and on (VRAMLESS_CUDA_EVENT_TRACKING=1)
# in the same run: greedy tokens must be equal, and the speed difference is reported.
# Run from the repository root there. Logs go to $OUT (default /tmp/cuda-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cuda-out}
mkdir -p "$OUT"
BIN=.device/cuda
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache}
export RUST_BACKTRACE=1
rc=0
gen() { # label, model, extra env
    local label=$1 model=$2
    shift 2
    echo "-- $label"
    env "$@" "$BIN/generate" --device cuda --model "$model" --prompt "The capital of France is" \
        --max-tokens 32 --ctx 1024 --json "$OUT/$label.json" --bench || rc=1
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    echo "== cuda_kernels (event tracking off)"
    "$BIN/cuda_kernels" --test-threads=1 2>&1 | tail -4 || rc=1
    for spec in "smollm2-135m q4_k_m s135" "llama3.1-8b q4_k_m l8b"; do
        set -- $spec
        echo "== synth-model --shape $1 --quant $2"
        "$BIN/synth-model" --shape "$1" --quant "$2" --vocab .device/vocab.gguf --out "/tmp/$3.gguf" || rc=1
        gen "$3-untracked" "/tmp/$3.gguf" VRAMLESS_CUDA_EVENT_TRACKING=0
        gen "$3-tracked" "/tmp/$3.gguf" VRAMLESS_CUDA_EVENT_TRACKING=1
        if python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['tokens']; b=json.load(open(sys.argv[2]))['tokens']; print('greedy tokens tracked == untracked:', a==b, len(a)); sys.exit(a!=b)" \
            "$OUT/$3-untracked.json" "$OUT/$3-tracked.json"; then :; else rc=1; fi
        rm -f "/tmp/$3.gguf"
    done
    echo "== exit $rc"
    exit $rc
} 2>&1 | tee "$OUT/cuda-bench-synth.log"
exit "${PIPESTATUS[0]}"
