//! Power Management (cap ID 0x01), 8 bytes.
//!
//! PMC is read-only and emulated: version, D1/D2 support and DSI from the host; PME
//! support and aux current read 0 (the guest gets no PME). PMCSR: PowerState is virtual
//! (a guest D3 never reaches the device: the toolstack owns resets), No_Soft_Reset reads
//! 1, PME_En virtual, PME_Status virtual W1C. The bridge-support byte and Data read 0.

use crate::config_space::{ConfigSpace, Hook, Reg};

pub const LEN: u16 = 8;
pub const PMC_OFFSET: u16 = 2;
pub const PMCSR_OFFSET: u16 = 4;
pub const PMCSR_POWER_STATE_MASK: u32 = 0x0003;
pub const PMCSR_NO_SOFT_RESET_BIT: u32 = 0x0008;
pub const PMCSR_PME_EN_BIT: u32 = 0x0100;
pub const PMCSR_PME_STATUS_BIT: u32 = 0x8000;

pub fn define(cfg: &mut ConfigSpace, host_cfg: &[u8], off: u16) {
    let pmc = u16::from_le_bytes([host_cfg[off as usize + 2], host_cfg[off as usize + 3]]) as u32;
    cfg.define(off + PMC_OFFSET, 2, Reg::constant(pmc & 0x0627));
    cfg.define(
        off + PMCSR_OFFSET,
        2,
        Reg {
            value: PMCSR_NO_SOFT_RESET_BIT,
            emu: !0,
            writable: PMCSR_POWER_STATE_MASK | PMCSR_PME_EN_BIT,
            w1c: PMCSR_PME_STATUS_BIT,
        },
    );
    cfg.define(off + 6, 2, Reg::constant(0));
    cfg.set_hook(off + PMCSR_OFFSET, Hook::PmCsr);
}
