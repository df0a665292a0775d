#!/usr/bin/env bash
# The CPU backend beside llama.cpp's CPU backend on the GPU machine's cores (issue 17's CPU
# kernel figure: >= 0.9 of llama.cpp's CPU-only decode bandwidth), no Rust toolchain there.
#
# Build on the development machine and strip into .device-cpu/:
#
#   cargo build --release -p vramless-examples --bin bench-decode --bin synth-model
#   cargo bench -p vramless-benches --bench cpu_matvec --no-run
#   mkdir -p .device-cpu && for b in bench-decode synth-model; do
#       strip -o .device-cpu/$b target/release/$b; done
#   strip -o .device-cpu/cpu_matvec target/release/deps/cpu_matvec-<hash>
#
# and, for the peer, `../shared/tools/llamacpp-peer.sh source .device-cpu/lcpp` and a copy of
# that script in .device-cpu/ (it builds there in the background while step 1 runs; its
# llama-bench with -ngl 0 is llama.cpp's CPU backend).
# Run from the repository root there: `bash scripts/device/cpu-peer.sh`. Steps:
# 1. cpu_matvec at THREADS (default "16,8,1"): GB/s per type and shape from RAM, with the
#    machine's read bandwidth measured in the same run.
# 2. Synthetic Llama-3.1-8B Q4_K_M: `bench-decode --device cpu` and llama.cpp's
#    `llama-bench -ngl 0 -t 16` on the same file (when the peer built), tok/s and GB/s each.
# Logs go to $OUT (default /tmp/cpu-peer-out); BIN overrides the binary folder.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cpu-peer-out}
BIN=${BIN:-.device-cpu}
mkdir -p "$OUT"
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
M=/tmp/cpu-peer-models
mkdir -p "$M"
rc=0
{
    date -u
    lscpu | grep -E "^(Model name|CPU\(s\)|L3)" | cut -c1-120
    free -g | head -2
    if [ -d "$BIN/lcpp" ] && [ ! -x /tmp/lcpp-build/bin/llama-bench ]; then
        echo "== building the peer in the background"
        setsid bash "$BIN/llamacpp-peer.sh" build "$BIN/lcpp" > "$OUT/peer-build.log" 2>&1 &
    fi
    echo "== 1. cpu_matvec, threads ${THREADS:-16,8,1}"
    CPU_MATVEC_THREADS=${THREADS:-16,8,1} CPU_MATVEC_MS=${MS:-300} timeout 400 "$BIN/cpu_matvec" 2>&1 |
        grep -vE "^\s*$" || rc=1
    echo "== 2. synthetic 8B Q4_K_M, CPU decode"
    [ -s "$M/l8b.gguf" ] || "$BIN/synth-model" --shape llama3.1-8b --quant q4_k_m --vocab "$VOCAB" \
        --out "$M/l8b.gguf" > /dev/null || rc=1
    timeout 300 "$BIN/bench-decode" --device cpu --model "$M/l8b.gguf" --prompt-len 16 --gen 32 2>&1 |
        grep -E "decode|weight bytes" || rc=1
    for _ in $(seq 60); do [ -x /tmp/lcpp-build/bin/llama-bench ] && break; sleep 5; done
    if [ -x /tmp/lcpp-build/bin/llama-bench ]; then
        timeout 300 /tmp/lcpp-build/bin/llama-bench -m "$M/l8b.gguf" -ngl 0 -t "${PEER_THREADS:-16}" \
            -p 0 -n 32 -r 2 2>&1 | grep -E "\|" || rc=1
    else
        echo "!!! no llama.cpp peer (carry its source in $BIN/lcpp and llamacpp-peer.sh in $BIN)"
        rc=1
    fi
    echo "== exit $rc"
    exit $rc
} 2>&1 | tee "$OUT/cpu-peer.log"
exit "${PIPESTATUS[0]}"
