//! The debug console: a Unix socket served from xenpt's event loop, with line-based text
//! commands that show the guest's and the host's view of the function side by side, every
//! mapping and every pirq, in formats the usual tools read (`lspci -F` for dumps).
//!
//! Protocol: the client sends one command per line (`help` lists them); xenpt answers each
//! with zero or more non-empty lines followed by one empty line, which ends the reply. A
//! reply whose first line starts with `error:` is a failure. Blank lines and `#` comments
//! get no reply. `quit` closes the connection, as does the client closing its end (after
//! the replies to what it sent). Usable as is with `socat - UNIX-CONNECT:PATH`, or with
//! `xenpt console PATH [COMMAND...]`.
//!
//! The console never blocks the loop that serves the guest: sockets are non-blocking, a
//! client gets at most [`server::COMMANDS_PER_TURN`] commands executed before the loop
//! serves everything else again, a line longer than [`command::MAX_LINE`] bytes or more
//! than [`server::MAX_BACKLOG`] bytes of unread replies get the client dropped, and at
//! most [`server::MAX_CLIENTS`] clients are connected at once.
//!
//! Read-only by default: a command that changes device state is refused unless xenpt was
//! started with `--console-write` (no such command exists yet; the mode is shown by
//! `status`). The socket is created with mode 0600 (root only, for a root xenpt).

pub mod client;
pub mod command;
pub mod server;
pub mod view;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::device::DeviceModel;
use crate::ioreq::{IoHandler, ServerStats};
use crate::pci::Sbdf;
use crate::xen::DomId;
pub use command::{parse, Command, View};
pub use server::Console;

/// A served handler the console can look into: the loop hands requests to `handler` and
/// console commands get `device`.
pub trait Inspect {
    fn handler(&mut self) -> &mut dyn IoHandler;
    fn device(&mut self) -> Option<&mut DeviceModel>;
}

impl Inspect for DeviceModel {
    fn handler(&mut self) -> &mut dyn IoHandler {
        self
    }
    fn device(&mut self) -> Option<&mut DeviceModel> {
        Some(self)
    }
}

impl Inspect for crate::host_bridge::Served<'_> {
    fn handler(&mut self) -> &mut dyn IoHandler {
        self
    }
    fn device(&mut self) -> Option<&mut DeviceModel> {
        Some(&mut *self.device)
    }
}

/// Where `xenpt run` puts the console when no `--console PATH` is given.
pub fn default_path(domid: DomId, host: Sbdf) -> PathBuf {
    PathBuf::from(format!("/run/xenpt/{domid}-{host}.sock"))
}

/// What the console knows beyond the device model, fixed at start-up.
#[derive(Clone, Debug)]
pub struct ConsoleInfo {
    /// The Xen xenpt talks to, for `status` (e.g. "Xen 4.17, domctl interface 0x15").
    pub xen: Option<String>,
    /// `--console-write`: commands that change device state are allowed.
    pub write: bool,
    /// When the instance started serving (for the uptime).
    pub started: Instant,
}

impl ConsoleInfo {
    pub fn new(xen: Option<String>, write: bool) -> Self {
        ConsoleInfo { xen, write, started: Instant::now() }
    }
}

/// Everything a command may look at.
pub struct Env<'a> {
    pub info: &'a ConsoleInfo,
    /// The device model, when the loop serves one.
    pub device: Option<&'a mut DeviceModel>,
    /// The ioreq server's counters, when the loop serves one.
    pub ioreqs: Option<ServerStats>,
    pub path: Option<&'a Path>,
    pub clients: usize,
}

/// The answer to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub error: bool,
    /// Close the connection once the reply is sent.
    pub close: bool,
}

impl Reply {
    pub fn ok(text: String) -> Self {
        Reply { text, error: false, close: false }
    }

    pub fn err(why: impl std::fmt::Display) -> Self {
        Reply { text: format!("error: {why}"), error: true, close: false }
    }

    /// The bytes on the wire: the non-empty lines of the text, then the empty line that
    /// ends every reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.text.len() + 2);
        for l in self.text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            out.push_str(l);
            out.push('\n');
        }
        out.push('\n');
        out.into_bytes()
    }
}

/// Parse and execute one line. None for a line that gets no reply (blank, comment).
pub fn execute_line(line: &str, env: &mut Env) -> Option<Reply> {
    match parse(line) {
        Ok(None) => None,
        Ok(Some(cmd)) => Some(execute(&cmd, env)),
        Err(e) => Some(Reply::err(e)),
    }
}

/// Execute one command.
pub fn execute(cmd: &Command, env: &mut Env) -> Reply {
    if cmd.changes_device_state() && !env.info.write {
        return Reply::err("refused: the console is read-only (start xenpt with --console-write)");
    }
    match cmd {
        Command::Help => Reply::ok(view::help()),
        Command::Status => Reply::ok(view::status(env)),
        Command::Quit => Reply { text: "bye".into(), error: false, close: true },
        Command::LogLevel(None) => match crate::log::current() {
            Some((level, trace)) => Reply::ok(format!("log level {level}; trace {}", if trace { "on" } else { "off" })),
            None => Reply::err(format!("log level: {}", not_reloadable())),
        },
        Command::LogLevel(Some(level)) => match crate::log::set_level(level) {
            Ok(f) => {
                tracing::info!(target: "xenpt::console", "log filter set to {f} from the console");
                Reply::ok(format!("log filter now {f}"))
            }
            Err(e) => Reply::err(format!("log level: {e}")),
        },
        Command::Trace(None) => match crate::log::current() {
            Some((_, trace)) => Reply::ok(format!("trace {}", if trace { "on" } else { "off" })),
            None => Reply::err(format!("trace: {}", not_reloadable())),
        },
        Command::Trace(Some(on)) => match crate::log::set_trace(*on) {
            Ok(f) => {
                tracing::info!(target: "xenpt::console", "per-access trace {} from the console", if *on { "on" } else { "off" });
                Reply::ok(format!(
                    "trace {} (every served ioreq at trace level, target {}); log filter now {f}",
                    if *on { "on" } else { "off" },
                    crate::log::ACCESS_TRACE_TARGET
                ))
            }
            Err(e) => Reply::err(format!("trace: {e}")),
        },
        _ => {
            let ioreqs = env.ioreqs;
            let Some(dm) = env.device.as_deref_mut() else {
                return Reply::err("no device model is attached to this console");
            };
            Reply::ok(match cmd {
                Command::Config(View::Guest) => view::config_guest(dm),
                Command::Config(View::Host) => view::config_host(dm),
                Command::Diff => view::diff(dm),
                Command::Caps => view::caps(dm),
                Command::Bars => view::bars(dm),
                Command::Msix { all } => view::msix(dm, *all),
                Command::Msi => view::msi(dm),
                Command::Pirqs => view::pirqs(dm),
                Command::Stats => view::stats(dm, ioreqs),
                _ => unreachable!("handled above"),
            })
        }
    }
}

fn not_reloadable() -> &'static str {
    "not supported in this process (the log filter is not reloadable here; xenpt run and xenpt demo install a reloadable one)"
}

#[cfg(test)]
mod tests;
