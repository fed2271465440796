//! The console's command language: one command per line, words separated by blanks,
//! command words case-insensitive. Parsing is pure and separate from execution.

/// Which view of the config space to dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// What the guest reads (emulated bits merged with the host's).
    Guest,
    /// What the host function holds.
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Config(View),
    Diff,
    Caps,
    Bars,
    /// `all`: every table entry, also those the guest never wrote.
    Msix {
        all: bool,
    },
    Msi,
    Pirqs,
    Stats,
    /// `log level` alone shows the filter; with an argument sets it.
    LogLevel(Option<String>),
    /// `trace on|off`; `trace` alone shows the state.
    Trace(Option<bool>),
    Quit,
}

impl Command {
    /// Whether the command changes device state (refused without `--console-write`). No
    /// command does yet; changing the log filter is process state, not device state.
    pub fn changes_device_state(&self) -> bool {
        false
    }
}

/// One line of the help text per command: (usage, what it does).
pub const HELP: &[(&str, &str)] = &[
    ("help", "this list"),
    ("status", "device, domain, profile, uptime, Xen version, console mode"),
    ("config guest", "the guest's view of config space, lspci -xxxx format (lspci -F FILE -vvv reads it)"),
    ("config host", "the host function's config space, same format"),
    ("diff", "registers where the guest and host views differ, and why (emulated, masked, hidden)"),
    ("caps", "capabilities exposed to the guest and hidden from it, with the reason"),
    ("bars", "host and guest BAR addresses and sizes, mapped ranges, trapped ranges"),
    ("msix [all]", "MSI-X entries: guest address/data, gvec, pirq, gflags, masked, pending, bound"),
    ("msi", "MSI registers and every vector of the block"),
    ("pirqs", "every pirq xenpt mapped and its binding"),
    ("stats", "ioreqs by type, config accesses, dropped writes per register, hypercall counters"),
    ("log level [LEVEL]", "show or set the log filter: error|warn|info|debug|trace|off or RUST_LOG directives"),
    ("trace [on|off]", "show or switch the per-access trace (every served ioreq logged)"),
    ("quit", "close this connection"),
];

/// Longest accepted line (bytes, without the newline); a client sending more is dropped.
pub const MAX_LINE: usize = 4096;

/// Parse one line. `Ok(None)` for a blank line or a `#` comment (no reply is sent).
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let head = words[0].to_ascii_lowercase();
    let rest = &words[1..];
    let arg = |i: usize| rest.get(i).map(|w| w.to_ascii_lowercase());
    let no_args = |c: Command| {
        if rest.is_empty() {
            Ok(Some(c))
        } else {
            Err(format!("{head} takes no arguments"))
        }
    };
    match head.as_str() {
        "help" | "?" => no_args(Command::Help),
        "status" => no_args(Command::Status),
        "config" => match (arg(0).as_deref(), rest.len()) {
            (Some("guest"), 1) => Ok(Some(Command::Config(View::Guest))),
            (Some("host"), 1) => Ok(Some(Command::Config(View::Host))),
            _ => Err("usage: config guest|host".into()),
        },
        "diff" => no_args(Command::Diff),
        "caps" => no_args(Command::Caps),
        "bars" => no_args(Command::Bars),
        "msix" => match (arg(0).as_deref(), rest.len()) {
            (None, 0) => Ok(Some(Command::Msix { all: false })),
            (Some("all"), 1) => Ok(Some(Command::Msix { all: true })),
            _ => Err("usage: msix [all]".into()),
        },
        "msi" => no_args(Command::Msi),
        "pirqs" => no_args(Command::Pirqs),
        "stats" => no_args(Command::Stats),
        "log" => match (arg(0).as_deref(), rest.len()) {
            (Some("level"), 1) => Ok(Some(Command::LogLevel(None))),
            (Some("level"), 2) => Ok(Some(Command::LogLevel(Some(rest[1].to_string())))),
            _ => Err("usage: log level [LEVEL]".into()),
        },
        "trace" => match (arg(0).as_deref(), rest.len()) {
            (None, 0) => Ok(Some(Command::Trace(None))),
            (Some("on"), 1) => Ok(Some(Command::Trace(Some(true)))),
            (Some("off"), 1) => Ok(Some(Command::Trace(Some(false)))),
            _ => Err("usage: trace [on|off]".into()),
        },
        "quit" | "exit" => no_args(Command::Quit),
        _ => {
            let shown: String = head.chars().take(40).collect();
            Err(format!("unknown command {shown:?}; `help` lists the commands"))
        }
    }
}
