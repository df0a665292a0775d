#!/usr/bin/env bash
# The library crates as crates.io would receive them, checked from the outside:
#  1. `cargo package --workspace --no-verify` writes one .crate per publishable crate;
#  2. each .crate is unpacked into tests/consumers/packaged/ (a workspace of its own, outside
#     the main one, whose [patch.crates-io] makes the vramless crates resolve to these unpacked
#     copies, as crates.io would serve them);
#  3. the outside consumers (tests/consumers/*: each depends on one or two packaged crates only)
#     are built and run, checked against outside references;
#  4. the packaged crates' own tests run from the unpacked sources.
# Dependencies are compiled into the main target directory, so what `cargo test --workspace`
# built is reused. Needs VRAMLESS_MODEL (the default model) and the `gguf` Python package.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
C=tests/consumers

echo "==> cargo package --workspace --no-verify (the publishable crates)"
cargo package --workspace --exclude vramless-examples --exclude vramless-benches \
    --no-verify --allow-dirty --quiet
rm -rf "$C/packaged"
mkdir -p "$C/packaged"
n=0
for name in test-support gguf nvme-direct tier-cache slep-pipeline llama-model; do
    crate="$CARGO_TARGET_DIR/package/vramless-$name-0.1.0.crate"
    tar -xzmf "$crate" -C "$C/packaged"  # -m: fresh mtimes, so cargo rebuilds changed sources
    n=$((n + 1))
done
[ "$n" -eq 6 ] || { echo "expected 6 packaged crates, found $n"; exit 1; }
# vramless-gguf's tests read vocabulary fixtures of llama-model's (../llama-model/tests/fixtures
# in the repository): point that path at the packaged llama-model, which ships them.
ln -s vramless-llama-model-0.1.0 "$C/packaged/llama-model"
# The main lock file pins the same dependency versions the workspace was tested with.
cp Cargo.lock "$C/Cargo.lock"

echo "==> outside consumers against the packaged crates"
cargo build --manifest-path "$C/Cargo.toml" --quiet \
    -p consumer-gguf-read -p consumer-nvme-emulator -p consumer-stream-plan
BIN="$CARGO_TARGET_DIR/debug"
MODEL="${VRAMLESS_MODEL:?VRAMLESS_MODEL must name the default model (scripts/fetch-model.sh)}"
for t in blk.0.attn_q.weight output_norm.weight; do
    "$BIN/consumer-gguf-read" "$MODEL" "$t" | python3 "$C/check_gguf.py" "$MODEL" "$t"
done
"$BIN/consumer-nvme-emulator"
"$BIN/consumer-stream-plan"

echo "==> the packaged crates' own tests, from the unpacked .crate files"
cargo test --manifest-path "$C/Cargo.toml" --quiet -p vramless-gguf
cargo test --manifest-path "$C/Cargo.toml" --quiet -p vramless-nvme-direct --features vramless-nvme-direct/emulator
cargo test --manifest-path "$C/Cargo.toml" --quiet -p vramless-tier-cache
cargo test --manifest-path "$C/Cargo.toml" --quiet -p vramless-test-support
cargo test --manifest-path "$C/Cargo.toml" --quiet -p vramless-slep-pipeline --features vramless-slep-pipeline/nvme-direct
cargo test --manifest-path "$C/Cargo.toml" --quiet -p vramless-llama-model
echo "==> packaged crates and outside consumers: OK"
