//! The ioreq server: the synchronous slot handshake on the shared page, dispatch by
//! request type, and the event loop. The same code runs against the simulator and
//! against Xen; only the event-channel transport behind [`Xen`] differs.

pub mod bufring;
pub mod event_loop;
pub mod latency;
pub mod slot;

use std::collections::HashMap;

use crate::pci::Sbdf;
use crate::xen::abi::*;
use crate::xen::{BufIoreq, DomId, EvtchnPort, IoRange, IoreqPages, IoservId, Readiness, Xen, XenError};
use slot::{Ioreq, Slot};

/// A guest access, decoded and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    PciConfig {
        sbdf: Sbdf,
        reg: u32,
        size: u32,
        write: Option<u32>,
    },
    Mmio {
        addr: u64,
        size: u32,
        write: Option<u64>,
    },
    Pio {
        port: u16,
        size: u32,
        write: Option<u32>,
    },
    /// IOREQ_TYPE_INVALIDATE (mapcache flush broadcast): just complete it.
    Invalidate,
    /// Something xenpt does not serve: reads get all-ones, writes are dropped.
    Unsupported {
        why: &'static str,
        ty: u8,
    },
}

fn size_mask(size: u32) -> u64 {
    if size >= 8 {
        !0
    } else {
        (1u64 << (size * 8)) - 1
    }
}

impl Request {
    pub fn decode(r: &Ioreq) -> Request {
        if r.ty == IOREQ_TYPE_INVALIDATE {
            return Request::Invalidate;
        }
        if !matches!(r.size, 1 | 2 | 4 | 8) {
            return Request::Unsupported { why: "bad access size", ty: r.ty };
        }
        if r.data_is_ptr || r.count != 1 {
            return Request::Unsupported { why: "string/rep access (data_is_ptr or count > 1)", ty: r.ty };
        }
        let write = (!r.dir_read).then_some(r.data & size_mask(r.size));
        match r.ty {
            IOREQ_TYPE_PCI_CONFIG => {
                if r.size > 4 {
                    return Request::Unsupported { why: "8-byte config access", ty: r.ty };
                }
                Request::PciConfig {
                    sbdf: Sbdf::from_u32((r.addr >> 32) as u32),
                    reg: r.addr as u32,
                    size: r.size,
                    write: write.map(|w| w as u32),
                }
            }
            IOREQ_TYPE_COPY => Request::Mmio { addr: r.addr, size: r.size, write },
            IOREQ_TYPE_PIO if r.addr <= 0xffff && r.size <= 4 => {
                Request::Pio { port: r.addr as u16, size: r.size, write: write.map(|w| w as u32) }
            }
            _ => Request::Unsupported { why: "unknown ioreq type", ty: r.ty },
        }
    }

    pub fn is_read(&self) -> bool {
        match *self {
            Request::PciConfig { write, .. } | Request::Pio { write, .. } => write.is_none(),
            Request::Mmio { write, .. } => write.is_none(),
            Request::Invalidate | Request::Unsupported { .. } => false,
        }
    }
}

/// What serves the requests: the passthrough device.
pub trait IoHandler {
    /// Handle one request; the return value is the read data (ignored for writes).
    fn handle(&mut self, xen: &mut dyn Xen, req: Request) -> u64;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub events: u64,
    pub spurious: u64,
    pub pci_config: u64,
    pub mmio: u64,
    pub pio: u64,
    pub invalidate: u64,
    pub unsupported: u64,
    /// Writes taken from the buffered ring.
    pub buffered: u64,
    /// Time from taking a synchronous request off its slot to completing it, for one
    /// request in [`LATENCY_SAMPLE`].
    pub latency: latency::Latency,
}

/// One synchronous request in this many is timed (the first one included). Reading the
/// clock is a syscall where the vDSO cannot serve it, as in a PV dom0 on Xen's clocksource
/// without a stable TSC: measured under Xen 4.17, two clock_gettime calls per request were
/// a third of xenpt's syscalls per guest access.
pub const LATENCY_SAMPLE: u32 = 16;

/// One ioreq server of xenpt in one guest.
pub struct IoreqServer {
    domid: DomId,
    id: IoservId,
    /// Keeps the mapped ioreq (and buffered) pages alive for the server's lifetime.
    pages: IoreqPages,
    /// Local event-channel port -> vCPU.
    ports: HashMap<EvtchnPort, u32>,
    /// Local port of the buffered ring, once bound.
    buf_port: Option<EvtchnPort>,
    buffered: Vec<Option<Ioreq>>,
    slots: Vec<Slot>,
    vcpus: u32,
    enabled: bool,
    events: Vec<EvtchnPort>,
    /// Counts synchronous requests modulo LATENCY_SAMPLE.
    tick: u32,
    pub stats: ServerStats,
}

impl IoreqServer {
    /// XEN_DMOP_create_ioreq_server, then map its pages. On a mapping failure the server
    /// is destroyed again.
    pub fn create(xen: &mut dyn Xen, domid: DomId, vcpus: u32) -> Result<Self, XenError> {
        Self::create_with(xen, domid, vcpus, BufIoreq::Off)
    }

    /// As [`IoreqServer::create`], with a buffered ring when `buf` is not Off (xenpt itself
    /// needs none: only stdvga writes and TIMEOFFSET broadcasts use it).
    pub fn create_with(xen: &mut dyn Xen, domid: DomId, vcpus: u32, buf: BufIoreq) -> Result<Self, XenError> {
        if vcpus == 0 || vcpus > MAX_VCPUS_PER_PAGE {
            // Xen serves only ioreq frame 0: one page, 128 vCPU slots.
            return Err(XenError::new("create_ioreq_server", domid, crate::xen::Errno::E2BIG));
        }
        let id = xen.create_ioreq_server(domid, buf)?;
        let pages = match xen.map_ioreq_pages(domid, id) {
            Ok(p) => p,
            Err(e) => {
                let _ = xen.destroy_ioreq_server(domid, id);
                return Err(e);
            }
        };
        let slots = (0..vcpus).map(|v| Slot::new(&pages.ioreq, v)).collect();
        Ok(IoreqServer {
            domid,
            id,
            pages,
            ports: HashMap::new(),
            buf_port: None,
            buffered: Vec::new(),
            slots,
            vcpus,
            enabled: false,
            events: Vec::with_capacity(64),
            tick: 0,
            stats: ServerStats::default(),
        })
    }

    pub fn id(&self) -> IoservId {
        self.id
    }

    pub fn domid(&self) -> DomId {
        self.domid
    }

    pub fn map_range(&mut self, xen: &mut dyn Xen, range: IoRange) -> Result<(), XenError> {
        xen.map_io_range(self.domid, self.id, range)
    }

    /// Enable the server, then bind one event channel per vCPU from the vp_eport values
    /// Xen wrote into the slots.
    pub fn enable(&mut self, xen: &mut dyn Xen) -> Result<(), XenError> {
        xen.set_ioreq_server_state(self.domid, self.id, true)?;
        self.enabled = true;
        for v in 0..self.vcpus {
            let remote = self.slots[v as usize].vp_eport();
            let local = xen.evtchn_bind_interdomain(self.domid, remote)?;
            self.ports.insert(local, v);
        }
        if let Some(remote) = self.pages.bufioreq_port {
            self.buf_port = Some(xen.evtchn_bind_interdomain(self.domid, remote)?);
        }
        Ok(())
    }

    /// Serve everything pending, the evtchn fd watched edge-triggered. Returns the number
    /// of requests handled.
    pub fn poll(&mut self, xen: &mut dyn Xen, handler: &mut dyn IoHandler) -> Result<usize, XenError> {
        self.poll_as(xen, handler, Readiness::Edge)
    }

    /// As [`IoreqServer::poll`], for a caller that watches the evtchn fd as `readiness`
    /// says (the event loop: level-triggered).
    pub fn poll_as(
        &mut self,
        xen: &mut dyn Xen,
        handler: &mut dyn IoHandler,
        readiness: Readiness,
    ) -> Result<usize, XenError> {
        let mut handled = 0;
        loop {
            self.events.clear();
            let drained = xen.evtchn_pending(&mut self.events, readiness)?;
            if self.events.is_empty() {
                return Ok(handled);
            }
            for i in 0..self.events.len() {
                let port = self.events[i];
                self.stats.events += 1;
                xen.evtchn_unmask(port)?;
                if Some(port) == self.buf_port {
                    handled += self.drain_buffered(xen, handler);
                    continue;
                }
                let Some(&vcpu) = self.ports.get(&port) else {
                    self.stats.spurious += 1;
                    continue;
                };
                let slot = &self.slots[vcpu as usize];
                let Some(req) = slot.take() else {
                    self.stats.spurious += 1;
                    continue;
                };
                let started = (self.tick == 0).then(std::time::Instant::now);
                self.tick = (self.tick + 1) % LATENCY_SAMPLE;
                let decoded = Request::decode(&req);
                match decoded {
                    Request::PciConfig { .. } => self.stats.pci_config += 1,
                    Request::Mmio { .. } => self.stats.mmio += 1,
                    Request::Pio { .. } => self.stats.pio += 1,
                    Request::Invalidate => self.stats.invalidate += 1,
                    Request::Unsupported { .. } => self.stats.unsupported += 1,
                }
                let data = match decoded {
                    Request::Invalidate => 0,
                    Request::Unsupported { .. } => !0,
                    r => handler.handle(xen, r),
                };
                tracing::trace!(target: "xenpt::ioreq", vcpu, "{decoded:x?} -> {:#x}", data & size_mask(req.size));
                let slot = &self.slots[vcpu as usize];
                slot.complete(req.dir_read.then_some(data & size_mask(req.size)));
                if let Some(t) = started {
                    self.stats.latency.record(t.elapsed());
                }
                xen.evtchn_notify(port)?;
                handled += 1;
            }
            if drained {
                return Ok(handled);
            }
        }
    }

    /// Serve the buffered ring: writes only, nothing to answer; TIMEOFFSET broadcasts and
    /// malformed slots are counted and dropped.
    fn drain_buffered(&mut self, xen: &mut dyn Xen, handler: &mut dyn IoHandler) -> usize {
        let Some(page) = self.pages.bufioreq.clone() else { return 0 };
        self.buffered.clear();
        let n = bufring::drain(&page, &mut self.buffered);
        for r in std::mem::take(&mut self.buffered).into_iter().flatten() {
            match Request::decode(&r) {
                req @ (Request::Mmio { write: Some(_), .. } | Request::Pio { write: Some(_), .. }) => {
                    self.stats.buffered += 1;
                    handler.handle(xen, req);
                }
                _ => self.stats.unsupported += 1,
            }
        }
        n
    }

    /// Disable and destroy the server, then unbind the event channels (in that order, so no
    /// vCPU posts to a port nobody listens on). Continues past errors.
    pub fn destroy(&mut self, xen: &mut dyn Xen) -> Vec<XenError> {
        let mut errors = Vec::new();
        if self.enabled {
            if let Err(e) = xen.set_ioreq_server_state(self.domid, self.id, false) {
                errors.push(e);
            }
            self.enabled = false;
        }
        if let Err(e) = xen.destroy_ioreq_server(self.domid, self.id) {
            errors.push(e);
        }
        for port in self.ports.keys().copied().chain(self.buf_port.take()) {
            if let Err(e) = xen.evtchn_unbind(port) {
                errors.push(e);
            }
        }
        self.ports.clear();
        errors
    }
}
