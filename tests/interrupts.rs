//! Interrupt lessons and properties: XSA-129 (the guest never reaches the host mask bits),
//! XSA-337 (the MSI-X table base comes from trusted host data), and a property test: any
//! random sequence of guest MSI/MSI-X programming, then teardown, leaves no pirq mapped or
//! bound and never binds a vector the guest did not program.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use xenpt::device::{DeviceModel, DeviceOptions};
use xenpt::host::nvme::{EmulatedNvme, MSIX_CAP, MSIX_TABLE_OFFSET, MSI_CAP};
use xenpt::host::HostDevice;
use xenpt::ioreq::IoreqServer;
use xenpt::pci::Sbdf;
use xenpt::xen::sim::{Sim, SimXen};
use xenpt::xen::{DomId, GuestKind};
use xenpt::Profile;

const HOST: Sbdf = Sbdf::new(0, 3, 0, 0);
const BAR: u64 = 0xfe00_0000;
const GBAR: u64 = 0xe000_0000;

struct Rig {
    sim: Sim,
    d: DomId,
    x: SimXen,
    nvme: EmulatedNvme,
    dm: DeviceModel,
    server: IoreqServer,
}

/// A device model for the emulated NVMe, BAR0 at GBAR with memory decode on.
fn rig() -> Rig {
    let sim = Sim::default();
    let nvme = EmulatedNvme::new(HOST, BAR, 16);
    sim.add_device(Arc::new(nvme.clone()));
    let d = sim.create_domain(GuestKind::Hvm, 2, 1 << 20);
    sim.assign_device(d, HOST).unwrap();
    let mut x = sim.xen();
    let server = IoreqServer::create(&mut x, d, 2).unwrap();
    let opts = DeviceOptions {
        domid: d,
        guest_sbdf: Sbdf::new(0, 0, 4, 0),
        profile: Profile::Hvm,
        permissive: false,
        read_only_host: false,
    };
    let mut dm = DeviceModel::new(Box::new(nvme.host()), server.id(), opts).unwrap();
    dm.config_write(&mut x, 0x10, 4, GBAR as u32 | 4);
    dm.config_write(&mut x, 0x14, 4, 0);
    dm.config_write(&mut x, 0x04, 2, 0x6);
    Rig { sim, d, x, nvme, dm, server }
}

impl Rig {
    fn table(&mut self, entry: u64, field: u64, v: u32) {
        self.dm.mmio_write(&mut self.x, GBAR + MSIX_TABLE_OFFSET + entry * 16 + field, 4, v as u64);
    }
    fn msix_ctrl(&mut self, v: u16) {
        self.dm.config_write(&mut self.x, (MSIX_CAP + 2) as u32, 2, v as u32);
    }
    fn teardown(mut self) -> (Sim, DomId) {
        assert!(self.dm.teardown(&mut self.x).is_empty());
        self.server.destroy(&mut self.x);
        (self.sim, self.d)
    }
}

#[test]
fn xsa_129_guest_mask_writes_never_reach_the_host_mask_bits() {
    let mut r = rig();
    // MSI: the guest masks every vector and enables.
    let mask = (MSI_CAP + 16) as u32;
    r.dm.config_write(&mut r.x, mask, 4, !0);
    r.dm.config_write(&mut r.x, (MSI_CAP + 4) as u32, 4, 0xfee0_0000);
    r.dm.config_write(&mut r.x, (MSI_CAP + 12) as u32, 2, 0x40);
    r.dm.config_write(&mut r.x, (MSI_CAP + 2) as u32, 2, 1);
    assert_eq!(r.dm.config_read(mask, 4), 0xffff_ffff, "the guest sees its mask");
    assert_eq!(r.nvme.host_config(MSI_CAP + 16, 4), 0, "the host mask register is Xen's, never the guest's");
    assert_eq!(r.nvme.host_config(MSI_CAP + 4, 4), 0, "nor the host address");
    // MSI-X: vector control writes go to xenpt's table copy, never the device's table.
    r.dm.config_write(&mut r.x, (MSI_CAP + 2) as u32, 2, 0);
    r.table(0, 0, 0xfee0_0000);
    r.table(0, 8, 0x41);
    r.table(0, 12, 0);
    r.msix_ctrl(0x8000);
    r.table(0, 12, 1);
    let host = r.nvme.host();
    let host_ctrl = host.bar_read(0, MSIX_TABLE_OFFSET + 12, 4).unwrap();
    assert_eq!(host_ctrl, 1, "the device's own vector control is untouched (reset: masked)");
    let host_addr = host.bar_read(0, MSIX_TABLE_OFFSET, 4).unwrap();
    assert_eq!(host_addr, 0, "the device's table never holds the guest's address");
    r.teardown();
}

#[test]
fn xsa_337_msix_table_base_comes_from_sysfs_not_the_device() {
    let mut r = rig();
    // The device now claims its BAR is elsewhere: xenpt must not believe it.
    r.nvme.host().config_write(0x10, 4, 0xdead_0004).unwrap();
    r.table(0, 0, 0xfee0_0000);
    r.table(0, 8, 0x41);
    r.msix_ctrl(0x8000);
    let ops: Vec<String> = r.sim.ops().iter().map(|o| o.to_string()).collect();
    assert!(ops.iter().any(|o| o.contains("entry 0 table_base 0xfe000000")), "{ops:#?}");
    assert!(r.sim.violations().is_empty(), "{:?}", r.sim.violations());
    r.teardown();
}

#[derive(Clone, Debug)]
enum Op {
    MsixCtrl(u16),
    Table { entry: u64, field: u64, value: u32 },
    MsiCtrl(u16),
    MsiData(u16),
    MsiMask(u32),
    Decode(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::sample::select(vec![0u16, 0x8000, 0xc000, 0x4000]).prop_map(Op::MsixCtrl),
        (
            0u64..6,
            prop::sample::select(vec![0u64, 4, 8, 12]),
            prop_oneof![
                Just(0u32),
                Just(1),
                (0u32..0x100).prop_map(|v| 0x30 + v % 0x40),
                (0u32..0x100).prop_map(|d| 0xfee0_0000 | d << 12),
                any::<u32>()
            ]
        )
            .prop_map(|(entry, field, value)| Op::Table { entry, field, value }),
        prop::sample::select(vec![0u16, 1, 0x11, 0x21, 0x71]).prop_map(Op::MsiCtrl),
        (0x30u16..0x80).prop_map(Op::MsiData),
        any::<u32>().prop_map(Op::MsiMask),
        any::<bool>().prop_map(Op::Decode),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn random_interrupt_programming_then_teardown_leaves_nothing_and_binds_only_what_the_guest_wrote(ops in prop::collection::vec(op(), 1..40)) {
        let mut r = rig();
        r.dm.config_write(&mut r.x, (MSI_CAP + 4) as u32, 4, 0xfee0_0000);
        // Vectors the guest has programmed anywhere (MSI-X data low byte; MSI base | i).
        let mut programmed: BTreeSet<u8> = BTreeSet::new();
        let mut msi_data = 0u16;
        for op in &ops {
            match *op {
                Op::MsixCtrl(v) => r.msix_ctrl(v),
                Op::Table { entry, field, value } => {
                    if field == 8 {
                        programmed.insert(value as u8);
                    }
                    r.table(entry, field, value);
                }
                Op::MsiCtrl(v) => r.dm.config_write(&mut r.x, (MSI_CAP + 2) as u32, 2, v as u32),
                Op::MsiData(v) => {
                    msi_data = v;
                    r.dm.config_write(&mut r.x, (MSI_CAP + 12) as u32, 2, v as u32);
                }
                Op::MsiMask(v) => r.dm.config_write(&mut r.x, (MSI_CAP + 16) as u32, 4, v),
                Op::Decode(on) => r.dm.config_write(&mut r.x, 0x04, 2, if on { 6 } else { 4 }),
            }
            for i in 0..32u16 {
                programmed.insert((msi_data | i) as u8);
            }
            // Every binding Xen holds carries a vector the guest programmed.
            for (p, bound) in r.sim.pirqs(r.d) {
                if bound {
                    let (gvec, _) = r.sim.pirq_binding(r.d, p).unwrap_or((0, 0));
                    prop_assert!(gvec == 0 || programmed.contains(&gvec), "pirq {p} bound to unprogrammed vector {gvec:#x} after {op:?}");
                }
            }
            prop_assert!(r.sim.crashed(r.d).is_none());
        }
        let (sim, d) = r.teardown();
        prop_assert!(sim.pirqs(d).is_empty(), "pirqs left: {:?}", sim.pirqs(d));
        prop_assert!(sim.p2m_mmio(d).is_empty());
        prop_assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
}
