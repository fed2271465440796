//! xenpt's side: [`RemoteXen`] and [`RemoteHost`] forward every call to the simulator.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{op, recv, recv_fd, send, Msg, PROTOCOL};
use crate::host::{BarKind, HostBar, HostDevice, HostError, HostIds, HostResources};
use crate::pci::Sbdf;
use crate::xen::page::FdPage;
use crate::xen::{
    BufIoreq, DomId, DomainInfo, Errno, EvtchnPort, GuestKind, IoRange, IoRangeKind, IoreqPages, IoservId, PirqMap,
    PirqMapped, PtIrq, Readiness, SharedPage, Xen, XenError, XenResult, XenVersion,
};

/// The connection to the simulator, shared by the Xen and host-device handles. After any
/// transport error it is shut down for good: a half-written request or a half-read reply
/// would leave the stream out of step, and later replies would be read at the wrong
/// offset.
struct Conn {
    sock: Mutex<UnixStream>,
    broken: AtomicBool,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnixStream> {
        self.sock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the socket unless the connection broke before; break it on an error.
    fn with<T>(&self, f: impl FnOnce(&UnixStream) -> std::io::Result<T>) -> std::io::Result<T> {
        let s = self.lock();
        if self.broken.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "simulator connection broken earlier"));
        }
        let r = f(&s);
        if r.is_err() {
            self.broken.store(true, Ordering::Relaxed);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        r
    }

    /// A request and its reply.
    fn call(&self, words: &[u64]) -> std::io::Result<Msg> {
        self.with(|s| {
            send(s, words, "")?;
            recv(s)
        })
    }

    /// A one-way message.
    fn cast(&self, words: &[u64]) -> std::io::Result<()> {
        self.with(|s| send(s, words, ""))
    }
}

/// Connect to a simulator's socket: the handshake, and the event channel's socket.
pub fn connect(path: &Path) -> std::io::Result<RemoteXen> {
    let sock = UnixStream::connect(path)?;
    send(&sock, &[op::HELLO, PROTOCOL], "")?;
    let hello = recv(&sock)?;
    if hello.word(0) != 0 || hello.word(1) != PROTOCOL {
        return Err(std::io::Error::other(format!(
            "simulator at {} speaks protocol {} (errno {}), xenpt speaks {PROTOCOL}",
            path.display(),
            hello.word(1),
            hello.word(0)
        )));
    }
    let evtchn = UnixDatagram::from(recv_fd(&sock)?);
    evtchn.set_nonblocking(true)?;
    Ok(RemoteXen { conn: Arc::new(Conn { sock: Mutex::new(sock), broken: AtomicBool::new(false) }), evtchn })
}

/// [`Xen`] in the simulator's process.
pub struct RemoteXen {
    conn: Arc<Conn>,
    evtchn: UnixDatagram,
}

fn xen_err(op: &'static str, domid: DomId, e: std::io::Error) -> XenError {
    tracing::debug!("{op}: simulator connection: {e}");
    XenError::new(op, domid, Errno(libc::EIO))
}

fn b(v: bool) -> u64 {
    v as u64
}

fn opt(v: Option<u32>) -> [u64; 2] {
    [b(v.is_some()), v.unwrap_or(0) as u64]
}

impl RemoteXen {
    /// Call and check the reply's errno; the reply's values.
    fn x(&self, name: &'static str, domid: DomId, words: &[u64]) -> XenResult<Msg> {
        let m = self.conn.call(words).map_err(|e| xen_err(name, domid, e))?;
        m.into_result().map_err(|(e, _)| XenError::new(name, domid, Errno(e as i32)))
    }

    /// A host device of the simulator, by its host SBDF.
    pub fn host(&self, sbdf: Sbdf) -> Result<RemoteHost, HostError> {
        let m = self.conn.call(&[op::HOST_OPEN, sbdf.to_u32() as u64]).map_err(|e| io_err(sbdf, "open", e))?;
        if m.word(0) != 0 {
            return Err(HostError::Invalid { sbdf, what: format!("the simulator has no such device ({})", m.text) });
        }
        Ok(RemoteHost {
            conn: self.conn.clone(),
            sbdf,
            config_size: m.word(1) as usize,
            irq: (m.word(2) != 0).then_some(m.word(3) as u32),
        })
    }
}

impl Xen for RemoteXen {
    fn version(&mut self) -> XenResult<XenVersion> {
        let m = self.x("version", 0, &[op::VERSION])?;
        Ok(XenVersion { major: m.word(0) as u16, minor: m.word(1) as u16 })
    }

    fn domain_info(&mut self, domid: DomId) -> XenResult<DomainInfo> {
        let m = self.x("domain_info", domid, &[op::DOMAIN_INFO, domid as u64])?;
        let kind = match m.word(0) {
            0 => GuestKind::Pv,
            1 => GuestKind::Hvm,
            2 => GuestKind::Pvh,
            _ => return Err(XenError::new("domain_info", domid, Errno::EINVAL)),
        };
        Ok(DomainInfo {
            domid,
            kind,
            vcpus: m.word(1) as u32,
            dying: m.word(2) != 0,
            shutdown: m.word(3) != 0,
            emulation_flags: (m.word(4) != 0).then_some(m.word(5) as u32),
        })
    }

    fn create_ioreq_server(&mut self, domid: DomId, buf: BufIoreq) -> XenResult<IoservId> {
        let m = self.x("create_ioreq_server", domid, &[op::CREATE_IOREQ_SERVER, domid as u64, buf as u64])?;
        Ok(m.word(0) as IoservId)
    }

    fn map_ioreq_pages(&mut self, domid: DomId, id: IoservId) -> XenResult<IoreqPages> {
        const NAME: &str = "map_ioreq_pages";
        // The reply and its fds must not interleave with another call: one lock throughout,
        // and every fd received before any is used, so the stream stays in step.
        let (m, fds) = self
            .conn
            .with(|s| {
                send(s, &[op::MAP_IOREQ_PAGES, domid as u64, id as u64], "")?;
                let m = recv(s)?;
                let n = if m.word(0) != 0 { 0 } else { 1 + (m.word(1) != 0) as usize };
                let fds = (0..n).map(|_| recv_fd(s)).collect::<std::io::Result<Vec<_>>>()?;
                Ok((m, fds))
            })
            .map_err(|e| xen_err(NAME, domid, e))?;
        if m.word(0) != 0 {
            return Err(XenError::new(NAME, domid, Errno(m.word(0) as i32)));
        }
        let mut pages = fds.into_iter().map(|fd| {
            let p = FdPage::map(fd).map_err(|e| xen_err(NAME, domid, e))?;
            Ok(SharedPage::new(Arc::new(p)))
        });
        let ioreq = pages.next().ok_or(XenError::new(NAME, domid, Errno(libc::EIO)))??;
        let bufioreq = pages.next().transpose()?;
        let bufioreq_port = (m.word(2) != 0).then_some(m.word(3) as EvtchnPort);
        Ok(IoreqPages { ioreq, bufioreq, bufioreq_port })
    }

    fn map_io_range(&mut self, domid: DomId, id: IoservId, r: IoRange) -> XenResult<()> {
        self.x("map_io_range", domid, &[op::MAP_IO_RANGE, domid as u64, id as u64, r.kind as u64, r.start, r.end])?;
        Ok(())
    }

    fn unmap_io_range(&mut self, domid: DomId, id: IoservId, r: IoRange) -> XenResult<()> {
        self.x("unmap_io_range", domid, &[op::UNMAP_IO_RANGE, domid as u64, id as u64, r.kind as u64, r.start, r.end])?;
        Ok(())
    }

    fn set_ioreq_server_state(&mut self, domid: DomId, id: IoservId, enabled: bool) -> XenResult<()> {
        self.x("set_ioreq_server_state", domid, &[op::SET_IOREQ_SERVER_STATE, domid as u64, id as u64, b(enabled)])?;
        Ok(())
    }

    fn destroy_ioreq_server(&mut self, domid: DomId, id: IoservId) -> XenResult<()> {
        self.x("destroy_ioreq_server", domid, &[op::DESTROY_IOREQ_SERVER, domid as u64, id as u64])?;
        Ok(())
    }

    fn evtchn_fd(&self) -> RawFd {
        self.evtchn.as_raw_fd()
    }

    fn evtchn_bind_interdomain(&mut self, domid: DomId, remote_port: EvtchnPort) -> XenResult<EvtchnPort> {
        let m =
            self.x("evtchn_bind_interdomain", domid, &[op::EVTCHN_BIND_INTERDOMAIN, domid as u64, remote_port as u64])?;
        Ok(m.word(0) as EvtchnPort)
    }

    fn evtchn_unbind(&mut self, port: EvtchnPort) -> XenResult<()> {
        self.x("evtchn_unbind", 0, &[op::EVTCHN_UNBIND, port as u64])?;
        Ok(())
    }

    fn evtchn_notify(&mut self, port: EvtchnPort) -> XenResult<()> {
        self.conn.cast(&[op::EVTCHN_NOTIFY, port as u64]).map_err(|e| xen_err("evtchn_notify", 0, e))
    }

    /// Read to EAGAIN whatever `readiness` says (its fd carries one port per datagram).
    fn evtchn_pending(&mut self, out: &mut Vec<EvtchnPort>, _readiness: Readiness) -> XenResult<bool> {
        let mut buf = [0u8; 4];
        loop {
            match self.evtchn.recv(&mut buf) {
                Ok(4) => out.push(u32::from_ne_bytes(buf)),
                Ok(_) => return Err(XenError::new("evtchn_pending", 0, Errno::EINVAL)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(XenError::new("evtchn_pending", 0, Errno(e.raw_os_error().unwrap_or(libc::EIO)))),
            }
        }
    }

    fn evtchn_unmask(&mut self, port: EvtchnPort) -> XenResult<()> {
        self.conn.cast(&[op::EVTCHN_UNMASK, port as u64]).map_err(|e| xen_err("evtchn_unmask", 0, e))
    }

    fn memory_mapping(&mut self, domid: DomId, gfn: u64, mfn: u64, nr: u64, add: bool) -> XenResult<u64> {
        let m = self.x("memory_mapping", domid, &[op::MEMORY_MAPPING, domid as u64, gfn, mfn, nr, b(add)])?;
        Ok(m.word(0))
    }

    fn ioport_mapping(&mut self, domid: DomId, gport: u32, mport: u32, nr: u32, add: bool) -> XenResult<()> {
        let w = [op::IOPORT_MAPPING, domid as u64, gport as u64, mport as u64, nr as u64, b(add)];
        self.x("ioport_mapping", domid, &w)?;
        Ok(())
    }

    fn map_pirq(&mut self, domid: DomId, req: PirqMap) -> XenResult<PirqMapped> {
        let mut w = vec![op::MAP_PIRQ, domid as u64];
        match req {
            PirqMap::Msi { sbdf, pirq } => {
                w.extend([0, sbdf.to_u32() as u64]);
                w.extend(opt(pirq));
            }
            PirqMap::Msix { sbdf, entry, table_base, pirq } => {
                w.extend([1, sbdf.to_u32() as u64, entry as u64, table_base]);
                w.extend(opt(pirq));
            }
            PirqMap::MultiMsi { sbdf, count } => w.extend([2, sbdf.to_u32() as u64, count as u64]),
            PirqMap::Gsi { gsi, pirq } => {
                w.extend([3, gsi as u64]);
                w.extend(opt(pirq));
            }
        }
        let m = self.x("map_pirq", domid, &w)?;
        Ok(PirqMapped { pirq: m.word(0) as u32, count: m.word(1) as u32 })
    }

    fn unmap_pirq(&mut self, domid: DomId, pirq: u32) -> XenResult<()> {
        self.x("unmap_pirq", domid, &[op::UNMAP_PIRQ, domid as u64, pirq as u64])?;
        Ok(())
    }

    fn bind_pt_irq(&mut self, domid: DomId, bind: PtIrq) -> XenResult<()> {
        self.x("bind_pt_irq", domid, &pt_irq_words(op::BIND_PT_IRQ, domid, bind))?;
        Ok(())
    }

    fn unbind_pt_irq(&mut self, domid: DomId, bind: PtIrq) -> XenResult<()> {
        self.x("unbind_pt_irq", domid, &pt_irq_words(op::UNBIND_PT_IRQ, domid, bind))?;
        Ok(())
    }

    fn iomem_permission(&mut self, domid: DomId, first_mfn: u64, nr: u64, allow: bool) -> XenResult<()> {
        self.x("iomem_permission", domid, &[op::IOMEM_PERMISSION, domid as u64, first_mfn, nr, b(allow)])?;
        Ok(())
    }

    fn ioport_permission(&mut self, domid: DomId, first_port: u32, nr: u32, allow: bool) -> XenResult<()> {
        let w = [op::IOPORT_PERMISSION, domid as u64, first_port as u64, nr as u64, b(allow)];
        self.x("ioport_permission", domid, &w)?;
        Ok(())
    }

    fn irq_permission(&mut self, domid: DomId, pirq: u32, allow: bool) -> XenResult<()> {
        self.x("irq_permission", domid, &[op::IRQ_PERMISSION, domid as u64, pirq as u64, b(allow)])?;
        Ok(())
    }

    fn assign_device(&mut self, domid: DomId, sbdf: Sbdf, assign: bool) -> XenResult<()> {
        self.x("assign_device", domid, &[op::ASSIGN_DEVICE, domid as u64, sbdf.to_u32() as u64, b(assign)])?;
        Ok(())
    }

    fn gsi_permission(&mut self, domid: DomId, gsi: u32, allow: bool) -> XenResult<()> {
        self.x("gsi_permission", domid, &[op::GSI_PERMISSION, domid as u64, gsi as u64, b(allow)])?;
        Ok(())
    }

    fn pcidev_gsi(&mut self, sbdf: Sbdf) -> XenResult<u32> {
        let m = self.x("pcidev_gsi", 0, &[op::PCIDEV_GSI, sbdf.to_u32() as u64])?;
        Ok(m.word(0) as u32)
    }
}

fn pt_irq_words(code: u64, domid: DomId, bind: PtIrq) -> Vec<u64> {
    match bind {
        PtIrq::Msi { pirq, gvec, gflags, gtable } => {
            vec![code, domid as u64, 0, pirq as u64, gvec as u64, gflags as u64, gtable]
        }
        PtIrq::PciIntx { pirq, bus, device, intx } => {
            vec![code, domid as u64, 1, pirq as u64, bus as u64, device as u64, intx as u64]
        }
    }
}

fn io_err(sbdf: Sbdf, what: &str, source: std::io::Error) -> HostError {
    HostError::Io { sbdf, what: format!("simulator connection ({what})"), source }
}

/// A host function of the simulator (the emulated NVMe), reached over the socket.
pub struct RemoteHost {
    conn: Arc<Conn>,
    sbdf: Sbdf,
    config_size: usize,
    irq: Option<u32>,
}

impl RemoteHost {
    fn h(&self, what: &str, words: &[u64]) -> Result<Msg, HostError> {
        let m = self.conn.call(words).map_err(|e| io_err(self.sbdf, what, e))?;
        m.into_result().map_err(|(_, text)| HostError::Invalid { sbdf: self.sbdf, what: text })
    }

    fn s(&self) -> u64 {
        self.sbdf.to_u32() as u64
    }
}

pub(super) fn bar_words(b: &HostBar) -> [u64; 5] {
    let kind = match b.kind {
        BarKind::Io => 0,
        BarKind::Mem32 => 1,
        BarKind::Mem64 => 2,
    };
    [b.index as u64, b.base, b.size, kind, b.prefetchable as u64]
}

pub(super) fn bar_from(w: &[u64]) -> HostBar {
    let g = |i: usize| w.get(i).copied().unwrap_or(0);
    let kind = match g(3) {
        0 => BarKind::Io,
        1 => BarKind::Mem32,
        _ => BarKind::Mem64,
    };
    HostBar { index: g(0) as u8, base: g(1), size: g(2), kind, prefetchable: g(4) != 0 }
}

impl HostDevice for RemoteHost {
    fn sbdf(&self) -> Sbdf {
        self.sbdf
    }
    fn backend(&self) -> &'static str {
        "simulator"
    }
    fn config_size(&self) -> usize {
        self.config_size
    }
    fn config_read(&self, offset: u16, size: u8) -> Result<u32, HostError> {
        let m = self.h("config read", &[op::HOST_CONFIG_READ, self.s(), offset as u64, size as u64])?;
        Ok(m.word(0) as u32)
    }
    fn config_read_all(&self, buf: &mut [u8]) -> Result<(), HostError> {
        let m = self.h("config read", &[op::HOST_CONFIG_READ_ALL, self.s(), buf.len() as u64])?;
        if m.words.len() * 8 < buf.len() {
            return Err(HostError::Invalid { sbdf: self.sbdf, what: "short config space from the simulator".into() });
        }
        for (chunk, w) in buf.chunks_mut(8).zip(&m.words) {
            chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
    fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), HostError> {
        self.h("config write", &[op::HOST_CONFIG_WRITE, self.s(), offset as u64, size as u64, value as u64])?;
        Ok(())
    }
    fn resources(&self) -> Result<HostResources, HostError> {
        // Seven slots (BARs 0-5, ROM) of [present, index, base, size, kind, prefetchable].
        let m = self.h("resources", &[op::HOST_RESOURCES, self.s()])?;
        let mut r = HostResources::default();
        for (i, slot) in m.words.chunks_exact(6).enumerate().take(7) {
            let bar = (slot[0] != 0).then(|| bar_from(&slot[1..]));
            match r.bars.get_mut(i) {
                Some(s) => *s = bar,
                None => r.rom = bar,
            }
        }
        Ok(r)
    }
    fn ids(&self) -> Result<HostIds, HostError> {
        let m = self.h("ids", &[op::HOST_IDS, self.s()])?;
        Ok(HostIds {
            vendor: m.word(0) as u16,
            device: m.word(1) as u16,
            subsys_vendor: m.word(2) as u16,
            subsys_device: m.word(3) as u16,
            class: m.word(4) as u32,
            revision: m.word(5) as u8,
        })
    }
    fn irq(&self) -> Option<u32> {
        self.irq
    }
    fn bar_read(&self, bar: u8, offset: u64, size: u8) -> Result<u64, HostError> {
        let m = self.h("BAR read", &[op::HOST_BAR_READ, self.s(), bar as u64, offset, size as u64])?;
        Ok(m.word(0))
    }
    fn bar_write(&self, bar: u8, offset: u64, size: u8, value: u64) -> Result<(), HostError> {
        self.h("BAR write", &[op::HOST_BAR_WRITE, self.s(), bar as u64, offset, size as u64, value])?;
        Ok(())
    }
    fn page_sharers(&self, bar: &HostBar) -> Result<Vec<Sbdf>, HostError> {
        let mut w = vec![op::HOST_PAGE_SHARERS, self.s()];
        w.extend(bar_words(bar));
        let m = self.h("page sharers", &w)?;
        Ok(m.words.iter().map(|&v| Sbdf::from_u32(v as u32)).collect())
    }
    fn reset(&self) -> Result<(), HostError> {
        self.h("reset", &[op::HOST_RESET, self.s()])?;
        Ok(())
    }
}

/// Kinds on the wire, shared with the server.
pub(super) fn range_kind(v: u64) -> Option<IoRangeKind> {
    match v {
        0 => Some(IoRangeKind::Port),
        1 => Some(IoRangeKind::Memory),
        2 => Some(IoRangeKind::Pci),
        _ => None,
    }
}
