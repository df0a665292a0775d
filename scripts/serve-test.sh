#!/usr/bin/env bash
# End-to-end test of `serve` with the official `openai` Python client (pinned here) on the real
# SmolLM2 model, CPU backend, 127.0.0.1 (tests/serve/test_openai.py says what it checks).
# Builds `serve` with the test profile (what `cargo test` already built), installs the client
# from PyPI if missing. Without python3 or the client it skips loudly, and fails when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAI_VERSION=1.109.1
MODEL=${VRAMLESS_MODEL:-$(scripts/fetch-model.sh)}

skip() {
    echo "!!! SKIPPED the serve test: $1"
    if [ "${CI:-}" = "true" ]; then
        echo "serve test is mandatory when CI=true"
        exit 1
    fi
    exit 0
}

command -v python3 >/dev/null || skip "python3 is not installed"
if ! python3 -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    python3 -m pip install --quiet "openai==$OPENAI_VERSION" ||
        python3 -m pip install --quiet --user --break-system-packages "openai==$OPENAI_VERSION" ||
        skip "could not pip-install openai==$OPENAI_VERSION"
fi

cargo build --profile test -p vramless-examples --bin serve
SERVE_LOG=${SERVE_LOG:-target/serve-test.log} timeout 600 python3 tests/serve/test_openai.py target/debug/serve "$MODEL"
