//! BAR mapping on the simulator (issue 4), with the exact Xen operations asserted:
//! - firmware bring-up, OS moves with decode on and off, 32-bit, 64-bit and I/O BARs, a
//!   64-bit BAR moved above 4 GiB half by half, sizing probes and same-value rewrites (zero
//!   hypercalls), ROM enable/disable;
//! - MSI-X layouts of real devices from ../shared/pci-corpus: the table in the middle of a
//!   BAR, the PBA on its own page, table and PBA sharing a page; the trapped pages are
//!   registered with the ioreq server on decode-on, unregistered on decode-off and moved
//!   with the BAR;
//! - a property test: after any sequence of guest config writes Xen's p2m, port map and
//!   trapped ranges equal an independent model of the rules and the mapper's record, no
//!   frame outside the device's own BARs is mapped, no gfn is remapped without an unmap;
//! - fault injection: memory_mapping (and the io-range calls) failing at every step, and
//!   at every pair of steps, leave Xen equal to the mapper's record, and teardown leaves
//!   nothing mapped, also when it follows the fault directly;
//! - teardown removes everything in reverse creation order, goes on past a removal that
//!   fails, reports it and leaves exactly what failed (a second teardown takes it);
//! - XSA-461: a sub-page BAR sharing its page with another device's BAR is refused with an
//!   error naming that device and `pci=resource_alignment`, accepted alone in its page; a
//!   sub-page ROM sharing its page is hidden instead (fake sysfs trees).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use xenpt::bars::plan::MmioRun;
use xenpt::config_space::caps::msix::MsixLayout;
use xenpt::config_space::header::guest_bar_size;
use xenpt::device::{DeviceError, DeviceModel, DeviceOptions};
use xenpt::host::dump::DumpDevice;
use xenpt::host::nvme::{EmulatedNvme, REG_VS};
use xenpt::host::sysfs::SysfsDevice;
use xenpt::host::{BarKind, HostDevice, HostResources};
use xenpt::pci::Sbdf;
use xenpt::runner::StartError;
use xenpt::xen::abi::MEMORY_MAPPING_BATCH;
use xenpt::xen::sim::{Op, Sim, SimXen};
use xenpt::xen::{BufIoreq, DomId, Errno, GuestKind, IoRangeKind, Xen};
use xenpt::Profile;

const PAGE: u64 = 4096;
const NVME_SBDF: Sbdf = Sbdf::new(0, 3, 0, 0);
const NVME_BAR0: u64 = 0xfe00_0000;

const CMD: u32 = 0x04;
const BAR0: u32 = 0x10;
const ROM: u32 = 0x30;
const IO: u32 = 1 << 0;
const MEM: u32 = 1 << 1;
const MASTER: u32 = 1 << 2;

// ---------------------------------------------------------------------------------------
// The rig: one simulated HVM domain, xenpt's ioreq server, a DeviceModel.

struct Rig {
    sim: Sim,
    xen: SimXen,
    domid: DomId,
    dm: DeviceModel,
    res: HostResources,
    nvme: Option<EmulatedNvme>,
    /// Index into the simulator's op record of the first op not yet returned by `ops()`.
    mark: usize,
}

fn corpus_text(prefix: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pci-corpus");
    let mut hits: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpus lives next to the project root)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".lspci")
        })
        .collect();
    hits.sort();
    assert_eq!(hits.len(), 1, "corpus dump {prefix}*.lspci: {hits:?}");
    std::fs::read_to_string(&hits[0]).unwrap()
}

impl Rig {
    /// The emulated NVMe controller (BAR0 16 KiB at 0xfe000000, MSI-X table at 0x2000, PBA
    /// at 0x3000), plugged into the machine and assigned the way `xl pci-attach` does.
    fn nvme() -> Rig {
        Rig::nvme_in(GuestKind::Hvm)
    }

    /// The same, for a guest of the given kind (the profile follows it).
    fn nvme_in(kind: GuestKind) -> Rig {
        let sim = Sim::default();
        let nvme = EmulatedNvme::new(NVME_SBDF, NVME_BAR0, 16);
        sim.add_device(Arc::new(nvme.clone()));
        let domid = sim.create_domain(kind, 1, 1 << 20);
        sim.assign_device(domid, NVME_SBDF).unwrap();
        let xen = sim.xen();
        Rig::build(sim, xen, domid, Box::new(nvme.host()), Some(nvme))
    }

    /// A real device from its corpus dump. The simulated machine does not model it, so the
    /// toolstack's grant of its resources (libxl: every line of sysfs `resource`, ROM
    /// included) is made by hand.
    fn dump(prefix: &str) -> Rig {
        let dev = DumpDevice::from_text(&corpus_text(prefix)).unwrap();
        let res = dev.resources().unwrap();
        let sim = Sim::default();
        let domid = sim.create_domain(GuestKind::Hvm, 1, 1 << 20);
        let mut xen = sim.xen();
        for b in res.bars.iter().flatten().chain(res.rom.iter()) {
            if b.kind == BarKind::Io {
                xen.ioport_permission(domid, b.base as u32, b.size as u32, true).unwrap();
            } else {
                xen.iomem_permission(domid, b.base / PAGE, b.size.div_ceil(PAGE), true).unwrap();
            }
        }
        Rig::build(sim, xen, domid, Box::new(dev), None)
    }

    fn build(sim: Sim, mut xen: SimXen, domid: DomId, host: Box<dyn HostDevice>, nvme: Option<EmulatedNvme>) -> Rig {
        let server = xen.create_ioreq_server(domid, BufIoreq::Off).unwrap();
        xen.map_ioreq_pages(domid, server).unwrap();
        xen.set_ioreq_server_state(domid, server, true).unwrap();
        let pvh = xen.domain_info(domid).unwrap().kind == GuestKind::Pvh;
        let opts = DeviceOptions::new(domid, Sbdf::new(0, 0, 4, 0), if pvh { Profile::Pvh } else { Profile::Hvm });
        let dm = DeviceModel::new(host, server, opts).unwrap();
        let res = dm.resources.clone();
        let mark = sim.op_count();
        Rig { sim, xen, domid, dm, res, nvme, mark }
    }

    fn w(&mut self, reg: u32, size: u32, v: u32) {
        self.dm.config_write(&mut self.xen, reg, size, v);
    }

    fn r(&mut self, reg: u32, size: u32) -> u32 {
        self.dm.config_read(reg, size)
    }

    /// The Xen operations made since the last call, as the simulator prints them.
    fn ops(&mut self) -> Vec<String> {
        let ops = self.sim.ops();
        let out = ops[self.mark..].iter().map(|o| o.to_string()).collect();
        self.mark = ops.len();
        out
    }

    fn p2m(&self) -> Vec<(u64, u64)> {
        self.sim.p2m_mmio(self.domid)
    }

    /// Memory ranges registered with xenpt's ioreq server: (first, last) byte.
    fn traps(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<_> = self
            .sim
            .ioreq_ranges(self.domid)
            .into_iter()
            .filter(|(_, r)| r.kind == IoRangeKind::Memory)
            .map(|(_, r)| (r.start, r.end))
            .collect();
        v.sort();
        v
    }

    /// Xen holds exactly what the mapper's record says; the guest is alive; xenpt never
    /// unmapped a frame that was not there, nor mapped a gfn that was.
    fn check(&self) {
        let cur = self.dm.mapper.current();
        assert_eq!(self.p2m(), pages(&cur.mmio), "Xen's p2m vs the mapper's record");
        let traps: Vec<_> = cur.traps.iter().map(|t| (t.start, t.start + t.len - 1)).collect();
        assert_eq!(self.traps(), traps, "registered io-ranges vs the mapper's record");
        let pio: Vec<_> = cur.pio.iter().map(|p| (p.gport, p.mport, p.nr)).collect();
        assert_eq!(self.sim.ioport_map(self.domid), pio, "Xen's port map vs the mapper's record");
        assert_eq!(self.sim.crashed(self.domid), None, "the guest crashed");
        assert_eq!(self.sim.violations(), Vec::<String>::new());
        assert_no_remap(&self.sim.ops());
    }

    /// Every mapped frame is one of the device's own (BAR or ROM), never an MSI-X table or
    /// PBA page, and (unless an unmap failed and left it behind) at the gfn the guest BAR
    /// holding it is committed at.
    fn check_frames_are_own(&self) {
        self.check_frames(true);
    }

    fn check_frames(&self, at_committed: bool) {
        let holes = hole_pages(self.dm.caps.msix.as_ref(), &self.res);
        for (gfn, mfn) in self.p2m() {
            let own = self
                .res
                .bars
                .iter()
                .flatten()
                .chain(self.res.rom.iter())
                .find(|b| b.kind != BarKind::Io && b.base / PAGE <= mfn && mfn < (b.base + b.size).div_ceil(PAGE));
            let b = own.unwrap_or_else(|| panic!("gfn {gfn:#x} -> mfn {mfn:#x}: not a frame of this device"));
            let page = mfn - b.base / PAGE;
            assert!(!holes.contains(&(b.index, page)), "MSI-X page {page} of BAR{} direct-mapped", b.index);
            let gbar = if b.index == 6 { self.dm.bars.rom } else { self.dm.bars.bars[b.index as usize] };
            if at_committed {
                assert_eq!(gfn, gbar.unwrap().committed / PAGE + page, "mfn {mfn:#x} mapped at the wrong gfn");
            }
        }
    }

    /// Ordered teardown: afterwards nothing is mapped, trapped or port-mapped.
    fn teardown(&mut self) -> Vec<String> {
        let errors = self.dm.teardown(&mut self.xen);
        assert!(errors.is_empty(), "teardown errors: {errors:?}");
        assert_eq!(self.p2m(), vec![], "frames left mapped after teardown");
        assert_eq!(self.traps(), vec![], "ranges left registered after teardown");
        assert_eq!(self.sim.ioport_map(self.domid), vec![], "ports left mapped after teardown");
        assert_eq!(self.dm.mapper.current(), &Default::default());
        self.check();
        self.ops()
    }

    /// The firmware's way: decode off, size every BAR (and the ROM), program the
    /// addresses, decode on. Sizing and programming cost nothing.
    fn firmware(&mut self, addrs: &[(u8, u64)], rom: Option<u64>, cmd: u32) {
        assert_eq!(self.r(CMD, 2) & (IO | MEM), 0, "decode starts off");
        for &(i, a) in addrs {
            let b = self.res.bars[i as usize].unwrap();
            let off = BAR0 + 4 * i as u32;
            let size = guest_bar_size(b.kind, b.size);
            self.w(off, 4, !0);
            let flags = self.r(off, 4) & if b.kind == BarKind::Io { 0x3 } else { 0xf };
            let mask = if b.kind == BarKind::Io { 0xffff_fffc } else { 0xffff_fff0 };
            assert_eq!(self.r(off, 4), (!(size - 1) as u32 & mask) | flags, "BAR{i} sizing");
            if b.kind == BarKind::Mem64 {
                self.w(off + 4, 4, !0);
                assert_eq!(self.r(off + 4, 4), (!(size - 1) >> 32) as u32, "BAR{i} upper sizing");
            }
            self.w(off, 4, a as u32);
            if b.kind == BarKind::Mem64 {
                self.w(off + 4, 4, (a >> 32) as u32);
            }
            assert_eq!(self.r(off, 4), a as u32 | flags, "BAR{i} programmed");
        }
        if let Some(a) = rom {
            let size = guest_bar_size(BarKind::Mem32, self.res.rom.unwrap().size);
            self.w(ROM, 4, 0xffff_f800);
            assert_eq!(self.r(ROM, 4), !(size - 1) as u32 & 0xffff_f800, "ROM sizing");
            self.w(ROM, 4, a as u32);
        }
        assert_eq!(self.ops(), Vec::<String>::new(), "decode off: sizing and programming cost nothing");
        self.w(CMD, 2, cmd);
    }
}

/// (gfn, mfn) of every page of `runs`, sorted.
fn pages(runs: &[MmioRun]) -> Vec<(u64, u64)> {
    let mut v: Vec<_> = runs.iter().flat_map(|r| (0..r.nr).map(move |i| (r.gfn + i, r.mfn + i))).collect();
    v.sort();
    v
}

/// (BAR, page) of every MSI-X table and PBA page, clipped to the host BAR.
fn hole_pages(msix: Option<&MsixLayout>, res: &HostResources) -> Vec<(u8, u64)> {
    let Some(m) = msix else { return vec![] };
    let mut v = Vec::new();
    for (bar, off, len) in [(m.table_bar, m.table_offset, m.table_len()), (m.pba_bar, m.pba_offset, m.pba_len())] {
        let host_pages = res.bars[bar as usize].map(|b| b.size.div_ceil(PAGE)).unwrap_or(0);
        for p in off / PAGE..(off + len).div_ceil(PAGE).min(host_pages) {
            v.push((bar, p));
        }
    }
    v.sort();
    v.dedup();
    v
}

fn mm(gfn: u64, mfn: u64, nr: u64, add: bool) -> String {
    format!("memory_mapping(d1, gfn {gfn:#x} mfn {mfn:#x} nr {nr} {})", if add { "add" } else { "remove" })
}

fn trap(start: u64, len: u64) -> String {
    format!("map_io_range(d1, Memory {start:#x}-{:#x})", start + len - 1)
}

fn untrap(start: u64, len: u64) -> String {
    format!("unmap_io_range(d1, Memory {start:#x}-{:#x})", start + len - 1)
}

fn pio(gport: u32, mport: u32, nr: u32, add: bool) -> String {
    format!("ioport_mapping(d1, gport {gport:#x} mport {mport:#x} nr {nr} {})", if add { "add" } else { "remove" })
}

/// Replay every successful memory_mapping: no add may hit a gfn that is mapped (the
/// simulator crashes the guest only for a *different* mfn; xenpt must not even repeat
/// one), and the replay must end where Xen is.
fn assert_no_remap(ops: &[Op]) {
    let mut p2m = BTreeMap::new();
    for o in ops.iter().filter(|o| o.kind == "memory_mapping" && o.error.is_none()) {
        let f: Vec<&str> = o.detail.split_whitespace().collect();
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
        let (gfn, mfn, nr, add) = (hex(f[1]), hex(f[3]), f[5].parse::<u64>().unwrap(), f[6] == "add");
        for i in 0..nr.min(MEMORY_MAPPING_BATCH) {
            if add {
                assert!(
                    p2m.insert(gfn + i, mfn + i).is_none(),
                    "{o}: gfn {:#x} mapped again without an unmap",
                    gfn + i
                );
            } else if p2m.remove(&(gfn + i)).is_none() {
                break; // Xen stops at the first frame that is not mapped
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios: the emulated NVMe controller (64-bit BAR0, MSI-X table and PBA on pages 2-3).

fn nvme_up(r: &mut Rig, addr: u64) {
    r.firmware(&[(0, addr)], None, MEM | MASTER);
}

#[test]
fn firmware_bring_up_maps_once_on_decode_on() {
    let mut r = Rig::nvme();
    nvme_up(&mut r, 0xf000_0000);
    assert_eq!(r.ops(), [mm(0xf0000, 0xfe000, 2, true), trap(0xf000_2000, 0x2000)]);
    assert_eq!(r.p2m(), vec![(0xf0000, 0xfe000), (0xf0001, 0xfe001)]);
    assert_eq!(r.traps(), vec![(0xf000_2000, 0xf000_3fff)]);
    r.check();
    r.check_frames_are_own();

    // The guest reaches the controller's registers directly through the mapping.
    let vs = r.nvme.as_ref().unwrap().host().bar_read(0, REG_VS, 4).unwrap();
    assert_ne!(vs, 0);
    assert_eq!(r.sim.guest(r.domid).mmio_read(0, 0xf000_0000 + REG_VS, 4).unwrap(), vs);

    assert_eq!(r.teardown(), [untrap(0xf000_2000, 0x2000), mm(0xf0000, 0xfe000, 2, false)]);
}

/// A PVH guest's BARs are mapped exactly as an HVM guest's: the same p2m operations, the
/// same trapped MSI-X pages, the same unmap-first move (the profiles differ in interrupts
/// and the host bridge, not in BARs).
#[test]
fn a_pvh_guest_gets_the_same_bar_mappings_moves_and_teardown_as_an_hvm_guest() {
    let script = |r: &mut Rig| {
        let mut seen = Vec::new();
        nvme_up(r, 0xf000_0000);
        seen.push(r.ops());
        r.w(0x10, 4, 0xe000_0004); // moved with decode on: the low half alone commits nothing
        r.w(0x14, 4, 0); // the upper half commits the move
        seen.push(r.ops());
        r.check();
        r.check_frames_are_own();
        seen.push(r.teardown());
        seen
    };
    let hvm = script(&mut Rig::nvme());
    let mut pvh_rig = Rig::nvme_in(GuestKind::Pvh);
    assert_eq!(pvh_rig.dm.opts.profile, Profile::Pvh);
    let pvh = script(&mut pvh_rig);
    assert_eq!(pvh, hvm);
    assert_eq!(
        pvh[1],
        [
            untrap(0xf000_2000, 0x2000),
            mm(0xf0000, 0xfe000, 2, false),
            mm(0xe0000, 0xfe000, 2, true),
            trap(0xe000_2000, 0x2000)
        ]
    );
}

#[test]
fn os_moves_a_64bit_bar_with_decode_on_unmap_first() {
    let mut r = Rig::nvme();
    nvme_up(&mut r, 0xf000_0000);
    r.ops();
    // Low half alone: an intermediate address, nothing happens.
    r.w(BAR0, 4, 0xe000_0000);
    assert_eq!(r.ops(), Vec::<String>::new());
    assert_eq!(r.p2m(), vec![(0xf0000, 0xfe000), (0xf0001, 0xfe001)], "still at the old address");
    // Upper half: committed. The old range goes first, trap included, then the new one.
    r.w(BAR0 + 4, 4, 0);
    assert_eq!(
        r.ops(),
        [
            untrap(0xf000_2000, 0x2000),
            mm(0xf0000, 0xfe000, 2, false),
            mm(0xe0000, 0xfe000, 2, true),
            trap(0xe000_2000, 0x2000)
        ]
    );
    assert_eq!(r.p2m(), vec![(0xe0000, 0xfe000), (0xe0001, 0xfe001)]);
    r.check();
    r.check_frames_are_own();
    // The old pages now lead nowhere: neither the device nor xenpt answers there (the
    // simulator's null handler reads all-ones; a registered page would have gone to the
    // ioreq server).
    let g = r.sim.guest(r.domid);
    assert_eq!(g.mmio_read(0, 0xf000_0000 + REG_VS, 4).unwrap(), 0xffff_ffff);
    assert_eq!(g.mmio_read(0, 0xf000_2000, 4).unwrap(), 0xffff_ffff);
    assert_ne!(g.mmio_read(0, 0xe000_0000 + REG_VS, 4).unwrap(), 0xffff_ffff);
    assert_eq!(r.teardown(), [untrap(0xe000_2000, 0x2000), mm(0xe0000, 0xfe000, 2, false)]);
}

#[test]
fn os_moves_a_bar_with_decode_off_and_maps_only_on_decode_on() {
    let mut r = Rig::nvme();
    nvme_up(&mut r, 0xf000_0000);
    r.ops();
    // What Linux does for a 64-bit BAR: decode off, both halves, decode on.
    r.w(CMD, 2, MASTER);
    assert_eq!(r.ops(), [untrap(0xf000_2000, 0x2000), mm(0xf0000, 0xfe000, 2, false)]);
    r.check();
    r.w(BAR0, 4, 0xe000_0000);
    r.w(BAR0 + 4, 4, 0);
    assert_eq!(r.ops(), Vec::<String>::new(), "decode off: moving costs nothing");
    assert_eq!(r.p2m(), vec![]);
    r.w(CMD, 2, MEM | MASTER);
    assert_eq!(r.ops(), [mm(0xe0000, 0xfe000, 2, true), trap(0xe000_2000, 0x2000)]);
    r.check();
    r.check_frames_are_own();
    r.teardown();
}

#[test]
fn a_64bit_bar_moved_above_4gib_half_by_half_never_maps_an_intermediate_address() {
    let mut r = Rig::nvme();
    nvme_up(&mut r, 0xf000_0000);
    r.ops();
    let at = |r: &Rig| r.p2m().first().map(|&(g, _)| g * PAGE);

    // Upper half first: 0x4_f000_0000 is intermediate.
    r.w(BAR0 + 4, 4, 0x4);
    assert_eq!(r.ops(), Vec::<String>::new());
    assert_eq!(r.r(BAR0 + 4, 4), 0x4, "the guest reads what it wrote");
    assert_eq!(at(&r), Some(0xf000_0000));
    r.w(BAR0, 4, 0x8000_0000);
    assert_eq!(
        r.ops(),
        [
            untrap(0xf000_2000, 0x2000),
            mm(0xf0000, 0xfe000, 2, false),
            mm(0x48_0000, 0xfe000, 2, true),
            trap(0x4_8000_2000, 0x2000)
        ]
    );
    r.check();

    // Lower half first: 0x4_4000_0000 is intermediate.
    r.w(BAR0, 4, 0x4000_0000);
    assert_eq!(r.ops(), Vec::<String>::new());
    assert_eq!(at(&r), Some(0x4_8000_0000));
    r.w(BAR0 + 4, 4, 0x2);
    assert_eq!(
        r.ops(),
        [
            untrap(0x4_8000_2000, 0x2000),
            mm(0x48_0000, 0xfe000, 2, false),
            mm(0x24_0000, 0xfe000, 2, true),
            trap(0x2_4000_2000, 0x2000)
        ]
    );
    r.check();
    r.check_frames_are_own();

    // Decode off, then the same dance: nothing until decode on, which maps only the final
    // address.
    r.w(CMD, 2, MASTER);
    r.ops();
    r.w(BAR0 + 4, 4, 0x10);
    r.w(BAR0, 4, 0xc000_0000);
    r.w(BAR0, 4, 0x2000_0000);
    r.w(BAR0 + 4, 4, 0x20);
    assert_eq!(r.ops(), Vec::<String>::new());
    r.w(CMD, 2, MEM | MASTER);
    assert_eq!(r.ops(), [mm(0x202_0000, 0xfe000, 2, true), trap(0x20_2000_2000, 0x2000)]);
    r.check();

    // Over the whole run only the four committed addresses were ever mapped.
    let mut added: Vec<String> = r
        .sim
        .ops()
        .iter()
        .filter(|o| o.kind == "memory_mapping" && o.detail.ends_with("add"))
        .map(|o| o.detail.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    added.sort();
    assert_eq!(added, ["0x2020000", "0x240000", "0x480000", "0xf0000"]);
    r.teardown();
}

#[test]
fn sizing_probes_cost_no_hypercalls_with_decode_on_or_off() {
    let mut r = Rig::nvme();
    nvme_up(&mut r, 0xf000_0000);
    r.ops();
    let mapped = r.p2m();
    // Linux's __pci_read_base order (lower half probed and restored, then the upper half),
    // here without turning decode off (mmio_always_on devices, other OSes).
    r.w(BAR0, 4, !0);
    assert_eq!(r.r(BAR0, 4), 0xffff_c004);
    r.w(BAR0, 4, 0xf000_0004);
    r.w(BAR0 + 4, 4, !0);
    assert_eq!(r.r(BAR0 + 4, 4), 0xffff_ffff);
    r.w(BAR0 + 4, 4, 0);
    assert_eq!(r.ops(), Vec::<String>::new(), "Linux-order probe with decode on");
    assert_eq!(r.p2m(), mapped, "still mapped where the guest put it");
    r.check();
    // Both halves probed, then both restored (the BSDs' order).
    r.w(BAR0, 4, !0);
    r.w(BAR0 + 4, 4, !0);
    assert_eq!((r.r(BAR0, 4), r.r(BAR0 + 4, 4)), (0xffff_c004, 0xffff_ffff));
    r.w(BAR0, 4, 0xf000_0000);
    r.w(BAR0 + 4, 4, 0);
    assert_eq!(r.ops(), Vec::<String>::new(), "BSD-order probe with decode on");
    // Upper half first.
    r.w(BAR0 + 4, 4, !0);
    r.w(BAR0 + 4, 4, 0);
    r.w(BAR0, 4, !0);
    r.w(BAR0, 4, 0xf000_0000);
    assert_eq!(r.ops(), Vec::<String>::new(), "upper-first probe with decode on");
    assert_eq!(r.p2m(), mapped);
    // And with decode off, in between two toggles that do cost what they must.
    r.w(CMD, 2, MASTER);
    r.ops();
    for reg in [BAR0, BAR0 + 4] {
        r.w(reg, 4, !0);
        r.r(reg, 4);
    }
    r.w(BAR0, 4, 0xf000_0000);
    r.w(BAR0 + 4, 4, 0);
    assert_eq!(r.ops(), Vec::<String>::new(), "probe with decode off");
    r.w(CMD, 2, MEM | MASTER);
    assert_eq!(r.ops(), [mm(0xf0000, 0xfe000, 2, true), trap(0xf000_2000, 0x2000)]);
    r.check();
    r.teardown();
}

#[test]
fn rewriting_the_same_values_costs_nothing() {
    let mut r = Rig::nvme();
    nvme_up(&mut r, 0xf000_0000);
    r.ops();
    for _ in 0..3 {
        r.w(BAR0, 4, 0xf000_0004);
        r.w(BAR0 + 4, 4, 0);
        r.w(BAR0 + 4, 4, 0);
        r.w(BAR0, 4, 0xf000_0000);
        r.w(CMD, 2, MEM | MASTER);
        r.w(CMD, 1, MEM | MASTER);
        r.w(BAR0 + 2, 2, 0xf000);
        r.w(BAR0 + 3, 1, 0xf0);
        r.w(ROM, 4, 0);
    }
    assert_eq!(r.ops(), Vec::<String>::new());
    r.check();
    r.teardown();
}

#[test]
fn msix_pages_are_trapped_on_decode_on_released_on_decode_off_and_move_with_the_bar() {
    let mut r = Rig::nvme();
    nvme_up(&mut r, 0xf000_0000);
    assert_eq!(r.ops(), [mm(0xf0000, 0xfe000, 2, true), trap(0xf000_2000, 0x2000)]);
    assert_eq!(r.traps(), vec![(0xf000_2000, 0xf000_3fff)]);
    // Decode off: the trap goes before the mapping (nothing of the BAR is left claimed).
    r.w(CMD, 2, MASTER);
    assert_eq!(r.ops(), [untrap(0xf000_2000, 0x2000), mm(0xf0000, 0xfe000, 2, false)]);
    assert_eq!(r.traps(), vec![]);
    // The guest's table page is not registered any more: the simulator answers with the
    // null handler instead of forwarding to xenpt.
    assert_eq!(r.sim.guest(r.domid).mmio_read(0, 0xf000_2000, 4).unwrap(), 0xffff_ffff);
    r.w(CMD, 2, MEM | MASTER);
    assert_eq!(r.ops(), [mm(0xf0000, 0xfe000, 2, true), trap(0xf000_2000, 0x2000)]);
    // Moved with decode on: unregistered at the old address first, registered at the new
    // one last, after the direct mapping it sits in.
    r.w(BAR0, 4, 0xd000_0000);
    r.w(BAR0 + 4, 4, 0);
    assert_eq!(
        r.ops(),
        [
            untrap(0xf000_2000, 0x2000),
            mm(0xf0000, 0xfe000, 2, false),
            mm(0xd0000, 0xfe000, 2, true),
            trap(0xd000_2000, 0x2000)
        ]
    );
    assert_eq!(r.traps(), vec![(0xd000_2000, 0xd000_3fff)]);
    assert_eq!(r.sim.guest(r.domid).mmio_read(0, 0xf000_2000, 4).unwrap(), 0xffff_ffff);
    // Toggling I/O decode (no I/O BAR) re-commits but changes nothing.
    r.w(CMD, 2, MEM | MASTER | IO);
    assert_eq!(r.ops(), Vec::<String>::new());
    r.check();
    assert_eq!(r.teardown(), [untrap(0xd000_2000, 0x2000), mm(0xd0000, 0xfe000, 2, false)]);
}

// ---------------------------------------------------------------------------------------
// Scenarios on real layouts from the corpus.

/// Intel 82576: 32-bit BAR0 and BAR1, I/O BAR2, BAR3 with the MSI-X table on page 0 and
/// the PBA on page 2 (its own page), and an expansion ROM.
const I82576: &str = "8086_10c9_";

fn i82576_up(r: &mut Rig) {
    r.firmware(
        &[(0, 0xf000_0000), (1, 0xf000_1000), (2, 0xc000), (3, 0xf000_4000)],
        Some(0xf001_0000),
        IO | MEM | MASTER,
    );
}

#[test]
fn pba_on_its_own_page_and_32bit_and_io_bars_come_up() {
    let mut r = Rig::dump(I82576);
    let m = r.dm.caps.msix.unwrap();
    assert_eq!((m.table_bar, m.table_offset, m.pba_bar, m.pba_offset), (3, 0, 3, 0x2000));
    let res = r.res.clone();
    let (b0, b1, b2, b3) = (res.bars[0].unwrap(), res.bars[1].unwrap(), res.bars[2].unwrap(), res.bars[3].unwrap());
    assert_eq!((b2.kind, b2.base), (BarKind::Io, 0x1020));
    assert_eq!(b3.size, 0x4000);
    i82576_up(&mut r);
    let f3 = b3.base / PAGE;
    assert_eq!(
        r.ops(),
        [
            mm(0xf0000, b0.base / PAGE, 1, true),
            mm(0xf0001, b1.base / PAGE, 1, true),
            mm(0xf0005, f3 + 1, 1, true),
            mm(0xf0007, f3 + 3, 1, true),
            pio(0xc000, 0x1020, 256, true),
            trap(0xf000_4000, PAGE),
            trap(0xf000_6000, PAGE),
        ]
    );
    r.check();
    r.check_frames_are_own();
    // Teardown is bring-up backwards: the traps, the ports, then the BARs last one first.
    assert_eq!(
        r.teardown(),
        [
            untrap(0xf000_6000, PAGE),
            untrap(0xf000_4000, PAGE),
            pio(0xc000, 0x1020, 256, false),
            mm(0xf0007, f3 + 3, 1, false),
            mm(0xf0005, f3 + 1, 1, false),
            mm(0xf0001, b1.base / PAGE, 1, false),
            mm(0xf0000, b0.base / PAGE, 1, false),
        ]
    );
}

#[test]
fn os_moves_32bit_and_io_bars_with_decode_on() {
    let mut r = Rig::dump(I82576);
    let res = r.res.clone();
    let (b0, b3) = (res.bars[0].unwrap(), res.bars[3].unwrap());
    i82576_up(&mut r);
    r.ops();
    // A 32-bit BAR commits on its one write: unmap, then map.
    r.w(BAR0, 4, 0xf002_0000);
    assert_eq!(r.ops(), [mm(0xf0000, b0.base / PAGE, 1, false), mm(0xf0020, b0.base / PAGE, 1, true)]);
    r.check();
    // The BAR holding the MSI-X table and PBA: both traps move with it.
    r.w(BAR0 + 12, 4, 0xf004_0000);
    let f3 = b3.base / PAGE;
    assert_eq!(
        r.ops(),
        [
            untrap(0xf000_4000, PAGE),
            untrap(0xf000_6000, PAGE),
            mm(0xf0005, f3 + 1, 1, false),
            mm(0xf0007, f3 + 3, 1, false),
            mm(0xf0041, f3 + 1, 1, true),
            mm(0xf0043, f3 + 3, 1, true),
            trap(0xf004_0000, PAGE),
            trap(0xf004_2000, PAGE),
        ]
    );
    r.check();
    r.check_frames_are_own();
    // The I/O BAR.
    r.w(BAR0 + 8, 4, 0xd001);
    assert_eq!(r.ops(), [pio(0xc000, 0x1020, 256, false), pio(0xd000, 0x1020, 256, true)]);
    r.check();
    // I/O decode off and on touches only the ports.
    r.w(CMD, 2, MEM | MASTER);
    assert_eq!(r.ops(), [pio(0xd000, 0x1020, 256, false)]);
    r.w(CMD, 2, IO | MEM | MASTER);
    assert_eq!(r.ops(), [pio(0xd000, 0x1020, 256, true)]);
    // Moved onto another BAR of the device: neither maps while they overlap.
    r.w(BAR0 + 4, 4, 0xf002_0000);
    assert_eq!(
        r.ops(),
        [mm(0xf0001, res.bars[1].unwrap().base / PAGE, 1, false), mm(0xf0020, b0.base / PAGE, 1, false)]
    );
    r.w(BAR0 + 4, 4, 0xf003_0000);
    assert_eq!(r.ops(), [mm(0xf0020, b0.base / PAGE, 1, true), mm(0xf0030, res.bars[1].unwrap().base / PAGE, 1, true)]);
    r.check();
    r.teardown();
}

#[test]
fn sizing_32bit_io_and_rom_bars_with_decode_on_costs_nothing() {
    let mut r = Rig::dump(I82576);
    i82576_up(&mut r);
    r.w(ROM, 4, 0xf001_0001);
    r.ops();
    let mapped = (r.p2m(), r.traps(), r.sim.ioport_map(r.domid));
    for (off, restore) in [(BAR0, 0xf000_0000), (BAR0 + 8, 0xc001), (BAR0 + 12, 0xf000_4000)] {
        r.w(off, 4, !0);
        let sized = r.r(off, 4);
        assert_ne!(sized, restore);
        r.w(off, 4, restore);
        assert_eq!(r.r(off, 4), restore);
    }
    // Linux probes the ROM keeping its enable bit.
    r.w(ROM, 4, 0xffff_f801);
    assert_eq!(r.r(ROM, 4), 0xffff_0001);
    r.w(ROM, 4, 0xf001_0001);
    assert_eq!(r.ops(), Vec::<String>::new());
    assert_eq!((r.p2m(), r.traps(), r.sim.ioport_map(r.domid)), mapped);
    r.check();
    r.teardown();
}

#[test]
fn rom_enable_and_disable_map_and_unmap_the_rom() {
    let mut r = Rig::dump(I82576);
    let rom = r.res.rom.unwrap();
    assert_eq!((rom.base, rom.size), (0xc780_0000, 0x1_0000));
    let mfn = rom.base / PAGE;
    i82576_up(&mut r);
    r.ops();
    let host_rom = |r: &Rig| r.dm.host().config_read(0x30, 4).unwrap();
    assert_eq!(host_rom(&r) & 1, 0);

    r.w(ROM, 4, 0xf001_0001);
    assert_eq!(r.ops(), [mm(0xf0010, mfn, 16, true)]);
    assert_eq!(host_rom(&r), 0xc780_0001, "the device decodes its ROM while the guest enables it");
    r.check();
    r.check_frames_are_own();
    r.w(ROM, 4, 0xf001_0000);
    assert_eq!(r.ops(), [mm(0xf0010, mfn, 16, false)]);
    assert_eq!(host_rom(&r), 0xc780_0000);
    // Moved while disabled: nothing; enabled: mapped at the new address.
    r.w(ROM, 4, 0xf002_0000);
    assert_eq!(r.ops(), Vec::<String>::new());
    r.w(ROM, 4, 0xf002_0001);
    assert_eq!(r.ops(), [mm(0xf0020, mfn, 16, true)]);
    // Moved while enabled: unmap, then map.
    r.w(ROM, 4, 0xf004_0001);
    assert_eq!(r.ops(), [mm(0xf0020, mfn, 16, false), mm(0xf0040, mfn, 16, true)]);
    // Memory decode gates the ROM too.
    r.w(CMD, 2, IO | MASTER);
    let ops = r.ops();
    assert!(ops.contains(&mm(0xf0040, mfn, 16, false)), "{ops:?}");
    r.w(ROM, 4, 0xf005_0001);
    r.w(ROM, 4, 0xf004_0001);
    assert_eq!(r.ops(), Vec::<String>::new(), "decode off: the ROM register costs nothing");
    r.w(CMD, 2, IO | MEM | MASTER);
    let ops = r.ops();
    assert!(ops.contains(&mm(0xf0040, mfn, 16, true)), "{ops:?}");
    r.check();
    // An enabled ROM over BARs of the device (here all of them) maps none of them.
    r.w(ROM, 4, 0xf000_0001);
    let res = r.res.clone();
    let f = |i: usize| res.bars[i].unwrap().base / PAGE;
    assert_eq!(
        r.ops(),
        [
            untrap(0xf000_4000, PAGE),
            untrap(0xf000_6000, PAGE),
            mm(0xf0000, f(0), 1, false),
            mm(0xf0001, f(1), 1, false),
            mm(0xf0005, f(3) + 1, 1, false),
            mm(0xf0007, f(3) + 3, 1, false),
            mm(0xf0040, mfn, 16, false),
        ]
    );
    assert_eq!(r.traps(), vec![]);
    r.check();
    let ops = r.teardown();
    assert!(ops.iter().all(|o| !o.contains("add")), "{ops:?}");
}

#[test]
fn msix_table_in_the_middle_of_bar0_leaves_mapped_ranges_around_the_hole() {
    // Mellanox ConnectX-3: BAR0 512 KiB (32-bit), table of 256 entries at 0x7c000, PBA at
    // 0x7d000: 124 pages mapped, two trapped, two mapped. The first run takes two
    // memory_mapping calls (Xen does 64 frames per call and xenpt continues).
    let mut r = Rig::dump("15b3_1007_");
    let m = r.dm.caps.msix.unwrap();
    assert_eq!((m.table_bar, m.table_offset, m.pba_bar, m.pba_offset, m.entries), (0, 0x7c000, 0, 0x7d000, 256));
    let b0 = r.res.bars[0].unwrap();
    assert_eq!((b0.base, b0.size, b0.kind), (0xc010_0000, 0x8_0000, BarKind::Mem32));
    let b2 = r.res.bars[2].unwrap();
    r.firmware(&[(0, 0xe000_0000), (2, 0xe010_0000)], Some(0xe020_0000), MEM | MASTER);
    let f = b0.base / PAGE;
    assert_eq!(
        r.ops(),
        [
            mm(0xe0000, f, 124, true),
            mm(0xe0040, f + 0x40, 60, true),
            mm(0xe007e, f + 0x7e, 2, true),
            mm(0xe0100, b2.base / PAGE, 1, true),
            trap(0xe007_c000, 0x2000),
        ]
    );
    assert_eq!(r.traps(), vec![(0xe007_c000, 0xe007_dfff)]);
    let p2m = r.p2m();
    assert_eq!(p2m.len(), 124 + 2 + 1);
    assert!(p2m.iter().all(|&(g, _)| g != 0xe007c && g != 0xe007d));
    r.check();
    r.check_frames_are_own();
    // Backwards, and the 124-page run in two calls again.
    assert_eq!(
        r.teardown(),
        [
            untrap(0xe007_c000, 0x2000),
            mm(0xe0100, b2.base / PAGE, 1, false),
            mm(0xe007e, f + 0x7e, 2, false),
            mm(0xe0000, f, 124, false),
            mm(0xe0040, f + 0x40, 60, false),
        ]
    );
}

#[test]
fn msix_table_and_pba_each_in_the_middle_of_a_64bit_bar() {
    // Myricom Myri-10G: BAR2 1 MiB, 128-entry table at 0xf0000, PBA at 0xf9000: three
    // mapped ranges around two trapped pages.
    let mut r = Rig::dump("14c1_0008_");
    let m = r.dm.caps.msix.unwrap();
    assert_eq!((m.table_bar, m.table_offset, m.pba_bar, m.pba_offset), (2, 0xf0000, 2, 0xf9000));
    let (b0, b2) = (r.res.bars[0].unwrap(), r.res.bars[2].unwrap());
    assert_eq!((b2.size, b2.kind), (0x10_0000, BarKind::Mem64));
    r.firmware(&[(0, 0x1_0000_0000), (2, 0x1_0010_0000)], None, MEM | MASTER);
    let f = b2.base / PAGE;
    let g = 0x10_0100;
    assert_eq!(
        r.ops(),
        [
            mm(0x10_0000, b0.base / PAGE, 1, true),
            mm(g, f, 240, true),
            mm(g + 64, f + 64, 176, true),
            mm(g + 128, f + 128, 112, true),
            mm(g + 192, f + 192, 48, true),
            mm(g + 0xf1, f + 0xf1, 8, true),
            mm(g + 0xfa, f + 0xfa, 6, true),
            trap(0x1_001f_0000, PAGE),
            trap(0x1_001f_9000, PAGE),
        ]
    );
    r.check();
    r.check_frames_are_own();
    r.teardown();
}

#[test]
fn msix_table_and_pba_sharing_a_page() {
    // NEC uPD720200: BAR0 8 KiB, table at 0x1000 and PBA at 0x1080 on the same page.
    let mut r = Rig::dump("1033_0194_");
    let m = r.dm.caps.msix.unwrap();
    assert_eq!((m.table_bar, m.table_offset, m.pba_bar, m.pba_offset), (0, 0x1000, 0, 0x1080));
    let b0 = r.res.bars[0].unwrap();
    assert_eq!(b0.size, 0x2000);
    r.firmware(&[(0, 0xf100_0000)], None, MEM | MASTER);
    assert_eq!(r.ops(), [mm(0xf1000, b0.base / PAGE, 1, true), trap(0xf100_1000, PAGE)]);
    r.check();
    r.check_frames_are_own();
    r.w(CMD, 2, MASTER);
    assert_eq!(r.ops(), [untrap(0xf100_1000, PAGE), mm(0xf1000, b0.base / PAGE, 1, false)]);
    r.teardown();

    // Atheros AR928x: one vector, table and PBA both at offset 0 of a one-page BAR0: the
    // whole BAR is trapped and nothing is direct-mapped.
    let mut r = Rig::dump("168c_002a_");
    let m = r.dm.caps.msix.unwrap();
    assert_eq!((m.table_bar, m.table_offset, m.pba_bar, m.pba_offset), (0, 0, 0, 0));
    assert_eq!(r.res.bars[0].unwrap().size, PAGE);
    r.firmware(&[(0, 0xf200_0000)], None, MEM | MASTER);
    assert_eq!(r.ops(), [trap(0xf200_0000, PAGE)]);
    assert_eq!(r.p2m(), vec![]);
    r.w(BAR0, 4, 0xf300_0000);
    r.w(BAR0 + 4, 4, 0);
    assert_eq!(r.ops(), [untrap(0xf200_0000, PAGE), trap(0xf300_0000, PAGE)]);
    r.check();
    assert_eq!(r.teardown(), [untrap(0xf300_0000, PAGE)]);
}

// ---------------------------------------------------------------------------------------
// Property: any sequence of guest config writes.

/// An independent model of the guest BAR rules (issue 4 and the bars module's contract):
/// what is committed, and from that what Xen must hold.
#[derive(Clone, Debug)]
struct Model {
    res: HostResources,
    msix: Option<MsixLayout>,
    committed: [u64; 6],
    /// 64-bit BARs: halves written since the last commit.
    halves: [u8; 6],
    rom: u64,
    rom_en: bool,
}

fn gsize(kind: BarKind, size: u64) -> u64 {
    match kind {
        BarKind::Io => size.next_power_of_two(),
        _ => size.max(PAGE).next_power_of_two(),
    }
}

impl Model {
    fn new(res: &HostResources, msix: Option<MsixLayout>) -> Self {
        Model { res: res.clone(), msix, committed: [0; 6], halves: [0; 6], rom: 0, rom_en: false }
    }

    fn addr(&self, regs: &[u32], i: usize) -> u64 {
        let b = self.res.bars[i].unwrap();
        let lo = regs[4 + i] as u64;
        match b.kind {
            BarKind::Io => lo & !3,
            BarKind::Mem32 => lo & !0xf,
            BarKind::Mem64 => (lo & !0xf) | (regs[5 + i] as u64) << 32,
        }
    }

    /// A register (either half of a 64-bit one) holding its sizing value is a probe.
    fn probing(&self, regs: &[u32], i: usize) -> bool {
        let b = self.res.bars[i].unwrap();
        let mask = !(gsize(b.kind, b.size) - 1);
        let lo = regs[4 + i];
        match b.kind {
            BarKind::Io => lo & !3 == mask as u32 & !3,
            BarKind::Mem32 => lo & !0xf == mask as u32 & !0xf,
            BarKind::Mem64 => lo & !0xf == mask as u32 & !0xf || regs[5 + i] == (mask >> 32) as u32,
        }
    }

    fn commit_rom(&mut self, regs: &[u32], probe_rule: bool) {
        let reg = regs[12];
        let en = reg & 1 != 0;
        let toggled = en != self.rom_en;
        self.rom_en = en;
        if let Some(r) = self.res.rom {
            let a = (reg & !0x7ff) as u64;
            let sizing = !(gsize(BarKind::Mem32, r.size) - 1) as u32 & 0xffff_f800;
            if !(probe_rule && !toggled && a as u32 == sizing) {
                self.rom = a;
            }
        }
    }

    /// The guest wrote dword `dword`; `old` and `regs` are the header dwords before/after.
    fn on_write(&mut self, dword: u32, old: &[u32], regs: &[u32]) {
        match dword {
            // A decode bit toggled: every BAR commits what its register holds.
            0x04 if (old[1] ^ regs[1]) & (IO | MEM) != 0 => {
                for i in 0..6 {
                    if self.res.bars[i].is_some() {
                        self.committed[i] = self.addr(regs, i);
                    }
                }
                self.halves = [0; 6];
                self.commit_rom(regs, false);
            }
            0x10..=0x24 => {
                let reg = ((dword - 0x10) / 4) as usize;
                let (i, upper) = match (self.res.bars[reg], reg.checked_sub(1).and_then(|j| self.res.bars[j])) {
                    (Some(_), _) => (reg, false),
                    (None, Some(p)) if p.kind == BarKind::Mem64 => (reg - 1, true),
                    _ => return,
                };
                if self.res.bars[i].unwrap().kind == BarKind::Mem64 {
                    self.halves[i] |= if upper { 2 } else { 1 };
                    if self.halves[i] != 3 || self.probing(regs, i) {
                        return;
                    }
                    self.halves[i] = 0;
                } else if self.probing(regs, i) {
                    return;
                }
                self.committed[i] = self.addr(regs, i);
            }
            0x30 => self.commit_rom(regs, true),
            _ => {}
        }
    }

    fn valid(&self, a: u64, gs: u64, kind: BarKind, me: Option<usize>) -> bool {
        let Some(end) = a.checked_add(gs) else { return false };
        if a == 0 || a % gs != 0 || end > 1 << 46 || (kind != BarKind::Mem64 && end > 1 << 32) {
            return false;
        }
        let width = if kind == BarKind::Mem64 { !0 } else { 0xffff_ffff };
        if a | (gs - 1) == width || (a < 1 << 32 && 0xfec0_0000 < end) {
            return false;
        }
        let mut others: Vec<(u64, u64)> = (0..6)
            .filter(|&j| Some(j) != me)
            .filter_map(|j| self.res.bars[j].filter(|b| b.kind != BarKind::Io).map(|b| (j, b)))
            .map(|(j, b)| (self.committed[j], gsize(b.kind, b.size)))
            .collect();
        if let (Some(r), true, true) = (self.res.rom, me.is_some(), self.rom_en) {
            others.push((self.rom, gsize(BarKind::Mem32, r.size)));
        }
        !others.iter().any(|&(o, s)| o != 0 && o < end && a < o + s)
    }

    /// What Xen must hold: p2m, trapped ranges, port mappings.
    #[allow(clippy::type_complexity)]
    fn expected(&self, cmd: u32) -> (Vec<(u64, u64)>, Vec<(u64, u64)>, Vec<(u32, u32, u32)>) {
        let (mut p2m, mut traps, mut ports) = (BTreeMap::new(), Vec::new(), Vec::new());
        let holes = hole_pages(self.msix.as_ref(), &self.res);
        for i in 0..6 {
            let Some(b) = self.res.bars[i] else { continue };
            let (a, gs) = (self.committed[i], gsize(b.kind, b.size));
            if b.kind == BarKind::Io {
                if cmd & IO != 0 && a != 0 && a + gs <= 0x10000 {
                    ports.push((a as u32, b.base as u32, b.size as u32));
                }
                continue;
            }
            if cmd & MEM == 0 || !self.valid(a, gs, b.kind, Some(i)) {
                continue;
            }
            for p in 0..b.size.div_ceil(PAGE) {
                if holes.contains(&(i as u8, p)) {
                    // Trapped: merge with the previous trapped page if adjacent.
                    let start = a + p * PAGE;
                    match traps.last_mut() {
                        Some((_, end)) if *end + 1 == start => *end = start + PAGE - 1,
                        _ => traps.push((start, start + PAGE - 1)),
                    }
                } else {
                    p2m.insert(a / PAGE + p, b.base / PAGE + p);
                }
            }
        }
        if let Some(r) = self.res.rom {
            if cmd & MEM != 0 && self.rom_en && self.valid(self.rom, gsize(BarKind::Mem32, r.size), r.kind, None) {
                for p in 0..r.size.div_ceil(PAGE) {
                    p2m.insert(self.rom / PAGE + p, r.base / PAGE + p);
                }
            }
        }
        traps.sort();
        ports.sort();
        (p2m.into_iter().collect(), traps, ports)
    }
}

#[derive(Clone, Debug)]
enum Step {
    Cmd(u16),
    Bar {
        reg: u8,
        val: u32,
    },
    /// A 1- or 2-byte write somewhere in the BAR registers.
    Sub {
        off: u8,
        size: u8,
        val: u32,
    },
    Rom(u32),
}

fn bar_value() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(!0u32),
        any::<u32>(),
        // Addresses, some aligned for a 64 KiB BAR, many overlapping each other.
        (0u32..32).prop_map(|k| 0xe000_0000 + k * 0x4000),
        (0u32..32).prop_map(|k| 0xe000_0000 + k * 0x4000),
        // Upper halves: below and at the guest's address width.
        (0u32..4),
        Just(0x4000u32),
        // The interrupt window, a lower half that looks like a 16 KiB probe.
        Just(0xfec0_0000u32),
        Just(0xfee0_0000u32),
        Just(0xffff_c000u32),
        // I/O ports.
        (0u32..16).prop_map(|k| (0xc000 + k * 0x80) | 1),
    ]
}

fn rom_value() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(0xffff_f800u32),
        Just(0xffff_f801u32),
        any::<u32>(),
        (0u32..32, 0u32..2).prop_map(|(k, en)| 0xe000_0000 + k * 0x4000 + en),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u16..8).prop_map(Step::Cmd),
        8 => (0u8..6, bar_value()).prop_map(|(reg, val)| Step::Bar { reg, val }),
        1 => (0u8..12, prop_oneof![Just(1u8), Just(2u8)], any::<u32>())
            .prop_map(|(k, size, val)| Step::Sub { off: (k * size) % 24, size, val }),
        2 => rom_value().prop_map(Step::Rom),
    ]
}

fn header(r: &mut Rig) -> Vec<u32> {
    (0..16).map(|i| r.r(i * 4, 4)).collect()
}

fn run_steps(prefix: &str, steps: &[Step]) {
    let mut r = Rig::dump(prefix);
    let mut model = Model::new(&r.res, r.dm.caps.msix);
    for s in steps {
        let old = header(&mut r);
        let (dword, off, size, val) = match *s {
            Step::Cmd(c) => (CMD, CMD, 2, c as u32),
            Step::Bar { reg, val } => (BAR0 + 4 * reg as u32, BAR0 + 4 * reg as u32, 4, val),
            Step::Sub { off, size, val } => {
                let off = BAR0 + off as u32;
                (off & !3, off, size as u32, val)
            }
            Step::Rom(v) => (ROM, ROM, 4, v),
        };
        r.w(off, size, val);
        let regs = header(&mut r);
        model.on_write(dword, &old, &regs);

        // The committed state follows the rules...
        for i in 0..6 {
            if let Some(b) = r.dm.bars.bars[i] {
                assert_eq!(b.committed, model.committed[i], "BAR{i} committed after {s:?}");
            }
        }
        if let Some(rom) = r.dm.bars.rom {
            assert_eq!(rom.committed, model.rom, "ROM committed after {s:?}");
        }
        // ...and Xen holds exactly what it implies, which is also the mapper's record.
        let (p2m, traps, ports) = model.expected(regs[1]);
        assert_eq!(r.p2m(), p2m, "p2m after {s:?}");
        assert_eq!(r.traps(), traps, "trapped ranges after {s:?}");
        assert_eq!(r.sim.ioport_map(r.domid), ports, "port map after {s:?}");
        r.check();
        r.check_frames_are_own();
    }
    r.teardown();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Broadcom MegaRAID 3108: I/O BAR0, 64-bit BAR1 (64 KiB, MSI-X table at 0xe000 and
    /// PBA at 0xf000), 64-bit BAR3, expansion ROM.
    #[test]
    fn any_config_writes_keep_xen_equal_to_the_rules_megaraid(steps in prop::collection::vec(step(), 1..40)) {
        run_steps("1000_005d_", &steps);
    }

    /// Intel 82576: three 32-bit memory BARs (MSI-X in BAR3), an I/O BAR, a ROM.
    #[test]
    fn any_config_writes_keep_xen_equal_to_the_rules_82576(steps in prop::collection::vec(step(), 1..40)) {
        run_steps(I82576, &steps);
    }
}

// ---------------------------------------------------------------------------------------
// Fault injection.

/// ConnectX-3 bring-up and the OS moving things around: BAR0 512 KiB (a 124-page run, two
/// memory_mapping calls), BAR2, the ROM; BAR2 moves away and BAR0 moves onto its old
/// place. Checks Xen == record after every step (a failed unmap may leave a frame behind
/// at its old gfn: recorded, and retried at the next change).
fn cx3_script(r: &mut Rig) {
    let steps: &[(u32, u32, u32)] = &[
        (BAR0, 4, !0),
        (BAR0 + 8, 4, !0),
        (ROM, 4, 0xffff_f800),
        (BAR0, 4, 0xe000_0000),
        (BAR0 + 8, 4, 0xe010_0000),
        (ROM, 4, 0xe020_0000),
        (CMD, 2, MEM | MASTER),
        (ROM, 4, 0xe020_0001),
        (BAR0 + 8, 4, 0xe030_0000),
        (BAR0, 4, 0xe010_0000),
        (CMD, 2, MASTER),
        (CMD, 2, MEM | MASTER),
        (ROM, 4, 0xe020_0000),
    ];
    for &(off, size, v) in steps {
        r.w(off, size, v);
        r.check();
        r.check_frames(false);
    }
}

fn mm_calls(r: &Rig) -> Vec<Op> {
    r.sim.ops().into_iter().filter(|o| o.kind == "memory_mapping").collect()
}

/// After the faults: decode off and on again retries everything; the result is the full
/// plan, and teardown leaves nothing.
fn recover_and_tear_down(r: &mut Rig, what: &str) {
    r.w(CMD, 2, MASTER);
    r.check();
    r.w(CMD, 2, MEM | MASTER);
    r.check();
    let cmd = r.r(CMD, 2);
    let rom_on = r.r(ROM, 4) & 1 != 0;
    let want =
        r.dm.bars.plan(cmd as u16 & MEM as u16 != 0, cmd as u16 & IO as u16 != 0, rom_on, r.dm.caps.msix.as_ref());
    assert_eq!(r.dm.mapper.current(), &want, "{what}: not recovered");
    r.check_frames_are_own();
    assert_eq!(r.p2m().len(), 124 + 2 + 1, "{what}");
    r.teardown();
}

#[test]
fn memory_mapping_failing_at_any_step_or_pair_of_steps_stays_consistent() {
    let mut clean = Rig::dump("15b3_1007_");
    cx3_script(&mut clean);
    let n = mm_calls(&clean).len() as u64;
    assert!(n >= 20, "the script makes {n} memory_mapping calls");
    assert_eq!(clean.dm.stats.map_errors, 0);

    let mut runs: Vec<Vec<u64>> = (1..=n).map(|a| vec![a]).collect();
    for a in 1..=n {
        for b in a + 1..=n {
            runs.push(vec![a, b]);
        }
    }
    for fail in runs {
        let what = format!("memory_mapping failing at call(s) {fail:?}");
        eprintln!("{what}"); // context for a failing check()
        let mut r = Rig::dump("15b3_1007_");
        let before = mm_calls(&r).len();
        assert_eq!(before, 0);
        // Faults of one kind count down together, and the call one of them fails does not
        // count for the others: the k-th (from 0) fires on call `countdown + k`. Checked
        // below against the calls that did fail.
        for (k, &c) in fail.iter().enumerate() {
            r.sim.fail_nth("memory_mapping", c - k as u64, Errno::ENOMEM);
        }
        cx3_script(&mut r);
        // Finish off any fault the script did not reach (a failed add makes fewer calls).
        let mut spins = 0;
        while mm_calls(&r).iter().filter(|o| o.error.is_some()).count() < fail.len() && spins < 8 {
            r.w(CMD, 2, MASTER);
            r.w(CMD, 2, MEM | MASTER);
            r.check();
            spins += 1;
        }
        let failed: Vec<u64> =
            mm_calls(&r).iter().enumerate().filter(|(_, o)| o.error.is_some()).map(|(i, _)| i as u64 + 1).collect();
        assert_eq!(failed, fail, "{what}: the calls that failed");
        assert!(r.dm.stats.map_errors > 0, "{what}: the failure was not reported");
        recover_and_tear_down(&mut r, &what);
    }
}

#[test]
fn io_range_calls_failing_at_any_step_stay_consistent() {
    for kind in ["map_io_range", "unmap_io_range"] {
        let mut clean = Rig::dump("15b3_1007_");
        cx3_script(&mut clean);
        let n = clean.sim.ops().iter().filter(|o| o.kind == kind).count() as u64;
        assert!(n >= 2, "{kind}: {n} calls");
        for c in 1..=n {
            let what = format!("{kind} failing at call {c}");
            eprintln!("{what}");
            let mut r = Rig::dump("15b3_1007_");
            r.sim.fail_nth(kind, c, Errno::ENOSPC);
            cx3_script(&mut r);
            assert!(r.sim.ops().iter().any(|o| o.kind == kind && o.error.is_some()), "{what}: not hit");
            recover_and_tear_down(&mut r, &what);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Teardown: reverse order, and faults during it or right before it.

/// i82576 brought up, then its ROM enabled and BAR0 moved: what was made last is BAR0's
/// new page, then the ROM; firmware's mappings are the oldest.
fn i82576_up_rom_and_moved(r: &mut Rig) {
    i82576_up(r);
    r.w(ROM, 4, 0xf001_0001);
    r.w(BAR0, 4, 0xf002_0000);
    r.check();
    r.ops();
}

/// The removals of [`i82576_up_rom_and_moved`]'s teardown, in order.
fn i82576_teardown_ops(res: &HostResources) -> Vec<String> {
    let f = |i: usize| res.bars[i].unwrap().base / PAGE;
    let rom = res.rom.unwrap().base / PAGE;
    vec![
        mm(0xf0020, f(0), 1, false),
        mm(0xf0010, rom, 16, false),
        untrap(0xf000_6000, PAGE),
        untrap(0xf000_4000, PAGE),
        pio(0xc000, 0x1020, 256, false),
        mm(0xf0007, f(3) + 3, 1, false),
        mm(0xf0005, f(3) + 1, 1, false),
        mm(0xf0001, f(1), 1, false),
    ]
}

#[test]
fn teardown_removes_everything_in_reverse_creation_order() {
    let mut r = Rig::dump(I82576);
    i82576_up_rom_and_moved(&mut r);
    // Not gfn order (0xf0001 would come first) and not the kind order of a diff (ports
    // last): the newest mapping goes first, the MSI-X traps before the pages around them.
    let want = i82576_teardown_ops(&r.res);
    assert_eq!(r.teardown(), want);
}

/// How the simulator prints an operation that failed with EFAULT.
fn efault(op: &str) -> String {
    format!("{op} -> EFAULT")
}

/// What one failed removal during teardown leaves: exactly the thing whose removal failed.
#[derive(Debug, PartialEq)]
struct Left {
    p2m: Vec<(u64, u64)>,
    traps: Vec<(u64, u64)>,
    ports: Vec<(u32, u32, u32)>,
}

fn left(r: &Rig) -> Left {
    Left { p2m: r.p2m(), traps: r.traps(), ports: r.sim.ioport_map(r.domid) }
}

#[test]
fn teardown_goes_on_past_a_failed_removal_and_leaves_exactly_what_failed() {
    let res = Rig::dump(I82576).res;
    let clean = i82576_teardown_ops(&res);
    let f = |i: usize| res.bars[i].unwrap().base / PAGE;
    let rom = res.rom.unwrap().base / PAGE;
    // (kind, n-th call of that kind during teardown, what stays behind)
    let none = || Left { p2m: vec![], traps: vec![], ports: vec![] };
    let cases: Vec<(&'static str, u64, Left)> = vec![
        ("memory_mapping", 1, Left { p2m: vec![(0xf0020, f(0))], ..none() }),
        ("memory_mapping", 2, Left { p2m: (0..16).map(|i| (0xf0010 + i, rom + i)).collect(), ..none() }),
        ("memory_mapping", 3, Left { p2m: vec![(0xf0007, f(3) + 3)], ..none() }),
        ("memory_mapping", 5, Left { p2m: vec![(0xf0001, f(1))], ..none() }),
        ("unmap_io_range", 1, Left { traps: vec![(0xf000_6000, 0xf000_6fff)], ..none() }),
        ("unmap_io_range", 2, Left { traps: vec![(0xf000_4000, 0xf000_4fff)], ..none() }),
        ("ioport_mapping", 1, Left { ports: vec![(0xc000, 0x1020, 256)], ..none() }),
    ];
    for (kind, n, stays) in cases {
        let what = format!("{kind} failing at its call {n} of the teardown");
        let mut r = Rig::dump(I82576);
        i82576_up_rom_and_moved(&mut r);
        let failures = r.dm.mapper.stats.failures;
        r.sim.fail_nth(kind, n, Errno::EFAULT);
        let errors = r.dm.teardown(&mut r.xen);
        // Reported: one error, naming the operation.
        assert_eq!(errors.len(), 1, "{what}: {errors:?}");
        assert_eq!((errors[0].op, errors[0].errno), (kind, Errno::EFAULT), "{what}");
        assert_eq!(r.dm.mapper.stats.failures, failures + 1, "{what}");
        // Every removal was still attempted, in the same order; only that one failed.
        let nth = clean.iter().filter(|o| o.starts_with(kind)).nth(n as usize - 1).unwrap();
        let want: Vec<String> = clean.iter().map(|o| if o == nth { efault(o) } else { o.clone() }).collect();
        assert_eq!(r.ops(), want, "{what}");
        // Exactly that is left in Xen, and the record says so.
        assert_eq!(left(&r), stays, "{what}");
        r.check();
        // A second teardown retries it and leaves nothing.
        let again = r.teardown();
        assert_eq!(again, [nth.as_str()], "{what}: the retry");
    }
}

#[test]
fn a_teardown_failing_halfway_through_a_long_run_leaves_only_the_frames_not_yet_removed() {
    // ConnectX-3: BAR0's first run is 124 frames; Xen removes 64 per call, the second call
    // (for the last 60) fails.
    let mut r = Rig::dump("15b3_1007_");
    r.firmware(&[(0, 0xe000_0000), (2, 0xe010_0000)], None, MEM | MASTER);
    r.ops();
    let f = r.res.bars[0].unwrap().base / PAGE;
    let b2 = r.res.bars[2].unwrap().base / PAGE;
    r.sim.fail_nth("memory_mapping", 4, Errno::EFAULT);
    let errors = r.dm.teardown(&mut r.xen);
    assert_eq!(errors.iter().map(|e| e.op).collect::<Vec<_>>(), ["memory_mapping"]);
    assert_eq!(
        r.ops(),
        [
            untrap(0xe007_c000, 0x2000),
            mm(0xe0100, b2, 1, false),
            mm(0xe007e, f + 0x7e, 2, false),
            mm(0xe0000, f, 124, false),
            efault(&mm(0xe0040, f + 0x40, 60, false)),
        ]
    );
    let rest = MmioRun { gfn: 0xe0040, mfn: f + 0x40, nr: 60 };
    assert_eq!(r.p2m(), pages(&[rest]), "the 64 frames removed are gone, the 60 others stay");
    assert_eq!(r.dm.mapper.current().mmio, [rest]);
    assert_eq!(r.traps(), vec![]);
    r.check();
    assert_eq!(r.teardown(), [mm(0xe0040, f + 0x40, 60, false)]);
}

fn nvme_start(sim: &Sim) -> (SimXen, DomId, xenpt::runner::Instance) {
    let nvme = EmulatedNvme::new(NVME_SBDF, NVME_BAR0, 16);
    sim.add_device(Arc::new(nvme.clone()));
    let domid = sim.create_domain(GuestKind::Hvm, 1, 1 << 20);
    sim.assign_device(domid, NVME_SBDF).unwrap();
    let mut xen = sim.xen();
    let opts = DeviceOptions::new(domid, Sbdf::new(0, 0, 4, 0), Profile::Hvm);
    let inst = xenpt::runner::start(&mut xen, Box::new(nvme.host()), opts).unwrap();
    (xen, domid, inst)
}

#[test]
fn shutdown_reports_failed_removals_and_still_destroys_the_server() {
    let sim = Sim::default();
    let (mut xen, domid, mut inst) = nvme_start(&sim);
    inst.device.config_write(&mut xen, BAR0, 4, 0xf000_0000);
    inst.device.config_write(&mut xen, BAR0 + 4, 4, 0);
    inst.device.config_write(&mut xen, CMD, 2, MEM | MASTER);
    assert_eq!(sim.p2m_mmio(domid).len(), 2);
    let from = sim.op_count();
    sim.fail_nth("unmap_io_range", 1, Errno::EFAULT);
    sim.fail_nth("memory_mapping", 1, Errno::EFAULT);
    let errors = xenpt::runner::shutdown(&mut xen, &mut inst);
    let ops: Vec<_> = sim.ops()[from..].iter().map(|o| (o.to_string(), o.error.is_some())).collect();
    // Both removals failed and both are reported; the server is destroyed all the same,
    // which takes its ranges (the MSI-X trap) with it. The two frames stay mapped: the
    // caller (xenpt run) logs the errors; a frame Xen would not remove cannot be forced.
    assert_eq!(
        errors.iter().map(|e| (e.op, e.errno)).collect::<Vec<_>>(),
        [("unmap_io_range", Errno::EFAULT), ("memory_mapping", Errno::EFAULT)]
    );
    let failed: Vec<_> = ops.iter().filter(|(_, e)| *e).map(|(o, _)| o.clone()).collect();
    assert_eq!(failed, [efault(&untrap(0xf000_2000, 0x2000)), efault(&mm(0xf0000, 0xfe000, 2, false))]);
    let destroyed = ops.iter().position(|(o, e)| o.starts_with("destroy_ioreq_server") && !e);
    let unmapped = ops.iter().position(|(o, _)| o.starts_with("memory_mapping"));
    assert!(destroyed > unmapped && unmapped.is_some(), "{ops:?}");
    assert_eq!(sim.ioreq_server_count(domid), 0);
    assert_eq!(sim.ioreq_ranges(domid), vec![]);
    assert_eq!(sim.p2m_mmio(domid), vec![(0xf0000, 0xfe000), (0xf0001, 0xfe001)]);
    assert_eq!(inst.device.mapper.current().mmio, [MmioRun { gfn: 0xf0000, mfn: 0xfe000, nr: 2 }]);
}

#[test]
fn a_fault_during_a_bar_move_then_teardown_leaves_nothing_mapped() {
    // The unmap at the old address fails: the old frames stay (recorded), the new address
    // is mapped anyway (no gfn in common), and teardown with no recovery in between takes
    // both away, newest first.
    let mut r = Rig::nvme();
    nvme_up(&mut r, 0xf000_0000);
    r.ops();
    r.sim.fail_nth("memory_mapping", 1, Errno::EFAULT);
    r.w(BAR0, 4, 0xe000_0000);
    r.w(BAR0 + 4, 4, 0);
    assert_eq!(
        r.ops(),
        [
            untrap(0xf000_2000, 0x2000),
            efault(&mm(0xf0000, 0xfe000, 2, false)),
            mm(0xe0000, 0xfe000, 2, true),
            trap(0xe000_2000, 0x2000)
        ]
    );
    assert_eq!(r.p2m(), vec![(0xe0000, 0xfe000), (0xe0001, 0xfe001), (0xf0000, 0xfe000), (0xf0001, 0xfe001)]);
    r.check();
    assert_eq!(
        r.teardown(),
        [untrap(0xe000_2000, 0x2000), mm(0xe0000, 0xfe000, 2, false), mm(0xf0000, 0xfe000, 2, false)]
    );

    // Every memory_mapping and io-range call of the ConnectX-3 script failing in turn
    // (BAR moves with decode on, one onto another BAR's old place, where a failed unmap
    // makes the next map skip; a partial add rolled back; the ROM), each followed directly
    // by teardown: nothing may be left.
    let mut clean = Rig::dump("15b3_1007_");
    cx3_script(&mut clean);
    for kind in ["memory_mapping", "map_io_range", "unmap_io_range"] {
        let n = clean.sim.ops().iter().filter(|o| o.kind == kind).count() as u64;
        assert!(n >= 2, "{kind}: {n} calls");
        for c in 1..=n {
            eprintln!("{kind} failing at call {c}, then teardown");
            let mut r = Rig::dump("15b3_1007_");
            r.sim.fail_nth(kind, c, Errno::ENOMEM);
            cx3_script(&mut r);
            assert!(r.sim.ops().iter().any(|o| o.kind == kind && o.error.is_some()), "{kind} {c}: not hit");
            r.teardown();
        }
    }
}

// ---------------------------------------------------------------------------------------
// XSA-461: a BAR smaller than a page is passed through only if no other device's BAR is
// in its page (the guest gets the whole page).

/// A fake /sys/bus/pci/devices: one directory per function with the files the sysfs
/// backend reads (config, resource, ids).
struct FakeSysfs(tempfile::TempDir);

/// `resource` flags as Linux prints them for a 32-bit memory BAR and a ROM.
const RES_MEM: u64 = 0x40200;
const RES_ROM: u64 = 0x46200;

impl FakeSysfs {
    fn new() -> Self {
        FakeSysfs(tempfile::tempdir().unwrap())
    }

    /// Write (or rewrite) a type-0 function: `lines` are (resource line, start, size,
    /// flags); line 6 is the ROM. Its config space holds the same BARs, decode off.
    fn put(&self, sbdf: Sbdf, class: u32, lines: &[(usize, u64, u64, u64)]) {
        let dir = self.0.path().join(sbdf.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = vec![0u8; 256];
        cfg[0..4].copy_from_slice(&0x1e31_8086u32.to_le_bytes());
        cfg[8..12].copy_from_slice(&(class << 8 | 0x04).to_le_bytes());
        let mut res = vec![(0u64, 0u64, 0u64); 13];
        for &(i, start, size, flags) in lines {
            res[i] = (start, start + size - 1, flags);
            let off = if i == 6 { 0x30 } else { 0x10 + 4 * i };
            cfg[off..off + 4].copy_from_slice(&(start as u32).to_le_bytes());
        }
        let text: String = res.iter().map(|(s, e, f)| format!("{s:#018x} {e:#018x} {f:#018x}\n")).collect();
        std::fs::write(dir.join("resource"), text).unwrap();
        std::fs::write(dir.join("config"), cfg).unwrap();
        for (name, v) in [
            ("vendor", "0x8086".to_string()),
            ("device", "0x1e31".to_string()),
            ("class", format!("{class:#08x}")),
            ("subsystem_vendor", "0x8086".to_string()),
            ("subsystem_device", "0x2057".to_string()),
            ("revision", "0x04".to_string()),
            ("irq", "0".to_string()),
        ] {
            std::fs::write(dir.join(name), format!("{v}\n")).unwrap();
        }
    }

    fn open(&self, sbdf: Sbdf) -> SysfsDevice {
        SysfsDevice::open_at(self.0.path(), sbdf, true).unwrap()
    }
}

const EHCI: Sbdf = Sbdf::new(0, 0, 0x1a, 0);
const SMBUS: Sbdf = Sbdf::new(0, 0, 0x1f, 3);
const NIC: Sbdf = Sbdf::new(0, 0, 0x19, 0);
const EHCI_BAR: u64 = 0xf7e1_b000;

/// A PCH-like machine: an EHCI controller with a 1 KiB BAR0, an SMBus controller with a
/// 256-byte BAR0 at `smbus`, and a NIC with a 128 KiB BAR0 elsewhere.
fn pch(smbus: u64) -> FakeSysfs {
    let fs = FakeSysfs::new();
    fs.put(EHCI, 0x0c0320, &[(0, EHCI_BAR, 0x400, RES_MEM)]);
    fs.put(SMBUS, 0x0c0500, &[(0, smbus, 0x100, RES_MEM)]);
    fs.put(NIC, 0x020000, &[(0, 0xf7d0_0000, 0x2_0000, RES_MEM)]);
    fs
}

fn hvm_opts(domid: DomId) -> DeviceOptions {
    DeviceOptions::new(domid, Sbdf::new(0, 0, 4, 0), Profile::Hvm)
}

#[test]
fn a_sub_page_bar_sharing_its_page_with_another_device_is_refused_naming_it() {
    let fs = pch(EHCI_BAR + 0x800);
    let sim = Sim::default();
    let domid = sim.create_domain(GuestKind::Hvm, 1, 1 << 20);
    let mut xen = sim.xen();
    let e = match xenpt::runner::start(&mut xen, Box::new(fs.open(EHCI)), hvm_opts(domid)) {
        Err(StartError::Device(e)) => e,
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("a BAR sharing its page with another device was accepted"),
    };
    assert!(matches!(e, DeviceError::SharedPage { sbdf: EHCI, bar: 0, base: EHCI_BAR, size: 0x400, .. }), "{e:?}");
    let msg = e.to_string();
    // Names the neighbour (not the NIC, which is in other pages), XSA-461 and the remedy.
    assert!(msg.contains("0000:00:1f.3"), "{msg}");
    assert!(!msg.contains("0000:00:19.0"), "{msg}");
    assert!(msg.contains("XSA-461"), "{msg}");
    assert!(msg.contains("pci=resource_alignment=0000:00:1a.0"), "{msg}");
    // Nothing was left behind: the ioreq server created before the check is destroyed
    // and nothing was mapped.
    assert_eq!(sim.ioreq_server_count(domid), 0);
    assert_eq!(sim.p2m_mmio(domid), vec![]);

    // The neighbour, in the second half of the page, is refused before any page check:
    // a BAR not at the start of its page cannot appear at the start of the guest's.
    let e = DeviceModel::new(Box::new(fs.open(SMBUS)), 0, hvm_opts(domid)).err().unwrap();
    assert!(matches!(e, DeviceError::UnalignedBar { sbdf: SMBUS, bar: 0, .. }), "{e:?}");
    assert!(e.to_string().contains("pci=resource_alignment=0000:00:1f.3"), "{e}");
}

#[test]
fn the_same_sub_page_bar_alone_in_its_page_is_accepted_and_maps_that_one_page() {
    // The SMBus BAR moved to the next page, and two more neighbours touching the EHCI
    // page from either side (ending at its first byte, starting right after its last):
    // none of them is in the page.
    let fs = pch(EHCI_BAR + PAGE);
    fs.put(Sbdf::new(0, 0, 0x1b, 0), 0x040300, &[(0, EHCI_BAR - 0x100, 0x100, RES_MEM)]);
    fs.put(Sbdf::new(0, 0, 0x1d, 0), 0x0c0320, &[(0, EHCI_BAR + 0x2000, 0x400, RES_MEM)]);
    let sim = Sim::default();
    let domid = sim.create_domain(GuestKind::Hvm, 1, 1 << 20);
    let mut xen = sim.xen();
    xen.iomem_permission(domid, EHCI_BAR / PAGE, 1, true).unwrap();
    let mut r = Rig::build(sim, xen, domid, Box::new(fs.open(EHCI)), None);
    // The guest sees a 4 KiB BAR (a page is the unit Xen maps) and gets exactly the
    // device's page.
    r.firmware(&[(0, 0xe000_0000)], None, MEM | MASTER);
    assert_eq!(r.ops(), [mm(0xe0000, EHCI_BAR / PAGE, 1, true)]);
    assert_eq!(r.p2m(), vec![(0xe0000, EHCI_BAR / PAGE)]);
    r.check();
    r.check_frames_are_own();
    assert_eq!(r.teardown(), [mm(0xe0000, EHCI_BAR / PAGE, 1, false)]);

    // And back in the same page as the EHCI BAR, the SMBus BAR makes it refused again.
    fs.put(SMBUS, 0x0c0500, &[(0, EHCI_BAR + 0xf00, 0x100, RES_MEM)]);
    let e = DeviceModel::new(Box::new(fs.open(EHCI)), 0, hvm_opts(domid)).err().unwrap();
    assert!(e.to_string().contains("0000:00:1f.3"), "{e}");
}

#[test]
fn a_sub_page_rom_sharing_its_page_is_hidden_from_the_guest_not_fatal() {
    // A NIC with a full-page BAR0 and a 2 KiB ROM; the SMBus BAR in the ROM's page.
    const ROM_BASE: u64 = 0xf7e2_0000;
    let fs = FakeSysfs::new();
    let nic = |fs: &FakeSysfs| fs.put(NIC, 0x020000, &[(0, 0xf7e1_0000, PAGE, RES_MEM), (6, ROM_BASE, 0x800, RES_ROM)]);
    nic(&fs);
    fs.put(SMBUS, 0x0c0500, &[(0, ROM_BASE + 0x800, 0x100, RES_MEM)]);
    let sim = Sim::default();
    let domid = sim.create_domain(GuestKind::Hvm, 1, 1 << 20);
    let mut xen = sim.xen();
    xen.iomem_permission(domid, 0xf7e10, 1, true).unwrap();
    xen.iomem_permission(domid, ROM_BASE / PAGE, 1, true).unwrap();
    let mut r = Rig::build(sim.clone(), xen, domid, Box::new(fs.open(NIC)), None);
    assert_eq!(r.dm.resources.rom, None, "the ROM is dropped");
    assert!(r.dm.resources.bars[0].is_some(), "the device itself is passed through");
    // The guest sees no ROM: sizing reads 0, enabling maps nothing.
    r.w(ROM, 4, 0xffff_f800);
    assert_eq!(r.r(ROM, 4), 0);
    r.firmware(&[(0, 0xe000_0000)], None, MEM | MASTER);
    r.w(ROM, 4, 0xe010_0001);
    assert_eq!(r.ops(), [mm(0xe0000, 0xf7e10, 1, true)], "BAR0 only");
    r.teardown();

    // With the SMBus BAR elsewhere the ROM is offered (4 KiB to the guest) and maps its
    // page when enabled.
    fs.put(SMBUS, 0x0c0500, &[(0, 0xf7e3_0000, 0x100, RES_MEM)]);
    let xen = sim.xen();
    let mut r = Rig::build(sim, xen, domid, Box::new(fs.open(NIC)), None);
    assert_eq!(r.dm.resources.rom.map(|b| (b.base, b.size)), Some((ROM_BASE, 0x800)));
    r.firmware(&[(0, 0xe000_0000)], Some(0xe010_0000), MEM | MASTER);
    r.ops();
    r.w(ROM, 4, 0xe010_0001);
    assert_eq!(r.ops(), [mm(0xe0100, ROM_BASE / PAGE, 1, true)]);
    r.check();
    r.teardown();
}
