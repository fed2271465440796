//! Cost of one emulated config-space read through the full ioreq path — shared-page slot
//! handshake, event-channel notification over an fd, decode, register policy, response —
//! against the floor measured in the same run: the bare notification round trip with no
//! processing at all. The ratio is printed at the end.
//!
//! The transport is a datagram socket pair standing in for /dev/xen/evtchn (one port
//! number per message, as the evtchn device reads), driven by the same `IoreqServer::poll`
//! and mio event loop code that serves real Xen.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use xenpt::device::{DeviceModel, DeviceOptions};
use xenpt::host::nvme::EmulatedNvme;
use xenpt::ioreq::slot::{Ioreq, Slot};
use xenpt::ioreq::IoreqServer;
use xenpt::pci::Sbdf;
use xenpt::xen::abi::IOREQ_TYPE_PCI_CONFIG;
use xenpt::xen::*;

const GUEST_SBDF: Sbdf = Sbdf::new(0, 0, 4, 0);

fn main() {
    divan::main();
    compare();
}

/// A Xen whose only live part is the event channel: port 1 <-> the guest side's socket.
struct BenchXen {
    dm: UnixDatagram,
    page: SharedPage,
}

fn nosys<T>(op: &'static str) -> XenResult<T> {
    Err(XenError::new(op, 1, Errno::ENOSYS))
}

impl Xen for BenchXen {
    fn version(&mut self) -> XenResult<XenVersion> {
        Ok(XenVersion { major: 4, minor: 17 })
    }
    fn domain_info(&mut self, _: DomId) -> XenResult<DomainInfo> {
        nosys("domain_info")
    }
    fn create_ioreq_server(&mut self, _: DomId, _: BufIoreq) -> XenResult<IoservId> {
        Ok(0)
    }
    fn map_ioreq_pages(&mut self, _: DomId, _: IoservId) -> XenResult<IoreqPages> {
        Ok(IoreqPages { ioreq: self.page.clone(), bufioreq: None, bufioreq_port: None })
    }
    fn map_io_range(&mut self, _: DomId, _: IoservId, _: IoRange) -> XenResult<()> {
        Ok(())
    }
    fn unmap_io_range(&mut self, _: DomId, _: IoservId, _: IoRange) -> XenResult<()> {
        Ok(())
    }
    fn set_ioreq_server_state(&mut self, _: DomId, _: IoservId, _: bool) -> XenResult<()> {
        Ok(())
    }
    fn destroy_ioreq_server(&mut self, _: DomId, _: IoservId) -> XenResult<()> {
        Ok(())
    }
    fn evtchn_fd(&self) -> RawFd {
        self.dm.as_raw_fd()
    }
    fn evtchn_bind_interdomain(&mut self, _: DomId, _: EvtchnPort) -> XenResult<EvtchnPort> {
        Ok(1)
    }
    fn evtchn_unbind(&mut self, _: EvtchnPort) -> XenResult<()> {
        Ok(())
    }
    fn evtchn_notify(&mut self, port: EvtchnPort) -> XenResult<()> {
        self.dm.send(&port.to_ne_bytes()).map(|_| ()).map_err(|_| XenError::new("evtchn_notify", 1, Errno::EINVAL))
    }
    fn evtchn_pending(&mut self, out: &mut Vec<EvtchnPort>, _readiness: Readiness) -> XenResult<bool> {
        let mut b = [0u8; 4];
        while let Ok(4) = self.dm.recv(&mut b) {
            out.push(u32::from_ne_bytes(b));
        }
        Ok(true)
    }
    fn evtchn_unmask(&mut self, _: EvtchnPort) -> XenResult<()> {
        Ok(())
    }
    fn memory_mapping(&mut self, _: DomId, _: u64, _: u64, _: u64, _: bool) -> XenResult<u64> {
        nosys("memory_mapping")
    }
    fn ioport_mapping(&mut self, _: DomId, _: u32, _: u32, _: u32, _: bool) -> XenResult<()> {
        nosys("ioport_mapping")
    }
    fn map_pirq(&mut self, _: DomId, _: PirqMap) -> XenResult<PirqMapped> {
        nosys("map_pirq")
    }
    fn unmap_pirq(&mut self, _: DomId, _: u32) -> XenResult<()> {
        nosys("unmap_pirq")
    }
    fn bind_pt_irq(&mut self, _: DomId, _: PtIrq) -> XenResult<()> {
        nosys("bind_pt_irq")
    }
    fn unbind_pt_irq(&mut self, _: DomId, _: PtIrq) -> XenResult<()> {
        nosys("unbind_pt_irq")
    }
    fn iomem_permission(&mut self, _: DomId, _: u64, _: u64, _: bool) -> XenResult<()> {
        nosys("iomem_permission")
    }
    fn ioport_permission(&mut self, _: DomId, _: u32, _: u32, _: bool) -> XenResult<()> {
        nosys("ioport_permission")
    }
    fn irq_permission(&mut self, _: DomId, _: u32, _: bool) -> XenResult<()> {
        nosys("irq_permission")
    }
    fn gsi_permission(&mut self, _: DomId, _: u32, _: bool) -> XenResult<()> {
        nosys("gsi_permission")
    }
    fn assign_device(&mut self, _: DomId, _: xenpt::pci::Sbdf, _: bool) -> XenResult<()> {
        nosys("assign_device")
    }
    fn pcidev_gsi(&mut self, _: xenpt::pci::Sbdf) -> XenResult<u32> {
        nosys("pcidev_gsi")
    }
}

/// The guest ("Xen") side of one vCPU and the device model thread serving it.
struct Rig {
    guest: UnixDatagram,
    slot: Slot,
    stop: Arc<AtomicBool>,
    dm: Option<thread::JoinHandle<()>>,
}

impl Rig {
    /// `full`: the device model runs the real IoreqServer + DeviceModel; otherwise it
    /// only bounces the notification (the floor). The calling (guest) thread is pinned to
    /// core 0 and the device model thread to `dm_core`.
    fn new(full: bool, dm_core: usize) -> Rig {
        pin(0);
        let (guest, dm) = UnixDatagram::pair().unwrap();
        dm.set_nonblocking(true).unwrap();
        let page = SharedPage::heap();
        let slot = Slot::new(&page, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let h = thread::spawn(move || {
            pin(dm_core);
            let mut xen = BenchXen { dm, page };
            let mut poll = Poll::new().unwrap();
            let fd = xen.evtchn_fd();
            poll.registry().register(&mut SourceFd(&fd), Token(0), Interest::READABLE).unwrap();
            let mut events = Events::with_capacity(4);
            let mut server = IoreqServer::create(&mut xen, 1, 1).unwrap();
            server.enable(&mut xen).unwrap();
            let nvme = EmulatedNvme::new(Sbdf::new(0, 3, 0, 0), 0xfe00_0000, 16);
            let opts = DeviceOptions::new(1, GUEST_SBDF, xenpt::Profile::Hvm);
            let mut dev = DeviceModel::new(Box::new(nvme.host()), server.id(), opts).unwrap();
            let mut ports = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
                if full {
                    server.poll(&mut xen, &mut dev).unwrap();
                } else {
                    // The same drain loop as IoreqServer::poll, minus all processing.
                    loop {
                        ports.clear();
                        let drained = xen.evtchn_pending(&mut ports, Readiness::Edge).unwrap();
                        if ports.is_empty() {
                            break;
                        }
                        for &p in &ports {
                            xen.evtchn_unmask(p).unwrap();
                            xen.evtchn_notify(p).unwrap();
                        }
                        if drained {
                            break;
                        }
                    }
                }
            }
        });
        Rig { guest, slot, stop, dm: Some(h) }
    }

    fn floor_roundtrip(&self) {
        self.guest.send(&1u32.to_ne_bytes()).unwrap();
        let mut b = [0u8; 4];
        self.guest.recv(&mut b).unwrap();
    }

    /// One guest config read of the vendor/device ID dword (an emulated register).
    fn config_read(&self) -> u64 {
        let addr = (GUEST_SBDF.to_u32() as u64) << 32;
        assert!(self.slot.post(&Ioreq::simple(IOREQ_TYPE_PCI_CONFIG, addr, 4, None)));
        self.guest.send(&1u32.to_ne_bytes()).unwrap();
        let mut b = [0u8; 4];
        self.guest.recv(&mut b).unwrap();
        self.slot.collect().expect("response ready after notification")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.dm.take() {
            h.join().unwrap();
        }
    }
}

fn pin(core: usize) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(&c) = cores.get(core % cores.len().max(1)) {
        core_affinity::set_for_current(c);
    }
}

/// Placement of the two threads: 0 = same core, 1 = guest on core 0, xenpt on core 1.
const PLACEMENTS: [usize; 2] = [0, 1];

#[divan::bench(args = PLACEMENTS)]
fn floor_notify_roundtrip(b: divan::Bencher, dm_core: usize) {
    let rig = Rig::new(false, dm_core);
    b.bench_local(|| rig.floor_roundtrip());
}

#[divan::bench(args = PLACEMENTS)]
fn config_read_full_ioreq_path(b: divan::Bencher, dm_core: usize) {
    let rig = Rig::new(true, dm_core);
    assert_eq!(rig.config_read(), 0x0010_1b36);
    b.bench_local(|| divan::black_box(rig.config_read()));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Interleaved blocks of both, so machine noise hits both alike; median per-op times,
/// for each placement of the two threads.
fn compare() {
    for dm_core in PLACEMENTS {
        compare_on(dm_core);
    }
}

fn compare_on(dm_core: usize) {
    let floor = Rig::new(false, dm_core);
    let full = Rig::new(true, dm_core);
    let (mut f, mut c) = (Vec::new(), Vec::new());
    const BLOCK: u32 = 500;
    for _ in 0..40 {
        let t = Instant::now();
        for _ in 0..BLOCK {
            floor.floor_roundtrip();
        }
        f.push(t.elapsed() / BLOCK);
        let t = Instant::now();
        for _ in 0..BLOCK {
            divan::black_box(full.config_read());
        }
        c.push(t.elapsed() / BLOCK);
    }
    let (mf, mc) = (median(f), median(c));
    let placement = if dm_core == 0 { "same core" } else { "cross core" };
    println!(
        "ioreq config read ({placement}): {:?} per access, bare notify round trip (floor): {:?}, ratio {:.3}",
        mc,
        mf,
        mc.as_secs_f64() / mf.as_secs_f64()
    );
}
