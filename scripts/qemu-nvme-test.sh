#!/usr/bin/env bash
# Real-device test of nvme-direct without NVMe hardware: boots the Debian 6.1 kernel under QEMU
# (TCG) with an emulated Intel IOMMU and an emulated NVMe controller backed by a random image of
# known SHA-256, binds the controller to vfio-pci in the guest and runs the driver there: on the
# VFIO type1 container (full suite), on 2 MiB hugetlb pages (reserved in the guest), and on
# iommufd + the VFIO device cdev when the guest kernel has them. Debian's kernels (bookworm 6.1,
# bookworm-backports 6.12, trixie-backports, sid) are all built without CONFIG_IOMMUFD, so with
# the default kernel the iommufd part is reported as SKIPPED (loudly); NVME_QEMU_KERNEL_DIR runs
# it on another kernel.
#
# Exit codes: 0 pass, 1 test failure, 3 QEMU or its tools cannot be installed (caller decides).
# Environment: NVME_QEMU_IMAGE_MB (default 64), NVME_QEMU_TIMEOUT seconds (default 420),
# VRAMLESS_QEMU_CACHE (default ~/.cache/vramless/qemu), CARGO_TARGET_DIR (honoured),
# NVME_QEMU_FORCE_GLIBC=1 (use the host target + copied shared libraries instead of musl),
# NVME_QEMU_HUGEPAGES (2 MiB pages reserved in the guest, default 96; 0 skips that part),
# NVME_QEMU_KERNEL_DIR (an unpacked kernel package: boot/vmlinuz-* or usr/lib/modules/*/vmlinuz,
# and its modules; e.g. one with CONFIG_IOMMUFD=m and CONFIG_VFIO_DEVICE_CDEV=y),
# NVME_QEMU_REQUIRE_IOMMUFD=1 (fail instead of skipping when the iommufd path cannot run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${VRAMLESS_QEMU_CACHE:-$HOME/.cache/vramless/qemu}
IMAGE_MB=${NVME_QEMU_IMAGE_MB:-64}
HUGEPAGES=${NVME_QEMU_HUGEPAGES:-96}
TIMEOUT=${NVME_QEMU_TIMEOUT:-420}
SCRATCH_MB=4
mkdir -p "$CACHE"
log() { echo "[qemu-nvme-test] $*" >&2; }

# --- tools ---------------------------------------------------------------------------------
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx insmod || need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"; } >&2; then
        log "cannot install ${need_pkgs[*]}"
        exit 3
    fi
fi
if ldd /bin/busybox >/dev/null 2>&1; then
    log "/bin/busybox is dynamically linked; install busybox-static"; exit 3
fi

# --- kernel ----------------------------------------------------------------------------------
KDIR=${NVME_QEMU_KERNEL_DIR:-$CACHE/kernel}
VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* "$KDIR"/usr/lib/modules/*/vmlinuz 2>/dev/null | head -1 || true)
if [ -z "$VMLINUZ" ] && [ -n "${NVME_QEMU_KERNEL_DIR:-}" ]; then
    log "NVME_QEMU_KERNEL_DIR=$KDIR holds no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz"; exit 1
fi
if [ -z "$VMLINUZ" ]; then
    PKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -1)
    if [ -z "$PKG" ]; then
        apt-get update -qq >&2 || true
        PKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -1)
    fi
    [ -n "$PKG" ] || { log "no linux-image-6.1.0-*-amd64 package in the apt sources"; exit 3; }
    log "downloading $PKG"
    (cd "$CACHE" && apt-get download "$PKG" >&2) || { log "apt-get download $PKG failed"; exit 3; }
    rm -rf "$KDIR"; mkdir -p "$KDIR"
    dpkg -x "$(ls "$CACHE"/"$PKG"_*.deb | head -1)" "$KDIR"
    VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-6.1.* | head -1)
fi
case "$VMLINUZ" in
    */usr/lib/modules/*/vmlinuz) KVER=$(basename "$(dirname "$VMLINUZ")") ;;
    *) KVER=${VMLINUZ##*/vmlinuz-} ;;
esac
MODDIR=$KDIR/lib/modules/$KVER
[ -d "$MODDIR" ] || MODDIR=$KDIR/usr/lib/modules/$KVER
KCONFIG=$(ls "$KDIR/boot/config-$KVER" "$MODDIR/config" 2>/dev/null | head -1 || true)
log "kernel $KVER"
IOMMUFD_NOTE=""
if [ -n "$KCONFIG" ]; then
    kc() { grep -E "^(# )?CONFIG_$1[= ]" "$KCONFIG" | head -1 | grep . || echo "CONFIG_$1 absent (Linux < 6.2/6.6)"; }
    log "kernel config: $(kc IOMMUFD); $(kc VFIO_DEVICE_CDEV)"
    if ! grep -qE '^CONFIG_IOMMUFD=[ym]' "$KCONFIG" || ! grep -qE '^CONFIG_VFIO_DEVICE_CDEV=y' "$KCONFIG"; then
        IOMMUFD_NOTE="guest kernel $KVER: $(kc IOMMUFD | tr -d '#'), $(kc VFIO_DEVICE_CDEV | tr -d '#')"
    fi
fi

# --- guest test binary -----------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${NVME_QEMU_FORCE_GLIBC:-}" ] && { rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
    || rustup target add x86_64-unknown-linux-musl >&2 2>/dev/null; }; then
    log "building the static (musl) guest test binary"
    cargo build -q --release --target x86_64-unknown-linux-musl -p vramless-nvme-direct --example qemu-guest-test >&2
    GUEST_BIN=$TARGET_DIR/x86_64-unknown-linux-musl/release/examples/qemu-guest-test
else
    log "musl target unavailable (or NVME_QEMU_FORCE_GLIBC set): building for the host and copying its shared libraries"
    cargo build -q --release -p vramless-nvme-direct --example qemu-guest-test >&2
    GUEST_BIN=$TARGET_DIR/release/examples/qemu-guest-test
fi

# --- initramfs -------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/vramless-qemu.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
IR=$WORK/initramfs
mkdir -p "$IR"/{bin,dev,proc,sys,lib/modules}
cp /bin/busybox "$IR/bin/busybox"
cp "$ROOT/scripts/qemu/init" "$IR/init"; chmod +x "$IR/init"
cp "$GUEST_BIN" "$IR/nvme-guest-test"
if ldd "$GUEST_BIN" >/dev/null 2>&1; then
    for lib in $(ldd "$GUEST_BIN" | grep -o '/[^ ]*'); do
        mkdir -p "$IR$(dirname "$lib")"; cp -L "$lib" "$IR$lib"
    done
fi
# Modules in dependency order, resolved from each module's own "depends=" field; compressed
# modules (.ko.xz, .ko.zst) are unpacked here because busybox insmod takes plain ELF.
declare -A MODPATH=(); declare -A DONE=(); ORDER=()
while IFS= read -r f; do n=$(basename "$f"); n=${n%%.ko*}; MODPATH[${n//-/_}]=$f; done < <(find "$MODDIR/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst')
modcat() {
    case "$1" in
        *.ko.xz) xz -dc "$1" ;;
        *.ko.zst) zstd -qdc "$1" ;;
        *) cat "$1" ;;
    esac
}
add_mod() {
    local key=${1//-/_} f dep
    [ -n "${DONE[$key]:-}" ] && return 0
    f=${MODPATH[$key]:-}; [ -n "$f" ] || { log "module $1 not found"; exit 1; }
    for dep in $(modcat "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do add_mod "$dep"; done
    DONE[$key]=1; ORDER+=("$f")
}
# Built-in drivers (e.g. nvme or ext4 =y in some kernels) need no module.
for m in vfio vfio_iommu_type1 vfio-pci nvme crc32c_generic ext4 iommufd; do
    [ -n "${MODPATH[${m//-/_}]:-}" ] && add_mod "$m"
done
: > "$IR/modules.order"
for f in "${ORDER[@]}"; do
    n=$(basename "$f"); n=${n%%.ko*}.ko
    modcat "$f" > "$IR/lib/modules/$n"; echo "$n" >> "$IR/modules.order"
done
log "modules: $(tr '\n' ' ' < "$IR/modules.order")"
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/initramfs.gz"

# --- disk image of known bytes ---------------------------------------------------------------
SIZE=$((IMAGE_MB * 1048576))
head -c "$SIZE" /dev/urandom > "$WORK/disk.img"
SHA=$(sha256sum "$WORK/disk.img" | cut -d' ' -f1)
head -c $((SCRATCH_MB * 1048576)) /dev/zero >> "$WORK/disk.img"
log "image: $IMAGE_MB MiB random bytes, sha256 $SHA (+ $SCRATCH_MB MiB scratch)"
# A second controller with an ext4 filesystem holding a file of known bytes (extent test).
FS_ARGS=(); FS_CMDLINE=""
if command -v mkfs.ext4 >/dev/null; then
    mkdir -p "$WORK/fsroot"
    # 1 MiB data, a 1 MiB hole, 3 MiB + 777 bytes data: several extents, holes read as zeros.
    FLEN=$((5 * 1048576 + 777))
    head -c 1048576 /dev/urandom > "$WORK/fsroot/model.bin"
    head -c $((3 * 1048576 + 777)) /dev/urandom | dd of="$WORK/fsroot/model.bin" bs=1M seek=2 conv=notrunc status=none
    FSHA=$(sha256sum "$WORK/fsroot/model.bin" | cut -d' ' -f1)
    mkfs.ext4 -q -F -b 4096 -d "$WORK/fsroot" "$WORK/fs.img" 48M >&2
    FS_ARGS=(-drive file="$WORK/fs.img",if=none,id=f,format=raw -device nvme,drive=f,serial=vramlessfs01)
    FS_CMDLINE="nvt.fsha=$FSHA nvt.flen=$FLEN"
    log "ext4 image with model.bin ($FLEN bytes, sha256 $FSHA)"
else
    log "!!! mkfs.ext4 missing: the FIEMAP extent part of the guest test is skipped"
fi

# --- boot ------------------------------------------------------------------------------------
LOG=$WORK/console.log
set +e
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -m 1024 -smp 2 \
    -machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on \
    -drive file="$WORK/disk.img",if=none,id=d,format=raw -device nvme,drive=d,serial=vramless0001 \
    "${FS_ARGS[@]}" \
    -kernel "$VMLINUZ" -initrd "$WORK/initramfs.gz" \
    -append "console=ttyS0 intel_iommu=on panic=-1 quiet nvt.hugepages=$HUGEPAGES nvt.size=$SIZE nvt.sha=$SHA nvt.scratch=$((SIZE / 512)) $FS_CMDLINE" \
    -display none -serial stdio -monitor none -no-reboot < /dev/null > "$LOG" 2>&1
rc=$?
set -e
mkdir -p "$CACHE/logs" && cp "$LOG" "$CACHE/logs/console-last.log"
grep -a -E '^(guest:|vfio:|iommufd:|hugepages:|identify:|namespace|RESULT-LINE|write\+read|shutdown:|error:|extents:|NVME-|EXTENT-|IOMMUFD-|HUGEPAGE-|ABORT-)' "$LOG" | tr -d '\r' >&2 || true
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    log "FAIL: QEMU hit the ${TIMEOUT}s timeout (console log: $CACHE/logs/console-last.log)"; exit 1
fi
extent_ok=true
if [ -n "$FS_CMDLINE" ] && ! grep -aq 'EXTENT-RESULT: PASS' "$LOG"; then extent_ok=false; fi
abort_ok=true
grep -aq 'ABORT-RESULT: PASS' "$LOG" || abort_ok=false
huge_ok=true
if [ "$HUGEPAGES" != 0 ] && ! grep -aq 'HUGEPAGE-RESULT: PASS' "$LOG"; then huge_ok=false; fi
iommufd_ok=true
if grep -aq 'IOMMUFD-RESULT: PASS' "$LOG"; then
    log "iommufd + VFIO cdev path: PASS"
elif grep -aq 'IOMMUFD-SKIPPED' "$LOG"; then
    log "!!! iommufd + VFIO cdev path SKIPPED: ${IOMMUFD_NOTE:-see the IOMMUFD-SKIPPED line}"
    log "!!! (Debian kernels are built without CONFIG_IOMMUFD; NVME_QEMU_KERNEL_DIR can point at one that has it)"
    [ "${NVME_QEMU_REQUIRE_IOMMUFD:-}" = 1 ] && iommufd_ok=false
else
    iommufd_ok=false
fi
if grep -aq 'NVME-DIRECT-GUEST-RESULT: PASS' "$LOG" && grep -aq 'kernel-driver sha256 OK' "$LOG" && $extent_ok && $abort_ok && $huge_ok && $iommufd_ok; then
    log "PASS (type1 path, timeout -> Abort on QEMU's controller$([ "$HUGEPAGES" != 0 ] && echo ", 2 MiB hugepage buffers")$(grep -aq 'IOMMUFD-RESULT: PASS' "$LOG" && echo ", iommufd path"))"
    exit 0
fi
log "FAIL (qemu rc $rc); console log: $CACHE/logs/console-last.log"
tail -30 "$LOG" >&2
exit 1
