//! Extended capabilities (0x100..0xfff): the host's chain is walked once at start-up
//! (loop-, alignment- and bounds-protected), each capability is exposed read-only, partly
//! emulated, or hidden, and the chain the guest sees is rebuilt from the exposed ones.
//! None of the anchors offers this: QEMU's xen_pt and vPCI for domUs hide the whole space.
//!
//! No guest write to an extended capability ever reaches the device: every register of an
//! exposed capability is either read from the host with writes dropped, or an emulated
//! copy. Hidden capabilities read 0 (their whole body where the spec gives its length,
//! else the header). Bytes outside every capability keep the default policy (host read,
//! writes dropped as unknown, or passed through in `--permissive` mode, as in 0x40..0xff).
//!
//! | ID | capability | guest gets | why |
//! |---|---|---|---|
//! | 0x0001 | AER | header emulated; UE/CE Status: host, read-only; UE Mask, UE Severity, CE Mask: emulated copies (start from the host's values, guest-writable, never written to the device); Cap & Control: capability bits and First Error Pointer host read-only, the ECRC generation/check and multi-header enables emulated; Header Log and TLP Prefix Log: host read-only; Root Error registers (root ports only): 0 | error reporting of the device belongs to the host (dom0's AER service on the root port): a guest unmasking an error or making it fatal could get the link reset or the host to panic, and a guest clearing a status bit would race the host's handler and lose the error. Emulated (not read-only) masks and enables, so a driver that sets them reads back what it wrote |
//! | 0x0003 | Device Serial Number | host, read-only | identification; drivers (NICs, NVMe) read it |
//! | 0x0004 | Power Budgeting | host, read-only (Data Select writes dropped: the guest reads whichever entry the host selected) | informational |
//! | 0x000b | Vendor-Specific (VSEC) | host, read-only (length from the VSEC header) | vendor drivers read them; writes could reach vendor side effects |
//! | 0x0018 | LTR | host, read-only | latency policy is the host's (platform power management) |
//! | 0x0019 | Secondary PCIe | host, read-only (length from the PCIe capability's link width) | link equalisation and lane errors are the host's |
//! | 0x001e | L1 PM Substates | host, read-only | ASPM policy is the host's |
//! | 0x001f | PTM | host, read-only | enabling PTM needs the upstream port's cooperation |
//! | 0x0002, 0x0009 | VC | hidden | arbitration is fabric configuration |
//! | 0x0008 | MFVC | hidden | arbitration is fabric configuration |
//! | 0x000d | ACS | hidden | ACS controls are the host's isolation boundary (P2P redirection) |
//! | 0x000e | ARI | hidden | it changes function numbering; the guest sees one function |
//! | 0x000f | ATS | hidden | translation caching must be enabled by the host IOMMU driver |
//! | 0x0010 | SR-IOV | hidden | creating VFs belongs to the host |
//! | 0x0012 | Multicast | hidden | fabric configuration |
//! | 0x0013 | PRI | hidden | page requests need host IOMMU support |
//! | 0x0015, 0x0024 | Resizable BAR, VF ReBAR | hidden | resizing needs BAR-side support (mapping, sizing masks) |
//! | 0x001b | PASID | hidden | PASIDs need host IOMMU support |
//! | 0x001d | DPC | hidden | containment belongs to downstream ports and the host |
//! | 0x002e | DOE | hidden | a mailbox to device firmware (CMA/SPDM, IDE keys) |
//! | others | unknown | hidden | default-deny |
//!
//! Extended capabilities are offered only when the PCI Express capability is exposed:
//! without it the guest sees a conventional function, which has no extended space (Linux
//! and lspci do not look past 0x100), so every extended capability is hidden.
//!
//! Rebuilding the chain: every exposed header is emulated (host ID and version, next =
//! the next exposed capability). Extended capabilities must start at 0x100, so when the
//! host's capability there is hidden and others are exposed, 0x100 keeps a header with ID
//! 0 and version 0 whose next pointer skips to the first exposed one (Xen vPCI's
//! `vpci_ext_capability_hide`; lspci shows it as "Null"). With nothing exposed, 0x100
//! reads 0 (no extended capabilities).

use super::{CapLayout, ConfigSpace, Reg};
use crate::pci::{CAP_ID_EXP, CONFIG_SPACE_SIZE};

pub const AER: u16 = 0x0001;
pub const VC: u16 = 0x0002;
pub const DSN: u16 = 0x0003;
pub const POWER_BUDGET: u16 = 0x0004;
pub const MFVC: u16 = 0x0008;
pub const VC9: u16 = 0x0009;
pub const VSEC: u16 = 0x000b;
pub const ACS: u16 = 0x000d;
pub const ARI: u16 = 0x000e;
pub const ATS: u16 = 0x000f;
pub const SRIOV: u16 = 0x0010;
pub const MCAST: u16 = 0x0012;
pub const PRI: u16 = 0x0013;
pub const REBAR: u16 = 0x0015;
pub const TPH: u16 = 0x0017;
pub const LTR: u16 = 0x0018;
pub const SECPCI: u16 = 0x0019;
pub const PASID: u16 = 0x001b;
pub const DPC: u16 = 0x001d;
pub const L1SS: u16 = 0x001e;
pub const PTM: u16 = 0x001f;
pub const VF_REBAR: u16 = 0x0024;
pub const DOE: u16 = 0x002e;

/// AER register offsets.
pub const AER_UE_STATUS: u16 = 0x04;
pub const AER_UE_MASK: u16 = 0x08;
pub const AER_UE_SEVERITY: u16 = 0x0c;
pub const AER_CE_STATUS: u16 = 0x10;
pub const AER_CE_MASK: u16 = 0x14;
pub const AER_CAP_CTRL: u16 = 0x18;
pub const AER_HEADER_LOG: u16 = 0x1c;
pub const AER_ROOT: u16 = 0x2c;
pub const AER_PREFIX_LOG: u16 = 0x38;
/// The spec's RW(S) bits of the UE Mask and Severity registers (DLP .. poisoned TLP egress
/// blocked) and of the CE Mask register.
pub const AER_UE_BITS: u32 = 0x07ff_f030;
pub const AER_CE_BITS: u32 = 0x0000_f1c1;

/// An extended capability found on the host, and what the guest gets of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtCapInfo {
    pub id: u16,
    pub version: u8,
    pub offset: u16,
    /// Bytes covered by the policy (exposed: the registers defined; hidden: the bytes
    /// that read 0).
    pub len: u16,
    /// None if exposed; else why it is hidden.
    pub hidden: Option<&'static str>,
}

pub fn name(id: u16) -> &'static str {
    match id {
        0x0000 => "Null",
        AER => "Advanced Error Reporting",
        VC | VC9 => "Virtual Channel",
        DSN => "Device Serial Number",
        POWER_BUDGET => "Power Budgeting",
        0x0005 => "Root Complex Link Declaration",
        0x0006 => "Root Complex Internal Link Control",
        0x0007 => "Root Complex Event Collector",
        MFVC => "Multi-Function VC",
        0x000a => "RCRB Header",
        VSEC => "Vendor Specific",
        0x000c => "Configuration Access Correlation",
        ACS => "Access Control Services",
        ARI => "Alternative Routing-ID",
        ATS => "Address Translation Services",
        SRIOV => "SR-IOV",
        0x0011 => "MR-IOV",
        MCAST => "Multicast",
        PRI => "Page Request Interface",
        REBAR => "Resizable BAR",
        0x0016 => "Dynamic Power Allocation",
        TPH => "TPH Requester",
        LTR => "Latency Tolerance Reporting",
        SECPCI => "Secondary PCI Express",
        0x001a => "PMUX",
        PASID => "PASID",
        0x001c => "LN Requester",
        DPC => "Downstream Port Containment",
        L1SS => "L1 PM Substates",
        PTM => "Precision Time Measurement",
        0x0020 => "M-PCIe",
        0x0021 => "FRS Queueing",
        0x0022 => "Readiness Time Reporting",
        0x0023 => "Designated Vendor-Specific",
        VF_REBAR => "VF Resizable BAR",
        0x0025 => "Data Link Feature",
        0x0026 => "Physical Layer 16 GT/s",
        0x0027 => "Lane Margining",
        0x0028 => "Hierarchy ID",
        0x0029 => "Native PCIe Enclosure",
        0x002a => "Physical Layer 32 GT/s",
        0x002b => "Alternate Protocol",
        0x002c => "System Firmware Intermediary",
        0x002d => "Shadow Functions",
        DOE => "Data Object Exchange",
        _ => "unknown",
    }
}

/// The per-ID decision: Ok(()) to expose (with the register policy of [`define`]),
/// Err(why) to hide.
pub fn decide(id: u16) -> Result<(), &'static str> {
    match id {
        AER | DSN | POWER_BUDGET | VSEC | LTR | SECPCI | L1SS | PTM => Ok(()),
        VC | VC9 | MFVC => Err("virtual channel arbitration is fabric configuration"),
        ACS => Err("ACS controls are the host's isolation boundary"),
        ARI => Err("ARI changes function numbering"),
        ATS => Err("ATS must be enabled by the host IOMMU driver"),
        SRIOV | 0x0011 => Err("creating virtual functions belongs to the host"),
        MCAST => Err("multicast is fabric configuration"),
        PRI => Err("page requests need host IOMMU support"),
        PASID => Err("PASIDs need host IOMMU support"),
        REBAR | VF_REBAR => Err("BAR resizing is not emulated"),
        DPC => Err("containment belongs to the host"),
        DOE => Err("a mailbox to device firmware"),
        TPH => Err("steering tags name host CPUs"),
        0x0000 => Err("null capability"),
        _ => Err("not emulated"),
    }
}

fn le32(c: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]])
}

/// Walk the host's extended capability list in `host_cfg` (more than 256 bytes; a
/// 256-byte space has none): (id, version, offset) in chain order, and warnings.
pub fn walk(host_cfg: &[u8]) -> (Vec<(u16, u8, u16)>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let size = host_cfg.len();
    if size <= CONFIG_SPACE_SIZE {
        return (out, warnings);
    }
    let mut seen = vec![false; size / 4];
    let mut ptr = CONFIG_SPACE_SIZE;
    // Each entry takes a distinct dword: the loop check bounds this too.
    for _ in 0..(size - CONFIG_SPACE_SIZE) / 4 {
        let h = le32(host_cfg, ptr);
        if h == 0 {
            if ptr != CONFIG_SPACE_SIZE {
                warnings.push(format!("extended capability pointer leads to an empty header at {ptr:#x}; chain cut"));
            }
            break;
        }
        if h == !0 {
            warnings.push(format!("extended capability header at {ptr:#x} reads all-ones; chain cut"));
            break;
        }
        seen[ptr / 4] = true;
        out.push(((h & 0xffff) as u16, ((h >> 16) & 0xf) as u8, ptr as u16));
        let next = (h >> 20) as usize;
        if next == 0 {
            break;
        }
        let why = if next < CONFIG_SPACE_SIZE {
            "points into conventional config space"
        } else if next % 4 != 0 {
            "is not dword aligned"
        } else if next + 4 > size {
            "is past the end of config space"
        } else if seen[next / 4] {
            "loops"
        } else {
            ptr = next;
            continue;
        };
        warnings.push(format!("extended capability pointer {next:#x} at {ptr:#x} {why}; chain cut"));
        break;
    }
    (out, warnings)
}

/// The host's PCI Express capability's maximum link width (0 if there is none).
fn link_width(host_cfg: &[u8]) -> u16 {
    let (found, _) = super::walk(host_cfg);
    match found.iter().find(|&&(id, _)| id == CAP_ID_EXP) {
        Some(&(_, off)) if off as usize + 0x10 <= host_cfg.len() => {
            ((le32(host_cfg, off as usize + 0x0c) >> 4) & 0x3f) as u16
        }
        _ => 0,
    }
}

/// The length the spec gives an extended capability (at least its header), from its own
/// registers where they say.
fn spec_len(id: u16, host_cfg: &[u8], off: u16, room: u16) -> u16 {
    let o = off as usize;
    let reg = |r: usize| if o + r + 4 <= host_cfg.len() && r + 4 <= room as usize { le32(host_cfg, o + r) } else { 0 };
    match id {
        AER => {
            if reg(AER_CAP_CTRL as usize) & (1 << 11) != 0 {
                0x48
            } else {
                0x38
            }
        }
        // Port VC Capability 1 bits 2:0: extended VC count, 12 bytes of resource registers each.
        VC | VC9 | MFVC => 0x1c + 0x0c * (reg(4) & 7) as u16,
        DSN | PTM | TPH => 0x0c,
        POWER_BUDGET | L1SS | PRI => 0x10,
        VSEC => ((reg(4) >> 20) as u16).max(8),
        ACS | ARI | ATS | LTR | PASID => 8,
        SRIOV => 0x40,
        MCAST => 0x30,
        // Number of resizable BARs in the first control register, bits 7:5.
        REBAR | VF_REBAR => 4 + 8 * ((reg(8) >> 5) & 7).clamp(1, 6) as u16,
        SECPCI => 0x0c + (2 * link_width(host_cfg)).next_multiple_of(4),
        DPC => 0x0c,
        DOE => 0x18,
        _ => 4,
    }
}

/// The minimum room an exposed capability needs for the registers xenpt defines.
fn min_len(id: u16) -> u16 {
    match id {
        AER => AER_ROOT,
        DSN | PTM | SECPCI => 0x0c,
        POWER_BUDGET | L1SS => 0x10,
        _ => 8,
    }
}

/// Define the register policy of an exposed capability at `off`, `len` bytes (header excluded:
/// the chain linking defines it).
fn define(cfg: &mut ConfigSpace, host_cfg: &[u8], id: u16, off: u16, len: u16) {
    cfg.define_host_ro(off + 4, len - 4);
    if id != AER {
        return;
    }
    let host = |r: u16| le32(host_cfg, (off + r) as usize);
    cfg.define(off + AER_UE_MASK, 4, Reg::scratch(host(AER_UE_MASK), AER_UE_BITS));
    cfg.define(off + AER_UE_SEVERITY, 4, Reg::scratch(host(AER_UE_SEVERITY), AER_UE_BITS));
    cfg.define(off + AER_CE_MASK, 4, Reg::scratch(host(AER_CE_MASK), AER_CE_BITS));
    // Cap & Control: ECRC generation (6), ECRC check (8) and multiple header recording
    // (10) enables are emulated, writable where the bit below says the device has it;
    // First Error Pointer and the capability bits read the host.
    let cc = host(AER_CAP_CTRL);
    let enables = 0x0540;
    let writable = enables & ((cc & 0x02a0) << 1);
    cfg.define(off + AER_CAP_CTRL, 4, Reg { value: cc & enables, emu: enables, writable, w1c: 0 });
    // Root Error Command / Status / Error Source ID exist on root ports only.
    if len > AER_ROOT {
        cfg.hide(off + AER_ROOT, (len - AER_ROOT).min(AER_PREFIX_LOG - AER_ROOT));
    }
}

/// Decide and define every extended capability's policy; link the exposed chain.
/// Records the capabilities in `layout.ext` and problems in `layout.warnings`.
pub fn build(cfg: &mut ConfigSpace, host_cfg: &[u8], layout: &mut CapLayout) {
    let size = cfg.size().min(host_cfg.len());
    if size <= CONFIG_SPACE_SIZE {
        return;
    }
    let (found, warnings) = walk(&host_cfg[..size]);
    layout.warnings.extend(warnings);
    let offsets: Vec<u16> = found.iter().map(|&(_, _, o)| o).collect();
    // Without a PCI Express capability, guests (and lspci) never look past 0x100.
    let pcie = layout.caps.iter().any(|c| c.id == CAP_ID_EXP && c.hidden.is_none());
    for &(id, version, off) in &found {
        // A capability never extends past the next one (by address) or the end of the space.
        let room = offsets.iter().copied().filter(|&o| o > off).min().unwrap_or(size as u16) - off;
        let len = spec_len(id, host_cfg, off, room).min(room);
        let hidden = match decide(id) {
            _ if !pcie => Some("the PCI Express capability is hidden: the guest sees a conventional function"),
            Ok(()) if len >= min_len(id) => None,
            Ok(()) => Some("overlaps the next capability or the end of config space"),
            Err(why) => Some(why),
        };
        layout.ext.push(ExtCapInfo { id, version, offset: off, len, hidden });
    }
    for c in &layout.ext {
        match c.hidden {
            Some(_) => cfg.hide(c.offset, c.len),
            None => define(cfg, host_cfg, c.id, c.offset, c.len),
        }
    }
    let exposed: Vec<&ExtCapInfo> = layout.ext.iter().filter(|c| c.hidden.is_none()).collect();
    let header = |id: u16, version: u8, next: u16| id as u32 | (version as u32) << 16 | (next as u32) << 20;
    match exposed.first() {
        None => cfg.define(CONFIG_SPACE_SIZE as u16, 4, Reg::constant(0)),
        Some(c) if c.offset as usize != CONFIG_SPACE_SIZE => {
            cfg.define(CONFIG_SPACE_SIZE as u16, 4, Reg::constant(header(0, 0, c.offset)))
        }
        Some(_) => {}
    }
    for (i, c) in exposed.iter().enumerate() {
        let next = exposed.get(i + 1).map(|n| n.offset).unwrap_or(0);
        cfg.define(c.offset, 4, Reg::constant(header(c.id, c.version, next)));
    }
}

impl CapLayout {
    /// The extended chain the guest sees, (id, offset) in order: the exposed capabilities,
    /// behind a Null header at 0x100 when the host's capability there is hidden.
    pub fn guest_ext_chain(&self) -> Vec<(u16, u16)> {
        let mut v: Vec<(u16, u16)> = self.ext.iter().filter(|c| c.hidden.is_none()).map(|c| (c.id, c.offset)).collect();
        if v.first().is_some_and(|&(_, o)| o as usize != CONFIG_SPACE_SIZE) {
            v.insert(0, (0, CONFIG_SPACE_SIZE as u16));
        }
        v
    }
}

#[cfg(test)]
mod tests;
