//! `xenpt run --simulator`: the real binary, in its own process, serves the emulated NVMe
//! of a simulator in this process to a simulated guest, and tears down on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::sync::Arc;

use xenpt::demo::{self, guest_os::GuestOs, DemoOptions, DemoReport};
use xenpt::host::nvme::EmulatedNvme;
use xenpt::pci::Sbdf;
use xenpt::xen::remote::Server;
use xenpt::xen::sim::Sim;
use xenpt::xen::GuestKind;

const HOST: Sbdf = Sbdf::new(0, 3, 0, 0);

#[test]
fn xenpt_run_serves_a_simulated_guest_from_another_process() {
    let sim = Sim::default();
    let nvme = EmulatedNvme::new(HOST, 0xfe00_0000, 256);
    sim.add_device(Arc::new(nvme.clone()));
    let d = sim.create_domain(GuestKind::Hvm, 1, 16 << 20);
    // The toolstack's part (assignment, permissions), as libxl does before xenpt starts.
    sim.assign_device(d, HOST).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sim.sock");
    Server::new(sim.clone(), [nvme.clone()]).spawn(UnixListener::bind(&sock).unwrap());

    let mut child = Command::new(env!("CARGO_BIN_EXE_xenpt"))
        .args(["--log-level", "info", "run", "--simulator"])
        .arg(&sock)
        .args(["--domid", &d.to_string(), "--sbdf", "0000:03:00.0", "--ready-fd", "1", "--no-console"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), format!("ready 0000:03:00.0 d{d} 0000:00:04.0"));
    assert_eq!(sim.ioreq_server_count(d), 1);
    let opts = DemoOptions { verbose: false, ..DemoOptions::default() };
    let mut say = |_s: String| {};
    let mut os = GuestOs::new(sim.guest(d), &mut say);
    let mut report = DemoReport::default();
    demo::demo_flow(&mut os, &opts, &mut report).unwrap();
    assert_eq!(report.bytes_verified, 2 * 64 * 512);
    assert!(!os.interrupts.is_empty() && os.interrupts.iter().all(|v| os.vectors.contains(v)));
    assert!(!sim.pirqs(d).is_empty(), "MSI-X vectors are mapped while the guest runs");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(exit.success(), "xenpt exited {exit:?}:\n{log}");
    assert!(log.contains("simulated Xen in another process"), "{log}");
    assert!(log.contains("everything torn down"), "{log}");
    // Its teardown reached the simulator: nothing left in "Xen".
    assert!(sim.pirqs(d).is_empty(), "{:?}", sim.pirqs(d));
    assert!(sim.p2m_mmio(d).is_empty());
    assert_eq!(sim.ioreq_server_count(d), 0);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_missing_simulator_is_named_in_the_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_xenpt"))
        .args(["run", "--simulator", "/nonexistent/sim.sock", "--domid", "1", "--sbdf", "0000:03:00.0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to the simulator at /nonexistent/sim.sock"), "{err}");
}
