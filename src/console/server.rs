//! The console's socket side: a non-blocking Unix listener and its clients, driven by the
//! event loop's readiness events. Nothing here blocks, and every buffer is bounded.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use super::command::MAX_LINE;
use super::{execute_line, ConsoleInfo, Env, Reply};
use crate::device::DeviceModel;
use crate::ioreq::ServerStats;

/// Clients connected at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 16;
/// Commands one client gets executed before the loop serves everything else again.
pub const COMMANDS_PER_TURN: usize = 8;
/// Unsent reply bytes a client may have pending; a client that does not read its replies
/// is dropped when it passes this.
pub const MAX_BACKLOG: usize = 1 << 20;
/// Longest Unix socket path (sun_path holds 108 bytes with the terminating NUL).
const MAX_PATH: usize = 107;

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
    /// The peer closed its sending side: execute what is left, send, close.
    eof: bool,
    /// `quit`: close once the replies are sent.
    closing: bool,
    /// The per-turn budget ran out with work possibly left: serve again without waiting
    /// for readiness (which is edge-triggered and would not come again).
    more: bool,
}

enum Outcome {
    Keep,
    Close,
    Drop(String),
}

impl Client {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Send what can be sent without blocking.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "socket closed")),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    fn queue(&mut self, r: &Reply) {
        self.out.extend_from_slice(&r.encode());
        if r.close {
            self.closing = true;
        }
    }

    fn run_line(&mut self, line: &[u8], env: &mut Env) {
        let text = String::from_utf8_lossy(line);
        if let Some(r) = execute_line(&text, env) {
            self.queue(&r);
        }
    }

    /// Read, execute and send as far as the budget and the socket allow.
    fn service(&mut self, env: &mut Env) -> Outcome {
        self.more = false;
        if let Err(e) = self.flush() {
            return Outcome::Drop(format!("writing: {e}"));
        }
        let mut done = 0;
        let mut chunk = [0u8; 4096];
        while !self.closing {
            if done == COMMANDS_PER_TURN {
                self.more = true;
                break;
            }
            let nl = self.inbuf.iter().position(|&b| b == b'\n');
            if let Some(nl) = nl.filter(|&n| n <= MAX_LINE) {
                let line: Vec<u8> = self.inbuf.drain(..=nl).collect();
                self.run_line(&line[..nl], env);
                done += 1;
                continue;
            }
            if nl.is_some() || self.inbuf.len() > MAX_LINE {
                self.queue(&Reply::err(format!("line longer than {MAX_LINE} bytes; closing")));
                let _ = self.flush();
                return Outcome::Drop(format!("sent a line longer than {MAX_LINE} bytes"));
            }
            if self.eof {
                if !self.inbuf.is_empty() {
                    let line = std::mem::take(&mut self.inbuf);
                    self.run_line(&line, env);
                }
                break;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Drop(format!("reading: {e}")),
            }
        }
        if let Err(e) = self.flush() {
            return Outcome::Drop(format!("writing: {e}"));
        }
        if self.pending() > MAX_BACKLOG {
            return Outcome::Drop(format!("does not read its replies ({} bytes unsent)", self.pending()));
        }
        if (self.closing || (self.eof && self.inbuf.is_empty())) && self.pending() == 0 {
            return Outcome::Close;
        }
        Outcome::Keep
    }
}

/// The listening socket and its clients.
pub struct Console {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file, to remove it at exit only if it is still ours.
    file_id: (u64, u64),
    info: ConsoleInfo,
    clients: BTreeMap<usize, Client>,
    next: usize,
    first_client_token: usize,
}

impl Console {
    /// Create the socket at `path` (mode 0600; parent directories are created with mode
    /// 0700). A stale socket left by a dead xenpt is replaced; a live one, or a file that is
    /// not a socket, is an error.
    pub fn bind(path: &Path, info: ConsoleInfo) -> io::Result<Console> {
        let listener = bind_socket(path)?;
        listener.set_nonblocking(true)?;
        let m = std::fs::metadata(path)?;
        Ok(Console {
            listener: UnixListener::from_std(listener),
            path: path.to_path_buf(),
            file_id: (m.dev(), m.ino()),
            info,
            clients: BTreeMap::new(),
            next: 0,
            first_client_token: usize::MAX,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn info(&self) -> &ConsoleInfo {
        &self.info
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Register the listener as `listener`; clients get tokens from `first_client` up.
    pub fn register(&mut self, registry: &Registry, listener: Token, first_client: usize) -> io::Result<()> {
        self.first_client_token = first_client;
        registry.register(&mut self.listener, listener, Interest::READABLE)
    }

    /// Accept every pending connection.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ECONNABORTED and friends concern one connection; EMFILE would repeat.
                    tracing::warn!(target: "xenpt::console", "accept on {}: {e}", self.path.display());
                    if e.kind() == ErrorKind::ConnectionAborted {
                        continue;
                    }
                    return;
                }
            };
            if self.clients.len() >= MAX_CLIENTS {
                let r = Reply::err(format!("too many console clients ({MAX_CLIENTS} connected); try again later"));
                let _ = stream.write(&r.encode());
                tracing::warn!(target: "xenpt::console", "console client refused: {MAX_CLIENTS} already connected");
                continue;
            }
            let id = self.next;
            self.next += 1;
            let token = Token(self.first_client_token + id);
            if let Err(e) = registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
                tracing::warn!(target: "xenpt::console", "registering a console client: {e}");
                continue;
            }
            tracing::debug!(target: "xenpt::console", client = id, "console client connected");
            self.clients.insert(
                id,
                Client {
                    stream,
                    inbuf: Vec::new(),
                    out: Vec::new(),
                    sent: 0,
                    eof: false,
                    closing: false,
                    more: true, // serve it once now: it may have written already
                },
            );
        }
    }

    /// A readiness event for client token `t`.
    pub fn client_ready(
        &mut self,
        registry: &Registry,
        t: Token,
        device: Option<&mut DeviceModel>,
        ioreqs: Option<ServerStats>,
    ) {
        self.serve(registry, t.0 - self.first_client_token, device, ioreqs);
    }

    /// Whether some client has work left that no readiness event will announce.
    pub fn has_backlog(&self) -> bool {
        self.clients.values().any(|c| c.more)
    }

    /// Serve every client with work left (one budget each).
    pub fn serve_backlog(
        &mut self,
        registry: &Registry,
        mut device: Option<&mut DeviceModel>,
        ioreqs: Option<ServerStats>,
    ) {
        let ids: Vec<usize> = self.clients.iter().filter(|(_, c)| c.more).map(|(&id, _)| id).collect();
        for id in ids {
            self.serve(registry, id, device.as_deref_mut(), ioreqs);
        }
    }

    fn serve(&mut self, registry: &Registry, id: usize, device: Option<&mut DeviceModel>, ioreqs: Option<ServerStats>) {
        let clients = self.clients.len();
        let Some(c) = self.clients.get_mut(&id) else { return };
        let mut env = Env { info: &self.info, device, ioreqs, path: Some(&self.path), clients };
        let outcome = c.service(&mut env);
        match outcome {
            Outcome::Keep => {}
            Outcome::Close => {
                tracing::debug!(target: "xenpt::console", client = id, "console client disconnected");
                self.remove(registry, id);
            }
            Outcome::Drop(why) => {
                tracing::warn!(target: "xenpt::console", client = id, "console client dropped: {why}");
                self.remove(registry, id);
            }
        }
    }

    fn remove(&mut self, registry: &Registry, id: usize) {
        if let Some(mut c) = self.clients.remove(&id) {
            let _ = registry.deregister(&mut c.stream);
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // Remove the socket file only if it is still the one this console created.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Bind a listening socket at `path` that only its owner can connect to, without a window
/// in which it has looser permissions: it is bound in a fresh private (0700) directory,
/// made 0600, then renamed into place.
fn bind_socket(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let invalid = |why: String| io::Error::new(ErrorKind::InvalidInput, why);
    if path.as_os_str().len() > MAX_PATH {
        return Err(invalid(format!("{}: longer than {MAX_PATH} bytes, too long for a Unix socket", path.display())));
    }
    let name = path.file_name().ok_or_else(|| invalid(format!("{}: not a file path", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    format!("{}: another xenpt console is listening there", path.display()),
                ))
            }
            Err(_) => tracing::info!(target: "xenpt::console", "replacing stale console socket {}", path.display()),
        },
        Ok(_) => {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket; not replacing it", path.display()),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let tmp = parent.join(format!(".xenpt-console.{}.{}", std::process::id(), name.to_string_lossy()));
    let tmp_sock = tmp.join("s");
    if tmp_sock.as_os_str().len() > MAX_PATH {
        // No room for the private directory: bind in place and tighten right away.
        let l = std::os::unix::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        return Ok(l);
    }
    let _ = std::fs::remove_file(&tmp_sock);
    let _ = std::fs::remove_dir(&tmp);
    std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
    let res = (|| {
        let l = std::os::unix::net::UnixListener::bind(&tmp_sock)?;
        std::fs::set_permissions(&tmp_sock, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp_sock, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&tmp_sock);
    let _ = std::fs::remove_dir(&tmp);
    res
}
