#!/usr/bin/env bash
# The 8-bit-activation matrix-vector path (issue 18) on the GPU machine: kernel tests, the
# cuda_matvec bench (f32 kernel vs q8 kernel per product, fraction of D2D in the same run),
# end-to-end 8B Q4_K_M decode before/after (VRAMLESS_MATVEC_Q8=0 / 1), an ncu profile of the
# decode step's products, and the real-SmolLM2 forward tests (the 98 MB GGUF comes in two halves,
# model.a and model.b, carried by two back-to-back calls; the halves wait in /tmp/parts).
#
# Build on the development machine (see the helper's report in docs/PERF.md for the commands):
# test binaries cuda_nvrtc cuda_matvec_q8 cuda_kernels cuda_fused cuda_forward cuda_synth, the
# bench cuda_matvec, bench-decode and synth-model; strip them into a folder, `tar -cJf
# $KERN_DIR/bins.tar.xz -C folder .`, carry $KERN_DIR (default .device-kern).
# Stages ($STAGES): nvrtc q8 kernels bench e2e ncu forward synth (e2e: q8 off/on at prompt
# lengths 128 and 32; E2E_VARIANTS=1 adds 2-row units and 4 warps a unit).
set -uo pipefail
# Run from the repository root.
OUT=${OUT:-/tmp/kern-out}
K=${KERN_DIR:-.device-kern}
STAGES=${STAGES:-nvrtc q8 kernels bench e2e ncu}
BIN=/tmp/kern-bin
mkdir -p "$OUT" /tmp/parts "$BIN"
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
[ -e "$K/bins.tar.xz" ] && tar -xJf "$K/bins.tar.xz" -C "$BIN"
for p in a b; do [ -e "$K/model.$p" ] && cp "$K/model.$p" "/tmp/parts/model.$p"; done
. "$(dirname "$0")/nvrtc-env.sh"  # NVRTC: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_KERNEL_CACHE=/tmp/vramless-kernel-cache RUST_BACKTRACE=1
export VRAMLESS_SMOLLM2_FIXTURES="$PWD/llama-model/tests/fixtures/smollm2"
rc=0
t() { echo "-- $*"; "$@" || { rc=1; echo "!!! FAILED: $*"; }; }
bench() { # label, env..., then bench-decode args after --
    local label=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    echo "-- bench-decode $label: ${envs[*]} $*"
    mkdir -p /tmp/kern-json
    env "${envs[@]}" "$BIN/bench-decode" --device cuda "$@" > "/tmp/kern-json/$label.json" || rc=1
    cat "/tmp/kern-json/$label.json"
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.sm,power.draw --format=csv
    for stage in $STAGES; do
        echo "======== $stage ($(date -u +%T))"
        case $stage in
        nvrtc) t "$BIN/cuda_nvrtc" 2>&1 | tail -3 ;;
        q8) t "$BIN/cuda_matvec_q8" --test-threads=1 --nocapture 2>&1 | grep -vE "^\s*$" ;;
        kernels)
            # The tests' options keep the f32 kernels unless VRAMLESS_MATVEC_Q8 is set.
            "$BIN/cuda_kernels" --test-threads=1 2>&1 | grep -E "^test |result|panicked" || rc=1
            "$BIN/cuda_fused" --test-threads=1 2>&1 | grep -E "^test |result|panicked" || rc=1
            ;;
        bench)
            t "$BIN/cuda_matvec" 2>&1 | tee "$OUT/cuda_matvec.txt"
            ;;
        e2e)
            t0=$SECONDS
            "$BIN/synth-model" --shape llama3.1-8b --quant q4_k_m --vocab "$VOCAB" --out /tmp/m.gguf || rc=1
            echo "synth took $((SECONDS - t0)) s"
            bench l8b-before VRAMLESS_MATVEC_Q8=0 -- --model /tmp/m.gguf --prompt-len 128 --gen 128
            bench l8b-after VRAMLESS_MATVEC_Q8=1 -- --model /tmp/m.gguf --prompt-len 128 --gen 128
            if [ "${E2E_VARIANTS:-0}" = 1 ]; then
                bench l8b-after-r2 VRAMLESS_MATVEC_Q8=1 VRAMLESS_MATVEC_ROWS=2 -- --model /tmp/m.gguf --prompt-len 32 --gen 128
                bench l8b-after-k4 VRAMLESS_MATVEC_Q8=1 VRAMLESS_MATVEC_KSPLIT=4 -- --model /tmp/m.gguf --prompt-len 32 --gen 128
            fi
            bench l8b-before2 VRAMLESS_MATVEC_Q8=0 -- --model /tmp/m.gguf --prompt-len 32 --gen 128
            bench l8b-after2 VRAMLESS_MATVEC_Q8=1 -- --model /tmp/m.gguf --prompt-len 32 --gen 128
            ;;
        ncu)
            if command -v ncu > /dev/null && [ -e /tmp/m.gguf ]; then
                for q in ${NCU_Q8:-1}; do
                    timeout 150 ncu --clock-control none -k regex:'matvec|quantize|rmsnorm' -c ${NCU_COUNT:-10} \
                        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
                        --section LaunchStats --section WarpStateStats --section SchedulerStats \
                        --section InstructionStats --section ComputeWorkloadAnalysis \
                        env VRAMLESS_MATVEC_Q8=$q VRAMLESS_CUDA_GRAPH=0 "$BIN/bench-decode" --device cuda \
                        --model /tmp/m.gguf --prompt-len 1 --gen 1 > "$OUT/ncu-q8-$q.txt" 2>&1
                    grep -E "matvec|quantize|rmsnorm|Duration|Executed Ipc|Issue Slots Busy|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Theoretical Occ|Compute \(SM\)|Block Limit Reg|Stall|Issue Slots" "$OUT/ncu-q8-$q.txt" | head -120
                done
            else
                echo "(no ncu or no model)"
            fi
            ;;
        forward)
            if [ -e /tmp/parts/model.a ] && [ -e /tmp/parts/model.b ]; then
                cat /tmp/parts/model.a /tmp/parts/model.b > /tmp/smollm2.gguf
            fi
            if [ -e /tmp/smollm2.gguf ] && [ "$(sha256sum /tmp/smollm2.gguf | cut -d' ' -f1)" = "$SHA" ]; then
                export VRAMLESS_MODEL=/tmp/smollm2.gguf
                t "$BIN/cuda_forward" --nocapture --test-threads=1 2>&1 | grep -vE "^\s*$" | tail -60
                bench smol-before VRAMLESS_MATVEC_Q8=0 -- --model /tmp/smollm2.gguf --prompt-len 128 --gen 256
                bench smol-after VRAMLESS_MATVEC_Q8=1 -- --model /tmp/smollm2.gguf --prompt-len 128 --gen 256
            else
                echo "!!! SmolLM2 not assembled (parts missing: the machine was not warm between calls)"
                rc=1
            fi
            ;;
        synth)
            "$BIN/synth-model" --shape smollm2-135m --quant q4_k_m --vocab "$VOCAB" --out /tmp/s135.gguf || rc=1
            for q in 0 1; do
                echo "-- cuda_synth VRAMLESS_MATVEC_Q8=$q"
                VRAMLESS_MATVEC_Q8=$q VRAMLESS_SYNTH_MODELS=${SYNTH_MODELS:-/tmp/s135.gguf} timeout 200 "$BIN/cuda_synth" --nocapture 2>&1 |
                    grep -vE "^\s*$" | tail -14 || rc=1
            done
            ;;
        esac
    done
    echo "== exit $rc ($(date -u +%T))"
    exit $rc
} 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
