use std::os::unix::net::UnixListener;
use std::sync::Arc;

use super::*;
use crate::demo::{self, guest_os::GuestOs, DemoOptions, DemoReport};
use crate::device::DeviceOptions;
use crate::host::nvme::EmulatedNvme;
use crate::host::HostDevice;
use crate::ioreq::event_loop::EventLoop;
use crate::pci::Sbdf;
use crate::runner;
use crate::xen::sim::Sim;
use crate::xen::{Errno, GuestKind, IoRange, Xen};
use crate::Profile;

const HOST: Sbdf = Sbdf::new(0, 3, 0, 0);

#[test]
fn frames_round_trip_and_oversized_headers_are_refused() {
    let (a, b) = UnixStream::pair().unwrap();
    send(&a, &[1, u64::MAX, 0x1234], "héllo").unwrap();
    assert_eq!(recv(&b).unwrap(), Msg { words: vec![1, u64::MAX, 0x1234], text: "héllo".into() });
    assert!(send(&a, &[0; MAX_WORDS + 1], "").is_err());
    // A hostile header: 4 G words. Refused before any allocation.
    (&a).write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).unwrap();
    assert_eq!(recv(&b).unwrap_err().kind(), io::ErrorKind::InvalidData);
}

#[test]
fn a_passed_fd_maps_the_same_page() {
    let (a, b) = UnixStream::pair().unwrap();
    let page = SharedPage::memfd().unwrap();
    send_fd(&a, page.fd().unwrap()).unwrap();
    let fd = recv_fd(&b).unwrap();
    let there = SharedPage::new(Arc::new(crate::xen::page::FdPage::map(fd).unwrap()));
    there.write_u64(8, 0xabcd);
    assert_eq!(page.read_u64(8), 0xabcd);
    // Without an fd attached, recv_fd says so instead of inventing one.
    send(&a, &[7], "").unwrap();
    assert!(recv_fd(&b).is_err());
}

use crate::xen::SharedPage;

#[test]
fn only_a_size_sealed_page_fd_is_mapped() {
    // A plain file could shrink under the mapping (SIGBUS on access): refused.
    let f = tempfile::tempfile().unwrap();
    f.set_len(4096).unwrap();
    let err = crate::xen::page::FdPage::map(f.into()).err().expect("an unsealed file must be refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // The simulator's pages are sealed at creation.
    let page = SharedPage::memfd().unwrap();
    let fd = page.fd().unwrap().try_clone_to_owned().unwrap();
    assert!(crate::xen::page::FdPage::map(fd).is_ok());
}

struct Rig {
    sim: Sim,
    nvme: EmulatedNvme,
    d: u16,
    sock: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let sim = Sim::default();
    let nvme = EmulatedNvme::new(HOST, 0xfe00_0000, 256);
    sim.add_device(Arc::new(nvme.clone()));
    let d = sim.create_domain(GuestKind::Hvm, 1, 16 << 20);
    sim.assign_device(d, HOST).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sim.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    Server::new(sim.clone(), [nvme.clone()]).spawn(listener);
    Rig { sim, nvme, d, sock, _dir: dir }
}

#[test]
fn the_simulators_refusals_arrive_with_their_errno() {
    let r = rig();
    let mut x = connect(&r.sock).unwrap();
    assert_eq!(x.version().unwrap().to_string(), "4.17");
    assert_eq!(x.domain_info(r.d).unwrap().kind, GuestKind::Hvm);
    assert_eq!(x.domain_info(99).unwrap_err().errno, Errno::ESRCH);
    // Strictness travels: a memory mapping without iomem permission is EPERM.
    let e = x.memory_mapping(r.d, 0x1000, 0x12345, 1, true).unwrap_err();
    assert_eq!((e.op, e.errno), ("memory_mapping", Errno::EPERM));
    // Fault injection too.
    r.sim.fail_nth("create_ioreq_server", 1, Errno::ENOSPC);
    assert_eq!(x.create_ioreq_server(r.d, crate::xen::BufIoreq::Off).unwrap_err().errno, Errno::ENOSPC);
    let id = x.create_ioreq_server(r.d, crate::xen::BufIoreq::Off).unwrap();
    x.map_io_range(r.d, id, IoRange::pci(Sbdf::new(0, 0, 4, 0))).unwrap();
    assert_eq!(r.sim.ioreq_ranges(r.d).len(), 1);
    // The host device: the emulated NVMe's own config space and BARs.
    let h = x.host(HOST).unwrap();
    assert_eq!(h.config_read(0, 4).unwrap(), r.nvme.host().config_read(0, 4).unwrap());
    assert_eq!(h.resources().unwrap(), r.nvme.host().resources().unwrap());
    assert_eq!(h.ids().unwrap(), r.nvme.host().ids().unwrap());
    assert!(h.config_read(3, 4).is_err(), "a misaligned read is refused by the device, through the socket");
    assert!(x.host(Sbdf::new(0, 9, 0, 0)).is_err());
    // A device model that goes away leaves its server (as on Xen) and its ports unbound.
    drop(x);
    assert_eq!(r.sim.ioreq_server_count(r.d), 1);
}

#[test]
fn xenpt_serves_the_guest_through_the_socket_as_in_process() {
    let r = rig();
    let (tx, rx) = std::sync::mpsc::channel();
    let (sock, d) = (r.sock.clone(), r.d);
    let dm = std::thread::spawn(move || {
        let mut x = connect(&sock).unwrap();
        let host = x.host(HOST).unwrap();
        let mut inst =
            runner::start(&mut x, Box::new(host), DeviceOptions::new(d, demo::GUEST_SBDF, Profile::Hvm)).unwrap();
        let mut ev = EventLoop::new(&x).unwrap();
        tx.send(ev.stopper()).unwrap();
        runner::serve(&mut x, &mut inst, &mut ev).unwrap();
        runner::shutdown(&mut x, &mut inst)
    });
    let stop = rx.recv().unwrap();
    let opts = DemoOptions { verbose: false, ..DemoOptions::default() };
    let mut say = |_s: String| {};
    let mut os = GuestOs::new(r.sim.guest(d), &mut say);
    let mut report = DemoReport::default();
    demo::demo_flow(&mut os, &opts, &mut report).unwrap();
    assert_eq!(report.bytes_verified, 2 * 64 * 512);
    // Completions arrived as the vectors the guest programmed, through Xen's delivery.
    assert!(os.interrupts.len() >= 4, "{:?}", os.interrupts);
    assert!(os.interrupts.iter().all(|v| os.vectors.contains(v)));
    let kinds = r.sim.op_kinds_since(0);
    for k in ["create_ioreq_server", "map_ioreq_pages", "memory_mapping", "map_pirq", "bind_pt_irq"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    stop.wake().unwrap();
    let errors = dm.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(r.sim.pirqs(d).is_empty() && r.sim.p2m_mmio(d).is_empty() && r.sim.ioreq_server_count(d) == 0);
    assert!(r.sim.violations().is_empty(), "{:?}", r.sim.violations());
    assert!(r.nvme.stats().interrupts > 0);
}
