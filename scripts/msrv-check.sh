#!/usr/bin/env bash
# Checks that every publishable crate builds with the oldest Rust its `rust-version` claims:
# reads each crate's rust-version from `cargo metadata`, installs that toolchain with rustup when
# missing (minimal profile), and runs `cargo +VERSION check` on the crates claiming it, with
# their optional features on (CUDA loads its libraries at run time, so no CUDA is needed).
# Each toolchain gets its own target directory (target/msrv-VERSION) so reruns are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

groups=$(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
m = json.load(sys.stdin)
by = {}
for p in m["packages"]:
    if p.get("publish") == []:
        continue  # publish = false: examples, benches
    v = p.get("rust_version")
    if not v:
        sys.exit("crate %s has no rust-version" % p["name"])
    feats = ["%s/%s" % (p["name"], f) for f in p["features"] if f != "default"]
    by.setdefault(v, []).append((p["name"], feats))
for v, crates in sorted(by.items()):
    names = " ".join(n for n, _ in crates)
    feats = ",".join(f for _, fs in crates for f in fs)
    print(f"{v}|{names}|{feats}")
')
[ -n "$groups" ] || { echo "msrv-check: no publishable crates found"; exit 1; }
while IFS='|' read -r ver names feats; do
    tc="$ver"
    [[ "$tc" =~ ^[0-9]+\.[0-9]+$ ]] && tc="$tc.0"
    if ! rustup run "$tc" rustc --version >/dev/null 2>&1; then
        echo "msrv-check: installing Rust $tc"
        rustup toolchain install "$tc" --profile minimal >/dev/null
    fi
    args=()
    for n in $names; do args+=(-p "$n"); done
    echo "msrv-check: Rust $tc: $names${feats:+ (features $feats)}"
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv-$ver" \
        cargo "+$tc" check --quiet --lib "${args[@]}" ${feats:+--features "$feats"} \
        --config 'profile.dev.package."*".opt-level=0'  # type-checking only: no optimised proc macros
done <<< "$groups"
echo "msrv-check: every crate builds with the Rust its rust-version names"
