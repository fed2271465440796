//! PCI Express (cap ID 0x10). Endpoints only (root ports, switch ports and bridges are
//! refused). Informational registers read the host, read-only; the control registers are
//! virtual so the guest never changes MPS, MRRS, ASPM or error reporting on the device,
//! and cannot start an FLR (DEVCAP's FLR bit reads 0): resets belong to the toolstack.

use crate::config_space::{ConfigSpace, Reg};

pub const FLAGS_OFFSET: u16 = 2;
pub const DEVCAP_OFFSET: u16 = 4;
pub const DEVCTL_OFFSET: u16 = 8;
pub const DEVSTA_OFFSET: u16 = 10;
pub const LNKCAP_OFFSET: u16 = 12;
pub const LNKCTL_OFFSET: u16 = 16;
pub const LNKSTA_OFFSET: u16 = 18;
pub const DEVCAP2_OFFSET: u16 = 0x24;
pub const DEVCTL2_OFFSET: u16 = 0x28;
pub const LNKCTL2_OFFSET: u16 = 0x30;
pub const DEVCAP_FLR_BIT: u32 = 1 << 28;

/// Length of the capability for an endpoint, None for ports and bridges.
pub fn len(host_cfg: &[u8], off: u16) -> Option<u16> {
    let flags = u16::from_le_bytes([host_cfg[off as usize + 2], host_cfg[off as usize + 3]]);
    let version = flags & 0xf;
    let port_type = (flags >> 4) & 0xf;
    match port_type {
        0 | 1 => Some(if version >= 2 { 0x3c } else { 0x14 }), // endpoint, legacy endpoint
        9 => Some(if version >= 2 { 0x3c } else { 0x0c }),     // RC integrated endpoint
        10 => Some(if version >= 2 { 0x3c } else { 0x14 }),    // RC event collector
        _ => None,
    }
}

fn host16(c: &[u8], o: u16) -> u32 {
    u16::from_le_bytes([c[o as usize], c[o as usize + 1]]) as u32
}

fn host32(c: &[u8], o: u16) -> u32 {
    u32::from_le_bytes([c[o as usize], c[o as usize + 1], c[o as usize + 2], c[o as usize + 3]])
}

pub fn define(cfg: &mut ConfigSpace, host_cfg: &[u8], off: u16, len: u16) {
    cfg.define_host_ro(off + 2, len - 2);
    cfg.define(off + FLAGS_OFFSET, 2, Reg::constant(host16(host_cfg, off + FLAGS_OFFSET)));
    cfg.define(off + DEVCAP_OFFSET, 4, Reg::constant(host32(host_cfg, off + DEVCAP_OFFSET) & !DEVCAP_FLR_BIT));
    // DEVCTL: virtual, starting from the host's value; bit 15 (initiate FLR) read-only 0.
    cfg.define(off + DEVCTL_OFFSET, 2, Reg::scratch(host16(host_cfg, off + DEVCTL_OFFSET) & 0x7fff, 0x7fff));
    // DEVSTA: host, error bits W1C passed through.
    cfg.define(off + DEVSTA_OFFSET, 2, Reg { value: 0, emu: 0, writable: 0, w1c: 0x000f });
    if len >= 0x14 {
        cfg.define(off + LNKCTL_OFFSET, 2, Reg::scratch(host16(host_cfg, off + LNKCTL_OFFSET), 0x0fc3));
        // LNKSTA: host; Link Bandwidth Management / Autonomous Bandwidth Status (bits 14,
        // 15, RW1C where implemented) passed through like the other status bits.
        cfg.define(off + LNKSTA_OFFSET, 2, Reg { value: 0, emu: 0, writable: 0, w1c: 0xc000 });
        // Slot and root registers of an endpoint read 0.
        if len > 0x14 {
            cfg.hide(off + 0x14, 0x10);
        }
    }
    if len >= 0x3c {
        cfg.define(off + DEVCTL2_OFFSET, 2, Reg::scratch(host16(host_cfg, off + DEVCTL2_OFFSET), 0xffff));
        cfg.define(off + LNKCTL2_OFFSET, 2, Reg::scratch(host16(host_cfg, off + LNKCTL2_OFFSET), 0xffff));
        cfg.hide(off + 0x34, 8); // slot capabilities 2 / control 2 / status 2
    }
}
