//! The debug console over its socket, served from xenpt's event loop while a simulated
//! guest uses the emulated NVMe controller: several clients at once, `config guest`
//! decoded by the real `lspci -F`, every MSI-X vector with the pirq the simulator assigned,
//! and clients that send a huge line, never read their replies, or are one too many get
//! dropped while the guest and the other clients are still served.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use xenpt::console::client::{query, read_reply};
use xenpt::console::server::{MAX_BACKLOG, MAX_CLIENTS};
use xenpt::console::{Console, ConsoleInfo};
use xenpt::demo::guest_os::GuestOs;
use xenpt::demo::{self, DemoOptions};
use xenpt::device::DeviceOptions;
use xenpt::host::nvme::{EmulatedNvme, LBA_SIZE};
use xenpt::ioreq::event_loop::EventLoop;
use xenpt::pci::Sbdf;
use xenpt::runner;
use xenpt::xen::sim::Sim;
use xenpt::xen::GuestKind;
use xenpt::Profile;

const HOST: Sbdf = Sbdf::new(0, 3, 0, 0);
const GUEST: Sbdf = Sbdf::new(0, 0, 4, 0);

/// A xenpt instance serving the emulated NVMe to a simulated HVM domain, in its own
/// thread, with its console on `path`.
struct Xenpt {
    sim: Sim,
    domid: u16,
    path: PathBuf,
    stop: Arc<mio::Waker>,
    thread: Option<thread::JoinHandle<Result<(), String>>>,
}

impl Xenpt {
    fn start(path: &Path) -> Xenpt {
        let sim = Sim::default();
        let nvme = EmulatedNvme::new(HOST, 0xfe00_0000, 4096);
        sim.add_device(Arc::new(nvme.clone()));
        let domid = sim.create_domain(GuestKind::Hvm, 1, 64 << 20);
        sim.assign_device(domid, HOST).unwrap();
        let (tx, rx) = mpsc::channel();
        let (xs, host, p) = (sim.clone(), nvme.host(), path.to_path_buf());
        let thread = thread::spawn(move || -> Result<(), String> {
            let mut xen = xs.xen();
            let opts = DeviceOptions::new(domid, GUEST, Profile::Hvm);
            let mut inst = runner::start(&mut xen, Box::new(host), opts).map_err(|e| e.to_string())?;
            let mut ev = EventLoop::new(&xen).map_err(|e| e.to_string())?;
            let console =
                Console::bind(&p, ConsoleInfo::new(Some("simulated".into()), false)).map_err(|e| e.to_string())?;
            ev.attach_console(console).map_err(|e| e.to_string())?;
            tx.send(ev.stopper()).unwrap();
            let served = runner::serve(&mut xen, &mut inst, &mut ev).map_err(|e| e.to_string());
            let errors = runner::shutdown(&mut xen, &mut inst);
            served?;
            match errors.first() {
                Some(e) => Err(e.to_string()),
                None => Ok(()),
            }
        });
        let stop = rx.recv_timeout(Duration::from_secs(20)).expect("xenpt started");
        Xenpt { sim, domid, path: path.to_path_buf(), stop, thread: Some(thread) }
    }

    fn guest<'a>(&self, say: &'a mut dyn FnMut(String)) -> GuestOs<'a> {
        GuestOs::new(self.sim.guest(self.domid), say)
    }

    fn stop(mut self) {
        self.stop.wake().unwrap();
        let r = self.thread.take().unwrap().join().expect("xenpt thread");
        assert_eq!(r, Ok(()));
        assert!(!self.path.exists(), "the socket is removed at exit");
        assert!(self.sim.pirqs(self.domid).is_empty());
    }
}

/// A connected client with line framing.
struct Client {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { w: s.try_clone().unwrap(), r: BufReader::new(s) }
    }

    fn send(&mut self, line: &str) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn reply(&mut self) -> String {
        read_reply(&mut self.r).unwrap().expect("a reply")
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }
}

/// Write one block pattern through I/O queue 1 and read it back: the device still works.
fn io_round_trip(os: &mut GuestOs, lba: u64, seed: u8) {
    let data: Vec<u8> = (0..LBA_SIZE).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    let (wbuf, rbuf) = (os.alloc(LBA_SIZE as u64), os.alloc(LBA_SIZE as u64));
    os.g.ram_write(wbuf, &data).unwrap();
    os.rw(1, true, lba, 1, wbuf).unwrap();
    os.rw(1, false, lba, 1, rbuf).unwrap();
    let mut back = vec![0u8; LBA_SIZE];
    os.g.ram_read(rbuf, &mut back).unwrap();
    assert_eq!(back, data);
}

fn lspci_decode(dump: &str, dir: &Path) -> String {
    let f = dir.join("guest.lspci");
    std::fs::write(&f, dump).unwrap();
    let out = Command::new("lspci").arg("-F").arg(&f).arg("-vvv").output().expect("lspci (pciutils) is installed");
    assert!(out.status.success(), "lspci -F: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `status` reports `n` connected clients (the asking one included).
fn wait_clients(c: &mut Client, n: usize) {
    let t = Instant::now();
    loop {
        let s = c.ask("status");
        if s.contains(&format!("{n} client(s) connected")) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "still not {n} clients:\n{s}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_clients_inspect_a_live_device_and_lspci_reads_the_guest_view() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/xenpt/1-0000:03:00.0.sock");
    let x = Xenpt::start(&path);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner only");
    assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);

    let mut a = Client::connect(&path);
    let mut b = Client::connect(&path);
    // Before the guest touched anything.
    let msix = b.ask("msix");
    assert!(msix.starts_with("MSI-X: disabled"), "{msix}");

    // The guest brings the controller up while both clients are connected.
    let mut say = |_: String| {};
    let mut os = x.guest(&mut say);
    let opts = DemoOptions { io_queues: 2, verbose: false, ..DemoOptions::default() };
    demo::bring_up(&mut os, &opts).unwrap();

    // Interleaved: both send before either reads.
    a.send("status");
    b.send("msix");
    a.send("config guest");
    b.send("pirqs");
    let status = a.reply();
    let msix = b.reply();
    let guest = a.reply();
    let pirqs = b.reply();
    assert!(status.contains("host 0000:03:00.0") && status.contains("2 client(s) connected"), "{status}");
    assert!(status.contains("MSI-X on (3 of 64 entries bound)"), "{status}");
    // The name from pci.ids, worded as lspci words it, and which database said so.
    assert!(
        status
            .contains("name:      Non-Volatile memory controller: Red Hat, Inc. QEMU NVM Express Controller (names: "),
        "{status}"
    );

    assert!(
        guest.starts_with(
            "00:04.0 Non-Volatile memory controller: Red Hat, Inc. QEMU NVM Express Controller (xenpt guest view"
        ),
        "the dump's header names the device: {}",
        guest.lines().next().unwrap_or_default()
    );

    // Every programmed vector, with the pirq the simulator assigned to it.
    // (pirq 11 is the INTx line: GSI 11 mapped and bound at start-up.)
    let sim_pirqs: Vec<(u32, bool)> = x.sim.pirqs(x.domid).into_iter().filter(|&(p, _)| p != 11).collect();
    assert_eq!(sim_pirqs.len(), 3, "{sim_pirqs:?}");
    for (i, (pirq, _)) in sim_pirqs.iter().enumerate() {
        let row = msix
            .lines()
            .find(|l| l.split_whitespace().next() == Some(i.to_string().as_str()))
            .unwrap_or_else(|| panic!("no entry {i}:\n{msix}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[3], format!("{:#04x}", 0x40 + i), "gvec: {row}");
        assert_eq!(cols[7], "yes", "bound: {row}");
        assert_eq!(cols[8], pirq.to_string(), "pirq: {row}");
        assert!(
            pirqs.contains(&format!("MSI-X {i:<4} {pirq:<6} bound: MSI pirq {pirq} gvec {:#x}", 0x40 + i)),
            "{pirqs}"
        );
    }

    // The guest view, as the real lspci decodes it.
    let decoded = lspci_decode(&guest, dir.path());
    assert!(decoded.contains("00:04.0 Non-Volatile memory controller"), "{decoded}");
    assert!(decoded.contains("MSI-X: Enable+ Count=64 Masked-"), "{decoded}");
    assert!(decoded.contains("Region 0: Memory at f0000000 (64-bit, non-prefetchable)"), "{decoded}");
    assert!(decoded.contains("Capabilities: [40] Express"), "{decoded}");
    assert!(decoded.contains("Capabilities: [100 v2] Advanced Error Reporting"), "AER is exposed:\n{decoded}");

    // The host view too; and the diff names the BAR.
    let host = a.ask("config host");
    assert!(lspci_decode(&host, dir.path()).contains("03:00.0 Non-Volatile memory controller"));
    let diff = b.ask("diff");
    assert!(diff.lines().any(|l| l.starts_with("0x010") && l.contains("BAR0") && l.contains("emulated")), "{diff}");
    let stats = a.ask("stats");
    assert!(stats.contains("ioreqs:") && !stats.contains("pci-config 0,"), "{stats}");
    assert!(stats.contains("request handling (slot taken to completion, 1 in 16 timed): p50 <= "), "{stats}");
    assert!(a.ask("bogus").starts_with("error: unknown command"));

    // The xenpt console client, and a client that half-closes after an unterminated line
    // (what `printf status | socat - UNIX-CONNECT:PATH` does).
    let r = query(&path, "bars").unwrap();
    assert!(r.contains("0xf0000000-0xf0001fff -> 0xfe000000-0xfe001fff"), "{r}");
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"caps").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.contains("guest chain: 0x40 -> 0x80 -> 0x90 -> 0xb0") && all.ends_with("\n\n"), "{all}");
    assert_eq!(a.ask("quit"), "bye\n");
    let mut rest = String::new();
    assert_eq!(a.r.read_line(&mut rest).unwrap(), 0, "closed after quit");

    io_round_trip(&mut os, 0, 1);
    drop((os, b));
    x.stop();
}

#[test]
fn clients_that_misbehave_are_dropped_and_the_device_keeps_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let x = Xenpt::start(&path);
    let mut say = |_: String| {};
    let mut os = x.guest(&mut say);
    let opts = DemoOptions { io_queues: 1, verbose: false, ..DemoOptions::default() };
    demo::bring_up(&mut os, &opts).unwrap();
    let mut good = Client::connect(&path);
    wait_clients(&mut good, 1);

    // 1 MiB without a newline: dropped once past the line limit.
    let huge = UnixStream::connect(&path).unwrap();
    let mut hw = huge.try_clone().unwrap();
    let writer = thread::spawn(move || hw.write_all(&vec![b'a'; 1 << 20]));
    let t = Instant::now();
    let wrote = writer.join().unwrap();
    assert!(wrote.is_err(), "xenpt stopped reading and closed the connection");
    assert!(t.elapsed() < Duration::from_secs(20));
    let mut r = BufReader::new(huge);
    r.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The error line may be lost to the reset that unread input causes; either way it ends.
    let mut got = String::new();
    let _ = r.read_to_string(&mut got);
    assert!(got.is_empty() || got.starts_with("error: line longer than 4096 bytes"), "{got:?}");
    wait_clients(&mut good, 1);
    io_round_trip(&mut os, 1, 2);
    // A long line that does end: refused all the same, and told why.
    let mut long = Client::connect(&path);
    long.send(&"b".repeat(5000));
    assert_eq!(long.reply(), "error: line longer than 4096 bytes; closing\n");
    assert!(read_reply(&mut long.r).unwrap().is_none(), "and closed");

    // A client that sends commands and never reads: dropped once its unread replies pass
    // the backlog limit, while the good client and the guest are served meanwhile.
    let mut deaf = UnixStream::connect(&path).unwrap();
    deaf.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let per = good.ask("config host").len() + 1;
    let n = (2 * MAX_BACKLOG) / per + 50;
    let mut sent = 0;
    for _ in 0..n {
        if deaf.write_all(b"config host\n").is_err() {
            break; // already dropped
        }
        sent += 1;
        if sent % 25 == 0 {
            assert!(good.ask("status").contains("xenpt"), "the good client is answered meanwhile");
        }
    }
    wait_clients(&mut good, 1);
    // It got part of its replies, then the connection ended.
    deaf.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let ended = deaf.read_to_end(&mut got);
    assert!(got.len() < sent * per, "{} of {} reply bytes delivered ({ended:?})", got.len(), sent * per);
    assert!(got.len() > per, "it was served for a while first");
    io_round_trip(&mut os, 2, 3);

    // One client too many is told so and closed; the others stay.
    let mut many: Vec<Client> = (0..MAX_CLIENTS - 1).map(|_| Client::connect(&path)).collect();
    wait_clients(&mut good, MAX_CLIENTS);
    let mut extra = Client::connect(&path);
    let refused = extra.reply();
    assert!(refused.starts_with(&format!("error: too many console clients ({MAX_CLIENTS} connected)")), "{refused}");
    assert!(many[0].ask("pirqs").starts_with("3 pirq(s)"), "the others are still served (INTx + 2 MSI-X)");
    many.clear();
    wait_clients(&mut good, 1);
    io_round_trip(&mut os, 3, 4);
    drop((os, good, extra, deaf));
    x.stop();
}

#[test]
fn the_socket_replaces_a_stale_one_but_not_a_live_one_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    // A stale socket (its listener gone) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let c = Console::bind(&path, ConsoleInfo::new(None, false)).unwrap();
    // A live one is not.
    let e = Console::bind(&path, ConsoleInfo::new(None, false)).err().unwrap();
    assert!(e.to_string().contains("another xenpt console is listening"), "{e}");
    drop(c);
    assert!(!path.exists(), "removed on drop");
    // Nor is a file that is not a socket.
    std::fs::write(&path, "precious").unwrap();
    let e = Console::bind(&path, ConsoleInfo::new(None, false)).err().unwrap();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    // Nothing is left behind in the directory but that file.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("s.sock")]);
    let long = dir.path().join("x".repeat(120));
    assert!(Console::bind(&long, ConsoleInfo::new(None, false)).err().unwrap().to_string().contains("too long"));
}

fn xenpt_console(path: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_xenpt"))
        .arg("console")
        .arg(path)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn demo_with_a_console_and_the_console_client() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.sock");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_xenpt"))
        .args(["demo", "--queues", "2", "--blocks", "4", "--hold", "6", "--console"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let mut transcript = String::new();
    loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "the demo ended before holding:\n{transcript}");
        transcript.push_str(&l);
        if l.contains("stay up for") {
            break;
        }
    }
    assert!(transcript.contains(&format!("xenpt: debug console at {}", path.display())), "{transcript}");

    let (code, status, _) = xenpt_console(&path, &["status"], None);
    assert_eq!(code, 0);
    assert!(status.contains("xen:       simulated") && status.contains("log:       level warn, trace off"), "{status}");
    let (code, err, _) = xenpt_console(&path, &["no-such-command"], None);
    assert_eq!(code, 1, "an error reply exits 1");
    assert!(err.starts_with("error: unknown command"), "{err}");
    // One command as several words, and the interactive loop on stdin.
    let (code, guest, _) = xenpt_console(&path, &["config", "guest"], None);
    assert_eq!(code, 0);
    assert!(lspci_decode(&guest, dir.path()).contains("MSI-X: Enable+ Count=64"), "{guest}");
    let (code, session, _) = xenpt_console(&path, &[], Some("help\n\nmsix\nquit\nstatus\n"));
    assert_eq!(code, 0);
    assert!(session.contains("commands (one per line") && session.contains("MSI-X: enabled"), "{session}");
    assert!(session.trim_end().ends_with("bye"), "nothing after quit:\n{session}");
    // The log filter is reloadable in a real xenpt process.
    let (code, r, _) = xenpt_console(&path, &["log", "level", "info"], None);
    assert_eq!((code, r.trim()), (0, "log filter now xenpt=info,info"));
    let (code, r, _) = xenpt_console(&path, &["trace", "on"], None);
    assert_eq!(code, 0);
    assert!(r.contains("trace on") && r.contains("xenpt::ioreq=trace"), "{r}");
    let (_, r, _) = xenpt_console(&path, &["log", "level"], None);
    assert_eq!(r.trim(), "log level info; trace on");
    let (code, r, _) = xenpt_console(&path, &["log", "level", "xenpt=loud"], None);
    assert_eq!(code, 1);
    assert!(r.starts_with("error: log level: bad log level"), "{r}");

    // The demo still ends on its own, tears down, and removes the socket.
    let status = demo.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.lines().last().unwrap().starts_with("demo: PASS"), "{rest}");
    let mut err = String::new();
    demo.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("log filter set to xenpt=info,info from the console"), "the change is logged:\n{err}");
    assert!(!path.exists());
    let (code, _, e) = xenpt_console(&path, &["status"], None);
    assert_eq!(code, 1);
    assert!(e.contains("is a xenpt with this console running?"), "{e}");
}
