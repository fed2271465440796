//! The simulator must refuse what Xen refuses and crash what Xen crashes. One test per rule.

use std::sync::atomic::{AtomicU64, Ordering as AO};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::host::nvme::EmulatedNvme;
use crate::ioreq::event_loop::EventLoop;
use crate::ioreq::{IoHandler, IoreqServer, Request};

const DEV: Sbdf = Sbdf::new(0, 3, 0, 0);
const BAR0: u64 = 0xfe00_0000;

fn setup(kind: GuestKind) -> (Sim, DomId, EmulatedNvme) {
    let sim = Sim::default();
    let nvme = EmulatedNvme::new(DEV, BAR0, 64);
    sim.add_device(Arc::new(nvme.clone()));
    let d = sim.create_domain(kind, 2, 1 << 20);
    (sim, d, nvme)
}

#[test]
fn memory_mapping_needs_iomem_permission() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    let e = x.memory_mapping(d, 0xf0000, BAR0 >> 12, 1, true).unwrap_err();
    assert_eq!(e.errno, Errno::EPERM);
    sim.assign_device(d, DEV).unwrap();
    assert_eq!(x.memory_mapping(d, 0xf0000, BAR0 >> 12, 4, true).unwrap(), 4);
    // One frame past the BAR is not the guest's.
    assert_eq!(x.memory_mapping(d, 0xf0010, (BAR0 >> 12) + 4, 1, true).unwrap_err().errno, Errno::EPERM);
    x.iomem_permission(d, BAR0 >> 12, 4, false).unwrap();
    assert_eq!(x.memory_mapping(d, 0xf0000, BAR0 >> 12, 1, true).unwrap_err().errno, Errno::EPERM);
}

#[test]
fn remapping_a_gfn_to_a_different_mfn_crashes_the_guest() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let mut x = sim.xen();
    x.memory_mapping(d, 0xf0000, BAR0 >> 12, 1, true).unwrap();
    assert_eq!(x.memory_mapping(d, 0xf0000, BAR0 >> 12, 1, true).unwrap(), 1, "the identical mapping again is fine");
    assert!(sim.crashed(d).is_none());
    let e = x.memory_mapping(d, 0xf0000, (BAR0 >> 12) + 1, 1, true).unwrap_err();
    assert_eq!(e.errno, Errno::EPERM);
    let why = sim.crashed(d).expect("guest crashed");
    assert!(why.contains("not permitted"), "{why}");
    assert!(matches!(sim.guest(d).mmio_read(0, 0xf000_0000, 4), Err(guest::GuestError::Crashed(..))));
}

#[test]
fn memory_mapping_makes_partial_progress_like_x86_xen() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    x.iomem_permission(d, 0x100000, 200, true).unwrap();
    assert_eq!(x.memory_mapping(d, 0x80000, 0x100000, 200, true).unwrap(), MEMORY_MAPPING_BATCH);
    assert_eq!(sim.p2m_mmio(d).len(), 64);
    assert_eq!(x.memory_mapping(d, 0x80000, 0x100000, 0, true).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(x.memory_mapping(d, u64::MAX, 0x100000, 2, true).unwrap_err().errno, Errno::EINVAL);
}

#[test]
fn removal_follows_clear_mmio_p2m_entry() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let mut x = sim.xen();
    // Nothing mapped: "gfn_to_mfn failed".
    assert_eq!(x.memory_mapping(d, 0xf0000, BAR0 >> 12, 1, false).unwrap_err().errno, Errno::EINVAL);
    x.memory_mapping(d, 0xf0000, BAR0 >> 12, 2, true).unwrap();
    // A different mfn: Xen warns and removes the entry anyway.
    assert_eq!(x.memory_mapping(d, 0xf0000, (BAR0 >> 12) + 5, 1, false).unwrap(), 1);
    assert!(sim.violations()[0].contains("no mapping between mfn"));
    // Partly unmapped range: progress up to the hole, then EINVAL on the retry.
    assert_eq!(x.memory_mapping(d, 0xf0001, (BAR0 >> 12) + 1, 2, false).unwrap(), 1);
    assert!(sim.p2m_mmio(d).is_empty());
}

#[test]
fn pv_targets_ignore_memory_mapping_and_refuse_ioport_mapping_and_dm_ops() {
    let (sim, d, _) = setup(GuestKind::Pv);
    let mut x = sim.xen();
    assert_eq!(x.memory_mapping(d, 1, 1, 1, true).unwrap(), 1);
    assert!(sim.p2m_mmio(d).is_empty());
    assert_eq!(x.ioport_mapping(d, 0xc000, 0xc000, 8, true).unwrap_err().errno, Errno::EOPNOTSUPP);
    assert_eq!(x.create_ioreq_server(d, BufIoreq::Off).unwrap_err().errno, Errno::EINVAL);
}

#[test]
fn ioport_mapping_needs_permission_and_exact_removal() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    assert_eq!(x.ioport_mapping(d, 0xc000, 0xe000, 0x20, true).unwrap_err().errno, Errno::EPERM);
    x.ioport_permission(d, 0xe000, 0x20, true).unwrap();
    x.ioport_mapping(d, 0xc000, 0xe000, 0x20, true).unwrap();
    assert_eq!(x.ioport_mapping(d, 0xc000, 0xe000, 0x10, false).unwrap_err().errno, Errno::ENOENT);
    x.ioport_mapping(d, 0xc000, 0xe000, 0x20, false).unwrap();
    assert!(sim.ioport_map(d).is_empty());
}

#[test]
fn unknown_domain_is_esrch() {
    let sim = Sim::default();
    let mut x = sim.xen();
    assert_eq!(x.domain_info(42).unwrap_err().errno, Errno::ESRCH);
    assert_eq!(x.create_ioreq_server(42, BufIoreq::Off).unwrap_err().errno, Errno::ESRCH);
    assert_eq!(x.memory_mapping(42, 0, 0, 1, true).unwrap_err().errno, Errno::ESRCH);
}

fn msix_pirq(sim: &Sim, d: DomId, entry: u16) -> u32 {
    sim.xen().map_pirq(d, PirqMap::Msix { sbdf: DEV, entry, table_base: BAR0, pirq: None }).unwrap().pirq
}

#[test]
fn binding_an_unmapped_pirq_fails() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    let b = PtIrq::Msi { pirq: 99, gvec: 0x30, gflags: 0, gtable: 0 };
    // pt_irq_create_bind: an unmapped pirq fails irq_access_permitted.
    assert_eq!(x.bind_pt_irq(d, b).unwrap_err().errno, Errno::EPERM);
    assert_eq!(x.unbind_pt_irq(d, b).unwrap_err().errno, Errno::EPERM);
    assert_eq!(x.unmap_pirq(d, 99).unwrap_err().errno, Errno::EINVAL);
}

#[test]
fn map_pirq_refuses_unassigned_devices_and_double_maps() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    let req = PirqMap::Msix { sbdf: DEV, entry: 0, table_base: BAR0, pirq: None };
    assert_eq!(x.map_pirq(d, req).unwrap_err().errno, Errno::EINVAL, "not assigned to the domain");
    let other = PirqMap::Msi { sbdf: Sbdf::new(0, 9, 0, 0), pirq: None };
    assert_eq!(x.map_pirq(d, other).unwrap_err().errno, Errno::ENODEV);
    sim.assign_device(d, DEV).unwrap();
    x.map_pirq(d, req).unwrap();
    assert_eq!(x.map_pirq(d, req).unwrap_err().errno, Errno::EBUSY, "same entry twice");
    let zero = PirqMap::Msix { sbdf: DEV, entry: 1, table_base: 0, pirq: None };
    assert_eq!(x.map_pirq(d, zero).unwrap_err().errno, Errno::EINVAL);
    let wrong = PirqMap::Msix { sbdf: DEV, entry: 2, table_base: 0xdead_0000, pirq: None };
    x.map_pirq(d, wrong).unwrap();
    assert!(sim.violations()[0].contains("matches no BAR"), "XSA-337: a table base that is not the BAR is noticed");
    let multi = PirqMap::MultiMsi { sbdf: DEV, count: 3 };
    assert_eq!(x.map_pirq(d, multi).unwrap_err().errno, Errno::EINVAL);
    let m = x.map_pirq(d, PirqMap::MultiMsi { sbdf: DEV, count: 4 }).unwrap();
    assert_eq!(m.count, 4);
}

#[test]
fn unmapping_a_bound_pirq_is_a_recorded_violation() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let p = msix_pirq(&sim, d, 0);
    let mut x = sim.xen();
    x.bind_pt_irq(d, PtIrq::Msi { pirq: p, gvec: 0x30, gflags: 0, gtable: 0 }).unwrap();
    x.unmap_pirq(d, p).unwrap();
    assert_eq!(sim.violations().len(), 1);
    assert!(sim.violations()[0].contains("still bound"));
    assert!(sim.pirqs(d).is_empty(), "Xen force-unbinds and unmaps");
}

#[test]
fn msix_vectors_start_masked_msi_vectors_unmasked() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let mut x = sim.xen();
    let px = msix_pirq(&sim, d, 0);
    let pm = x.map_pirq(d, PirqMap::Msi { sbdf: DEV, pirq: None }).unwrap().pirq;
    assert_eq!(sim.pirq_guest_masked(d, px), Some(true));
    assert_eq!(sim.pirq_guest_masked(d, pm), Some(false));
}

#[test]
fn masking_follows_xen_bind_unbind_rules() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let p = msix_pirq(&sim, d, 0);
    let mut x = sim.xen();
    let bind = |gflags| PtIrq::Msi { pirq: p, gvec: 0x30, gflags, gtable: 0 };
    x.bind_pt_irq(d, bind(0)).unwrap();
    assert_eq!(sim.pirq_guest_masked(d, p), Some(true), "bound without UNMASKED stays masked");
    x.bind_pt_irq(d, bind(gflags::UNMASKED)).unwrap();
    assert_eq!(sim.pirq_guest_masked(d, p), Some(false), "UNMASKED unmasks");
    x.bind_pt_irq(d, bind(0)).unwrap();
    assert_eq!(sim.pirq_guest_masked(d, p), Some(false), "a re-bind without UNMASKED does not mask");
    x.unbind_pt_irq(d, bind(0)).unwrap();
    assert_eq!(sim.pirq_guest_masked(d, p), Some(true), "unbind masks");
}

#[test]
fn rebind_updates_vector_in_place_but_the_first_gtable_sticks() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let p0 = msix_pirq(&sim, d, 0);
    let p1 = msix_pirq(&sim, d, 1);
    let mut x = sim.xen();
    x.bind_pt_irq(d, PtIrq::Msi { pirq: p0, gvec: 0x30, gflags: 0, gtable: 0xf000_2000 }).unwrap();
    x.bind_pt_irq(d, PtIrq::Msi { pirq: p0, gvec: 0x31, gflags: 2, gtable: 0xe000_2000 }).unwrap();
    assert_eq!(sim.pirq_binding(d, p0), Some((0x31, 2)));
    assert_eq!(sim.msixtbl_gtable(d, DEV), Some(0xf000_2000), "re-bind never moves the gtable");
    x.bind_pt_irq(d, PtIrq::Msi { pirq: p1, gvec: 0x32, gflags: 0, gtable: 0xe000_2000 }).unwrap();
    assert_eq!(sim.msixtbl_gtable(d, DEV), Some(0xf000_2000), "per device, the first bind's gtable");
    x.unbind_pt_irq(d, PtIrq::Msi { pirq: p0, gvec: 0, gflags: 0, gtable: 0 }).unwrap();
    x.unbind_pt_irq(d, PtIrq::Msi { pirq: p1, gvec: 0, gflags: 0, gtable: 0 }).unwrap();
    assert_eq!(sim.msixtbl_gtable(d, DEV), None);
    x.bind_pt_irq(d, PtIrq::Msi { pirq: p1, gvec: 0x32, gflags: 0, gtable: 0xe000_2000 }).unwrap();
    assert_eq!(sim.msixtbl_gtable(d, DEV), Some(0xe000_2000), "only after every vector was unbound");
}

#[test]
fn intx_binding_needs_a_gsi_pirq_and_an_hvm_guest() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    let p = x.map_pirq(d, PirqMap::Gsi { gsi: 11, pirq: None }).unwrap().pirq;
    assert_eq!(p, 11, "GSI pirq defaults to the GSI number");
    x.bind_pt_irq(d, PtIrq::PciIntx { pirq: p, bus: 0, device: 4, intx: 0 }).unwrap();
    assert_eq!(
        x.bind_pt_irq(d, PtIrq::PciIntx { pirq: p, bus: 0, device: 4, intx: 4 }).unwrap_err().errno,
        Errno::EINVAL
    );
    let (sim2, d2, _) = setup(GuestKind::Pvh);
    let mut x2 = sim2.xen();
    let p2 = x2.map_pirq(d2, PirqMap::Gsi { gsi: 11, pirq: None }).unwrap().pirq;
    assert_eq!(
        x2.bind_pt_irq(d2, PtIrq::PciIntx { pirq: p2, bus: 0, device: 4, intx: 0 }).unwrap_err().errno,
        Errno::EINVAL,
        "a PVH guest has no IO-APIC"
    );
}

#[test]
fn ninth_ioreq_server_is_enospc() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    for _ in 0..MAX_NR_IOREQ_SERVERS {
        x.create_ioreq_server(d, BufIoreq::Off).unwrap();
    }
    assert_eq!(x.create_ioreq_server(d, BufIoreq::Off).unwrap_err().errno, Errno::ENOSPC);
}

#[test]
fn ioreq_servers_belong_to_their_creator_and_ranges_do_not_overlap() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut a = sim.xen();
    let mut b = sim.xen();
    let id = a.create_ioreq_server(d, BufIoreq::Off).unwrap();
    assert_eq!(b.map_ioreq_pages(d, id).err().unwrap().errno, Errno::EPERM);
    assert_eq!(b.destroy_ioreq_server(d, id).unwrap_err().errno, Errno::EPERM);
    a.map_io_range(d, id, IoRange::memory(0x1000, 0x1000)).unwrap();
    assert_eq!(a.map_io_range(d, id, IoRange::memory(0x1800, 0x10)).unwrap_err().errno, Errno::EEXIST);
    let bad = IoRange { kind: IoRangeKind::Memory, start: 2, end: 1 };
    assert_eq!(a.map_io_range(d, id, bad).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(a.unmap_io_range(d, id, IoRange::memory(0x5000, 1)).unwrap_err().errno, Errno::ENOENT);
    assert!(a.map_ioreq_pages(d, id).unwrap().bufioreq.is_none(), "BUFIOREQ_OFF has no ring");
    let id2 = a.create_ioreq_server(d, BufIoreq::Atomic).unwrap();
    let pages = a.map_ioreq_pages(d, id2).unwrap();
    assert!(pages.bufioreq.is_some() && pages.bufioreq_port.is_some());
}

#[test]
fn unclaimed_mmio_and_config_space_read_all_ones() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let g = sim.guest(d);
    assert_eq!(g.mmio_read(0, 0xf000_0000, 4).unwrap(), 0xffff_ffff);
    assert_eq!(g.mmio_read(0, 0xf000_0000, 2).unwrap(), 0xffff);
    g.mmio_write(0, 0xf000_0000, 4, 1).unwrap();
    assert_eq!(g.cfg_read(0, Sbdf::new(0, 0, 4, 0), 0, 4).unwrap(), 0xffff_ffff);
    assert_eq!(g.pio_read(0, 0x1234, 1).unwrap(), 0xff);
}

#[test]
fn fault_injection_fails_exactly_the_nth_call() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    sim.fail_nth("iomem_permission", 2, Errno::ENOMEM);
    x.iomem_permission(d, 1, 1, true).unwrap();
    assert_eq!(x.iomem_permission(d, 1, 1, true).unwrap_err().errno, Errno::ENOMEM);
    x.iomem_permission(d, 1, 1, true).unwrap();
    let ops = sim.ops();
    assert_eq!(ops.iter().filter(|o| o.kind == "iomem_permission").count(), 3);
    assert_eq!(ops[1].error, Some(Errno::ENOMEM));
}

#[test]
fn gsi_permission_does_not_exist_before_xen_4_20() {
    let sim = Sim::new(XenVersion { major: 4, minor: 17 });
    let d = sim.create_domain(GuestKind::Hvm, 1, 4096);
    assert_eq!(sim.xen().gsi_permission(d, 11, true).unwrap_err().errno, Errno::EOPNOTSUPP);
    let sim = Sim::new(XenVersion { major: 4, minor: 20 });
    let d = sim.create_domain(GuestKind::Hvm, 1, 4096);
    sim.xen().gsi_permission(d, 11, true).unwrap();
}

/// A device model that records what reaches it.
struct Recorder {
    seen: Arc<Mutex<Vec<Request>>>,
    reads: u64,
}

impl IoHandler for Recorder {
    fn handle(&mut self, _xen: &mut dyn Xen, req: Request) -> u64 {
        self.seen.lock().unwrap().push(req);
        self.reads
    }
}

/// Run a recording device model on `range` in its own thread; returns what it saw and a
/// stop function.
fn recording_dm(sim: &Sim, d: DomId, ranges: Vec<IoRange>) -> (Arc<Mutex<Vec<Request>>>, impl FnOnce()) {
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let seen2 = seen.clone();
    let sim2 = sim.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut x = sim2.xen();
        let mut s = IoreqServer::create(&mut x, d, 2).unwrap();
        for r in ranges {
            s.map_range(&mut x, r).unwrap();
        }
        s.enable(&mut x).unwrap();
        let mut ev = EventLoop::new(&x).unwrap();
        tx.send(ev.stopper()).unwrap();
        let mut rec = Recorder { seen: seen2, reads: 0x1234_5678 };
        ev.run(&mut x, &mut s, &mut rec).unwrap();
        s.destroy(&mut x);
    });
    let stop = rx.recv().unwrap();
    (seen, move || {
        stop.wake().unwrap();
        h.join().unwrap();
    })
}

#[test]
fn mmio_reaches_a_server_only_inside_its_ranges() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let (seen, stop) = recording_dm(&sim, d, vec![IoRange::memory(0xf000_2000, 0x1000)]);
    let g = sim.guest(d);
    assert_eq!(g.mmio_read(0, 0xf000_2004, 4).unwrap(), 0x1234_5678);
    assert_eq!(g.mmio_read(0, 0xf000_3000, 4).unwrap(), 0xffff_ffff, "one byte past the range: null handler");
    g.mmio_write(1, 0xf000_2ffc, 4, 7).unwrap();
    stop();
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        vec![
            Request::Mmio { addr: 0xf000_2004, size: 4, write: None },
            Request::Mmio { addr: 0xf000_2ffc, size: 4, write: Some(7) }
        ]
    );
}

#[test]
fn msixtbl_handles_mask_of_bound_entries_and_replays_unmask_after_a_change() {
    let (sim, d, nvme) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let gtable = 0xf000_2000;
    let (seen, stop) = recording_dm(&sim, d, vec![IoRange::memory(gtable, 0x1000)]);
    let p = msix_pirq(&sim, d, 0);
    let mut x = sim.xen();
    let dest = 0u32; // vCPU 0
    x.bind_pt_irq(d, PtIrq::Msi { pirq: p, gvec: 0x40, gflags: dest, gtable }).unwrap();
    let g = sim.guest(d);
    // Plain unmask of a bound entry: Xen handles it, the device model never sees it.
    g.mmio_write(0, gtable + 12, 4, 0).unwrap();
    assert_eq!(sim.pirq_guest_masked(d, p), Some(false));
    assert_eq!(g.mmio_read(0, gtable + 12, 4).unwrap(), 0, "vector control read answered by Xen");
    g.mmio_write(0, gtable + 12, 4, 1).unwrap();
    assert_eq!(sim.pirq_guest_masked(d, p), Some(true));
    assert!(seen.lock().unwrap().is_empty(), "mask/unmask of a bound entry never reaches the device model");
    // Address/data writes are forwarded, and noted.
    g.mmio_write(0, gtable, 4, 0xfee0_0000).unwrap();
    assert!(g.msixtbl_changed(DEV).contains(&0));
    // An interrupt while masked stays pending...
    let bus = guest::SimBus { sim: &sim, sbdf: DEV };
    machine::DeviceBus::signal_msix(&bus, 0);
    assert!(g.pending_vectors(0).is_empty());
    // ...and the unmask after a change goes to the device model first, then Xen replays
    // it: the vector is unmasked and the pending interrupt delivered.
    g.mmio_write(0, gtable + 12, 4, 0).unwrap();
    assert_eq!(sim.pirq_guest_masked(d, p), Some(false));
    assert!(g.msixtbl_changed(DEV).is_empty());
    assert_eq!(g.wait_interrupt(0, Duration::from_secs(1)).unwrap(), Some(0x40));
    stop();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "the address write and the replayed unmask: {seen:?}");
    let _ = nvme;
}

#[test]
fn interrupts_reach_the_vcpu_named_by_the_destination_id() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let p = msix_pirq(&sim, d, 3);
    let mut x = sim.xen();
    // Destination APIC ID 2 = vCPU 1.
    x.bind_pt_irq(d, PtIrq::Msi { pirq: p, gvec: 0x55, gflags: 2 | gflags::UNMASKED, gtable: 0 }).unwrap();
    let bus = guest::SimBus { sim: &sim, sbdf: DEV };
    machine::DeviceBus::signal_msix(&bus, 3);
    let g = sim.guest(d);
    assert!(g.pending_vectors(0).is_empty());
    assert_eq!(g.wait_interrupt(1, Duration::from_secs(1)).unwrap(), Some(0x55));
    // An entry with no pirq is dropped and recorded.
    machine::DeviceBus::signal_msix(&bus, 9);
    assert!(sim.dropped_irqs().iter().any(|s| s.contains("entry 9")));
    // SMI delivery mode is not something Xen delivers.
    x.bind_pt_irq(d, PtIrq::Msi { pirq: p, gvec: 0x55, gflags: 2 | 0x2000, gtable: 0 }).unwrap();
    machine::DeviceBus::signal_msix(&bus, 3);
    assert!(sim.dropped_irqs().iter().any(|s| s.contains("delivery mode 2")));
}

#[test]
fn a_request_arriving_while_another_vcpu_is_in_flight_is_served_in_turn() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    let mut server = IoreqServer::create(&mut x, d, 2).unwrap();
    server.map_range(&mut x, IoRange::memory(0x9000_0000, 0x1000)).unwrap();
    server.enable(&mut x).unwrap();
    let page = x.map_ioreq_pages(d, server.id()).unwrap().ioreq;

    struct Nested {
        sim: Sim,
        d: DomId,
        page: SharedPage,
        second: Option<std::thread::JoinHandle<u64>>,
        order: Vec<u64>,
    }
    impl IoHandler for Nested {
        fn handle(&mut self, _x: &mut dyn Xen, req: Request) -> u64 {
            let Request::Mmio { addr, .. } = req else { panic!("{req:?}") };
            self.order.push(addr);
            if addr == 0x9000_0000 {
                // While vCPU 0's request is INPROCESS, vCPU 1 issues its own.
                let g = self.sim.guest(self.d);
                self.second = Some(std::thread::spawn(move || g.mmio_read(1, 0x9000_0008, 4).unwrap()));
                let s1 = crate::ioreq::slot::Slot::new(&self.page, 1);
                while s1.state() != STATE_IOREQ_READY {
                    std::thread::yield_now();
                }
                assert_eq!(crate::ioreq::slot::Slot::new(&self.page, 0).state(), STATE_IOREQ_INPROCESS);
            }
            addr & 0xff
        }
    }
    let g = sim.guest(d);
    let first = std::thread::spawn(move || g.mmio_read(0, 0x9000_0000, 4).unwrap());
    let mut h = Nested { sim: sim.clone(), d, page, second: None, order: Vec::new() };
    let served = AtomicU64::new(0);
    while served.load(AO::Relaxed) < 2 {
        served.fetch_add(server.poll(&mut x, &mut h).unwrap() as u64, AO::Relaxed);
    }
    assert_eq!(first.join().unwrap(), 0x00);
    assert_eq!(h.second.take().unwrap().join().unwrap(), 0x08);
    assert_eq!(h.order, vec![0x9000_0000, 0x9000_0008]);
    assert!(server.stats.spurious >= 2, "the bind-time events are tolerated as spurious");
    assert!(server.destroy(&mut x).is_empty());
}

#[test]
fn answering_with_state_none_crashes_the_guest() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    let mut server = IoreqServer::create(&mut x, d, 1).unwrap();
    server.map_range(&mut x, IoRange::port(0x510, 2)).unwrap();
    server.enable(&mut x).unwrap();
    // Answer with an illegal state: NONE after notification crashes the guest.
    let page = x.map_ioreq_pages(d, server.id()).unwrap().ioreq;
    let g = sim.guest(d);
    let t = std::thread::spawn(move || g.pio_read(0, 0x510, 2));
    let slot = crate::ioreq::slot::Slot::new(&page, 0);
    while slot.state() != STATE_IOREQ_READY {
        std::thread::yield_now();
    }
    page.atomic_u8(IOREQ_FLAGS_OFFSET).store(STATE_IOREQ_NONE, std::sync::atomic::Ordering::Release);
    let mut ports = Vec::new();
    x.evtchn_pending(&mut ports, Readiness::Edge).unwrap();
    for p in ports {
        x.evtchn_notify(p).unwrap();
    }
    let r = t.join().unwrap();
    assert!(matches!(r, Err(guest::GuestError::Crashed(_, ref why)) if why.contains("bad ioreq state")), "{r:?}");
}

#[test]
fn invalidate_broadcasts_are_completed_without_reaching_the_device_model() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    let mut server = IoreqServer::create(&mut x, d, 2).unwrap();
    server.enable(&mut x).unwrap();
    let page = x.map_ioreq_pages(d, server.id()).unwrap().ioreq;
    let slot = crate::ioreq::slot::Slot::new(&page, 1);
    // Xen's ioreq_signal_mapcache_invalidate: dir=WRITE, size 4, data ~0, count 0.
    let mut req = crate::ioreq::slot::Ioreq::simple(IOREQ_TYPE_INVALIDATE, 0, 4, Some(!0));
    req.count = 0;
    assert!(slot.post(&req));
    let port = slot.vp_eport();
    sim.lock().fire_to_dm(d, port);
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let mut rec = Recorder { seen: seen.clone(), reads: 0 };
    server.poll(&mut x, &mut rec).unwrap();
    assert!(seen.lock().unwrap().is_empty(), "INVALIDATE is xenpt's to complete, not the device's");
    assert_eq!(slot.state(), STATE_IORESP_READY);
    assert_eq!(server.stats.invalidate, 1);
}

#[test]
fn a_buffered_server_drains_its_ring_into_the_device_model() {
    let (sim, d, _) = setup(GuestKind::Hvm);
    let mut x = sim.xen();
    let mut server = IoreqServer::create_with(&mut x, d, 1, BufIoreq::Atomic).unwrap();
    server.enable(&mut x).unwrap();
    let pages = x.map_ioreq_pages(d, server.id()).unwrap();
    let ring = pages.bufioreq.unwrap();
    assert!(crate::ioreq::bufring::post(&ring, IOREQ_TYPE_COPY, 0xa0010, 2, 0xbeef));
    assert!(crate::ioreq::bufring::post(&ring, IOREQ_TYPE_PIO, 0x3c0, 1, 0x11));
    assert!(crate::ioreq::bufring::post(&ring, IOREQ_TYPE_TIMEOFFSET, 0, 8, 1 << 40));
    sim.lock().fire_to_dm(d, pages.bufioreq_port.unwrap());
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let mut rec = Recorder { seen: seen.clone(), reads: 0 };
    server.poll(&mut x, &mut rec).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            Request::Mmio { addr: 0xa0010, size: 2, write: Some(0xbeef) },
            Request::Pio { port: 0x3c0, size: 1, write: Some(0x11) },
        ]
    );
    assert_eq!((server.stats.buffered, server.stats.unsupported), (2, 1), "TIMEOFFSET dropped");
    assert!(server.destroy(&mut x).is_empty());
}

#[test]
fn xen_owns_the_device_msix_mask_bits_of_entries_with_a_pirq() {
    let (sim, d, nvme) = setup(GuestKind::Hvm);
    sim.assign_device(d, DEV).unwrap();
    let gtable = 0xf000_2000;
    let (_seen, stop) = recording_dm(&sim, d, vec![IoRange::memory(gtable, 0x1000)]);
    // The device's own table starts masked at reset; the guest's writes never reach it.
    nvme_unmask_all(&nvme);
    let p = msix_pirq(&sim, d, 0);
    assert!(nvme.msix_vector_masked(0), "map: the entry is masked until bound");
    assert!(!nvme.msix_vector_masked(1), "entries without a pirq are not Xen's");
    let mut x = sim.xen();
    let bind = |gflags| PtIrq::Msi { pirq: p, gvec: 0x40, gflags, gtable };
    x.bind_pt_irq(d, bind(0)).unwrap();
    assert!(nvme.msix_vector_masked(0), "bound without UNMASKED: still guest-masked");
    x.bind_pt_irq(d, bind(gflags::UNMASKED)).unwrap();
    assert!(!nvme.msix_vector_masked(0), "UNMASKED: unmasked in the device");
    let g = sim.guest(d);
    g.mmio_write(0, gtable + 12, 4, 1).unwrap();
    assert!(nvme.msix_vector_masked(0), "the guest's mask through the msixtbl");
    g.mmio_write(0, gtable + 12, 4, 0).unwrap();
    assert!(!nvme.msix_vector_masked(0), "and its unmask");
    x.unbind_pt_irq(d, bind(0)).unwrap();
    assert!(nvme.msix_vector_masked(0), "unbind masks");
    x.bind_pt_irq(d, bind(gflags::UNMASKED)).unwrap();
    assert!(!nvme.msix_vector_masked(0));
    x.unbind_pt_irq(d, bind(0)).unwrap();
    x.unmap_pirq(d, p).unwrap();
    assert!(nvme.msix_vector_masked(0), "unmapped: masked");
    stop();
}

/// The guest-side view of a device table whose entries a previous user left unmasked.
fn nvme_unmask_all(nvme: &EmulatedNvme) {
    for e in 0..4 {
        machine::MachineDevice::xen_set_vector_mask(nvme, e, false);
    }
}
