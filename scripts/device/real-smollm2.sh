#!/usr/bin/env bash
# The real default model (SmolLM2-135M-Instruct Q4_1, 98 MB) on the GPU machine: llama-model's
# CUDA backend against the CPU backend and llama.cpp's fixture logits, batched prefill, and the
# streaming engine forced to stream through every CPU-side data path against resident mode.
#
# The GGUF is larger than one 64 MiB transfer, so it arrives in two halves on a warm machine:
# a first call copies `model.a` to /tmp/parts, this script's call brings `model.b` (see the
# `split` line below). Build here (release, feature cuda), strip, and pack the executables:
#
#   cargo test --release -p vramless-llama-model --features cuda --test cuda_forward \
#       --test cuda_batch --no-run
#   cargo build --release -p vramless-examples --features cuda --bins
#   tar -cJf DIR/bins.tar.xz -C <folder of stripped executables> .
#   head -c 49000000 MODEL > DIR_A/model.a; tail -c +49000001 MODEL > DIR_B/model.b
#
# Environment: BIN (unpacked executables, default /tmp/final-bin), OUT (logs, default
# /tmp/real-out). Exit status 0 only when every check passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/real-out}
BIN=${BIN:-/tmp/final-bin}
mkdir -p "$OUT"
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache} RUST_BACKTRACE=1
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_SMOLLM2_FIXTURES="$PWD/llama-model/tests/fixtures/smollm2"
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
M=/tmp/smollm2.gguf
if [ -e /tmp/parts/model.a ] && [ -e /tmp/parts/model.b ]; then
    cat /tmp/parts/model.a /tmp/parts/model.b > "$M"
fi
if [ ! -e "$M" ] || [ "$(sha256sum "$M" | cut -d' ' -f1)" != "$SHA" ]; then
    echo "SmolLM2 GGUF missing or corrupt at $M (need sha256 $SHA; /tmp/parts: $(ls /tmp/parts 2>&1))"
    exit 2
fi
export VRAMLESS_MODEL="$M"
rc=0
same() { # label, reference json, candidate json
    python3 -c "import json,sys
a=json.load(open(sys.argv[2]))['tokens']; b=json.load(open(sys.argv[3]))['tokens']
ok = a==b and len(a)>0
print(f'{sys.argv[1]}: greedy tokens equal resident: {ok} ({len(b)} tokens)')
sys.exit(0 if ok else 1)" "$@"
}
gen() { # json, logits, prompt, extra flags...
    local j=$1 l=$2 p=$3
    shift 3
    timeout 120 "$BIN/generate" --device cuda --model "$M" --prompt "$p" --max-tokens 24 --ctx 512 \
        --json "$j" --dump-logits "$l" "$@"
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    echo "== cuda_forward: GPU vs CPU vs llama.cpp on the real SmolLM2 fixtures"
    "$BIN/cuda_forward" --nocapture --test-threads=1 || rc=1
    echo "== cuda_batch: batched tensor-core prefill vs token by token vs CPU (real SmolLM2 included)"
    "$BIN/cuda_batch" --nocapture --test-threads=1 || rc=1
    echo "== streaming engine on the real SmolLM2: streamed == resident"
    for prompt in "Hi" "The capital of France is"; do
        tag=p${#prompt}
        gen "$OUT/$tag-resident.json" "$OUT/$tag-resident.logits" "$prompt" > /dev/null 2>&1 || rc=1
        while IFS='|' read -r name flags; do
            # shellcheck disable=SC2086
            gen "$OUT/$tag-$name.json" "$OUT/$tag-$name.logits" "$prompt" --vram-budget 140MiB \
                $flags --stats > "$OUT/$tag-$name.log" 2>&1 || { rc=1; tail -3 "$OUT/$tag-$name.log"; }
            grep -E "^(plan|stats): " "$OUT/$tag-$name.log" | cut -c1-200 | head -3
            same "real $tag $name" "$OUT/$tag-resident.json" "$OUT/$tag-$name.json" || rc=1
            if cmp -s "$OUT/$tag-resident.logits" "$OUT/$tag-$name.logits"; then
                echo "real $tag $name: logits after the prompt bit-identical to resident"
            else
                echo "real $tag $name: logits after the prompt differ from resident (informational for batched prompts)"
                [ "$prompt" = Hi ] && rc=1
            fi
        done <<EOF
pinned|--ram-budget 1GiB
direct|--ram-budget 0 --path direct
mmap|--ram-budget 0 --path mmap
baseline|--path mmap-baseline
EOF
    done
    rm -f "$OUT"/*.logits
    echo "== chat --device cuda (two turns, greedy)"
    printf 'What is the capital of France?\nAnd of Italy?\n' | timeout 120 "$BIN/chat" --device cuda \
        --model "$M" --temperature 0 --max-tokens 40 || rc=1
    echo "== generate --device cuda sampled (temperature 0.8, top-k 40, seed 7)"
    timeout 120 "$BIN/generate" --device cuda --model "$M" --prompt "Once upon a time" \
        --max-tokens 24 --temperature 0.8 --top-k 40 --seed 7 --ctx 256 || rc=1
    echo "== bench-decode on the real SmolLM2"
    timeout 120 "$BIN/bench-decode" --device cuda --model "$M" --prompt-len 128 --gen 128 || rc=1
    echo "exit status: $rc"
    exit "$rc"
} 2>&1 | tee "$OUT/real-smollm2.log"
exit "${PIPESTATUS[0]}"
