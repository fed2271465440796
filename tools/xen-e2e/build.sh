#!/usr/bin/env bash
# Build (or reuse from the cache) everything the real-Xen test boots: a Debian bookworm
# dom0 root filesystem with Xen 4.17 from Debian's packages, the dom0 and guest kernels,
# the guest initramfs's contents (static busybox, the nvme driver modules). The cache key covers
# the package list and this script, so a change to either rebuilds. The guest's init
# (guest-init.sh) is packed into the initramfs by run.sh on every run, so it is not cached.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${XENPT_E2E_CACHE:-/var/tmp/xenpt-e2e}
# XENPT_E2E_SUITE=trixie XENPT_E2E_XEN=4.20: Debian 13's Xen 4.20 and Linux 6.12, for the
# PVH-dom0 run (run.sh --pvh-dom0). Default: bookworm's Xen 4.17.
suite=${XENPT_E2E_SUITE:-bookworm}
xenver=${XENPT_E2E_XEN:-4.17}
pkgs="xen-system-amd64 xen-hypervisor-$xenver-amd64 xen-utils-$xenver xenstore-utils qemu-system-xen linux-image-amd64 pciutils kmod iproute2 procps busybox"
key=$( (echo "$suite $pkgs"; cat "$here/build.sh") | sha256sum | cut -c1-16)
out=$cache/$key
mkdir -p "$cache"
if [ -f "$out/ready" ]; then
    echo "build: reusing $out"
    echo "$out" > "$cache/current"
    exit 0
fi
echo "build: building into $out (takes ~2 minutes)"
rm -rf "$out"; mkdir -p "$out"
root=$out/rootfs
mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
mirror=${mirror:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
[ -n "$mirror" ] || { echo "build: no Debian mirror found in the host's apt sources" >&2; exit 1; }
debootstrap --variant=minbase "$suite" "$root" "$mirror" > "$out/debootstrap.log" 2>&1 \
    || { tail -20 "$out/debootstrap.log"; exit 1; }
cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null || cp /etc/apt/sources.list "$root/etc/apt/" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
mount --bind /proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
chroot "$root" apt-get update > "$out/apt.log" 2>&1
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >> "$out/apt.log" 2>&1 \
    || { tail -20 "$out/apt.log"; exit 1; }
umount "$root/proc"; trap - EXIT
# Keep no mirror name inside the image.
rm -f "$root"/etc/apt/sources.list "$root"/etc/apt/sources.list.d/*.sources "$root/var/log/bootstrap.log"
rm -rf "$root"/var/lib/apt/lists/*
kver=$(ls "$root/lib/modules" | head -1)
# Guest initramfs: static busybox and the nvme driver modules of the same kernel.
g=$out/guest-root
mkdir -p "$g"/{bin,proc,sys,dev,mod}
cp /bin/busybox "$g/bin/busybox"
for a in sh echo cat cut printf mount uname poweroff sleep ls insmod dd head dmesg grep sed tr cmp hexdump awk sync; do ln -s busybox "$g/bin/$a"; done
# The nvme driver and what it depends on, in load order, from the kernel's modules.dep
# (names and dependencies change between kernels); compressed modules are unpacked, since
# busybox's insmod loads plain ones. /mod/order: the nvme driver's; /mod/order-ahci: the
# AHCI driver's and the SCSI disk's (the PVH-dom0 run passes an AHCI controller through).
dep="$root/lib/modules/$kver/modules.dep"
order=()
add_mod() {
    local m=$1 x d
    [ -n "$m" ] || return 0
    for x in "${order[@]}"; do [ "$x" = "$m" ] && return; done
    for d in $(grep "^$m:" "$dep" | cut -d: -f2); do add_mod "$d"; done
    order+=("$m")
}
write_order() { # file module-name ... (a module built into the kernel is skipped)
    local f=$1 n m b; shift
    order=()
    for n in "$@"; do add_mod "$(grep -o "^[^:]*/$n\.ko[^:]*" "$dep" | head -1)"; done
    : > "$f"
    for m in "${order[@]}"; do
        b=$(basename "$m")
        case "$m" in
            *.ko.xz) xz -dc "$root/lib/modules/$kver/$m" > "$g/mod/${b%.xz}"; b=${b%.xz} ;;
            *.ko.zst) zstd -qdc "$root/lib/modules/$kver/$m" > "$g/mod/${b%.zst}"; b=${b%.zst} ;;
            *) cp "$root/lib/modules/$kver/$m" "$g/mod/" ;;
        esac
        echo "$b" >> "$f"
    done
}
write_order "$g/mod/order" nvme
write_order "$g/mod/order-ahci" ahci sd_mod
mkdir -p "$root/root/guest"
cp "$root"/boot/vmlinuz-* "$root/root/guest/vmlinuz"
cp "$root"/boot/vmlinuz-* "$out/vmlinuz"
cp "$root"/boot/initrd.img-* "$out/initrd.img"
zcat "$root"/boot/xen-$xenver-amd64.gz > "$out/xen"
touch "$out/ready"
echo "$out" > "$cache/current"
echo "build: done"
