#!/bin/bash
# PID 1 of the VFIO test VM (plain Linux, no Xen, with an emulated VT-d IOMMU): bind QEMU's
# NVMe controller to vfio-pci and check what xenpt's VFIO backend reads against the sysfs
# backend. One "VFIO <check> PASS|FAIL <detail>" line per check, then power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
res() { echo "VFIO $1 $2 ${*:3}"; }
mount -t proc proc /proc 2>/dev/null; mount -t sysfs sys /sys 2>/dev/null; mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /run
NVME=$(for d in /sys/bus/pci/devices/*; do [ "$(cat $d/class)" = 0x010802 ] && basename $d; done | head -1)
echo "VFIO-LOG kernel $(uname -r), nvme at $NVME, iommu group $(basename "$(readlink /sys/bus/pci/devices/$NVME/iommu_group)")"
X=/usr/local/bin/xenpt
# Before binding: xenpt's own message for a device not on vfio-pci.
out=$($X host-info --sbdf $NVME --backend vfio 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "not vfio-pci" && res not-bound-refused PASS "$(echo "$out" | head -c 160)" \
    || res not-bound-refused FAIL "rc $rc: $out"
modprobe vfio-pci || res modprobe FAIL "vfio-pci"
[ -e /sys/bus/pci/devices/$NVME/driver ] && echo $NVME > /sys/bus/pci/devices/$NVME/driver/unbind
echo vfio-pci > /sys/bus/pci/devices/$NVME/driver_override
echo $NVME > /sys/bus/pci/drivers_probe
drv=$(basename "$(readlink /sys/bus/pci/devices/$NVME/driver)")
[ "$drv" = vfio-pci ] && res bound PASS "$NVME on vfio-pci, $(ls /dev/vfio | tr '\n' ' ')" || res bound FAIL "driver $drv"
# The sysfs backend's view of the same function in the same state, to compare with.
$X host-info --sbdf $NVME > /tmp/sysfs.info 2>&1
$X guest-view --sbdf $NVME --format lspci > /tmp/sysfs.view 2>/tmp/sysfs.err
if $X host-info --sbdf $NVME --backend vfio > /tmp/vfio.info 2>&1; then
    res host-info PASS "$(grep '^vfio:' /tmp/vfio.info)"
else
    res host-info FAIL "$(cat /tmp/vfio.info)"
fi
sed 's/^/VFIO-LOG info /' /tmp/vfio.info
# The same BARs (addresses from sysfs, sizes checked against VFIO's regions).
if diff <(grep -E '^(BAR|ROM)' /tmp/sysfs.info) <(grep -E '^(BAR|ROM)' /tmp/vfio.info) >/dev/null; then
    res bars PASS "$(grep -E '^BAR' /tmp/vfio.info | tr '\n' ';')"
else
    res bars FAIL "$(diff <(grep -E '^(BAR|ROM)' /tmp/sysfs.info) <(grep -E '^(BAR|ROM)' /tmp/vfio.info) | tr '\n' ';')"
fi
# VFIO's MSI-X vector count equals the table size in the capability (lspci -vv's Count=).
count=$(lspci -s $NVME -vv 2>/dev/null | sed -n 's/.*MSI-X: Enable. Count=\([0-9]*\).*/\1/p')
got=$(sed -n 's/.*MSI-X vectors \([0-9]*\).*/\1/p' /tmp/vfio.info)
[ -n "$count" ] && [ "$count" = "$got" ] && res msix-count PASS "$got vectors (VFIO) = Count=$count (capability)" \
    || res msix-count FAIL "VFIO $got, capability $count"
# The guest view through VFIO's config region must be byte-identical to the sysfs one:
# what VFIO virtualises (BAR registers, MSI/MSI-X control, INTx disable) is emulated by
# xenpt's policy anyway.
if $X guest-view --sbdf $NVME --backend vfio --format lspci > /tmp/vfio.view 2>/tmp/vfio.err; then
    lspci -F /tmp/vfio.view -vvv > /tmp/vfio.lspci 2>&1 && grep -q "Non-Volatile memory controller" /tmp/vfio.lspci \
        && res guest-view-lspci PASS "lspci -F decodes it" || res guest-view-lspci FAIL "$(head -5 /tmp/vfio.lspci)"
    if cmp -s /tmp/sysfs.view /tmp/vfio.view; then
        res guest-view-identical PASS "$(wc -l < /tmp/vfio.view) lines, byte-identical to --backend sysfs"
    else
        res guest-view-identical FAIL "differs from --backend sysfs (see VFIO-LOG view-diff)"
        diff /tmp/sysfs.view /tmp/vfio.view | sed 's/^/VFIO-LOG view-diff /' | head -20
    fi
else
    res guest-view FAIL "$(cat /tmp/vfio.err)"
fi
if grep -q "reset supported" /tmp/vfio.info; then
    $X host-info --sbdf $NVME --backend vfio --reset > /tmp/reset.info 2>&1 && grep -q "reset: done" /tmp/reset.info \
        && res reset PASS "VFIO_DEVICE_RESET" || res reset FAIL "$(tail -2 /tmp/reset.info)"
else
    res reset INFO "the function offers no reset through VFIO"
fi
echo "VFIO-END"
sync; echo o > /proc/sysrq-trigger; sleep 30
