//! xenpt in either kind of hardware domain. A PV dom0's sysfs `irq` is the GSI; a PVH
//! dom0's is a Linux IRQ number, so xenpt asks privcmd (PCIDEV_GET_GSI) for the GSI and,
//! under --assign, grants the guest the line with gsi_permission (Xen 4.20+) instead of
//! irq_permission. Everything granted is revoked at exit.

use std::sync::Arc;

use xenpt::device::DeviceOptions;
use xenpt::host::nvme::{EmulatedNvme, NvmeHost};
use xenpt::host::{HostBar, HostDevice, HostError, HostIds, HostResources};
use xenpt::pci::Sbdf;
use xenpt::real::{do_assign, undo_assign, Granted};
use xenpt::runner;
use xenpt::xen::sim::Sim;
use xenpt::xen::{GuestKind, XenVersion};
use xenpt::Profile;

const HOST: Sbdf = Sbdf::new(0, 3, 0, 0);
/// The emulated NVMe's INTx is wired to this GSI.
const GSI: u32 = 11;

/// The NVMe as a dom0 kernel shows it: sysfs `irq` is `irq` (the GSI on a PV dom0, a
/// Linux IRQ number on a PVH one).
struct Dom0View {
    inner: NvmeHost,
    irq: u32,
}

impl HostDevice for Dom0View {
    fn sbdf(&self) -> Sbdf {
        self.inner.sbdf()
    }
    fn backend(&self) -> &'static str {
        "emulated-nvme"
    }
    fn config_size(&self) -> usize {
        self.inner.config_size()
    }
    fn config_read(&self, offset: u16, size: u8) -> Result<u32, HostError> {
        self.inner.config_read(offset, size)
    }
    fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), HostError> {
        self.inner.config_write(offset, size, value)
    }
    fn resources(&self) -> Result<HostResources, HostError> {
        self.inner.resources()
    }
    fn ids(&self) -> Result<HostIds, HostError> {
        self.inner.ids()
    }
    fn irq(&self) -> Option<u32> {
        Some(self.irq)
    }
    fn bar_read(&self, bar: u8, offset: u64, size: u8) -> Result<u64, HostError> {
        self.inner.bar_read(bar, offset, size)
    }
    fn bar_write(&self, bar: u8, offset: u64, size: u8, value: u64) -> Result<(), HostError> {
        self.inner.bar_write(bar, offset, size, value)
    }
    fn page_sharers(&self, bar: &HostBar) -> Result<Vec<Sbdf>, HostError> {
        self.inner.page_sharers(bar)
    }
}

fn machine(version: XenVersion, dom0: GuestKind) -> (Sim, EmulatedNvme, u16) {
    let sim = Sim::new(version);
    sim.set_hardware_domain(dom0);
    let nvme = EmulatedNvme::new(HOST, 0xfe00_0000, 16);
    sim.add_device(Arc::new(nvme.clone()));
    let d = sim.create_domain(GuestKind::Hvm, 1, 16 << 20);
    (sim, nvme, d)
}

fn opts(domid: u16) -> DeviceOptions {
    DeviceOptions::new(domid, Sbdf::new(0, 0, 4, 0), Profile::Hvm)
}

/// The INTx-related operations, as "kind(detail)" strings.
fn intx_ops(sim: &Sim) -> Vec<String> {
    sim.ops()
        .iter()
        .filter(|o| {
            matches!(o.kind, "pcidev_get_gsi" | "irq_permission" | "gsi_permission")
                || (o.kind == "map_pirq" && o.detail.contains("GSI"))
                || (o.kind == "bind_pt_irq" && o.detail.contains("INTx"))
        })
        .map(|o| o.to_string())
        .collect()
}

#[test]
fn a_pvh_dom0_maps_the_gsi_privcmd_names_not_the_linux_irq() {
    let (sim, nvme, d) = machine(XenVersion { major: 4, minor: 20 }, GuestKind::Pvh);
    sim.assign_device(d, HOST).unwrap();
    let mut x = sim.xen();
    let host = Dom0View { inner: nvme.host(), irq: 40 };
    let mut inst = runner::start(&mut x, Box::new(host), opts(d)).unwrap();
    let ops = intx_ops(&sim);
    assert_eq!(ops[0], "pcidev_get_gsi(d0, 0000:03:00.0)", "{ops:#?}");
    assert!(ops[1].starts_with("map_pirq(d1, GSI 11"), "{ops:#?}");
    assert!(ops[2].starts_with("bind_pt_irq(d1,") && ops[2].contains("INTx"), "{ops:#?}");
    assert_eq!(ops.len(), 3, "{ops:#?}");
    assert_eq!(inst.device.config_read(0x3d, 1), 1, "the guest is offered pin A");
    assert!(runner::shutdown(&mut x, &mut inst).is_empty());
    assert!(sim.pirqs(d).is_empty(), "the GSI's pirq is gone at exit");
}

#[test]
fn a_pv_dom0_uses_sysfs_irq_as_the_gsi_and_never_asks_privcmd() {
    let (sim, nvme, d) = machine(XenVersion { major: 4, minor: 17 }, GuestKind::Pv);
    sim.assign_device(d, HOST).unwrap();
    let mut x = sim.xen();
    let host = Dom0View { inner: nvme.host(), irq: GSI };
    let mut inst = runner::start(&mut x, Box::new(host), opts(d)).unwrap();
    let ops = intx_ops(&sim);
    assert!(ops[0].starts_with("map_pirq(d1, GSI 11") && ops.len() == 2, "{ops:#?}");
    assert!(runner::shutdown(&mut x, &mut inst).is_empty());
}

#[test]
fn a_pvh_dom0_whose_kernel_cannot_name_the_gsi_offers_no_intx() {
    // A dom0 kernel older than 6.12 has no PCIDEV_GET_GSI: the ioctl fails with ENOTTY.
    let (sim, nvme, d) = machine(XenVersion { major: 4, minor: 20 }, GuestKind::Pvh);
    sim.assign_device(d, HOST).unwrap();
    let mut x = sim.xen();
    sim.fail_nth("pcidev_get_gsi", 1, xenpt::xen::Errno::ENOTTY);
    let host = Dom0View { inner: nvme.host(), irq: 40 };
    let mut inst = runner::start(&mut x, Box::new(host), opts(d)).unwrap();
    let ops = intx_ops(&sim);
    assert_eq!(ops, ["pcidev_get_gsi(d0, 0000:03:00.0) -> ENOTTY"], "no GSI guessed from the Linux IRQ");
    assert_eq!(inst.device.config_read(0x3d, 1), 0, "no pin offered");
    assert!(runner::shutdown(&mut x, &mut inst).is_empty());
}

#[test]
fn assign_grants_the_line_with_the_dom0s_mechanism_and_undo_revokes_everything() {
    for (version, dom0, want_grant) in [
        ((4, 17), GuestKind::Pv, "irq_permission(d1, pirq 11 allow=true)"),
        ((4, 20), GuestKind::Pvh, "gsi_permission(d1, gsi 11 allow=true)"),
        ((4, 17), GuestKind::Pvh, "gsi_permission(d1, gsi 11 allow=true) -> EOPNOTSUPP"),
    ] {
        let (sim, nvme, d) = machine(XenVersion { major: version.0, minor: version.1 }, dom0);
        let mut x = sim.xen();
        let host = Dom0View { inner: nvme.host(), irq: if dom0 == GuestKind::Pvh { 40 } else { GSI } };
        let mut g = Granted::default();
        do_assign(&mut x, d, &host, &mut g).unwrap();
        let ops = intx_ops(&sim);
        assert!(ops.iter().any(|o| o == want_grant), "{dom0:?} on {version:?}: {ops:#?}");
        let (assigned, irqs, gsis) = sim.grants(d);
        assert_eq!(assigned, [HOST]);
        let granted = !want_grant.contains("->");
        assert_eq!(g.intx.is_some(), granted, "{dom0:?} on {version:?}");
        match (dom0, granted) {
            (GuestKind::Pv, _) => assert_eq!((irqs, gsis), (vec![GSI], vec![])),
            (_, true) => assert_eq!((irqs, gsis), (vec![], vec![GSI])),
            (_, false) => assert_eq!((irqs, gsis), (vec![], vec![]), "a refused grant is not recorded"),
        }
        undo_assign(&mut x, d, HOST, &g);
        assert_eq!(sim.grants(d), (vec![], vec![], vec![]), "{dom0:?} on {version:?}: everything revoked");
    }
}
