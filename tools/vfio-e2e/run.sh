#!/usr/bin/env bash
# xenpt's VFIO backend against QEMU's emulated NVMe controller bound to vfio-pci, in a
# plain Linux VM (no Xen) with an emulated VT-d IOMMU: the kernel and root filesystem of
# the xen-e2e image (built by tools/xen-e2e/build.sh and cached), booted under QEMU/TCG.
# Prints one line per check and a summary; exit 0 only if every check passed. Needs root;
# about 2-3 minutes. Logs in $XENPT_VFIO_LOGS (default /tmp/xenpt-vfio-logs).
#
# Why not under Xen: dom0 sees no IOMMU, so vfio-pci binds there only in the kernel's
# no-IOMMU mode, and Debian's kernels are built without CONFIG_VFIO_NOIOMMU (see the
# error `xenpt host-info --vfio` gives in a Debian dom0).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
logs=${XENPT_VFIO_LOGS:-/tmp/xenpt-vfio-logs}
mkdir -p "$logs"
start=$(date +%s)
timeout 900 "$top/tools/xen-e2e/build.sh"
out=$(cat "${XENPT_E2E_CACHE:-/var/tmp/xenpt-e2e}/current")
(cd "$top" && cargo build --release -q)
# The cached root filesystem gets this build's xenpt and our init (as tools/xen-e2e does).
install -m755 "$top/target/release/xenpt" "$out/rootfs/usr/local/bin/xenpt"
install -m755 "$here/init.sh" "$out/rootfs/sbin/xenpt-vfio-init"
rm -f "$logs/rootfs.img"
mke2fs -q -t ext4 -L root -d "$out/rootfs" "$logs/rootfs.img" 3G
truncate -s 64M "$logs/nvme.img"
serial=$logs/serial.log
echo "vfio-e2e: booting Linux under QEMU/TCG with VT-d and an NVMe controller (about 1-2 minutes)"
set +e
timeout "${XENPT_VFIO_TIMEOUT:-600}" qemu-system-x86_64 -accel tcg,thread=multi -machine q35 -cpu max -smp 2 -m 2048 \
    -display none -monitor none -no-reboot -serial "file:$serial" \
    -device intel-iommu,intremap=on \
    -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw intel_iommu=on panic=-1 init=/sbin/xenpt-vfio-init" \
    -drive "file=$logs/rootfs.img,if=none,id=root,format=raw" -device virtio-blk-pci,drive=root \
    -drive "file=$logs/nvme.img,if=none,id=nvm,format=raw" -device nvme,serial=vfio0001,drive=nvm \
    -net none
qrc=$?
set -e
grep -a '^VFIO' "$serial" > "$logs/results.txt" || true
fail=0
echo
if ! grep -aq '^VFIO-END' "$serial"; then echo "vfio-e2e: FAIL: the VM did not finish (QEMU exit $qrc; see $serial)"; fail=1; fi
while read -r tag check verdict detail; do
    [ "$tag" = VFIO ] || continue
    echo "vfio-e2e: $verdict $check: $detail"
    [ "$verdict" = FAIL ] && fail=1
done < <(grep -a '^VFIO ' "$serial" | tr -d '\r')
grep -a '^VFIO-LOG' "$serial" | tr -d '\r' | sed 's/^VFIO-LOG /vfio-e2e:   /' | head -30
n=$(grep -ac '^VFIO [^ ]* PASS' "$serial" || true)
echo "vfio-e2e: $( [ $fail = 0 ] && echo PASS || echo FAIL ): $n checks passed in $(( $(date +%s) - start )) s; logs in $logs"
exit $fail
