#!/usr/bin/env bash
# Fast-decode check of the llama-model CUDA backend on the GPU machine (no Rust toolchain, no
# network there). Build on the development machine:
#
#   CARGO_TARGET_DIR=/work/target-kern cargo test --release -p vramless-llama-model --features cuda \
#       --test cuda_kernels --test cuda_fused --test cuda_forward --test cuda_synth --test cuda_nvrtc \
#       --no-run
#   cargo bench -p vramless-benches --features cuda --bench cuda_kernels --bench cuda_matvec --no-run
#       (-> bench_cuda_kernels, bench_cuda_matvec)
#   CARGO_TARGET_DIR=/work/target-kern cargo build --release -p vramless-examples --features cuda \
#       --bin bench-decode --bin synth-model
#   strip each executable into a folder, `tar -cJf .device-kern/bins.tar.xz -C folder .`
#
# and carry `.device-kern` (bins.tar.xz, and a part of the SmolLM2 GGUF as model.a or model.b:
# the 98 MB file does not fit one 64 MiB transfer, so two back-to-back calls each bring half;
# the halves wait in /tmp/parts on the warm machine, which goes back after ~30 s idle).
# $KERN_DIR names the carried folder (default .device-kern), e.g. a first call
# `KERN_DIR=.device-kern STAGES=kernels` with model.a, then at once
# `KERN_DIR=.device-kern2 STAGES=forward` with model.b.
#
# Stages, chosen by $STAGES (space separated, default "kernels bench8b smol"):
#   kernels  NVRTC compile test, every kernel test (cuda_kernels, cuda_fused) and the matvec
#            bandwidth report, for several matvec shapes (VRAMLESS_MATVEC_ROWS rows per unit,
#            VRAMLESS_MATVEC_KSPLIT warps per unit)
#   synth    cuda_synth on synthetic SmolLM2-135M and Llama-3.1-8B Q4_K_M: GPU decode vs the CPU
#            f32 backend (logits, greedy tokens), graph == direct launches, GPU top-k sampling
#   bench8b  synthetic Llama-3.1-8B Q4_K_M: bench-decode with the CUDA graph (default matvec
#            shape, then other rows/warps per unit), without the graph; nsys kernel summary
#            when nsys is installed
#   smol     synthetic SmolLM2-135M Q4_K_M bench-decode
#   forward  real SmolLM2 (joined from /tmp/parts): cuda_forward (GPU = CPU = llama.cpp, graph =
#            direct launches, GPU top-k sampling = CPU sampler) and bench-decode
#   bench70b synthetic Llama-3.1-70B Q4_K_M (42.5 GB on the local disk) resident: bench-decode
# Run from the repository root there. Logs and JSON go to $OUT (default /tmp/cuda-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cuda-out}
STAGES=${STAGES:-kernels bench8b smol}
mkdir -p "$OUT" /tmp/parts /tmp/kern-bin
K=${KERN_DIR:-.device-kern}
BIN=/tmp/kern-bin
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
[ -e "$K/bins.tar.xz" ] && tar -xJf "$K/bins.tar.xz" -C "$BIN"
for p in a b; do [ -e "$K/model.$p" ] && cp "$K/model.$p" "/tmp/parts/model.$p"; done
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_KERNEL_CACHE=/tmp/vramless-kernel-cache RUST_BACKTRACE=1
export VRAMLESS_SMOLLM2_FIXTURES="$PWD/llama-model/tests/fixtures/smollm2"
rc=0
bench() { # label, model, extra args / env via env(1)
    local label=$1 model=$2
    shift 2
    echo "-- bench-decode $label"
    env "$@" "$BIN/bench-decode" --device cuda --model "$model" ${BENCH_ARGS:-} \
        > "$OUT/$label.json" || rc=1
    cat "$OUT/$label.json"
}
synth() { # shape, out
    echo "-- synth-model --shape $1 --quant q4_k_m"
    local t0=$SECONDS
    "$BIN/synth-model" --shape "$1" --quant q4_k_m --vocab "$VOCAB" --out "$2" || rc=1
    echo "synth took $((SECONDS - t0)) s"
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    ls -l "$BIN" /tmp/parts
    for stage in $STAGES; do
        echo "======== $stage ($(date -u +%T))"
        case $stage in
        kernels)
            "$BIN/cuda_nvrtc" --nocapture 2>&1 | tail -3 || rc=1
            for cfg in "4 auto" "4 1" "4 2" "4 4" "2 auto" "2 1"; do
                set -- $cfg
                echo "-- matvec rows per unit $1, warps per unit $2"
                export VRAMLESS_MATVEC_ROWS=$1 VRAMLESS_MATVEC_KSPLIT=$2
                "$BIN/cuda_kernels" --test-threads=1 --nocapture 2>&1 | grep -E "^test |matvec |result|panicked|row " || rc=1
                "$BIN/cuda_fused" --test-threads=1 2>&1 | grep -E "^test |result|panicked|row |want" || rc=1
            done
            for cfg in "4 auto" "4 4" "2 auto"; do
                set -- $cfg
                echo "-- matvec bandwidth, rows per unit $1, warps per unit $2"
                export VRAMLESS_MATVEC_ROWS=$1 VRAMLESS_MATVEC_KSPLIT=$2
                "$BIN/bench_cuda_matvec" 2>&1 | tail -40 || rc=1
            done
            unset VRAMLESS_MATVEC_ROWS VRAMLESS_MATVEC_KSPLIT
            "$BIN/bench_cuda_kernels" 2>&1 | grep -E "launch" || rc=1
            ;;
        synth)
            synth smollm2-135m /tmp/s135.gguf
            synth llama3.1-8b /tmp/l8b.gguf
            VRAMLESS_SYNTH_MODELS=/tmp/s135.gguf:/tmp/l8b.gguf "$BIN/cuda_synth" --nocapture 2>&1 |
                grep -vE "^\s*$" | tail -20 || rc=1
            ;;
        bench8b)
            [ -e /tmp/l8b.gguf ] || synth llama3.1-8b /tmp/l8b.gguf
            BENCH_ARGS="--prompt-len 128 --gen 128" bench l8b-graph /tmp/l8b.gguf
            for cfg in "2 auto" "4 4" "4 1"; do
                set -- $cfg
                BENCH_ARGS="--prompt-len 32 --gen 128" bench "l8b-graph-r$1-k$2" /tmp/l8b.gguf \
                    VRAMLESS_MATVEC_ROWS=$1 VRAMLESS_MATVEC_KSPLIT=$2
            done
            BENCH_ARGS="--prompt-len 32 --gen 64" bench l8b-nograph /tmp/l8b.gguf VRAMLESS_CUDA_GRAPH=0
            if command -v nsys > /dev/null; then
                echo "-- nsys kernel summary (8B, 32 decode tokens)"
                timeout 150 nsys profile --cuda-graph-trace=node -o /tmp/l8b-prof --force-overwrite true \
                    "$BIN/bench-decode" --device cuda --model /tmp/l8b.gguf --prompt-len 8 --gen 32 > /dev/null 2>&1
                timeout 60 nsys stats --report cuda_gpu_kern_sum --format csv /tmp/l8b-prof.nsys-rep \
                    > "$OUT/l8b-kernels.csv" 2>/dev/null
                head -25 "$OUT/l8b-kernels.csv"
            else
                echo "(no nsys on this machine: no per-kernel breakdown)"
            fi
            rm -f /tmp/l8b.gguf
            ;;
        smol)
            [ -e /tmp/s135.gguf ] || synth smollm2-135m /tmp/s135.gguf
            BENCH_ARGS="--prompt-len 128 --gen 256" bench s135-graph /tmp/s135.gguf
            BENCH_ARGS="--prompt-len 32 --gen 128" bench s135-nograph /tmp/s135.gguf VRAMLESS_CUDA_GRAPH=0
            rm -f /tmp/s135.gguf
            ;;
        forward)
            if [ -e /tmp/parts/model.a ] && [ -e /tmp/parts/model.b ]; then
                cat /tmp/parts/model.a /tmp/parts/model.b > /tmp/smollm2.gguf
            fi
            if [ -e /tmp/smollm2.gguf ] && [ "$(sha256sum /tmp/smollm2.gguf | cut -d' ' -f1)" = "$SHA" ]; then
                export VRAMLESS_MODEL=/tmp/smollm2.gguf
                "$BIN/cuda_forward" --nocapture --test-threads=1 2>&1 | grep -vE "^\s*$" | tail -40 || rc=1
                BENCH_ARGS="--prompt-len 128 --gen 256" bench smollm2-graph /tmp/smollm2.gguf
            else
                echo "!!! SmolLM2 not assembled (parts missing: the machine was not warm between calls)"
                rc=1
            fi
            ;;
        bench70b)
            df -h /tmp /dev/shm
            synth llama3.1-70b /tmp/l70b.gguf
            ls -l /tmp/l70b.gguf
            BENCH_ARGS="--prompt-len 8 --gen 32" bench l70b-graph /tmp/l70b.gguf
            rm -f /tmp/l70b.gguf
            ;;
        esac
    done
    echo "== exit $rc ($(date -u +%T))"
    exit $rc
} 2>&1 | tee "$OUT/cuda-decode-kern.log"
exit "${PIPESTATUS[0]}"
