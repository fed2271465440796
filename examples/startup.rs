//! How long xenpt's own start-up takes on the simulator: from the host device handed over
//! to the point `--ready-fd` would fire (ioreq server created, pages mapped, config space
//! and BARs built, INTx bound, server enabled), `runner::start` timed over N runs, then the
//! teardown. The simulated hypervisor's calls are in-process function calls here, so what
//! is measured is xenpt's own work plus a negligible simulator share. Exec to `main` is
//! measured separately (`hyperfine 'xenpt --version'`), see BENCHMARKS.md.
//!
//! Usage: `startup [N]` (default 200); prints the median and the maximum.

use std::sync::Arc;
use std::time::Instant;

use xenpt::device::DeviceOptions;
use xenpt::host::nvme::EmulatedNvme;
use xenpt::pci::Sbdf;
use xenpt::runner;
use xenpt::xen::sim::Sim;
use xenpt::xen::GuestKind;
use xenpt::Profile;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let sim = Sim::default();
        let host_sbdf = Sbdf::new(0, 3, 0, 0);
        let nvme = EmulatedNvme::new(host_sbdf, 0xfe00_0000, 1);
        sim.add_device(Arc::new(nvme.clone()));
        let d = sim.create_domain(GuestKind::Hvm, 1, 1 << 20);
        sim.assign_device(d, host_sbdf).unwrap();
        let mut x = sim.xen();
        let opts = DeviceOptions::new(d, Sbdf::new(0, 0, 4, 0), Profile::Hvm);
        let t = Instant::now();
        let mut inst = runner::start(&mut x, Box::new(nvme.host()), opts).unwrap();
        times.push(t.elapsed());
        assert!(runner::shutdown(&mut x, &mut inst).is_empty());
    }
    times.sort();
    println!(
        "runner::start to ready on the simulator: median {:?}, max {:?} over {n} runs",
        times[n / 2],
        times[n - 1]
    );
}
