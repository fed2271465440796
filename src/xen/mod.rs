//! The Xen boundary: one trait ([`Xen`]) with every operation xenpt performs on the
//! hypervisor, and its implementations: [`sim`] (a deterministic simulator as strict as
//! Xen) and, later, `privcmd` (the real thing through /dev/xen/privcmd and /dev/xen/evtchn).
//!
//! Semantics follow ../shared/reference/xen-abi.md; every method documents the Xen call it
//! stands for. Raw ABI structs and all `unsafe` live below this module.

pub mod abi;
pub mod page;
pub mod privcmd;
pub mod remote;
pub mod sim;
pub mod xenstore;

use std::fmt;
use std::os::fd::RawFd;

pub use page::SharedPage;

use crate::pci::Sbdf;

pub type DomId = u16;
pub type IoservId = u16;
pub type EvtchnPort = u32;

/// DOMID_SELF-independent id of the hardware domain as Xen sees it.
pub const DOMID_HWDOM: DomId = 0;

/// An errno as Xen returns it (Xen's error numbers equal Linux x86 errno values).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const ESRCH: Errno = Errno(libc::ESRCH);
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EFAULT: Errno = Errno(libc::EFAULT);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const ENODEV: Errno = Errno(libc::ENODEV);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub const ENOTCONN: Errno = Errno(libc::ENOTCONN);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    /// An ioctl the kernel does not know (e.g. PCIDEV_GET_GSI before Linux 6.12).
    pub const ENOTTY: Errno = Errno(libc::ENOTTY);

    pub fn name(self) -> &'static str {
        match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::E2BIG => "E2BIG",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENOSPC => "ENOSPC",
            libc::ENOSYS => "ENOSYS",
            libc::ENOTCONN => "ENOTCONN",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOTTY => "ENOTTY",
            _ => "E?",
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), std::io::Error::from_raw_os_error(self.0))
    }
}

/// A failed Xen operation: which one, on which domain, and the errno Xen gave.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} on domain {domid} failed: {errno}")]
pub struct XenError {
    pub op: &'static str,
    pub domid: DomId,
    pub errno: Errno,
}

impl XenError {
    pub fn new(op: &'static str, domid: DomId, errno: Errno) -> Self {
        XenError { op, domid, errno }
    }
}

pub type XenResult<T> = Result<T, XenError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct XenVersion {
    pub major: u16,
    pub minor: u16,
}

impl fmt::Display for XenVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What kind of guest a domain is, from getdomaininfo's flags and emulation_flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    Pv,
    Hvm,
    Pvh,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    pub domid: DomId,
    pub kind: GuestKind,
    /// Number of vCPUs (max_vcpu_id + 1): the number of ioreq slots.
    pub vcpus: u32,
    pub dying: bool,
    pub shutdown: bool,
    /// XEN_X86_EMU_* flags where the Xen version reports them.
    pub emulation_flags: Option<u32>,
}

/// `handle_bufioreq` of XEN_DMOP_create_ioreq_server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufIoreq {
    Off = 0,
    Legacy = 1,
    Atomic = 2,
}

/// `XEN_DMOP_IO_RANGE_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoRangeKind {
    Port = 0,
    Memory = 1,
    Pci = 2,
}

/// An inclusive range of ports, guest-physical bytes, or PCI SBDFs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoRange {
    pub kind: IoRangeKind,
    pub start: u64,
    pub end: u64,
}

impl IoRange {
    pub fn pci(sbdf: Sbdf) -> Self {
        let v = sbdf.to_u32() as u64;
        IoRange { kind: IoRangeKind::Pci, start: v, end: v }
    }
    pub fn memory(start: u64, len: u64) -> Self {
        IoRange { kind: IoRangeKind::Memory, start, end: start + len - 1 }
    }
    pub fn port(start: u64, len: u64) -> Self {
        IoRange { kind: IoRangeKind::Port, start, end: start + len - 1 }
    }
    pub fn contains(&self, kind: IoRangeKind, addr: u64) -> bool {
        self.kind == kind && self.start <= addr && addr <= self.end
    }
}

/// The pages of an ioreq server, mapped into this process (XENMEM_acquire_resource).
pub struct IoreqPages {
    /// `shared_iopage`: one `struct ioreq` per vCPU.
    pub ioreq: SharedPage,
    /// `buffered_iopage`, absent for a BUFIOREQ_OFF server.
    pub bufioreq: Option<SharedPage>,
    /// Event channel port (in the guest) of the buffered ring, if any.
    pub bufioreq_port: Option<EvtchnPort>,
}

/// PHYSDEVOP_map_pirq requests, by MAP_PIRQ_TYPE_*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PirqMap {
    /// One MSI vector (MAP_PIRQ_TYPE_MSI_SEG, table_base 0). `pirq` asks for a specific
    /// pirq in the guest (PV-on-HVM guests write it into their MSI message).
    Msi { sbdf: Sbdf, pirq: Option<u32> },
    /// One MSI-X entry. `table_base` is the *host* physical base of the BAR holding the
    /// table, from trusted sysfs data (XSA-337).
    Msix { sbdf: Sbdf, entry: u16, table_base: u64, pirq: Option<u32> },
    /// A block of `count` MSI vectors (MAP_PIRQ_TYPE_MULTI_MSI).
    MultiMsi { sbdf: Sbdf, count: u32 },
    /// A GSI, for INTx.
    Gsi { gsi: u32, pirq: Option<u32> },
}

impl fmt::Display for PirqMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let want = |p: &Option<u32>| p.map(|p| format!(" pirq {p}")).unwrap_or_default();
        match self {
            PirqMap::Msi { sbdf, pirq } => write!(f, "MSI {sbdf}{}", want(pirq)),
            PirqMap::Msix { sbdf, entry, table_base, pirq } => {
                write!(f, "MSI-X {sbdf} entry {entry} table_base {table_base:#x}{}", want(pirq))
            }
            PirqMap::MultiMsi { sbdf, count } => write!(f, "multi-MSI {sbdf} x{count}"),
            PirqMap::Gsi { gsi, pirq } => write!(f, "GSI {gsi}{}", want(pirq)),
        }
    }
}

/// What map_pirq returned: the (first) pirq in the target and how many were granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PirqMapped {
    pub pirq: u32,
    pub count: u32,
}

/// XEN_DOMCTL_bind_pt_irq / unbind_pt_irq payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtIrq {
    /// PT_IRQ_TYPE_MSI. `gtable` is the guest address of the MSI-X table (0 for MSI).
    Msi { pirq: u32, gvec: u8, gflags: u32, gtable: u64 },
    /// PT_IRQ_TYPE_PCI: INTx routed to guest bus `bus` (must be 0), `device`, `intx` (0=A).
    PciIntx { pirq: u32, bus: u8, device: u8, intx: u8 },
}

impl fmt::Display for PtIrq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PtIrq::Msi { pirq, gvec, gflags, gtable } => {
                write!(f, "MSI pirq {pirq} gvec {gvec:#x} gflags {gflags:#x} gtable {gtable:#x}")
            }
            PtIrq::PciIntx { pirq, bus, device, intx } => {
                write!(f, "INTx pirq {pirq} -> {bus:02x}:{device:02x} INT{}", (b'A' + intx) as char)
            }
        }
    }
}

impl PtIrq {
    pub fn pirq(&self) -> u32 {
        match *self {
            PtIrq::Msi { pirq, .. } | PtIrq::PciIntx { pirq, .. } => pirq,
        }
    }
}

/// gflags bits of XEN_DOMCTL_bind_pt_irq (public/domctl.h, XEN_DOMCTL_VMSI_X86_*).
pub mod gflags {
    pub const DEST_ID_MASK: u32 = 0x0000ff;
    pub const RH_MASK: u32 = 0x000100;
    pub const DM_MASK: u32 = 0x000200;
    pub const DELIV_MASK: u32 = 0x007000;
    pub const TRIG_MASK: u32 = 0x008000;
    pub const UNMASKED: u32 = 0x010000;
}

/// How the caller watches the evtchn fd, which decides when a read of it may stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Edge-triggered (mio's registration): the evtchn driver wakes the fd only when its
    /// queue goes from empty to non-empty, and a port that fires between a read's copy and
    /// its consumer update lands in a queue that is not empty, with no wake-up. Only EAGAIN
    /// proves the queue empty, so the fd is read until then.
    Edge,
    /// Level-triggered (the event loop's, see `epoll_level_triggered`): epoll polls the
    /// fd again at the next wait and reports such a port, so a short read is enough. That
    /// spares the read that would only have returned EAGAIN.
    Level,
}

/// EPOLL_CTL_MOD of `fd`'s entry in the epoll set `epoll_fd` to level-triggered
/// readability, with `token` as its event data (mio registers edge-triggered only, and reads
/// the token back from that data: `Token(data as usize)`).
pub(crate) fn epoll_level_triggered(epoll_fd: RawFd, fd: RawFd, token: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, u64: token };
    // SAFETY: epoll_ctl reads the one epoll_event passed by pointer, which lives for the
    // call; both fds are plain integers the kernel checks (EBADF, ENOENT otherwise).
    let rc = unsafe { libc::epoll_ctl(epoll_fd, libc::EPOLL_CTL_MOD, fd, &mut ev) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Every hypervisor operation xenpt performs. One implementation talks to real Xen, one
/// simulates it; device logic never sees which.
///
/// `domid` is always the *target* (guest) domain. Methods map 1:1 onto Xen calls so that
/// the operation record of the simulator reads like a trace of real hypercalls.
pub trait Xen: Send {
    /// XENVER_version.
    fn version(&mut self) -> XenResult<XenVersion>;
    /// XEN_DOMCTL_getdomaininfo.
    fn domain_info(&mut self, domid: DomId) -> XenResult<DomainInfo>;

    /// XEN_DMOP_create_ioreq_server. The server starts disabled.
    fn create_ioreq_server(&mut self, domid: DomId, buf: BufIoreq) -> XenResult<IoservId>;
    /// XENMEM_acquire_resource (through IOCTL_PRIVCMD_MMAP_RESOURCE) plus
    /// XEN_DMOP_get_ioreq_server_info(no_gfns) for the buffered port.
    fn map_ioreq_pages(&mut self, domid: DomId, id: IoservId) -> XenResult<IoreqPages>;
    /// XEN_DMOP_map_io_range_to_ioreq_server.
    fn map_io_range(&mut self, domid: DomId, id: IoservId, range: IoRange) -> XenResult<()>;
    /// XEN_DMOP_unmap_io_range_from_ioreq_server.
    fn unmap_io_range(&mut self, domid: DomId, id: IoservId, range: IoRange) -> XenResult<()>;
    /// XEN_DMOP_set_ioreq_server_state.
    fn set_ioreq_server_state(&mut self, domid: DomId, id: IoservId, enabled: bool) -> XenResult<()>;
    /// XEN_DMOP_destroy_ioreq_server.
    fn destroy_ioreq_server(&mut self, domid: DomId, id: IoservId) -> XenResult<()>;

    /// The fd to poll for event-channel notifications (/dev/xen/evtchn).
    fn evtchn_fd(&self) -> RawFd;
    /// IOCTL_EVTCHN_BIND_INTERDOMAIN: returns the local port.
    fn evtchn_bind_interdomain(&mut self, domid: DomId, remote_port: EvtchnPort) -> XenResult<EvtchnPort>;
    /// IOCTL_EVTCHN_UNBIND.
    fn evtchn_unbind(&mut self, port: EvtchnPort) -> XenResult<()>;
    /// IOCTL_EVTCHN_NOTIFY.
    fn evtchn_notify(&mut self, port: EvtchnPort) -> XenResult<()>;
    /// read() of the evtchn fd without blocking: appends the local ports that fired.
    /// A port that fired stays masked until [`Xen::evtchn_unmask`]. `readiness` says how
    /// the caller watches the fd. Returns true when the caller need not read again before
    /// the fd's next readiness: the queue was seen empty (EAGAIN), since a port firing into
    /// an empty queue wakes the fd, or, under [`Readiness::Level`], a read came back short.
    fn evtchn_pending(&mut self, out: &mut Vec<EvtchnPort>, readiness: Readiness) -> XenResult<bool>;
    /// write() of a port to the evtchn fd: unmask it.
    fn evtchn_unmask(&mut self, port: EvtchnPort) -> XenResult<()>;

    /// XEN_DOMCTL_memory_mapping. Returns the number of frames done: fewer than `nr` means
    /// partial progress, and the caller must continue (x86 Xen stops after 64 chunks).
    fn memory_mapping(&mut self, domid: DomId, gfn: u64, mfn: u64, nr: u64, add: bool) -> XenResult<u64>;
    /// XEN_DOMCTL_ioport_mapping.
    fn ioport_mapping(&mut self, domid: DomId, gport: u32, mport: u32, nr: u32, add: bool) -> XenResult<()>;

    /// PHYSDEVOP_map_pirq into `domid`.
    fn map_pirq(&mut self, domid: DomId, req: PirqMap) -> XenResult<PirqMapped>;
    /// PHYSDEVOP_unmap_pirq.
    fn unmap_pirq(&mut self, domid: DomId, pirq: u32) -> XenResult<()>;
    /// XEN_DOMCTL_bind_pt_irq. Re-binding a bound MSI pirq updates gvec/gflags in place.
    fn bind_pt_irq(&mut self, domid: DomId, bind: PtIrq) -> XenResult<()>;
    /// XEN_DOMCTL_unbind_pt_irq.
    fn unbind_pt_irq(&mut self, domid: DomId, bind: PtIrq) -> XenResult<()>;

    /// XEN_DOMCTL_iomem_permission.
    fn iomem_permission(&mut self, domid: DomId, first_mfn: u64, nr: u64, allow: bool) -> XenResult<()>;
    /// XEN_DOMCTL_ioport_permission.
    fn ioport_permission(&mut self, domid: DomId, first_port: u32, nr: u32, allow: bool) -> XenResult<()>;
    /// XEN_DOMCTL_irq_permission (pirq of the caller).
    fn irq_permission(&mut self, domid: DomId, pirq: u32, allow: bool) -> XenResult<()>;
    /// XEN_DOMCTL_assign_device / deassign_device of a PCI function: the domain gets
    /// (loses) an IOMMU context for it. The toolstack's job; xenpt does it under --assign.
    fn assign_device(&mut self, domid: DomId, sbdf: Sbdf, assign: bool) -> XenResult<()>;
    /// XEN_DOMCTL_gsi_permission (Xen 4.20+, PVH dom0).
    fn gsi_permission(&mut self, domid: DomId, gsi: u32, allow: bool) -> XenResult<()>;
    /// The GSI of a host PCI function's INTx as the hardware domain's ACPI set it up:
    /// privcmd's IOCTL_PRIVCMD_PCIDEV_GET_GSI (Linux 6.12+). A PVH dom0 needs it because
    /// its sysfs `irq` is a Linux IRQ number, not the GSI; on a PV dom0 the kernel has no
    /// record (ENODEV) and sysfs `irq` is the GSI.
    fn pcidev_gsi(&mut self, sbdf: Sbdf) -> XenResult<u32>;
}
