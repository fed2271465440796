//! A live xenpt serving the emulated NVMe (host 0000:03:00.0, BAR0 at 0xfe000000) to a
//! simulated 1-vCPU HVM guest at 00:04.0, in its own thread with its event loop, as
//! `xenpt run` does. Shared by the tests that need the real ioreq path.
// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use xenpt::device::DeviceOptions;
use xenpt::host::nvme::EmulatedNvme;
use xenpt::ioreq::event_loop::EventLoop;
use xenpt::pci::Sbdf;
use xenpt::runner;
use xenpt::xen::sim::Sim;
use xenpt::xen::{DomId, GuestKind, XenError};
use xenpt::Profile;

pub const GUEST_SBDF: Sbdf = Sbdf::new(0, 0, 4, 0);

pub struct Live {
    pub sim: Sim,
    pub nvme: EmulatedNvme,
    pub d: DomId,
    /// Stops the event loop (then `join` returns the teardown errors).
    pub stop: Arc<mio::Waker>,
    /// The event loop's wake-up counter.
    pub wakeups: Arc<AtomicU64>,
    thread: JoinHandle<Vec<XenError>>,
}

pub fn serve_nvme() -> Live {
    let sim = Sim::default();
    let host_sbdf = Sbdf::new(0, 3, 0, 0);
    let nvme = EmulatedNvme::new(host_sbdf, 0xfe00_0000, 64);
    sim.add_device(Arc::new(nvme.clone()));
    let d = sim.create_domain(GuestKind::Hvm, 1, 16 << 20);
    sim.assign_device(d, host_sbdf).unwrap();
    let (tx, rx) = mpsc::channel();
    let sim2 = sim.clone();
    let host = nvme.host();
    let thread = std::thread::spawn(move || {
        let mut x = sim2.xen();
        let opts = DeviceOptions::new(d, GUEST_SBDF, Profile::Hvm);
        let mut inst = runner::start(&mut x, Box::new(host), opts).unwrap();
        let mut ev = EventLoop::new(&x).unwrap();
        tx.send((ev.stopper(), ev.wakeup_counter())).unwrap();
        runner::serve(&mut x, &mut inst, &mut ev).unwrap();
        runner::shutdown(&mut x, &mut inst)
    });
    let (stop, wakeups) = rx.recv().unwrap();
    Live { sim, nvme, d, stop, wakeups, thread }
}

impl Live {
    /// Stop the loop and return the teardown's errors.
    pub fn join(self) -> Vec<XenError> {
        self.stop.wake().unwrap();
        self.thread.join().unwrap()
    }
}
