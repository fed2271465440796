//! Extended config space (0x100-0xfff) reaches xenpt's policy-filtered view through every
//! path Xen forwards: a PCI-config ioreq for register 0x100+ (Xen builds one from AMD's
//! extended CF8 format when the host enables it). Where Xen does not forward the high
//! bits (Intel, or the extension off), the same CF8 value reaches register 0x00-0xff.

#[path = "support/live.rs"]
mod live;

#[test]
fn extended_config_space_is_served_when_xen_forwards_it() {
    let l = live::serve_nvme();
    let g = l.sim.guest(l.d);
    let dev = live::GUEST_SBDF;

    // Intel-style: CF8 bits 27:24 are ignored, so "0x100" reads register 0x00.
    assert_eq!(g.cfg_read(0, dev, 0x100, 4).unwrap(), 0x0010_1b36, "without the extension: vendor/device");

    // AMD extended CF8: the guest sees the emulated NVMe's AER header at 0x100 (ID 1, v2,
    // end of chain) through xenpt's policy, and its writes there do not reach the device.
    l.sim.set_amd_cf8_ext(l.d, true);
    assert_eq!(g.cfg_read(0, dev, 0x100, 4).unwrap(), 0x0002_0001, "AER header at 0x100");
    assert_eq!(g.cfg_read(0, dev, 0x102, 2).unwrap(), 0x0002);
    g.cfg_write(0, dev, 0x100, 4, 0xffff_ffff).unwrap();
    assert_eq!(g.cfg_read(0, dev, 0x100, 4).unwrap(), 0x0002_0001, "the header is read-only");
    assert_eq!(l.nvme.host_config(0x100, 4), 0x0002_0001, "the device's header is untouched");
    // Past the chain: reads 0 (hidden/absent), never all-ones garbage.
    assert_eq!(g.cfg_read(0, dev, 0xffc, 4).unwrap(), 0);
    drop(g);
    assert!(l.join().is_empty(), "clean teardown");
}
