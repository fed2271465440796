//! Capabilities: the host chain is walked once at start-up (with loop and bounds
//! protection), each capability xenpt knows gets its policy from its own file, and the
//! chain the guest sees is built from the list of exposed capabilities.

pub mod ext;
pub mod msi;
pub mod msix;
pub mod pcie;
pub mod pm;
pub mod vendor;

use super::{ConfigSpace, Reg};
use crate::host::{BarKind, HostResources};
use crate::pci::*;
use crate::Profile;

/// A capability found on the host, and what the guest gets of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapInfo {
    pub id: u8,
    pub offset: u16,
    pub len: u16,
    /// None if exposed; else why it is hidden.
    pub hidden: Option<&'static str>,
}

/// What the capability walk found, for the device logic and the console.
#[derive(Clone, Debug, Default)]
pub struct CapLayout {
    pub caps: Vec<CapInfo>,
    pub msix: Option<msix::MsixLayout>,
    pub msi: Option<msi::MsiLayout>,
    /// Extended capabilities (0x100..0xfff) in host chain order, exposed or hidden.
    pub ext: Vec<ext::ExtCapInfo>,
    /// Problems with the host chain (loops, pointers into the header), for the start-up log.
    pub warnings: Vec<String>,
}

impl CapLayout {
    pub fn first_exposed(&self) -> u8 {
        self.caps.iter().find(|c| c.hidden.is_none()).map(|c| c.offset as u8).unwrap_or(0)
    }
}

pub fn name(id: u8) -> &'static str {
    match id {
        CAP_ID_PM => "Power Management",
        0x02 => "AGP",
        CAP_ID_VPD => "Vital Product Data",
        0x04 => "Slot ID",
        CAP_ID_MSI => "MSI",
        0x06 => "CompactPCI hot-swap",
        0x07 => "PCI-X",
        0x08 => "HyperTransport",
        CAP_ID_VENDOR => "Vendor Specific",
        0x0a => "Debug port",
        0x0b => "CompactPCI central resource control",
        0x0c => "Standard Hot-Plug Controller",
        0x0d => "Subsystem ID (bridge)",
        0x0e => "AGP 8x",
        0x0f => "Secure Device",
        CAP_ID_EXP => "PCI Express",
        CAP_ID_MSIX => "MSI-X",
        0x12 => "SATA",
        0x13 => "Advanced Features",
        0x14 => "Enhanced Allocation",
        0x15 => "Flattening Portal Bridge",
        _ => "unknown",
    }
}

/// The decision for every capability xenpt does not emulate, with the reason the console
/// and guest-view show. Each one is hidden: unlinked from the guest's chain, and its
/// registers (as far as their length is known) read 0 and drop writes.
///
/// | ID | capability | why hidden |
/// |----|------------|------------|
/// | 02, 0e | AGP, AGP 8x | AGP is programmed together with the host chipset's GART, which the guest does not own |
/// | 03 | VPD | VPD writes reach the device's EEPROM and persist across reboots and guests; some devices hang on VPD reads (Linux keeps a quirk list). Read VPD from dom0's sysfs `vpd` |
/// | 04 | Slot ID | describes the host's expansion chassis, not the guest's topology |
/// | 06, 0b | CompactPCI | hot-swap and central resource control belong to the host's backplane |
/// | 07 | PCI-X | command register sets bus-level read sizes and split transactions for the host bus |
/// | 08 | HyperTransport | link and host-interface configuration of the host fabric |
/// | 0a | Debug port | an EHCI debug port is the host's early console |
/// | 0c, 0d, 0f, 14, 15 | SHPC, bridge SSVID, AMD IOMMU, EA, FPB | bridge, IOMMU and resource-assignment functions, never passed through |
/// | 12 | SATA | an index/data window (SATACR) into the HBA's registers outside the BARs xenpt maps |
/// | 13 | Advanced Features | carries conventional-PCI FLR: a guest-triggered reset behind Xen's back |
///
/// Anything else is unknown: hidden the same way, its header only (its length is unknown,
/// and device-specific registers may follow it).
pub fn decide_other(id: u8) -> &'static str {
    match id {
        0x02 | 0x0e => "AGP is programmed with the host chipset's GART",
        CAP_ID_VPD => "VPD writes persist in the device's EEPROM and some devices hang on VPD reads; read VPD in dom0",
        0x04 => "describes the host's chassis slot",
        0x06 | 0x0b => "CompactPCI backplane control belongs to the host",
        0x07 => "PCI-X bus settings belong to the host bus",
        0x08 => "HyperTransport link configuration belongs to the host",
        0x0a => "the debug port is the host's early console",
        0x0c | 0x0d | 0x0f | 0x14 | 0x15 => "bridge/IOMMU/resource-assignment function",
        0x12 => "SATA index/data window reaches registers outside the mapped BARs",
        0x13 => "Advanced Features carries FLR: a reset behind Xen's back",
        _ => "unknown capability",
    }
}

/// How many bytes a hidden capability covers: its whole body where its length is known
/// from the spec or its own length byte, else just its header. Bytes outside any
/// capability keep the default policy (host read, writes dropped).
fn hidden_len(id: u8, host_cfg: &[u8], off: u16, room: u16) -> u16 {
    let o = off as usize;
    let len = match id {
        CAP_ID_MSI => {
            let ctrl = u16::from_le_bytes([host_cfg[o + 2], host_cfg[o + 3]]);
            10 + if ctrl & 0x80 != 0 { 4 } else { 0 } + if ctrl & 0x100 != 0 { 10 } else { 0 }
        }
        CAP_ID_PM | CAP_ID_VPD | 0x0c | 0x0d | 0x12 => 8,
        // PCI-X: command + status; a 266/533-capable (Mode 2) function adds ECC registers.
        0x07 => {
            let status = u32::from_le_bytes([host_cfg[o + 4], host_cfg[o + 5], host_cfg[o + 6], host_cfg[o + 7]]);
            if status & (3 << 17) != 0 {
                0x18
            } else {
                8
            }
        }
        0x02 => 12,
        0x04 | 0x06 | 0x0a => 4,
        0x13 => 6,
        CAP_ID_MSIX => msix::LEN,
        // Whatever the port type, hide the whole v2 register block (or v1's).
        CAP_ID_EXP => {
            if host_cfg[o + 2] & 0xf >= 2 {
                0x3c
            } else {
                0x14
            }
        }
        CAP_ID_VENDOR => (host_cfg[o + 2] as u16).max(2),
        _ => 2,
    };
    len.min(room)
}

/// Walk the host's capability list in `host_cfg` (at least 256 bytes).
pub fn walk(host_cfg: &[u8]) -> (Vec<(u8, u16)>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let status = u16::from_le_bytes([host_cfg[STATUS_OFFSET as usize], host_cfg[STATUS_OFFSET as usize + 1]]);
    if status & STATUS_CAP_LIST_BIT == 0 {
        return (out, warnings);
    }
    // A CardBus bridge (header type 2) keeps its capability pointer at 0x14. xenpt serves
    // only type 0, but the walk also describes the host for guest-view and the console.
    let ptr_at = if host_cfg[HEADER_TYPE_OFFSET as usize] & 0x7f == 2 { 0x14 } else { CAP_PTR_OFFSET as usize };
    let mut ptr = host_cfg[ptr_at] & 0xfc;
    let mut seen = [false; 64];
    while ptr != 0 {
        if ptr < 0x40 {
            warnings.push(format!("capability pointer {ptr:#x} points into the header; chain cut"));
            break;
        }
        if seen[ptr as usize / 4] {
            warnings.push(format!("capability chain loops at {ptr:#x}; chain cut"));
            break;
        }
        seen[ptr as usize / 4] = true;
        out.push((host_cfg[ptr as usize], ptr as u16));
        ptr = host_cfg[ptr as usize + 1] & 0xfc;
    }
    (out, warnings)
}

/// Whether an MSI-X layout is usable: table and PBA inside memory BARs that exist.
fn msix_fits(m: &msix::MsixLayout, res: &HostResources) -> bool {
    let fits = |bar: u8, off: u64, len: u64| {
        res.bars.get(bar as usize).copied().flatten().is_some_and(|b| b.kind != BarKind::Io && off + len <= b.size)
    };
    fits(m.table_bar, m.table_offset, m.table_len()) && fits(m.pba_bar, m.pba_offset, m.pba_len())
}

/// Decide and define every capability's policy; link the exposed chain.
pub fn build(cfg: &mut ConfigSpace, host_cfg: &[u8], res: &HostResources, profile: Profile) -> CapLayout {
    let (found, warnings) = walk(host_cfg);
    let mut layout = CapLayout { warnings, ..Default::default() };
    // Bytes of 0x40..0xff that belong to no capability keep the default policy: read
    // from the host, writes dropped as unknown.
    let offsets: Vec<u16> = found.iter().map(|&(_, o)| o).collect();
    for &(id, off) in &found {
        // A capability never extends past the next one or the end of config space.
        let room = offsets.iter().copied().filter(|&o| o > off).min().unwrap_or(0x100) - off;
        let hide = |why| (hidden_len(id, host_cfg, off, room), Some(why));
        let (len, hidden) = match id {
            CAP_ID_PM if room >= pm::LEN => (pm::LEN, None),
            CAP_ID_PM => hide("Power Management capability overlaps the next capability"),
            CAP_ID_MSIX => match msix::layout(host_cfg, off) {
                Some(l) if room >= msix::LEN && msix_fits(&l, res) => {
                    layout.msix = Some(l);
                    (msix::LEN, None)
                }
                Some(_) if room >= msix::LEN => hide("MSI-X table or PBA lies outside its BAR"),
                _ => hide("MSI-X capability is malformed"),
            },
            CAP_ID_EXP => match pcie::len(host_cfg, off) {
                Some(l) if l <= room => (l, None),
                Some(_) => hide("PCI Express capability overlaps the next capability"),
                None => hide("PCI Express root ports, switches and bridges cannot be passed through"),
            },
            CAP_ID_MSI => {
                let ctrl = u16::from_le_bytes([host_cfg[off as usize + 2], host_cfg[off as usize + 3]]);
                let l = msi::MsiLayout::from_control(off, ctrl);
                if l.size() <= room && layout.msi.is_none() {
                    layout.msi = Some(l);
                    (l.size(), None)
                } else {
                    hide("MSI capability overlaps the next capability, or is a second one")
                }
            }
            CAP_ID_VENDOR if room >= vendor::MIN_LEN => (vendor::len(host_cfg, off, room), None),
            _ => hide(decide_other(id)),
        };
        layout.caps.push(CapInfo { id, offset: off, len, hidden });
    }
    let _ = profile;
    for c in &layout.caps {
        match (c.hidden, c.id) {
            (Some(_), _) => cfg.hide(c.offset, c.len),
            (None, CAP_ID_PM) => pm::define(cfg, host_cfg, c.offset),
            (None, CAP_ID_MSIX) => msix::define(cfg, host_cfg, c.offset),
            (None, CAP_ID_MSI) => {
                if let Some(l) = layout.msi {
                    msi::define(cfg, &l)
                }
            }
            (None, CAP_ID_EXP) => pcie::define(cfg, host_cfg, c.offset, c.len),
            (None, CAP_ID_VENDOR) => vendor::define(cfg, c.offset, c.len),
            (None, _) => cfg.hide(c.offset, c.len),
        }
    }
    // Link the exposed chain: each exposed capability's next pointer is emulated.
    let exposed: Vec<u16> = layout.caps.iter().filter(|c| c.hidden.is_none()).map(|c| c.offset).collect();
    for (i, &off) in exposed.iter().enumerate() {
        let next = exposed.get(i + 1).copied().unwrap_or(0);
        cfg.define(off, 1, Reg::constant(host_cfg[off as usize] as u32));
        cfg.define(off + 1, 1, Reg::constant(next as u32));
    }
    if cfg.size() > CONFIG_SPACE_SIZE {
        ext::build(cfg, host_cfg, &mut layout);
    }
    layout
}

#[cfg(test)]
#[path = "decisions_tests.rs"]
mod decisions_tests;
