//! The MSI state machine. The guest's registers are plain emulated state; after every
//! guest write to the capability the device hands the current registers to
//! [`MsiState::sync`], which compares them with what is in effect and returns the effects:
//! - Enable set: map the block (one vector, or a multi-MSI block of 2^MME), bind every
//!   vector the guest has not masked as `gvec = base | i`, then set the host Enable and
//!   MME; a vector whose mask bit is set stays unbound (Xen's only masking tool from here);
//! - address/data changed while enabled: re-bind every bound vector in place (never an
//!   unmap/map of a live vector);
//! - a mask bit set: unbind that vector (keeping its pirq); cleared: bind it unmasked;
//! - MME changed while enabled: disable, then enable with the new count;
//! - Enable cleared: host Enable off, unbind and unmap everything.
//!
//! Enable while enabled and disable while disabled change nothing (XSA-157).

use super::MsiMessage;
use crate::config_space::caps::msi::MsiLayout;

/// The guest-visible MSI registers that matter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiRegs {
    pub enable: bool,
    /// log2 of the vectors enabled (Multiple Message Enable), already clamped to MMC.
    pub mme: u8,
    pub msg: MsiMessage,
    pub mask: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiEffect {
    /// Map `count` vectors (a multi-MSI block when count > 1).
    Map { count: u32, msg: MsiMessage },
    /// Bind vector `index` with `gvec = base | index` (re-bind in place if bound).
    Bind { index: u32, msg: MsiMessage, unmask: bool },
    /// Unbind vector `index`, keeping its pirq.
    Unbind { index: u32 },
    /// Set the host's Enable and MME.
    HostControl { enable: bool, mme: u8 },
    /// Unbind and unmap every vector.
    ReleaseAll,
}

#[derive(Clone, Debug, Default)]
pub struct MsiState {
    pub layout: Option<MsiLayout>,
    /// What is in effect.
    pub regs: MsiRegs,
    /// Vectors currently bound (bit i = vector i).
    pub bound: u32,
}

impl MsiState {
    pub fn new(layout: MsiLayout) -> Self {
        MsiState { layout: Some(layout), regs: MsiRegs::default(), bound: 0 }
    }

    fn count(mme: u8) -> u32 {
        1 << mme
    }

    fn enable(&mut self, new: MsiRegs, fx: &mut Vec<MsiEffect>) {
        let count = Self::count(new.mme);
        fx.push(MsiEffect::Map { count, msg: new.msg });
        for i in 0..count {
            if new.mask & (1 << i) == 0 {
                fx.push(MsiEffect::Bind { index: i, msg: new.msg, unmask: true });
                self.bound |= 1 << i;
            }
        }
        fx.push(MsiEffect::HostControl { enable: true, mme: new.mme });
    }

    fn disable(&mut self, fx: &mut Vec<MsiEffect>) {
        fx.push(MsiEffect::HostControl { enable: false, mme: 0 });
        fx.push(MsiEffect::ReleaseAll);
        self.bound = 0;
    }

    /// Bring what is in effect in line with the guest's registers.
    pub fn sync(&mut self, new: MsiRegs) -> Vec<MsiEffect> {
        let old = self.regs;
        let mut fx = Vec::new();
        match (old.enable, new.enable) {
            (false, false) => {}
            (true, false) => self.disable(&mut fx),
            (false, true) => self.enable(new, &mut fx),
            (true, true) if new.mme != old.mme => {
                self.disable(&mut fx);
                self.enable(new, &mut fx);
            }
            (true, true) => {
                let count = Self::count(new.mme);
                let msg_changed = new.msg != old.msg;
                for i in 0..count {
                    let bit = 1 << i;
                    let (was_bound, masked) = (self.bound & bit != 0, new.mask & bit != 0);
                    match (was_bound, masked) {
                        (true, true) => {
                            fx.push(MsiEffect::Unbind { index: i });
                            self.bound &= !bit;
                        }
                        (false, false) => {
                            fx.push(MsiEffect::Bind { index: i, msg: new.msg, unmask: true });
                            self.bound |= bit;
                        }
                        (true, false) if msg_changed => {
                            fx.push(MsiEffect::Bind { index: i, msg: new.msg, unmask: false })
                        }
                        _ => {}
                    }
                }
            }
        }
        self.regs = new;
        fx
    }

    /// A (re-)bind of vector `index` was refused (a message Xen cannot deliver) and the
    /// vector unbound: the next message change or unmask binds it again.
    pub fn bind_failed(&mut self, index: u32) {
        self.bound &= !(1 << index);
    }

    /// Mapping or binding failed while enabling: nothing is in effect; the guest must
    /// read MSI as disabled.
    pub fn enable_failed(&mut self) {
        self.regs.enable = false;
        self.bound = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(enable: bool, mme: u8, vector: u32, mask: u32) -> MsiRegs {
        MsiRegs { enable, mme, msg: MsiMessage { addr: 0xfee0_0000, data: vector }, mask }
    }

    #[test]
    fn enable_maps_a_block_and_binds_unmasked_vectors_then_sets_host_enable() {
        let mut s = MsiState::default();
        let fx = s.sync(regs(true, 2, 0x40, 0b0100));
        let msg = MsiMessage { addr: 0xfee0_0000, data: 0x40 };
        assert_eq!(
            fx,
            vec![
                MsiEffect::Map { count: 4, msg },
                MsiEffect::Bind { index: 0, msg, unmask: true },
                MsiEffect::Bind { index: 1, msg, unmask: true },
                MsiEffect::Bind { index: 3, msg, unmask: true },
                MsiEffect::HostControl { enable: true, mme: 2 },
            ]
        );
        assert_eq!(s.bound, 0b1011);
    }

    #[test]
    fn masking_unbinds_and_unmasking_binds_unmasked() {
        let mut s = MsiState::default();
        s.sync(regs(true, 1, 0x40, 0));
        assert_eq!(s.sync(regs(true, 1, 0x40, 0b10)), vec![MsiEffect::Unbind { index: 1 }]);
        let msg = MsiMessage { addr: 0xfee0_0000, data: 0x40 };
        assert_eq!(s.sync(regs(true, 1, 0x40, 0)), vec![MsiEffect::Bind { index: 1, msg, unmask: true }]);
    }

    #[test]
    fn address_change_rebinds_in_place_without_unmapping() {
        let mut s = MsiState::default();
        s.sync(regs(true, 0, 0x40, 0));
        let fx = s.sync(regs(true, 0, 0x51, 0));
        let msg = MsiMessage { addr: 0xfee0_0000, data: 0x51 };
        assert_eq!(fx, vec![MsiEffect::Bind { index: 0, msg, unmask: false }]);
    }

    #[test]
    fn xsa_157_msi_enable_while_enabled_and_disable_while_disabled_do_nothing() {
        let mut s = MsiState::default();
        assert!(s.sync(regs(false, 0, 0x40, 0)).is_empty());
        s.sync(regs(true, 0, 0x40, 0));
        assert!(s.sync(regs(true, 0, 0x40, 0)).is_empty());
    }

    #[test]
    fn changing_the_vector_count_while_enabled_reenables() {
        let mut s = MsiState::default();
        s.sync(regs(true, 0, 0x40, 0));
        let fx = s.sync(regs(true, 1, 0x40, 0));
        assert_eq!(fx[..2], [MsiEffect::HostControl { enable: false, mme: 0 }, MsiEffect::ReleaseAll]);
        assert!(matches!(fx[2], MsiEffect::Map { count: 2, .. }));
    }
}
