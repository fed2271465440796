//! MSI-X (cap ID 0x11), 12 bytes: the register side. Message Control is emulated (Enable
//! and Function Mask writable, Table Size read-only from the host); Table and PBA
//! offset/BIR are emulated read-only copies of the host's. The behaviour (latching,
//! binding) lives in crate::msi.

use crate::config_space::{ConfigSpace, Hook, Reg};

pub const LEN: u16 = 12;
pub const CONTROL_OFFSET: u16 = 2;
pub const TABLE_OFFSET: u16 = 4;
pub const PBA_OFFSET: u16 = 8;
pub const CONTROL_ENABLE_BIT: u16 = 0x8000;
pub const CONTROL_MASKALL_BIT: u16 = 0x4000;
pub const CONTROL_SIZE_MASK: u16 = 0x07ff;
pub const BIR_MASK: u32 = 0x7;
pub const ENTRY_SIZE: u64 = 16;
pub const ENTRY_VECTOR_CTRL_OFFSET: u64 = 12;
pub const ENTRY_MASKED_BIT: u32 = 1;

/// Where the host's MSI-X table and PBA are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    pub cap_offset: u16,
    pub entries: u16,
    pub table_bar: u8,
    pub table_offset: u64,
    pub pba_bar: u8,
    pub pba_offset: u64,
}

impl MsixLayout {
    pub fn table_len(&self) -> u64 {
        self.entries as u64 * ENTRY_SIZE
    }
    pub fn pba_len(&self) -> u64 {
        (self.entries as u64).div_ceil(64) * 8
    }
}

fn dword(cfg: &[u8], off: u16) -> u32 {
    let o = off as usize;
    u32::from_le_bytes([cfg[o], cfg[o + 1], cfg[o + 2], cfg[o + 3]])
}

pub fn layout(host_cfg: &[u8], off: u16) -> Option<MsixLayout> {
    if off as usize + LEN as usize > 256 {
        return None;
    }
    let ctrl = u16::from_le_bytes([host_cfg[off as usize + 2], host_cfg[off as usize + 3]]);
    let table = dword(host_cfg, off + TABLE_OFFSET);
    let pba = dword(host_cfg, off + PBA_OFFSET);
    let (table_bar, pba_bar) = ((table & BIR_MASK) as u8, (pba & BIR_MASK) as u8);
    if table_bar > 5 || pba_bar > 5 {
        return None;
    }
    Some(MsixLayout {
        cap_offset: off,
        entries: (ctrl & CONTROL_SIZE_MASK) + 1,
        table_bar,
        table_offset: (table & !BIR_MASK) as u64,
        pba_bar,
        pba_offset: (pba & !BIR_MASK) as u64,
    })
}

pub fn define(cfg: &mut ConfigSpace, host_cfg: &[u8], off: u16) {
    let ctrl = u16::from_le_bytes([host_cfg[off as usize + 2], host_cfg[off as usize + 3]]) as u32;
    cfg.define(
        off + CONTROL_OFFSET,
        2,
        Reg {
            value: ctrl & CONTROL_SIZE_MASK as u32,
            emu: !0,
            writable: (CONTROL_ENABLE_BIT | CONTROL_MASKALL_BIT) as u32,
            w1c: 0,
        },
    );
    cfg.define(off + TABLE_OFFSET, 4, Reg::constant(dword(host_cfg, off + TABLE_OFFSET)));
    cfg.define(off + PBA_OFFSET, 4, Reg::constant(dword(host_cfg, off + PBA_OFFSET)));
    cfg.set_hook(off, Hook::MsixControl);
}
