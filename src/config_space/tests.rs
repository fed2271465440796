//! Table-driven tests of the register policy engine, and the config-space lessons:
//! XSA-120/126 (host decode stays on), XSA-128 (no stale write-back), XSA-131
//! (default-deny).

use std::sync::Mutex;

use super::*;
use crate::device::{DeviceModel, DeviceOptions};
use crate::host::nvme::{EmulatedNvme, NvmeHost};
use crate::host::{HostError, HostIds, HostResources};
use crate::pci::*;
use crate::Profile;

/// A host function made of 256 bytes, recording every write that reaches it.
pub(super) struct FakeHost {
    pub(super) cfg: Mutex<[u8; 256]>,
    pub(super) writes: Mutex<Vec<(u16, u8, u32)>>,
    /// Bits that hardware clears on writing 1.
    pub(super) w1c: [u8; 256],
}

impl FakeHost {
    pub(super) fn new() -> Self {
        FakeHost { cfg: Mutex::new([0; 256]), writes: Mutex::default(), w1c: [0; 256] }
    }
    pub(super) fn set(&self, off: usize, bytes: &[u8]) {
        self.cfg.lock().unwrap()[off..off + bytes.len()].copy_from_slice(bytes);
    }
    pub(super) fn writes(&self) -> Vec<(u16, u8, u32)> {
        self.writes.lock().unwrap().clone()
    }
}

impl HostDevice for FakeHost {
    fn sbdf(&self) -> Sbdf {
        Sbdf::new(0, 1, 0, 0)
    }
    fn backend(&self) -> &'static str {
        "fake"
    }
    fn config_size(&self) -> usize {
        256
    }
    fn config_read(&self, offset: u16, size: u8) -> Result<u32, HostError> {
        let c = self.cfg.lock().unwrap();
        Ok((0..size as usize).fold(0, |a, i| a | (c[offset as usize + i] as u32) << (8 * i)))
    }
    fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), HostError> {
        self.writes.lock().unwrap().push((offset, size, value));
        let mut c = self.cfg.lock().unwrap();
        for i in 0..size as usize {
            let o = offset as usize + i;
            let b = (value >> (8 * i)) as u8;
            c[o] = (b & !self.w1c[o]) | (c[o] & self.w1c[o] & !b);
        }
        Ok(())
    }
    fn resources(&self) -> Result<HostResources, HostError> {
        Ok(HostResources::default())
    }
    fn ids(&self) -> Result<HostIds, HostError> {
        unreachable!("not used by the engine")
    }
    fn irq(&self) -> Option<u32> {
        None
    }
    fn bar_read(&self, _: u8, _: u64, _: u8) -> Result<u64, HostError> {
        Ok(0)
    }
    fn bar_write(&self, _: u8, _: u64, _: u8, _: u64) -> Result<(), HostError> {
        Ok(())
    }
    fn page_sharers(&self, _: &crate::host::HostBar) -> Result<Vec<Sbdf>, HostError> {
        Ok(Vec::new())
    }
}

#[test]
fn accesses_are_normalised_once() {
    type Normalised = Option<(usize, u32, u32)>;
    let cases: &[(u32, u32, Normalised)] = &[
        (0x00, 4, Some((0, 0, 0xffff_ffff))),
        (0x04, 2, Some((1, 0, 0x0000_ffff))),
        (0x06, 2, Some((1, 16, 0xffff_0000))),
        (0x05, 2, Some((1, 8, 0x00ff_ff00))), // inside one dword: allowed (CFD word)
        (0x07, 1, Some((1, 24, 0xff00_0000))),
        (0x07, 2, None), // straddles a dword
        (0x06, 4, None),
        (0x00, 3, None),
        (0x00, 8, None),
        (0xfc, 4, Some((63, 0, 0xffff_ffff))),
        (0xfe, 2, Some((63, 16, 0xffff_0000))),
        (0x100, 1, None), // past a 256-byte space
        (u32::MAX, 1, None),
    ];
    for &(off, size, want) in cases {
        let got = Access::new(off, size, 256).map(|a| (a.dword, a.shift, a.mask));
        assert_eq!(got, want, "offset {off:#x} size {size}");
    }
}

#[test]
fn bad_accesses_read_all_ones_and_drop_writes() {
    let h = FakeHost::new();
    let mut c = ConfigSpace::new(h.sbdf(), 256);
    c.define(0x40, 4, Reg::scratch(0x1234_5678, !0));
    assert_eq!(c.read(&h, 0x43, 2), 0xffff);
    assert_eq!(c.read(&h, 0x40, 8), 0xffff_ffff);
    assert_eq!(c.read(&h, 0x400, 4), 0xffff_ffff);
    assert_eq!(c.read(&h, 0x40, 3), 0xff_ffff);
    assert_eq!(c.write(&h, 0x42, 4, 0), None);
    assert_eq!(c.read(&h, 0x40, 4), 0x1234_5678, "the malformed write changed nothing");
    assert_eq!(c.stats.bad_accesses, 5);
}

#[test]
fn read_merges_emulated_and_host_bits() {
    let h = FakeHost::new();
    h.set(0x40, &[0xaa, 0xbb, 0xcc, 0xdd]);
    let mut c = ConfigSpace::new(h.sbdf(), 256);
    c.define(0x40, 4, Reg { value: 0x0000_0011, emu: 0x0000_00ff, writable: 0, w1c: 0 });
    assert_eq!(c.read(&h, 0x40, 4), 0xddcc_bb11);
    assert_eq!(c.read(&h, 0x41, 1), 0xbb);
    assert_eq!(c.read(&h, 0x40, 1), 0x11);
    c.hide(0x42, 2);
    assert_eq!(c.read(&h, 0x40, 4), 0x0000_bb11);
}

#[test]
fn write_policy_table() {
    // (name, reg policy, host value, guest write (off, size, data), emulated after,
    //  host writes expected, host value after)
    struct Case {
        name: &'static str,
        reg: Reg,
        host: u32,
        off: u32,
        size: u32,
        data: u32,
        emu_after: u32,
        host_writes: Vec<(u16, u8, u32)>,
        host_after: u32,
    }
    let cases = vec![
        Case {
            name: "emulated writable bits change, read-only bits keep their value",
            reg: Reg { value: 0xf0, emu: !0, writable: 0x0f, w1c: 0 },
            host: 0,
            off: 0x40,
            size: 1,
            data: 0x5a,
            emu_after: 0xfa,
            host_writes: vec![],
            host_after: 0,
        },
        Case {
            name: "emulated W1C bits clear on 1 and stay on 0",
            reg: Reg { value: 0x8001, emu: !0, writable: 0, w1c: 0x8001 },
            host: 0,
            off: 0x40,
            size: 2,
            data: 0x8000,
            emu_after: 0x0001,
            host_writes: vec![],
            host_after: 0,
        },
        Case {
            name: "pass-through bits reach the host, alone in their byte",
            reg: Reg { value: 0, emu: 0, writable: 0x04, w1c: 0 },
            host: 0x0000_0002,
            off: 0x40,
            size: 2,
            data: 0x0004,
            emu_after: 0,
            host_writes: vec![(0x40, 1, 0x06)],
            host_after: 0x06,
        },
        Case {
            name: "host W1C passes a 1 only where the guest wrote 1, never the host's own set bits",
            reg: Reg { value: 0, emu: 0, writable: 0, w1c: 0xf900_0000 },
            host: 0x8100_0010,
            off: 0x40,
            size: 4,
            data: 0x8000_0000,
            emu_after: 0,
            host_writes: vec![(0x43, 1, 0x80)],
            host_after: 0x0100_0010,
        },
        Case {
            name: "xsa_128 a write spanning emulated and host bits writes the host its own value for emulated bits",
            reg: Reg { value: 0x0000, emu: 0x00ff, writable: 0xffff, w1c: 0 },
            host: 0x1234,
            off: 0x40,
            size: 2,
            data: 0xabcd,
            emu_after: 0x00cd,
            host_writes: vec![(0x41, 1, 0xab)],
            host_after: 0xab34,
        },
        Case {
            name: "a write that changes nothing on the host is not issued",
            reg: Reg { value: 0, emu: 0, writable: 0xff, w1c: 0 },
            host: 0x77,
            off: 0x40,
            size: 1,
            data: 0x77,
            emu_after: 0,
            host_writes: vec![],
            host_after: 0x77,
        },
    ];
    for c in cases {
        let h = FakeHost::new();
        h.set(0x40, &c.host.to_le_bytes());
        let mut w1c = [0u8; 256];
        w1c[0x40..0x44].copy_from_slice(&c.reg.w1c.to_le_bytes());
        let h = FakeHost { w1c, ..h };
        let mut cs = ConfigSpace::new(h.sbdf(), 256);
        cs.define(0x40, 4, c.reg);
        cs.write(&h, c.off, c.size, c.data);
        assert_eq!(cs.emulated(0x40, 4) & c.reg.emu, c.emu_after, "{}: emulated value", c.name);
        assert_eq!(h.writes(), c.host_writes, "{}: host writes", c.name);
        assert_eq!(h.config_read(0x40, 4).unwrap(), c.host_after, "{}: host value", c.name);
    }
}

/// XSA-128: a guest write to a register mixing emulated and pass-through bits must never
/// write the emulated (guest) values, or a stale copy of them, into the device: only the
/// bytes with pass-through bits go out, carrying the device's own values for everything
/// else in them.
#[test]
fn xsa_128_a_mixed_register_write_never_carries_emulated_values_to_the_device() {
    let h = FakeHost::new();
    h.set(0x40, &[0x34, 0x12, 0x78, 0x56]);
    let mut c = ConfigSpace::new(h.sbdf(), 256);
    // Byte 0x40 emulated (guest-writable copy), byte 0x41 bits 0-3 pass-through, bits 4-7
    // the device's own (read-only), bytes 0x42-0x43 the device's (read-only).
    c.define(0x40, 4, Reg { value: 0x99, emu: 0x0000_00ff, writable: 0x0000_0fff, w1c: 0 });
    c.write(&h, 0x40, 4, 0xffff_ffff);
    assert_eq!(h.writes(), vec![(0x41, 1, 0x1f)], "one byte: guest bits 0-3 and the device's own bits 4-7");
    assert_eq!(c.read(&h, 0x40, 4), 0x5678_1fff, "emulated byte took the guest's value, the device keeps 0x5678");
    c.write(&h, 0x40, 1, 0x00);
    assert_eq!(h.writes().len(), 1, "an emulated-only write never reaches the device");
    assert_eq!(c.read(&h, 0x40, 4), 0x5678_1f00);
}

#[test]
fn xsa_131_writes_to_unknown_registers_are_dropped_unless_permissive() {
    let h = FakeHost::new();
    let mut c = ConfigSpace::new(h.sbdf(), 256);
    for _ in 0..3 {
        c.write(&h, 0x60, 4, 0xdead_beef);
    }
    assert!(h.writes().is_empty());
    assert_eq!(c.stats.dropped.get(&0x60), Some(&3));
    // The first dropped write per register is logged, at warn (seen at the default level),
    // telling the user about permissive mode; the repeats are not.
    let logged = capture_logs(|| {
        for off in [0x64, 0x64, 0x64, 0x68, 0x66] {
            c.write(&h, off, 2, 0xbeef);
        }
    });
    let lines: Vec<&str> = logged.lines().filter(|l| l.contains("dropped guest write")).collect();
    assert_eq!(lines.len(), 2, "one line each for 0x064 and 0x068:\n{logged}");
    assert!(lines[0].contains("WARN") && lines[0].contains("0x064") && lines[0].contains("--permissive"), "{logged}");
    assert!(lines[1].contains("0x068"), "{logged}");
    // With the register names the device model gives it, the line says what was written.
    c.set_register_names(Box::new(|off| format!("register {off:#x}")));
    let logged = capture_logs(|| {
        c.write(&h, 0x70, 4, 1);
    });
    assert!(logged.contains("dropped guest write to 0x070 (register 0x70)"), "{logged}");
    c.set_permissive(true);
    c.write(&h, 0x60, 4, 0xdead_beef);
    assert_eq!(h.writes(), vec![(0x60, 4, 0xdead_beef)]);
    // A word at byte 1 (legal through CFD) reaches hardware as naturally aligned bytes.
    c.write(&h, 0x61, 2, 0x1234);
    assert_eq!(h.writes()[1..], [(0x61, 1, 0x34), (0x62, 1, 0x12)]);
}

/// What `f` logs through tracing, as the fmt layer prints it.
fn capture_logs(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let sub = tracing_subscriber::fmt().with_writer(move || buf.clone()).with_ansi(false).finish();
    tracing::subscriber::with_default(sub, f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

fn nvme_device(profile: Profile) -> (EmulatedNvme, DeviceModel) {
    let nvme = EmulatedNvme::new(Sbdf::new(0, 3, 0, 0), 0xfe00_0000, 16);
    let opts = DeviceOptions::new(1, Sbdf::new(0, 0, 4, 0), profile);
    let dm = DeviceModel::new(Box::new(NvmeHost::clone_of(&nvme)), 0, opts).unwrap();
    (nvme, dm)
}

#[test]
fn xsa_120_126_guest_decode_and_serr_never_reach_the_host() {
    let (nvme, mut dm) = nvme_device(Profile::Hvm);
    let mut x = crate::xen::sim::Sim::default().xen();
    let host_cmd = nvme.host_config(COMMAND_OFFSET, 2);
    assert_ne!(host_cmd & COMMAND_MEMORY_BIT as u32, 0, "host decode is on from the start");
    assert_ne!(host_cmd & COMMAND_INTX_DISABLE_BIT as u32, 0, "host INTx disabled while no INTx is bound");
    // The guest turns everything off, then sets SERR and parity.
    dm.config_write(&mut x, COMMAND_OFFSET as u32, 2, 0);
    dm.config_write(&mut x, COMMAND_OFFSET as u32, 2, (COMMAND_SERR_BIT | COMMAND_PARITY_BIT) as u32);
    let host_now = nvme.host_config(COMMAND_OFFSET, 2);
    assert_ne!(host_now & COMMAND_MEMORY_BIT as u32, 0, "host memory decode stayed on");
    assert_eq!(host_now & (COMMAND_SERR_BIT | COMMAND_PARITY_BIT) as u32, 0, "SERR/parity are virtual");
    assert_eq!(dm.config_read(COMMAND_OFFSET as u32, 2), (COMMAND_SERR_BIT | COMMAND_PARITY_BIT) as u32);
    // Bus master is the one command bit that passes through.
    dm.config_write(&mut x, COMMAND_OFFSET as u32, 2, COMMAND_MASTER_BIT as u32);
    assert_ne!(nvme.host_config(COMMAND_OFFSET, 2) & COMMAND_MASTER_BIT as u32, 0);
}

#[test]
fn header_reads_as_decided() {
    let (_nvme, mut dm) = nvme_device(Profile::Hvm);
    let r = |dm: &mut DeviceModel, off: u16, size: u32| dm.config_read(off as u32, size);
    assert_eq!(r(&mut dm, 0, 4), 0x0010_1b36);
    assert_eq!(r(&mut dm, 0x08, 4), 0x0108_0202);
    assert_eq!(r(&mut dm, HEADER_TYPE_OFFSET, 1), 0, "single function, type 0");
    assert_eq!(r(&mut dm, BAR0_OFFSET, 4), BAR_MEM_TYPE_64, "guest BARs start at 0 (not the host address)");
    assert_eq!(r(&mut dm, BAR0_OFFSET + 4, 4), 0);
    assert_eq!(r(&mut dm, INTERRUPT_PIN_OFFSET, 1), 1, "HVM: the host's pin A is offered (bound at start-up)");
    assert_eq!(r(&mut dm, CAP_PTR_OFFSET, 1), 0x40);
    assert_eq!(r(&mut dm, STATUS_OFFSET, 2) & STATUS_CAP_LIST_BIT as u32, STATUS_CAP_LIST_BIT as u32);
    // Chain: PCIe -> PM -> MSI -> MSI-X, as on the host.
    assert_eq!(r(&mut dm, 0x41, 1), 0x80);
    assert_eq!(r(&mut dm, 0x81, 1), 0x90);
    assert_eq!(r(&mut dm, 0x91, 1), 0xb0);
    assert_eq!(r(&mut dm, 0xb1, 1), 0);
    assert_eq!(r(&mut dm, 0x92, 2), 0x018a, "MSI: 64-bit, per-vector masks, 32 vectors capable, disabled");
    assert_eq!(r(&mut dm, 0x40 + 0x14, 4), 0, "hidden endpoint slot registers read 0");
    assert_eq!(r(&mut dm, 0x100, 4), 0x0002_0001, "AER v2 exposed at 0x100, the only extended capability");
    assert_eq!(r(&mut dm, 0x44, 4) & (1 << 28), 0, "FLR not offered to the guest");
    let (_nvme, mut pvh) = nvme_device(Profile::Pvh);
    assert_eq!(pvh.config_read(INTERRUPT_PIN_OFFSET as u32, 1), 0, "PVH: no INTx, pin 0");
    // Multifunction from the guest topology (--multifunction on function 0 of a shared
    // slot); the guest cannot set it.
    dm.set_multifunction(true);
    assert_eq!(r(&mut dm, HEADER_TYPE_OFFSET, 1), 0x80);
    dm.config_write(&mut crate::xen::sim::Sim::default().xen(), HEADER_TYPE_OFFSET as u32, 1, 0);
    assert_eq!(r(&mut dm, HEADER_TYPE_OFFSET, 1), 0x80, "read-only for the guest");
    dm.set_multifunction(false);
    assert_eq!(r(&mut dm, HEADER_TYPE_OFFSET, 1), 0);
}

#[test]
fn bar_sizing_reads_back_the_page_rounded_size_and_costs_no_hypercall() {
    let sim = crate::xen::sim::Sim::default();
    let (_nvme, mut dm) = nvme_device(Profile::Hvm);
    let mut x = sim.xen();
    dm.config_write(&mut x, BAR0_OFFSET as u32, 4, !0);
    assert_eq!(dm.config_read(BAR0_OFFSET as u32, 4), 0xffff_c004);
    dm.config_write(&mut x, BAR0_OFFSET as u32 + 4, 4, !0);
    assert_eq!(dm.config_read(BAR0_OFFSET as u32 + 4, 4), 0xffff_ffff);
    assert_eq!(sim.op_count(), 0, "sizing with decode off makes no Xen call");
    // Unused BARs read 0 whatever is written.
    dm.config_write(&mut x, BAR0_OFFSET as u32 + 8, 4, !0);
    assert_eq!(dm.config_read(BAR0_OFFSET as u32 + 8, 4), 0);
}

#[test]
fn pm_power_state_is_virtual() {
    let (nvme, mut dm) = nvme_device(Profile::Hvm);
    let mut x = crate::xen::sim::Sim::default().xen();
    let pmcsr = 0x80 + 4;
    dm.config_write(&mut x, pmcsr, 2, 3);
    assert_eq!(dm.config_read(pmcsr, 2) & 3, 3, "the guest sees D3hot");
    assert_eq!(nvme.host_config(pmcsr as u16, 2) & 3, 0, "the device stays in D0");
    assert_ne!(dm.config_read(pmcsr, 2) & 8, 0, "No_Soft_Reset reads 1");
}

/// Every dword of the emulated NVMe's config space, in both profiles: which bits are
/// emulated, guest-writable and W1C, as the header table (header.rs), the capability
/// files and the extended table (ext.rs) decide. A row is (offset, emulated, writable,
/// W1C, what). The hidden PCIe slot/root registers are asserted after the table; the other
/// dwords not listed (0x88-0x8f, 0xbc-0xff) lie outside every capability.
const NVME_POLICY: [(u16, u32, u32, u32, &str); 37] = [
    (0x00, !0, 0, 0, "vendor/device: emulated from sysfs, read-only"),
    // Command: IO/MEM decode, parity, SERR, INTx-disable and reserved bits emulated; bus
    // master writable and passed through; IO decode not writable (no I/O BAR). Status:
    // reserved bits and Capabilities List emulated, error bits W1C passed through.
    (0x04, 0x0017_fd43, 0x0000_0546, 0xf900_0000, "command/status"),
    (0x08, !0, 0, 0, "class/revision"),
    (0x0c, !0, 0x0000_ffff, 0, "cache line, latency scratch; header type, BIST read-only"),
    (0x10, !0, 0xffff_c000, 0, "BAR0 low: 16 KiB, 64-bit memory"),
    (0x14, !0, !0, 0, "BAR0 high"),
    (0x18, !0, 0, 0, "unused BAR"),
    (0x1c, !0, 0, 0, "unused BAR"),
    (0x20, !0, 0, 0, "unused BAR"),
    (0x24, !0, 0, 0, "unused BAR"),
    (0x28, !0, 0, 0, "CardBus CIS"),
    (0x2c, !0, 0, 0, "subsystem IDs"),
    (0x30, !0, 0, 0, "no ROM"),
    (0x34, !0, 0, 0, "capabilities pointer"),
    (0x38, !0, 0, 0, "reserved"),
    (0x3c, !0, 0x0000_00ff, 0, "interrupt line scratch; pin, min gnt, max lat read-only"),
    (0x40, !0, 0, 0, "PCIe header and capabilities"),
    (0x44, !0, 0, 0, "PCIe DevCap: emulated (FLR hidden)"),
    (0x48, 0x0000_ffff, 0x0000_7fff, 0x000f_0000, "DevCtl virtual; DevSta errors W1C to the host"),
    (0x4c, 0, 0, 0, "LnkCap: host, read-only"),
    (0x50, 0x0000_ffff, 0x0000_0fc3, 0xc000_0000, "LnkCtl virtual; LnkSta host, bandwidth status W1C to the host"),
    (0x64, 0, 0, 0, "DevCap2: host, read-only"),
    (0x68, 0x0000_ffff, 0x0000_ffff, 0, "DevCtl2 virtual"),
    (0x6c, 0, 0, 0, "LnkCap2: host, read-only"),
    (0x70, 0x0000_ffff, 0x0000_ffff, 0, "LnkCtl2 virtual"),
    (0x80, !0, 0, 0, "PM header and PMC"),
    (0x84, !0, 0x0000_0103, 0x0000_8000, "PMCSR: power state and PME enable virtual, PME status W1C"),
    (0x90, !0, 0x0071_0000, 0, "MSI control: enable and multiple message enable"),
    (0x94, !0, 0xffff_fffc, 0, "MSI address"),
    (0x98, !0, !0, 0, "MSI address high"),
    (0x9c, !0, 0x0000_ffff, 0, "MSI data"),
    (0xa0, !0, !0, 0, "MSI mask bits: the guest's copy (Xen masks through bind/unbind)"),
    (0xa4, 0, 0, 0, "MSI pending: host"),
    (0xb0, !0, 0xc000_0000, 0, "MSI-X control: enable and function mask"),
    (0xb4, !0, 0, 0, "MSI-X table offset/BIR: read-only"),
    (0xb8, !0, 0, 0, "MSI-X PBA offset/BIR: read-only"),
    (0x108, !0, 0x07ff_f030, 0, "AER uncorrectable mask: emulated copy"),
];

#[test]
fn every_nvme_register_has_its_policy_in_each_profile() {
    for profile in [Profile::Hvm, Profile::Pvh] {
        let (_nvme, dm) = nvme_device(profile);
        for (off, emu, wr, w1c, what) in NVME_POLICY {
            let (_, e, w, c) = dm.cfg.masks(off);
            assert_eq!((e, w, c), (emu, wr, w1c), "{profile:?} {off:#05x} {what}");
        }
        // The only profile difference in the header: the interrupt pin.
        let pin = dm.cfg.emulated(INTERRUPT_PIN_OFFSET, 1);
        assert_eq!(pin, if profile == Profile::Hvm { 1 } else { 0 }, "{profile:?} interrupt pin");
        // The hidden PCIe slot/root registers read 0 and take no write.
        for off in (0x54..0x64).step_by(4) {
            assert_eq!(dm.cfg.masks(off), (0, !0, 0, 0), "{profile:?} {off:#x} hidden");
        }
    }
}
