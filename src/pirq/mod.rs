//! The pirq lifecycle: one owner for every pirq this process maps into the guest, with
//! its state, and the ordered teardown (unbind, then unmap) that leaves nothing behind
//! (the XSA-360/395 lessons). A pirq is never unmapped while bound, and a live vector is
//! re-bound in place, never unmapped to be re-bound.

use std::collections::BTreeMap;

use crate::msi::MsiMessage;
use crate::pci::Sbdf;
use crate::xen::{gflags, DomId, PirqMap, PtIrq, Xen, XenError};

#[derive(Debug, thiserror::Error)]
pub enum PirqError {
    #[error("MSI message address {addr:#x} is outside the x86 interrupt window 0xFEExxxxx; vector not bound")]
    BadMessage { addr: u64 },
    #[error("Xen granted {granted} of the {wanted} MSI vectors asked for")]
    Short { wanted: u32, granted: u32 },
    #[error("{vector:?} has no pirq")]
    NotMapped { vector: Vector },
    #[error(transparent)]
    Xen(#[from] XenError),
}

/// Which interrupt source of the device a pirq serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Vector {
    Msix(u16),
    /// Vector i of the MSI block.
    Msi(u8),
    /// The INTx line (its GSI mapped into the guest, bound to the guest slot and pin).
    Intx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PirqState {
    pub pirq: u32,
    /// The binding Xen holds, if bound.
    pub bound: Option<PtIrq>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PirqStats {
    pub maps: u64,
    pub unmaps: u64,
    pub binds: u64,
    pub unbinds: u64,
    pub failures: u64,
}

pub struct PirqTable {
    domid: DomId,
    host: Sbdf,
    vectors: BTreeMap<Vector, PirqState>,
    pub stats: PirqStats,
}

impl PirqTable {
    pub fn new(domid: DomId, host: Sbdf) -> Self {
        PirqTable { domid, host, vectors: BTreeMap::new(), stats: PirqStats::default() }
    }

    pub fn get(&self, v: Vector) -> Option<&PirqState> {
        self.vectors.get(&v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vector, &PirqState)> {
        self.vectors.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// Map (if needed) and bind one MSI-X entry. `table_base` is the host BAR base from
    /// sysfs (XSA-337). `unmask` adds UNMASKED (a fresh MSI-X binding otherwise starts
    /// masked; a re-binding keeps Xen's mask). A PV-on-HVM guest's pirq message asks for a
    /// specific pirq, which is mapped (a different pirq mapped before is released first).
    /// A failed bind of a freshly mapped pirq unmaps it again.
    pub fn bind_msix(
        &mut self,
        xen: &mut dyn Xen,
        entry: u16,
        table_base: u64,
        msg: MsiMessage,
        unmask: bool,
        gtable: u64,
    ) -> Result<u32, PirqError> {
        let gf = msg.gflags(unmask).ok_or(PirqError::BadMessage { addr: msg.addr })?;
        let v = Vector::Msix(entry);
        let wanted = msg.xen_pirq();
        if let (Some(w), Some(st)) = (wanted, self.vectors.get(&v)) {
            if st.pirq != w {
                self.release(xen, v)?;
            }
        }
        let fresh = !self.vectors.contains_key(&v);
        if fresh {
            self.stats.maps += 1;
            let m = xen
                .map_pirq(self.domid, PirqMap::Msix { sbdf: self.host, entry, table_base, pirq: wanted })
                .inspect_err(|_| self.stats.failures += 1)?;
            self.vectors.insert(v, PirqState { pirq: m.pirq, bound: None });
        }
        let st = self.vectors[&v];
        let bind = PtIrq::Msi { pirq: st.pirq, gvec: msg.gvec(), gflags: gf, gtable };
        self.stats.binds += 1;
        match xen.bind_pt_irq(self.domid, bind) {
            Ok(()) => {
                let stored = PtIrq::Msi { pirq: st.pirq, gvec: msg.gvec(), gflags: gf & !gflags::UNMASKED, gtable };
                self.vectors.insert(v, PirqState { pirq: st.pirq, bound: Some(stored) });
                Ok(st.pirq)
            }
            Err(e) => {
                self.stats.failures += 1;
                if fresh {
                    self.stats.unmaps += 1;
                    if xen.unmap_pirq(self.domid, st.pirq).is_ok() {
                        self.vectors.remove(&v);
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Map the MSI block: one vector (a PV-on-HVM guest may ask for its pirq) or a
    /// multi-MSI block of `count` contiguous pirqs. Xen must grant the whole block.
    pub fn map_msi(&mut self, xen: &mut dyn Xen, count: u32, wanted: Option<u32>) -> Result<(), PirqError> {
        let req = if count == 1 {
            PirqMap::Msi { sbdf: self.host, pirq: wanted }
        } else {
            PirqMap::MultiMsi { sbdf: self.host, count }
        };
        self.stats.maps += 1;
        let m = xen.map_pirq(self.domid, req).inspect_err(|_| self.stats.failures += 1)?;
        if m.count != count {
            self.stats.failures += 1;
            for i in 0..m.count {
                let _ = xen.unmap_pirq(self.domid, m.pirq + i);
            }
            return Err(PirqError::Short { wanted: count, granted: m.count });
        }
        for i in 0..count {
            self.vectors.insert(Vector::Msi(i as u8), PirqState { pirq: m.pirq + i, bound: None });
        }
        Ok(())
    }

    /// Bind (or re-bind in place) MSI vector `index`: `gvec = base | index`.
    pub fn bind_msi(&mut self, xen: &mut dyn Xen, index: u32, msg: MsiMessage, unmask: bool) -> Result<(), PirqError> {
        let gf = msg.gflags(unmask).ok_or(PirqError::BadMessage { addr: msg.addr })?;
        let v = Vector::Msi(index as u8);
        let st = *self.vectors.get(&v).ok_or(PirqError::NotMapped { vector: v })?;
        let bind = PtIrq::Msi { pirq: st.pirq, gvec: msg.gvec() | index as u8, gflags: gf, gtable: 0 };
        self.stats.binds += 1;
        xen.bind_pt_irq(self.domid, bind).inspect_err(|_| self.stats.failures += 1)?;
        let stored =
            PtIrq::Msi { pirq: st.pirq, gvec: msg.gvec() | index as u8, gflags: gf & !gflags::UNMASKED, gtable: 0 };
        self.vectors.insert(v, PirqState { bound: Some(stored), ..st });
        Ok(())
    }

    /// Map the device's GSI into the guest (the pirq number is the GSI, as libxl and QEMU
    /// do) and bind it to guest bus 0, `slot`, INTx `intx` (0 = INTA). A failed bind unmaps
    /// the GSI again.
    pub fn bind_intx(&mut self, xen: &mut dyn Xen, gsi: u32, slot: u8, intx: u8) -> Result<u32, PirqError> {
        self.stats.maps += 1;
        let m = xen
            .map_pirq(self.domid, PirqMap::Gsi { gsi, pirq: Some(gsi) })
            .inspect_err(|_| self.stats.failures += 1)?;
        let bind = PtIrq::PciIntx { pirq: m.pirq, bus: 0, device: slot, intx };
        self.stats.binds += 1;
        if let Err(e) = xen.bind_pt_irq(self.domid, bind) {
            self.stats.failures += 1;
            self.stats.unmaps += 1;
            let _ = xen.unmap_pirq(self.domid, m.pirq);
            return Err(e.into());
        }
        self.vectors.insert(Vector::Intx, PirqState { pirq: m.pirq, bound: Some(bind) });
        Ok(m.pirq)
    }

    /// Unbind one vector and keep its pirq: how a mask reaches Xen when its msixtbl did not
    /// handle it (Xen leaves an unbound vector guest-masked).
    pub fn unbind(&mut self, xen: &mut dyn Xen, v: Vector) -> Result<(), XenError> {
        let Some(st) = self.vectors.get(&v).copied() else { return Ok(()) };
        if let Some(b) = st.bound {
            self.stats.unbinds += 1;
            xen.unbind_pt_irq(self.domid, b).inspect_err(|_| self.stats.failures += 1)?;
            self.vectors.insert(v, PirqState { bound: None, ..st });
        }
        Ok(())
    }

    /// Unbind (if bound) and unmap one vector.
    pub fn release(&mut self, xen: &mut dyn Xen, v: Vector) -> Result<(), XenError> {
        let Some(st) = self.vectors.get(&v).copied() else { return Ok(()) };
        if let Some(b) = st.bound {
            self.stats.unbinds += 1;
            xen.unbind_pt_irq(self.domid, b).inspect_err(|_| self.stats.failures += 1)?;
            self.vectors.insert(v, PirqState { bound: None, ..st });
        }
        self.stats.unmaps += 1;
        xen.unmap_pirq(self.domid, st.pirq).inspect_err(|_| self.stats.failures += 1)?;
        self.vectors.remove(&v);
        Ok(())
    }

    /// Unbind every bound vector, then unmap every pirq. Continues past errors and
    /// returns them all: teardown must get as far as it can.
    pub fn release_all(&mut self, xen: &mut dyn Xen) -> Vec<XenError> {
        self.release_matching(xen, |_| true)
    }

    /// As [`Self::release_all`] for the vectors `which` selects only: disabling MSI-X
    /// releases the MSI-X vectors and leaves the INTx line (and MSI) alone.
    pub fn release_matching(&mut self, xen: &mut dyn Xen, which: impl Fn(Vector) -> bool) -> Vec<XenError> {
        let mut errors = Vec::new();
        let keys: Vec<Vector> = self.vectors.keys().copied().filter(|&v| which(v)).collect();
        for &v in &keys {
            let st = self.vectors[&v];
            if let Some(b) = st.bound {
                self.stats.unbinds += 1;
                match xen.unbind_pt_irq(self.domid, b) {
                    Ok(()) => {
                        self.vectors.insert(v, PirqState { bound: None, ..st });
                    }
                    Err(e) => {
                        self.stats.failures += 1;
                        errors.push(e);
                    }
                }
            }
        }
        for v in keys {
            let st = self.vectors[&v];
            if st.bound.is_some() {
                continue; // never unmap a pirq Xen still has bound
            }
            self.stats.unmaps += 1;
            match xen.unmap_pirq(self.domid, st.pirq) {
                Ok(()) => {
                    self.vectors.remove(&v);
                }
                Err(e) => {
                    self.stats.failures += 1;
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// The guest moved the MSI-X table: Xen keeps the gtable of the first bind, so unbind
    /// every bound vector and bind it again with the new table address. Pirqs stay mapped.
    /// Unbinding leaves a vector guest-masked, so vectors for which `unmasked` says the guest
    /// had them unmasked are bound with UNMASKED. Returns the errors and the vectors that
    /// ended up unbound.
    pub fn rebind_gtable(
        &mut self,
        xen: &mut dyn Xen,
        gtable: u64,
        unmasked: impl Fn(Vector) -> bool,
    ) -> (Vec<XenError>, Vec<Vector>) {
        let mut errors = Vec::new();
        let mut lost = Vec::new();
        let bound: Vec<(Vector, PirqState, PtIrq)> = self
            .vectors
            .iter()
            .filter(|(v, _)| matches!(v, Vector::Msix(_)))
            .filter_map(|(&v, &st)| st.bound.map(|b| (v, st, b)))
            .collect();
        for &(v, st, b) in &bound {
            self.stats.unbinds += 1;
            match xen.unbind_pt_irq(self.domid, b) {
                Ok(()) => {
                    self.vectors.insert(v, PirqState { bound: None, ..st });
                }
                Err(e) => errors.push(e),
            }
        }
        for (v, st, b) in bound {
            let PtIrq::Msi { pirq, gvec, gflags: gf, .. } = b else { continue };
            if self.vectors[&v].bound.is_some() {
                continue;
            }
            let um = if unmasked(v) { gflags::UNMASKED } else { 0 };
            self.stats.binds += 1;
            match xen.bind_pt_irq(self.domid, PtIrq::Msi { pirq, gvec, gflags: gf | um, gtable }) {
                Ok(()) => {
                    let nb = PtIrq::Msi { pirq, gvec, gflags: gf, gtable };
                    self.vectors.insert(v, PirqState { bound: Some(nb), ..st });
                }
                Err(e) => {
                    errors.push(e);
                    lost.push(v);
                }
            }
        }
        (errors, lost)
    }
}
