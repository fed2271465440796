//! Applies [`MapOp`]s through the Xen boundary, keeping an exact record of what Xen has
//! mapped: only successful operations change it, so the record never lies. The record also
//! keeps the order things were made in, so that [`Mapper::teardown`] removes them in
//! reverse.

use super::plan::{diff, MapOp, MmioRun, Plan, PortRun, Trap};
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

/// One thing the mapper made in Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Made {
    Mmio(MmioRun),
    Pio(PortRun),
    Trap(Trap),
}

pub struct Mapper {
    domid: DomId,
    server: IoservId,
    current: Plan,
    /// Exactly what `current` holds, in the order it was made. A run partly removed keeps
    /// its place (its remaining pieces take it).
    made: Vec<Made>,
    pub stats: MapStats,
}

impl Mapper {
    pub fn new(domid: DomId, server: IoservId) -> Self {
        Mapper { domid, server, current: Plan::default(), made: Vec::new(), stats: MapStats::default() }
    }

    fn record(&mut self, m: Made) {
        match m {
            Made::Mmio(r) => self.current.mmio.push(r),
            Made::Pio(p) => self.current.pio.push(p),
            Made::Trap(t) => self.current.traps.push(t),
        }
        self.made.push(m);
    }

    fn forget_mmio(&mut self, r: MmioRun) {
        remove_mmio(&mut self.current.mmio, r);
        let made = std::mem::take(&mut self.made);
        for m in made {
            match m {
                Made::Mmio(x) => self.made.extend(cut(x, r).into_iter().map(Made::Mmio)),
                other => self.made.push(other),
            }
        }
    }

    fn forget(&mut self, m: Made) {
        match m {
            Made::Mmio(r) => return self.forget_mmio(r),
            Made::Pio(p) => self.current.pio.retain(|x| *x != p),
            Made::Trap(t) => self.current.traps.retain(|x| *x != t),
        }
        self.made.retain(|x| *x != m);
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
                        self.record(Made::Mmio(undo));
                        if self.memory_mapping(xen, undo, false).is_ok() {
                            self.forget_mmio(undo);
                        }
                    }
                    if !add && done > 0 {
                        // Those frames are gone from Xen: forget them, so the record stays
                        // exact and nothing is unmapped twice.
                        self.forget_mmio(MmioRun { nr: done, ..r });
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
            if let Err(e) = self.run(xen, op) {
                self.stats.failures += 1;
                errors.push(e);
            }
        }
        self.sort();
        errors
    }

    /// Remove everything, last made first: the reverse of bring-up (the MSI-X traps before
    /// the mappings they sit in, a ROM enabled or a BAR moved later before what firmware
    /// mapped at decode-on). Every removal is attempted whatever failed before it; what
    /// fails stays recorded (and mapped in Xen: a later apply or teardown retries it) and
    /// its error is returned. A run is removed in one sequence of calls, lowest gfn first.
    pub fn teardown(&mut self, xen: &mut dyn Xen) -> Vec<XenError> {
        let mut errors = Vec::new();
        for m in self.made.clone().into_iter().rev() {
            let op = match m {
                Made::Mmio(r) => MapOp::UnmapMmio(r),
                Made::Pio(p) => MapOp::UnmapPio(p),
                Made::Trap(t) => MapOp::Untrap(t),
            };
            if let Err(e) = self.run(xen, op) {
                self.stats.failures += 1;
                errors.push(e);
            }
        }
        self.sort();
        errors
    }

    /// One operation, with the record updated on success (and on partial success).
    fn run(&mut self, xen: &mut dyn Xen, op: MapOp) -> Result<(), XenError> {
        match op {
            MapOp::UnmapMmio(r) => self.memory_mapping(xen, r, false).map(|_| self.forget_mmio(r)),
            // A gfn an earlier unmap failed to free is still mapped to another frame:
            // mapping over it would crash the guest. Skipped, and retried at the next
            // apply, which retries that unmap first.
            MapOp::MapMmio(r) if self.current.mmio.iter().any(|o| o.gfn < r.gfn + r.nr && r.gfn < o.gfn + o.nr) => {
                Err(XenError::new(STILL_MAPPED, self.domid, crate::xen::Errno::EBUSY))
            }
            MapOp::MapMmio(r) => self.memory_mapping(xen, r, true).map(|_| self.record(Made::Mmio(r))),
            MapOp::UnmapPio(p) => {
                self.stats.ioport_mapping_calls += 1;
                xen.ioport_mapping(self.domid, p.gport, p.mport, p.nr, false).map(|_| self.forget(Made::Pio(p)))
            }
            MapOp::MapPio(p) => {
                self.stats.ioport_mapping_calls += 1;
                xen.ioport_mapping(self.domid, p.gport, p.mport, p.nr, true).map(|_| self.record(Made::Pio(p)))
            }
            MapOp::Untrap(t) => {
                self.stats.trap_calls += 1;
                xen.unmap_io_range(self.domid, self.server, IoRange::memory(t.start, t.len))
                    .map(|_| self.forget(Made::Trap(t)))
            }
            MapOp::Trap(t) => {
                self.stats.trap_calls += 1;
                xen.map_io_range(self.domid, self.server, IoRange::memory(t.start, t.len))
                    .map(|_| self.record(Made::Trap(t)))
            }
        }
    }

    fn sort(&mut self) {
        self.current.mmio.sort();
        self.current.pio.sort();
        self.current.traps.sort();
    }
}

/// What is left of `x` once the frames of `r` are removed (none, one or two pieces).
fn cut(x: MmioRun, r: MmioRun) -> Vec<MmioRun> {
    let (s, e) = (x.gfn, x.gfn + x.nr);
    let (rs, re) = (r.gfn, r.gfn + r.nr);
    if re <= s || rs >= e {
        return vec![x];
    }
    let mut out = Vec::new();
    if s < rs {
        out.push(MmioRun { gfn: s, mfn: x.mfn, nr: rs - s });
    }
    if re < e {
        out.push(MmioRun { gfn: re, mfn: x.mfn + (re - s), nr: e - re });
    }
    out
}

/// Remove the frames of `r` from a run list (splitting runs as needed).
fn remove_mmio(runs: &mut Vec<MmioRun>, r: MmioRun) {
    *runs = runs.drain(..).flat_map(|x| cut(x, r)).collect();
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

    #[test]
    fn a_run_partly_removed_keeps_its_place_in_the_teardown_order() {
        let sim = Sim::default();
        let d = sim.create_domain(GuestKind::Hvm, 1, 4096);
        let mut x = sim.xen();
        x.iomem_permission(d, 0x100, 0x200, true).unwrap();
        let mut m = Mapper::new(d, 0);
        let a = MmioRun { gfn: 0x8000, mfn: 0x100, nr: 100 };
        let b = MmioRun { gfn: 0x7000, mfn: 0x200, nr: 1 };
        assert!(m.apply(&mut x, &Plan { mmio: vec![a], ..Default::default() }).is_empty());
        assert!(m.apply(&mut x, &Plan { mmio: vec![a, b], ..Default::default() }).is_empty());
        // The first 16 frames of `a` go; what is left of it is still older than `b`.
        let a2 = MmioRun { gfn: 0x8010, mfn: 0x110, nr: 84 };
        assert!(m.apply(&mut x, &Plan { mmio: vec![a2, b], ..Default::default() }).is_empty());
        assert_eq!(m.current().mmio, [b, a2], "the record is sorted");
        let from = sim.op_count();
        assert!(m.teardown(&mut x).is_empty());
        let ops: Vec<String> = sim.ops()[from..].iter().map(|o| o.detail.clone()).collect();
        assert_eq!(
            ops,
            [
                "gfn 0x7000 mfn 0x200 nr 1 remove",
                "gfn 0x8010 mfn 0x110 nr 84 remove",
                "gfn 0x8050 mfn 0x150 nr 20 remove"
            ],
            "newest first, not lowest gfn first"
        );
        assert!(sim.p2m_mmio(d).is_empty());
        assert_eq!(m.current(), &Plan::default());
        assert!(m.made.is_empty());
    }
}
