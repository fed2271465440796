//! The real Xen backend: /dev/xen/privcmd (hypercalls, dm_op, resource mapping),
//! /dev/xen/hypercall (hypercall-safe buffers) and /dev/xen/evtchn (event channels).
//! No Xen C library: every struct is in [`abi`], every number from the ABI reference.
//!
//! This is the only module with Xen `unsafe` code besides the shared-page primitive.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use abi::*;

use super::page::{PageBacking, PAGE_BYTES};
use super::*;

pub const PRIVCMD_PATH: &str = "/dev/xen/privcmd";
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";
pub const HYPERCALL_PATH: &str = "/dev/xen/hypercall";

/// Why the real backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path} does not exist: this does not look like a Xen dom0 (or run `modprobe xen-privcmd xen-evtchn`)")]
    Missing { path: &'static str },
    #[error("cannot open {path}: {source} (xenpt must run as root in dom0)")]
    Open {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("allocating a hypercall buffer: {0}")]
    Buffer(std::io::Error),
    #[error("asking Xen its version: {0}")]
    Version(XenError),
    #[error(
        "Xen {0} is newer than this xenpt knows (it supports 4.10 to 4.22); its domctl interface version is unknown, \
         so xenpt will not guess. Upgrade xenpt."
    )]
    UnknownXen(XenVersion),
    #[error("Xen {version} refused domctl interface version {tried:#x} and its neighbours (EACCES); is an XSM policy denying dom0?")]
    DomctlVersion { version: XenVersion, tried: u32 },
}

fn last_errno() -> Errno {
    Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

/// mmap one shared, writable page of a device (/dev/xen/hypercall, /dev/xen/privcmd).
fn map_device_page(fd: RawFd) -> std::io::Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of one page of a Xen device fd, which the kernel
    // validates; failure is checked below and nothing aliases the new mapping.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), PAGE_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(std::io::Error::last_os_error)
}

/// One page of hypercall-safe memory: from /dev/xen/hypercall when the kernel has it,
/// else locked, not inherited by children, and pre-faulted anonymous memory.
struct HypercallBuf {
    ptr: NonNull<u8>,
    from_device: bool,
    _dev: Option<File>,
}

impl HypercallBuf {
    fn new() -> std::io::Result<Self> {
        if let Ok(dev) = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(HYPERCALL_PATH) {
            if let Ok(ptr) = map_device_page(dev.as_raw_fd()) {
                return Ok(HypercallBuf { ptr, from_device: true, _dev: Some(dev) });
            }
        }
        // SAFETY: anonymous private mapping of one page, no fd involved.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: p is the page just mapped; MADV_DONTFORK keeps a fork from making it CoW.
        unsafe { libc::madvise(p, PAGE_BYTES, libc::MADV_DONTFORK) };
        // SAFETY: writing inside the page just mapped pre-faults it.
        unsafe { std::ptr::write_volatile(p.cast::<u8>(), 0) };
        let ptr = NonNull::new(p.cast()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(HypercallBuf { ptr, from_device: false, _dev: None })
    }

    fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn put<T: Copy>(&mut self, v: &T) {
        assert!(std::mem::size_of::<T>() <= PAGE_BYTES);
        // SAFETY: T fits in the page (checked) and the page is ours, aligned to 4096.
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().cast::<T>(), *v) }
    }

    fn get<T: Copy>(&self) -> T {
        assert!(std::mem::size_of::<T>() <= PAGE_BYTES);
        // SAFETY: as in put; every T used is plain old data, any bit pattern is valid.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().cast::<T>()) }
    }
}

// SAFETY: the page is owned by this struct and only touched through &mut self methods of
// PrivcmdXen, so moving it to another thread is sound.
unsafe impl Send for HypercallBuf {}

impl Drop for HypercallBuf {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the page mapped in new(), once.
        unsafe {
            if !self.from_device {
                libc::madvise(self.ptr.as_ptr().cast(), PAGE_BYTES, libc::MADV_DOFORK);
            }
            libc::munmap(self.ptr.as_ptr().cast(), PAGE_BYTES);
        }
    }
}

/// Pages mapped from privcmd with IOCTL_PRIVCMD_MMAP_RESOURCE; unmapped on drop.
struct ResourcePage {
    ptr: NonNull<u8>,
}

// SAFETY: the mapping is process-wide memory, accessed only through SharedPage's
// volatile/atomic accessors.
unsafe impl Send for ResourcePage {}
// SAFETY: as above.
unsafe impl Sync for ResourcePage {}

// SAFETY: one page, 4096-aligned (mmap), mapped until drop.
unsafe impl PageBacking for ResourcePage {
    fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }
}

impl Drop for ResourcePage {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the page mapped in map_ioreq_pages, once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), PAGE_BYTES) };
    }
}

/// The real Xen.
pub struct PrivcmdXen {
    privcmd: File,
    evtchn: File,
    buf: HypercallBuf,
    version: XenVersion,
    domctl_version: u32,
    bound: BTreeSet<EvtchnPort>,
    pub buffers_from_device: bool,
}

/// Read fired ports from the evtchn fd `r` into `out` (see Xen::evtchn_pending): returns
/// Ok(true) once nothing need be read before the fd's next readiness. Errors, ring overflow
/// (EFBIG) among them, are the caller's.
fn read_ports(r: &mut impl Read, out: &mut Vec<EvtchnPort>, readiness: Readiness) -> std::io::Result<bool> {
    let mut buf = [0u8; 256];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                out.extend(buf[..n - n % 4].chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])));
                // A full buffer may have left ports behind; a short one emptied the queue
                // as this read saw it, which is enough only level-triggered (Readiness).
                if n < buf.len() && readiness == Readiness::Level {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn open_dev(path: &'static str, nonblock: bool) -> Result<File, OpenError> {
    if !Path::new(path).exists() {
        return Err(OpenError::Missing { path });
    }
    let mut flags = libc::O_CLOEXEC;
    if nonblock {
        flags |= libc::O_NONBLOCK;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| OpenError::Open { path, source })
}

impl PrivcmdXen {
    /// Open the devices, ask Xen its version and pick the domctl interface version.
    pub fn open() -> Result<Self, OpenError> {
        let privcmd = open_dev(PRIVCMD_PATH, false)?;
        let evtchn = open_dev(EVTCHN_PATH, true)?;
        let buf = HypercallBuf::new().map_err(OpenError::Buffer)?;
        let from_dev = buf.from_device;
        let mut x = PrivcmdXen {
            privcmd,
            evtchn,
            buf,
            version: XenVersion { major: 0, minor: 0 },
            domctl_version: 0,
            bound: BTreeSet::new(),
            buffers_from_device: from_dev,
        };
        let raw = x
            .hypercall(HYPERVISOR_XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0])
            .map_err(|e| OpenError::Version(XenError::new("xen_version", 0, e)))?;
        x.version = XenVersion { major: (raw >> 16) as u16, minor: raw as u16 };
        let first = domctl_version(x.version.major, x.version.minor).ok_or(OpenError::UnknownXen(x.version))?;
        // Probe with getdomaininfo of dom0: EACCES means the version is wrong.
        let candidates: Vec<u32> =
            if x.version == (XenVersion { major: 4, minor: 10 }) { vec![first, 0x0e] } else { vec![first] };
        for v in &candidates {
            x.domctl_version = *v;
            match x.domctl_raw(XenDomctl::new(XEN_DOMCTL_GETDOMAININFO, *v, 0)) {
                Err(Errno::EACCES) => continue,
                _ => return Ok(x),
            }
        }
        Err(OpenError::DomctlVersion { version: x.version, tried: first })
    }

    pub fn xen_version(&self) -> XenVersion {
        self.version
    }

    pub fn domctl_interface_version(&self) -> u32 {
        self.domctl_version
    }

    fn ioctl<T>(&self, fd: RawFd, req: u64, arg: &mut T) -> Result<i64, Errno> {
        // SAFETY: `arg` is a live, exclusively borrowed #[repr(C)] struct whose layout is
        // the one the ioctl `req` expects (asserted in abi.rs).
        let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
        if r < 0 {
            Err(last_errno())
        } else {
            Ok(r as i64)
        }
    }

    /// IOCTL_PRIVCMD_HYPERCALL: the return value is the hypercall's.
    fn hypercall(&self, op: u64, arg: [u64; 5]) -> Result<i64, Errno> {
        let mut h = PrivcmdHypercall { op, arg };
        self.ioctl(self.privcmd.as_raw_fd(), IOCTL_PRIVCMD_HYPERCALL, &mut h)
    }

    /// A domctl through the hypercall buffer; returns the (possibly updated) struct.
    fn domctl_raw(&mut self, d: XenDomctl) -> Result<(i64, XenDomctl), Errno> {
        self.buf.put(&d);
        let r = self.hypercall(HYPERVISOR_DOMCTL, [self.buf.addr(), 0, 0, 0, 0])?;
        Ok((r, self.buf.get()))
    }

    fn domctl<T: Copy>(
        &mut self,
        op: &'static str,
        cmd: u32,
        domid: DomId,
        payload: &T,
    ) -> XenResult<(i64, XenDomctl)> {
        let mut d = XenDomctl::new(cmd, self.domctl_version, domid);
        d.set(payload);
        self.domctl_raw(d).map_err(|e| XenError::new(op, domid, e))
    }

    /// One dm_op with a single buffer; the buffer is updated with Xen's OUT fields.
    fn dm_op<T: Copy>(&mut self, name: &'static str, domid: DomId, op: u32, payload: &mut T) -> XenResult<()> {
        let mut d = XenDmOp { op, pad: 0, u: [0; 3] };
        let n = std::mem::size_of::<T>();
        assert!(n <= 24);
        // SAFETY: T is a #[repr(C)] POD payload of at most 24 bytes, copied into the
        // 24-byte union of XenDmOp.
        unsafe { std::ptr::copy_nonoverlapping(payload as *const T as *const u8, d.u.as_mut_ptr().cast::<u8>(), n) };
        let mut b = PrivcmdDmOpBuf { uptr: &mut d as *mut XenDmOp as u64, size: std::mem::size_of::<XenDmOp>() as u64 };
        let mut arg = PrivcmdDmOp { dom: domid, num: 1, pad: 0, ubufs: &mut b as *mut PrivcmdDmOpBuf as u64 };
        self.ioctl(self.privcmd.as_raw_fd(), IOCTL_PRIVCMD_DM_OP, &mut arg)
            .map_err(|e| XenError::new(name, domid, e))?;
        // SAFETY: copying the (possibly updated) union back into the payload.
        unsafe { std::ptr::copy_nonoverlapping(d.u.as_ptr().cast::<u8>(), payload as *mut T as *mut u8, n) };
        Ok(())
    }

    fn physdev<T: Copy>(&mut self, name: &'static str, domid: DomId, cmd: u64, v: &T) -> XenResult<T> {
        self.buf.put(v);
        self.hypercall(HYPERVISOR_PHYSDEV_OP, [cmd, self.buf.addr(), 0, 0, 0])
            .map_err(|e| XenError::new(name, domid, e))?;
        Ok(self.buf.get())
    }

    fn evtchn_ioctl<T>(&self, name: &'static str, req: u64, arg: &mut T) -> XenResult<i64> {
        self.ioctl(self.evtchn.as_raw_fd(), req, arg).map_err(|e| XenError::new(name, 0, e))
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Xen for PrivcmdXen {
    fn version(&mut self) -> XenResult<XenVersion> {
        Ok(self.version)
    }

    fn domain_info(&mut self, domid: DomId) -> XenResult<DomainInfo> {
        let (_, d) = self.domctl("domain_info", XEN_DOMCTL_GETDOMAININFO, domid, &[0u8; 0])?;
        let got = u16::from_le_bytes([d.u[getdomaininfo::DOMAIN], d.u[getdomaininfo::DOMAIN + 1]]);
        if got != domid {
            // Before 4.18 Xen answers with the next existing domain.
            return Err(XenError::new("domain_info", domid, Errno::ESRCH));
        }
        let flags = u32_at(&d.u, getdomaininfo::FLAGS);
        let emu_off = if self.version >= (XenVersion { major: 4, minor: 16 }) {
            Some(getdomaininfo::EMULATION_FLAGS_4_16)
        } else if self.domctl_version >= 0x0f {
            Some(getdomaininfo::EMULATION_FLAGS_4_10)
        } else {
            None
        };
        let emulation_flags = emu_off.map(|o| u32_at(&d.u, o));
        let kind = if flags & getdomaininfo::FLAG_HVM == 0 {
            GuestKind::Pv
        } else if emulation_flags.is_some_and(|f| f & 0x10 == 0) {
            GuestKind::Pvh // no emulated IO-APIC: LAPIC-only PVH
        } else {
            GuestKind::Hvm
        };
        let max_vcpu_id = u32_at(&d.u, getdomaininfo::MAX_VCPU_ID);
        Ok(DomainInfo {
            domid,
            kind,
            vcpus: max_vcpu_id.wrapping_add(1),
            dying: flags & getdomaininfo::FLAG_DYING != 0,
            shutdown: flags & getdomaininfo::FLAG_SHUTDOWN != 0,
            emulation_flags,
        })
    }

    fn create_ioreq_server(&mut self, domid: DomId, buf: BufIoreq) -> XenResult<IoservId> {
        let mut p = DmCreateIoreqServer { handle_bufioreq: buf as u8, ..Default::default() };
        self.dm_op("create_ioreq_server", domid, XEN_DMOP_CREATE_IOREQ_SERVER, &mut p)?;
        Ok(p.id)
    }

    fn map_ioreq_pages(&mut self, domid: DomId, id: IoservId) -> XenResult<IoreqPages> {
        let err = |e| XenError::new("map_ioreq_pages", domid, e);
        // A page of the privcmd device, to be filled by IOCTL_PRIVCMD_MMAP_RESOURCE.
        let ptr = map_device_page(self.privcmd.as_raw_fd())
            .map_err(|e| err(Errno(e.raw_os_error().unwrap_or(libc::ENOMEM))))?;
        let page = ResourcePage { ptr };
        let p = ptr.as_ptr();
        let mut r = PrivcmdMmapResource {
            dom: domid,
            pad: 0,
            ty: XENMEM_RESOURCE_IOREQ_SERVER,
            id: id as u32,
            idx: XENMEM_RESOURCE_IOREQ_SERVER_FRAME_IOREQ0,
            num: 1,
            addr: p as u64,
        };
        self.ioctl(self.privcmd.as_raw_fd(), IOCTL_PRIVCMD_MMAP_RESOURCE, &mut r).map_err(err)?;
        Ok(IoreqPages { ioreq: SharedPage::new(Arc::new(page)), bufioreq: None, bufioreq_port: None })
    }

    fn map_io_range(&mut self, domid: DomId, id: IoservId, range: IoRange) -> XenResult<()> {
        let mut p = DmIoreqServerRange { id, pad: 0, ty: range.kind as u32, start: range.start, end: range.end };
        self.dm_op("map_io_range", domid, XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER, &mut p)
    }

    fn unmap_io_range(&mut self, domid: DomId, id: IoservId, range: IoRange) -> XenResult<()> {
        let mut p = DmIoreqServerRange { id, pad: 0, ty: range.kind as u32, start: range.start, end: range.end };
        self.dm_op("unmap_io_range", domid, XEN_DMOP_UNMAP_IO_RANGE_FROM_IOREQ_SERVER, &mut p)
    }

    fn set_ioreq_server_state(&mut self, domid: DomId, id: IoservId, enabled: bool) -> XenResult<()> {
        let mut p = DmSetIoreqServerState { id, enabled: enabled as u8, pad: 0 };
        self.dm_op("set_ioreq_server_state", domid, XEN_DMOP_SET_IOREQ_SERVER_STATE, &mut p)
    }

    fn destroy_ioreq_server(&mut self, domid: DomId, id: IoservId) -> XenResult<()> {
        let mut p = DmDestroyIoreqServer { id, pad: 0 };
        self.dm_op("destroy_ioreq_server", domid, XEN_DMOP_DESTROY_IOREQ_SERVER, &mut p)
    }

    fn evtchn_fd(&self) -> RawFd {
        self.evtchn.as_raw_fd()
    }

    fn evtchn_bind_interdomain(&mut self, domid: DomId, remote_port: EvtchnPort) -> XenResult<EvtchnPort> {
        let mut a = EvtchnBindInterdomain { remote_domain: domid as u32, remote_port };
        let port = self.evtchn_ioctl("evtchn_bind_interdomain", IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut a)? as u32;
        self.bound.insert(port);
        Ok(port)
    }

    fn evtchn_unbind(&mut self, port: EvtchnPort) -> XenResult<()> {
        let mut a = EvtchnPortArg { port };
        self.evtchn_ioctl("evtchn_unbind", IOCTL_EVTCHN_UNBIND, &mut a)?;
        self.bound.remove(&port);
        Ok(())
    }

    fn evtchn_notify(&mut self, port: EvtchnPort) -> XenResult<()> {
        let mut a = EvtchnPortArg { port };
        self.evtchn_ioctl("evtchn_notify", IOCTL_EVTCHN_NOTIFY, &mut a).map(|_| ())
    }

    fn evtchn_pending(&mut self, out: &mut Vec<EvtchnPort>, readiness: Readiness) -> XenResult<bool> {
        match read_ports(&mut self.evtchn, out, readiness) {
            Ok(drained) => Ok(drained),
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                // Ring overflow: reset and treat every bound port as pending.
                let mut none = 0u8;
                self.evtchn_ioctl("evtchn_reset", IOCTL_EVTCHN_RESET, &mut none)?;
                out.extend(self.bound.iter().copied());
                Ok(true)
            }
            Err(e) => Err(XenError::new("evtchn_pending", 0, Errno(e.raw_os_error().unwrap_or(libc::EIO)))),
        }
    }

    fn evtchn_unmask(&mut self, port: EvtchnPort) -> XenResult<()> {
        self.evtchn
            .write_all(&port.to_ne_bytes())
            .map_err(|e| XenError::new("evtchn_unmask", 0, Errno(e.raw_os_error().unwrap_or(libc::EIO))))
    }

    fn memory_mapping(&mut self, domid: DomId, gfn: u64, mfn: u64, nr: u64, add: bool) -> XenResult<u64> {
        let p =
            DomctlMemoryMapping { first_gfn: gfn, first_mfn: mfn, nr_mfns: nr, add_mapping: add as u32, padding: 0 };
        let (r, _) = self.domctl("memory_mapping", XEN_DOMCTL_MEMORY_MAPPING, domid, &p)?;
        // 0 = all done; a positive value below nr = partial progress.
        Ok(if r > 0 && (r as u64) < nr { r as u64 } else { nr })
    }

    fn ioport_mapping(&mut self, domid: DomId, gport: u32, mport: u32, nr: u32, add: bool) -> XenResult<()> {
        let p = DomctlIoportMapping { first_gport: gport, first_mport: mport, nr_ports: nr, add_mapping: add as u32 };
        self.domctl("ioport_mapping", XEN_DOMCTL_IOPORT_MAPPING, domid, &p).map(|_| ())
    }

    fn map_pirq(&mut self, domid: DomId, req: PirqMap) -> XenResult<PirqMapped> {
        let seg_bus = |s: crate::pci::Sbdf| (s.seg as i32) << 16 | s.bus as i32;
        let want = |p: Option<u32>| p.map(|p| p as i32).unwrap_or(-1);
        let mut m = PhysdevMapPirq { domid, ..Default::default() };
        match req {
            PirqMap::Msi { sbdf, pirq } => {
                m.ty = MAP_PIRQ_TYPE_MSI_SEG;
                m.index = -1;
                m.pirq = want(pirq);
                m.bus = seg_bus(sbdf);
                m.devfn = sbdf.devfn() as i32;
            }
            PirqMap::Msix { sbdf, entry, table_base, pirq } => {
                m.ty = MAP_PIRQ_TYPE_MSI_SEG;
                m.index = -1;
                m.pirq = want(pirq);
                m.bus = seg_bus(sbdf);
                m.devfn = sbdf.devfn() as i32;
                m.entry_nr = entry as i32;
                m.table_base = table_base;
            }
            PirqMap::MultiMsi { sbdf, count } => {
                m.ty = MAP_PIRQ_TYPE_MULTI_MSI;
                m.index = -1;
                m.pirq = -1;
                m.bus = seg_bus(sbdf);
                m.devfn = sbdf.devfn() as i32;
                m.entry_nr = count as i32;
            }
            PirqMap::Gsi { gsi, pirq } => {
                m.ty = MAP_PIRQ_TYPE_GSI;
                m.index = gsi as i32;
                m.pirq = pirq.map(|p| p as i32).unwrap_or(gsi as i32);
            }
        }
        let out = self.physdev("map_pirq", domid, PHYSDEVOP_MAP_PIRQ, &m)?;
        let count = if matches!(req, PirqMap::MultiMsi { .. }) { out.entry_nr as u32 } else { 1 };
        Ok(PirqMapped { pirq: out.pirq as u32, count })
    }

    fn unmap_pirq(&mut self, domid: DomId, pirq: u32) -> XenResult<()> {
        let u = PhysdevUnmapPirq { domid, pad: 0, pirq: pirq as i32 };
        self.physdev("unmap_pirq", domid, PHYSDEVOP_UNMAP_PIRQ, &u).map(|_| ())
    }

    fn bind_pt_irq(&mut self, domid: DomId, bind: PtIrq) -> XenResult<()> {
        let p = pt_irq_payload(bind);
        self.domctl("bind_pt_irq", XEN_DOMCTL_BIND_PT_IRQ, domid, &p).map(|_| ())
    }

    fn unbind_pt_irq(&mut self, domid: DomId, bind: PtIrq) -> XenResult<()> {
        let p = pt_irq_payload(bind);
        self.domctl("unbind_pt_irq", XEN_DOMCTL_UNBIND_PT_IRQ, domid, &p).map(|_| ())
    }

    fn iomem_permission(&mut self, domid: DomId, first_mfn: u64, nr: u64, allow: bool) -> XenResult<()> {
        let p = DomctlIomemPermission { first_mfn, nr_mfns: nr, allow_access: allow as u8, pad: [0; 7] };
        self.domctl("iomem_permission", XEN_DOMCTL_IOMEM_PERMISSION, domid, &p).map(|_| ())
    }

    fn ioport_permission(&mut self, domid: DomId, first_port: u32, nr: u32, allow: bool) -> XenResult<()> {
        let p = DomctlIoportPermission { first_port, nr_ports: nr, allow_access: allow as u8, pad: [0; 3] };
        self.domctl("ioport_permission", XEN_DOMCTL_IOPORT_PERMISSION, domid, &p).map(|_| ())
    }

    fn irq_permission(&mut self, domid: DomId, pirq: u32, allow: bool) -> XenResult<()> {
        let p = DomctlIrqPermission { pirq, allow_access: allow as u8, pad: [0; 3] };
        self.domctl("irq_permission", XEN_DOMCTL_IRQ_PERMISSION, domid, &p).map(|_| ())
    }

    fn gsi_permission(&mut self, domid: DomId, gsi: u32, allow: bool) -> XenResult<()> {
        let p = DomctlGsiPermission { gsi, flags: allow as u32 };
        self.domctl("gsi_permission", XEN_DOMCTL_GSI_PERMISSION, domid, &p).map(|_| ())
    }

    fn assign_device(&mut self, domid: DomId, sbdf: Sbdf, assign: bool) -> XenResult<()> {
        let p = DomctlAssignDevice {
            dev: XEN_DOMCTL_DEV_PCI,
            flags: if assign { XEN_DOMCTL_DEV_RDM_RELAXED } else { 0 },
            machine_sbdf: sbdf.to_u32(),
            pad: [0; 3],
        };
        let (cmd, name) = if assign {
            (XEN_DOMCTL_ASSIGN_DEVICE, "assign_device")
        } else {
            (XEN_DOMCTL_DEASSIGN_DEVICE, "deassign_device")
        };
        self.domctl(name, cmd, domid, &p).map(|_| ())
    }

    fn pcidev_gsi(&mut self, sbdf: Sbdf) -> XenResult<u32> {
        let mut a = PrivcmdPcidevGetGsi { sbdf: sbdf.to_u32(), gsi: 0 };
        self.ioctl(self.privcmd.as_raw_fd(), IOCTL_PRIVCMD_PCIDEV_GET_GSI, &mut a)
            .map_err(|e| XenError::new("pcidev_get_gsi", 0, e))?;
        Ok(a.gsi)
    }
}

fn pt_irq_payload(bind: PtIrq) -> DomctlBindPtIrq {
    let mut p = DomctlBindPtIrq::default();
    match bind {
        PtIrq::Msi { pirq, gvec, gflags, gtable } => {
            p.machine_irq = pirq;
            p.irq_type = PT_IRQ_TYPE_MSI;
            p.u[0] = gvec;
            p.u[4..8].copy_from_slice(&gflags.to_le_bytes());
            p.u[8..16].copy_from_slice(&gtable.to_le_bytes());
        }
        PtIrq::PciIntx { pirq, bus, device, intx } => {
            p.machine_irq = pirq;
            p.irq_type = PT_IRQ_TYPE_PCI;
            p.u[0] = bus;
            p.u[1] = device;
            p.u[2] = intx;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_pt_irq_msi_payload_matches_the_header_layout() {
        let p = pt_irq_payload(PtIrq::Msi { pirq: 55, gvec: 0x41, gflags: 0x1_0203, gtable: 0xf000_2000 });
        let mut d = XenDomctl::new(XEN_DOMCTL_BIND_PT_IRQ, 0x15, 1);
        d.set(&p);
        assert_eq!(&d.u[0..4], &55u32.to_le_bytes());
        assert_eq!(&d.u[4..8], &PT_IRQ_TYPE_MSI.to_le_bytes());
        assert_eq!(d.u[8], 0x41, "gvec at 8");
        assert_eq!(&d.u[12..16], &0x1_0203u32.to_le_bytes(), "gflags at 12");
        assert_eq!(&d.u[16..24], &0xf000_2000u64.to_le_bytes(), "gtable at 16");
        let i = pt_irq_payload(PtIrq::PciIntx { pirq: 11, bus: 0, device: 4, intx: 1 });
        assert_eq!((i.irq_type, i.u[0], i.u[1], i.u[2]), (PT_IRQ_TYPE_PCI, 0, 4, 1));
    }

    /// The switch the real evtchn fd gets in the event loop, on a socket that behaves the
    /// same way (readable while bytes are queued): after mio's edge-triggered registration,
    /// a partial read leaves data behind that no later poll reports; once switched, the
    /// next poll reports it, under the token mio registered.
    #[test]
    fn level_triggered_switch_reports_what_a_short_read_left() {
        use mio::unix::SourceFd;
        use mio::{Events, Interest, Poll, Token};
        use std::os::unix::net::UnixStream;
        use std::time::Duration;

        let ready = |poll: &mut Poll| {
            let mut events = Events::with_capacity(4);
            poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
            events.iter().map(|e| e.token()).collect::<Vec<_>>()
        };
        for level in [false, true] {
            let (mut rx, mut tx) = UnixStream::pair().unwrap();
            rx.set_nonblocking(true).unwrap();
            let mut poll = Poll::new().unwrap();
            let fd = rx.as_raw_fd();
            poll.registry().register(&mut SourceFd(&fd), Token(7), Interest::READABLE).unwrap();
            if level {
                epoll_level_triggered(poll.as_raw_fd(), fd, 7).unwrap();
            }
            tx.write_all(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
            assert_eq!(ready(&mut poll), [Token(7)], "level={level}: first readiness");
            let mut half = [0u8; 4];
            rx.read_exact(&mut half).unwrap();
            let again = ready(&mut poll);
            if level {
                assert_eq!(again, [Token(7)], "level-triggered: the bytes left are reported again");
                rx.read_exact(&mut half).unwrap();
                assert!(ready(&mut poll).is_empty(), "level-triggered: nothing once drained");
            } else {
                assert!(again.is_empty(), "edge-triggered: no new wake-up for the bytes left");
            }
        }
        assert!(epoll_level_triggered(-1, 0, 7).is_err(), "a bad epoll fd is an error, not a panic");
    }

    /// The evtchn fd's read loop against a scripted fd: how many reads each case takes.
    #[test]
    fn read_ports_stops_where_the_readiness_allows() {
        struct Script(Vec<std::io::Result<usize>>, usize);
        impl Read for Script {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.1 += 1;
                let next = self.0.remove(0)?;
                for (i, c) in buf[..next].chunks_exact_mut(4).enumerate() {
                    c.copy_from_slice(&(i as u32 + 1).to_ne_bytes());
                }
                Ok(next)
            }
        }
        let would_block = || Err(std::io::ErrorKind::WouldBlock.into());
        let run = |script: Vec<std::io::Result<usize>>, readiness| {
            let mut r = Script(script, 0);
            let mut out = Vec::new();
            let res = read_ports(&mut r, &mut out, readiness).map_err(|e| e.raw_os_error());
            (res, out.len(), r.1)
        };
        // One port: edge-triggered reads on to EAGAIN, level-triggered stops at the short read.
        assert_eq!(run(vec![Ok(4), would_block()], Readiness::Edge), (Ok(true), 1, 2));
        assert_eq!(run(vec![Ok(4), would_block()], Readiness::Level), (Ok(true), 1, 1));
        // A full buffer (64 ports) may have left some behind: read on either way.
        assert_eq!(run(vec![Ok(256), Ok(8)], Readiness::Level), (Ok(true), 66, 2));
        assert_eq!(run(vec![Ok(256), would_block()], Readiness::Level), (Ok(true), 64, 2));
        // Interrupted is retried; EOF ends; other errors (EFBIG: ring overflow) go to the caller.
        assert_eq!(run(vec![Err(std::io::ErrorKind::Interrupted.into()), Ok(4)], Readiness::Level), (Ok(true), 1, 2));
        assert_eq!(run(vec![Ok(0)], Readiness::Edge), (Ok(true), 0, 1));
        let efbig = std::io::Error::from_raw_os_error(libc::EFBIG);
        assert_eq!(run(vec![Ok(4), Err(efbig)], Readiness::Edge), (Err(Some(libc::EFBIG)), 1, 2));
    }

    #[test]
    fn without_xen_open_fails_with_a_friendly_error() {
        if Path::new(PRIVCMD_PATH).exists() {
            return; // a real dom0: nothing to check here
        }
        let e = PrivcmdXen::open().err().expect("no Xen here");
        assert!(e.to_string().contains("does not look like a Xen dom0"), "{e}");
    }
}
