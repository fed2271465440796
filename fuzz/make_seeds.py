#!/usr/bin/env python3
"""Write the seed corpus of the config_space fuzz target (fuzz/corpus/config_space/seed-*).

Input layout (see README.md): device byte, flags byte (bit 0 PVH, bits 1-3 patch count,
bits 4-7 the 256-byte page the patches land in), patches (offset in that page, value), then
7-byte access records [op, o1, o2, v0, v1, v2, v3].
Device indices are positions in the sorted list of usable corpus devices (252 today).
"""
import os
import struct

NVME_XG5, I82576, MEGARAID, I82545EM = 58, 100, 2, 98
SIZE = {1: 0, 2: 1, 4: 2, 3: 6, 8: 7}


def w(off, size, value, mode=0):
    return bytes([0x80 | mode << 3 | SIZE[size], off & 0xff, (off >> 8) & 0xff]) + struct.pack("<I", value & 0xFFFFFFFF)


def r(off, size, mode=0):
    return bytes([mode << 3 | SIZE[size], off & 0xff, (off >> 8) & 0xff, 0, 0, 0, 0])


def seed(dev, pvh=False, patches=(), ops=(), page=0):
    head = bytes([dev, (1 if pvh else 0) | len(patches) << 1 | page << 4])
    return head + b"".join(bytes(p) for p in patches) + b"".join(ops)


seeds = {
    # NVMe: BAR sizing and placement, decode on, MSI-X enable, 32-vector MSI, W1C status.
    "seed-nvme-msi-msix": seed(NVME_XG5, ops=[
        w(0x10, 4, 0xFFFFFFFF), r(0x10, 4), w(0x10, 4, 0xFE000004), w(0x14, 4, 0), w(0x04, 2, 0x0006),
        w(0xB2, 2, 0x8000), r(0xB0, 4), w(0xB2, 2, 0xC000), w(0xB2, 2, 0x0000),
        w(0x94, 4, 0xFEE00000), w(0x98, 4, 0), w(0x9C, 2, 0x41), w(0x92, 2, 0x0051), w(0xA0, 4, 0xFFFF0000),
        w(0x06, 2, 0xFFFF), w(0x4A, 2, 0xFFFF), w(0x48, 2, 0xFFFF), r(0x34, 1), r(0x41, 1),
    ]),
    # 82576 in a PVH guest: MSI-X enable/mask-all, ROM sizing and enable, every command bit.
    "seed-82576-pvh-rom": seed(I82576, pvh=True, ops=[
        w(0x72, 2, 0xC000), w(0x72, 2, 0x8000), w(0x30, 4, 0xFFFFFFFF), r(0x30, 4), w(0x30, 4, 0x00000001),
        w(0x04, 4, 0xFFFFFFFF), w(0x04, 2, 0x0407), w(0x04, 2, 0), r(0x04, 4),
    ]),
    # MegaRAID with a corrupted chain: PM points to itself, capability pointer into the header.
    "seed-megaraid-broken-chain": seed(MEGARAID, patches=[(0x51, 0x50), (0x34, 0x20)], ops=[
        w(0x50, 4, 0xFFFFFFFF), w(0x34, 1, 0x40), w(0x06, 2, 0xFFFF), r(0x50, 4), r(0x20, 4),
    ]),
    # 82545EM (conventional PCI): straddling and oversized accesses, MSI control, PCI-X.
    "seed-82545-bad-shapes": seed(I82545EM, ops=[
        w(0xF1, 4, 0xFFFFFFFF), w(0xF3, 2, 0xFFFF), w(0xF2, 3, 0xFFFFFF), w(0xF0, 8, 0xFFFFFFFF),
        w(0xF2, 2, 0x0001), r(0xF1, 4), r(0xFF, 2), w(0xE6, 2, 0xFFFF), w(0x0FFE, 2, 0xFFFF, mode=2),
    ]),
    # 82576 with an MSI-X BIR of 7 (malformed): hidden, never enabled on the host.
    "seed-82576-bad-bir": seed(I82576, patches=[(0x74, 0x07)], ops=[
        w(0x72, 2, 0x8000), r(0x70, 4), w(0x52, 2, 0x0001), w(0x54, 4, 0xFEE00000),
    ]),
    # 82576 (4 KiB dump: AER, DSN, ARI, SR-IOV) with its extended chain looping back to
    # 0x100: cut at the loop, the guest chain stays well formed; writes all over it.
    "seed-82576-ext-loop": seed(I82576, page=1, patches=[(0x02, 0x01), (0x03, 0x10)], ops=[
        r(0x100, 4, mode=2), w(0x100, 4, 0xFFFFFFFF, mode=2), w(0x108, 4, 0xFFFFFFFF, mode=2),
        w(0x104, 4, 0xFFFFFFFF, mode=2), r(0x140, 4, mode=2), w(0x160, 4, 0xFFFFFFFF, mode=2),
        w(0x168, 2, 0xFFFF, mode=2), r(0x1FC, 4, mode=2),
    ]),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "config_space")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")
