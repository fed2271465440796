//! The passthrough device model: the guest-visible config space, BAR mappings, MSI-X and
//! pirqs of one host function in one guest. Config-space and MSI-X logic produce effects
//! (plans, [`MsixEffect`]s); this module applies them through the Xen boundary.

use crate::bars::mapper::Mapper;
use crate::bars::BarState;
use crate::config_space::caps::msi as msi_cap;
use crate::config_space::caps::msix::{
    MsixLayout, CONTROL_ENABLE_BIT, CONTROL_MASKALL_BIT, ENTRY_MASKED_BIT, ENTRY_SIZE, ENTRY_VECTOR_CTRL_OFFSET,
};
use crate::config_space::caps::{self, CapLayout};
use crate::config_space::header::{self, HeaderInputs};
use crate::config_space::{ConfigSpace, Hook, Touched};
use crate::host::{BarKind, HostDevice, HostError, HostResources};
use crate::ioreq::{IoHandler, Request};
use crate::log::RateLimit;
use crate::msi::msix::{Msix, MsixEffect};
use crate::msi::plain::{MsiEffect, MsiRegs, MsiState};
use crate::msi::MsiMessage;
use crate::pci::*;
use crate::pirq::{PirqError, PirqTable, Vector};
use crate::xen::{DomId, IoservId, Xen, XenError};
use crate::{guest_warn, Profile};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{sbdf}: header type {header:#04x} is not a type-0 function; bridges and ports cannot be passed through")]
    NotEndpoint { sbdf: Sbdf, header: u8 },
    #[error(
        "{sbdf}: BAR{bar} at {base:#x} is not page aligned; the guest could reach another device's registers. \
         Boot dom0 with pci=resource_alignment={sbdf} (or reassign the BAR) and try again"
    )]
    UnalignedBar { sbdf: Sbdf, bar: u8, base: u64 },
    #[error(
        "{sbdf}: BAR{bar} ({size:#x} bytes at {base:#x}) shares its 4 KiB page with {others}; mapping it would give the \
         guest their registers (XSA-461). Boot dom0 with pci=resource_alignment={sbdf} so the BAR gets a page of its own"
    )]
    SharedPage { sbdf: Sbdf, bar: u8, base: u64, size: u64, others: String },
}

#[derive(Clone, Debug)]
pub struct DeviceOptions {
    pub domid: DomId,
    /// Where the guest sees the function (bus 0).
    pub guest_sbdf: Sbdf,
    pub profile: Profile,
    pub permissive: bool,
    /// Never write to the host function (for `guest-view` of a live device): skips the
    /// start-up preparation of the host command/MSI state.
    pub read_only_host: bool,
}

impl DeviceOptions {
    /// A guest-facing device model as `xenpt run` builds it by default: not permissive,
    /// allowed to prepare the host function.
    pub fn new(domid: DomId, guest_sbdf: Sbdf, profile: Profile) -> Self {
        DeviceOptions { domid, guest_sbdf, profile, permissive: false, read_only_host: false }
    }
}

/// Counters for the console, tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub msix_table_reads: u64,
    pub msix_table_writes: u64,
    pub dropped_mmio_writes: u64,
    pub bad_mmio: u64,
    pub map_errors: u64,
    pub bind_errors: u64,
}

pub struct DeviceModel {
    pub opts: DeviceOptions,
    host: Box<dyn HostDevice>,
    host_sbdf: Sbdf,
    pub resources: HostResources,
    pub cfg: ConfigSpace,
    pub caps: CapLayout,
    pub bars: BarState,
    pub mapper: Mapper,
    pub msix: Option<Msix>,
    pub msi: Option<MsiState>,
    pub pirqs: PirqTable,
    /// Guest address of the MSI-X table the pirqs were bound with.
    bound_gtable: u64,
    /// The INTx line is bound in Xen (map_pirq GSI + bind_pt_irq PCI).
    intx_bound: bool,
    log: RateLimit,
    pub stats: DeviceStats,
    /// The device's name from pci.ids and which database gave it, looked up once, at the
    /// first use (the lookup reads the system database; the IDs never change).
    name: std::cell::OnceCell<(String, String)>,
}

fn le16(c: &[u8], o: u16) -> u16 {
    u16::from_le_bytes([c[o as usize], c[o as usize + 1]])
}

impl DeviceModel {
    /// Build the guest view from the host function. `server` is xenpt's ioreq server, with
    /// which the MSI-X table pages get registered.
    pub fn new(host: Box<dyn HostDevice>, server: IoservId, opts: DeviceOptions) -> Result<Self, DeviceError> {
        let sbdf = host.sbdf();
        let ids = host.ids()?;
        let resources = host.resources()?;
        let size = host.config_size().min(EXT_CONFIG_SPACE_SIZE);
        let mut host_cfg = vec![0u8; size.max(CONFIG_SPACE_SIZE)];
        host.config_read_all(&mut host_cfg[..size & !3])?;
        let header_type = host_cfg[HEADER_TYPE_OFFSET as usize] & 0x7f;
        if header_type != 0 {
            return Err(DeviceError::NotEndpoint { sbdf, header: host_cfg[HEADER_TYPE_OFFSET as usize] });
        }
        let mut resources = resources;
        for b in resources.bars.iter().flatten() {
            if b.kind == BarKind::Io {
                continue;
            }
            if b.base % PAGE_SIZE != 0 {
                return Err(DeviceError::UnalignedBar { sbdf, bar: b.index, base: b.base });
            }
            if b.size < PAGE_SIZE {
                let others = host.page_sharers(b)?;
                if !others.is_empty() {
                    let others = others.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
                    return Err(DeviceError::SharedPage { sbdf, bar: b.index, base: b.base, size: b.size, others });
                }
            }
        }
        // The ROM is optional: one that is unaligned or shares its page is hidden, not fatal.
        if let Some(r) = resources.rom {
            let shared = r.size < PAGE_SIZE && !host.page_sharers(&r)?.is_empty();
            if r.base % PAGE_SIZE != 0 || shared {
                tracing::warn!(device = %sbdf, "expansion ROM at {:#x} is unaligned or shares its page; not offered to the guest", r.base);
                resources.rom = None;
            }
        }
        let mut cfg = ConfigSpace::new(sbdf, size.max(CONFIG_SPACE_SIZE));
        cfg.set_permissive(opts.permissive);
        let caps = caps::build(&mut cfg, &host_cfg, &resources, opts.profile);
        let layout = caps.clone();
        cfg.set_register_names(Box::new(move |off| crate::console::view::register_name(&layout, off)));
        let inputs = HeaderInputs {
            host_cfg: &host_cfg,
            ids,
            resources: &resources,
            host_has_irq: host.irq().is_some(),
            profile: opts.profile,
            multifunction: false,
            first_cap: caps.first_exposed(),
        };
        header::build(&mut cfg, &inputs);
        for w in &caps.warnings {
            tracing::warn!(device = %sbdf, "{w}");
        }
        let msix = caps.msix.map(Msix::new);
        let msi = caps.msi.map(MsiState::new);
        let mut dm = DeviceModel {
            host_sbdf: sbdf,
            pirqs: PirqTable::new(opts.domid, sbdf),
            mapper: Mapper::new(opts.domid, server),
            bars: BarState::new(&resources),
            opts,
            host,
            resources,
            cfg,
            caps,
            msix,
            msi,
            bound_gtable: 0,
            intx_bound: false,
            log: RateLimit::guest(),
            stats: DeviceStats::default(),
            name: std::cell::OnceCell::new(),
        };
        if !dm.opts.read_only_host {
            dm.prepare_host(&host_cfg)?;
        }
        Ok(dm)
    }

    /// Put the host function in the state xenpt maintains: decode on for every
    /// implemented BAR (XSA-126; the guest only toggles virtual bits), INTx disabled
    /// while no INTx is bound, MSI and MSI-X off until the guest enables them (a previous
    /// owner may have left them on).
    fn prepare_host(&mut self, host_cfg: &[u8]) -> Result<(), HostError> {
        let cmd = le16(host_cfg, COMMAND_OFFSET);
        let mut want = cmd | COMMAND_INTX_DISABLE_BIT;
        if self.resources.bars.iter().flatten().any(|b| b.kind == BarKind::Io) {
            want |= COMMAND_IO_BIT;
        }
        if self.resources.bars.iter().flatten().any(|b| b.kind != BarKind::Io) {
            want |= COMMAND_MEMORY_BIT;
        }
        if want != cmd {
            self.host.config_write(COMMAND_OFFSET, 2, want as u32)?;
        }
        if let Some(m) = self.caps.msix {
            let ctrl = le16(host_cfg, m.cap_offset + 2);
            if ctrl & (CONTROL_ENABLE_BIT | CONTROL_MASKALL_BIT) != 0 {
                let off = ctrl & !(CONTROL_ENABLE_BIT | CONTROL_MASKALL_BIT);
                self.host.config_write(m.cap_offset + 2, 2, off as u32)?;
            }
        }
        if let Some(msi) = self.caps.caps.iter().find(|c| c.id == CAP_ID_MSI) {
            let ctrl = le16(host_cfg, msi.offset + 2);
            if ctrl & 1 != 0 {
                self.host.config_write(msi.offset + 2, 2, (ctrl & !1) as u32)?;
            }
        }
        Ok(())
    }

    pub fn host(&self) -> &dyn HostDevice {
        &*self.host
    }

    pub fn host_sbdf(&self) -> Sbdf {
        self.host_sbdf
    }

    /// The whole guest-visible config space (host bits read from the device).
    pub fn guest_snapshot(&mut self) -> Vec<u8> {
        self.cfg.snapshot(&*self.host)
    }

    /// lspci's one-line description of the host function ("Non-Volatile memory controller:
    /// Red Hat, Inc. QEMU NVM Express Controller") and the database that named it.
    pub fn name(&self) -> (&str, &str) {
        let (d, s) = self.name.get_or_init(|| match self.host.ids() {
            Ok(ids) => {
                let n = crate::names::lookup(&ids);
                (n.describe(&ids), n.source)
            }
            Err(e) => (format!("(IDs unreadable: {e})"), "none".into()),
        });
        (d, s)
    }

    /// The multifunction bit of the header type the guest reads (bit 7 of 0x0e): set on
    /// function 0 of a guest slot whose other functions other xenpt processes serve.
    pub fn set_multifunction(&mut self, on: bool) {
        let ht = self.cfg.emulated(HEADER_TYPE_OFFSET, 1) & !(HEADER_TYPE_MULTIFUNCTION_BIT as u32);
        self.cfg.set(HEADER_TYPE_OFFSET, 1, ht | if on { HEADER_TYPE_MULTIFUNCTION_BIT as u32 } else { 0 });
    }

    pub fn config_read(&mut self, reg: u32, size: u32) -> u32 {
        self.cfg.read(&*self.host, reg, size)
    }

    pub fn config_write(&mut self, xen: &mut dyn Xen, reg: u32, size: u32, value: u32) {
        if let Some(t) = self.cfg.write(&*self.host, reg, size, value) {
            self.on_touched(xen, t);
        }
    }

    fn command(&self) -> u16 {
        self.cfg.emulated(COMMAND_OFFSET, 2) as u16
    }

    fn on_touched(&mut self, xen: &mut dyn Xen, t: Touched) {
        match t.hook {
            Hook::Command => {
                let decode = (COMMAND_IO_BIT | COMMAND_MEMORY_BIT) as u32;
                if (t.old ^ t.new) & decode != 0 {
                    self.bars.commit_all(&self.cfg);
                    self.sync_bars(xen);
                }
                if (t.old ^ t.new) & COMMAND_INTX_DISABLE_BIT as u32 != 0 {
                    self.sync_host_intx_disable();
                }
            }
            Hook::Bar(i) => {
                if self.bars.on_bar_write(&self.cfg, i) {
                    self.sync_bars(xen);
                }
            }
            Hook::Rom => {
                let moved = self.bars.on_rom_write(&self.cfg);
                if (t.old ^ t.new) & ROM_ENABLE_BIT != 0 {
                    self.set_host_rom_enable(t.new & ROM_ENABLE_BIT != 0);
                }
                if moved || (t.old ^ t.new) & ROM_ENABLE_BIT != 0 {
                    self.sync_bars(xen);
                }
            }
            Hook::MsixControl => {
                if (t.old ^ t.new) >> 16 != 0 {
                    if let Some(m) = self.msix.as_mut() {
                        let fx = m.control_write((t.new >> 16) as u16);
                        self.apply_msix(xen, fx);
                    }
                    self.sync_host_intx_disable();
                }
            }
            Hook::Msi => {
                self.on_msi_write(xen);
                self.sync_host_intx_disable();
            }
            Hook::PmCsr => {
                if (t.old ^ t.new) & 3 != 0 {
                    tracing::debug!(device = %self.host_sbdf, "guest power state D{} (virtual)", t.new & 3);
                }
            }
        }
    }

    /// The ROM decodes only while its enable bit is set in the device; the guest's virtual
    /// enable is mirrored there (its address bits stay the host's).
    fn set_host_rom_enable(&mut self, on: bool) {
        let cur = match self.host.config_read(ROM_BAR_OFFSET, 4) {
            Ok(v) => v,
            Err(e) => {
                guest_warn!(self.log, device = %self.host_sbdf, "reading the host ROM BAR: {e}");
                return;
            }
        };
        let want = if on { cur | ROM_ENABLE_BIT } else { cur & !ROM_ENABLE_BIT };
        if want != cur {
            if let Err(e) = self.host.config_write(ROM_BAR_OFFSET, 4, want) {
                guest_warn!(self.log, device = %self.host_sbdf, "setting the host ROM enable: {e}");
            }
        }
    }

    fn msix_layout(&self) -> Option<MsixLayout> {
        self.msix.as_ref().map(|m| m.layout)
    }

    /// Make Xen's mappings match the guest's committed BARs and decode bits, then keep
    /// Xen's MSI-X table address in step with where the guest put the table.
    fn sync_bars(&mut self, xen: &mut dyn Xen) {
        let cmd = self.command();
        let rom_on = self.cfg.emulated(ROM_BAR_OFFSET, 4) & ROM_ENABLE_BIT != 0;
        let layout = self.msix_layout();
        let plan = self.bars.plan(cmd & COMMAND_MEMORY_BIT != 0, cmd & COMMAND_IO_BIT != 0, rom_on, layout.as_ref());
        for e in self.mapper.apply(xen, &plan) {
            self.stats.map_errors += 1;
            guest_warn!(self.log, device = %self.host_sbdf, domid = self.opts.domid, "BAR mapping failed: {e}");
        }
        if let Some(m) = layout {
            let gtable = self.bars.msix_table_gaddr(cmd & COMMAND_MEMORY_BIT != 0, &m);
            if let Some(g) = gtable {
                if g != self.bound_gtable && self.pirqs.iter().any(|(_, s)| s.bound.is_some()) {
                    let unmasked = self.msix_unmasked_now(&m);
                    let (errors, lost) = self.pirqs.rebind_gtable(xen, g, |v| match v {
                        Vector::Msix(e) => unmasked.get(e as usize).copied().unwrap_or(false),
                        Vector::Msi(_) | Vector::Intx => true,
                    });
                    for e in errors {
                        self.stats.bind_errors += 1;
                        guest_warn!(self.log, device = %self.host_sbdf, "re-binding MSI-X after the table moved failed: {e}");
                    }
                    if let Some(msix) = self.msix.as_mut() {
                        for v in lost {
                            if let Vector::Msix(e) = v {
                                msix.bind_failed(e);
                            }
                        }
                    }
                    self.bound_gtable = g;
                }
            }
        }
    }

    /// The guest wrote the MSI capability: bring Xen in line with its registers.
    fn on_msi_write(&mut self, xen: &mut dyn Xen) {
        let Some(l) = self.msi.as_ref().and_then(|m| m.layout) else { return };
        let ctrl = self.cfg.emulated(l.cap_offset + msi_cap::CONTROL_OFFSET, 2) as u16;
        let mut mme = ((ctrl & msi_cap::CONTROL_MME_MASK) >> 4) as u8;
        if mme > l.mmc {
            // Asking for more than the function can do gets what it can do.
            mme = l.mmc;
            self.cfg.set(
                l.cap_offset + msi_cap::CONTROL_OFFSET,
                2,
                ((ctrl & !msi_cap::CONTROL_MME_MASK) | (mme as u16) << 4) as u32,
            );
        }
        let lo = self.cfg.emulated(l.cap_offset + msi_cap::ADDR_LO_OFFSET, 4) as u64;
        let hi = l.addr_hi().map(|o| self.cfg.emulated(o, 4) as u64).unwrap_or(0);
        let regs = MsiRegs {
            enable: ctrl & msi_cap::CONTROL_ENABLE_BIT != 0,
            mme,
            msg: MsiMessage { addr: lo | hi << 32, data: self.cfg.emulated(l.data(), 2) },
            mask: l.mask().map(|o| self.cfg.emulated(o, 4)).unwrap_or(0),
        };
        let Some(state) = self.msi.as_mut() else { return };
        let fx = state.sync(regs);
        if fx.is_empty() {
            return;
        }
        tracing::debug!(device = %self.host_sbdf, "MSI effects: {fx:x?}");
        // Without a Map, MSI was enabled already and these effects change live vectors.
        let live = !fx.iter().any(|f| matches!(f, MsiEffect::Map { .. }));
        for f in fx {
            let res = match f {
                MsiEffect::Map { count, msg } => self.pirqs.map_msi(xen, count, msg.xen_pirq()),
                MsiEffect::Bind { index, msg, unmask } => self.pirqs.bind_msi(xen, index, msg, unmask),
                MsiEffect::Unbind { index } => self.pirqs.unbind(xen, Vector::Msi(index as u8)).map_err(Into::into),
                MsiEffect::HostControl { enable, mme } => {
                    self.write_host_msi_control(l.cap_offset, enable, mme);
                    Ok(())
                }
                MsiEffect::ReleaseAll => {
                    for e in self.pirqs.release_matching(xen, |v| matches!(v, Vector::Msi(_))) {
                        guest_warn!(self.log, device = %self.host_sbdf, "releasing MSI vectors: {e}");
                    }
                    Ok(())
                }
            };
            if let (true, MsiEffect::Bind { index, .. }, Err(PirqError::BadMessage { addr })) = (live, f, &res) {
                // A message Xen cannot deliver, written while MSI is on: refuse it for this
                // vector without losing its pirq, and unbind it so that it stops delivering
                // the old vector (which the guest may have given away). MSI stays enabled;
                // the next correct message binds it again.
                self.stats.bind_errors += 1;
                guest_warn!(self.log, device = %self.host_sbdf, domid = self.opts.domid,
                    "MSI vector {index}: message address {addr:#x} is outside 0xFEExxxxx; vector unbound, pirq kept");
                if let Err(e) = self.pirqs.unbind(xen, Vector::Msi(index as u8)) {
                    guest_warn!(self.log, device = %self.host_sbdf, "unbinding MSI vector {index}: {e}");
                }
                if let Some(state) = self.msi.as_mut() {
                    state.bind_failed(index);
                }
                continue;
            }
            if let Err(e) = res {
                // Containment (QEMU's model): a failed enable leaves MSI disabled, as the
                // guest will read it, with nothing half set up; xenpt keeps running.
                self.stats.bind_errors += 1;
                guest_warn!(self.log, device = %self.host_sbdf, domid = self.opts.domid, "MSI: {e}; MSI stays disabled");
                for e in self.pirqs.release_matching(xen, |v| matches!(v, Vector::Msi(_))) {
                    guest_warn!(self.log, device = %self.host_sbdf, "releasing MSI vectors: {e}");
                }
                self.write_host_msi_control(l.cap_offset, false, 0);
                if let Some(state) = self.msi.as_mut() {
                    state.enable_failed();
                }
                let off = l.cap_offset + msi_cap::CONTROL_OFFSET;
                let c = self.cfg.emulated(off, 2) & !(msi_cap::CONTROL_ENABLE_BIT as u32);
                self.cfg.set(off, 2, c);
                return;
            }
        }
    }

    /// Bind the INTx line (HVM only: the profile decided the pin when the header was
    /// built). Called once at start-up, before the guest runs. The host GSI comes from
    /// sysfs `irq` (a GSI on a PV dom0). On failure the guest is offered no pin at all.
    /// Bind the device's INTx line (GSI `gsi`, see runner::host_gsi) to the guest's pin, or
    /// offer no pin when there is none or binding fails.
    pub fn start_intx(&mut self, xen: &mut dyn Xen, gsi: Option<u32>) {
        let pin = self.cfg.emulated(INTERRUPT_PIN_OFFSET, 1) as u8;
        if pin != 0 && gsi.is_none() {
            self.cfg.set(INTERRUPT_PIN_OFFSET, 1, 0);
        }
        if let (1..=4, Some(gsi)) = (pin, gsi) {
            match self.pirqs.bind_intx(xen, gsi, self.opts.guest_sbdf.dev, pin - 1) {
                Ok(_) => self.intx_bound = true,
                Err(e) => {
                    tracing::warn!(device = %self.host_sbdf, domid = self.opts.domid,
                        "INTx not available to the guest (GSI {gsi}): {e}; the interrupt pin reads 0");
                    self.cfg.set(INTERRUPT_PIN_OFFSET, 1, 0);
                }
            }
        }
        self.sync_host_intx_disable();
    }

    /// The host's INTx-disable is set unless the guest may take INTx now: INTx bound, the
    /// guest's own INTx-disable clear, and neither MSI nor MSI-X enabled.
    fn sync_host_intx_disable(&mut self) {
        let guest_cmd = self.command();
        let msi_on = self.msi.as_ref().is_some_and(|m| m.regs.enable);
        let msix_on = self.msix.as_ref().is_some_and(|m| m.enabled);
        let allow = self.intx_bound && guest_cmd & COMMAND_INTX_DISABLE_BIT == 0 && !msi_on && !msix_on;
        let Ok(cur) = self.host.config_read(COMMAND_OFFSET, 2) else { return };
        let want = if allow { cur & !(COMMAND_INTX_DISABLE_BIT as u32) } else { cur | COMMAND_INTX_DISABLE_BIT as u32 };
        if want != cur {
            if let Err(e) = self.host.config_write(COMMAND_OFFSET, 2, want) {
                guest_warn!(self.log, device = %self.host_sbdf, "setting host INTx-disable: {e}");
            }
        }
    }

    /// Set the host's MSI Enable and Multiple Message Enable; nothing else of the host's
    /// MSI capability is ever written (address, data and mask belong to Xen).
    fn write_host_msi_control(&mut self, cap: u16, enable: bool, mme: u8) {
        let res = self.host.config_read(cap + 2, 2).and_then(|cur| {
            let keep = cur as u16 & !(msi_cap::CONTROL_ENABLE_BIT | msi_cap::CONTROL_MME_MASK);
            let v = keep | if enable { msi_cap::CONTROL_ENABLE_BIT } else { 0 } | (mme as u16) << 4;
            self.host.config_write(cap + 2, 2, v as u32)
        });
        if let Err(e) = res {
            guest_warn!(self.log, device = %self.host_sbdf, "setting host MSI control: {e}");
        }
    }

    /// Set the host's MSI-X Enable and Function Mask (a 2-byte write, which a PV dom0's Xen
    /// intercept combines with its own mask-all), keeping the read-only bits as they are.
    fn write_host_msix_control(&mut self, cap: u16, bits: u16) {
        let res = self.host.config_read(cap + 2, 2).and_then(|cur| {
            let v = (cur as u16 & !(CONTROL_ENABLE_BIT | CONTROL_MASKALL_BIT)) | bits;
            self.host.config_write(cap + 2, 2, v as u32)
        });
        if let Err(e) = res {
            guest_warn!(self.log, device = %self.host_sbdf, "setting host MSI-X control: {e}");
        }
    }

    /// Whether each MSI-X vector is unmasked as the guest sees it now. Xen's msixtbl
    /// answered the guest's mask writes, so xenpt's copy may be stale: the device's own
    /// vector-control word (which Xen keeps as guest mask OR host mask) is the better
    /// source when the backend can read it; otherwise the last value xenpt saw.
    fn msix_unmasked_now(&self, m: &MsixLayout) -> Vec<bool> {
        let Some(msix) = self.msix.as_ref() else { return Vec::new() };
        (0..m.entries)
            .map(|e| {
                let off = m.table_offset + e as u64 * ENTRY_SIZE + ENTRY_VECTOR_CTRL_OFFSET;
                match self.host.bar_read(m.table_bar, off, 4) {
                    Ok(v) => v as u32 & ENTRY_MASKED_BIT == 0,
                    Err(_) => !msix.entries[e as usize].masked(),
                }
            })
            .collect()
    }

    /// Before xenpt's MSI-X bindings go away (disable), take the mask bits of the bound
    /// entries from the device: Xen's msixtbl answered the guest's mask writes to them, so
    /// xenpt's copy is stale. With nothing bound the guest reads its table from xenpt, and a
    /// later enable binds each entry unmasked exactly when the guest left it unmasked.
    fn refresh_msix_masks(&mut self, m: &MsixLayout) {
        let unmasked = self.msix_unmasked_now(m);
        let bound: Vec<u16> = self
            .pirqs
            .iter()
            .filter_map(|(v, st)| match *v {
                Vector::Msix(e) if st.bound.is_some() => Some(e),
                _ => None,
            })
            .collect();
        let Some(msix) = self.msix.as_mut() else { return };
        for e in bound {
            if let (Some(entry), Some(&u)) = (msix.entries.get_mut(e as usize), unmasked.get(e as usize)) {
                entry.ctrl = if u { 0 } else { ENTRY_MASKED_BIT };
            }
        }
    }

    fn apply_msix(&mut self, xen: &mut dyn Xen, fx: Vec<MsixEffect>) {
        if !fx.is_empty() {
            tracing::debug!(device = %self.host_sbdf, "MSI-X effects: {fx:x?}");
        }
        let Some(layout) = self.msix_layout() else { return };
        if fx.contains(&MsixEffect::ReleaseAll) {
            self.refresh_msix_masks(&layout);
        }
        let table_base = self.resources.bars[layout.table_bar as usize].map(|b| b.base).unwrap_or(0);
        let gtable = self.bars.msix_table_gaddr(self.command() & COMMAND_MEMORY_BIT != 0, &layout).unwrap_or(0);
        for f in fx {
            match f {
                MsixEffect::Bind { entry, msg, unmask } => {
                    match self.pirqs.bind_msix(xen, entry, table_base, msg, unmask, gtable) {
                        Ok(_) => self.bound_gtable = gtable,
                        Err(e) => {
                            self.stats.bind_errors += 1;
                            if let Some(m) = self.msix.as_mut() {
                                m.bind_failed(entry);
                            }
                            if matches!(e, PirqError::BadMessage { .. }) {
                                // Refused without losing the pirq; unbound so that the entry
                                // stops delivering its old vector. The next commit binds again.
                                if let Err(e) = self.pirqs.unbind(xen, Vector::Msix(entry)) {
                                    guest_warn!(self.log, device = %self.host_sbdf, "unbinding MSI-X entry {entry}: {e}");
                                }
                            }
                            guest_warn!(self.log, device = %self.host_sbdf, domid = self.opts.domid, "MSI-X entry {entry}: {e}");
                        }
                    }
                }
                MsixEffect::Unbind { entry } => {
                    if let Err(e) = self.pirqs.unbind(xen, Vector::Msix(entry)) {
                        guest_warn!(self.log, device = %self.host_sbdf, "masking MSI-X entry {entry} (unbind): {e}");
                    }
                }
                MsixEffect::ReleaseAll => {
                    for e in self.pirqs.release_matching(xen, |v| matches!(v, Vector::Msix(_))) {
                        guest_warn!(self.log, device = %self.host_sbdf, "releasing MSI-X vectors: {e}");
                    }
                }
                MsixEffect::HostControl { enable, maskall } => {
                    let v = if enable { CONTROL_ENABLE_BIT } else { 0 } | if maskall { CONTROL_MASKALL_BIT } else { 0 };
                    self.write_host_msix_control(layout.cap_offset, v);
                }
            }
        }
    }

    /// Where a trapped guest access lands: (BAR, offset) if it is naturally aligned, of
    /// size 1/2/4/8 and entirely inside the host BAR (guest BARs may be larger than the
    /// host's, rounded up to a page).
    fn locate_checked(&self, addr: u64, size: u32) -> Option<(u8, u64)> {
        if !matches!(size, 1 | 2 | 4 | 8) || addr % size as u64 != 0 {
            return None;
        }
        let (bar, off) = self.bars.locate(addr)?;
        let host = self.resources.bars.get(bar as usize).copied().flatten()?;
        (off.checked_add(size as u64)? <= host.size).then_some((bar, off))
    }

    /// A guest read of a trapped MMIO range (MSI-X table, PBA, neighbouring registers).
    pub fn mmio_read(&mut self, addr: u64, size: u32) -> u64 {
        let ones = if size >= 8 { !0 } else { (1u64 << (size * 8)) - 1 };
        let Some((bar, off)) = self.locate_checked(addr, size) else {
            self.stats.bad_mmio += 1;
            return ones;
        };
        if let Some(m) = self.msix.as_mut() {
            let l = m.layout;
            if bar == l.table_bar && off >= l.table_offset && off < l.table_offset + l.table_len() {
                self.stats.msix_table_reads += 1;
                return match m.table_read(off - l.table_offset, size) {
                    Some(v) => v,
                    None => {
                        self.stats.bad_mmio += 1;
                        ones
                    }
                };
            }
        }
        // PBA and other registers on the trapped pages come from the device.
        match self.host.bar_read(bar, off, size as u8) {
            Ok(v) => v & ones,
            Err(e) => {
                self.stats.bad_mmio += 1;
                guest_warn!(self.log, device = %self.host_sbdf, "read of BAR{bar}+{off:#x}: {e}");
                ones
            }
        }
    }

    /// A guest write of a trapped MMIO range: the MSI-X table is emulated, PBA writes are
    /// dropped, and other registers sharing the trapped pages (NVMe, AX210) are forwarded.
    pub fn mmio_write(&mut self, xen: &mut dyn Xen, addr: u64, size: u32, value: u64) {
        let Some((bar, off)) = self.locate_checked(addr, size) else {
            self.stats.bad_mmio += 1;
            guest_warn!(self.log, device = %self.host_sbdf, "malformed or out-of-BAR MMIO write at {addr:#x} size {size} dropped");
            return;
        };
        if let Some(m) = self.msix.as_mut() {
            let l = m.layout;
            if bar == l.table_bar && off >= l.table_offset && off < l.table_offset + l.table_len() {
                self.stats.msix_table_writes += 1;
                match m.table_write(off - l.table_offset, size, value) {
                    Some(fx) => self.apply_msix(xen, fx),
                    None => {
                        self.stats.bad_mmio += 1;
                        guest_warn!(self.log, device = %self.host_sbdf, "malformed MSI-X table write at +{off:#x} size {size} dropped");
                    }
                }
                return;
            }
            if bar == l.pba_bar && off >= l.pba_offset && off < l.pba_offset + l.pba_len() {
                self.stats.dropped_mmio_writes += 1;
                guest_warn!(self.log, device = %self.host_sbdf, "write to the MSI-X PBA dropped");
                return;
            }
        }
        if let Err(e) = self.host.bar_write(bar, off, size as u8, value) {
            self.stats.dropped_mmio_writes += 1;
            guest_warn!(self.log, device = %self.host_sbdf, "write to BAR{bar}+{off:#x} next to the MSI-X table dropped: {e}");
        }
    }

    /// Ordered teardown: unbind and unmap every pirq, turn host MSI-X off, unmap every BAR
    /// and trapped range. Continues past errors and returns them.
    pub fn teardown(&mut self, xen: &mut dyn Xen) -> Vec<XenError> {
        // Stop DMA first (XSA-302): the device must not write guest memory while it is
        // being taken apart.
        if let Ok(cmd) = self.host.config_read(COMMAND_OFFSET, 2) {
            if cmd as u16 & COMMAND_MASTER_BIT != 0 {
                let _ = self.host.config_write(COMMAND_OFFSET, 2, cmd & !(COMMAND_MASTER_BIT as u32));
            }
        }
        let mut errors = self.pirqs.release_all(xen);
        if let Some(m) = self.msix_layout() {
            self.write_host_msix_control(m.cap_offset, 0);
        }
        if let Some(l) = self.msi.as_ref().and_then(|m| m.layout) {
            self.write_host_msi_control(l.cap_offset, false, 0);
        }
        errors.extend(self.mapper.teardown(xen));
        errors
    }
}

impl IoHandler for DeviceModel {
    fn handle(&mut self, xen: &mut dyn Xen, req: Request) -> u64 {
        match req {
            Request::PciConfig { sbdf, reg, size, write } if sbdf == self.opts.guest_sbdf => match write {
                None => self.config_read(reg, size) as u64,
                Some(v) => {
                    self.config_write(xen, reg, size, v);
                    0
                }
            },
            Request::Mmio { addr, size, write: None } => self.mmio_read(addr, size),
            Request::Mmio { addr, size, write: Some(v) } => {
                self.mmio_write(xen, addr, size, v);
                0
            }
            _ => !0,
        }
    }
}
