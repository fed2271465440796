//! A deterministic Xen simulator, as strict as Xen where it matters.
//!
//! [`Sim`] is the whole simulated host: domains with their p2m of direct MMIO and port
//! mappings, permissions, pirqs, ioreq servers with real shared pages, event channels,
//! Xen's MSI-X table intercept, local APICs, and the physical devices of the machine.
//! [`SimXen`] is one device-model process's handle on it (it implements [`Xen`]), and
//! [`guest::SimGuest`] is a guest vCPU's view (port I/O, MMIO, RAM, interrupts).
//!
//! Where real Xen refuses, the simulator refuses with the same errno; where real Xen
//! crashes the guest, the simulator marks the domain crashed. Everything xenpt asks of it
//! is recorded ([`Sim::ops`]) and any call can be made to fail ([`Sim::fail_nth`]).

pub mod guest;
pub mod machine;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::abi::*;
use super::*;
use crate::pci::{Sbdf, PAGE_SHIFT};
use machine::MachineDevice;

/// Which device-model handle made a call (each [`SimXen`] is one "process").
pub type DmId = u32;

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub dm: DmId,
    /// The operation's name: the method name of [`Xen`] (e.g. "memory_mapping").
    pub kind: &'static str,
    pub domid: DomId,
    pub detail: String,
    /// None on success, else the errno returned.
    pub error: Option<Errno>,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}(d{}{}{})", self.kind, self.domid, if self.detail.is_empty() { "" } else { ", " }, self.detail)?;
        if let Some(e) = self.error {
            write!(f, " -> {}", e.name())?;
        }
        Ok(())
    }
}

/// An inclusive range set over u64 (frames, ports), kept sorted and merged.
#[derive(Clone, Debug, Default)]
struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    fn add(&mut self, start: u64, end: u64) {
        self.0.push((start, end));
        self.0.sort();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
        for &(s, e) in &self.0 {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }
    fn remove(&mut self, start: u64, end: u64) {
        let mut out = Vec::new();
        for &(s, e) in &self.0 {
            if e < start || s > end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start - 1));
            }
            if e > end {
                out.push((end + 1, e));
            }
        }
        self.0 = out;
    }
    fn contains_range(&self, start: u64, end: u64) -> bool {
        // Merged ranges: the whole range must sit inside one of them.
        self.0.iter().any(|&(s, e)| s <= start && end <= e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PirqSource {
    Msi { sbdf: Sbdf, index: u32 },
    Msix { sbdf: Sbdf, entry: u16 },
    Gsi(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MsiBinding {
    gvec: u8,
    gflags: u32,
}

#[derive(Clone, Debug)]
struct Pirq {
    source: PirqSource,
    msi: Option<MsiBinding>,
    intx: Option<(u8, u8, u8)>,
    /// Xen's guest mask of this MSI vector.
    guest_masked: bool,
    /// An interrupt arrived while masked.
    pending: bool,
}

impl Pirq {
    fn bound(&self) -> bool {
        self.msi.is_some() || self.intx.is_some()
    }
}

/// Xen's msixtbl registration for one device in one domain (vmsi.c): the gtable of the
/// first bind sticks until every vector with a gtable is unbound.
#[derive(Clone, Debug)]
struct MsixTbl {
    gtable: u64,
    entries: u16,
    refs: u32,
    /// Entries whose address/data the guest wrote since the last unmask.
    changed: BTreeSet<u16>,
}

struct IoreqServer {
    dm: DmId,
    enabled: bool,
    buf: BufIoreq,
    ranges: Vec<IoRange>,
    pages: Option<(SharedPage, Option<SharedPage>)>,
    /// Guest-side event channel port per vCPU (vp_eport), plus the buffered one.
    vcpu_ports: Vec<EvtchnPort>,
    buf_port: Option<EvtchnPort>,
}

#[derive(Default)]
struct GuestPort {
    /// Bound to (dm, local port) in the device model.
    peer: Option<(DmId, EvtchnPort)>,
    /// Number of notifications the device model sent on this port.
    notified: u64,
}

/// Simulated local APIC of one vCPU.
#[derive(Default, Debug)]
pub struct Lapic {
    pub apic_id: u32,
    /// Vectors delivered and not yet acknowledged by the guest, in order.
    pub irr: VecDeque<u8>,
    pub delivered: u64,
    /// pirqs delivered as event-channel events (PV-on-HVM guests: MSI bound with gvec 0).
    pub pirq_events: VecDeque<u32>,
}

struct Domain {
    kind: GuestKind,
    vcpus: u32,
    crashed: Option<String>,
    dying: bool,
    iomem: RangeSet,
    ioports: RangeSet,
    irqs: BTreeSet<u32>,
    gsis: BTreeSet<u32>,
    /// gfn -> mfn of direct MMIO mappings.
    p2m_mmio: BTreeMap<u64, u64>,
    /// gport -> (mport, nr).
    ioport_map: BTreeMap<u32, (u32, u32)>,
    servers: BTreeMap<IoservId, IoreqServer>,
    next_server: IoservId,
    pirqs: BTreeMap<u32, Pirq>,
    next_pirq: u32,
    /// pirqs a PV-on-HVM guest allocated (PHYSDEVOP_get_free_pirq) and not yet mapped.
    reserved_pirqs: BTreeSet<u32>,
    /// pirqs the guest bound to event channels (EVTCHNOP_bind_pirq).
    evtchn_pirqs: BTreeSet<u32>,
    /// The guest's virtual IO-APIC: guest GSI -> vector (HVM only; PVH has none).
    ioapic: BTreeMap<u32, u8>,
    ram: Vec<u8>,
    lapics: Vec<Lapic>,
    cf8: u32,
    /// Xen forwards CF8 bits 27:24 as register bits 11:8 only for an AMD guest on a host
    /// whose northbridge has CF8 extended config enabled (MSR NB_CFG bit 46, families
    /// 10h-16h); elsewhere they are ignored and CF8/CFC reaches only 0x00-0xff.
    amd_cf8_ext: bool,
    msixtbl: BTreeMap<Sbdf, MsixTbl>,
    assigned: BTreeSet<Sbdf>,
    ports: BTreeMap<EvtchnPort, GuestPort>,
    next_port: EvtchnPort,
}

impl Domain {
    fn alloc_port(&mut self) -> EvtchnPort {
        let p = self.next_port;
        self.next_port += 1;
        self.ports.insert(p, GuestPort::default());
        p
    }
}

struct DmPort {
    domid: DomId,
    remote: EvtchnPort,
    masked: bool,
    pending: bool,
}

struct DmEndpoint {
    tx: UnixDatagram,
    ports: BTreeMap<EvtchnPort, DmPort>,
    next_local: EvtchnPort,
}

struct Fault {
    kind: &'static str,
    countdown: u64,
    errno: Errno,
}

pub(crate) struct State {
    version: XenVersion,
    /// What the hardware domain (dom0, where xenpt runs) is: PV by default, PVH on request.
    hwdom: GuestKind,
    domains: BTreeMap<DomId, Domain>,
    next_domid: DomId,
    devices: BTreeMap<Sbdf, Arc<dyn MachineDevice>>,
    dms: HashMap<DmId, DmEndpoint>,
    next_dm: DmId,
    ops: Vec<Op>,
    faults: Vec<Fault>,
    violations: Vec<String>,
    /// Interrupts the machine could not deliver, with the reason.
    dropped_irqs: Vec<String>,
    /// The mask bit Xen last wrote into each device MSI-X entry it owns.
    device_masks: BTreeMap<(Sbdf, u16), bool>,
    /// Ioreq pages live in memfds, so device models in other processes can map them
    /// (`xen::remote`); otherwise on the heap.
    memfd_pages: bool,
}

pub(crate) struct Inner {
    state: Mutex<State>,
    cv: Condvar,
}

/// The simulated host. Cheap to clone; all clones are the same machine.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new(XenVersion { major: 4, minor: 17 })
    }
}

fn err<T>(op: &'static str, domid: DomId, e: Errno) -> XenResult<T> {
    Err(XenError::new(op, domid, e))
}

impl Sim {
    pub fn new(version: XenVersion) -> Self {
        Sim {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    version,
                    hwdom: GuestKind::Pv,
                    domains: BTreeMap::new(),
                    next_domid: 1,
                    devices: BTreeMap::new(),
                    dms: HashMap::new(),
                    next_dm: 1,
                    ops: Vec::new(),
                    faults: Vec::new(),
                    violations: Vec::new(),
                    dropped_irqs: Vec::new(),
                    device_masks: BTreeMap::new(),
                    memfd_pages: false,
                }),
                cv: Condvar::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock poisons it; the state is still the best record
        // of what happened, so keep using it.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the hardware domain (domain 0, where xenpt runs) a PV or a PVH domain. A PVH
    /// dom0 learns a device's GSI from privcmd's PCIDEV_GET_GSI (its sysfs `irq` is a Linux
    /// IRQ number); a PV dom0's kernel has no such record.
    pub fn set_hardware_domain(&self, kind: GuestKind) {
        assert!(kind != GuestKind::Hvm, "the hardware domain is PV or PVH");
        self.lock().hwdom = kind;
    }

    /// Create a guest with `vcpus` vCPUs and `ram_bytes` of RAM at guest-physical 0.
    pub fn create_domain(&self, kind: GuestKind, vcpus: u32, ram_bytes: usize) -> DomId {
        let mut s = self.lock();
        let domid = s.next_domid;
        s.next_domid += 1;
        let lapics = (0..vcpus).map(|v| Lapic { apic_id: v * 2, ..Default::default() }).collect();
        s.domains.insert(
            domid,
            Domain {
                kind,
                vcpus,
                crashed: None,
                dying: false,
                iomem: RangeSet::default(),
                ioports: RangeSet::default(),
                irqs: BTreeSet::new(),
                gsis: BTreeSet::new(),
                p2m_mmio: BTreeMap::new(),
                ioport_map: BTreeMap::new(),
                servers: BTreeMap::new(),
                next_server: 0,
                pirqs: BTreeMap::new(),
                next_pirq: 55,
                reserved_pirqs: BTreeSet::new(),
                evtchn_pirqs: BTreeSet::new(),
                ioapic: BTreeMap::new(),
                ram: vec![0; ram_bytes],
                lapics,
                cf8: 0,
                amd_cf8_ext: false,
                msixtbl: BTreeMap::new(),
                assigned: BTreeSet::new(),
                ports: BTreeMap::new(),
                next_port: 1,
            },
        );
        domid
    }

    /// Let the domain's CF8/CFC accesses reach extended config space through AMD's CF8
    /// format (bits 27:24 = register bits 11:8), as Xen does for AMD guests on hosts with
    /// NB_CFG's CF8 extension enabled.
    pub fn set_amd_cf8_ext(&self, domid: DomId, on: bool) {
        if let Some(d) = self.lock().domains.get_mut(&domid) {
            d.amd_cf8_ext = on;
        }
    }

    /// Mark a domain dying (as `xl destroy` would).
    pub fn destroy_domain(&self, domid: DomId) {
        if let Some(d) = self.lock().domains.get_mut(&domid) {
            d.dying = true;
        }
        self.inner.cv.notify_all();
    }

    /// Plug a physical device into the machine.
    pub fn add_device(&self, dev: Arc<dyn MachineDevice>) {
        self.lock().devices.insert(dev.sbdf(), dev);
    }

    /// The toolstack's part of `xl pci-attach`: assign the device and grant the guest
    /// access to its BARs (what libxl does from sysfs `resource`).
    pub fn assign_device(&self, domid: DomId, sbdf: Sbdf) -> XenResult<()> {
        let mut s = self.lock();
        let dev = s.devices.get(&sbdf).cloned().ok_or(XenError::new("assign_device", domid, Errno::ENODEV))?;
        if s.domains.values().any(|d| d.assigned.contains(&sbdf)) {
            return err("assign_device", domid, Errno::EBUSY);
        }
        let d = s.domains.get_mut(&domid).ok_or(XenError::new("assign_device", domid, Errno::ESRCH))?;
        d.assigned.insert(sbdf);
        for bar in dev.machine_bars() {
            if bar.io {
                d.ioports.add(bar.base, bar.base + bar.size - 1);
            } else {
                d.iomem.add(bar.base >> PAGE_SHIFT, (bar.base + bar.size - 1) >> PAGE_SHIFT);
            }
        }
        Ok(())
    }

    /// A new device-model handle (one xenpt process).
    pub fn xen(&self) -> SimXen {
        let (tx, rx) = UnixDatagram::pair().expect("socketpair for the simulated event channel");
        rx.set_nonblocking(true).expect("nonblocking event channel");
        let mut s = self.lock();
        let id = s.next_dm;
        s.next_dm += 1;
        s.dms.insert(id, DmEndpoint { tx, ports: BTreeMap::new(), next_local: 1 });
        SimXen { sim: self.clone(), dm: id, rx }
    }

    pub fn guest(&self, domid: DomId) -> guest::SimGuest {
        guest::SimGuest::new(self.clone(), domid)
    }

    /// Every operation recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    /// The operation kinds recorded since index `from`, successful or not.
    pub fn op_kinds_since(&self, from: usize) -> Vec<&'static str> {
        self.lock().ops[from..].iter().map(|o| o.kind).collect()
    }

    pub fn op_count(&self) -> usize {
        self.lock().ops.len()
    }

    /// Protocol violations xenpt committed (things real Xen would warn about or fix up).
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub fn dropped_irqs(&self) -> Vec<String> {
        self.lock().dropped_irqs.clone()
    }

    /// Make the `n`th call (1 = the next one) of operation `kind` fail with `errno`.
    pub fn fail_nth(&self, kind: &'static str, n: u64, errno: Errno) {
        assert!(n >= 1);
        self.lock().faults.push(Fault { kind, countdown: n, errno });
    }

    pub fn crashed(&self, domid: DomId) -> Option<String> {
        self.lock().domains.get(&domid).and_then(|d| d.crashed.clone())
    }

    /// Direct MMIO mappings of a domain: (gfn, mfn) pairs.
    pub fn p2m_mmio(&self, domid: DomId) -> Vec<(u64, u64)> {
        self.lock().domains.get(&domid).map(|d| d.p2m_mmio.iter().map(|(&g, &m)| (g, m)).collect()).unwrap_or_default()
    }

    /// Port mappings of a domain: (gport, mport, nr).
    pub fn ioport_map(&self, domid: DomId) -> Vec<(u32, u32, u32)> {
        self.lock()
            .domains
            .get(&domid)
            .map(|d| d.ioport_map.iter().map(|(&g, &(m, n))| (g, m, n)).collect())
            .unwrap_or_default()
    }

    /// Pirqs mapped in a domain: (pirq, bound).
    /// What the domain may use besides its own memory: (devices assigned, irq permissions,
    /// gsi permissions), for checking that --assign undoes exactly what it granted.
    pub fn grants(&self, domid: DomId) -> (Vec<Sbdf>, Vec<u32>, Vec<u32>) {
        let s = self.lock();
        match s.domains.get(&domid) {
            Some(d) => (
                d.assigned.iter().copied().collect(),
                d.irqs.iter().copied().collect(),
                d.gsis.iter().copied().collect(),
            ),
            None => Default::default(),
        }
    }

    pub fn pirqs(&self, domid: DomId) -> Vec<(u32, bool)> {
        self.lock()
            .domains
            .get(&domid)
            .map(|d| d.pirqs.iter().map(|(&p, q)| (p, q.bound())).collect())
            .unwrap_or_default()
    }

    /// Guest mask state of a mapped pirq as Xen holds it.
    pub fn pirq_guest_masked(&self, domid: DomId, pirq: u32) -> Option<bool> {
        self.lock().domains.get(&domid)?.pirqs.get(&pirq).map(|p| p.guest_masked)
    }

    /// (gvec, gflags) of a bound MSI pirq.
    pub fn pirq_binding(&self, domid: DomId, pirq: u32) -> Option<(u8, u32)> {
        let s = self.lock();
        let b = s.domains.get(&domid)?.pirqs.get(&pirq)?.msi?;
        Some((b.gvec, b.gflags))
    }

    /// The gtable Xen's msixtbl holds for a device in a domain.
    pub fn msixtbl_gtable(&self, domid: DomId, sbdf: Sbdf) -> Option<u64> {
        self.lock().domains.get(&domid)?.msixtbl.get(&sbdf).map(|t| t.gtable)
    }

    /// Enabled ioreq servers and the ranges they claim.
    pub fn ioreq_ranges(&self, domid: DomId) -> Vec<(IoservId, IoRange)> {
        let s = self.lock();
        let Some(d) = s.domains.get(&domid) else { return vec![] };
        d.servers.iter().flat_map(|(&id, sv)| sv.ranges.iter().map(move |r| (id, *r))).collect()
    }

    pub fn ioreq_server_count(&self, domid: DomId) -> usize {
        self.lock().domains.get(&domid).map(|d| d.servers.len()).unwrap_or(0)
    }

    /// Put ioreq pages in memfds from now on, for device models in other processes.
    pub fn use_memfd_pages(&self) {
        self.lock().memfd_pages = true;
    }

    fn notify_all(&self) {
        self.inner.cv.notify_all();
    }
}

impl State {
    fn check_fault(&mut self, kind: &'static str) -> Option<Errno> {
        let mut hit = None;
        self.faults.retain_mut(|f| {
            if f.kind != kind || hit.is_some() {
                return true;
            }
            f.countdown -= 1;
            if f.countdown == 0 {
                hit = Some(f.errno);
                false
            } else {
                true
            }
        });
        hit
    }

    fn record(&mut self, dm: DmId, kind: &'static str, domid: DomId, detail: String, error: Option<Errno>) {
        self.ops.push(Op { dm, kind, domid, detail, error });
    }

    fn dom(&mut self, op: &'static str, domid: DomId) -> XenResult<&mut Domain> {
        self.domains.get_mut(&domid).ok_or(XenError::new(op, domid, Errno::ESRCH))
    }

    /// A dm_op target: must exist, and be HVM or PVH.
    fn hvm_dom(&mut self, op: &'static str, domid: DomId) -> XenResult<&mut Domain> {
        let d = self.dom(op, domid)?;
        if d.kind == GuestKind::Pv {
            return err(op, domid, Errno::EINVAL);
        }
        Ok(d)
    }

    /// Raise an event on guest port `port` of `domid` towards its device-model peer,
    /// honouring the evtchn driver's mask-on-fire semantics.
    fn fire_to_dm(&mut self, domid: DomId, port: EvtchnPort) {
        let Some(peer) = self.domains.get(&domid).and_then(|d| d.ports.get(&port)).and_then(|p| p.peer) else {
            return; // unbound: the event stays pending in the guest's port, nobody listens
        };
        let (dm, local) = peer;
        if let Some(ep) = self.dms.get_mut(&dm) {
            if let Some(p) = ep.ports.get_mut(&local) {
                if p.masked {
                    p.pending = true;
                } else {
                    p.masked = true;
                    let _ = ep.tx.send(&local.to_ne_bytes());
                }
            }
        }
    }

    /// Release the state lock, then make the device MSI-X mask writes the last change of
    /// pirq state owes (outside the lock: the device may call back into the machine).
    pub(crate) fn unlock_writing_device_masks(mut guard: MutexGuard<'_, State>) {
        let writes = guard.device_mask_writes();
        drop(guard);
        for (dev, entry, masked) in writes {
            dev.xen_set_vector_mask(entry, masked);
        }
    }

    /// The device MSI-X mask writes Xen owes after a change of pirq state: an entry with a
    /// pirq is masked unless it is bound and not guest-masked; an entry whose pirq was
    /// unmapped is masked. Returns the writes (device, entry, masked) to make once the
    /// state lock is released (the device may call back into the machine).
    fn device_mask_writes(&mut self) -> Vec<(Arc<dyn MachineDevice>, u16, bool)> {
        let mut want = BTreeMap::new();
        for d in self.domains.values() {
            for p in d.pirqs.values() {
                if let PirqSource::Msix { sbdf, entry } = p.source {
                    want.insert((sbdf, entry), p.msi.is_none() || p.guest_masked);
                }
            }
        }
        let mut changes: Vec<((Sbdf, u16), bool)> =
            want.iter().filter(|(k, m)| self.device_masks.get(k) != Some(m)).map(|(&k, &m)| (k, m)).collect();
        changes.extend(self.device_masks.iter().filter(|(k, &m)| !m && !want.contains_key(k)).map(|(&k, _)| (k, true)));
        let mut out = Vec::new();
        for ((sbdf, entry), masked) in changes {
            self.device_masks.insert((sbdf, entry), masked);
            if let Some(dev) = self.devices.get(&sbdf) {
                out.push((dev.clone(), entry, masked));
            }
        }
        out
    }

    /// Xen's guest unmask of a pirq (guest_mask_msi_irq(desc, false)): clear the mask and
    /// deliver what arrived while it was masked, if the pirq is bound.
    fn guest_unmask(&mut self, domid: DomId, pirq: u32, cv: &Condvar) {
        let Some(p) = self.domains.get_mut(&domid).and_then(|d| d.pirqs.get_mut(&pirq)) else { return };
        p.guest_masked = false;
        if p.pending && p.msi.is_some() {
            self.deliver_msi(domid, pirq, cv);
        }
    }

    /// Deliver a device's INTx through its bound pirq to the guest GSI Xen derives from the
    /// guest slot and pin (hvm_pci_intx_gsi), then through the guest's IO-APIC route.
    fn deliver_intx(&mut self, domid: DomId, gsi: u32, cv: &Condvar) {
        let Some(d) = self.domains.get_mut(&domid) else { return };
        let bound = d.pirqs.values().find(|p| p.source == PirqSource::Gsi(gsi)).and_then(|p| p.intx);
        let Some((_bus, dev, intx)) = bound else {
            self.dropped_irqs.push(format!("d{domid} GSI {gsi}: INTx not bound"));
            return;
        };
        let guest_gsi = (((dev as u32) << 2) + ((dev as u32) >> 3) + intx as u32) % 32 + 16;
        match d.ioapic.get(&guest_gsi).copied() {
            Some(vector) => {
                if let Some(l) = d.lapics.first_mut() {
                    l.irr.push_back(vector);
                    l.delivered += 1;
                    cv.notify_all();
                }
            }
            None => self.dropped_irqs.push(format!("d{domid}: guest GSI {guest_gsi} not routed in the IO-APIC")),
        }
    }

    /// Deliver an MSI to the guest's local APIC from the binding's gvec/gflags.
    fn deliver_msi(&mut self, domid: DomId, pirq: u32, cv: &Condvar) {
        let Some(d) = self.domains.get_mut(&domid) else { return };
        let Some(p) = d.pirqs.get_mut(&pirq) else { return };
        if p.guest_masked {
            // Masked (which is also what an unbind leaves): the device's pending bit holds it.
            p.pending = true;
            return;
        }
        let Some(b) = p.msi else {
            self.dropped_irqs.push(format!("d{domid} pirq {pirq}: not bound"));
            return;
        };
        p.pending = false;
        let deliv = (b.gflags & gflags::DELIV_MASK) >> 12;
        if deliv > 1 {
            // vmsi_deliver only supports Fixed and Lowest Priority.
            self.dropped_irqs.push(format!("d{domid} pirq {pirq}: delivery mode {deliv} unsupported"));
            return;
        }
        if b.gvec == 0 {
            // A PV-on-HVM guest asked for this pirq in its message and bound it to an event
            // channel: Xen sends the pirq's event instead of an APIC vector.
            if !d.evtchn_pirqs.contains(&pirq) {
                self.dropped_irqs.push(format!("d{domid} pirq {pirq}: gvec 0 but no event channel bound to it"));
                return;
            }
            if let Some(l) = d.lapics.first_mut() {
                l.pirq_events.push_back(pirq);
                l.delivered += 1;
                cv.notify_all();
            }
            return;
        }
        let dest = b.gflags & gflags::DEST_ID_MASK;
        let logical = b.gflags & gflags::DM_MASK != 0;
        let target = if logical {
            d.lapics.iter().position(|l| dest & (1 << (l.apic_id / 2).min(7)) != 0)
        } else {
            d.lapics.iter().position(|l| l.apic_id == dest)
        };
        match target {
            Some(v) => {
                let l = &mut d.lapics[v];
                l.irr.push_back(b.gvec);
                l.delivered += 1;
                cv.notify_all();
            }
            None => self.dropped_irqs.push(format!("d{domid} pirq {pirq}: no vCPU with APIC ID {dest}")),
        }
    }
}

/// One device model's handle on the simulated Xen: implements [`Xen`].
pub struct SimXen {
    sim: Sim,
    dm: DmId,
    rx: UnixDatagram,
}

impl SimXen {
    pub fn sim(&self) -> &Sim {
        &self.sim
    }
    pub fn dm_id(&self) -> DmId {
        self.dm
    }
    /// The socket this device model's event-channel notifications arrive on (what
    /// [`Xen::evtchn_fd`] returns), for passing to a device model in another process.
    pub fn evtchn_socket(&self) -> &UnixDatagram {
        &self.rx
    }

    /// Run one operation: fault injection, the operation itself, and the record.
    fn op<T>(
        &self,
        kind: &'static str,
        domid: DomId,
        detail: String,
        f: impl FnOnce(&mut State, DmId) -> Result<T, Errno>,
    ) -> XenResult<T> {
        let mut s = self.sim.lock();
        let res = match s.check_fault(kind) {
            Some(e) => Err(e),
            None => f(&mut s, self.dm),
        };
        s.record(self.dm, kind, domid, detail, res.as_ref().err().copied());
        State::unlock_writing_device_masks(s);
        self.sim.notify_all();
        res.map_err(|e| XenError::new(kind, domid, e))
    }
}

impl Drop for SimXen {
    /// Closing the evtchn fd unbinds every port; the process going away leaves its ioreq
    /// servers in place (Xen does not know the process died), which is why xenpt tears
    /// down explicitly.
    fn drop(&mut self) {
        let mut s = self.sim.lock();
        if let Some(ep) = s.dms.remove(&self.dm) {
            for p in ep.ports.values() {
                if let Some(gp) = s.domains.get_mut(&p.domid).and_then(|d| d.ports.get_mut(&p.remote)) {
                    gp.peer = None;
                }
            }
        }
    }
}

fn range_detail(r: &IoRange) -> String {
    format!("{:?} {:#x}-{:#x}", r.kind, r.start, r.end)
}

impl Xen for SimXen {
    fn version(&mut self) -> XenResult<XenVersion> {
        self.op("version", 0, String::new(), |s, _| Ok(s.version))
    }

    fn domain_info(&mut self, domid: DomId) -> XenResult<DomainInfo> {
        self.op("domain_info", domid, String::new(), |s, _| {
            if domid == 0 {
                let flags = if s.hwdom == GuestKind::Pvh { 0x001 } else { 0 };
                return Ok(DomainInfo {
                    domid,
                    kind: s.hwdom,
                    vcpus: 1,
                    dying: false,
                    shutdown: false,
                    emulation_flags: Some(flags),
                });
            }
            let d = s.domains.get(&domid).ok_or(Errno::ESRCH)?;
            let flags = match d.kind {
                GuestKind::Hvm => 0x1ff,
                GuestKind::Pvh => 0x001,
                GuestKind::Pv => 0,
            };
            Ok(DomainInfo {
                domid,
                kind: d.kind,
                vcpus: d.vcpus,
                dying: d.dying,
                shutdown: d.crashed.is_some(),
                emulation_flags: Some(flags),
            })
        })
    }

    fn create_ioreq_server(&mut self, domid: DomId, buf: BufIoreq) -> XenResult<IoservId> {
        self.op("create_ioreq_server", domid, format!("{buf:?}"), |s, dm| {
            let d = s.hvm_dom("create_ioreq_server", domid).map_err(|e| e.errno)?;
            if d.servers.len() >= MAX_NR_IOREQ_SERVERS {
                return Err(Errno::ENOSPC);
            }
            let id = d.next_server;
            d.next_server += 1;
            let vcpu_ports = (0..d.vcpus).map(|_| d.alloc_port()).collect();
            let buf_port = (buf != BufIoreq::Off).then(|| d.alloc_port());
            d.servers.insert(
                id,
                IoreqServer { dm, enabled: false, buf, ranges: Vec::new(), pages: None, vcpu_ports, buf_port },
            );
            Ok(id)
        })
    }

    fn map_ioreq_pages(&mut self, domid: DomId, id: IoservId) -> XenResult<IoreqPages> {
        self.op("map_ioreq_pages", domid, format!("server {id}"), |s, dm| {
            let memfd = s.memfd_pages;
            let d = s.hvm_dom("map_ioreq_pages", domid).map_err(|e| e.errno)?;
            if d.vcpus > MAX_VCPUS_PER_PAGE {
                return Err(Errno::EINVAL);
            }
            let sv = d.servers.get_mut(&id).ok_or(Errno::ENOENT)?;
            if sv.dm != dm {
                return Err(Errno::EPERM);
            }
            if sv.pages.is_none() {
                let page =
                    || if memfd { SharedPage::memfd().map_err(|_| Errno::ENOMEM) } else { Ok(SharedPage::heap()) };
                let buf = if sv.buf != BufIoreq::Off { Some(page()?) } else { None };
                sv.pages = Some((page()?, buf));
            }
            let (io, buf) = sv.pages.clone().ok_or(Errno::ENOENT)?;
            Ok(IoreqPages { ioreq: io, bufioreq: buf, bufioreq_port: sv.buf_port })
        })
    }

    fn map_io_range(&mut self, domid: DomId, id: IoservId, range: IoRange) -> XenResult<()> {
        self.op("map_io_range", domid, range_detail(&range), |s, dm| {
            let d = s.hvm_dom("map_io_range", domid).map_err(|e| e.errno)?;
            let sv = d.servers.get_mut(&id).ok_or(Errno::ENOENT)?;
            if sv.dm != dm {
                return Err(Errno::EPERM);
            }
            if range.start > range.end {
                return Err(Errno::EINVAL);
            }
            let same: Vec<_> = sv.ranges.iter().filter(|r| r.kind == range.kind).collect();
            if same.iter().any(|r| r.start <= range.end && range.start <= r.end) {
                return Err(Errno::EEXIST);
            }
            if same.len() >= MAX_NR_IO_RANGES {
                return Err(Errno::ENOSPC);
            }
            sv.ranges.push(range);
            Ok(())
        })
    }

    fn unmap_io_range(&mut self, domid: DomId, id: IoservId, range: IoRange) -> XenResult<()> {
        self.op("unmap_io_range", domid, range_detail(&range), |s, dm| {
            let d = s.hvm_dom("unmap_io_range", domid).map_err(|e| e.errno)?;
            let sv = d.servers.get_mut(&id).ok_or(Errno::ENOENT)?;
            if sv.dm != dm {
                return Err(Errno::EPERM);
            }
            let before = sv.ranges.len();
            sv.ranges.retain(|r| *r != range);
            if sv.ranges.len() == before {
                return Err(Errno::ENOENT);
            }
            Ok(())
        })
    }

    fn set_ioreq_server_state(&mut self, domid: DomId, id: IoservId, enabled: bool) -> XenResult<()> {
        self.op("set_ioreq_server_state", domid, format!("server {id} enabled={enabled}"), |s, dm| {
            let d = s.hvm_dom("set_ioreq_server_state", domid).map_err(|e| e.errno)?;
            let sv = d.servers.get_mut(&id).ok_or(Errno::ENOENT)?;
            if sv.dm != dm {
                return Err(Errno::EPERM);
            }
            if enabled && !sv.enabled {
                if let Some((page, _)) = &sv.pages {
                    for (v, &port) in sv.vcpu_ports.iter().enumerate() {
                        crate::ioreq::slot::Slot::new(page, v as u32).set_vp_eport(port);
                    }
                }
            }
            sv.enabled = enabled;
            Ok(())
        })
    }

    fn destroy_ioreq_server(&mut self, domid: DomId, id: IoservId) -> XenResult<()> {
        self.op("destroy_ioreq_server", domid, format!("server {id}"), |s, dm| {
            let d = s.hvm_dom("destroy_ioreq_server", domid).map_err(|e| e.errno)?;
            let sv = d.servers.get(&id).ok_or(Errno::ENOENT)?;
            if sv.dm != dm {
                return Err(Errno::EPERM);
            }
            let sv = d.servers.remove(&id).ok_or(Errno::ENOENT)?;
            for p in sv.vcpu_ports.iter().chain(sv.buf_port.iter()) {
                d.ports.remove(p);
            }
            Ok(())
        })
    }

    fn evtchn_fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    fn evtchn_bind_interdomain(&mut self, domid: DomId, remote_port: EvtchnPort) -> XenResult<EvtchnPort> {
        self.op("evtchn_bind_interdomain", domid, format!("remote port {remote_port}"), |s, dm| {
            let gp = s.domains.get_mut(&domid).ok_or(Errno::ESRCH)?.ports.get_mut(&remote_port).ok_or(Errno::EINVAL)?;
            if gp.peer.is_some() {
                return Err(Errno::EINVAL);
            }
            let ep = s.dms.get_mut(&dm).ok_or(Errno::EINVAL)?;
            let local = ep.next_local;
            ep.next_local += 1;
            gp.peer = Some((dm, local));
            // Xen marks a freshly bound port pending ("we may have lost notifications").
            ep.ports.insert(local, DmPort { domid, remote: remote_port, masked: true, pending: false });
            let _ = ep.tx.send(&local.to_ne_bytes());
            Ok(local)
        })
    }

    fn evtchn_unbind(&mut self, port: EvtchnPort) -> XenResult<()> {
        self.op("evtchn_unbind", 0, format!("port {port}"), |s, dm| {
            let p = s.dms.get_mut(&dm).ok_or(Errno::EINVAL)?.ports.remove(&port).ok_or(Errno::ENOTCONN)?;
            if let Some(gp) = s.domains.get_mut(&p.domid).and_then(|d| d.ports.get_mut(&p.remote)) {
                gp.peer = None;
            }
            Ok(())
        })
    }

    fn evtchn_notify(&mut self, port: EvtchnPort) -> XenResult<()> {
        // Not recorded: one per guest access would drown the record.
        let mut s = self.sim.lock();
        let p = s.dms.get(&self.dm).and_then(|ep| ep.ports.get(&port)).map(|p| (p.domid, p.remote));
        let Some((domid, remote)) = p else {
            return err("evtchn_notify", 0, Errno::ENOTCONN);
        };
        if let Some(gp) = s.domains.get_mut(&domid).and_then(|d| d.ports.get_mut(&remote)) {
            gp.notified += 1;
        }
        drop(s);
        self.sim.notify_all();
        Ok(())
    }

    /// Read to EAGAIN whatever `readiness` says (its fd carries one port per datagram).
    fn evtchn_pending(&mut self, out: &mut Vec<EvtchnPort>, _readiness: Readiness) -> XenResult<bool> {
        let mut buf = [0u8; 4];
        loop {
            match self.rx.recv(&mut buf) {
                Ok(4) => out.push(u32::from_ne_bytes(buf)),
                Ok(_) => return err("evtchn_pending", 0, Errno::EINVAL),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return err("evtchn_pending", 0, Errno(e.raw_os_error().unwrap_or(libc::EIO))),
            }
        }
    }

    fn evtchn_unmask(&mut self, port: EvtchnPort) -> XenResult<()> {
        let mut s = self.sim.lock();
        let Some(ep) = s.dms.get_mut(&self.dm) else { return Ok(()) };
        // Unknown ports are ignored, as by the evtchn driver's write().
        if let Some(p) = ep.ports.get_mut(&port) {
            if p.pending {
                p.pending = false;
                p.masked = true;
                let _ = ep.tx.send(&port.to_ne_bytes());
            } else {
                p.masked = false;
            }
        }
        Ok(())
    }

    fn memory_mapping(&mut self, domid: DomId, gfn: u64, mfn: u64, nr: u64, add: bool) -> XenResult<u64> {
        let detail = format!("gfn {gfn:#x} mfn {mfn:#x} nr {nr} {}", if add { "add" } else { "remove" });
        let cv = &self.sim.inner.cv;
        self.op("memory_mapping", domid, detail, |s, _| {
            let d = s.dom("memory_mapping", domid).map_err(|e| e.errno)?;
            if nr == 0 || gfn.checked_add(nr).is_none() || mfn.checked_add(nr).is_none() || mfn + nr > (1 << 40) {
                return Err(Errno::EINVAL);
            }
            if d.kind == GuestKind::Pv {
                return Ok(nr); // a PV target is a silent no-op
            }
            if add && !d.iomem.contains_range(mfn, mfn + nr - 1) {
                return Err(Errno::EPERM);
            }
            let todo = nr.min(MEMORY_MAPPING_BATCH);
            let mut warnings = Vec::new();
            let mut result = Ok(todo);
            for i in 0..todo {
                let (g, m) = (gfn + i, mfn + i);
                match (add, d.p2m_mmio.get(&g).copied()) {
                    (true, Some(old)) if old != m => {
                        d.crashed = Some(format!("GFN {g:#x} ({old:#x}) -> ({m:#x}) not permitted"));
                        cv.notify_all();
                        result = Err(Errno::EPERM);
                        break;
                    }
                    (true, _) => {
                        d.p2m_mmio.insert(g, m);
                    }
                    (false, Some(old)) => {
                        // clear_mmio_p2m_entry: a different mfn is warned about, and the
                        // entry removed all the same.
                        if old != m {
                            warnings.push(format!("d{domid}: no mapping between mfn {m:#x} and gfn {g:#x}"));
                        }
                        d.p2m_mmio.remove(&g);
                    }
                    (false, None) => {
                        // "gfn_to_mfn failed": nothing is mapped there.
                        result = if i == 0 { Err(Errno::EINVAL) } else { Ok(i) };
                        break;
                    }
                }
            }
            s.violations.extend(warnings);
            result
        })
    }

    fn ioport_mapping(&mut self, domid: DomId, gport: u32, mport: u32, nr: u32, add: bool) -> XenResult<()> {
        let detail = format!("gport {gport:#x} mport {mport:#x} nr {nr} {}", if add { "add" } else { "remove" });
        self.op("ioport_mapping", domid, detail, |s, _| {
            let d = s.dom("ioport_mapping", domid).map_err(|e| e.errno)?;
            if d.kind == GuestKind::Pv {
                return Err(Errno::EOPNOTSUPP);
            }
            if nr == 0 || gport as u64 + nr as u64 > 0x10000 || mport as u64 + nr as u64 > 0x10000 {
                return Err(Errno::EINVAL);
            }
            if add {
                if !d.ioports.contains_range(mport as u64, (mport + nr - 1) as u64) {
                    return Err(Errno::EPERM);
                }
                d.ioport_map.retain(|_, &mut (m, _)| m != mport);
                d.ioport_map.insert(gport, (mport, nr));
            } else {
                let key = d.ioport_map.iter().find(|(_, &(m, n))| m == mport && n == nr).map(|(&g, _)| g);
                d.ioport_map.remove(&key.ok_or(Errno::ENOENT)?);
            }
            Ok(())
        })
    }

    fn map_pirq(&mut self, domid: DomId, req: PirqMap) -> XenResult<PirqMapped> {
        self.op("map_pirq", domid, req.to_string(), |s, _| {
            let known = |sbdf: &Sbdf| s.devices.contains_key(sbdf);
            match req {
                PirqMap::Msi { sbdf, .. } | PirqMap::Msix { sbdf, .. } | PirqMap::MultiMsi { sbdf, .. }
                    if !known(&sbdf) =>
                {
                    return Err(Errno::ENODEV)
                }
                _ => {}
            }
            if let PirqMap::Msix { sbdf, table_base, .. } = req {
                let dev = s.devices.get(&sbdf).cloned().ok_or(Errno::ENODEV)?;
                if table_base == 0 {
                    return Err(Errno::EINVAL);
                }
                if !dev.machine_bars().iter().any(|b| !b.io && b.base == table_base) {
                    s.violations.push(format!("map_pirq: MSI-X table base {table_base:#x} matches no BAR of {sbdf}"));
                }
            }
            let d = s.dom("map_pirq", domid).map_err(|e| e.errno)?;
            let owned = |sbdf: Sbdf| d.assigned.contains(&sbdf);
            let (sources, wanted): (Vec<PirqSource>, Option<u32>) = match req {
                PirqMap::Msi { sbdf, pirq } => {
                    if !owned(sbdf) {
                        return Err(Errno::EINVAL);
                    }
                    (vec![PirqSource::Msi { sbdf, index: 0 }], pirq)
                }
                PirqMap::Msix { sbdf, entry, pirq, .. } => {
                    if !owned(sbdf) {
                        return Err(Errno::EINVAL);
                    }
                    (vec![PirqSource::Msix { sbdf, entry }], pirq)
                }
                PirqMap::MultiMsi { sbdf, count } => {
                    if !owned(sbdf) || !count.is_power_of_two() || count > 32 {
                        return Err(Errno::EINVAL);
                    }
                    ((0..count).map(|index| PirqSource::Msi { sbdf, index }).collect(), None)
                }
                PirqMap::Gsi { gsi, pirq } => (vec![PirqSource::Gsi(gsi)], pirq.or(Some(gsi))),
            };
            if d.pirqs.values().any(|p| sources.contains(&p.source)) {
                return Err(Errno::EBUSY);
            }
            let first = match wanted {
                Some(p) if d.pirqs.contains_key(&p) => return Err(Errno::EBUSY),
                Some(p) => p,
                None => {
                    let mut p = d.next_pirq;
                    while (p..p + sources.len() as u32)
                        .any(|q| d.pirqs.contains_key(&q) || d.reserved_pirqs.contains(&q))
                    {
                        p += 1;
                    }
                    d.next_pirq = p + sources.len() as u32;
                    p
                }
            };
            for (i, src) in sources.iter().enumerate() {
                d.reserved_pirqs.remove(&(first + i as u32));
                let msix = matches!(src, PirqSource::Msix { .. });
                d.pirqs.insert(
                    first + i as u32,
                    // A new MSI-X vector starts masked, an MSI vector unmasked (msi.c).
                    Pirq { source: *src, msi: None, intx: None, guest_masked: msix, pending: false },
                );
            }
            Ok(PirqMapped { pirq: first, count: sources.len() as u32 })
        })
    }

    fn unmap_pirq(&mut self, domid: DomId, pirq: u32) -> XenResult<()> {
        self.op("unmap_pirq", domid, format!("pirq {pirq}"), |s, _| {
            let d = s.dom("unmap_pirq", domid).map_err(|e| e.errno)?;
            let p = d.pirqs.get(&pirq).ok_or(Errno::EINVAL)?;
            let bound = p.bound();
            let src = p.source;
            d.pirqs.remove(&pirq);
            if bound {
                if let PirqSource::Msix { sbdf, .. } = src {
                    if let Some(t) = d.msixtbl.get_mut(&sbdf) {
                        t.refs -= 1;
                        if t.refs == 0 {
                            d.msixtbl.remove(&sbdf);
                        }
                    }
                }
                s.violations.push(format!("d{domid}: unmap_pirq of pirq {pirq} while still bound (Xen force-unbinds)"));
            }
            Ok(())
        })
    }

    fn bind_pt_irq(&mut self, domid: DomId, bind: PtIrq) -> XenResult<()> {
        let cv = &self.sim.inner.cv;
        self.op("bind_pt_irq", domid, bind.to_string(), |s, _| {
            let entries = match bind {
                PtIrq::Msi { pirq, .. } => {
                    let src = s.domains.get(&domid).and_then(|d| d.pirqs.get(&pirq)).map(|p| p.source);
                    match src {
                        Some(PirqSource::Msix { sbdf, .. }) => {
                            s.devices.get(&sbdf).map(|d| d.msix_entries()).unwrap_or(0)
                        }
                        _ => 0,
                    }
                }
                _ => 0,
            };
            let d = s.hvm_dom("bind_pt_irq", domid).map_err(|e| e.errno)?;
            let mut deliver = None;
            match bind {
                PtIrq::Msi { pirq, gvec, gflags: gf, gtable } => {
                    // pt_irq_create_bind: an unmapped pirq fails the irq_access_permitted check.
                    let p = d.pirqs.get_mut(&pirq).ok_or(Errno::EPERM)?;
                    let sbdf = match p.source {
                        PirqSource::Msi { sbdf, .. } | PirqSource::Msix { sbdf, .. } => sbdf,
                        PirqSource::Gsi(_) => return Err(Errno::EINVAL),
                    };
                    let first = p.msi.is_none();
                    p.msi = Some(MsiBinding { gvec, gflags: gf & !gflags::UNMASKED });
                    if gf & gflags::UNMASKED != 0 {
                        p.guest_masked = false;
                        if p.pending {
                            deliver = Some(pirq);
                        }
                    }
                    if first && gtable != 0 {
                        let t = d.msixtbl.entry(sbdf).or_insert(MsixTbl {
                            gtable,
                            entries,
                            refs: 0,
                            changed: BTreeSet::new(),
                        });
                        t.refs += 1;
                    }
                }
                PtIrq::PciIntx { pirq, bus, device, intx } => {
                    if d.kind != GuestKind::Hvm {
                        return Err(Errno::EINVAL); // no vIO-APIC to route to
                    }
                    let p = d.pirqs.get_mut(&pirq).ok_or(Errno::EPERM)?;
                    if !matches!(p.source, PirqSource::Gsi(_)) || device > 31 || intx > 3 {
                        return Err(Errno::EINVAL);
                    }
                    p.intx = Some((bus, device, intx));
                }
            }
            if let Some(pirq) = deliver {
                s.deliver_msi(domid, pirq, cv);
            }
            Ok(())
        })
    }

    fn unbind_pt_irq(&mut self, domid: DomId, bind: PtIrq) -> XenResult<()> {
        self.op("unbind_pt_irq", domid, bind.to_string(), |s, _| {
            let d = s.hvm_dom("unbind_pt_irq", domid).map_err(|e| e.errno)?;
            let p = d.pirqs.get_mut(&bind.pirq()).ok_or(Errno::EPERM)?;
            match bind {
                PtIrq::Msi { .. } => {
                    if p.msi.take().is_none() {
                        return Err(Errno::EINVAL);
                    }
                    p.guest_masked = true; // Xen leaves an unbound vector guest-masked
                    if let PirqSource::Msix { sbdf, .. } = p.source {
                        if let Some(t) = d.msixtbl.get_mut(&sbdf) {
                            t.refs -= 1;
                            if t.refs == 0 {
                                d.msixtbl.remove(&sbdf);
                            }
                        }
                    }
                }
                PtIrq::PciIntx { .. } => {
                    if p.intx.take().is_none() {
                        return Err(Errno::EINVAL);
                    }
                }
            }
            Ok(())
        })
    }

    fn iomem_permission(&mut self, domid: DomId, first_mfn: u64, nr: u64, allow: bool) -> XenResult<()> {
        self.op("iomem_permission", domid, format!("mfn {first_mfn:#x} nr {nr} allow={allow}"), |s, _| {
            let d = s.dom("iomem_permission", domid).map_err(|e| e.errno)?;
            let end = first_mfn.checked_add(nr).filter(|_| nr > 0).ok_or(Errno::EINVAL)? - 1;
            if allow {
                d.iomem.add(first_mfn, end);
            } else {
                d.iomem.remove(first_mfn, end);
            }
            Ok(())
        })
    }

    fn ioport_permission(&mut self, domid: DomId, first_port: u32, nr: u32, allow: bool) -> XenResult<()> {
        self.op("ioport_permission", domid, format!("port {first_port:#x} nr {nr} allow={allow}"), |s, _| {
            let d = s.dom("ioport_permission", domid).map_err(|e| e.errno)?;
            let end = first_port as u64 + nr as u64;
            if nr == 0 || end > 0x10000 {
                return Err(Errno::EINVAL);
            }
            if allow {
                d.ioports.add(first_port as u64, end - 1);
            } else {
                d.ioports.remove(first_port as u64, end - 1);
            }
            Ok(())
        })
    }

    fn irq_permission(&mut self, domid: DomId, pirq: u32, allow: bool) -> XenResult<()> {
        self.op("irq_permission", domid, format!("pirq {pirq} allow={allow}"), |s, _| {
            let d = s.dom("irq_permission", domid).map_err(|e| e.errno)?;
            if allow {
                d.irqs.insert(pirq);
            } else {
                d.irqs.remove(&pirq);
            }
            Ok(())
        })
    }

    fn assign_device(&mut self, domid: DomId, sbdf: Sbdf, assign: bool) -> XenResult<()> {
        let name = if assign { "assign_device" } else { "deassign_device" };
        self.op(name, domid, format!("{sbdf}"), |s, _| {
            if !s.devices.contains_key(&sbdf) {
                return Err(Errno::ENODEV);
            }
            let owner = s.domains.iter().find(|(_, d)| d.assigned.contains(&sbdf)).map(|(&id, _)| id);
            let d = s.domains.get_mut(&domid).ok_or(Errno::ESRCH)?;
            match (assign, owner) {
                (true, None) => {
                    d.assigned.insert(sbdf);
                    Ok(())
                }
                (true, Some(_)) => Err(Errno::EBUSY),
                (false, Some(o)) if o == domid => {
                    d.assigned.remove(&sbdf);
                    Ok(())
                }
                (false, _) => Err(Errno::EINVAL),
            }
        })
    }

    fn pcidev_gsi(&mut self, sbdf: Sbdf) -> XenResult<u32> {
        self.op("pcidev_get_gsi", 0, format!("{sbdf}"), |s, _| {
            if s.hwdom != GuestKind::Pvh {
                return Err(Errno::ENODEV); // Linux records GSIs only for a PVH dom0
            }
            s.devices.get(&sbdf).and_then(|d| d.gsi()).ok_or(Errno::ENODEV)
        })
    }

    fn gsi_permission(&mut self, domid: DomId, gsi: u32, allow: bool) -> XenResult<()> {
        self.op("gsi_permission", domid, format!("gsi {gsi} allow={allow}"), |s, _| {
            if s.version < (XenVersion { major: 4, minor: 20 }) {
                return Err(Errno::EOPNOTSUPP); // unknown domctl before 4.20
            }
            let d = s.dom("gsi_permission", domid).map_err(|e| e.errno)?;
            if allow {
                d.gsis.insert(gsi);
            } else {
                d.gsis.remove(&gsi);
            }
            Ok(())
        })
    }
}
