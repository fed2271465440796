//! The simulator in another process: xenpt's [`Xen`](super::Xen) and
//! [`HostDevice`](crate::host::HostDevice) spoken over a Unix socket, so that a real
//! `xenpt run --simulator PATH` process serves a simulated guest exactly as it serves one
//! on Xen, and what is measured of it (resident memory, start-up, idle wake-ups, the
//! 256-process case) is xenpt's alone: the simulated hypervisor, the emulated NVMe, its
//! namespace and the guests' RAM live in the simulator's process.
//!
//! The transport mirrors the real one, syscall for syscall where it matters:
//! - hypercalls and host-device accesses are request/response messages on the socket
//!   (ioctls on privcmd, preads on sysfs in the real thing);
//! - the ioreq pages are memfd pages the simulator created, passed over the socket and
//!   mapped (XENMEM_acquire_resource + mmap);
//! - the event channel is the simulator's own notification socket for this device model,
//!   passed over: xenpt reads fired ports from it as from /dev/xen/evtchn; notify and
//!   unmask are one-way messages (an ioctl and a write on /dev/xen/evtchn).
//!
//! Wire format: a frame is `u32 nwords, u32 ntext` (little endian), the words as u64 LE,
//! then the text. A request's first word is the operation; a reply's first word is 0 or
//! an errno, the values follow, and the text carries a host-device error's message. Fds
//! follow a reply as one byte each with SCM_RIGHTS.

pub mod client;
pub mod server;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

pub use client::{connect, RemoteHost, RemoteXen};
pub use server::Server;

/// Bumped when the wire format changes; client and simulator must agree.
pub const PROTOCOL: u64 = 1;

/// Room for a whole 4 KiB config space (512 words) and the errno.
const MAX_WORDS: usize = 520;
const MAX_TEXT: usize = 4096;

/// Operation codes (a request's first word).
pub mod op {
    pub const HELLO: u64 = 0;
    pub const VERSION: u64 = 1;
    pub const DOMAIN_INFO: u64 = 2;
    pub const CREATE_IOREQ_SERVER: u64 = 3;
    pub const MAP_IOREQ_PAGES: u64 = 4;
    pub const MAP_IO_RANGE: u64 = 5;
    pub const UNMAP_IO_RANGE: u64 = 6;
    pub const SET_IOREQ_SERVER_STATE: u64 = 7;
    pub const DESTROY_IOREQ_SERVER: u64 = 8;
    pub const EVTCHN_BIND_INTERDOMAIN: u64 = 9;
    pub const EVTCHN_UNBIND: u64 = 10;
    /// One-way: no reply.
    pub const EVTCHN_NOTIFY: u64 = 11;
    /// One-way: no reply.
    pub const EVTCHN_UNMASK: u64 = 12;
    pub const MEMORY_MAPPING: u64 = 13;
    pub const IOPORT_MAPPING: u64 = 14;
    pub const MAP_PIRQ: u64 = 15;
    pub const UNMAP_PIRQ: u64 = 16;
    pub const BIND_PT_IRQ: u64 = 17;
    pub const UNBIND_PT_IRQ: u64 = 18;
    pub const IOMEM_PERMISSION: u64 = 19;
    pub const IOPORT_PERMISSION: u64 = 20;
    pub const IRQ_PERMISSION: u64 = 21;
    pub const ASSIGN_DEVICE: u64 = 22;
    pub const GSI_PERMISSION: u64 = 23;
    pub const PCIDEV_GSI: u64 = 24;

    pub const HOST_OPEN: u64 = 40;
    pub const HOST_CONFIG_READ: u64 = 41;
    pub const HOST_CONFIG_WRITE: u64 = 42;
    pub const HOST_RESOURCES: u64 = 43;
    pub const HOST_IDS: u64 = 44;
    pub const HOST_BAR_READ: u64 = 45;
    pub const HOST_BAR_WRITE: u64 = 46;
    pub const HOST_PAGE_SHARERS: u64 = 47;
    pub const HOST_RESET: u64 = 48;
    /// The first N bytes of config space, 8 bytes per reply word.
    pub const HOST_CONFIG_READ_ALL: u64 = 49;
}

/// One frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Msg {
    pub words: Vec<u64>,
    pub text: String,
}

impl Msg {
    /// Word `i`, 0 if the frame is shorter (the peer is our own simulator; a short frame is
    /// a bug there, never a reason to panic here).
    pub fn word(&self, i: usize) -> u64 {
        self.words.get(i).copied().unwrap_or(0)
    }

    /// A reply split at its first word: the values on success, else the errno and the
    /// error's text.
    pub fn into_result(self) -> Result<Msg, (u64, String)> {
        match self.word(0) {
            0 => Ok(Msg { words: self.words.get(1..).unwrap_or(&[]).to_vec(), text: self.text }),
            e => Err((e, self.text)),
        }
    }
}

/// Write one frame with a single write.
pub fn send(mut sock: &UnixStream, words: &[u64], text: &str) -> io::Result<()> {
    if words.len() > MAX_WORDS || text.len() > MAX_TEXT {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame too large"));
    }
    let mut buf = Vec::with_capacity(8 + words.len() * 8 + text.len());
    buf.extend_from_slice(&(words.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(text.len() as u32).to_le_bytes());
    for w in words {
        buf.extend_from_slice(&w.to_le_bytes());
    }
    buf.extend_from_slice(text.as_bytes());
    sock.write_all(&buf)
}

/// Read one frame; an oversized header is an error, not an allocation.
pub fn recv(mut sock: &UnixStream) -> io::Result<Msg> {
    let mut head = [0u8; 8];
    sock.read_exact(&mut head)?;
    let nw = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let nt = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if nw > MAX_WORDS || nt > MAX_TEXT {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {nw} words, {nt} bytes")));
    }
    let mut body = vec![0u8; nw * 8 + nt];
    sock.read_exact(&mut body)?;
    let words = body[..nw * 8]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let text = String::from_utf8_lossy(&body[nw * 8..]).into_owned();
    Ok(Msg { words, text })
}

const FD_CMSG_SPACE: usize = 64;

/// A message header for one byte of data (`iov`) and a control buffer of `controllen`
/// bytes at `cbuf` (u64 elements keep it aligned for cmsghdr). Both must outlive its use.
fn one_byte_msghdr(iov: &mut libc::iovec, cbuf: &mut [u64; FD_CMSG_SPACE / 8], controllen: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = controllen.min(FD_CMSG_SPACE);
    msg
}

/// Pass one fd: one byte of data carrying SCM_RIGHTS.
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cbuf = [0u64; FD_CMSG_SPACE / 8];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let msg = one_byte_msghdr(&mut iov, &mut cbuf, space);
    // SAFETY: msg_control points at cbuf, which is larger than CMSG_SPACE(int) and aligned;
    // CMSG_FIRSTHDR therefore returns a pointer inside it, and CMSG_DATA leaves room for
    // one int (CMSG_LEN(int) <= CMSG_SPACE(int)).
    let sent = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd.as_raw_fd());
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    match sent {
        1 => Ok(()),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::new(io::ErrorKind::WriteZero, "fd byte not sent")),
    }
}

/// Receive one fd sent by [`send_fd`].
pub fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cbuf = [0u64; FD_CMSG_SPACE / 8];
    let mut msg = one_byte_msghdr(&mut iov, &mut cbuf, FD_CMSG_SPACE);
    // SAFETY: the iovec and control buffer are valid for their lengths for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "simulator closed the socket"));
    }
    // Every descriptor the message carried is now ours: take them all, so that extras
    // are closed (dropped) rather than leaked, then insist on exactly one.
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: the kernel filled msg_control up to msg_controllen; CMSG_FIRSTHDR/NXTHDR walk
    // only inside it, and an SCM_RIGHTS message's data holds (cmsg_len - CMSG_LEN(0)) / 4
    // ints, each a descriptor SCM_RIGHTS installed in our table for us to own.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<libc::c_int>();
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..n {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    if fd >= 0 {
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected one file descriptor, got {}{}",
                fds.len(),
                if msg.msg_flags & libc::MSG_CTRUNC != 0 { " (truncated)" } else { "" }
            ),
        ));
    }
    fds.pop().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "expected a file descriptor"))
}

#[cfg(test)]
mod tests;
