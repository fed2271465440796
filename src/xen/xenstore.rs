//! A minimal xenstore client over /dev/xen/xenbus (the xenstore wire protocol, no
//! libxenstore): enough to watch `@releaseDomain`, which fires whenever a domain is
//! released, so xenpt learns of its guest's death without polling. VIRQ_DOM_EXC belongs
//! to xenstored; a watch is the sanctioned way.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

pub const XENBUS_PATH: &str = "/dev/xen/xenbus";
pub const XS_WATCH: u32 = 4;
pub const XS_WATCH_EVENT: u32 = 15;
pub const XS_ERROR: u32 = 16;
const HEADER: usize = 16;
/// XENSTORE_PAYLOAD_MAX.
const PAYLOAD_MAX: usize = 4096;

/// Encode one request: type, req_id, tx_id, len, then the payload.
pub fn encode(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + payload.len());
    for v in [ty, req_id, 0, payload.len() as u32] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}

/// Split complete messages off the front of `buf`: (type, payload) each.
pub fn decode(buf: &mut Vec<u8>) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let mut out = Vec::new();
    loop {
        if buf.len() < HEADER {
            return Ok(out);
        }
        let word = |i: usize| u32::from_le_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]);
        let (ty, len) = (word(0), word(3) as usize);
        if len > PAYLOAD_MAX {
            return Err(format!("xenstore message of {len} bytes"));
        }
        if buf.len() < HEADER + len {
            return Ok(out);
        }
        out.push((ty, buf[HEADER..HEADER + len].to_vec()));
        buf.drain(..HEADER + len);
    }
}

/// A watch on one path.
pub struct Watch {
    dev: File,
    buf: Vec<u8>,
}

impl Watch {
    /// Open /dev/xen/xenbus and register a watch on `path`.
    pub fn new(path: &str, token: &str) -> std::io::Result<Self> {
        let mut dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(XENBUS_PATH)?;
        let mut payload = Vec::new();
        payload.extend_from_slice(path.as_bytes());
        payload.push(0);
        payload.extend_from_slice(token.as_bytes());
        payload.push(0);
        dev.write_all(&encode(XS_WATCH, 1, &payload))?;
        Ok(Watch { dev, buf: Vec::new() })
    }

    pub fn fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }

    /// Read what is there; true if a watch event (or an error reply) arrived.
    pub fn fired(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 1024];
        loop {
            match self.dev.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let msgs = decode(&mut self.buf).map_err(std::io::Error::other)?;
        Ok(msgs.iter().any(|(ty, _)| *ty == XS_WATCH_EVENT || *ty == XS_ERROR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_encode_and_decode_across_partial_reads() {
        let m = encode(XS_WATCH, 7, b"@releaseDomain\0xenpt\0");
        assert_eq!(&m[0..4], &XS_WATCH.to_le_bytes());
        assert_eq!(&m[4..8], &7u32.to_le_bytes());
        assert_eq!(&m[12..16], &21u32.to_le_bytes());
        let ev = encode(XS_WATCH_EVENT, 0, b"@releaseDomain\0xenpt\0");
        let mut buf = ev[..10].to_vec();
        assert!(decode(&mut buf).unwrap().is_empty(), "half a header");
        buf.extend_from_slice(&ev[10..]);
        buf.extend_from_slice(&m[..3]);
        let got = decode(&mut buf).unwrap();
        assert_eq!(got, vec![(XS_WATCH_EVENT, b"@releaseDomain\0xenpt\0".to_vec())]);
        assert_eq!(buf.len(), 3, "the partial next message stays buffered");
        let mut huge = encode(XS_WATCH_EVENT, 0, &[]);
        huge[12..16].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(decode(&mut huge).is_err());
    }
}
