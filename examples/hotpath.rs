//! The hot paths of a guest access, run N times in one thread for instruction counting
//! under callgrind (tools/callgrind-guard.sh): the ioreq handler's decode-to-response for
//!
//! - `config-read`: an emulated config read (vendor/device ID),
//! - `config-write`: an emulated config write (cache line size, scratch),
//! - `passthrough-read`: a config read with host bits (status: read from the device),
//! - `msix-rebind`: an MSI-X table write that changes a bound entry's message and its
//!   unmask, which re-binds the vector through the (simulated) Xen.
//!
//! Usage: `hotpath PATH N`. Running it with N = 0 and N = 1000 and subtracting gives the
//! instructions per access without the set-up.

use std::sync::Arc;

use xenpt::device::{DeviceModel, DeviceOptions};
use xenpt::host::nvme::EmulatedNvme;
use xenpt::ioreq::{IoHandler, Request};
use xenpt::pci::Sbdf;
use xenpt::xen::sim::Sim;
use xenpt::xen::{GuestKind, Xen};
use xenpt::Profile;

const GUEST: Sbdf = Sbdf::new(0, 0, 4, 0);
const BAR0: u64 = 0xf000_0000;

fn cfg(dm: &mut DeviceModel, x: &mut dyn Xen, reg: u32, size: u32, write: Option<u32>) -> u64 {
    dm.handle(x, Request::PciConfig { sbdf: GUEST, reg, size, write })
}

fn mmio(dm: &mut DeviceModel, x: &mut dyn Xen, addr: u64, size: u32, write: Option<u64>) -> u64 {
    dm.handle(x, Request::Mmio { addr, size, write })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_default();
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let sim = Sim::default();
    let host_sbdf = Sbdf::new(0, 3, 0, 0);
    let nvme = EmulatedNvme::new(host_sbdf, 0xfe00_0000, 1);
    sim.add_device(Arc::new(nvme.clone()));
    let d = sim.create_domain(GuestKind::Hvm, 1, 1 << 20);
    sim.assign_device(d, host_sbdf).unwrap();
    let mut x = sim.xen();
    let opts = DeviceOptions::new(d, GUEST, Profile::Hvm);
    let mut dm = DeviceModel::new(Box::new(nvme.host()), 0, opts).unwrap();
    // The guest's bring-up: BAR0 placed, memory decode and bus master on, MSI-X enabled
    // with entry 0 programmed and unmasked (bound through the simulated Xen).
    cfg(&mut dm, &mut x, 0x10, 4, Some(BAR0 as u32));
    cfg(&mut dm, &mut x, 0x14, 4, Some(0));
    cfg(&mut dm, &mut x, 0x04, 2, Some(0x0006));
    let table = BAR0 + 0x2000;
    mmio(&mut dm, &mut x, table, 4, Some(0xfee0_0000));
    mmio(&mut dm, &mut x, table + 4, 4, Some(0));
    mmio(&mut dm, &mut x, table + 8, 4, Some(0x40));
    mmio(&mut dm, &mut x, table + 12, 4, Some(0));
    cfg(&mut dm, &mut x, 0xb2, 2, Some(0x8000));
    let mut sink = 0u64;
    match path.as_str() {
        "config-read" => (0..n).for_each(|_| sink ^= cfg(&mut dm, &mut x, 0x00, 4, None)),
        "config-write" => (0..n).for_each(|i| sink ^= cfg(&mut dm, &mut x, 0x0c, 1, Some(i & 0xff))),
        "passthrough-read" => (0..n).for_each(|_| sink ^= cfg(&mut dm, &mut x, 0x06, 2, None)),
        "msix-rebind" => (0..n).for_each(|i| {
            // Linux's way: mask, new data, unmask (the unmask commits: one bind).
            mmio(&mut dm, &mut x, table + 12, 4, Some(1));
            mmio(&mut dm, &mut x, table + 8, 4, Some(0x40 + (i as u64 & 0x3f)));
            sink ^= mmio(&mut dm, &mut x, table + 12, 4, Some(0));
        }),
        other => {
            eprintln!("hotpath: unknown path {other:?}: config-read, config-write, passthrough-read, msix-rebind");
            std::process::exit(2);
        }
    }
    // Keep the work observable, so nothing is optimised away.
    println!("{path} x{n}: {sink:#x}, {} Xen operations", sim.op_count());
}
