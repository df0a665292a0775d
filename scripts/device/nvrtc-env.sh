# Sourced by the scripts/device/*.sh runs (from the repository root) on a GPU machine: finds
# NVRTC (libnvrtc.so.13) for the CUDA backend and exports VRAMLESS_NVRTC_LIB and LD_LIBRARY_PATH.
# Order: VRAMLESS_NVRTC_LIB if set, else python's site-packages (pip's nvidia-cuda-nvrtc), else
# the first one on the file system.
nv=${VRAMLESS_NVRTC_LIB:-}
if [ -z "$nv" ]; then
    nv=$(python3 -c "import site,os
for d in site.getsitepackages(): print(os.path.join(d, 'nvidia/cu13/lib/libnvrtc.so.13'))" 2>/dev/null |
        while read -r p; do [ -e "$p" ] && echo "$p"; done | head -1)
fi
[ -z "$nv" ] && nv=$(find / -xdev -name 'libnvrtc.so.13*' ! -name '*builtins*' 2>/dev/null | head -1)
echo "NVRTC: ${nv:-not found}"
export VRAMLESS_NVRTC_LIB="$nv" LD_LIBRARY_PATH="$(dirname "${nv:-/x}"):${LD_LIBRARY_PATH:-}"
