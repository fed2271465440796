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
    after_help = "Exit codes: 0 success; 1 failure (demo FAIL, start-up or runtime error); 2 usage error; \
3 the requested mode is not available on this build or host."
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
        /// Guest profile. Only hvm is available yet; pvh arrives with PVH passthrough.
        #[arg(long, value_enum, default_value = "hvm")]
        profile: Profile,
        /// Number of NVMe I/O queue pairs, each completing on its own MSI-X vector (1-31).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=31))]
        queues: u16,
        /// Blocks (512 bytes) written and read back per queue (1-256).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
        blocks: u32,
        /// Print only the summary line.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Serve a host PCI function to a running Xen guest (real Xen).
    Run {
        /// Guest domain id.
        #[arg(long)]
        domid: u16,
        /// Host PCI function, e.g. 0000:03:00.0.
        #[arg(long)]
        sbdf: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(format!("xenpt={0},{0}", cli.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match cli.cmd {
        Cmd::Demo { profile, queues, blocks, quiet } => {
            if profile == Profile::Pvh {
                eprintln!("xenpt demo: the pvh profile is not available yet (it needs the PVH host bridge); use --profile hvm");
                return ExitCode::from(EXIT_NOT_AVAILABLE);
            }
            let report = demo::run(&DemoOptions { profile, io_queues: queues, blocks, verbose: !quiet });
            println!("{}", demo::summary(&report));
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAIL)
            }
        }
        Cmd::Run { domid, sbdf } => {
            eprintln!(
                "xenpt run: the real Xen backend (/dev/xen/privcmd) is not built yet, so domain {domid} and device {sbdf} \
                 cannot be served. Use `xenpt demo` to run on the simulator."
            );
            ExitCode::from(EXIT_NOT_AVAILABLE)
        }
    }
}
