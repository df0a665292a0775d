#!/usr/bin/env bash
# Prints an include directory whose linux/iommufd.h and linux/vfio.h are new enough for the
# iommufd + VFIO cdev interface (Linux >= 6.6 uapi), for nvme-direct's header check test.
#
# Order: /usr/include; the cache ($VRAMLESS_UAPI_CACHE, default ~/.cache/vramless/uapi); else
# `apt-get download linux-libc-dev` from the configured apt sources, and if that one is too old
# (Debian 12 ships 6.1) from the same Debian mirror's <codename>-backports suite through a
# private apt state (the system's sources and package lists are not changed). The package is
# unpacked with dpkg -x into the cache, nothing is installed. Messages go to stderr.
set -euo pipefail
CACHE=${VRAMLESS_UAPI_CACHE:-$HOME/.cache/vramless/uapi}
log() { echo "[fetch-uapi-headers] $*" >&2; }
ok() { [ -f "$1/linux/iommufd.h" ] && grep -q VFIO_DEVICE_BIND_IOMMUFD "$1/linux/vfio.h" 2>/dev/null; }
for d in /usr/include "$CACHE/usr/include"; do
    if ok "$d"; then echo "$d"; exit 0; fi
done
command -v apt-get >/dev/null && command -v dpkg >/dev/null || { log "no apt-get/dpkg here"; exit 1; }
DL=$(mktemp -d /tmp/vramless-uapi.XXXXXX)
trap 'rm -rf "$DL"' EXIT
unpack() {
    local deb
    deb=$(ls "$DL"/linux-libc-dev_*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || return 1
    rm -rf "$CACHE.new"; mkdir -p "$CACHE.new"
    dpkg -x "$deb" "$CACHE.new"
    if ok "$CACHE.new/usr/include"; then
        rm -rf "$CACHE"; mv "$CACHE.new" "$CACHE"; return 0
    fi
    log "$(basename "$deb") is too old (no iommufd.h / VFIO_DEVICE_BIND_IOMMUFD)"
    rm -rf "$CACHE.new" "$DL"/*.deb; return 1
}
# 1. The configured sources.
(cd "$DL" && apt-get download linux-libc-dev >/dev/null 2>&1) || true
if unpack; then echo "$CACHE/usr/include"; exit 0; fi
# 2. <codename>-backports on the mirror the system already uses for <codename>.
. /etc/os-release
CODENAME=${VERSION_CODENAME:-}
URI=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    URI=$(awk -v c="$CODENAME" '/^URIs:/{u=$2} /^Suites:/{for(i=2;i<=NF;i++) if($i==c){print u; exit}}' "$f")
    [ -n "$URI" ] && break
done
if [ -z "$URI" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        URI=$(awk -v c="$CODENAME" '$1=="deb" { for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){ if($(i+1)==c){print $i; exit} } }' "$f")
        [ -n "$URI" ] && break
    done
fi
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -z "$CODENAME" ] || [ -z "$URI" ] || [ ! -f "$KEYRING" ]; then
    log "cannot derive a Debian backports source (codename '$CODENAME', mirror '$URI')"; exit 1
fi
A=$DL/apt; mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
echo "deb [signed-by=$KEYRING] $URI $CODENAME-backports main" > "$A/sources.list"
OPTS=(-o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache" -o Debug::NoLocking=1)
log "trying linux-libc-dev from $CODENAME-backports"
apt-get "${OPTS[@]}" update -qq >&2 || { log "apt-get update of $CODENAME-backports failed"; exit 1; }
(cd "$DL" && apt-get "${OPTS[@]}" download "linux-libc-dev/$CODENAME-backports" >&2 2>&1) || { log "download failed"; exit 1; }
if unpack; then echo "$CACHE/usr/include"; exit 0; fi
exit 1
