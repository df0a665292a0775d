#!/usr/bin/env bash
# Run every check a submission must pass: formatting, lints, all tests.
# Fetches what the tests need first (the default model). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every test that skips (missing model, NVRTC, GPU, ...) appends a line here (test-support);
# the list is printed at the end, pass or fail, so no skip goes unseen.
VRAMLESS_SKIP_LOG=$(mktemp "${TMPDIR:-/tmp}/vramless-skips.XXXXXX")
export VRAMLESS_SKIP_LOG
report_skips() {
    if [ -s "$VRAMLESS_SKIP_LOG" ]; then
        echo "==> $(wc -l <"$VRAMLESS_SKIP_LOG") test(s) SKIPPED or not applicable here (CI=${CI:-unset}):"
        sort "$VRAMLESS_SKIP_LOG" | uniq -c | sed 's/^/    /'
    else
        echo "==> no test skipped"
    fi
    rm -f "$VRAMLESS_SKIP_LOG"
}
trap report_skips EXIT

echo "==> fetching the default model"
VRAMLESS_MODEL=$(scripts/fetch-model.sh)
export VRAMLESS_MODEL

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> NVRTC from pip (CPU-side compile check of the CUDA kernels; no GPU needed)"
python3 -m pip install --quiet nvidia-cuda-nvrtc==13.0.88 ||
    python3 -m pip install --quiet --user --break-system-packages nvidia-cuda-nvrtc==13.0.88 ||
    echo "!!! could not pip-install nvidia-cuda-nvrtc (the cuda_nvrtc test skips, or fails with CI=true)"
# llama.cpp's GGUF reader, for examples/tests/synth_gguf_py.rs (skips without it; fails with CI=true).
python3 -m pip install --quiet gguf==0.19.0 || python3 -m pip install --quiet --user --break-system-packages gguf==0.19.0 ||
    echo "!!! could not pip-install gguf (the synth_gguf_py test skips, or fails with CI=true)"
NVRTC_LIB=$(python3 -c "import site,os
for d in site.getsitepackages() + [site.getusersitepackages()]:
    p = os.path.join(d, 'nvidia/cu13/lib/libnvrtc.so.13')
    if os.path.exists(p): print(p); break" 2>/dev/null || true)
if [ -n "$NVRTC_LIB" ]; then
    export VRAMLESS_NVRTC_LIB="$NVRTC_LIB"
    export LD_LIBRARY_PATH="$(dirname "$NVRTC_LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

echo "==> cargo clippy (feature cuda: llama-model CUDA backend, slep-pipeline CUDA transfer, examples)"
cargo clippy -p vramless-llama-model -p vramless-slep-pipeline -p vramless-examples -p vramless-benches --all-targets \
    --features vramless-llama-model/cuda,vramless-slep-pipeline/cuda,vramless-examples/cuda,vramless-benches/cuda -- -D warnings

echo "==> cargo test"
cargo test --workspace

echo "==> serve: OpenAI-compatible server driven by the official openai client (real SmolLM2, CPU)"
scripts/serve-test.sh
echo "==> cargo doc (every public item documented, no broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet -p vramless-nvme-direct -p vramless-slep-pipeline \
    -p vramless-llama-model --features vramless-nvme-direct/emulator,vramless-slep-pipeline/nvme-direct,vramless-slep-pipeline/cuda,vramless-llama-model/cuda

echo "==> packaged crates: cargo package, outside consumers and the crates' own tests from the .crate files"
scripts/package-check.sh
echo "==> minimum Rust: each crate type-checked with the toolchain its rust-version names (rustup)"
scripts/msrv-check.sh

echo "==> CUDA kernels: NVRTC compile for sm_80/sm_90 (GPU tests skip loudly without a GPU)"
cargo test -p vramless-llama-model --features cuda --test cuda_nvrtc --test cuda_kernels --test cuda_forward \
    --test cuda_fused --test cuda_synth --test cuda_batch --test cuda_options --test cuda_multi \
    --test cuda_matvec_q8
cargo test -p vramless-slep-pipeline --features cuda --test cuda_checksum --test cuda

echo "==> nvme-direct in a QEMU guest (emulated NVMe behind an emulated IOMMU, vfio-pci)"
qemu_rc=0
scripts/qemu-nvme-test.sh || qemu_rc=$?
if [ "$qemu_rc" -eq 3 ] && [ "${CI:-}" != "true" ]; then
    echo "!!! SKIPPED the QEMU NVMe test: qemu/busybox-static/cpio or the kernel package cannot be installed here (mandatory when CI=true)"
elif [ "$qemu_rc" -ne 0 ]; then
    echo "QEMU NVMe test failed (exit $qemu_rc)"; exit 1
fi

echo "==> all checks passed"
