//! Applies [`MapOp`]s through the Xen boundary, keeping an exact record of what Xen has
//! mapped: only successful operations change it, so the record never lies.

use super::plan::{diff, MapOp, MmioRun, Plan};
use crate::xen::{DomId, IoRange, IoservId, Xen, XenError};

/// Hypercall counters for the console and the budgets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    pub memory_mapping_calls: u64,
    pub ioport_mapping_calls: u64,
    pub trap_calls: u64,
    /// Map/unmap/trap operations that failed (each counted once).
    pub failures: u64,
}

/// The error for a mapping skipped because its gfns are still mapped elsewhere.
const STILL_MAPPED: &str = "memory_mapping (skipped: a gfn is still mapped after a failed unmap)";

pub struct Mapper {
    domid: DomId,
    server: IoservId,
    current: Plan,
    pub stats: MapStats,
}

impl Mapper {
    pub fn new(domid: DomId, server: IoservId) -> Self {
        Mapper { domid, server, current: Plan::default(), stats: MapStats::default() }
    }

    pub fn current(&self) -> &Plan {
        &self.current
    }

    /// `XEN_DOMCTL_memory_mapping`, continuing partial progress (the trait returns the
    /// number of frames done; real Xen's 0 for "all done" is normalised by the backend). On an add failure the
    /// part already added is removed again, so nothing half-mapped is left behind.
    fn memory_mapping(&mut self, xen: &mut dyn Xen, r: MmioRun, add: bool) -> Result<(), XenError> {
        let mut done = 0;
        while done < r.nr {
            self.stats.memory_mapping_calls += 1;
            match xen.memory_mapping(self.domid, r.gfn + done, r.mfn + done, r.nr - done, add) {
                Ok(n) if n > 0 => done += n,
                Ok(_) => return Err(XenError::new("memory_mapping", self.domid, crate::xen::Errno::EINVAL)),
                Err(e) => {
                    // Counted once, by apply(), as a failed operation.
                    if add && done > 0 {
                        // Recorded first: whatever the removal fails to take back stays
                        // known (and is retried at the next apply or teardown).
                        let undo = MmioRun { nr: done, ..r };
                        self.current.mmio.push(undo);
                        if self.memory_mapping(xen, undo, false).is_ok() {
                            remove_mmio(&mut self.current.mmio, undo);
                        }
                    }
                    if !add && done > 0 {
                        // Those frames are gone from Xen: forget them, so the record stays
                        // exact and nothing is unmapped twice.
                        remove_mmio(&mut self.current.mmio, MmioRun { nr: done, ..r });
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Move Xen to `want`. Returns the errors met; what failed is left unmapped (and
    /// recorded as such) and everything else is still applied.
    pub fn apply(&mut self, xen: &mut dyn Xen, want: &Plan) -> Vec<XenError> {
        let mut errors = Vec::new();
        for op in diff(&self.current, want) {
            let res = match op {
                MapOp::UnmapMmio(r) => {
                    self.memory_mapping(xen, r, false).map(|_| remove_mmio(&mut self.current.mmio, r))
                }
                // A gfn an earlier unmap failed to free is still mapped to another frame:
                // mapping over it would crash the guest. Skipped, and retried at the next
                // apply, which retries that unmap first.
                MapOp::MapMmio(r) if self.current.mmio.iter().any(|o| o.gfn < r.gfn + r.nr && r.gfn < o.gfn + o.nr) => {
                    Err(XenError::new(STILL_MAPPED, self.domid, crate::xen::Errno::EBUSY))
                }
                MapOp::MapMmio(r) => self.memory_mapping(xen, r, true).map(|_| self.current.mmio.push(r)),
                MapOp::UnmapPio(p) => {
                    self.stats.ioport_mapping_calls += 1;
                    xen.ioport_mapping(self.domid, p.gport, p.mport, p.nr, false)
                        .map(|_| self.current.pio.retain(|x| *x != p))
                }
                MapOp::MapPio(p) => {
                    self.stats.ioport_mapping_calls += 1;
                    xen.ioport_mapping(self.domid, p.gport, p.mport, p.nr, true).map(|_| self.current.pio.push(p))
                }
                MapOp::Untrap(t) => {
                    self.stats.trap_calls += 1;
                    xen.unmap_io_range(self.domid, self.server, IoRange::memory(t.start, t.len))
                        .map(|_| self.current.traps.retain(|x| *x != t))
                }
                MapOp::Trap(t) => {
                    self.stats.trap_calls += 1;
                    xen.map_io_range(self.domid, self.server, IoRange::memory(t.start, t.len))
                        .map(|_| self.current.traps.push(t))
                }
            };
            if let Err(e) = res {
                self.stats.failures += 1;
                errors.push(e);
            }
        }
        self.current.mmio.sort();
        self.current.pio.sort();
        self.current.traps.sort();
        errors
    }
}

/// Remove the frames of `r` from a run list (splitting runs as needed).
fn remove_mmio(runs: &mut Vec<MmioRun>, r: MmioRun) {
    let mut out = Vec::new();
    for x in runs.drain(..) {
        let (s, e) = (x.gfn, x.gfn + x.nr);
        let (rs, re) = (r.gfn, r.gfn + r.nr);
        if re <= s || rs >= e {
            out.push(x);
            continue;
        }
        if s < rs {
            out.push(MmioRun { gfn: s, mfn: x.mfn, nr: rs - s });
        }
        if re < e {
            out.push(MmioRun { gfn: re, mfn: x.mfn + (re - s), nr: e - re });
        }
    }
    *runs = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::sim::Sim;
    use crate::xen::{Errno, GuestKind};

    #[test]
    fn a_failed_map_counts_one_failure_and_leaves_nothing_recorded() {
        let sim = Sim::default();
        let d = sim.create_domain(GuestKind::Hvm, 1, 4096);
        let mut x = sim.xen();
        x.iomem_permission(d, 0x100, 200, true).unwrap();
        let mut m = Mapper::new(d, 0);
        // 100 frames: a first call maps 64, the continuation fails, the rollback removes 64.
        sim.fail_nth("memory_mapping", 2, Errno::ENOMEM);
        let want = Plan { mmio: vec![MmioRun { gfn: 0x8000, mfn: 0x100, nr: 100 }], ..Default::default() };
        let errors = m.apply(&mut x, &want);
        assert_eq!(errors.len(), 1);
        assert_eq!(m.stats.failures, 1, "one failed operation, counted once");
        assert!(m.current().mmio.is_empty());
        assert!(sim.p2m_mmio(d).is_empty(), "rolled back");
    }
}
