//! The extended-capability policy: the per-ID decision table, chain rebuilding when the
//! first, a middle or the last capability is hidden, malformed host chains, and that no
//! guest write to 0x100..0xfff reaches the device.

use super::*;
use crate::host::dump::{format_dump, DumpDevice};
use crate::pci::Sbdf;

/// A 4 KiB host function with no conventional capabilities and the given extended headers
/// (id, version, offset, next) and extra dwords (offset, value).
fn host(chain: &[(u16, u8, u16, u16)], extra: &[(u16, u32)]) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0..4].copy_from_slice(&0x1234_8086u32.to_le_bytes());
    for &(id, ver, off, next) in chain {
        let h = id as u32 | (ver as u32) << 16 | (next as u32) << 20;
        b[off as usize..off as usize + 4].copy_from_slice(&h.to_le_bytes());
    }
    for &(off, v) in extra {
        b[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

struct Built {
    cfg: ConfigSpace,
    layout: CapLayout,
    dev: DumpDevice,
}

/// Build on `bytes` as a PCI Express function (the conventional walk is not run: an
/// exposed PCIe capability is assumed).
fn build_on(bytes: &[u8]) -> Built {
    build_with(bytes, true)
}

fn build_with(bytes: &[u8], pcie: bool) -> Built {
    let dev = DumpDevice::from_text(&format_dump(Sbdf::new(0, 1, 0, 0), "test", bytes)).unwrap();
    let mut cfg = ConfigSpace::new(Sbdf::new(0, 1, 0, 0), 4096);
    let mut layout = CapLayout::default();
    if pcie {
        layout.caps.push(super::super::CapInfo { id: CAP_ID_EXP, offset: 0x40, len: 0x3c, hidden: None });
    }
    build(&mut cfg, bytes, &mut layout);
    Built { cfg, layout, dev }
}

impl Built {
    fn snap(&mut self) -> Vec<u8> {
        self.cfg.snapshot(&self.dev)
    }
    fn read(&mut self, off: u16) -> u32 {
        self.cfg.read(&self.dev, off as u32, 4)
    }
    /// The chain a guest walks, (id, offset), with loop protection.
    fn guest_chain(&mut self) -> Vec<(u16, u16)> {
        let (found, warnings) = walk(&self.snap());
        assert!(warnings.is_empty(), "guest chain is malformed: {warnings:?}");
        found.iter().map(|&(id, _, o)| (id, o)).collect()
    }
}

#[test]
fn decision_table() {
    let expose = [AER, DSN, POWER_BUDGET, VSEC, LTR, SECPCI, L1SS, PTM];
    let hide = [
        SRIOV, ACS, ATS, PRI, PASID, REBAR, VF_REBAR, VC, VC9, MFVC, DPC, DOE, MCAST, ARI, TPH, 0x0000, 0x0011, 0x0023,
        0x0025, 0x0026, 0x0027, 0x0030, 0x1234, 0xffff,
    ];
    for id in expose {
        assert_eq!(decide(id), Ok(()), "{id:#06x} {}", name(id));
    }
    for id in hide {
        assert!(decide(id).is_err(), "{id:#06x} {} must be hidden", name(id));
    }
}

#[test]
fn all_exposed_chain_is_the_host_chain_with_emulated_headers() {
    let mut b = build_on(&host(&[(AER, 2, 0x100, 0x148), (DSN, 1, 0x148, 0x158), (LTR, 1, 0x158, 0)], &[]));
    assert_eq!(b.guest_chain(), vec![(AER, 0x100), (DSN, 0x148), (LTR, 0x158)]);
    assert_eq!(b.guest_chain(), b.layout.guest_ext_chain());
    assert_eq!(b.read(0x100), 0x1480_0001 | 2 << 16);
    assert!(b.layout.ext.iter().all(|c| c.hidden.is_none()));
}

#[test]
fn first_hidden_leaves_a_null_header_at_0x100() {
    let mut b =
        build_on(&host(&[(ACS, 1, 0x100, 0x140), (AER, 2, 0x140, 0x180), (DSN, 1, 0x180, 0)], &[(0x104, 0xffff_ffff)]));
    assert_eq!(b.guest_chain(), vec![(0, 0x100), (AER, 0x140), (DSN, 0x180)]);
    assert_eq!(b.guest_chain(), b.layout.guest_ext_chain());
    assert_eq!(b.read(0x100), 0x140 << 20, "Null header, version 0, next = first exposed");
    assert_eq!(b.read(0x104), 0, "ACS body reads 0");
    assert_eq!(b.layout.ext[0].hidden, decide(ACS).err());
}

#[test]
fn middle_hidden_is_unlinked_and_reads_zero() {
    let mut b = build_on(&host(
        &[(AER, 2, 0x100, 0x140), (SRIOV, 1, 0x140, 0x180), (DSN, 1, 0x180, 0)],
        &[(0x148, 0xffff_ffff), (0x17c, 0xffff_ffff), (0x184, 0x1234_5678)],
    ));
    assert_eq!(b.guest_chain(), vec![(AER, 0x100), (DSN, 0x180)]);
    assert_eq!(b.guest_chain(), b.layout.guest_ext_chain());
    for off in (0x140..0x180).step_by(4) {
        assert_eq!(b.read(off), 0, "SR-IOV register {off:#x} must read 0");
    }
    assert_eq!(b.read(0x184), 0x1234_5678, "DSN reads the host");
}

#[test]
fn last_hidden_ends_the_chain_early() {
    let mut b = build_on(&host(&[(AER, 2, 0x100, 0x148), (DSN, 1, 0x148, 0x160), (ATS, 1, 0x160, 0)], &[]));
    assert_eq!(b.guest_chain(), vec![(AER, 0x100), (DSN, 0x148)]);
    assert_eq!(b.read(0x148) >> 20, 0);
    assert_eq!(b.read(0x160), 0);
}

#[test]
fn nothing_exposed_reads_zero_at_0x100() {
    let mut b = build_on(&host(&[(ACS, 1, 0x100, 0x140), (0x1234, 1, 0x140, 0)], &[]));
    assert_eq!(b.read(0x100), 0);
    assert!(b.guest_chain().is_empty() && b.layout.guest_ext_chain().is_empty());
    assert_eq!(b.layout.ext.len(), 2);
    // Unknown: only the header is hidden (no length known).
    assert_eq!((b.layout.ext[1].len, b.layout.ext[1].hidden), (4, Some("not emulated")));
}

#[test]
fn malformed_host_chains_are_cut_with_a_warning() {
    let cases: [(&str, Vec<u8>, usize, &str); 6] = [
        ("loop", host(&[(AER, 2, 0x100, 0x140), (DSN, 1, 0x140, 0x100)], &[]), 2, "loops"),
        ("self loop", host(&[(AER, 2, 0x100, 0x100)], &[]), 1, "loops"),
        ("pointer below 0x100", host(&[(AER, 2, 0x100, 0x40)], &[]), 1, "conventional"),
        ("misaligned pointer", host(&[(AER, 2, 0x100, 0x142)], &[]), 1, "aligned"),
        ("all-ones header", host(&[], &[(0x100, !0)]), 0, "all-ones"),
        ("all-ones later", host(&[(AER, 2, 0x100, 0x140)], &[(0x140, !0)]), 1, "all-ones"),
    ];
    for (what, bytes, n, warn) in cases {
        let (found, warnings) = walk(&bytes);
        assert_eq!(found.len(), n, "{what}: {found:x?}");
        assert!(warnings.iter().any(|w| w.contains(warn)), "{what}: {warnings:?}");
        let mut b = build_on(&bytes);
        assert!(b.layout.warnings.iter().any(|w| w.contains(warn)), "{what}");
        // The guest's chain is always well formed: the exposed entries, no loop.
        assert_eq!(b.guest_chain(), b.layout.guest_ext_chain(), "{what}");
    }
    // An empty header at 0x100 is normal (no extended capabilities), not a warning.
    let (found, warnings) = walk(&host(&[], &[]));
    assert!(found.is_empty() && warnings.is_empty());
    // A 256-byte space has no extended space at all.
    assert_eq!(walk(&[0u8; 256]), (vec![], vec![]));
}

#[test]
fn a_chain_through_every_dword_terminates() {
    // Every dword a header pointing at the next one, the last back to 0x100.
    let mut b = vec![0u8; 4096];
    for off in (0x100..0x1000).step_by(4) {
        let next = if off == 0xffc { 0x100 } else { off + 4 };
        b[off..off + 4].copy_from_slice(&(0x0003 | (next as u32) << 20).to_le_bytes());
    }
    let (found, warnings) = walk(&b);
    assert_eq!(found.len(), (4096 - 256) / 4);
    assert!(warnings[0].contains("loops"));
}

#[test]
fn aer_masks_are_emulated_and_status_is_read_only() {
    let cc = 0x0000_02a0 | 0x0140; // ECRC gen/check and multi-header capable, gen+check enabled
    let mut b = build_on(&host(
        &[(AER, 2, 0x100, 0)],
        &[(0x104, 0x0010_0000), (0x108, 0x0040_0000), (0x10c, 0x0006_2030), (0x110, 0x1), (0x118, cc)],
    ));
    assert_eq!(b.layout.ext[0].len, 0x38);
    assert_eq!(b.read(0x108), 0x0040_0000, "UE mask starts from the host's");
    for off in (0x100..0x1000).step_by(4) {
        b.cfg.write(&b.dev, off, 4, !0);
        b.cfg.write(&b.dev, off, 4, 0);
        b.cfg.write(&b.dev, off, 4, 0x5555_5555);
    }
    assert_eq!(b.dev.write_log().lock().unwrap().len(), 0, "no write reaches the device");
    assert_eq!(b.read(0x108), 0x5555_5555 & AER_UE_BITS, "UE mask is an emulated copy");
    assert_eq!(b.read(0x10c), 0x5555_5555 & AER_UE_BITS);
    assert_eq!(b.read(0x114), 0x5555_5555 & AER_CE_BITS);
    assert_eq!(b.read(0x104), 0x0010_0000, "UE status reads the host, W1C not passed");
    assert_eq!(b.read(0x110), 1);
    assert_eq!(b.read(0x118), (cc & !0x540) | (0x5555_5555 & 0x540));
    assert_eq!(b.read(0x12c), 0, "root registers read 0 on an endpoint");
    assert_eq!(b.read(0x100), 0x0002_0001);
}

#[test]
fn secondary_pcie_length_follows_the_link_width() {
    let mut bytes = host(&[(SECPCI, 1, 0x100, 0)], &[]);
    // A PCIe endpoint capability at 0x40, x8 link.
    bytes[0x06] = 0x10;
    bytes[0x34] = 0x40;
    bytes[0x40..0x44].copy_from_slice(&0x0002_0010u32.to_le_bytes());
    bytes[0x4c..0x50].copy_from_slice(&(8u32 << 4).to_le_bytes());
    let b = build_on(&bytes);
    assert_eq!(b.layout.ext[0].len, 0x0c + 16);
}

#[test]
fn without_an_exposed_pcie_capability_everything_is_hidden() {
    let mut b = build_with(&host(&[(AER, 2, 0x100, 0x148), (DSN, 1, 0x148, 0)], &[(0x14c, 0x1234_5678)]), false);
    assert!(b.layout.ext.iter().all(|c| c.hidden.is_some_and(|w| w.contains("PCI Express"))));
    assert_eq!((b.read(0x100), b.read(0x14c)), (0, 0));
    assert!(b.guest_chain().is_empty());
}
