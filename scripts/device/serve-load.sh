#!/usr/bin/env bash
# `serve` throughput on a GPU machine (issue 16): a synthetic Llama-3.1-70B Q4_K_M streamed with
# --vram-budget 24GiB, 1, 8 and 32 concurrent streaming clients (serve-load: aggregate tok/s, time
# to first token), and bench-stream-model --batch at the same batch sizes in the same run (the
# engine's own batched speed; serve should reach >= 0.9 of it).
#
# Build on the development machine (release, CUDA) and strip into .device-serve/:
#
#   cargo build --release -p vramless-examples --features cuda \
#       --bin serve --bin serve-load --bin bench-stream-model --bin synth-model
#   mkdir -p .device-serve && for b in serve serve-load bench-stream-model synth-model; do
#       strip -o .device-serve/$b target/release/$b; done
#
# then run this script from the repository root there. Logs and load.json go to $OUT (default
# /tmp/serve-out). BIN overrides the binary folder; MODEL an existing GGUF (else written to
# /tmp/serve-models/l70b.gguf); TOKENS the tokens per request (default 32); CLIENTS (default 1,8,32).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/serve-out}
BIN=${BIN:-.device-serve}
TOKENS=${TOKENS:-32}
CLIENTS=${CLIENTS:-1,8,32}
mkdir -p "$OUT"
. scripts/device/nvrtc-env.sh  # NVRTC for the CUDA backend: VRAMLESS_NVRTC_LIB, LD_LIBRARY_PATH
export VRAMLESS_KERNEL_CACHE=${VRAMLESS_KERNEL_CACHE:-/tmp/vramless-kernel-cache} RUST_BACKTRACE=1
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
    mkdir -p /tmp/serve-models
    MODEL=/tmp/serve-models/l70b.gguf
    [ -s "$MODEL" ] || "$BIN/synth-model" --shape llama3.1-70b --quant q4_k_m --vocab "$VOCAB" --out "$MODEL" || exit 1
fi
maxc=$(echo "$CLIENTS" | tr ',' '\n' | sort -n | tail -1)
rc=0
PORT=18080
"$BIN/serve" --device cuda --model "$MODEL" --vram-budget 24GiB --ctx 512 --max-seqs "$maxc" \
    --port $PORT > "$OUT/serve.log" 2>&1 &
SERVE=$!
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
    kill -0 $SERVE 2>/dev/null || { echo "serve exited at start:"; tail -20 "$OUT/serve.log"; exit 1; }
    sleep 1
done
"$BIN/serve-load" --url "http://127.0.0.1:$PORT" --clients "$CLIENTS" --max-tokens "$TOKENS" \
    --json "$OUT/load.json" | tee "$OUT/load.txt" || rc=1
curl -s "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt"
kill -TERM $SERVE
wait $SERVE || { echo "serve exited with $?"; rc=1; }
tail -5 "$OUT/serve.log"
if "$BIN/bench-stream-model" --help 2>&1 | grep -q -- "--batch"; then
    for b in $(echo "$CLIENTS" | tr ',' ' '); do
        echo "== bench-stream-model --batch $b"
        # The same plan as serve's (--max-seqs of the most clients: the same KV pool and layers).
        timeout 300 "$BIN/bench-stream-model" --device cuda --model "$MODEL" --vram-budget 24GiB \
            --ctx 512 --max-seqs "$maxc" --batch "$b" --prompt "Hi" 2>&1 | tail -3 | tee -a "$OUT/bench.txt" || rc=1
    done
else
    echo "bench-stream-model has no --batch here: the ratio to the engine's batched speed is not measured"
fi
exit $rc
