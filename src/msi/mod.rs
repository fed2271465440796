//! Guest interrupt programming: MSI messages, gflags, and the MSI-X table state machine.

pub mod msix;
pub mod plain;

use crate::xen::gflags;

/// An MSI message as the guest wrote it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub addr: u64,
    pub data: u32,
}

impl MsiMessage {
    /// The guest vector (data[7:0]).
    pub fn gvec(&self) -> u8 {
        self.data as u8
    }

    /// True if the low address is in the x86 interrupt window 0xFEExxxxx.
    pub fn is_x86_interrupt(&self) -> bool {
        (self.addr as u32) >> 20 == 0xfee
    }

    /// Xen's "pirq MSI" format written by PV-on-HVM guests (QEMU's `xen_is_pirq_msi`):
    /// vector 0, the pirq in the destination ID (bits 7:0) and the upper address (bits 31:8).
    /// Returns the pirq the guest asks for.
    pub fn xen_pirq(&self) -> Option<u32> {
        (self.gvec() == 0 && self.is_x86_interrupt())
            .then_some(((self.addr >> 32) as u32 & 0xffff_ff00) | ((self.addr as u32 >> 12) & 0xff))
    }

    /// XEN_DOMCTL_bind_pt_irq gflags for this message (destination ID, redirection hint,
    /// destination mode, delivery mode, trigger mode, and UNMASKED to bind unmasked).
    /// None for a message outside 0xFEExxxxx, which Xen cannot deliver.
    pub fn gflags(&self, unmasked: bool) -> Option<u32> {
        // A non-zero upper address is only meaningful in Xen's pirq format; otherwise it
        // would need extended destination IDs, which Xen's gflags cannot carry.
        if !self.is_x86_interrupt() || (self.addr >> 32 != 0 && self.xen_pirq().is_none()) {
            return None;
        }
        let a = self.addr as u32;
        let d = self.data;
        let mut g = (a >> 12) & gflags::DEST_ID_MASK;
        g |= ((a >> 3) & 1) << 8;
        g |= ((a >> 2) & 1) << 9;
        g |= ((d >> 8) & 7) << 12;
        g |= ((d >> 15) & 1) << 15;
        if unmasked {
            g |= gflags::UNMASKED;
        }
        Some(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(addr: u64, data: u32) -> MsiMessage {
        MsiMessage { addr, data }
    }

    #[test]
    fn gflags_plain_message_is_zero_and_gvec_is_data_low_byte() {
        assert_eq!(m(0xfee0_0000, 0x30).gflags(false), Some(0));
        assert_eq!(m(0xfee0_0000, 0x41).gvec(), 0x41);
    }

    #[test]
    fn gflags_destination_id_from_address_bits_19_12() {
        assert_eq!(m(0xfee0_5000, 0x30).gflags(false), Some(5));
        assert_eq!(m(0xfeef_f000, 0).gflags(false), Some(0xff));
        for bit in 0..8 {
            assert_eq!(m(0xfee0_0000 | 1 << (12 + bit), 0).gflags(false), Some(1 << bit), "address bit {}", 12 + bit);
        }
    }

    #[test]
    fn gflags_redirection_hint_from_address_bit_3() {
        assert_eq!(m(0xfee0_0008, 0).gflags(false), Some(gflags::RH_MASK));
    }

    #[test]
    fn gflags_destination_mode_from_address_bit_2() {
        assert_eq!(m(0xfee0_0004, 0).gflags(false), Some(gflags::DM_MASK));
    }

    #[test]
    fn gflags_delivery_mode_from_data_bits_10_8() {
        assert_eq!(m(0xfee0_0000, 0x100).gflags(false), Some(0x1000), "lowest priority");
        assert_eq!(m(0xfee0_0000, 0x700).gflags(false), Some(gflags::DELIV_MASK));
    }

    #[test]
    fn gflags_trigger_mode_from_data_bit_15_and_not_the_level_bit() {
        assert_eq!(m(0xfee0_0000, 0x8000).gflags(false), Some(gflags::TRIG_MASK));
        assert_eq!(m(0xfee0_0000, 0x4000).gflags(false), Some(0), "data bit 14 (level) is not carried");
    }

    #[test]
    fn gflags_unmasked_only_when_asked() {
        assert_eq!(m(0xfee0_0000, 0).gflags(true), Some(gflags::UNMASKED));
        assert_eq!(m(0xfee0_0000, 0).gflags(false).map(|g| g & gflags::UNMASKED), Some(0));
    }

    #[test]
    fn pv_on_hvm_pirq_messages_carry_the_pirq() {
        // pirq 0x1_2345: dest ID 0x45, upper address 0x0001_2300.
        let m = MsiMessage { addr: 0x0001_2300_fee4_5000, data: 0 };
        assert_eq!(m.xen_pirq(), Some(0x1_2345));
        assert!(m.gflags(false).is_some(), "accepted despite the upper address");
        assert_eq!(MsiMessage { addr: 0xfee3_7000, data: 0 }.xen_pirq(), Some(0x37));
        assert_eq!(MsiMessage { addr: 0xfee3_7000, data: 0x41 }.xen_pirq(), None, "a real vector is not a pirq");
        assert_eq!(MsiMessage { addr: 0x1_fee0_0000, data: 0x41 }.gflags(false), None, "no extended destination");
    }

    #[test]
    fn messages_outside_the_interrupt_window_are_refused() {
        assert_eq!(MsiMessage { addr: 0xfed0_0000, data: 0x30 }.gflags(false), None);
        assert_eq!(MsiMessage { addr: 0, data: 0 }.gflags(true), None);
    }
}
