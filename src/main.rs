//! The xenpt command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xenpt::demo::{self, DemoOptions};
use xenpt::Profile;

/// Exit codes, documented in --help.
const EXIT_FAIL: u8 = 1;
const EXIT_NOT_AVAILABLE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "xenpt",
    version,
    about = "PCI passthrough device model for Xen HVM and PVH guests",
    long_about = "xenpt passes one host PCI function through to one Xen guest. The toolstack starts one \
xenpt per function; xenpt registers an ioreq server for the guest's virtual slot, owns the \
function's guest-visible config space, maps BARs where the guest programs them and turns the \
guest's MSI-X programming into pirq map + bind operations. It talks to Xen only through \
/dev/xen/privcmd and /dev/xen/evtchn (no libxenctrl).\n\n\
Start with `xenpt demo`: it runs the whole path on the built-in Xen simulator with an \
emulated NVMe controller and shows every Xen operation.",
    after_help = "Exit codes: 0 success (run: stopped by a signal after an ordered teardown); 1 failure (demo FAIL, \
start-up or runtime error); 2 usage error; 3 not available here (run: not a Xen dom0, or the Xen version is unknown)."
)]
struct Cli {
    /// Log level for xenpt's own log lines (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a simulated guest against an emulated NVMe controller through xenpt, on the
    /// built-in Xen simulator, and print a transcript ending in `demo: PASS` or `demo: FAIL`.
    Demo {
        /// Guest profile: hvm, or pvh (a PVH guest has no chipset: xenpt also presents the
        /// host bridge at 00:00.0 and answers port 0xCF8).
        #[arg(long, value_enum, default_value = "hvm")]
        profile: Profile,
        /// Number of NVMe I/O queue pairs, each completing on its own MSI-X vector (1-31).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=31))]
        queues: u16,
        /// Blocks (512 bytes) written and read back per queue (1-256).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
        blocks: u32,
        /// Which interrupt mechanism the guest driver uses.
        #[arg(long, value_enum, default_value = "msix")]
        irq: xenpt::demo::IrqMode,
        /// Guest flavour: `linux` programs real vectors and masks entries; `pv-on-hvm` behaves
        /// like a PV-on-HVM Linux guest (Xen's pirq MSI format, never touches mask bits,
        /// interrupts arrive as event-channel events).
        #[arg(long, value_enum, default_value = "linux")]
        guest: xenpt::demo::GuestFlavour,
        /// Print only the summary line.
        #[arg(long, short)]
        quiet: bool,
        /// Serve a debug console on this socket while the demo runs (see `xenpt console`).
        #[arg(long, value_name = "PATH")]
        console: Option<std::path::PathBuf>,
        /// With --console: keep xenpt and its console up this many seconds after the guest
        /// finished, to explore them; the demo then tears down and exits as usual.
        #[arg(long, value_name = "SECONDS", default_value_t = 0, requires = "console")]
        hold: u64,
    },
    /// Print the config space a guest would see of a function: a register table (default) or
    /// `--format lspci` (decode it with `lspci -F FILE -vvv`); which capabilities are exposed
    /// or hidden and why goes to stderr. Reads a live device through sysfs without writing to
    /// it, or an lspci dump.
    GuestView {
        /// Host PCI function (read through sysfs, read-only).
        #[arg(long, conflicts_with = "dump", required_unless_present = "dump")]
        sbdf: Option<xenpt::pci::Sbdf>,
        /// An `lspci -xxx` or `-xxxx` dump file instead of a live device.
        #[arg(long)]
        dump: Option<String>,
        /// How to read the live device: sysfs (default) or vfio (bound to vfio-pci).
        #[arg(long, value_enum, default_value = "sysfs", requires = "sbdf")]
        backend: xenpt::host::Backend,
        #[arg(long, value_enum, default_value = "hvm")]
        profile: Profile,
        /// Guest slot on bus 0.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=31))]
        guest_slot: u8,
        /// `table`: a readable register table; `lspci`: the `lspci -xxxx` dump format.
        #[arg(long, value_enum, default_value = "table")]
        format: xenpt::guest_view::Format,
    },
    /// Serve a host PCI function to a running Xen guest (real Xen, as root in dom0).
    ///
    /// The function must be assignable (bound to pciback: `xl pci-assignable-add SBDF`).
    /// Start the guest paused (`xl create -p`), start xenpt, wait for the ready line, then
    /// `xl unpause`. SIGTERM, SIGINT or SIGHUP tear everything down in order and exit 0.
    Run(xenpt::real::RunArgs),
    /// Talk to the debug console of a running xenpt: run COMMAND and print the reply (exit 1
    /// if it is an error), or without a COMMAND read commands from stdin. `help` lists the
    /// commands: status, config guest|host (lspci -xxxx format, for `lspci -F FILE`), diff,
    /// caps, bars, msix, msi, pirqs, stats, log level, trace.
    Console {
        /// The console socket (see `run --console`).
        path: std::path::PathBuf,
        /// The command and its arguments, e.g. `config guest`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// What xenpt knows about a host function before passing it through: its name and IDs,
    /// BARs (from sysfs `resource`), and with --backend vfio what VFIO reports (group,
    /// regions, MSI/MSI-X vector counts, reset support). Read-only unless --reset is given.
    HostInfo {
        /// Host PCI function, e.g. 0000:03:00.0.
        #[arg(long)]
        sbdf: xenpt::pci::Sbdf,
        /// sysfs (default) or vfio (bound to vfio-pci).
        #[arg(long, value_enum, default_value = "sysfs")]
        backend: xenpt::host::Backend,
        /// With --backend vfio: reset the function (VFIO_DEVICE_RESET) and report it.
        #[arg(long)]
        reset: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    xenpt::log::init(&cli.log_level);
    match cli.cmd {
        Cmd::Demo { profile, queues, blocks, irq, guest, quiet, console, hold } => {
            let console = console.map(|path| demo::DemoConsole { path, hold: std::time::Duration::from_secs(hold) });
            let opts = DemoOptions { profile, io_queues: queues, blocks, irq, guest, verbose: !quiet };
            let report = demo::run_with_console(&opts, console.as_ref());
            println!("{}", demo::summary(&report));
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAIL)
            }
        }
        Cmd::GuestView { sbdf, dump, backend, profile, guest_slot, format } => {
            let r = match (sbdf, dump) {
                (_, Some(path)) => xenpt::guest_view::from_dump(&path, profile, guest_slot, format),
                (Some(s), None) if backend == xenpt::host::Backend::Vfio => {
                    xenpt::guest_view::from_vfio(s, profile, guest_slot, format)
                }
                (Some(s), None) => xenpt::guest_view::from_sysfs(s, profile, guest_slot, format),
                (None, None) => unreachable!("clap requires one of --sbdf and --dump"),
            };
            match r {
                Ok((dump, report)) => {
                    for l in report {
                        eprintln!("{l}");
                    }
                    print!("{dump}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xenpt guest-view: {e}");
                    ExitCode::from(EXIT_FAIL)
                }
            }
        }
        Cmd::HostInfo { sbdf, backend, reset } => match host_info(sbdf, backend == xenpt::host::Backend::Vfio, reset) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xenpt host-info: {e}");
                ExitCode::from(EXIT_FAIL)
            }
        },
        Cmd::Console { path, command } => {
            let res = if command.is_empty() {
                xenpt::console::client::interactive(&path).map(|_| true)
            } else {
                xenpt::console::client::one_shot(&path, &command.join(" "))
            };
            match res {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(EXIT_FAIL),
                Err(e) => {
                    eprintln!("xenpt console: {e}");
                    ExitCode::from(EXIT_FAIL)
                }
            }
        }
        Cmd::Run(args) => {
            let (domid, sbdf) = (args.domid, args.sbdf);
            match xenpt::real::run(&args) {
                Ok(reason) => {
                    eprintln!("xenpt: stopped ({reason:?}); everything torn down");
                    ExitCode::SUCCESS
                }
                Err(xenpt::real::RunError::Open(e)) => {
                    eprintln!("xenpt run: {e}");
                    ExitCode::from(EXIT_NOT_AVAILABLE)
                }
                Err(e) => {
                    eprintln!("xenpt run: {sbdf} for domain {domid}: {e}");
                    ExitCode::from(EXIT_FAIL)
                }
            }
        }
    }
}

fn host_info(sbdf: xenpt::pci::Sbdf, vfio: bool, reset: bool) -> Result<String, xenpt::host::HostError> {
    use xenpt::host::HostDevice;
    if reset && !vfio {
        return Err(xenpt::host::HostError::Unsupported {
            sbdf,
            backend: "sysfs",
            what: "--reset (use --backend vfio)",
        });
    }
    let (dev, extra): (Box<dyn HostDevice>, String) = if vfio {
        let d = xenpt::host::vfio::VfioDevice::open(sbdf)?;
        let mut extra = format!("vfio: {}", xenpt::host::vfio::describe(d.info()));
        if reset {
            d.reset()?;
            extra.push_str("reset: done (VFIO_DEVICE_RESET)\n");
        }
        (Box::new(d), extra)
    } else {
        (Box::new(xenpt::host::sysfs::SysfsDevice::open(sbdf, false)?), String::new())
    };
    let ids = dev.ids()?;
    let names = xenpt::names::lookup(&ids);
    let mut s = format!(
        "{sbdf} [{:04x}:{:04x}] {} (subsystem [{:04x}:{:04x}], rev {:#04x}; names: {})\n",
        ids.vendor,
        ids.device,
        names.describe(&ids),
        ids.subsys_vendor,
        ids.subsys_device,
        ids.revision,
        names.source
    );
    s.push_str(&format!("backend: {}, config space {} bytes, IRQ {:?}\n", dev.backend(), dev.config_size(), dev.irq()));
    let res = dev.resources()?;
    for b in res.bars.iter().flatten().chain(res.rom.iter()) {
        let name = if b.index == 6 { "ROM".to_string() } else { format!("BAR{}", b.index) };
        s.push_str(&format!(
            "{name}: {:?} at {:#x}, {:#x} bytes{}\n",
            b.kind,
            b.base,
            b.size,
            if b.prefetchable { ", prefetchable" } else { "" }
        ));
    }
    s.push_str(&extra);
    Ok(s)
}
