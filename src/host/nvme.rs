//! An emulated NVMe controller: a "physical" function for the simulated machine.
//!
//! Its config space is laid out like real NVMe drives in ../shared/pci-corpus (PCIe
//! capability at 0x40, PM at 0x80, MSI at 0x90, MSI-X at 0xb0 with the table and PBA in
//! 64-bit BAR0, AER at 0x100), with QEMU's NVMe IDs (1b36:0010). It implements enough of
//! NVMe 1.4 to enable the controller, identify it, create I/O queue pairs and read and
//! write an in-memory namespace by DMA, completing with MSI-X (or MSI) interrupts.
//!
//! Two faces: [`NvmeHost`] is the [`HostDevice`] xenpt uses (config space, resources),
//! and the [`MachineDevice`] impl is what the simulated machine routes BAR accesses and
//! DMA through.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::*;
use crate::pci::*;
use crate::xen::sim::machine::{DeviceBus, MachineBar, MachineDevice};

pub const NVME_VENDOR: u16 = 0x1b36;
pub const NVME_DEVICE: u16 = 0x0010;
pub const BAR0_SIZE: u64 = 0x4000;
pub const MSIX_TABLE_OFFSET: u64 = 0x2000;
pub const MSIX_PBA_OFFSET: u64 = 0x3000;
pub const MSIX_ENTRIES: u16 = 64;
pub const LBA_SIZE: usize = 512;
pub const PCIE_CAP: u16 = 0x40;
pub const PM_CAP: u16 = 0x80;
pub const MSI_CAP: u16 = 0x90;
pub const MSIX_CAP: u16 = 0xb0;

// Controller registers.
pub const REG_CAP: u64 = 0x00;
pub const REG_VS: u64 = 0x08;
pub const REG_CC: u64 = 0x14;
pub const REG_CSTS: u64 = 0x1c;
pub const REG_AQA: u64 = 0x24;
pub const REG_ASQ: u64 = 0x28;
pub const REG_ACQ: u64 = 0x30;
pub const REG_DOORBELL: u64 = 0x1000;
pub const CC_EN_BIT: u32 = 1;
pub const CSTS_RDY_BIT: u32 = 1;
pub const MAX_QUEUES: u16 = 64;

// Command set.
pub const ADMIN_DELETE_SQ: u8 = 0x00;
pub const ADMIN_CREATE_SQ: u8 = 0x01;
pub const ADMIN_DELETE_CQ: u8 = 0x04;
pub const ADMIN_CREATE_CQ: u8 = 0x05;
pub const ADMIN_IDENTIFY: u8 = 0x06;
pub const ADMIN_SET_FEATURES: u8 = 0x09;
pub const IO_FLUSH: u8 = 0x00;
pub const IO_WRITE: u8 = 0x01;
pub const IO_READ: u8 = 0x02;

pub const SC_SUCCESS: u16 = 0x00;
pub const SC_INVALID_OPCODE: u16 = 0x01;
pub const SC_INVALID_FIELD: u16 = 0x02;
pub const SC_DATA_TRANSFER_ERROR: u16 = 0x04;
pub const SC_INVALID_NS: u16 = 0x0b;
pub const SC_LBA_OUT_OF_RANGE: u16 = 0x80;
/// Command specific: invalid queue identifier (SCT 1).
pub const SC_INVALID_QID: u16 = 0x101;

pub const MODEL: &str = "xenpt emulated NVMe controller";
pub const SERIAL: &str = "XENPT-0001";

/// Emulated hardware config space: value, writable bits and write-1-to-clear bits per
/// byte, like a real function's register file.
struct HwConfig {
    data: [u8; 4096],
    wmask: [u8; 4096],
    w1c: [u8; 4096],
}

impl HwConfig {
    fn set(&mut self, off: u16, size: usize, v: u32, wmask: u32) {
        for i in 0..size {
            self.data[off as usize + i] = (v >> (8 * i)) as u8;
            self.wmask[off as usize + i] = (wmask >> (8 * i)) as u8;
        }
    }
    fn get(&self, off: u16, size: usize) -> u32 {
        (0..size).fold(0, |a, i| a | (self.data[off as usize + i] as u32) << (8 * i))
    }
    fn write(&mut self, off: u16, size: usize, v: u32) {
        for i in 0..size {
            let o = off as usize + i;
            let b = (v >> (8 * i)) as u8;
            let w1c = self.w1c[o] & b;
            self.data[o] = (self.data[o] & !self.wmask[o]) | (b & self.wmask[o]);
            self.data[o] &= !w1c;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Queue {
    base: u64,
    /// Entries in the queue (1-based).
    size: u16,
    head: u16,
    tail: u16,
    /// CQ: phase tag of the next entry posted.
    phase: bool,
    /// SQ: its CQ. CQ: interrupt vector (None = interrupts disabled).
    cqid: u16,
    vector: Option<u16>,
}

/// Statistics, for the demo transcript and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NvmeStats {
    pub commands: u64,
    pub blocks_read: u64,
    pub blocks_written: u64,
    pub interrupts: u64,
    pub dma_errors: u64,
}

struct Inner {
    cfg: HwConfig,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    sqs: BTreeMap<u16, Queue>,
    cqs: BTreeMap<u16, Queue>,
    namespace: Vec<u8>,
    stats: NvmeStats,
    /// The device's own MSI-X table (written by Xen on real hardware).
    msix_table: Vec<u32>,
    /// The PBA (bit i = entry i, 64 entries): a message held while the function is masked.
    pba: u64,
}

/// The emulated controller. Clone it to hand it to both the machine and xenpt.
#[derive(Clone)]
pub struct EmulatedNvme {
    sbdf: Sbdf,
    bar0: u64,
    irq: u32,
    inner: Arc<Mutex<Inner>>,
}

impl EmulatedNvme {
    /// A controller at host address `sbdf` whose BAR0 the "host firmware" placed at
    /// `bar0_base`, with a namespace of `blocks` 512-byte blocks.
    pub fn new(sbdf: Sbdf, bar0_base: u64, blocks: usize) -> Self {
        assert!(bar0_base % BAR0_SIZE == 0, "BAR0 base must be naturally aligned");
        let mut c = HwConfig { data: [0; 4096], wmask: [0; 4096], w1c: [0; 4096] };
        c.set(VENDOR_ID_OFFSET, 2, NVME_VENDOR as u32, 0);
        c.set(DEVICE_ID_OFFSET, 2, NVME_DEVICE as u32, 0);
        // Host firmware/pciback left memory decode on, bus mastering off.
        c.set(COMMAND_OFFSET, 2, COMMAND_MEMORY_BIT as u32, 0x0547);
        c.set(STATUS_OFFSET, 2, STATUS_CAP_LIST_BIT as u32, 0);
        for i in 0..2 {
            c.w1c[STATUS_OFFSET as usize + i] = (STATUS_ERROR_W1C_MASK >> (8 * i)) as u8;
        }
        c.set(REVISION_OFFSET, 4, 0x0108_0202, 0);
        c.set(CACHE_LINE_OFFSET, 1, 0, 0xff);
        c.set(LATENCY_OFFSET, 1, 0, 0xff);
        c.set(BAR0_OFFSET, 4, bar0_base as u32 | BAR_MEM_TYPE_64, !(BAR0_SIZE as u32 - 1));
        c.set(BAR0_OFFSET + 4, 4, (bar0_base >> 32) as u32, !0);
        c.set(SUBSYS_VENDOR_OFFSET, 2, 0x1af4, 0);
        c.set(SUBSYS_ID_OFFSET, 2, 0x1100, 0);
        c.set(CAP_PTR_OFFSET, 1, PCIE_CAP as u32, 0);
        c.set(INTERRUPT_LINE_OFFSET, 1, 11, 0xff);
        c.set(INTERRUPT_PIN_OFFSET, 1, 1, 0);
        // PCIe v2 endpoint: DEVCAP MPS 256 + FLR, DEVCTL, LNKCAP x4 8GT/s.
        c.set(PCIE_CAP, 4, (0x0002 << 16) | (PM_CAP as u32) << 8 | CAP_ID_EXP as u32, 0);
        c.set(PCIE_CAP + 4, 4, 0x1000_8fc1, 0);
        c.set(PCIE_CAP + 8, 2, 0x2810, 0x7fff);
        c.set(PCIE_CAP + 10, 2, 0, 0);
        c.w1c[(PCIE_CAP + 10) as usize] = 0x0f;
        c.set(PCIE_CAP + 12, 4, 0x0042_4843, 0);
        c.set(PCIE_CAP + 16, 2, 0x0040, 0x0fc3);
        c.set(PCIE_CAP + 18, 2, 0x1043, 0);
        // PM v3, NoSoftRst.
        c.set(PM_CAP, 4, 0x0003 << 16 | (MSI_CAP as u32) << 8 | CAP_ID_PM as u32, 0);
        c.set(PM_CAP + 4, 2, 0x0008, 0x0103);
        // MSI: 64-bit, per-vector masking, 32 vectors.
        c.set(MSI_CAP, 2, (MSIX_CAP as u32) << 8 | CAP_ID_MSI as u32, 0);
        c.set(MSI_CAP + 2, 2, 0x018a, 0x0071);
        c.set(MSI_CAP + 4, 4, 0, 0xffff_fffc);
        c.set(MSI_CAP + 8, 4, 0, !0);
        c.set(MSI_CAP + 12, 2, 0, 0xffff);
        c.set(MSI_CAP + 16, 4, 0, !0);
        // MSI-X: table and PBA in BAR0.
        c.set(MSIX_CAP, 2, CAP_ID_MSIX as u32, 0);
        c.set(MSIX_CAP + 2, 2, (MSIX_ENTRIES - 1) as u32, 0xc000);
        c.set(MSIX_CAP + 4, 4, MSIX_TABLE_OFFSET as u32, 0);
        c.set(MSIX_CAP + 8, 4, MSIX_PBA_OFFSET as u32, 0);
        // AER at 0x100, the only extended capability.
        c.set(0x100, 4, 0x0001 | 2 << 16, 0);
        let mut msix_table = vec![0u32; MSIX_ENTRIES as usize * 4];
        for e in 0..MSIX_ENTRIES as usize {
            msix_table[e * 4 + 3] = 1; // masked at reset
        }
        EmulatedNvme {
            sbdf,
            bar0: bar0_base,
            irq: 11,
            inner: Arc::new(Mutex::new(Inner {
                cfg: c,
                cc: 0,
                csts: 0,
                aqa: 0,
                asq: 0,
                acq: 0,
                sqs: BTreeMap::new(),
                cqs: BTreeMap::new(),
                namespace: vec![0; blocks * LBA_SIZE],
                stats: NvmeStats::default(),
                msix_table,
                pba: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sbdf(&self) -> Sbdf {
        self.sbdf
    }

    pub fn stats(&self) -> NvmeStats {
        self.lock().stats
    }

    /// The host-device face xenpt uses.
    pub fn host(&self) -> NvmeHost {
        NvmeHost(self.clone())
    }

    /// Raw host config read (what `lspci` on dom0 would show), for tests.
    /// The mask bit of MSI-X entry `entry` in the device's own table (what Xen wrote).
    pub fn msix_vector_masked(&self, entry: u16) -> bool {
        self.lock().msix_table.get(entry as usize * 4 + 3).is_some_and(|w| w & 1 != 0)
    }

    pub fn host_config(&self, off: u16, size: usize) -> u32 {
        self.lock().cfg.get(off, size)
    }

    /// Read namespace blocks directly (to check data landed), for tests.
    pub fn namespace_read(&self, lba: u64, blocks: usize) -> Vec<u8> {
        let g = self.lock();
        let s = lba as usize * LBA_SIZE;
        g.namespace[s..s + blocks * LBA_SIZE].to_vec()
    }
}

/// [`HostDevice`] face of the emulated controller.
pub struct NvmeHost(EmulatedNvme);

impl NvmeHost {
    pub fn clone_of(nvme: &EmulatedNvme) -> Self {
        NvmeHost(nvme.clone())
    }
}

impl HostDevice for NvmeHost {
    fn sbdf(&self) -> Sbdf {
        self.0.sbdf
    }
    fn backend(&self) -> &'static str {
        "emulated-nvme"
    }
    fn config_size(&self) -> usize {
        4096
    }
    fn config_read(&self, offset: u16, size: u8) -> Result<u32, HostError> {
        check_config_access(self.0.sbdf, offset, size, 4096)?;
        Ok(self.0.lock().cfg.get(offset, size as usize))
    }
    fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), HostError> {
        check_config_access(self.0.sbdf, offset, size, 4096)?;
        self.0.lock().cfg.write(offset, size as usize, value);
        Ok(())
    }
    fn resources(&self) -> Result<HostResources, HostError> {
        let mut r = HostResources::default();
        r.bars[0] =
            Some(HostBar { index: 0, base: self.0.bar0, size: BAR0_SIZE, kind: BarKind::Mem64, prefetchable: false });
        Ok(r)
    }
    fn ids(&self) -> Result<HostIds, HostError> {
        Ok(HostIds {
            vendor: NVME_VENDOR,
            device: NVME_DEVICE,
            subsys_vendor: 0x1af4,
            subsys_device: 0x1100,
            class: 0x010802,
            revision: 2,
        })
    }
    fn irq(&self) -> Option<u32> {
        Some(self.0.irq)
    }
    fn bar_read(&self, bar: u8, offset: u64, size: u8) -> Result<u64, HostError> {
        check_bar_access(self.0.sbdf, bar, offset, size, if bar == 0 { BAR0_SIZE } else { 0 })?;
        let g = self.0.lock();
        let v = g.reg_read(offset & !3, 4.max(size as u32));
        Ok((v >> ((offset & 3) * 8)) & if size >= 8 { !0 } else { (1u64 << (size * 8)) - 1 })
    }
    fn bar_write(&self, bar: u8, offset: u64, size: u8, value: u64) -> Result<(), HostError> {
        check_bar_access(self.0.sbdf, bar, offset, size, if bar == 0 { BAR0_SIZE } else { 0 })?;
        // Only the device's own registers: a dom0 write to the MSI-X table or PBA pages is
        // dropped by Xen (mmio_ro_ranges) on real hardware, so refuse it here too.
        if offset >= MSIX_TABLE_OFFSET {
            return Err(HostError::Invalid {
                sbdf: self.0.sbdf,
                what: "MSI-X table/PBA pages are read-only to dom0".into(),
            });
        }
        self.0.lock().reg_write(offset, size as u32, value, &NullBus);
        Ok(())
    }
    fn page_sharers(&self, _bar: &HostBar) -> Result<Vec<Sbdf>, HostError> {
        Ok(Vec::new()) // the emulated machine gives every BAR its own pages
    }
}

impl Inner {
    fn msix_enabled(&self) -> (bool, bool) {
        let ctrl = self.cfg.get(MSIX_CAP + 2, 2);
        (ctrl & 0x8000 != 0, ctrl & 0x4000 != 0)
    }

    fn reg_read(&self, off: u64, size: u32) -> u64 {
        let cap: u64 = (MAX_QUEUES as u64 * 16 - 1) | 1 << 16 | 20 << 24 | 1 << 37;
        let v = match off & !3 {
            0x00 => cap,
            0x04 => cap >> 32,
            REG_VS => 0x0001_0400,
            REG_CC => self.cc as u64,
            REG_CSTS => self.csts as u64,
            REG_AQA => self.aqa as u64,
            REG_ASQ => self.asq,
            0x2c => self.asq >> 32,
            REG_ACQ => self.acq,
            0x34 => self.acq >> 32,
            o if (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + MSIX_ENTRIES as u64 * 16).contains(&o) => {
                let i = ((o - MSIX_TABLE_OFFSET) / 4) as usize;
                let lo = self.msix_table[i] as u64;
                let hi = self.msix_table.get(i + 1).copied().unwrap_or(0) as u64;
                lo | hi << 32
            }
            o if (MSIX_PBA_OFFSET..MSIX_PBA_OFFSET + 8).contains(&o) => self.pba >> ((o - MSIX_PBA_OFFSET) * 8),
            _ => 0,
        };
        match size {
            8 if off % 8 == 0 && off < 0x38 => match off {
                0x00 => cap,
                REG_ASQ => self.asq,
                REG_ACQ => self.acq,
                _ => v,
            },
            8 => v,
            _ => v & 0xffff_ffff,
        }
    }

    fn dma_read_prp(&mut self, bus: &dyn DeviceBus, prp1: u64, prp2: u64, len: usize) -> Result<Vec<u8>, ()> {
        let mut out = vec![0u8; len];
        let mut pos = 0;
        for (addr, n) in prp_segments(bus, prp1, prp2, len)? {
            bus.dma_read(addr, &mut out[pos..pos + n]).map_err(|_| ())?;
            pos += n;
        }
        Ok(out)
    }

    fn dma_write_prp(&mut self, bus: &dyn DeviceBus, prp1: u64, prp2: u64, data: &[u8]) -> Result<(), ()> {
        let mut pos = 0;
        for (addr, n) in prp_segments(bus, prp1, prp2, data.len())? {
            bus.dma_write(addr, &data[pos..pos + n]).map_err(|_| ())?;
            pos += n;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.csts = 0;
        self.sqs.clear();
        self.cqs.clear();
    }

    fn reg_write(&mut self, off: u64, size: u32, v: u64, bus: &dyn DeviceBus) {
        match off {
            REG_CC => {
                let was = self.cc & CC_EN_BIT != 0;
                self.cc = v as u32;
                let now = self.cc & CC_EN_BIT != 0;
                if was && !now {
                    self.reset();
                } else if !was && now {
                    let asqs = (self.aqa & 0xfff) as u16 + 1;
                    let acqs = ((self.aqa >> 16) & 0xfff) as u16 + 1;
                    if self.asq == 0 || self.acq == 0 || asqs < 2 || acqs < 2 {
                        self.csts |= 2; // CFS: fatal status, the driver misprogrammed us
                        return;
                    }
                    let q = |base, size| Queue { base, size, head: 0, tail: 0, phase: true, cqid: 0, vector: None };
                    self.sqs.insert(0, q(self.asq, asqs));
                    self.cqs.insert(0, Queue { vector: Some(0), ..q(self.acq, acqs) });
                    self.csts |= CSTS_RDY_BIT;
                }
            }
            REG_AQA => self.aqa = v as u32,
            REG_ASQ if size == 8 => self.asq = v,
            REG_ASQ => self.asq = (self.asq & !0xffff_ffff) | (v & 0xffff_ffff),
            0x2c => self.asq = (self.asq & 0xffff_ffff) | (v & 0xffff_ffff) << 32,
            REG_ACQ if size == 8 => self.acq = v,
            REG_ACQ => self.acq = (self.acq & !0xffff_ffff) | (v & 0xffff_ffff),
            0x34 => self.acq = (self.acq & 0xffff_ffff) | (v & 0xffff_ffff) << 32,
            o if (REG_DOORBELL..REG_DOORBELL + MAX_QUEUES as u64 * 8).contains(&o) && size == 4 => {
                let idx = ((o - REG_DOORBELL) / 4) as u16;
                let qid = idx / 2;
                if idx % 2 == 0 {
                    if let Some(q) = self.sqs.get_mut(&qid) {
                        if (v as u16) < q.size {
                            q.tail = v as u16;
                            self.process_sq(qid, bus);
                        }
                    }
                } else if let Some(q) = self.cqs.get_mut(&qid) {
                    if (v as u16) < q.size {
                        q.head = v as u16;
                    }
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + MSIX_ENTRIES as u64 * 16).contains(&o) && size == 4 => {
                self.msix_table[((o - MSIX_TABLE_OFFSET) / 4) as usize] = v as u32;
            }
            _ => {}
        }
    }

    fn process_sq(&mut self, qid: u16, bus: &dyn DeviceBus) {
        if self.csts & CSTS_RDY_BIT == 0 {
            return;
        }
        let mut touched = Vec::new();
        while let Some(sq) = self.sqs.get(&qid).copied() {
            if sq.head == sq.tail {
                break;
            }
            let mut cmd = [0u8; 64];
            let ok = bus.dma_read(sq.base + sq.head as u64 * 64, &mut cmd).is_ok();
            let new_head = (sq.head + 1) % sq.size;
            if let Some(q) = self.sqs.get_mut(&qid) {
                q.head = new_head;
            }
            if !ok {
                self.stats.dma_errors += 1;
                self.csts |= 2;
                return;
            }
            self.stats.commands += 1;
            let dw = |i: usize| u32::from_le_bytes(cmd[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
            let cid = (dw(0) >> 16) as u16;
            let (status, result) = if qid == 0 { self.admin(&cmd, bus) } else { self.io(&cmd, bus) };
            let cqid = sq.cqid;
            if self.post_completion(cqid, qid, new_head, cid, status, result, bus) && !touched.contains(&cqid) {
                touched.push(cqid);
            }
        }
        for cqid in touched {
            if let Some(v) = self.cqs.get(&cqid).and_then(|q| q.vector) {
                self.interrupt(v, bus);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn post_completion(
        &mut self,
        cqid: u16,
        sqid: u16,
        sq_head: u16,
        cid: u16,
        status: u16,
        result: u32,
        bus: &dyn DeviceBus,
    ) -> bool {
        let Some(cq) = self.cqs.get(&cqid).copied() else { return false };
        if (cq.tail + 1) % cq.size == cq.head {
            return false; // full: a real controller would stall; the driver must not do this
        }
        let mut e = [0u8; 16];
        e[0..4].copy_from_slice(&result.to_le_bytes());
        e[8..10].copy_from_slice(&sq_head.to_le_bytes());
        e[10..12].copy_from_slice(&sqid.to_le_bytes());
        e[12..14].copy_from_slice(&cid.to_le_bytes());
        let sf = (status << 1) | cq.phase as u16;
        e[14..16].copy_from_slice(&sf.to_le_bytes());
        if bus.dma_write(cq.base + cq.tail as u64 * 16, &e).is_err() {
            self.stats.dma_errors += 1;
            return false;
        }
        let q = self.cqs.get_mut(&cqid).expect("cq exists");
        q.tail = (q.tail + 1) % q.size;
        if q.tail == 0 {
            q.phase = !q.phase;
        }
        true
    }

    /// Send the MSI-X messages held in the PBA once the function is no longer masked.
    /// The simulator hands the device a bus only for its own activity (a BAR access, a
    /// completion), not for the config write that clears Function Mask, so what was held
    /// goes out at the device's next bus activity after that.
    fn send_pending(&mut self, bus: &dyn DeviceBus) {
        let (msix_en, fmask) = self.msix_enabled();
        if !msix_en || fmask {
            return;
        }
        while self.pba != 0 {
            let entry = self.pba.trailing_zeros() as u16;
            self.pba &= self.pba - 1;
            self.stats.interrupts += 1;
            bus.signal_msix(entry);
        }
    }

    fn interrupt(&mut self, vector: u16, bus: &dyn DeviceBus) {
        let (msix_en, fmask) = self.msix_enabled();
        if msix_en {
            if vector < MSIX_ENTRIES {
                if fmask {
                    self.pba |= 1 << vector; // held: its pending bit
                } else {
                    self.send_pending(bus);
                    self.stats.interrupts += 1;
                    bus.signal_msix(vector);
                }
            }
            return;
        }
        let msi_ctrl = self.cfg.get(MSI_CAP + 2, 2);
        if msi_ctrl & 1 != 0 {
            let enabled = 1u32 << ((msi_ctrl >> 4) & 7);
            let index = vector as u32 % enabled;
            let masked = self.cfg.get(MSI_CAP + 16, 4) & (1 << index) != 0;
            if !masked {
                self.stats.interrupts += 1;
                bus.signal_msi(index);
            }
            return;
        }
        // Neither MSI-X nor MSI: the INTx line, unless the command register disables it.
        if self.cfg.get(COMMAND_OFFSET, 2) & COMMAND_INTX_DISABLE_BIT as u32 == 0 {
            self.stats.interrupts += 1;
            bus.signal_intx();
        }
    }

    fn admin(&mut self, cmd: &[u8; 64], bus: &dyn DeviceBus) -> (u16, u32) {
        let dw = |i: usize| u32::from_le_bytes(cmd[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let prp1 = dw(6) as u64 | (dw(7) as u64) << 32;
        let prp2 = dw(8) as u64 | (dw(9) as u64) << 32;
        match cmd[0] {
            ADMIN_IDENTIFY => {
                let page = match dw(10) & 0xff {
                    0 if dw(1) == 1 => self.identify_namespace(),
                    0 => return (SC_INVALID_NS, 0),
                    1 => identify_controller(),
                    2 => {
                        let mut p = vec![0u8; 4096];
                        p[0..4].copy_from_slice(&1u32.to_le_bytes());
                        p
                    }
                    _ => return (SC_INVALID_FIELD, 0),
                };
                match self.dma_write_prp(bus, prp1, prp2, &page) {
                    Ok(()) => (SC_SUCCESS, 0),
                    Err(()) => {
                        self.stats.dma_errors += 1;
                        (SC_DATA_TRANSFER_ERROR, 0)
                    }
                }
            }
            ADMIN_CREATE_CQ => {
                let qid = dw(10) as u16;
                let size = (dw(10) >> 16) as u16 + 1;
                let ien = dw(11) & 2 != 0;
                let iv = (dw(11) >> 16) as u16;
                if qid == 0 || qid >= MAX_QUEUES || self.cqs.contains_key(&qid) || size < 2 || iv >= MSIX_ENTRIES {
                    return (SC_INVALID_QID, 0);
                }
                self.cqs.insert(
                    qid,
                    Queue { base: prp1, size, head: 0, tail: 0, phase: true, cqid: qid, vector: ien.then_some(iv) },
                );
                (SC_SUCCESS, 0)
            }
            ADMIN_CREATE_SQ => {
                let qid = dw(10) as u16;
                let size = (dw(10) >> 16) as u16 + 1;
                let cqid = (dw(11) >> 16) as u16;
                if qid == 0
                    || qid >= MAX_QUEUES
                    || self.sqs.contains_key(&qid)
                    || !self.cqs.contains_key(&cqid)
                    || size < 2
                {
                    return (SC_INVALID_QID, 0);
                }
                self.sqs.insert(qid, Queue { base: prp1, size, head: 0, tail: 0, phase: true, cqid, vector: None });
                (SC_SUCCESS, 0)
            }
            ADMIN_DELETE_SQ => match self.sqs.remove(&(dw(10) as u16)) {
                Some(_) if dw(10) as u16 != 0 => (SC_SUCCESS, 0),
                _ => (SC_INVALID_QID, 0),
            },
            ADMIN_DELETE_CQ => {
                let qid = dw(10) as u16;
                if qid == 0 || self.sqs.values().any(|q| q.cqid == qid) || self.cqs.remove(&qid).is_none() {
                    (SC_INVALID_QID, 0)
                } else {
                    (SC_SUCCESS, 0)
                }
            }
            ADMIN_SET_FEATURES if dw(10) & 0xff == 0x07 => {
                let n = (MAX_QUEUES - 2) as u32;
                (SC_SUCCESS, n << 16 | n)
            }
            _ => (SC_INVALID_OPCODE, 0),
        }
    }

    fn identify_namespace(&self) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        let blocks = (self.namespace.len() / LBA_SIZE) as u64;
        p[0..8].copy_from_slice(&blocks.to_le_bytes());
        p[8..16].copy_from_slice(&blocks.to_le_bytes());
        p[16..24].copy_from_slice(&blocks.to_le_bytes());
        p[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes()); // LBAF0: 512-byte blocks
        p
    }

    fn io(&mut self, cmd: &[u8; 64], bus: &dyn DeviceBus) -> (u16, u32) {
        let dw = |i: usize| u32::from_le_bytes(cmd[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        if cmd[0] == IO_FLUSH {
            return (SC_SUCCESS, 0);
        }
        if dw(1) != 1 {
            return (SC_INVALID_NS, 0);
        }
        let prp1 = dw(6) as u64 | (dw(7) as u64) << 32;
        let prp2 = dw(8) as u64 | (dw(9) as u64) << 32;
        let slba = dw(10) as u64 | (dw(11) as u64) << 32;
        let nlb = (dw(12) & 0xffff) as u64 + 1;
        let total = (self.namespace.len() / LBA_SIZE) as u64;
        if slba.checked_add(nlb).is_none_or(|e| e > total) {
            return (SC_LBA_OUT_OF_RANGE, 0);
        }
        let (s, len) = (slba as usize * LBA_SIZE, nlb as usize * LBA_SIZE);
        match cmd[0] {
            IO_WRITE => match self.dma_read_prp(bus, prp1, prp2, len) {
                Ok(data) => {
                    self.namespace[s..s + len].copy_from_slice(&data);
                    self.stats.blocks_written += nlb;
                    (SC_SUCCESS, 0)
                }
                Err(()) => {
                    self.stats.dma_errors += 1;
                    (SC_DATA_TRANSFER_ERROR, 0)
                }
            },
            IO_READ => {
                let data = self.namespace[s..s + len].to_vec();
                match self.dma_write_prp(bus, prp1, prp2, &data) {
                    Ok(()) => {
                        self.stats.blocks_read += nlb;
                        (SC_SUCCESS, 0)
                    }
                    Err(()) => {
                        self.stats.dma_errors += 1;
                        (SC_DATA_TRANSFER_ERROR, 0)
                    }
                }
            }
            _ => (SC_INVALID_OPCODE, 0),
        }
    }
}

/// A bus for register writes made from dom0 (no guest memory, no interrupts).
struct NullBus;

impl DeviceBus for NullBus {
    fn dma_read(&self, _gpa: u64, _buf: &mut [u8]) -> Result<(), crate::xen::sim::machine::DmaError> {
        Err(crate::xen::sim::machine::DmaError::NotAssigned(Sbdf::new(0, 0, 0, 0)))
    }
    fn dma_write(&self, _gpa: u64, _buf: &[u8]) -> Result<(), crate::xen::sim::machine::DmaError> {
        Err(crate::xen::sim::machine::DmaError::NotAssigned(Sbdf::new(0, 0, 0, 0)))
    }
    fn signal_msix(&self, _entry: u16) {}
    fn signal_msi(&self, _index: u32) {}
    fn signal_intx(&self) {}
}

fn identify_controller() -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    p[0..2].copy_from_slice(&NVME_VENDOR.to_le_bytes());
    p[2..4].copy_from_slice(&0x1af4u16.to_le_bytes());
    let pad = |s: &str, n: usize| format!("{s:<n$}").into_bytes();
    p[4..24].copy_from_slice(&pad(SERIAL, 20));
    p[24..64].copy_from_slice(&pad(MODEL, 40));
    p[64..72].copy_from_slice(&pad("1.0", 8));
    p[77] = 5; // MDTS: 2^5 pages
    p[512] = 0x66; // SQES
    p[513] = 0x44; // CQES
    p[516..520].copy_from_slice(&1u32.to_le_bytes()); // NN
    p
}

/// Split a PRP1/PRP2 transfer into (guest address, length) segments, following PRP lists.
fn prp_segments(bus: &dyn DeviceBus, prp1: u64, prp2: u64, len: usize) -> Result<Vec<(u64, usize)>, ()> {
    let page = PAGE_SIZE as usize;
    let first = len.min(page - (prp1 as usize & (page - 1)));
    let mut segs = vec![(prp1, first)];
    let mut left = len - first;
    if left == 0 {
        return Ok(segs);
    }
    if left <= page {
        segs.push((prp2, left));
        return Ok(segs);
    }
    let mut list = prp2;
    while left > 0 {
        if list & 7 != 0 {
            return Err(());
        }
        let slots = (page - (list as usize & (page - 1))) / 8;
        let mut raw = vec![0u8; slots * 8];
        bus.dma_read(list, &mut raw).map_err(|_| ())?;
        for i in 0..slots {
            let e = u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            if i == slots - 1 && left > page {
                list = e; // chain to the next list page
                break;
            }
            let n = left.min(page);
            segs.push((e, n));
            left -= n;
            if left == 0 {
                break;
            }
        }
    }
    Ok(segs)
}

impl MachineDevice for EmulatedNvme {
    fn sbdf(&self) -> Sbdf {
        self.sbdf
    }
    fn machine_bars(&self) -> Vec<MachineBar> {
        vec![MachineBar { index: 0, base: self.bar0, size: BAR0_SIZE, io: false }]
    }
    fn bar_read(&self, bar: u8, offset: u64, size: u32, bus: &dyn DeviceBus) -> u64 {
        let mut g = self.lock();
        if bar != 0 || offset >= BAR0_SIZE || g.cfg.get(COMMAND_OFFSET, 2) & COMMAND_MEMORY_BIT as u32 == 0 {
            return !0; // no decode: the access master-aborts
        }
        g.send_pending(bus);
        g.reg_read(offset, size)
    }
    fn bar_write(&self, bar: u8, offset: u64, size: u32, value: u64, bus: &dyn DeviceBus) {
        let mut g = self.lock();
        if bar != 0 || offset >= BAR0_SIZE || g.cfg.get(COMMAND_OFFSET, 2) & COMMAND_MEMORY_BIT as u32 == 0 {
            return;
        }
        g.send_pending(bus);
        if g.cfg.get(COMMAND_OFFSET, 2) & COMMAND_MASTER_BIT as u32 == 0
            && (REG_DOORBELL..MSIX_TABLE_OFFSET).contains(&offset)
        {
            // Without bus mastering the controller cannot fetch commands.
            g.csts |= 2;
            return;
        }
        g.reg_write(offset, size, value, bus);
    }
    fn msix_entries(&self) -> u16 {
        MSIX_ENTRIES
    }
    fn gsi(&self) -> Option<u32> {
        Some(self.irq)
    }
    fn xen_set_vector_mask(&self, entry: u16, masked: bool) {
        let mut g = self.lock();
        if let Some(w) = g.msix_table.get_mut(entry as usize * 4 + 3) {
            *w = (*w & !1) | masked as u32;
        }
    }
}
