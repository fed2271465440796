//! The console's parser and every command's output, against a device model on the
//! simulator that a guest has programmed (BAR0 mapped, MSI-X or MSI enabled).

use std::sync::Arc;

use super::*;
use crate::device::{DeviceModel, DeviceOptions};
use crate::host::dump::parse_dump;
use crate::host::nvme::EmulatedNvme;
use crate::ioreq::IoreqServer;
use crate::pci::*;
use crate::xen::sim::{Sim, SimXen};
use crate::xen::GuestKind;
use crate::Profile;

const HOST: Sbdf = Sbdf::new(0, 3, 0, 0);
const GUEST: Sbdf = Sbdf::new(0, 0, 4, 0);
const HOST_BAR0: u64 = 0xfe00_0000;
const GUEST_BAR0: u64 = 0xf000_0000;

struct Rig {
    sim: Sim,
    xen: SimXen,
    server: IoreqServer,
    dm: DeviceModel,
    info: ConsoleInfo,
}

fn rig() -> Rig {
    let sim = Sim::default();
    let nvme = EmulatedNvme::new(HOST, HOST_BAR0, 16);
    sim.add_device(Arc::new(nvme.clone()));
    let domid = sim.create_domain(GuestKind::Hvm, 1, 1 << 20);
    sim.assign_device(domid, HOST).unwrap();
    let mut xen = sim.xen();
    let server = IoreqServer::create(&mut xen, domid, 1).unwrap();
    let opts = DeviceOptions::new(domid, GUEST, Profile::Hvm);
    let dm = DeviceModel::new(Box::new(nvme.host()), server.id(), opts).unwrap();
    Rig { sim, xen, server, dm, info: ConsoleInfo::new(Some("simulated".into()), false) }
}

impl Rig {
    fn w(&mut self, reg: u16, size: u32, v: u32) {
        self.dm.config_write(&mut self.xen, reg as u32, size, v);
    }

    /// What a guest driver does: BAR0 at GUEST_BAR0, decode and bus mastering on.
    fn map_bar0(&mut self) {
        self.w(BAR0_OFFSET, 4, GUEST_BAR0 as u32);
        self.w(BAR0_OFFSET + 4, 4, 0);
        self.w(COMMAND_OFFSET, 2, (COMMAND_MEMORY_BIT | COMMAND_MASTER_BIT) as u32);
    }

    /// Linux's MSI-X bring-up of `n` entries with vectors 0x40.. (entries written masked
    /// under Function Mask, then MSI-X enabled).
    fn msix(&mut self, n: u16) {
        let l = self.dm.caps.msix.unwrap();
        let c = l.cap_offset + 2;
        self.w(c, 2, 0xc000);
        let table = GUEST_BAR0 + l.table_offset;
        for i in 0..n as u64 {
            let e = table + i * 16;
            self.dm.mmio_write(&mut self.xen, e, 4, 0xfee0_0000);
            self.dm.mmio_write(&mut self.xen, e + 4, 4, 0);
            self.dm.mmio_write(&mut self.xen, e + 8, 4, 0x40 + i);
            self.dm.mmio_write(&mut self.xen, e + 12, 4, 1);
        }
        self.w(c, 2, 0x8000);
    }

    fn run(&mut self, line: &str) -> Reply {
        let mut env = Env {
            info: &self.info,
            device: Some(&mut self.dm),
            ioreqs: Some(self.server.stats),
            path: None,
            clients: 1,
        };
        execute_line(line, &mut env).expect("a reply")
    }

    fn ok(&mut self, line: &str) -> String {
        let r = self.run(line);
        assert!(!r.error, "{line}: {}", r.text);
        r.text
    }
}

#[test]
fn the_parser_takes_every_command_and_refuses_the_rest() {
    let ok = |l: &str| parse(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
    assert_eq!(ok(""), None);
    assert_eq!(ok("   "), None);
    assert_eq!(ok("# a comment"), None);
    assert_eq!(ok("help"), Some(Command::Help));
    assert_eq!(ok("?"), Some(Command::Help));
    assert_eq!(ok("  STATUS \r"), Some(Command::Status));
    assert_eq!(ok("config guest"), Some(Command::Config(View::Guest)));
    assert_eq!(ok("config   Host"), Some(Command::Config(View::Host)));
    assert_eq!(ok("diff"), Some(Command::Diff));
    assert_eq!(ok("caps"), Some(Command::Caps));
    assert_eq!(ok("bars"), Some(Command::Bars));
    assert_eq!(ok("msix"), Some(Command::Msix { all: false }));
    assert_eq!(ok("msix all"), Some(Command::Msix { all: true }));
    assert_eq!(ok("msi"), Some(Command::Msi));
    assert_eq!(ok("pirqs"), Some(Command::Pirqs));
    assert_eq!(ok("stats"), Some(Command::Stats));
    assert_eq!(ok("log level"), Some(Command::LogLevel(None)));
    assert_eq!(ok("log level debug"), Some(Command::LogLevel(Some("debug".into()))));
    // Directives keep their case (targets are case-sensitive).
    assert_eq!(
        ok("log level xenpt::config=debug,warn"),
        Some(Command::LogLevel(Some("xenpt::config=debug,warn".into())))
    );
    assert_eq!(ok("trace"), Some(Command::Trace(None)));
    assert_eq!(ok("trace on"), Some(Command::Trace(Some(true))));
    assert_eq!(ok("trace OFF"), Some(Command::Trace(Some(false))));
    assert_eq!(ok("quit"), Some(Command::Quit));
    assert_eq!(ok("exit"), Some(Command::Quit));
    for (bad, says) in [
        ("config", "usage: config guest|host"),
        ("config guest host", "usage: config guest|host"),
        ("config both", "usage: config guest|host"),
        ("msix some", "usage: msix [all]"),
        ("log", "usage: log level"),
        ("log level a b", "usage: log level"),
        ("trace maybe", "usage: trace [on|off]"),
        ("status now", "status takes no arguments"),
        ("reboot", "unknown command \"reboot\""),
    ] {
        let e = parse(bad).expect_err(bad);
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    // An unknown command is echoed back only in part.
    assert!(parse(&"x".repeat(1000)).unwrap_err().len() < 120);
    // Nothing changes device state yet, so read-only refuses nothing.
    for l in ["help", "status", "config guest", "diff", "msix all", "log level info", "trace on", "quit"] {
        assert!(!ok(l).unwrap().changes_device_state(), "{l}");
    }
}

#[test]
fn replies_are_non_empty_lines_ended_by_one_empty_line() {
    assert_eq!(Reply::ok("a\n\nb\n".into()).encode(), b"a\nb\n\n");
    assert_eq!(Reply::ok(String::new()).encode(), b"\n");
    let e = Reply::err("nope");
    assert!(e.error);
    assert_eq!(e.encode(), b"error: nope\n\n");
}

#[test]
fn help_lists_every_command() {
    let mut r = rig();
    let h = r.ok("help");
    for c in [
        "status",
        "config guest",
        "config host",
        "diff",
        "caps",
        "bars",
        "msix",
        "msi",
        "pirqs",
        "stats",
        "log level",
        "trace",
        "quit",
    ] {
        assert!(h.contains(c), "help lacks {c}:\n{h}");
    }
    assert!(r.run("frobnicate").text.starts_with("error: unknown command"));
}

#[test]
fn status_names_device_domain_profile_xen_and_mode() {
    let mut r = rig();
    r.map_bar0();
    r.msix(3);
    let s = r.ok("status");
    for want in [
        "host 0000:03:00.0 [1b36:0010] class 010802",
        "emulated-nvme backend",
        "guest:     0000:00:04.0",
        "domain:    1, profile hvm, permissive off",
        "xen:       simulated",
        "uptime:    ",
        "read-only (--console-write not given)",
        "MSI-X on (3 of 64 entries bound)",
        "3 pirq(s) mapped",
        "memory decode on",
        "2 page(s) mapped, 1 range(s) trapped",
    ] {
        assert!(s.contains(want), "status lacks {want:?}:\n{s}");
    }
    r.info.write = true;
    assert!(r.ok("status").contains("read-write (--console-write given)"));
}

#[test]
fn config_dumps_are_the_guest_and_host_bytes_in_lspci_format() {
    let mut r = rig();
    r.map_bar0();
    r.msix(2);
    let guest = r.ok("config guest");
    let (sbdf, desc, bytes) = parse_dump(&guest).unwrap();
    assert_eq!(sbdf, Sbdf::new(0, 0, 4, 0));
    assert!(desc.contains("guest view of 0000:03:00.0"), "{desc}");
    let reads = r.dm.cfg.stats.host_reads;
    assert_eq!(bytes, r.dm.guest_snapshot());
    assert!(r.dm.cfg.stats.host_reads > reads, "a snapshot reads the host...");
    let reads = r.dm.cfg.stats.host_reads;
    r.ok("config guest");
    assert_eq!(r.dm.cfg.stats.host_reads, reads, "...but the console's snapshots are not counted as guest activity");
    assert_eq!(&bytes[0x10..0x14], &(GUEST_BAR0 as u32 | 4).to_le_bytes(), "the guest's BAR0");
    let host = r.ok("config host");
    let (sbdf, _, hbytes) = parse_dump(&host).unwrap();
    assert_eq!(sbdf, Sbdf::new(0, 3, 0, 0));
    assert_eq!(hbytes.len(), 4096);
    assert_eq!(&hbytes[0x10..0x14], &(HOST_BAR0 as u32 | 4).to_le_bytes(), "the host's BAR0");
    assert_eq!(&hbytes[0x100..0x104], &[0x01, 0x00, 0x02, 0x00], "AER header on the host");
    assert_eq!(&bytes[0x100..0x104], &[0x01, 0x00, 0x02, 0x00], "exposed to the guest");
}

#[test]
fn diff_explains_every_difference() {
    let mut r = rig();
    r.map_bar0();
    let d = r.ok("diff");
    let line = |off: &str| {
        d.lines().find(|l| l.starts_with(off)).unwrap_or_else(|| panic!("no line for {off}:\n{d}")).to_string()
    };
    assert!(d.starts_with("guest view vs host, 4096 bytes: 4 dword(s) differ"), "{d}");
    let bar0 = line("0x010");
    assert!(bar0.contains("BAR0") && bar0.contains("f0000004") && bar0.contains("fe000004"), "{bar0}");
    assert!(bar0.contains("emulated: bits 0x0e000000"), "{bar0}");
    let cmd = line("0x004");
    assert!(cmd.contains("Command / Status") && cmd.contains("emulated: bits 0x00000400"), "INTx disable: {cmd}");
    let line_pin = line("0x03c");
    assert!(line_pin.contains("emulated: bits 0x0000000b"), "interrupt line is the guest's scratch: {line_pin}");
    let flr = line("0x044");
    assert!(flr.contains("PCI Express [40] +0x4") && flr.contains("masked: bits 0x10000000"), "FLR hidden: {flr}");
    assert!(!d.lines().any(|l| l.starts_with("0x100")), "AER at 0x100 is exposed as on the host:\n{d}");
    assert!(!d.contains("changed on the host"), "{d}");
}

#[test]
fn caps_lists_exposed_and_hidden_with_reasons() {
    let mut r = rig();
    let c = r.ok("caps");
    for want in [
        "4 exposed, 0 hidden",
        "[40] id 0x10 PCI Express",
        "[80] id 0x01 Power Management",
        "[90] id 0x05 MSI ",
        "[b0] id 0x11 MSI-X",
        "guest chain: 0x40 -> 0x80 -> 0x90 -> 0xb0",
        "MSI-X layout: 64 entries, table BAR0+0x2000, PBA BAR0+0x3000",
        "MSI layout: cap 0x90, 64-bit, per-vector masking yes, up to 32 vector(s)",
        "[100] id 0x0001 v2 Advanced Error Reporting",
        "extended capabilities (0x100-0xfff), host chain order: 1 exposed, 0 hidden",
        "guest extended chain: 0x100",
    ] {
        assert!(c.contains(want), "caps lacks {want:?}:\n{c}");
    }
}

#[test]
fn bars_show_host_guest_mapped_and_trapped_ranges() {
    let mut r = rig();
    let b = r.ok("bars");
    assert!(b.contains("memory decode off"), "{b}");
    assert!(b.contains("BAR0  mem64") && b.contains("not programmed"), "{b}");
    assert_eq!(b.matches("  none").count(), 3, "nothing mapped, trapped or port-mapped yet:\n{b}");
    r.map_bar0();
    let b = r.ok("bars");
    for want in [
        "memory decode on, I/O decode off",
        "BAR0  mem64      0xfe000000           0x4000     0x4000     0xf0000000",
        "0xf0000000-0xf0001fff -> 0xfe000000-0xfe001fff  2 page(s), BAR0+0x0",
        "0xf0002000-0xf0003fff  BAR0+0x2000: MSI-X table, PBA",
    ] {
        assert!(b.contains(want), "bars lacks {want:?}:\n{b}");
    }
    // The record the console shows is the mapper's, which is Xen's.
    assert_eq!(r.sim.p2m_mmio(1).len(), 2);
}

#[test]
fn msix_lists_every_programmed_vector_with_its_pirq() {
    let mut r = rig();
    assert!(r.ok("msix").contains("MSI-X: disabled"));
    r.map_bar0();
    r.msix(3);
    let m = r.ok("msix");
    assert!(m.contains("MSI-X: enabled, function mask off; 64 entries; table BAR0+0x2000 (guest 0xf0002000)"), "{m}");
    let pirqs: Vec<u32> = r.sim.pirqs(1).iter().map(|p| p.0).collect();
    assert_eq!(pirqs.len(), 3);
    for (i, p) in pirqs.iter().enumerate() {
        let row =
            m.lines().find(|l| l.starts_with(&format!("{i}     "))).unwrap_or_else(|| panic!("no entry {i}:\n{m}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        // entry address data gvec masked hw-mask pending bound pirq gflags gtable
        assert_eq!(
            cols[..],
            [
                &i.to_string(),
                "0xfee00000",
                &format!("{:#x}", 0x40 + i),
                &format!("{:#04x}", 0x40 + i),
                "yes",
                "yes",
                "no",
                "yes",
                &p.to_string(),
                "0x0",
                "0xf0002000"
            ],
            "{row}"
        );
    }
    assert!(m.contains("61 other entries never written"), "{m}");
    let all = r.ok("msix all");
    assert_eq!(
        all.lines().filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<u32>().is_ok())).count(),
        64
    );
}

#[test]
fn msi_shows_the_registers_and_every_vector_of_the_block() {
    let mut r = rig();
    assert!(r.ok("msi").contains("no vectors (MSI disabled)"));
    let l = r.dm.caps.msi.unwrap();
    let c = l.cap_offset;
    r.map_bar0();
    r.w(c + 4, 4, 0xfee0_0000);
    r.w(c + 8, 4, 0);
    r.w(l.data(), 2, 0x50);
    r.w(l.mask().unwrap(), 4, 0b10); // vector 1 masked
    r.w(c + 2, 2, 0x0021); // enable, MME 2: four vectors
    let m = r.ok("msi");
    assert!(
        m.contains("guest registers: enable on, MME 2 (4 vector(s)), address 0xfee00000, data 0x0050, mask 0x00000002"),
        "{m}"
    );
    assert!(m.contains("in effect: enable on, 4 vector(s)"), "{m}");
    let rows: Vec<Vec<&str>> =
        m.lines().skip_while(|l| !l.starts_with("vector")).skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 4, "{m}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], i.to_string());
        assert_eq!(row[1], format!("{:#04x}", 0x50 + i), "gvec = data | i");
        assert_eq!(row[2], if i == 1 { "yes" } else { "no" }, "masked");
        assert_eq!(row[4], if i == 1 { "no" } else { "yes" }, "a masked vector stays unbound");
        assert!(row[5].parse::<u32>().is_ok(), "every vector of the block has a pirq: {row:?}");
    }
    let p = r.ok("pirqs");
    assert!(p.contains("4 pirq(s)") && p.contains("MSI 1      ") && p.contains("mapped, not bound"), "{p}");
}

#[test]
fn pirqs_and_stats_count_what_happened() {
    let mut r = rig();
    assert!(r.ok("pirqs").starts_with("0 pirq(s) mapped into domain 1"));
    r.map_bar0();
    r.msix(3);
    r.w(0xf0, 4, 0x1234); // device-specific, unknown: dropped
    r.w(0xf0, 2, 0x1);
    let p = r.ok("pirqs");
    assert!(p.contains("MSI-X 2    57     bound: MSI pirq 57 gvec 0x42 gflags 0x0 gtable 0xf0002000"), "{p}");
    assert!(p.contains("since start: 3 map, 0 unmap, 3 bind, 0 unbind, 0 failed"), "{p}");
    let s = r.ok("stats");
    for want in [
        "ioreqs: 0 events",
        "request handling (slot taken to completion, 1 in 16 timed): no requests yet",
        "guest writes",
        "0x0f0 device-specific",
        "MSI-X table: 0 reads, 12 writes",
        "hypercalls, BARs: 1 memory_mapping, 0 ioport_mapping, 1 io-range (trap) calls; 0 failed",
        "hypercalls, interrupts: 3 map_pirq, 0 unmap_pirq, 3 bind_pt_irq, 0 unbind_pt_irq; 0 failed",
    ] {
        assert!(s.contains(want), "stats lacks {want:?}:\n{s}");
    }
    let dropped = s.lines().find(|l| l.contains("0x0f0")).unwrap();
    assert!(dropped.trim_end().ends_with(" 2"), "two dropped writes to 0xf0: {dropped}");
}

#[test]
fn device_commands_need_a_device_and_log_commands_say_when_unsupported() {
    let info = ConsoleInfo::new(None, false);
    let mut env = Env { info: &info, device: None, ioreqs: None, path: None, clients: 0 };
    let r = execute_line("config guest", &mut env).unwrap();
    assert!(r.error && r.text.contains("no device model"), "{r:?}");
    let r = execute_line("status", &mut env).unwrap();
    assert!(!r.error && r.text.contains("device:    none attached") && r.text.contains("xen:       unknown"), "{r:?}");
    assert!(execute_line("", &mut env).is_none());
    let q = execute_line("quit", &mut env).unwrap();
    assert!(q.close && !q.error);
    // The library's tests never install the process logger (it is global): without it
    // the log commands say they are not supported here. tests/console.rs checks them in
    // a real xenpt process.
    if crate::log::current().is_none() {
        for l in ["log level debug", "log level", "trace on", "trace"] {
            let r = execute_line(l, &mut env).unwrap();
            assert!(r.error && r.text.contains("not supported"), "{l}: {r:?}");
        }
    }
}
