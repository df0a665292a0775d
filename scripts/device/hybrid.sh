#!/usr/bin/env bash
# Hybrid streamed layers (issue 17) on a GPU machine with no Rust toolchain and no network: CPU
# threads compute the last rows of every matrix of each layer streamed from pinned RAM, in place,
# while the first rows cross the bus (`--hybrid auto|FRACTION`).
#
# Build on the development machine (release, CUDA) and strip into .device-hybrid/:
#
#   cargo build --release -p vramless-examples --features cuda \
#       --bin generate --bin bench-stream-model --bin synth-model
#   cargo test --release -p vramless-examples --features cuda --test engine_hybrid --no-run
#   cargo test --release -p vramless-llama-model --features cuda --test cuda_multi --no-run
#   mkdir -p .device-hybrid && for b in generate bench-stream-model synth-model; do
#       strip -o .device-hybrid/$b target/release/$b; done
#   strip -o .device-hybrid/engine_hybrid target/release/deps/engine_hybrid-<hash>
#   strip -o .device-hybrid/cuda_multi target/release/deps/cuda_multi-<hash>
#
# then `bash scripts/device/hybrid.sh` from the repository root there. Steps:
# 1. Correctness, synthetic SmolLM2-135M and Llama-3.1-8B Q4_K_M (synth-model, random weights):
#    `generate` streaming most layers from pinned RAM, whole layers over the bus (the reference:
#    itself checked equal to the resident model by stream-proof.sh) against the same run with
#    --hybrid 0.5 (q8 and f32 CPU kernels), 0.9 and auto: greedy tokens equal, logits after a
#    1-token prompt (decoded through the split layers) at cosine >= 0.99999.
# 2. The real SmolLM2 (when REAL names its GGUF): the engine_hybrid test binary (the same
#    comparison at every step, in Rust; one sequence, and three through the batch engine).
# m. The multi-sequence step the batch engine runs (`cuda_multi`: against the CPU's multi step
#    and single-sequence runs) on synthetic SmolLM2 and 8B, and REAL when set.
# 3. Speed, synthetic Llama-3.1-70B Q4_K_M at --vram-budget 24GiB, rest pinned: whole layers
#    over the bus, --hybrid auto (timed after 10 warm-up tokens, in which it searches its share;
#    with --stats and --trace), fixed fractions (FRACTIONS, default "0.45 0.55"),
#    and --ram-budget 16GiB (rest on disk through O_DIRECT). bench-stream-model prints tok/s,
#    the bus limit and the combined (bus + CPU) limit measured in the same run. BENCH picks
#    the groups (default "single batch ram16"; batch: the batch engine at BATCHES, default
#    1,2,4,8, whole layers and --hybrid auto after 8 warm-up steps per size).
# SYNTH_ONLY=1 with step 3 only writes the 70B model (KEEP=1 keeps it for the next call).
# Logs, JSON and the trace go to $OUT (default /tmp/hybrid-out). BIN overrides the binary
# folder; STEPS picks steps (default "1 2 m 3"). Exit 0 only when every correctness check passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/hybrid-out}
BIN=${BIN:-.device-hybrid}
mkdir -p "$OUT"
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache} RUST_BACKTRACE=1
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
M=/tmp/hybrid-models
mkdir -p "$M"
rc=0
same() { # label, reference json + logits, candidate json + logits
    python3 - "$@" <<'PY'
import array, json, math, sys
label, rj, rl, cj, cl = sys.argv[1:6]
a = json.load(open(rj))["tokens"]; b = json.load(open(cj))["tokens"]
x = array.array("f"); x.frombytes(open(rl, "rb").read())
y = array.array("f"); y.frombytes(open(cl, "rb").read())
dot = sum(p * q for p, q in zip(x, y))
cos = dot / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))
agree = next((i for i, (p, q) in enumerate(zip(a, b)) if p != q), min(len(a), len(b)))
ok = a == b and len(a) > 0 and len(x) == len(y) and cos >= 0.99999
print(f"{label}: tokens {'EQUAL' if a == b else 'DIFFERENT'} ({len(b)} tokens, first {agree} agree), "
      f"logits cosine {cos:.9f} -> {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
}
correctness() { # tag, shape, device budget
    local tag=$1 shape=$2 vb=$3 m="$M/$1.gguf"
    echo "== synth-model --shape $shape --quant q4_k_m; --vram-budget $vb, rest pinned"
    "$BIN/synth-model" --shape "$shape" --quant q4_k_m --vocab "$VOCAB" --out "$m" > /dev/null || { rc=1; return; }
    gen() { # name, flags...
        local name=$1
        shift
        timeout 180 "$BIN/generate" --device cuda --model "$m" --prompt "" --max-tokens 16 --ctx 512 \
            --vram-budget "$vb" --ram-budget 64GiB --stats --json "$OUT/$tag-$name.json" \
            --dump-logits "$OUT/$tag-$name.logits" "$@" > "$OUT/$tag-$name.log" 2>&1 || rc=1
        grep -E "^(plan|hybrid|stats): " "$OUT/$tag-$name.log" | grep -v "e.g. layer" | cut -c1-330
    }
    echo "-- whole layers over the bus"
    gen whole
    local mode
    for mode in "0.5 q8" "0.5 f32" "0.5 match" "0.9 q8" "0.05 f32" "auto q8"; do
        set -- $mode
        echo "-- --hybrid $1 --hybrid-kernel $2"
        gen "h$1-$2" --hybrid "$1" --hybrid-kernel "$2"
        same "$tag hybrid $1 $2" "$OUT/$tag-whole.json" "$OUT/$tag-whole.logits" \
            "$OUT/$tag-h$1-$2.json" "$OUT/$tag-h$1-$2.logits" || rc=1
    done
    rm -f "$OUT"/*.logits "$m"
}
bench() { # label, flags...
    local label=$1
    shift
    echo "-- bench-stream-model $label: $*"
    timeout 240 "$BIN/bench-stream-model" --device cuda --model "$M/l70b.gguf" --prompt "Hi" \
        --ctx 512 --label "$label" --vram-budget 24GiB --stats "$@" > "$OUT/$label.json" \
        2> "$OUT/$label.log" || rc=1
    grep -E "^(plan|hybrid|stats|trace|bench-stream-model): " "$OUT/$label.log" | grep -v "e.g. layer" | cut -c1-400
    cat "$OUT/$label.json" >> "$OUT/results.jsonl"
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv
    lscpu | grep -E "^(Model name|CPU\(s\)|Flags)" | cut -c1-200
    free -g | head -2
    STEPS=${STEPS:-1 2 m 3}
    BENCH=${BENCH:-single batch ram16}
    if [[ " $STEPS " == *" 1 "* ]]; then
        echo "== 1. correctness: hybrid == whole layers over the bus"
        correctness s135 smollm2-135m 145MiB
        correctness l8b llama3.1-8b 2GiB
    fi
    if [[ " $STEPS " == *" 2 "* ]] && [ -z "${REAL:-}" ]; then
        echo "== 2. skipped: REAL does not name the real SmolLM2 GGUF"
    elif [[ " $STEPS " == *" 2 "* ]]; then
        echo "== 2. the real SmolLM2: engine_hybrid test"
        VRAMLESS_MODEL=$REAL VRAMLESS_REQUIRE_GPU=1 CI=true timeout 240 "$BIN/engine_hybrid" \
            --nocapture 2>&1 | grep -vE "^\s*$" | tail -25 || rc=1
    fi
    if [[ " $STEPS " == *" m "* ]]; then
        echo "== m. the multi-sequence step: cuda_multi on synthetic SmolLM2 and 8B${REAL:+ and the real SmolLM2}"
        "$BIN/synth-model" --shape smollm2-135m --quant q4_k_m --vocab "$VOCAB" --out "$M/ms.gguf" > /dev/null || rc=1
        "$BIN/synth-model" --shape llama3.1-8b --quant q4_k_m --vocab "$VOCAB" --out "$M/m8.gguf" > /dev/null || rc=1
        VRAMLESS_SYNTH_MODELS="$M/ms.gguf:$M/m8.gguf" VRAMLESS_MODEL=${REAL:-} VRAMLESS_REQUIRE_GPU=1 \
            CI=true timeout 300 "$BIN/cuda_multi" --nocapture 2>&1 | grep -vE "^\s*$" | tail -25 || rc=1
        rm -f "$M/ms.gguf" "$M/m8.gguf"
    fi
    [[ " $STEPS " == *" 3 "* ]] || { echo "== exit $rc"; exit $rc; }
    echo "== 3. speed: synthetic Llama-3.1-70B Q4_K_M, --vram-budget 24GiB"
    t=$(date +%s)
    [ -s "$M/l70b.gguf" ] || "$BIN/synth-model" --shape llama3.1-70b --quant q4_k_m --vocab "$VOCAB" --out "$M/l70b.gguf" > /dev/null || rc=1
    echo "synth-model 70B: $(( $(date +%s) - t )) s"
    [ -z "${SYNTH_ONLY:-}" ] || { echo "== exit $rc"; exit $rc; }
    if [[ " $BENCH " == *" single "* ]]; then
        bench whole-pinned --tokens 6
        bench hybrid-auto --warmup 10 --tokens 8 --hybrid auto --trace "$OUT/hybrid-70b.trace.json"
        for f in ${FRACTIONS:-0.45 0.55}; do bench "hybrid-$f" --tokens 6 --hybrid "$f"; done
    fi
    if [[ " $BENCH " == *" batch "* ]]; then
        bench whole-batch --batch "${BATCHES:-1,2,4,8}" --tokens 6
        bench hybrid-batch --batch "${BATCHES:-1,2,4,8}" --warmup 8 --tokens 6 --hybrid auto
        grep -E "^ +(B|[0-9]+) " "$OUT/whole-batch.log" "$OUT/hybrid-batch.log"
    fi
    if [[ " $BENCH " == *" ram16 "* ]]; then
        bench hybrid-auto-ram16 --warmup 10 --tokens 4 --hybrid auto --ram-budget 16GiB --path direct
        bench whole-ram16 --tokens 3 --ram-budget 16GiB --path direct
    fi
    echo "== results"
    python3 -c "import json
for l in open('$OUT/results.jsonl'):
    l=l.strip()
    if not l: continue
    try: r=json.loads(l)
    except Exception: continue
    if r.get('mode') == 'batch':
        for f in r['batches']:
            print(f\"{r['label']:20s} B {f['batch']:2d}  {f['aggregate_tok_s']:.3f} tok/s aggregate  streamed {f['streamed_bytes_per_step']/1e9:.2f} GB/step  cpu {f.get('cpu_bytes_per_step',0)/1e9:.2f} GB/step at {f.get('cpu_busy_gb_s',0):.1f} GB/s\")
        continue
    print(f\"{r['label']:20s} dev {r['layers_device']:2d} pin {r['layers_pinned']:2d} disk {r['layers_storage']:2d} split {r.get('hybrid_layers',0):2d}  {r['tok_s']:.3f} tok/s  bus {r['streamed_bytes_per_token']/1e9:.2f} GB/tok  cpu {r.get('hybrid_cpu_bytes_per_token',0)/1e9:.2f} GB/tok  H2D {r['h2d_gb_s']:.1f} GB/s  CPU {r.get('hybrid_cpu_gb_s',0):.1f} GB/s (busy {r.get('hybrid_cpu_busy_gb_s',0):.1f})  bus limit {r['pcie_limit_tok_s'] or 0:.3f}  combined {r.get('combined_limit_tok_s') or 0:.3f} ratio {r.get('combined_ratio',0):.3f}  RAM {r.get('ram_read_gb_s',0):.0f} GB/s limit {r.get('ram_limit_tok_s') or 0:.3f} ratio {r.get('ram_ratio',0):.3f}  predicted {r.get('hybrid_predicted_tok_s') or r['predicted_tok_s']:.2f}\")" || true
    [ -n "${KEEP:-}" ] || rm -f "$M/l70b.gguf"  # KEEP=1: for a next call on the same machine
    echo "== exit $rc"
    exit $rc
} 2>&1 | tee "$OUT/hybrid.log"
exit "${PIPESTATUS[0]}"
