//! The idle budget: while the guest does nothing, xenpt's event loop does not wake up at
//! all (no timers, no polling). Measured over 10 s after a full NVMe bring-up (issue 10
//! asks for 10 s).

use std::sync::atomic::Ordering;
use std::time::Duration;

use xenpt::demo::{self, DemoOptions, GuestFlavour, IrqMode};
use xenpt::Profile;

#[path = "support/live.rs"]
mod live;

#[test]
fn an_idle_guest_costs_zero_wakeups() {
    let l = live::serve_nvme();
    // A full guest bring-up first, so everything that could arm a timer has run.
    let o = DemoOptions {
        profile: Profile::Hvm,
        io_queues: 1,
        blocks: 1,
        irq: IrqMode::Msix,
        guest: GuestFlavour::Linux,
        verbose: false,
    };
    let mut say = |_s: String| {};
    let mut os = demo::guest_os::GuestOs::new(l.sim.guest(l.d), &mut say);
    demo::bring_up(&mut os, &o).unwrap();
    // How many wake-ups the bring-up took depends on scheduling (a loop that is already
    // awake drains every request queued meanwhile), so only the idle window is counted.
    // It starts once the loop has settled: epoll reports again an edge that arrived while
    // the loop was draining, so one wake-up may trail the guest's last access by a few
    // microseconds (it finds nothing to do); that belongs to serving the access.
    std::thread::sleep(Duration::from_millis(200));
    let busy = l.wakeups.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(10));
    let idle = l.wakeups.load(Ordering::Relaxed) - busy;
    assert_eq!(idle, 0, "{idle} wake-ups in 10 s with the guest idle");
    // The counter does count: the loop is blocked now, so one guest access must wake it.
    let vendor = l.sim.guest(l.d).cfg_read(0, live::GUEST_SBDF, 0, 2).unwrap();
    assert_eq!(vendor, 0x1b36, "the served device answers");
    let after = l.wakeups.load(Ordering::Relaxed) - busy;
    assert!(after >= 1, "a guest access after the idle window woke the loop {after} times");
    drop(os);
    assert!(l.join().is_empty(), "clean teardown");
}
