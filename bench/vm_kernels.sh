#!/usr/bin/env bash
# Kernel comparison benchmark (issue 7): `make lab SCENARIO=idle KERNELS="6.1 host" N=5000`
# twice, first with an empty cache (kernel fetched with apt, root filesystem built with
# debootstrap) and then with everything cached. Prints the wall times, the VM boot times
# and the comparison; results go to bench/results/vm-kernels-<stamp>/.
#
#   bash bench/vm_kernels.sh                 # KERNELS="6.1 host" N=5000
#   KERNELS="6.1 6.12 host" N=2000 bash bench/vm_kernels.sh
#   FIRST=0 bash bench/vm_kernels.sh         # skip the empty-cache run
#
# The empty-cache run uses a fresh TCPLAB_CACHE_DIR (removed afterwards), so the shared
# cache in /var/cache/tcplab is neither used nor touched by it. Needs root, qemu-system-x86,
# qemu-utils, debootstrap, kmod (see docs/vm.md). Queues for the machine-wide lab lock.
set -euo pipefail
cd "$(dirname "$0")/.."
KERNELS="${KERNELS:-6.1 host}"
N="${N:-5000}"
SCENARIO="${SCENARIO:-idle}"
FIRST="${FIRST:-1}"
export TCPLAB_LOCK_WAIT="${TCPLAB_LOCK_WAIT:-900}"
OUT="bench/results/vm-kernels-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
make -s install

run() {  # run LABEL [env...]: one `make lab`, its wall time and output kept
    local label="$1"; shift
    local start end
    start=$(date +%s%N)
    env "$@" make -s lab SCENARIO="$SCENARIO" KERNELS="$KERNELS" N="$N" \
        ARGS="--results $OUT/$label" >"$OUT/$label.log" 2>&1 || {
        echo "vm_kernels: $label run failed; see $OUT/$label.log" >&2; tail -5 "$OUT/$label.log" >&2; exit 1; }
    end=$(date +%s%N)
    local ds=$(( (end - start) / 100000000 ))
    printf '%s wall %d.%d s\n' "$label" $((ds / 10)) $((ds % 10)) | tee -a "$OUT/times.txt"
    grep -E "VM up in|ready in|built in|connected in" "$OUT/$label.log" | sed "s/^/  $label: /" \
        | tee -a "$OUT/times.txt" || true
}

if [ "$FIRST" = 1 ]; then
    fresh=$(mktemp -d /var/tmp/tcplab-bench-cache-XXXXXX)
    trap 'rm -rf "$fresh"' EXIT
    run first TCPLAB_CACHE_DIR="$fresh"
fi
run cached
echo
sed -n '/^Kernel comparison/,/^runs:/p' "$OUT/cached.log"
echo "results and logs: $OUT"
