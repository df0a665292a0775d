#!/usr/bin/env bash
# Equality of the CUDA multi-sequence engine with single-sequence runs on a GPU machine (issue
# 15): `generate --device cuda --batch-file` (prompts of different lengths, --max-seqs 2 so
# sequences join and leave mid-run) against `generate --device cuda --prompt` for each prompt
# alone, greedy, on every data path: resident, streamed from pinned RAM, streamed from storage
# through O_DIRECT and mmap CPU workers, and with KV growth (`--max-seqs 1 --kv-growth`: the
# pool is planned for one sequence, the others join by moving resident layers off the device,
# which the run's "KV growth:" line must show). Models: synthetic SmolLM2-135M and Llama-3.1-8B
# (synth-model, Q4_K_M) written on the machine's disk, and the real SmolLM2 when REAL names its
# GGUF (see real-smollm2.sh for bringing it over in two calls).
#
# Build here (release, CUDA) and strip into .device-equal/ (BIN overrides the folder):
#
#   cargo build --release -p vramless-examples --features cuda --bin generate --bin synth-model
#   mkdir -p .device-equal && for b in generate synth-model; do
#       strip -o .device-equal/$b target/release/$b; done
#
# then `bash scripts/device/batch-equal.sh` from the repository root there (PATHS picks data
# paths, e.g. PATHS="pinned growth"; growth compares with the pinned path's single runs). Exit 0 only when
# every batched sequence's tokens equal its single run on every model and path. Logs to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/equal-out}
BIN=${BIN:-.device-equal}
mkdir -p "$OUT"
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache} RUST_BACKTRACE=1
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
M=/tmp/batch-equal-models
mkdir -p "$M"
P="$OUT/prompts.txt"
{
    echo "The capital of France is"
    echo "Once upon a time, in a land far away, there lived a king who had three daughters. The eldest was wise, the second was brave, and the youngest was kind to every creature of the forest, and every evening she"
    echo "1 2 3 4 5"
    echo "Water boils at"
    echo "Here is a list of fruit: apple, banana,"
} > "$P"
NP=$(grep -c . "$P")
# KV growth runs ten copies of the prompts: 50 sequences, far more KV than a pool planned for
# one sequence (and than the room the plan left free), so layers must leave the device.
P3="$OUT/prompts10.txt"
for _ in 1 2 3 4 5 6 7 8 9 10; do cat "$P"; done > "$P3"
rc=0
compare() { # batch.json, label of the single runs, prompts in the file: each entry's tokens against its single run
    python3 - "$1" "$2" "$OUT" "$3" <<'PY'
import json, sys
batch = json.load(open(sys.argv[1])); label = sys.argv[2]; out = sys.argv[3]; n = int(sys.argv[4])
bad = 0
for k, b in enumerate(batch):
    s = json.load(open(f"{out}/{label}-single{k % n}.json"))
    same = b["tokens"] == s["tokens"]
    agree = sum(1 for x, y in zip(b["tokens"], s["tokens"]) if x == y)
    print(f"  {label} prompt {k}: {len(b['tokens'])} tokens, {'EQUAL' if same else 'DIFFERENT'}"
          f" (first {agree} agree)")
    bad += not same
sys.exit(1 if bad or not batch else 0)
PY
}
shapes=(smollm2-135m llama3.1-8b)
[ -n "${REAL:-}" ] && shapes+=(real-smollm2)
for shape in "${shapes[@]}"; do
    f="$M/$shape.gguf"
    if [ "$shape" = real-smollm2 ]; then
        f=$REAL
    else
        [ -s "$f" ] || "$BIN/synth-model" --shape "$shape" --quant q4_k_m --vocab "$VOCAB" --out "$f" > /dev/null || rc=1
    fi
    # A device budget that leaves room for about a third of the layers: the rest stream.
    case $shape in smollm2-135m) small=150MiB ;; real-smollm2) small=150MiB ;; *) small=2GiB ;; esac
    for path in ${PATHS:-resident pinned direct mmap growth}; do
        seqs=(--max-seqs 2)
        case $path in
            resident) flags=() ;;
            pinned) flags=(--vram-budget "$small" --ram-budget 64GiB) ;;
            direct) flags=(--vram-budget "$small" --ram-budget 0 --path direct) ;;
            mmap) flags=(--vram-budget "$small" --ram-budget 0 --path mmap) ;;
            growth) flags=(--vram-budget "$small" --ram-budget 64GiB); seqs=(--max-seqs 1 --kv-growth) ;;
        esac
        label="$shape-$path"
        echo "== $label"
        common=(--device cuda --model "$f" --max-tokens 12 --ctx 256 --temperature 0 "${flags[@]}")
        file=$P
        [ "$path" = growth ] && file=$P3
        timeout 120 "$BIN/generate" "${common[@]}" --batch-file "$file" "${seqs[@]}" \
            --json "$OUT/$label-batch.json" > "$OUT/$label-batch.log" 2>&1 || { rc=1; tail -5 "$OUT/$label-batch.log"; continue; }
        grep -E "^plan: [0-9]+ layers" "$OUT/$label-batch.log" | cut -c1-120
        if [ "$path" = growth ]; then
            g=$(grep -E "^generate: KV growth:" "$OUT/$label-batch.log")
            echo "  $g"
            # At least one layer must have left the device for the joining sequences' KV.
            echo "$g" | grep -qE "growth: [1-9][0-9]* layer moves off" || { echo "  $label: no layer moved"; rc=1; }
            # The single runs are the pinned path's (the same flags).
            compare "$OUT/$label-batch.json" "$shape-pinned" "$NP" || rc=1
            continue
        fi
        k=0
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            timeout 60 "$BIN/generate" "${common[@]}" --prompt "$line" \
                --json "$OUT/$label-single$k.json" > "$OUT/$label-single$k.log" 2>&1 || { rc=1; tail -3 "$OUT/$label-single$k.log"; }
            k=$((k + 1))
        done < "$P"
        compare "$OUT/$label-batch.json" "$label" "$NP" || rc=1
    done
done
echo "rc=$rc"
exit $rc
