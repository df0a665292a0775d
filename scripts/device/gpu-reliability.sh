#!/usr/bin/env bash
# GPU reliability checks of issue 13, on a machine with an NVIDIA GPU and driver but no Rust
# toolchain and no network. Build on the development machine (release, feature cuda) and strip
# into .device-reliability/ (BIN overrides the folder):
#
#   cargo test --release -p vramless-llama-model --features cuda --test cuda_batch \
#       --no-run                                  # -> cuda_batch
#   cargo bench -p vramless-benches --features cuda --bench cuda_batch --no-run  # -> cuda_batch_bench_after
#   (before 2026-12-04 that report was an ignored test, llama-model/tests/cuda_batch_bench.rs;
#   the bench ignores the --ignored --nocapture that a "before" build of that form needs)
#   cargo test --release -p vramless-slep-pipeline --features cuda --test cuda --no-run  # -> slep_cuda
#   cargo build --release -p vramless-examples --features cuda --bin generate --bin synth-model
#
# plus cuda_batch_bench_before: the same bench built from the commit to compare against.
# Steps: the slot-lifetime test (a consumer failure mid-stream, then later passes and teardown
# must still read the right bytes) plainly and under compute-sanitizer memcheck; GEMM vs f64 with
# bitwise reruns and split-K reproducibility; batched prefill run twice bitwise; open/drop a
# model 20 times (device memory must not grow); the streaming engine vs resident CudaModel on a
# 6-token prompt (batched prefill on both sides; logits must be bit-identical); 8B prefill speed
# before/after. Logs go to $OUT (default /tmp/h13gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-.device-reliability}
OUT=${OUT:-/tmp/h13gpu-out}
mkdir -p "$OUT"
nv=$(python3 -c "import site,os
for d in site.getsitepackages(): print(os.path.join(d, 'nvidia/cu13/lib/libnvrtc.so.13'))" 2>/dev/null |
    while read -r p; do [ -e "$p" ] && echo "$p"; done | head -1)
[ -z "$nv" ] && nv=$(find / -xdev -name 'libnvrtc.so.13*' ! -name '*builtins*' 2>/dev/null | head -1)
export VRAMLESS_NVRTC_LIB="$nv" LD_LIBRARY_PATH="$(dirname "${nv:-/x}"):${LD_LIBRARY_PATH:-}"
export VRAMLESS_REQUIRE_GPU=1 VRAMLESS_KERNEL_CACHE=/tmp/vramless-kernel-cache RUST_BACKTRACE=1
export VRAMLESS_SMOLLM2_FIXTURES="$PWD/llama-model/tests/fixtures/smollm2" VRAMLESS_MODEL=/nonexistent/smollm2.gguf
VOCAB=llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf
rc=0
step() { echo; echo "== $* ($(date -u +%T))"; }
{
date -u; echo "NVRTC: $nv"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
echo "compute-sanitizer: ${CS:-not found}"
step "synth models"
for spec in "smollm2-135m q4_k_m s135q4" "smollm2-135m q8_0 s135q8" "llama3.1-8b q4_k_m l8b"; do
    set -- $spec
    $B/synth-model --shape "$1" --quant "$2" --vocab $VOCAB --out "/tmp/$3.gguf" >/dev/null || rc=1
done
ls -l /tmp/*.gguf
step "slep-pipeline cuda tests (incl. slot lifetime)"
timeout 60 $B/slep_cuda --nocapture --test-threads=1 2>&1 | tail -12 || rc=1
if [ -n "${CS:-}" ]; then
    step "compute-sanitizer memcheck: slot lifetime test"
    timeout 90 "$CS" --tool memcheck --leak-check full --error-exitcode 9 $B/slep_cuda --nocapture --exact consumer_failure_mid_stream_keeps_later_output_right > "$OUT/sanitizer.log" 2>&1
    echo "sanitizer exit $?"; tail -8 "$OUT/sanitizer.log"
fi
step "cuda_batch: GEMM vs f64 (+reruns bitwise), split-K reproducibility"
timeout 120 $B/cuda_batch --nocapture --test-threads=1 gemm > "$OUT/gemm.log" 2>&1 || rc=1
grep -E "reruns|test result|panicked|FAILED" "$OUT/gemm.log" | head -20
step "cuda_batch: batched prefill (+second run bitwise) and the open/drop leak test"
VRAMLESS_BATCH_MODELS=/tmp/s135q4.gguf:/tmp/s135q8.gguf:/tmp/l8b.gguf \
    timeout 150 $B/cuda_batch --nocapture --test-threads=1 batched_prefill opening_and_dropping > "$OUT/prefill.log" 2>&1 || rc=1
grep -E "bit-identical|model open/drop|cosine|test result|panicked|FAILED" "$OUT/prefill.log" | cut -c1-200 | head -40
step "streamed == resident, 6-token prompt (batched prefill both sides), logits bitwise"
P="The capital of France is"
for spec in "s135q8 176MiB" "s135q4 145MiB"; do
    set -- $spec
    m=/tmp/$1.gguf
    timeout 60 $B/generate --device cuda --model $m --prompt "$P" --max-tokens 16 --ctx 512 \
        --json "$OUT/$1-res.json" --dump-logits "$OUT/$1-res.logits" > "$OUT/$1-res.log" 2>&1 || rc=1
    timeout 60 $B/generate --device cuda --model $m --prompt "$P" --max-tokens 16 --ctx 512 \
        --json "$OUT/$1-res2.json" --dump-logits "$OUT/$1-res2.logits" > /dev/null 2>&1 || rc=1
    cmp -s "$OUT/$1-res.logits" "$OUT/$1-res2.logits" && echo "$1 resident run 2: logits bit-identical to run 1" || { echo "$1 resident run 2: logits DIFFER"; rc=1; }
    for path in "pinned|--ram-budget 64GiB" "direct|--ram-budget 0 --path direct" "mmap|--ram-budget 0 --path mmap"; do
        name=${path%%|*}; flags=${path#*|}
        timeout 60 $B/generate --device cuda --model $m --prompt "$P" --max-tokens 16 --ctx 512 \
            --vram-budget $2 $flags --stats --json "$OUT/$1-$name.json" --dump-logits "$OUT/$1-$name.logits" > "$OUT/$1-$name.log" 2>&1 || rc=1
        grep -E "^plan: " "$OUT/$1-$name.log" | cut -c1-160
        python3 -c "import json,sys
a=json.load(open(sys.argv[1]))['tokens']; b=json.load(open(sys.argv[2]))['tokens']
print(sys.argv[3], 'greedy tokens equal resident:', a==b and len(a)>0, len(b))
sys.exit(0 if a==b and len(a)>0 else 1)" "$OUT/$1-res.json" "$OUT/$1-$name.json" "$1 $name" || rc=1
        cmp -s "$OUT/$1-res.logits" "$OUT/$1-$name.logits" && echo "$1 $name: logits after the prompt bit-identical to resident" || { echo "$1 $name: logits DIFFER from resident"; rc=1; }
    done
done
rm -f "$OUT"/*.logits
step "8B prefill speed: before (base b6b9d24) and after"
for v in before after; do
    VRAMLESS_BENCH_MODEL=/tmp/l8b.gguf VRAMLESS_BENCH_JSON="$OUT/bench-$v.json" \
        timeout 60 $B/cuda_batch_bench_$v --ignored --nocapture > "$OUT/bench-$v.log" 2>&1 || rc=1
    echo "-- $v"; grep -E "^prefill|one-token|\| [19] \||4096x4096 n=512 tile auto|14336x4096 n=9 tile auto|4096x14336 n=512 tile auto" "$OUT/bench-$v.log"
done
step "exit $rc"
exit $rc
} 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
