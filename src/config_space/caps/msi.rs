//! MSI (cap ID 0x05): the register side. Every register is emulated: Message Control
//! (Enable and Multiple Message Enable writable; the capable count, 64-bit and per-vector
//! masking flags read-only from the host), address, data and the mask bits. The guest's
//! mask never reaches the device (XSA-129): xenpt turns it into Xen binds/unbinds. Pending
//! bits read the host. The behaviour lives in crate::msi::plain.

use crate::config_space::{ConfigSpace, Hook, Reg};

pub const CONTROL_OFFSET: u16 = 2;
pub const ADDR_LO_OFFSET: u16 = 4;
pub const CONTROL_ENABLE_BIT: u16 = 0x0001;
pub const CONTROL_MMC_MASK: u16 = 0x000e;
pub const CONTROL_MME_MASK: u16 = 0x0070;
pub const CONTROL_64BIT_BIT: u16 = 0x0080;
pub const CONTROL_PVM_BIT: u16 = 0x0100;

/// Where each register of one MSI capability sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiLayout {
    pub cap_offset: u16,
    pub is_64: bool,
    pub per_vector_mask: bool,
    /// log2 of the vectors the function can do (Multiple Message Capable).
    pub mmc: u8,
}

impl MsiLayout {
    pub fn from_control(cap_offset: u16, ctrl: u16) -> Self {
        MsiLayout {
            cap_offset,
            is_64: ctrl & CONTROL_64BIT_BIT != 0,
            per_vector_mask: ctrl & CONTROL_PVM_BIT != 0,
            mmc: (((ctrl & CONTROL_MMC_MASK) >> 1) as u8).min(5),
        }
    }
    pub fn size(&self) -> u16 {
        10 + if self.is_64 { 4 } else { 0 } + if self.per_vector_mask { 10 } else { 0 }
    }
    pub fn addr_hi(&self) -> Option<u16> {
        self.is_64.then_some(self.cap_offset + 8)
    }
    pub fn data(&self) -> u16 {
        self.cap_offset + if self.is_64 { 12 } else { 8 }
    }
    pub fn mask(&self) -> Option<u16> {
        self.per_vector_mask.then_some(self.data() + 4)
    }
    pub fn pending(&self) -> Option<u16> {
        self.per_vector_mask.then_some(self.data() + 8)
    }
    pub fn max_vectors(&self) -> u32 {
        1 << self.mmc
    }
}

pub fn define(cfg: &mut ConfigSpace, l: &MsiLayout) {
    let off = l.cap_offset;
    let ro = (l.mmc as u32) << 1
        | if l.is_64 { CONTROL_64BIT_BIT as u32 } else { 0 }
        | if l.per_vector_mask { CONTROL_PVM_BIT as u32 } else { 0 };
    // MME may only be written up to MMC; the engine's mask cannot express "<= MMC", so the
    // MSI logic clamps it (and the guest reads back what is in effect).
    cfg.define(
        off + CONTROL_OFFSET,
        2,
        Reg { value: ro, emu: !0, writable: (CONTROL_ENABLE_BIT | CONTROL_MME_MASK) as u32, w1c: 0 },
    );
    cfg.define(off + ADDR_LO_OFFSET, 4, Reg::scratch(0, 0xffff_fffc));
    if let Some(hi) = l.addr_hi() {
        cfg.define(hi, 4, Reg::scratch(0, !0));
    }
    cfg.define(l.data(), 2, Reg::scratch(0, 0xffff));
    cfg.define(l.data() + 2, 2, Reg::constant(0)); // extended message data: not offered
    if let (Some(m), Some(p)) = (l.mask(), l.pending()) {
        let vectors = if l.max_vectors() >= 32 { !0 } else { (1u32 << l.max_vectors()) - 1 };
        cfg.define(m, 4, Reg::scratch(0, vectors));
        cfg.define(p, 4, Reg { value: 0, emu: !vectors, writable: 0, w1c: 0 }); // host pending bits
    }
    let mut d = off & !3;
    while d < off + l.size() {
        cfg.set_hook(d, Hook::Msi);
        d += 4;
    }
}
