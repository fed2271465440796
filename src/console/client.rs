//! `xenpt console PATH [COMMAND...]`: send one command and print the reply, or, without a
//! command, a line loop on stdin. Plain blocking I/O; the reply framing is the console's
//! (lines, then one empty line).

use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long to wait for a reply before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "connecting to {path}: {source} (is a xenpt with this console running? `xenpt run` puts it under /run/xenpt/)"
    )]
    Connect { path: String, source: io::Error },
    #[error("console {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("a command is one line")]
    Multiline,
}

fn connect(path: &Path) -> Result<UnixStream, ClientError> {
    let s = UnixStream::connect(path)
        .map_err(|source| ClientError::Connect { path: path.display().to_string(), source })?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(REPLY_TIMEOUT)))
        .map_err(|source| ClientError::Io { path: path.display().to_string(), source })?;
    Ok(s)
}

/// Read one reply: lines up to the empty line that ends it. None at end of stream.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut reply = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(if reply.is_empty() { None } else { Some(reply) });
        }
        if line == "\n" {
            return Ok(Some(reply));
        }
        reply.push_str(&line);
    }
}

/// Send one command and return its reply (without the terminating empty line).
pub fn query(path: &Path, command: &str) -> Result<String, ClientError> {
    if command.contains('\n') {
        return Err(ClientError::Multiline);
    }
    let io_err = |source| ClientError::Io { path: path.display().to_string(), source };
    let mut s = connect(path)?;
    s.write_all(format!("{command}\n").as_bytes()).map_err(io_err)?;
    let mut r = BufReader::new(s);
    Ok(read_reply(&mut r).map_err(io_err)?.unwrap_or_default())
}

/// One command: print the reply; Ok(false) if it was an error reply.
pub fn one_shot(path: &Path, command: &str) -> Result<bool, ClientError> {
    let reply = query(path, command)?;
    print!("{reply}");
    Ok(!reply.starts_with("error:"))
}

/// The line loop: each line of stdin is a command, each reply is printed. Ends at end of
/// input or when the console closes the connection (`quit`).
pub fn interactive(path: &Path) -> Result<(), ClientError> {
    let io_err = |source| ClientError::Io { path: path.display().to_string(), source };
    let s = connect(path)?;
    let mut w = s.try_clone().map_err(io_err)?;
    let mut r = BufReader::new(s);
    let stdin = io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        println!("xenpt console {} (`help` lists the commands, `quit` or Ctrl-D ends)", path.display());
    }
    let mut line = String::new();
    loop {
        if tty {
            print!("xenpt> ");
            let _ = io::stdout().flush();
        }
        line.clear();
        if stdin.lock().read_line(&mut line).map_err(io_err)? == 0 {
            return Ok(());
        }
        let cmd = line.trim();
        if cmd.is_empty() || cmd.starts_with('#') {
            continue;
        }
        w.write_all(format!("{cmd}\n").as_bytes()).map_err(io_err)?;
        match read_reply(&mut r).map_err(io_err)? {
            Some(reply) => {
                print!("{reply}");
                let _ = io::stdout().flush();
            }
            None => return Ok(()),
        }
        if matches!(cmd.split_whitespace().next(), Some("quit" | "exit")) {
            return Ok(());
        }
    }
}
