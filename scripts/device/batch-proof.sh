#!/usr/bin/env bash
# Proof of the multi-sequence engine (issue 15) on a GPU machine with no Rust toolchain and no
# network, from carried binaries.
#
# Build on the development machine (release, CUDA) and strip into .device-batch/:
#
#   cargo build --release -p vramless-examples --features cuda \
#       --bin bench-stream-model --bin bench-decode --bin synth-model
#   mkdir -p .device-batch && for b in bench-stream-model bench-decode synth-model; do
#       strip -o .device-batch/$b target/release/$b; done
#
# then run `bash scripts/device/batch-proof.sh` from the repository root there (the device tool
# ships the working tree; carry .device-batch). It writes:
# 1. Streamed: a synthetic Llama-3.1-70B Q4_K_M (synth-model, 42.5 GB on the machine's disk),
#    bench-stream-model --vram-budget 24GiB --ctx 512 --batch 1,8,32: aggregate and per-sequence
#    tok/s, the ratio to B x the batch-1 figure of the same run (targets: >= 7 at B = 8, >= 25
#    at B = 32 over B x 1, i.e. ratio >= 0.875 / 0.78), bytes streamed per step, the KV pool and
#    what it displaced (the plan lines), the bus limit measured in the same run.
# 2. Resident: a synthetic Llama-3.1-8B Q4_K_M, bench-decode --batch 1..64 (1,2,4,...,64) and
#    the memory check (1000 steps with sequences joining and leaving; host RSS and free device
#    memory before/after).
# Logs and JSON lines go to $OUT (default /tmp/batch-out); BIN overrides the binary folder;
# PARTS picks the parts (default "1 2"); KEEP=1 keeps the 70B file for a later run
# (scripts/device/serve-load.sh with MODEL=/tmp/batch-proof-models/l70b.gguf).
# Budget: about 8 minutes of device time (70B synthesis ~2-3 min, its bench ~3 min, 8B ~2 min).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/batch-out}
BIN=${BIN:-.device-batch}
mkdir -p "$OUT"
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache} RUST_BACKTRACE=1
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
M=/tmp/batch-proof-models
mkdir -p "$M"
rc=0
PARTS=${PARTS:-1 2}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
show() { # log file: the lines worth reading
    grep -E "^(plan|stats|bench-stream-model|bench-decode): |^ +[0-9]+ |^ +B " "$1" | grep -v "e.g. layer" | cut -c1-300
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv
    free -g | head -2
    if has 1; then
    echo "== 1. streamed: synthetic Llama-3.1-70B Q4_K_M, --vram-budget 24GiB, --ctx 512, --batch 1,8,32"
    t=$(date +%s)
    [ -s "$M/l70b.gguf" ] || "$BIN/synth-model" --shape llama3.1-70b --quant q4_k_m --vocab "$VOCAB" --out "$M/l70b.gguf" || rc=1
    echo "synth-model 70B: $(( $(date +%s) - t )) s"
    timeout 330 "$BIN/bench-stream-model" --device cuda --model "$M/l70b.gguf" --prompt "Hi" \
        --ctx 512 --vram-budget 24GiB --batch 1,8,32 --tokens 4 --label l70b-batch \
        > "$OUT/l70b-batch.json" 2> "$OUT/l70b-batch.log" || rc=1
    show "$OUT/l70b-batch.log"
    [ "${KEEP:-0}" = 1 ] || rm -f "$M/l70b.gguf"
    fi
    if has 2; then
    echo "== 2. resident: synthetic Llama-3.1-8B Q4_K_M, bench-decode --batch 1..64 + memory check"
    "$BIN/synth-model" --shape llama3.1-8b --quant q4_k_m --vocab "$VOCAB" --out "$M/l8b.gguf" || rc=1
    timeout 240 "$BIN/bench-decode" --device cuda --model "$M/l8b.gguf" --batch 1..64 \
        --prompt-len 32 --gen 32 --churn-steps 1000 \
        > "$OUT/l8b-batch.json" 2> "$OUT/l8b-batch.log" || rc=1
    show "$OUT/l8b-batch.log"
    rm -f "$M/l8b.gguf"
    fi
    echo "== JSON"
    cat "$OUT"/l70b-batch.json "$OUT"/l8b-batch.json 2>/dev/null
    echo "rc=$rc"
} 2>&1 | tee "$OUT/summary.txt"
exit $rc
