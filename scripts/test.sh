#!/usr/bin/env bash
# Run every check a submission must pass: formatting, lints, all tests.
# Fetches what the tests need first (the default model). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> fetching the default model"
VRAMLESS_MODEL=$(scripts/fetch-model.sh)
export VRAMLESS_MODEL

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> cargo test"
cargo test --workspace

echo "==> all checks passed"
