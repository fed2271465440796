//! `xenpt demo`: the whole passthrough path on the simulator. A simulated HVM guest finds,
//! configures and uses an emulated NVMe controller through xenpt, and every Xen operation
//! xenpt performs is shown and checked.

pub mod guest_os;

use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use crate::device::DeviceOptions;
use crate::host::nvme::{EmulatedNvme, NvmeStats, LBA_SIZE};
use crate::ioreq::event_loop::EventLoop;
use crate::pci::Sbdf;
use crate::runner;
use crate::xen::sim::{Op, Sim};
use crate::xen::{DomId, GuestKind};
use crate::Profile;
use guest_os::GuestOs;
pub use guest_os::{GuestFlavour, IrqMode};

/// Where the emulated controller sits on the host, and where its BAR0 is.
pub const HOST_SBDF: Sbdf = Sbdf::new(0, 0x03, 0, 0);
pub const HOST_BAR0: u64 = 0xfe00_0000;
/// The guest slot xenpt serves (bus 0, device 4).
pub const GUEST_SBDF: Sbdf = Sbdf::new(0, 0, 4, 0);

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub profile: Profile,
    pub io_queues: u16,
    /// Blocks written and read back per I/O queue.
    pub blocks: u32,
    pub irq: IrqMode,
    pub guest: GuestFlavour,
    /// Print the transcript as it happens.
    pub verbose: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            profile: Profile::Hvm,
            io_queues: 2,
            blocks: 64,
            irq: IrqMode::Msix,
            guest: GuestFlavour::Linux,
            verbose: true,
        }
    }
}

/// What the demo saw, for the summary and for tests.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub ok: bool,
    pub failure: Option<String>,
    pub bytes_verified: u64,
    /// Interrupts the guest took: APIC vectors, or pirqs for a PV-on-HVM guest.
    pub interrupts: Vec<u32>,
    pub expected_vectors: Vec<u32>,
    pub ops: Vec<Op>,
    pub nvme: NvmeStats,
    pub violations: Vec<String>,
    pub leftovers: Vec<String>,
    pub transcript: Vec<String>,
}

/// A shared transcript: guest steps, each followed by the Xen operations it caused.
#[derive(Clone)]
struct Transcript {
    lines: Arc<Mutex<Vec<String>>>,
    sim: Sim,
    seen: Arc<Mutex<usize>>,
    verbose: bool,
}

impl Transcript {
    fn line(&self, s: String) {
        if self.verbose {
            println!("{s}");
        }
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// Print the Xen operations recorded since the last flush.
    fn flush_ops(&self) {
        let ops = self.sim.ops();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for op in &ops[*seen..] {
            self.line(format!("      xen> {op}"));
        }
        *seen = ops.len();
    }

    /// A guest step, reported once done, followed by the Xen operations it caused.
    fn guest(&self, s: String) {
        self.line(format!("guest: {s}"));
        self.flush_ops();
    }
}

fn pattern(qid: u16, i: usize) -> u8 {
    (i as u32).wrapping_mul(31).wrapping_add(qid as u32 * 7) as u8 ^ 0x5a
}

/// Run the demo end to end.
pub fn run(opts: &DemoOptions) -> DemoReport {
    run_with(opts, &mut demo_flow)
}

/// What the guest does once xenpt serves the device: the demo's flow, or a test's.
pub type GuestFlow<'a> = dyn FnMut(&mut GuestOs, &DemoOptions, &mut DemoReport) -> guest_os::GResult<()> + 'a;

/// A debug console for the demo's xenpt (`xenpt demo --console PATH --hold SECONDS`).
#[derive(Clone, Debug)]
pub struct DemoConsole {
    pub path: std::path::PathBuf,
    /// How long xenpt and its console stay up after the guest finished.
    pub hold: std::time::Duration,
}

/// Run the demo with xenpt serving a debug console (see crate::console).
pub fn run_with_console(opts: &DemoOptions, console: Option<&DemoConsole>) -> DemoReport {
    run_full(opts, &mut demo_flow, console)
}

/// Run the demo's set-up and teardown around a custom guest flow (for tests).
pub fn run_with(opts: &DemoOptions, flow: &mut GuestFlow) -> DemoReport {
    run_full(opts, flow, None)
}

fn run_full(opts: &DemoOptions, flow: &mut GuestFlow, console: Option<&DemoConsole>) -> DemoReport {
    let sim = Sim::default();
    let t = Transcript { lines: Arc::default(), sim: sim.clone(), seen: Arc::default(), verbose: opts.verbose };
    let mut report = DemoReport::default();
    let res = run_inner(&sim, &t, opts, &mut report, flow, console);
    t.flush_ops();
    report.ops = sim.ops();
    report.violations = sim.violations();
    if let Err(e) = res {
        report.failure = Some(e);
    }
    report.transcript = t.lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report.ok = report.failure.is_none() && report.violations.is_empty() && report.leftovers.is_empty();
    report
}

fn run_inner(
    sim: &Sim,
    t: &Transcript,
    opts: &DemoOptions,
    report: &mut DemoReport,
    flow: &mut GuestFlow,
    console: Option<&DemoConsole>,
) -> Result<(), String> {
    let kind = match opts.profile {
        Profile::Hvm => GuestKind::Hvm,
        Profile::Pvh => GuestKind::Pvh,
    };
    let blocks = 4096;
    let nvme = EmulatedNvme::new(HOST_SBDF, HOST_BAR0, blocks);
    sim.add_device(Arc::new(nvme.clone()));
    let domid: DomId = sim.create_domain(kind, 1, 64 << 20);
    sim.assign_device(domid, HOST_SBDF).map_err(|e| format!("toolstack: assigning {HOST_SBDF}: {e}"))?;
    t.line(format!(
        "host: emulated NVMe controller at {HOST_SBDF}, BAR0 {HOST_BAR0:#x}; domain {domid} ({kind:?}, 1 vCPU, 64 MiB) created, device assigned"
    ));

    // xenpt runs in its own thread, as it would run in its own process.
    let (ready_tx, ready_rx) = mpsc::channel();
    let xen_sim = sim.clone();
    let host = nvme.host();
    let dev_opts = DeviceOptions::new(domid, GUEST_SBDF, opts.profile);
    let console_path = console.map(|c| c.path.clone());
    let dm = thread::Builder::new()
        .name("xenpt".into())
        .spawn(move || -> Result<(), String> {
            let mut xen = xen_sim.xen();
            let mut inst = match runner::start(&mut xen, Box::new(host), dev_opts) {
                Ok(i) => i,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e.to_string());
                }
            };
            let mut ev = EventLoop::new(&xen).map_err(|e| e.to_string())?;
            if let Some(p) = console_path {
                let info =
                    crate::console::ConsoleInfo::new(Some("simulated (xenpt's built-in simulator)".into()), false);
                let attached = crate::console::Console::bind(&p, info)
                    .map_err(|e| e.to_string())
                    .and_then(|c| ev.attach_console(c).map_err(|e| e.to_string()));
                if let Err(e) = attached {
                    let _ = runner::shutdown(&mut xen, &mut inst);
                    let _ = ready_tx.send(Err(format!("debug console at {}: {e}", p.display())));
                    return Err(e);
                }
            }
            let _ = ready_tx.send(Ok(ev.stopper()));
            let served = runner::serve(&mut xen, &mut inst, &mut ev).map(|_| ()).map_err(|e| e.to_string());
            let errors = runner::shutdown(&mut xen, &mut inst);
            served?;
            match errors.first() {
                Some(e) => Err(format!("teardown: {e}")),
                None => Ok(()),
            }
        })
        .map_err(|e| format!("spawning the xenpt thread: {e}"))?;
    let stopper = match ready_rx.recv() {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = dm.join();
            return Err(format!("xenpt failed to start: {e}"));
        }
        Err(_) => return Err("xenpt thread died during start-up".into()),
    };
    t.flush_ops();
    t.line(format!("xenpt: serving {HOST_SBDF} to domain {domid} at guest {GUEST_SBDF}"));

    if let Some(c) = console {
        t.line(format!("xenpt: debug console at {} (try: xenpt console {} help)", c.path.display(), c.path.display()));
    }

    let guest_result = drive_guest(sim, t, domid, opts, report, flow);
    if let Some(c) = console.filter(|c| !c.hold.is_zero()) {
        t.flush_ops();
        t.line(format!("host: guest done; xenpt and its console stay up for {}s", c.hold.as_secs_f64()));
        thread::sleep(c.hold);
    }

    t.flush_ops();
    t.line("host: guest done; stopping xenpt (ordered teardown)".into());
    let _ = stopper.wake();
    let dm_result = dm.join().map_err(|_| "xenpt thread panicked".to_string())?;
    t.flush_ops();
    report.nvme = nvme.stats();
    guest_result?;
    dm_result?;

    // Nothing may be left behind in Xen.
    let pirqs = sim.pirqs(domid);
    if !pirqs.is_empty() {
        report.leftovers.push(format!("{} pirq(s) still mapped: {pirqs:?}", pirqs.len()));
    }
    let p2m = sim.p2m_mmio(domid);
    if !p2m.is_empty() {
        report.leftovers.push(format!("{} MMIO frame(s) still mapped", p2m.len()));
    }
    if sim.ioreq_server_count(domid) != 0 {
        report.leftovers.push("ioreq server not destroyed".into());
    }
    if let Some(c) = sim.crashed(domid) {
        return Err(format!("domain {domid} crashed: {c}"));
    }
    Ok(())
}

fn drive_guest(
    sim: &Sim,
    t: &Transcript,
    domid: DomId,
    opts: &DemoOptions,
    report: &mut DemoReport,
    flow: &mut GuestFlow,
) -> Result<(), String> {
    let tc = t.clone();
    let mut say = move |s: String| tc.guest(s);
    let mut os = GuestOs::new(sim.guest(domid), &mut say);
    os.flavour = opts.guest;
    let r = flow(&mut os, opts, report);
    report.interrupts = os.interrupts.clone();
    report.expected_vectors = os.vectors.clone();
    r.map_err(|e| format!("guest: {e}"))
}

/// Enumerate, program BARs and interrupts, bring the controller up: everything before I/O.
pub fn bring_up(os: &mut GuestOs, opts: &DemoOptions) -> guest_os::GResult<u64> {
    os.enumerate()?;
    os.size_and_assign_bars()?;
    os.enable_decode_and_master()?;
    let sources = opts.io_queues + 1;
    match (opts.irq, opts.guest) {
        (IrqMode::Msix, GuestFlavour::Linux) => os.setup_msix(sources, 0x40)?,
        (IrqMode::Msix, GuestFlavour::PvOnHvm) => os.setup_msix_pv_on_hvm(sources)?,
        (IrqMode::Msi, GuestFlavour::Linux) => os.setup_msi(sources, 0x40)?,
        (IrqMode::Intx, GuestFlavour::Linux) => os.setup_intx(sources, 0x50)?,
        (IrqMode::Msi | IrqMode::Intx, GuestFlavour::PvOnHvm) => {
            return Err(guest_os::GuestOsError::Failed("the PV-on-HVM flavour is modelled for MSI-X only".into()))
        }
    }
    os.nvme_enable()?;
    let (model, _serial, ns_blocks) = os.identify()?;
    if model != crate::host::nvme::MODEL {
        return Err(guest_os::GuestOsError::Failed(format!("unexpected model {model:?}")));
    }
    os.create_io_queues(opts.io_queues)?;
    Ok(ns_blocks)
}

/// The demo: bring up, then write and read back a pattern on every I/O queue.
pub fn demo_flow(os: &mut GuestOs, opts: &DemoOptions, report: &mut DemoReport) -> guest_os::GResult<()> {
    let ns_blocks = bring_up(os, opts)?;
    let n = opts.blocks;
    for qid in 1..=opts.io_queues {
        let len = n as usize * LBA_SIZE;
        let lba = (qid as u64 - 1) * n as u64;
        if lba + n as u64 > ns_blocks {
            return Err(guest_os::GuestOsError::Failed("namespace too small for the demo".into()));
        }
        let data: Vec<u8> = (0..len).map(|i| pattern(qid, i)).collect();
        let wbuf = os.alloc(len as u64);
        let rbuf = os.alloc(len as u64);
        os.g.ram_write(wbuf, &data)?;
        os.rw(qid, true, lba, n, wbuf)?;
        os.rw(qid, false, lba, n, rbuf)?;
        let mut back = vec![0u8; len];
        os.g.ram_read(rbuf, &mut back)?;
        if back != data {
            let at = back.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(0);
            return Err(guest_os::GuestOsError::Failed(format!("queue {qid}: data read back differs at byte {at}")));
        }
        let what = if opts.guest == GuestFlavour::Linux { "vector" } else { "pirq" };
        os.say_public(format!(
            "queue {qid}: wrote {n} blocks at LBA {lba} and read them back: {len} bytes identical (completions on {what} {:#x})",
            os.vectors[qid as usize]
        ));
        report.bytes_verified += len as u64;
    }
    Ok(())
}

/// Render the one-line summary.
pub fn summary(r: &DemoReport) -> String {
    if r.ok {
        let distinct: std::collections::BTreeSet<_> = r.interrupts.iter().collect();
        let vecs: Vec<String> = distinct.iter().map(|v| format!("{v:#x}")).collect();
        format!(
            "demo: PASS — {} bytes written and read back through xenpt, {} interrupts on the programmed vectors/pirqs [{}], {} Xen operations, no protocol violations, nothing left mapped",
            r.bytes_verified,
            r.interrupts.len(),
            vecs.join(", "),
            r.ops.len()
        )
    } else {
        let mut why = Vec::new();
        if let Some(f) = &r.failure {
            why.push(f.clone());
        }
        why.extend(r.violations.iter().map(|v| format!("violation: {v}")));
        why.extend(r.leftovers.iter().map(|v| format!("left behind: {v}")));
        format!("demo: FAIL — {}", why.join("; "))
    }
}
