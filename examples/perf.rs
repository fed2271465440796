//! Issue 10's budgets 2-5 measured on real `xenpt run` processes: xenpt serves the
//! emulated NVMe of the simulator in *this* process (`xen::remote`), so what is measured
//! of xenpt (resident memory, start-up, idle wake-ups) is xenpt's own, and the simulated
//! hypervisor, the devices, their namespaces and the guests' RAM are not in it.
//!
//!   perf --xenpt target/release/xenpt [--devices 256] [--idle-seconds 10] [--startups 30]
//!        [--reads 4000] [--rounds 7]
//!
//! Run through tools/perf (builds, raises the fd limit). Prints each figure next to its
//! budget and exits 1 if one is missed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenpt::demo::{self, guest_os::GuestOs, DemoOptions, DemoReport};
use xenpt::host::nvme::EmulatedNvme;
use xenpt::pci::Sbdf;
use xenpt::xen::remote::Server;
use xenpt::xen::sim::Sim;
use xenpt::xen::{DomId, GuestKind};

const GUEST: Sbdf = demo::GUEST_SBDF;

struct Opts {
    xenpt: PathBuf,
    devices: usize,
    idle: u64,
    startups: usize,
    reads: usize,
    rounds: usize,
}

fn opts() -> Opts {
    let mut o =
        Opts { xenpt: "target/release/xenpt".into(), devices: 256, idle: 10, startups: 30, reads: 4000, rounds: 7 };
    let a: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < a.len() {
        let v = &a[i + 1];
        match a[i].as_str() {
            "--xenpt" => o.xenpt = v.into(),
            "--devices" => o.devices = v.parse().expect("--devices N"),
            "--idle-seconds" => o.idle = v.parse().expect("--idle-seconds N"),
            "--startups" => o.startups = v.parse().expect("--startups N"),
            "--reads" => o.reads = v.parse().expect("--reads N"),
            "--rounds" => o.rounds = v.parse().expect("--rounds N"),
            x => panic!("unknown option {x}"),
        }
        i += 2;
    }
    assert!((1..=1024).contains(&o.devices), "--devices 1..1024");
    o
}

fn host_sbdf(i: usize) -> Sbdf {
    Sbdf::new(0, 1 + (i / 32) as u8, (i % 32) as u8, 0)
}

/// One running xenpt.
struct Xenpt {
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl Xenpt {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; its exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        self.child.wait().expect("wait for xenpt")
    }
}

/// Start xenpt for domain `d` serving host device `i`; returns once it wrote its ready line.
fn start(o: &Opts, sock: &Path, dir: &Path, d: DomId, i: usize) -> Xenpt {
    let mut child = Command::new(&o.xenpt)
        .args(["--log-level", "warn", "run", "--simulator"])
        .arg(sock)
        .args(["--domid", &d.to_string(), "--sbdf", &host_sbdf(i).to_string(), "--ready-fd", "1", "--console"])
        .arg(dir.join(format!("console-{i}.sock")))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn xenpt");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    assert!(line.starts_with("ready "), "xenpt for device {i} did not get ready: {line:?}");
    Xenpt { child, _stdout: out }
}

fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Context switches of every thread of `pid`: each one is a wake-up.
fn switches(pid: u32) -> u64 {
    let mut n = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in s.lines() {
            if l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches") {
                n += l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    n
}

/// Resident KiB of `pid` by what the memory is: the xenpt binary, shared libraries, heap,
/// stacks, the shared ioreq pages, other anonymous memory.
fn rss_breakdown(pid: u32, exe: &str) -> BTreeMap<&'static str, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut what = "anonymous";
    for l in text.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = l.split_whitespace().nth(5).unwrap_or("");
            what = if path.ends_with(exe) {
                "xenpt binary"
            } else if path.contains(".so") {
                "shared libraries"
            } else if path == "[heap]" {
                "heap"
            } else if path == "[stack]" {
                "main stack"
            } else if path.starts_with("/memfd:") {
                "ioreq pages (shared)"
            } else if path.starts_with("[anon") {
                "anonymous (thread stacks, large allocations)"
            } else if path.starts_with('[') {
                "kernel (vdso, vvar)"
            } else if path.is_empty() {
                "anonymous (thread stacks, large allocations)"
            } else {
                "other files"
            };
        } else if let Some(v) = l.strip_prefix("Rss:") {
            *out.entry(what).or_insert(0) += v.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    out
}

/// Mean time per config read (µs) over `reads` reads, of an emulated register and of a
/// pass-through one, alternating.
fn read_round(sim: &Sim, d: DomId, reads: usize) -> f64 {
    let g = sim.guest(d);
    let t = Instant::now();
    for i in 0..reads {
        let (reg, size) = if i % 2 == 0 { (0x00, 4) } else { (0x06, 2) };
        g.cfg_read(0, GUEST, reg, size).expect("guest config read");
    }
    t.elapsed().as_secs_f64() * 1e6 / reads as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn latency(o: &Opts, sim: &Sim, d: DomId) -> f64 {
    read_round(sim, d, o.reads / 4); // warm-up
    median((0..o.rounds).map(|_| read_round(sim, d, o.reads)).collect())
}

fn bring_up(sim: &Sim, d: DomId, io: bool) {
    let opts = DemoOptions { verbose: false, io_queues: 1, blocks: 8, ..DemoOptions::default() };
    let mut say = |_s: String| {};
    let mut os = GuestOs::new(sim.guest(d), &mut say);
    if io {
        let mut report = DemoReport::default();
        demo::demo_flow(&mut os, &opts, &mut report).expect("guest I/O through xenpt");
    } else {
        demo::bring_up(&mut os, &opts).expect("guest bring-up through xenpt");
    }
}

struct Verdicts(Vec<bool>);

impl Verdicts {
    fn check(&mut self, what: &str, value: String, budget: &str, ok: bool) {
        println!("perf: {:<4} {what:<44} {value:<28} budget {budget}", if ok { "ok" } else { "MISS" });
        self.0.push(ok);
    }
}

fn main() {
    let o = opts();
    let exe = o.xenpt.file_name().and_then(|n| n.to_str()).unwrap_or("xenpt").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("sim.sock");
    let sim = Sim::default();
    let mut domains = Vec::new();
    let mut nvmes = Vec::new();
    for i in 0..o.devices {
        let nvme = EmulatedNvme::new(host_sbdf(i), 0xe000_0000 + i as u64 * 0x10000, 64);
        sim.add_device(Arc::new(nvme.clone()));
        let d = sim.create_domain(GuestKind::Hvm, 1, 4 << 20);
        sim.assign_device(d, host_sbdf(i)).expect("assign");
        domains.push(d);
        nvmes.push(nvme);
    }
    Server::new(sim.clone(), nvmes).spawn(UnixListener::bind(&sock).expect("simulator socket"));
    let mut v = Verdicts(Vec::new());
    println!("perf: {} devices, xenpt {}, simulator in process {}", o.devices, o.xenpt.display(), std::process::id());

    // Budget 3: exec to ready.
    let mut t = Vec::new();
    for _ in 0..o.startups {
        let s = Instant::now();
        let x = start(&o, &sock, dir.path(), domains[0], 0);
        t.push(s.elapsed().as_secs_f64() * 1e3);
        assert!(x.stop().success(), "xenpt exit status");
    }
    let max = t.iter().cloned().fold(0.0, f64::max);
    let med = median(t);
    v.check("start-up, exec to ready (median)", format!("{med:.2} ms (max {max:.2} ms)"), "<= 10 ms", med <= 10.0);

    // Budget 2: one xenpt serving one device that a guest brought up and did I/O on.
    let first = start(&o, &sock, dir.path(), domains[0], 0);
    bring_up(&sim, domains[0], true);
    let pid = first.pid();
    let rss = proc_kib(pid, "status", "VmRSS:");
    v.check("resident memory, one xenpt after guest I/O", format!("{rss} KiB"), "<= 4096 KiB", rss <= 4096);
    for (what, kib) in rss_breakdown(pid, &exe) {
        println!("perf:        {kib:>5} KiB  {what}");
    }

    // Budget 4: wake-ups while the guest does nothing. A context switch is counted when
    // a thread goes to sleep: let xenpt finish answering the guest's last access first.
    std::thread::sleep(Duration::from_millis(500));
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(o.idle));
    let woke = switches(pid).saturating_sub(before);
    v.check(&format!("idle wake-ups over {} s", o.idle), format!("{woke}"), "0", woke == 0);

    // Budget 5: the same guest's accesses with N-1 other xenpt processes idle.
    let alone = latency(&o, &sim, domains[0]);
    let mut others = Vec::new();
    let s = Instant::now();
    for (i, &d) in domains.iter().enumerate().skip(1) {
        others.push(start(&o, &sock, dir.path(), d, i));
        bring_up(&sim, d, false);
    }
    let spawn_all = s.elapsed().as_secs_f64();
    let mut all = vec![pid];
    all.extend(others.iter().map(|x| x.pid()));
    let rss_sum: u64 = all.iter().map(|&p| proc_kib(p, "status", "VmRSS:")).sum();
    let pss_sum: u64 = all.iter().map(|&p| proc_kib(p, "smaps_rollup", "Pss:")).sum();
    println!("perf: {} xenpt processes started and brought up by their guests in {spawn_all:.1} s", all.len());
    v.check(
        &format!("total memory of {} xenpt (sum of PSS)", all.len()),
        format!("{:.1} MiB (RSS sum {:.1} MiB)", pss_sum as f64 / 1024.0, rss_sum as f64 / 1024.0),
        "<= 1024 MiB",
        pss_sum <= 1024 * 1024,
    );
    let crowded = latency(&o, &sim, domains[0]);
    std::thread::sleep(Duration::from_millis(500));
    let before: u64 = others.iter().map(|x| switches(x.pid())).sum();
    std::thread::sleep(Duration::from_secs(1));
    let after: u64 = others.iter().map(|x| switches(x.pid())).sum();
    println!(
        "perf: the other {} processes woke {} times in 1 s while idle",
        others.len(),
        after.saturating_sub(before)
    );
    let mut bad = 0;
    for x in others {
        bad += !x.stop().success() as u32;
    }
    let alone_again = latency(&o, &sim, domains[0]);
    let base = (alone + alone_again) / 2.0;
    let ratio = crowded / base;
    v.check(
        &format!("guest config read with {} others idle", o.devices - 1),
        format!("{ratio:.3}x ({crowded:.1} us vs {alone:.1}/{alone_again:.1} us)"),
        "<= 1.10x",
        ratio <= 1.10,
    );
    bad += !first.stop().success() as u32;
    // Every xenpt tore down what it set up: nothing left in the simulated Xen.
    let left: usize =
        domains.iter().map(|&d| sim.ioreq_server_count(d) + sim.pirqs(d).len() + sim.p2m_mmio(d).len()).sum();
    v.check(
        "exits 0 and leaves nothing in Xen",
        format!("{bad} bad exits, {left} leftovers"),
        "0, 0",
        bad == 0 && left == 0,
    );
    let missed = v.0.iter().filter(|ok| !**ok).count();
    println!("perf: {}", if missed == 0 { "PASS".to_string() } else { format!("FAIL: {missed} budget(s) missed") });
    std::process::exit(if missed == 0 { 0 } else { 1 });
}
