//! The MSI-X state machine: the guest's table copy, the latch rules, and the effects
//! (bind, unbind, host control) that follow from each guest write.
//!
//! Rules (QEMU's, which PV-on-HVM Linux depends on, checked against Xen's msixtbl):
//! - address/data writes only latch; they take effect when the function is enabled and
//!   unmasked (for every entry the guest wrote, bound masked if its mask bit is set), or
//!   on the entry's own mask->unmask edge;
//! - once a vector is bound with a gtable, Xen's msixtbl intercept sees the table first:
//!   plain mask/unmask of bound entries never reaches xenpt, so the mask bit here is only
//!   "last seen". Consequences: any forwarded vector-control write with the mask clear is a
//!   commit point if something is latched (Xen forwards an unmask exactly when address or
//!   data changed, and xenpt may never have seen the mask that preceded it); and a re-bind
//!   of a vector that already has a pirq asks Xen to unmask only when xenpt itself just saw
//!   the guest unmask, otherwise it leaves Xen's mask state alone;
//! - a mask write that does reach xenpt for a bound entry (Xen did not intercept it) is
//!   applied the only way Xen offers: unbind, keeping the pirq; the next unmask binds again;
//! - disabling MSI-X releases every vector; a later enable binds again what was written;
//! - indices and sizes are checked: out-of-table offsets read all-ones and drop writes
//!   (XSA-164).

use super::MsiMessage;
use crate::config_space::caps::msix::{
    MsixLayout, CONTROL_ENABLE_BIT, CONTROL_MASKALL_BIT, ENTRY_MASKED_BIT, ENTRY_SIZE,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsixEntry {
    pub msg: MsiMessage,
    /// Vector control as last written by the guest (reset: masked).
    pub ctrl: u32,
    /// The guest has written address or data at least once.
    pub written: bool,
    /// Latched address/data differ from what is bound.
    pub dirty: bool,
    /// Bound in Xen (as far as xenpt's effects succeeded).
    pub bound: bool,
}

impl MsixEntry {
    pub fn masked(&self) -> bool {
        self.ctrl & ENTRY_MASKED_BIT != 0
    }
}

/// What the device must do after a guest MSI-X write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixEffect {
    /// Map a pirq for the entry if it has none, then bind (or re-bind in place). `unmask`
    /// asks Xen to unmask the vector (UNMASKED); without it a fresh MSI-X binding starts
    /// masked and a re-binding keeps Xen's current mask.
    Bind { entry: u16, msg: MsiMessage, unmask: bool },
    /// Unbind one vector but keep its pirq (Xen's only way to mask from outside).
    Unbind { entry: u16 },
    /// Unbind and unmap every vector.
    ReleaseAll,
    /// Write the host's MSI-X control (Enable, Function Mask).
    HostControl { enable: bool, maskall: bool },
}

pub struct Msix {
    pub layout: MsixLayout,
    pub entries: Vec<MsixEntry>,
    pub enabled: bool,
    pub maskall: bool,
}

impl Msix {
    pub fn new(layout: MsixLayout) -> Self {
        let e = MsixEntry { ctrl: ENTRY_MASKED_BIT, ..Default::default() };
        Msix { layout, entries: vec![e; layout.entries as usize], enabled: false, maskall: false }
    }

    fn active(&self) -> bool {
        self.enabled && !self.maskall
    }

    /// Commit entry `i`. A fresh binding is unmasked iff the guest's last write says so (Xen
    /// never intercepted an entry without a pirq, so xenpt saw every write to it); a
    /// re-binding unmasks only when `saw_unmask`.
    fn bind(&mut self, i: usize, saw_unmask: bool) -> MsixEffect {
        let e = &mut self.entries[i];
        let unmask = if e.bound { saw_unmask } else { !e.masked() };
        e.dirty = false;
        e.bound = true;
        MsixEffect::Bind { entry: i as u16, msg: e.msg, unmask }
    }

    /// The guest wrote Message Control.
    pub fn control_write(&mut self, ctrl: u16) -> Vec<MsixEffect> {
        let enable = ctrl & CONTROL_ENABLE_BIT != 0;
        let maskall = ctrl & CONTROL_MASKALL_BIT != 0;
        if enable == self.enabled && maskall == self.maskall {
            return Vec::new(); // enable while enabled, disable while disabled: nothing (XSA-157)
        }
        let was_enabled = self.enabled;
        self.enabled = enable;
        self.maskall = maskall;
        let mut fx = Vec::new();
        if was_enabled && !enable {
            fx.push(MsixEffect::HostControl { enable: false, maskall });
            fx.push(MsixEffect::ReleaseAll);
            for e in &mut self.entries {
                e.bound = false;
                e.dirty = e.written;
            }
            return fx;
        }
        if self.active() {
            for i in 0..self.entries.len() {
                let e = self.entries[i];
                if e.written && (e.dirty || !e.bound) {
                    fx.push(self.bind(i, false));
                }
            }
        }
        fx.push(MsixEffect::HostControl { enable, maskall });
        fx
    }

    /// A bind effect failed: the entry is not bound; try again on its next commit point.
    pub fn bind_failed(&mut self, entry: u16) {
        if let Some(e) = self.entries.get_mut(entry as usize) {
            e.bound = false;
            e.dirty = true;
        }
    }

    /// Guest read of the table at `offset` (from the table start).
    pub fn table_read(&self, offset: u64, size: u32) -> Option<u64> {
        let (i, field) = self.index(offset, size)?;
        let e = &self.entries[i];
        let dwords = [e.msg.addr as u32, (e.msg.addr >> 32) as u32, e.msg.data, e.ctrl];
        let f = field as usize / 4;
        Some(match size {
            8 => dwords[f] as u64 | (dwords[f + 1] as u64) << 32,
            _ => dwords[f] as u64,
        })
    }

    fn index(&self, offset: u64, size: u32) -> Option<(usize, u64)> {
        if !matches!(size, 4 | 8) || offset % size as u64 != 0 || offset >= self.layout.table_len() {
            return None;
        }
        Some(((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE))
    }

    /// Guest write of the table. `None` if the access is malformed or out of the table.
    pub fn table_write(&mut self, offset: u64, size: u32, value: u64) -> Option<Vec<MsixEffect>> {
        let (i, field) = self.index(offset, size)?;
        let mut fx = Vec::new();
        let words: Vec<(u64, u32)> = match size {
            8 => vec![(field, value as u32), (field + 4, (value >> 32) as u32)],
            _ => vec![(field, value as u32)],
        };
        for (f, v) in words {
            let e = &mut self.entries[i];
            match f {
                0 | 4 | 8 => {
                    let old = e.msg;
                    match f {
                        0 => e.msg.addr = (e.msg.addr & !0xffff_ffff) | v as u64,
                        4 => e.msg.addr = (e.msg.addr & 0xffff_ffff) | (v as u64) << 32,
                        _ => e.msg.data = v,
                    }
                    e.written = true;
                    if e.msg != old || !e.bound {
                        e.dirty = true;
                    }
                }
                _ => {
                    e.ctrl = v & ENTRY_MASKED_BIT;
                    let (masked, bound, pending) = (e.masked(), e.bound, e.written && (e.dirty || !e.bound));
                    if !self.active() {
                        continue;
                    }
                    if !masked && pending {
                        fx.push(self.bind(i, true));
                    } else if !masked && bound {
                        // Bound, nothing latched, and Xen did not handle the unmask itself
                        // (no msixtbl registration): re-bind in place, unmasked.
                        fx.push(self.bind(i, true));
                    } else if masked && bound {
                        self.entries[i].bound = false;
                        self.entries[i].dirty = true;
                        fx.push(MsixEffect::Unbind { entry: i as u16 });
                    }
                }
            }
        }
        Some(fx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(entries: u16) -> MsixLayout {
        MsixLayout { cap_offset: 0xb0, entries, table_bar: 0, table_offset: 0x2000, pba_bar: 0, pba_offset: 0x3000 }
    }

    fn program(m: &mut Msix, i: u64, addr: u32, data: u32) -> Vec<MsixEffect> {
        let mut fx = m.table_write(i * 16, 4, addr as u64).unwrap();
        fx.extend(m.table_write(i * 16 + 4, 4, 0).unwrap());
        fx.extend(m.table_write(i * 16 + 8, 4, data as u64).unwrap());
        fx
    }

    #[test]
    fn linux_bringup_binds_written_entries_masked_at_enable() {
        let mut m = Msix::new(layout(4));
        assert_eq!(
            m.control_write(CONTROL_ENABLE_BIT | CONTROL_MASKALL_BIT),
            vec![MsixEffect::HostControl { enable: true, maskall: true }]
        );
        assert!(program(&mut m, 0, 0xfee0_0000, 0x41).is_empty(), "latched only");
        assert!(program(&mut m, 1, 0xfee0_0000, 0x42).is_empty());
        let fx = m.control_write(CONTROL_ENABLE_BIT);
        let msg = |d| MsiMessage { addr: 0xfee0_0000, data: d };
        assert_eq!(
            fx,
            vec![
                MsixEffect::Bind { entry: 0, msg: msg(0x41), unmask: false },
                MsixEffect::Bind { entry: 1, msg: msg(0x42), unmask: false },
                MsixEffect::HostControl { enable: true, maskall: false },
            ]
        );
    }

    #[test]
    fn address_change_while_unmasked_waits_for_the_next_unmask() {
        let mut m = Msix::new(layout(2));
        program(&mut m, 0, 0xfee0_0000, 0x41);
        m.table_write(12, 4, 0).unwrap();
        m.control_write(CONTROL_ENABLE_BIT);
        assert!(m.entries[0].bound);
        assert!(program(&mut m, 0, 0xfee0_2000, 0x51).is_empty(), "no bind while unmasked");
        // Xen's msixtbl handles the mask of the bound entry itself; only the unmask after
        // the change is forwarded, with no visible edge here.
        let fx = m.table_write(12, 4, 0).unwrap();
        let msg = MsiMessage { addr: 0xfee0_2000, data: 0x51 };
        assert_eq!(fx, vec![MsixEffect::Bind { entry: 0, msg, unmask: true }]);
    }

    #[test]
    fn second_affinity_change_commits_without_seeing_the_mask() {
        // Linux __pci_write_msi_msg: mask, write, unmask. With msixtbl only the unmask after a
        // change reaches xenpt: every such unmask must commit (review finding: lost IRQs).
        let mut m = Msix::new(layout(1));
        program(&mut m, 0, 0xfee0_0000, 0x41);
        m.table_write(12, 4, 0).unwrap();
        m.control_write(CONTROL_ENABLE_BIT);
        for (dest, vec) in [(1u32, 0x51u32), (2, 0x61), (3, 0x71)] {
            program(&mut m, 0, 0xfee0_0000 | dest << 12, vec);
            let fx = m.table_write(12, 4, 0).unwrap();
            let want = MsiMessage { addr: 0xfee0_0000 | (dest as u64) << 12, data: vec };
            assert_eq!(fx, vec![MsixEffect::Bind { entry: 0, msg: want, unmask: true }], "change to dest {dest}");
        }
    }

    #[test]
    fn a_mask_that_reaches_xenpt_unbinds_and_the_unmask_binds_again() {
        let mut m = Msix::new(layout(1));
        program(&mut m, 0, 0xfee0_0000, 0x41);
        m.table_write(12, 4, 0).unwrap();
        let fx = m.control_write(CONTROL_ENABLE_BIT);
        assert!(matches!(fx[0], MsixEffect::Bind { unmask: true, .. }), "fresh bind of an unmasked entry unmasks");
        assert_eq!(m.table_write(12, 4, 1).unwrap(), vec![MsixEffect::Unbind { entry: 0 }]);
        let fx = m.table_write(12, 4, 0).unwrap();
        assert!(matches!(fx[..], [MsixEffect::Bind { entry: 0, unmask: true, .. }]));
    }

    #[test]
    fn rebinding_a_dirty_bound_entry_at_enable_leaves_xens_mask_alone() {
        let mut m = Msix::new(layout(1));
        program(&mut m, 0, 0xfee0_0000, 0x41);
        m.control_write(CONTROL_ENABLE_BIT);
        m.control_write(CONTROL_ENABLE_BIT | CONTROL_MASKALL_BIT);
        program(&mut m, 0, 0xfee0_1000, 0x42);
        let fx = m.control_write(CONTROL_ENABLE_BIT);
        assert!(matches!(fx[0], MsixEffect::Bind { unmask: false, .. }));
    }

    #[test]
    fn xsa_164_out_of_table_index_is_refused() {
        let mut m = Msix::new(layout(2));
        assert_eq!(m.table_write(32, 4, 0xfee0_0000), None);
        assert_eq!(m.table_write(0xfff8, 8, !0), None);
        assert_eq!(m.table_read(32, 4), None);
        assert_eq!(m.table_write(2, 4, 0), None, "misaligned");
        assert_eq!(m.table_write(0, 2, 0), None, "2-byte access");
        assert!(m.entries.iter().all(|e| !e.written));
    }

    #[test]
    fn xsa_157_enable_while_enabled_and_disable_while_disabled_do_nothing() {
        let mut m = Msix::new(layout(2));
        assert!(m.control_write(0).is_empty());
        m.control_write(CONTROL_ENABLE_BIT);
        assert!(m.control_write(CONTROL_ENABLE_BIT).is_empty());
    }

    #[test]
    fn disable_then_enable_binds_again() {
        let mut m = Msix::new(layout(2));
        program(&mut m, 1, 0xfee0_0000, 0x33);
        m.control_write(CONTROL_ENABLE_BIT);
        let fx = m.control_write(0);
        assert_eq!(fx, vec![MsixEffect::HostControl { enable: false, maskall: false }, MsixEffect::ReleaseAll]);
        let fx = m.control_write(CONTROL_ENABLE_BIT);
        assert!(matches!(fx[0], MsixEffect::Bind { entry: 1, .. }));
    }

    #[test]
    fn eight_byte_accesses_write_two_fields() {
        let mut m = Msix::new(layout(1));
        m.table_write(0, 8, 0x1_fee0_1000).unwrap();
        assert_eq!(m.entries[0].msg.addr, 0x1_fee0_1000);
        m.table_write(8, 8, 0x0000_0000_0000_0055).unwrap();
        assert_eq!(m.entries[0].msg.data, 0x55);
        assert!(!m.entries[0].masked(), "the upper dword cleared the mask bit");
        assert_eq!(m.table_read(0, 8), Some(0x1_fee0_1000));
    }
}
