#!/usr/bin/env bash
# Proof of the streaming engine (issue 8) on a GPU machine with no Rust toolchain and no network.
#
# Build on the development machine (release, CUDA) and strip into .device-engine/:
#
#   cargo build --release -p vramless-examples --features cuda \
#       --bin generate --bin bench-stream-model --bin synth-model
#   mkdir -p .device-engine && for b in generate bench-stream-model synth-model; do
#       strip -o .device-engine/$b target/release/$b; done
#
# then run this script from the repository root there (as root, for the cgroup and drop_caches).
# 1. Correctness: synthetic SmolLM2-135M-shaped (Q8_0 and Q4_K_M) and Llama-3.1-8B-shaped (Q4_K_M)
#    GGUFs (synth-model, random weights, the Llama 3 vocabulary from the repository): greedy tokens
#    of the streaming engine forced to stream (small --vram-budget) through every data path must
#    equal llama-model's resident CudaModel (generate without streaming flags), and the logits after
#    the prompt must be bit-identical.
# 2. Speed: a synthetic Llama-3.1-70B Q4_K_M (42.5 GB, written on the machine's disk) with
#    --vram-budget 24GiB: (a) the rest pinned in RAM, (a') the same with 20 layers skipped through
#    a skip map, (b) --ram-budget 16GiB with the rest read from disk (O_DIRECT), (c) the mmap
#    baseline with the process's memory capped at 48 GiB by a cgroup v2 memory.max (page cache
#    dropped first). bench-stream-model prints tok/s, the PCIe limit from the pinned H2D bandwidth
#    measured in the same run, and the ratio (one JSON line each, collected in results.jsonl).
# Logs go to $OUT (default /tmp/stream-out). BIN overrides the binary folder. SHORT=1 skips (a')
# and (c) (to save device time when only the engine changed).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/stream-out}
BIN=${BIN:-.device-engine}
mkdir -p "$OUT"
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache} RUST_BACKTRACE=1
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
# One prompt token (BOS): CudaModel feeds prompts of 2+ tokens through batched tensor-core prefill,
# whose sums are ordered differently from the engine's token-by-token path; a 1-token prompt keeps
# both on the same decode kernels, so logits must match bit for bit.
PROMPT=""
M=/tmp/stream-proof-models
mkdir -p "$M"
rc=0
same() { # label, reference json, candidate json
    python3 -c "import json,sys
a=json.load(open(sys.argv[2]))['tokens']; b=json.load(open(sys.argv[3]))['tokens']
ok = a==b and len(a)>0
print(f'{sys.argv[1]}: greedy tokens equal resident: {ok} ({len(b)} tokens)')
sys.exit(0 if ok else 1)" "$@"
}
correctness() { # tag, shape, quant, vram budget, mix ram budget
    local tag=$1 shape=$2 quant=$3 vb=$4 mix=$5 m="$M/$1.gguf"
    echo "== synth-model --shape $shape --quant $quant"
    "$BIN/synth-model" --shape "$shape" --quant "$quant" --vocab "$VOCAB" --out "$m" || { rc=1; return; }
    echo "-- resident (CudaModel)"
    timeout 120 "$BIN/generate" --device cuda --model "$m" --prompt "$PROMPT" --max-tokens 16 --ctx 512 \
        --json "$OUT/$tag-resident.json" --dump-logits "$OUT/$tag-resident.logits" 2>&1 | tail -3 || rc=1
    local name flags
    while IFS='|' read -r name flags; do
        echo "-- streamed: $name ($flags)"
        # shellcheck disable=SC2086
        timeout 120 "$BIN/generate" --device cuda --model "$m" --prompt "$PROMPT" --max-tokens 16 \
            --ctx 512 --vram-budget "$vb" $flags --stats --json "$OUT/$tag-$name.json" \
            --dump-logits "$OUT/$tag-$name.logits" > "$OUT/$tag-$name.log" 2>&1 || rc=1
        grep -E "^(plan|path|stats): " "$OUT/$tag-$name.log" | grep -v "e.g. layer" | cut -c1-260
        same "$tag $name" "$OUT/$tag-resident.json" "$OUT/$tag-$name.json" || rc=1
        if cmp -s "$OUT/$tag-resident.logits" "$OUT/$tag-$name.logits"; then
            echo "$tag $name: logits after the prompt bit-identical to resident"
        else
            echo "$tag $name: logits after the prompt DIFFER from resident"; rc=1
        fi
        rm -f "$OUT/$tag-$name.logits"
    done <<EOF
pinned|--ram-budget 64GiB
direct|--ram-budget 0 --path direct
mmap|--ram-budget 0 --path mmap
baseline|--path mmap-baseline
mix|--ram-budget $mix --path direct
EOF
    echo "-- a 6-token prompt: batched prefill (CudaModel) vs the engine's streamed batched prefill"
    timeout 120 "$BIN/generate" --device cuda --model "$m" --prompt "The capital of France is" \
        --max-tokens 16 --ctx 512 --json "$OUT/$tag-resident6.json" \
        --dump-logits "$OUT/$tag-resident6.logits" > /dev/null 2>&1 || rc=1
    for name in pinned direct; do
        local f="--ram-budget 64GiB"
        [ "$name" = direct ] && f="--ram-budget 0 --path direct"
        # shellcheck disable=SC2086
        timeout 120 "$BIN/generate" --device cuda --model "$m" --prompt "The capital of France is" \
            --max-tokens 16 --ctx 512 --vram-budget "$vb" $f --json "$OUT/$tag-$name-6.json" \
            --dump-logits "$OUT/$tag-$name-6.logits" > "$OUT/$tag-$name-6.log" 2>&1 || rc=1
        same "$tag $name 6-token prompt" "$OUT/$tag-resident6.json" "$OUT/$tag-$name-6.json" || rc=1
        if cmp -s "$OUT/$tag-resident6.logits" "$OUT/$tag-$name-6.logits"; then
            echo "$tag $name 6-token prompt: logits after the prompt bit-identical to resident"
        else
            echo "$tag $name 6-token prompt: logits after the prompt DIFFER from resident"; rc=1
        fi
    done
    rm -f "$OUT"/*.logits
    echo "-- NVMe direct without a vfio-bound controller (expect a typed error)"
    "$BIN/generate" --device cuda --model "$m" --prompt "$PROMPT" --max-tokens 4 --ctx 512 \
        --vram-budget "$vb" --ram-budget 0 --path nvme --nvme-pci 0000:ff:1f.7 2>&1 | tail -1
    rm -f "$m" "$OUT/$tag-resident.logits"
}
bench() { # label, extra flags...
    local label=$1
    shift
    echo "-- bench-stream-model $label: $*"
    timeout 200 "$BIN/bench-stream-model" --device cuda --model "$M/l70b.gguf" --prompt "Hi" \
        --ctx 512 --label "$label" "$@" > "$OUT/$label.json" 2> "$OUT/$label.log" || rc=1
    grep -E "^(plan|path|stats|bench-stream-model): " "$OUT/$label.log" | grep -v "e.g. layer" | cut -c1-300
    cat "$OUT/$label.json" >> "$OUT/results.jsonl"
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv
    free -g | head -2
    df -h /tmp | tail -1
    echo "== 1. correctness: streamed == resident"
    correctness s135q8 smollm2-135m q8_0 176MiB 40MiB
    correctness s135 smollm2-135m q4_k_m 145MiB 30MiB
    correctness l8b llama3.1-8b q4_k_m 2GiB 1500MiB
    echo "== 2. speed: synthetic Llama-3.1-70B Q4_K_M, --vram-budget 24GiB"
    t=$(date +%s)
    "$BIN/synth-model" --shape llama3.1-70b --quant q4_k_m --vocab "$VOCAB" --out "$M/l70b.gguf" || rc=1
    echo "synth-model 70B: $(( $(date +%s) - t )) s, $(stat -c %s "$M/l70b.gguf") bytes"
    bench a-pinned --vram-budget 24GiB --tokens 6
    P100=$(python3 -c "print('The quick brown fox jumps over the lazy dog. ' * 10)")
    echo "-- streamed batched prefill of a ~100-token prompt"
    timeout 200 "$BIN/bench-stream-model" --device cuda --model "$M/l70b.gguf" --prompt "$P100" \
        --ctx 512 --label a-prefill100 --vram-budget 24GiB --tokens 2 > "$OUT/a-prefill100.json" \
        2> "$OUT/a-prefill100.log" || rc=1
    grep -E "^bench-stream-model: prefill" "$OUT/a-prefill100.log"
    [ "${SHORT:-0}" = 1 ] || bench a-pinned-skip20 --vram-budget 24GiB --tokens 6 --skip-count 20 --skip-map-out "$OUT/skip20.json"
    bench b-ram16-disk --vram-budget 24GiB --ram-budget 16GiB --tokens 3
    if [ "${SHORT:-0}" = 1 ]; then
        rm -f "$M/l70b.gguf"
        echo "SHORT=1: (a') and (c) skipped"
    else
        echo "-- (c) mmap baseline under a 48 GiB cgroup v2 memory.max"
        sync
        echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo "page cache dropped" || echo "cannot drop caches"
        cg=/sys/fs/cgroup/vramless-48g
        if mkdir -p "$cg" 2>/dev/null && echo 48G > "$cg/memory.max" 2>/dev/null; then
            echo "cgroup v2: $cg memory.max=$(cat "$cg/memory.max")"
            (echo "$BASHPID" > "$cg/cgroup.procs" && bench c-mmap-baseline-48g --vram-budget 24GiB --path mmap-baseline --tokens 3
             echo "cgroup peak: $(cat "$cg/memory.peak" 2>/dev/null || echo n/a) bytes")
        else
            echo "cgroup v2 memory.max is not writable here: mmap baseline runs uncapped"
            bench c-mmap-baseline-uncapped --vram-budget 24GiB --path mmap-baseline --tokens 3
        fi
        rm -f "$M/l70b.gguf"
    fi
    echo "== results"
    python3 -c "import json
for l in open('$OUT/results.jsonl'):
    l=l.strip()
    if not l: continue
    try: r=json.loads(l)
    except Exception: continue
    print(f\"{r['label']:24s} dev {r['layers_device']:2d} pin {r['layers_pinned']:2d} disk {r['layers_storage']:2d} skip {r['layers_skipped']:2d}  {r['tok_s']:.3f} tok/s  {r['streamed_bytes_per_token']/1e9:.2f} GB/token  H2D {r['h2d_gb_s']:.1f} GB/s  limit {r['pcie_limit_tok_s'] or 0:.3f} tok/s  ratio {r['ratio']:.3f}  predicted {r['predicted_tok_s']:.2f}\")" || true
    echo "== exit $rc"
    exit $rc
} 2>&1 | tee "$OUT/stream-proof.log"
exit "${PIPESTATUS[0]}"
