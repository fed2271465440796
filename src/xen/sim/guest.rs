//! A guest vCPU's view of the simulated machine: port I/O (with Xen's CF8 latch), MMIO,
//! RAM and the local APIC. Accesses are routed the way Xen routes them: direct-mapped
//! frames go straight to the device, Xen's internal MSI-X table intercept comes next,
//! then ioreq servers by registered range (highest id wins), then the null handler.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::machine::{DeviceBus, DmaError, MachineDevice};
use super::*;
use crate::ioreq::slot::{Ioreq, Slot};

/// How long a vCPU waits for a device model before the simulator calls it hung.
pub const IOREQ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    #[error("domain {0} has crashed: {1}")]
    Crashed(DomId, String),
    #[error("domain {0} does not exist")]
    NoDomain(DomId),
    #[error("vCPU {vcpu} of domain {domid} waited {secs}s for the device model to answer an ioreq")]
    Timeout { domid: DomId, vcpu: u32, secs: u64 },
    #[error("guest RAM access {gpa:#x}+{len:#x} is outside the domain's memory")]
    BadRam { gpa: u64, len: usize },
    #[error("domain {domid} has no vCPU {vcpu}")]
    NoVcpu { domid: DomId, vcpu: u32 },
    #[error("domain {0} has no IO-APIC (PVH)")]
    NoIoapic(DomId),
}

fn v32(v: u64) -> u32 {
    v as u32
}

pub type GuestResult<T> = Result<T, GuestError>;

/// Where Xen sends one guest access.
enum Route {
    Direct { dev: Arc<dyn MachineDevice>, bar: u8, offset: u64 },
    Server { page: SharedPage, port: EvtchnPort },
    Null,
}

/// The device-side bus the simulator hands to a device while it handles an access.
pub(crate) struct SimBus<'a> {
    pub sim: &'a Sim,
    pub sbdf: Sbdf,
}

impl SimBus<'_> {
    fn owner(&self, s: &State) -> Option<DomId> {
        s.domains.iter().find(|(_, d)| d.assigned.contains(&self.sbdf)).map(|(&id, _)| id)
    }

    fn ram_op(&self, gpa: u64, len: usize, f: impl FnOnce(&mut [u8])) -> Result<(), DmaError> {
        let mut s = self.sim.lock();
        let domid = self.owner(&s).ok_or(DmaError::NotAssigned(self.sbdf))?;
        let d = s.domains.get_mut(&domid).ok_or(DmaError::NotAssigned(self.sbdf))?;
        let start = gpa as usize;
        match start.checked_add(len) {
            Some(end) if end <= d.ram.len() => {
                f(&mut d.ram[start..end]);
                Ok(())
            }
            _ => Err(DmaError::IommuFault { sbdf: self.sbdf, gpa, len }),
        }
    }

    fn signal(&self, matches: impl Fn(&PirqSource) -> bool, what: String) {
        let mut s = self.sim.lock();
        let Some(domid) = self.owner(&s) else {
            s.dropped_irqs.push(format!("{}: {what} from an unassigned device", self.sbdf));
            return;
        };
        let pirq = s.domains[&domid].pirqs.iter().find(|(_, p)| matches(&p.source)).map(|(&n, _)| n);
        match pirq {
            Some(p) => s.deliver_msi(domid, p, &self.sim.inner.cv),
            None => s.dropped_irqs.push(format!("{}: {what} has no pirq", self.sbdf)),
        }
    }
}

impl DeviceBus for SimBus<'_> {
    fn dma_read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.ram_op(gpa, buf.len(), |ram| buf.copy_from_slice(ram))
    }
    fn dma_write(&self, gpa: u64, buf: &[u8]) -> Result<(), DmaError> {
        self.ram_op(gpa, buf.len(), |ram| ram.copy_from_slice(buf))
    }
    fn signal_msix(&self, entry: u16) {
        let sbdf = self.sbdf;
        self.signal(|s| *s == PirqSource::Msix { sbdf, entry }, format!("MSI-X entry {entry}"));
    }
    fn signal_intx(&self) {
        let mut s = self.sim.lock();
        let Some(domid) = self.owner(&s) else { return };
        let Some(gsi) = s.devices.get(&self.sbdf).and_then(|d| d.gsi()) else { return };
        s.deliver_intx(domid, gsi, &self.sim.inner.cv);
    }
    fn signal_msi(&self, index: u32) {
        let sbdf = self.sbdf;
        self.signal(|s| *s == PirqSource::Msi { sbdf, index }, format!("MSI vector {index}"));
    }
}

/// A guest's CPU-side view of the machine.
#[derive(Clone)]
pub struct SimGuest {
    sim: Sim,
    domid: DomId,
}

impl SimGuest {
    pub(crate) fn new(sim: Sim, domid: DomId) -> Self {
        SimGuest { sim, domid }
    }

    pub fn domid(&self) -> DomId {
        self.domid
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    fn live<'a>(&self, s: &'a mut State) -> GuestResult<&'a mut Domain> {
        let d = s.domains.get_mut(&self.domid).ok_or(GuestError::NoDomain(self.domid))?;
        if let Some(why) = &d.crashed {
            return Err(GuestError::Crashed(self.domid, why.clone()));
        }
        Ok(d)
    }

    fn server_route(d: &Domain, kind: IoRangeKind, addr: u64, vcpu: u32) -> Route {
        for sv in d.servers.values().rev() {
            if sv.enabled && sv.ranges.iter().any(|r| r.contains(kind, addr)) {
                if let (Some((page, _)), Some(&port)) = (&sv.pages, sv.vcpu_ports.get(vcpu as usize)) {
                    return Route::Server { page: page.clone(), port };
                }
            }
        }
        Route::Null
    }

    /// Send an ioreq to a server and wait for its answer, as Xen's ioreq_send/wait_for_io.
    fn send(&self, vcpu: u32, page: SharedPage, port: EvtchnPort, req: Ioreq) -> GuestResult<u64> {
        let mut s = self.sim.lock();
        let d = self.live(&mut s)?;
        if vcpu >= d.vcpus {
            return Err(GuestError::NoVcpu { domid: self.domid, vcpu });
        }
        let slot = Slot::new(&page, vcpu);
        if slot.vp_eport() != port || !slot.post(&req) {
            let why = format!("ioreq slot of vCPU {vcpu} not free (state {})", slot.state());
            d.crashed = Some(why.clone());
            return Err(GuestError::Crashed(self.domid, why));
        }
        let mut seen = d.ports.get(&port).map(|p| p.notified).unwrap_or(0);
        s.fire_to_dm(self.domid, port);
        let deadline = Instant::now() + IOREQ_TIMEOUT;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(GuestError::Timeout { domid: self.domid, vcpu, secs: IOREQ_TIMEOUT.as_secs() });
            }
            s = self.sim.inner.cv.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            let d = self.live(&mut s)?;
            let n = d.ports.get(&port).map(|p| p.notified).unwrap_or(0);
            if n == seen {
                continue;
            }
            seen = n;
            match slot.state() {
                STATE_IORESP_READY => {
                    let data = slot.collect().unwrap_or(!0);
                    return Ok(data);
                }
                STATE_IOREQ_READY | STATE_IOREQ_INPROCESS => continue,
                st => {
                    let why = format!("bad ioreq state {st} after notification on vCPU {vcpu}");
                    d.crashed = Some(why.clone());
                    return Err(GuestError::Crashed(self.domid, why));
                }
            }
        }
    }

    fn direct_route(s: &State, d: &Domain, gpa: u64) -> Option<Route> {
        let mfn = *d.p2m_mmio.get(&(gpa >> PAGE_SHIFT))?;
        let maddr = (mfn << PAGE_SHIFT) | (gpa & 0xfff);
        for dev in s.devices.values() {
            for b in dev.machine_bars() {
                if !b.io && b.base <= maddr && maddr < b.base + b.size {
                    return Some(Route::Direct { dev: dev.clone(), bar: b.index, offset: maddr - b.base });
                }
            }
        }
        Some(Route::Null) // mapped to nothing: reads float high
    }

    /// The MSI-X entry of a registered table at `gpa` that has a mapped pirq (Xen's
    /// msixtbl claims only entries with an msi_desc): (device, entry, offset in entry, pirq).
    fn msixtbl_entry(d: &Domain, gpa: u64) -> Option<(Sbdf, u16, u64, u32)> {
        let (&sbdf, t) = d.msixtbl.iter().find(|(_, t)| t.gtable <= gpa && gpa < t.gtable + t.entries as u64 * 16)?;
        let off = gpa - t.gtable;
        let entry = (off / 16) as u16;
        let pirq = d.pirqs.iter().find(|(_, p)| p.source == PirqSource::Msix { sbdf, entry }).map(|(&n, _)| n)?;
        Some((sbdf, entry, off % 16, pirq))
    }

    /// Xen's msixtbl (vmsi.c): Some(result) if Xen handled the access itself, None to
    /// forward it to the device model.
    /// The second value is the pirq a write unmasked (its held interrupt is then due).
    fn msixtbl(d: &mut Domain, gpa: u64, size: u32, write: Option<u64>) -> Option<(u64, Option<u32>)> {
        let (sbdf, entry, field, pirq) = Self::msixtbl_entry(d, gpa)?;
        if (size != 4 && size != 8) || field % size as u64 != 0 {
            return None;
        }
        let t = d.msixtbl.get_mut(&sbdf)?;
        match write {
            Some(v) => {
                // The vector-control word this write carries, if any.
                let ctrl = match (field, size) {
                    (12, 4) => Some(v as u32),
                    (8, 8) => Some((v >> 32) as u32),
                    _ => None,
                };
                if field < 12 {
                    t.changed.insert(entry); // address/data: noted, and forwarded
                }
                match ctrl {
                    None => None,
                    // An unmask after a change goes to the device model first; Xen replays
                    // it afterwards (msix_write_completion).
                    Some(c) if c & 1 == 0 && t.changed.contains(&entry) => None,
                    Some(_) if field < 12 => None,
                    Some(c) => {
                        let p = d.pirqs.get_mut(&pirq)?;
                        let unmasked = p.guest_masked && c & 1 == 0;
                        p.guest_masked = c & 1 != 0;
                        Some((0, unmasked.then_some(pirq)))
                    }
                }
            }
            None if field == 12 => Some((d.pirqs[&pirq].guest_masked as u64, None)),
            None => None,
        }
    }

    /// After the device model completed a forwarded write that unmasked an entry, Xen
    /// replays the unmask (msix_write_completion).
    fn msixtbl_replay(&self, gpa: u64, size: u32, value: u64) {
        let mut s = self.sim.lock();
        let Some(d) = s.domains.get_mut(&self.domid) else { return };
        let Some((sbdf, entry, field, pirq)) = Self::msixtbl_entry(d, gpa) else { return };
        let ctrl = match (field, size) {
            (12, 4) => v32(value),
            (8, 8) => v32(value >> 32),
            _ => return,
        };
        if ctrl & 1 != 0 {
            return;
        }
        if let Some(t) = d.msixtbl.get_mut(&sbdf) {
            t.changed.remove(&entry);
        }
        s.guest_unmask(self.domid, pirq, &self.sim.inner.cv);
        State::unlock_writing_device_masks(s);
    }

    pub fn mmio_read(&self, vcpu: u32, gpa: u64, size: u32) -> GuestResult<u64> {
        self.mmio(vcpu, gpa, size, None)
    }

    pub fn mmio_write(&self, vcpu: u32, gpa: u64, size: u32, value: u64) -> GuestResult<()> {
        self.mmio(vcpu, gpa, size, Some(value)).map(|_| ())
    }

    fn mmio(&self, vcpu: u32, gpa: u64, size: u32, write: Option<u64>) -> GuestResult<u64> {
        let route = {
            let mut s = self.sim.lock();
            self.live(&mut s)?;
            let st: &State = &s;
            let d = &st.domains[&self.domid];
            match Self::direct_route(st, d, gpa) {
                Some(r) => r,
                None => {
                    let d = self.live(&mut s)?;
                    if let Some((v, unmasked)) = Self::msixtbl(d, gpa, size, write) {
                        // An unmask Xen handled delivers what the vector held meanwhile.
                        if let Some(pirq) = unmasked {
                            s.guest_unmask(self.domid, pirq, &self.sim.inner.cv);
                        }
                        State::unlock_writing_device_masks(s);
                        return Ok(v);
                    }
                    Self::server_route(d, IoRangeKind::Memory, gpa, vcpu)
                }
            }
        };
        let ones = if size >= 8 { !0 } else { (1u64 << (size * 8)) - 1 };
        match route {
            Route::Direct { dev, bar, offset } => {
                let bus = SimBus { sim: &self.sim, sbdf: dev.sbdf() };
                match write {
                    Some(v) => {
                        dev.bar_write(bar, offset, size, v, &bus);
                        Ok(0)
                    }
                    None => Ok(dev.bar_read(bar, offset, size, &bus)),
                }
            }
            Route::Server { page, port } => {
                let req = Ioreq::simple(IOREQ_TYPE_COPY, gpa, size, write);
                let v = self.send(vcpu, page, port, req)?;
                if let Some(w) = write {
                    self.msixtbl_replay(gpa, size, w);
                }
                Ok(v & ones)
            }
            Route::Null => Ok(if write.is_some() { 0 } else { ones }),
        }
    }

    pub fn pio_read(&self, vcpu: u32, port: u16, size: u32) -> GuestResult<u32> {
        self.pio(vcpu, port, size, None)
    }

    pub fn pio_write(&self, vcpu: u32, port: u16, size: u32, value: u32) -> GuestResult<()> {
        self.pio(vcpu, port, size, Some(value)).map(|_| ())
    }

    fn pio(&self, vcpu: u32, port: u16, size: u32, write: Option<u32>) -> GuestResult<u32> {
        let ones = if size >= 4 { !0u32 } else { (1u32 << (size * 8)) - 1 };
        let (route, req) = {
            let mut s = self.sim.lock();
            let d = self.live(&mut s)?;
            if port == CF8_PORT && size == 4 {
                if let Some(v) = write {
                    d.cf8 = v;
                }
            }
            let cf8 = d.cf8;
            if (CFC_PORT..CFC_PORT + 4).contains(&port) && cf8 & 0x8000_0000 != 0 {
                // Xen rewrites the access into IOREQ_TYPE_PCI_CONFIG for the server that
                // claims the SBDF; otherwise the null handler answers.
                let sbdf = Sbdf::from_u32((cf8 >> 8) & 0xffff);
                let mut reg = (cf8 & 0xfc) as u64 | (port - CFC_PORT) as u64;
                if d.amd_cf8_ext {
                    reg |= ((cf8 >> 24) & 0xf) as u64 * 0x100;
                }
                let addr = (sbdf.to_u32() as u64) << 32 | reg;
                let route = Self::server_route(d, IoRangeKind::Pci, sbdf.to_u32() as u64, vcpu);
                (route, Ioreq::simple(IOREQ_TYPE_PCI_CONFIG, addr, size, write.map(u64::from)))
            } else {
                let direct = d.ioport_map.iter().find(|(&g, &(_, n))| g <= port as u32 && (port as u32) < g + n);
                if direct.is_some() {
                    // Direct port mappings reach hardware; the simulated machine has no
                    // I/O-port devices yet, so they float high like an empty bus.
                    return Ok(if write.is_some() { 0 } else { ones });
                }
                let route = Self::server_route(d, IoRangeKind::Port, port as u64, vcpu);
                (route, Ioreq::simple(IOREQ_TYPE_PIO, port as u64, size, write.map(u64::from)))
            }
        };
        match route {
            Route::Server { page, port } => Ok(self.send(vcpu, page, port, req)? as u32 & ones),
            _ if port == CF8_PORT && size == 4 && write.is_none() => {
                // An HVM guest has QEMU's chipset answer 0xCF8 with the latch; a PVH guest
                // has no chipset: unless a server claims the port, the read floats high.
                let mut s = self.sim.lock();
                let d = self.live(&mut s)?;
                Ok(if d.kind == GuestKind::Hvm { d.cf8 } else { ones })
            }
            _ => Ok(if write.is_some() { 0 } else { ones }),
        }
    }

    /// The CF8 value an OS writes for `reg`: register bits 11:8 go to CF8 bits 27:24 (AMD's
    /// extended format, which Linux uses on AMD hosts; ignored where not enabled).
    fn cf8_for(sbdf: Sbdf, reg: u16) -> u32 {
        0x8000_0000 | ((reg as u32 >> 8) & 0xf) << 24 | (sbdf.to_u32() & 0xffff) << 8 | (reg as u32 & 0xfc)
    }

    /// Config read through CF8/CFC, the way an OS does it.
    pub fn cfg_read(&self, vcpu: u32, sbdf: Sbdf, reg: u16, size: u32) -> GuestResult<u32> {
        self.pio_write(vcpu, CF8_PORT, 4, Self::cf8_for(sbdf, reg))?;
        self.pio_read(vcpu, CFC_PORT + (reg & 3), size)
    }

    /// Config write through CF8/CFC.
    pub fn cfg_write(&self, vcpu: u32, sbdf: Sbdf, reg: u16, size: u32, value: u32) -> GuestResult<()> {
        self.pio_write(vcpu, CF8_PORT, 4, Self::cf8_for(sbdf, reg))?;
        self.pio_write(vcpu, CFC_PORT + (reg & 3), size, value)
    }

    pub fn ram_read(&self, gpa: u64, buf: &mut [u8]) -> GuestResult<()> {
        let s = self.sim.lock();
        let d = s.domains.get(&self.domid).ok_or(GuestError::NoDomain(self.domid))?;
        let start = gpa as usize;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= d.ram.len())
            .ok_or(GuestError::BadRam { gpa, len: buf.len() })?;
        buf.copy_from_slice(&d.ram[start..end]);
        Ok(())
    }

    pub fn ram_write(&self, gpa: u64, buf: &[u8]) -> GuestResult<()> {
        let mut s = self.sim.lock();
        let d = s.domains.get_mut(&self.domid).ok_or(GuestError::NoDomain(self.domid))?;
        let start = gpa as usize;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= d.ram.len())
            .ok_or(GuestError::BadRam { gpa, len: buf.len() })?;
        d.ram[start..end].copy_from_slice(buf);
        Ok(())
    }

    /// APIC ID of a vCPU (Xen gives HVM vCPU n the APIC ID 2n).
    pub fn apic_id(&self, vcpu: u32) -> u32 {
        vcpu * 2
    }

    /// Wait for the next interrupt vector on a vCPU's local APIC and acknowledge it.
    pub fn wait_interrupt(&self, vcpu: u32, timeout: Duration) -> GuestResult<Option<u8>> {
        let deadline = Instant::now() + timeout;
        let mut s = self.sim.lock();
        loop {
            let d = self.live(&mut s)?;
            if let Some(v) = d.lapics.get_mut(vcpu as usize).and_then(|l| l.irr.pop_front()) {
                return Ok(Some(v));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            s = self.sim.inner.cv.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Program the guest's IO-APIC: guest GSI `gsi` raises `vector` on vCPU 0. A PVH guest
    /// has no IO-APIC.
    pub fn ioapic_route(&self, gsi: u32, vector: u8) -> GuestResult<()> {
        let mut s = self.sim.lock();
        let d = self.live(&mut s)?;
        if d.kind != GuestKind::Hvm {
            return Err(GuestError::NoIoapic(self.domid));
        }
        d.ioapic.insert(gsi, vector);
        Ok(())
    }

    /// PHYSDEVOP_get_free_pirq (MAP_PIRQ_TYPE_MSI) as a PV-on-HVM guest calls it: reserve a
    /// pirq number in the domain for the device model to map.
    pub fn get_free_pirq(&self) -> GuestResult<u32> {
        let mut s = self.sim.lock();
        let d = self.live(&mut s)?;
        let mut p = d.next_pirq;
        while d.pirqs.contains_key(&p) || d.reserved_pirqs.contains(&p) {
            p += 1;
        }
        d.next_pirq = p + 1;
        d.reserved_pirqs.insert(p);
        Ok(p)
    }

    /// EVTCHNOP_bind_pirq: the guest takes the pirq's interrupts as event-channel events.
    /// Binding starts the pirq, which unmasks it (Xen's pirq_guest_bind).
    pub fn bind_pirq_evtchn(&self, pirq: u32) -> GuestResult<()> {
        let mut s = self.sim.lock();
        let d = self.live(&mut s)?;
        d.evtchn_pirqs.insert(pirq);
        s.guest_unmask(self.domid, pirq, &self.sim.inner.cv);
        Ok(())
    }

    /// Wait for the next pirq event (PV-on-HVM delivery) and acknowledge it.
    pub fn wait_pirq_event(&self, timeout: Duration) -> GuestResult<Option<u32>> {
        let deadline = Instant::now() + timeout;
        let mut s = self.sim.lock();
        loop {
            let d = self.live(&mut s)?;
            if let Some(p) = d.lapics.first_mut().and_then(|l| l.pirq_events.pop_front()) {
                return Ok(Some(p));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            s = self.sim.inner.cv.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Vectors pending on a vCPU without taking them.
    pub fn pending_vectors(&self, vcpu: u32) -> Vec<u8> {
        let s = self.sim.lock();
        s.domains
            .get(&self.domid)
            .and_then(|d| d.lapics.get(vcpu as usize))
            .map(|l| l.irr.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Interrupts delivered to each vCPU so far.
    pub fn delivered(&self) -> Vec<u64> {
        let s = self.sim.lock();
        s.domains.get(&self.domid).map(|d| d.lapics.iter().map(|l| l.delivered).collect()).unwrap_or_default()
    }

    /// MSI-X entries Xen currently sees as "changed" for a device (test helper).
    pub fn msixtbl_changed(&self, sbdf: Sbdf) -> BTreeSet<u16> {
        let s = self.sim.lock();
        s.domains.get(&self.domid).and_then(|d| d.msixtbl.get(&sbdf)).map(|t| t.changed.clone()).unwrap_or_default()
    }
}
