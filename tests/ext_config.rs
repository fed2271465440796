//! Extended config space (0x100-0xfff) reaches xenpt's policy-filtered view through every
//! path Xen forwards: a PCI-config ioreq for register 0x100+ (Xen builds one from AMD's
//! extended CF8 format when the host enables it). Where Xen does not forward the high
//! bits (Intel, or the extension off), the same CF8 value reaches register 0x00-0xff.

use std::sync::{mpsc, Arc};

use xenpt::device::DeviceOptions;
use xenpt::host::nvme::EmulatedNvme;
use xenpt::ioreq::event_loop::EventLoop;
use xenpt::pci::Sbdf;
use xenpt::runner;
use xenpt::xen::sim::Sim;
use xenpt::xen::GuestKind;
use xenpt::Profile;

#[test]
fn extended_config_space_is_served_when_xen_forwards_it() {
    let sim = Sim::default();
    let host_sbdf = Sbdf::new(0, 3, 0, 0);
    let nvme = EmulatedNvme::new(host_sbdf, 0xfe00_0000, 16);
    sim.add_device(Arc::new(nvme.clone()));
    let d = sim.create_domain(GuestKind::Hvm, 1, 16 << 20);
    sim.assign_device(d, host_sbdf).unwrap();
    let (tx, rx) = mpsc::channel();
    let sim2 = sim.clone();
    let host = nvme.host();
    let dm = std::thread::spawn(move || {
        let mut x = sim2.xen();
        let opts = DeviceOptions {
            domid: d,
            guest_sbdf: Sbdf::new(0, 0, 4, 0),
            profile: Profile::Hvm,
            permissive: false,
            read_only_host: false,
        };
        let mut inst = runner::start(&mut x, Box::new(host), opts).unwrap();
        let mut ev = EventLoop::new(&x).unwrap();
        tx.send(ev.stopper()).unwrap();
        runner::serve(&mut x, &mut inst, &mut ev).unwrap();
        runner::shutdown(&mut x, &mut inst)
    });
    let stop = rx.recv().unwrap();
    let g = sim.guest(d);
    let dev = Sbdf::new(0, 0, 4, 0);

    // Intel-style: CF8 bits 27:24 are ignored, so "0x100" reads register 0x00.
    assert_eq!(g.cfg_read(0, dev, 0x100, 4).unwrap(), 0x0010_1b36, "without the extension: vendor/device");

    // AMD extended CF8: the guest sees the emulated NVMe's AER header at 0x100 (ID 1, v2,
    // end of chain) through xenpt's policy, and its writes there do not reach the device.
    sim.set_amd_cf8_ext(d, true);
    assert_eq!(g.cfg_read(0, dev, 0x100, 4).unwrap(), 0x0002_0001, "AER header at 0x100");
    assert_eq!(g.cfg_read(0, dev, 0x102, 2).unwrap(), 0x0002);
    g.cfg_write(0, dev, 0x100, 4, 0xffff_ffff).unwrap();
    assert_eq!(g.cfg_read(0, dev, 0x100, 4).unwrap(), 0x0002_0001, "the header is read-only");
    assert_eq!(nvme.host_config(0x100, 4), 0x0002_0001, "the device's header is untouched");
    // Past the chain: reads 0 (hidden/absent), never all-ones garbage.
    assert_eq!(g.cfg_read(0, dev, 0xffc, 4).unwrap(), 0);

    stop.wake().unwrap();
    assert!(dm.join().unwrap().is_empty(), "clean teardown");
}
