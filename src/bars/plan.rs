//! The pure mapping planner: from the guest's committed BAR addresses, the virtual decode
//! bits and the host BARs, the exact set of direct mappings and trapped ranges; and the
//! minimal unmap-then-map difference between two such sets.

use crate::pci::{PAGE_SHIFT, PAGE_SIZE};

/// A run of guest frames mapped onto host frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MmioRun {
    pub gfn: u64,
    pub mfn: u64,
    pub nr: u64,
}

/// A run of guest ports mapped onto host ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRun {
    pub gport: u32,
    pub mport: u32,
    pub nr: u32,
}

/// A guest-physical byte range registered with xenpt's ioreq server (MSI-X table/PBA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Trap {
    pub start: u64,
    pub len: u64,
}

/// Everything that should be mapped (or trapped) for the device at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub mmio: Vec<MmioRun>,
    pub pio: Vec<PortRun>,
    pub traps: Vec<Trap>,
}

/// One step of moving Xen from one plan to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    UnmapMmio(MmioRun),
    MapMmio(MmioRun),
    UnmapPio(PortRun),
    MapPio(PortRun),
    Untrap(Trap),
    Trap(Trap),
}

/// Parts of `a` not identically present in `b` (same gfn *and* same mfn).
fn subtract_mmio(a: &[MmioRun], b: &[MmioRun]) -> Vec<MmioRun> {
    let mut out = Vec::new();
    for r in a {
        let mut pieces = vec![(r.gfn, r.gfn + r.nr)];
        for o in b.iter().filter(|o| o.gfn.wrapping_sub(o.mfn) == r.gfn.wrapping_sub(r.mfn)) {
            let (os, oe) = (o.gfn, o.gfn + o.nr);
            pieces = pieces
                .into_iter()
                .flat_map(|(s, e)| {
                    if oe <= s || os >= e {
                        vec![(s, e)]
                    } else {
                        let mut v = Vec::new();
                        if s < os {
                            v.push((s, os));
                        }
                        if oe < e {
                            v.push((oe, e));
                        }
                        v
                    }
                })
                .collect();
        }
        out.extend(pieces.into_iter().map(|(s, e)| MmioRun { gfn: s, mfn: r.mfn + (s - r.gfn), nr: e - s }));
    }
    out
}

/// The operations that take Xen from `cur` to `want`: everything to remove first, then
/// everything to add, so a guest frame is never mapped over a different mapping (real
/// Xen crashes the guest for that).
pub fn diff(cur: &Plan, want: &Plan) -> Vec<MapOp> {
    let mut ops = Vec::new();
    ops.extend(cur.traps.iter().filter(|t| !want.traps.contains(t)).map(|&t| MapOp::Untrap(t)));
    ops.extend(subtract_mmio(&cur.mmio, &want.mmio).into_iter().map(MapOp::UnmapMmio));
    ops.extend(cur.pio.iter().filter(|p| !want.pio.contains(p)).map(|&p| MapOp::UnmapPio(p)));
    ops.extend(subtract_mmio(&want.mmio, &cur.mmio).into_iter().map(MapOp::MapMmio));
    ops.extend(want.pio.iter().filter(|p| !cur.pio.contains(p)).map(|&p| MapOp::MapPio(p)));
    ops.extend(want.traps.iter().filter(|t| !cur.traps.contains(t)).map(|&t| MapOp::Trap(t)));
    ops
}

/// A memory BAR as the planner sees it.
#[derive(Clone, Copy, Debug)]
pub struct MemBarInput {
    /// Guest address committed for the BAR (None: not a valid address).
    pub guest: u64,
    /// Guest-visible size (page-rounded power of two).
    pub guest_size: u64,
    pub host_base: u64,
    pub host_size: u64,
    /// Byte ranges inside the BAR that stay trapped (MSI-X table, PBA).
    pub holes: [(u64, u64); 2],
}

/// Page-granular runs and traps for one memory BAR mapped at its guest address.
pub fn plan_mem_bar(b: &MemBarInput, plan: &mut Plan) {
    let pages = b.host_size.div_ceil(PAGE_SIZE);
    let gfn0 = b.guest >> PAGE_SHIFT;
    let mfn0 = b.host_base >> PAGE_SHIFT;
    let mut hole_pages: Vec<(u64, u64)> = b
        .holes
        .iter()
        .filter(|&&(_, len)| len > 0)
        .map(|&(off, len)| (off >> PAGE_SHIFT, (off + len).div_ceil(PAGE_SIZE).min(pages)))
        .collect();
    hole_pages.sort();
    // Merge overlapping/adjacent holes (table and PBA often share or neighbour a page).
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in hole_pages {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut p = 0;
    for &(s, e) in &merged {
        if s > p {
            plan.mmio.push(MmioRun { gfn: gfn0 + p, mfn: mfn0 + p, nr: s - p });
        }
        if e > s {
            plan.traps.push(Trap { start: b.guest + (s << PAGE_SHIFT), len: (e - s) << PAGE_SHIFT });
        }
        p = p.max(e);
    }
    if p < pages {
        plan.mmio.push(MmioRun { gfn: gfn0 + p, mfn: mfn0 + p, nr: pages - p });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(gfn: u64, mfn: u64, nr: u64) -> MmioRun {
        MmioRun { gfn, mfn, nr }
    }

    #[test]
    fn msix_table_and_pba_pages_stay_trapped() {
        let mut p = Plan::default();
        let b = MemBarInput {
            guest: 0xf000_0000,
            guest_size: 0x4000,
            host_base: 0xfe00_0000,
            host_size: 0x4000,
            holes: [(0x2000, 0x400), (0x3000, 8)],
        };
        plan_mem_bar(&b, &mut p);
        assert_eq!(p.mmio, vec![run(0xf0000, 0xfe000, 2)]);
        assert_eq!(p.traps, vec![Trap { start: 0xf000_2000, len: 0x2000 }]);
    }

    #[test]
    fn hole_in_the_middle_splits_the_bar() {
        let mut p = Plan::default();
        let b = MemBarInput {
            guest: 0x1000_0000,
            guest_size: 0x10000,
            host_base: 0xa000_0000,
            host_size: 0x10000,
            holes: [(0x8000, 0x800), (0, 0)],
        };
        plan_mem_bar(&b, &mut p);
        assert_eq!(p.mmio, vec![run(0x10000, 0xa0000, 8), run(0x10009, 0xa0009, 7)]);
        assert_eq!(p.traps, vec![Trap { start: 0x1000_8000, len: 0x1000 }]);
    }

    #[test]
    fn diff_unmaps_before_it_maps_and_keeps_what_is_unchanged() {
        let cur = Plan { mmio: vec![run(0x100, 0x900, 4)], ..Default::default() };
        let want = Plan { mmio: vec![run(0x102, 0x902, 4)], ..Default::default() };
        let ops = diff(&cur, &want);
        assert_eq!(ops, vec![MapOp::UnmapMmio(run(0x100, 0x900, 2)), MapOp::MapMmio(run(0x104, 0x904, 2))]);
        assert!(diff(&want, &want).is_empty(), "no-op rewrite costs nothing");
    }

    #[test]
    fn same_gfn_to_a_different_mfn_is_unmapped_first() {
        let cur = Plan { mmio: vec![run(0x100, 0x900, 1)], ..Default::default() };
        let want = Plan { mmio: vec![run(0x100, 0xa00, 1)], ..Default::default() };
        assert_eq!(
            diff(&cur, &want),
            vec![MapOp::UnmapMmio(run(0x100, 0x900, 1)), MapOp::MapMmio(run(0x100, 0xa00, 1))]
        );
    }
}
