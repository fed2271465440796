//! A simulated guest OS that drives a passed-through NVMe controller the way Linux does:
//! enumerate bus 0 through CF8/CFC, size and assign BARs with decode off, enable memory
//! decode and bus mastering, program MSI-X (all entries masked under Function Mask,
//! enable, then unmask one by one), bring the controller up, identify it, create I/O
//! queues, and move data, waiting for each completion by interrupt.

use std::time::Duration;

use crate::config_space::caps::msix::{CONTROL_ENABLE_BIT, CONTROL_MASKALL_BIT};
use crate::host::nvme::*;
use crate::pci::*;
use crate::xen::sim::guest::{GuestError, SimGuest};

#[derive(Debug, thiserror::Error)]
pub enum GuestOsError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("{0}")]
    Failed(String),
}

pub type GResult<T> = Result<T, GuestOsError>;

fn fail<T>(msg: impl Into<String>) -> GResult<T> {
    Err(GuestOsError::Failed(msg.into()))
}

/// A BAR as the guest found and placed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoundBar {
    pub index: u8,
    pub size: u64,
    pub is_64: bool,
    pub addr: u64,
}

/// How the guest takes interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IrqMode {
    Msix,
    Msi,
    /// The legacy INTx line through the guest's IO-APIC (HVM only).
    Intx,
}

/// Which kind of guest OS driver to behave like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestFlavour {
    /// Native Linux: real vectors in the messages, entries masked and unmasked.
    Linux,
    /// PV-on-HVM Linux: Xen's pirq message format (vector 0, the pirq in the destination
    /// and upper address), mask bits never touched, interrupts as event-channel events.
    PvOnHvm,
}

/// A queue pair the guest driver owns.
#[derive(Clone, Copy, Debug)]
struct QueuePair {
    qid: u16,
    sq: u64,
    cq: u64,
    size: u16,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    /// What announces its completions: an APIC vector, or a pirq (PV-on-HVM).
    irq: u32,
}

pub struct GuestOs<'a> {
    pub g: SimGuest,
    pub vcpu: u32,
    pub sbdf: Sbdf,
    pub bar0: u64,
    pub msix_cap: u16,
    pub flavour: GuestFlavour,
    /// Interrupt source i (MSI-X entry or MSI vector) announces itself as `vectors[i]`:
    /// an APIC vector, or a pirq for a PV-on-HVM guest.
    pub vectors: Vec<u32>,
    /// Interrupts seen (vectors or pirqs), in order.
    pub interrupts: Vec<u32>,
    next_ram: u64,
    next_mmio: u64,
    admin: Option<QueuePair>,
    io_queues: Vec<QueuePair>,
    cid: u16,
    say: &'a mut dyn FnMut(String),
}

const IRQ_TIMEOUT: Duration = Duration::from_secs(5);

impl<'a> GuestOs<'a> {
    pub fn new(g: SimGuest, say: &'a mut dyn FnMut(String)) -> Self {
        GuestOs {
            g,
            vcpu: 0,
            flavour: GuestFlavour::Linux,
            sbdf: Sbdf::new(0, 0, 0, 0),
            bar0: 0,
            msix_cap: 0,
            vectors: Vec::new(),
            interrupts: Vec::new(),
            next_ram: 0x10_0000,
            next_mmio: 0xf000_0000,
            admin: None,
            io_queues: Vec::new(),
            cid: 0,
            say,
        }
    }

    fn say(&mut self, s: String) {
        (self.say)(s)
    }

    /// Add a line to the guest's transcript.
    pub fn say_public(&mut self, s: String) {
        self.say(s)
    }

    /// Allocate page-aligned guest RAM.
    pub fn alloc(&mut self, bytes: u64) -> u64 {
        let a = self.next_ram;
        self.next_ram += bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        a
    }

    pub fn cfg_read(&self, reg: u16, size: u32) -> GResult<u32> {
        Ok(self.g.cfg_read(self.vcpu, self.sbdf, reg, size)?)
    }

    pub fn cfg_write(&self, reg: u16, size: u32, v: u32) -> GResult<()> {
        Ok(self.g.cfg_write(self.vcpu, self.sbdf, reg, size, v)?)
    }

    /// Linux's pci_check_type1: write 0x8000_0000 to port 0xCF8 and read it back. Without
    /// a chipset answering the port there is no configuration access at all.
    pub fn probe_pci(&mut self) -> GResult<()> {
        let saved = self.g.pio_read(self.vcpu, 0xcf8, 4)?;
        self.g.pio_write(self.vcpu, 0xcf8, 4, 0x8000_0000)?;
        let back = self.g.pio_read(self.vcpu, 0xcf8, 4)?;
        self.g.pio_write(self.vcpu, 0xcf8, 4, saved)?;
        if back != 0x8000_0000 {
            return fail(format!("no PCI: the configuration mechanism #1 probe read back {back:#x} from port 0xCF8"));
        }
        Ok(())
    }

    /// Scan bus 0 for an NVMe controller (class 01:08:02).
    pub fn enumerate(&mut self) -> GResult<Sbdf> {
        self.probe_pci()?;
        let mut found = Vec::new();
        for dev in 0..32 {
            let sbdf = Sbdf::new(0, 0, dev, 0);
            let id = self.g.cfg_read(self.vcpu, sbdf, 0, 4)?;
            if id == 0xffff_ffff {
                continue;
            }
            let class = self.g.cfg_read(self.vcpu, sbdf, 8, 4)? >> 8;
            found.push((sbdf, id, class));
        }
        let n = found.len();
        self.say(format!("scanned bus 0 through CF8/CFC: {n} function(s) answer"));
        for &(sbdf, id, class) in &found {
            self.say(format!("  {sbdf}: [{:04x}:{:04x}] class {class:06x}", id & 0xffff, id >> 16));
        }
        match found.iter().find(|f| f.2 == 0x010802) {
            Some(&(sbdf, ..)) => {
                self.sbdf = sbdf;
                Ok(sbdf)
            }
            None => fail("no NVMe controller (class 010802) on bus 0"),
        }
    }

    /// Size every BAR with decode off (as Linux does), then assign addresses.
    pub fn size_and_assign_bars(&mut self) -> GResult<Vec<FoundBar>> {
        let cmd = self.cfg_read(COMMAND_OFFSET, 2)?;
        self.cfg_write(COMMAND_OFFSET, 2, cmd & !((COMMAND_IO_BIT | COMMAND_MEMORY_BIT) as u32))?;
        let mut bars = Vec::new();
        let mut i = 0u8;
        while i < 6 {
            let off = BAR0_OFFSET + 4 * i as u16;
            let orig = self.cfg_read(off, 4)?;
            self.cfg_write(off, 4, !0)?;
            let lo = self.cfg_read(off, 4)?;
            self.cfg_write(off, 4, orig)?;
            if lo == 0 {
                i += 1;
                continue;
            }
            if lo & BAR_IO_BIT != 0 {
                i += 1;
                continue; // no I/O BARs on this controller
            }
            let is_64 = lo & BAR_MEM_TYPE_MASK == BAR_MEM_TYPE_64;
            let mut mask = (lo & !0xf) as u64 | 0xffff_ffff_0000_0000;
            if is_64 {
                let orig_hi = self.cfg_read(off + 4, 4)?;
                self.cfg_write(off + 4, 4, !0)?;
                let hi = self.cfg_read(off + 4, 4)?;
                self.cfg_write(off + 4, 4, orig_hi)?;
                mask = (lo & !0xf) as u64 | (hi as u64) << 32;
            }
            let size = (!mask).wrapping_add(1);
            let addr = self.next_mmio.next_multiple_of(size);
            self.next_mmio = addr + size;
            self.cfg_write(off, 4, addr as u32)?;
            if is_64 {
                self.cfg_write(off + 4, 4, (addr >> 32) as u32)?;
            }
            self.say(format!(
                "BAR{i}: {} memory, {size:#x} bytes, assigned at {addr:#x}",
                if is_64 { "64-bit" } else { "32-bit" }
            ));
            bars.push(FoundBar { index: i, size, is_64, addr });
            i += if is_64 { 2 } else { 1 };
        }
        if let Some(b) = bars.iter().find(|b| b.index == 0) {
            self.bar0 = b.addr;
        }
        Ok(bars)
    }

    pub fn enable_decode_and_master(&mut self) -> GResult<()> {
        let cmd = self.cfg_read(COMMAND_OFFSET, 2)?;
        self.cfg_write(COMMAND_OFFSET, 2, cmd | (COMMAND_MEMORY_BIT | COMMAND_MASTER_BIT) as u32)?;
        let now = self.cfg_read(COMMAND_OFFSET, 2)?;
        self.say(format!("command register {cmd:#06x} -> {now:#06x} (memory decode + bus master)"));
        Ok(())
    }

    /// Walk the capability list; returns (id, offset) pairs.
    pub fn capabilities(&mut self) -> GResult<Vec<(u8, u16)>> {
        let mut out = Vec::new();
        if self.cfg_read(STATUS_OFFSET, 2)? & STATUS_CAP_LIST_BIT as u32 == 0 {
            return Ok(out);
        }
        let mut p = self.cfg_read(CAP_PTR_OFFSET, 1)? as u16 & 0xfc;
        while p != 0 && out.len() < 48 {
            let hdr = self.cfg_read(p, 2)?;
            out.push((hdr as u8, p));
            p = (hdr >> 8) as u16 & 0xfc;
        }
        let names: Vec<String> =
            out.iter().map(|(id, o)| format!("[{o:#x}] {}", crate::config_space::caps::name(*id))).collect();
        self.say(format!("capabilities: {}", names.join(", ")));
        Ok(out)
    }

    fn msix_entry_addr(&self, table: u64, i: u16) -> u64 {
        table + i as u64 * 16
    }

    /// Program `n` MSI-X entries the Linux way; entry i raises vector `first_vector + i`
    /// on this vCPU.
    pub fn setup_msix(&mut self, n: u16, first_vector: u8) -> GResult<()> {
        let caps = self.capabilities()?;
        let Some(&(_, cap)) = caps.iter().find(|c| c.0 == CAP_ID_MSIX) else { return fail("no MSI-X capability") };
        self.msix_cap = cap;
        let ctrl = self.cfg_read(cap + 2, 2)?;
        let size = (ctrl & 0x7ff) as u16 + 1;
        let table = self.cfg_read(cap + 4, 4)?;
        if table & 7 != 0 {
            return fail("MSI-X table not in BAR0");
        }
        let table_addr = self.bar0 + (table & !7) as u64;
        self.say(format!("MSI-X: {size} entries, table at BAR0+{:#x} = {table_addr:#x}", table & !7));
        if n > size {
            return fail(format!("want {n} MSI-X vectors, device has {size}"));
        }
        self.cfg_write(cap + 2, 2, (CONTROL_ENABLE_BIT | CONTROL_MASKALL_BIT) as u32)?;
        let dest = self.g.apic_id(self.vcpu) as u64;
        self.vectors.clear();
        for i in 0..n {
            let e = self.msix_entry_addr(table_addr, i);
            let v = first_vector + i as u8;
            self.g.mmio_write(self.vcpu, e, 4, 0xfee0_0000 | dest << 12)?;
            self.g.mmio_write(self.vcpu, e + 4, 4, 0)?;
            self.g.mmio_write(self.vcpu, e + 8, 4, v as u64)?;
            self.g.mmio_write(self.vcpu, e + 12, 4, 1)?;
            self.vectors.push(v as u32);
        }
        self.say(format!("programmed {n} entries (masked, under Function Mask), vectors {first_vector:#x}.."));
        self.cfg_write(cap + 2, 2, CONTROL_ENABLE_BIT as u32)?;
        self.say("MSI-X enabled, Function Mask cleared".into());
        for i in 0..n {
            self.g.mmio_write(self.vcpu, self.msix_entry_addr(table_addr, i) + 12, 4, 0)?;
        }
        self.say(format!("unmasked entries 0..{n}"));
        Ok(())
    }

    /// Program `n` MSI-X entries the PV-on-HVM Linux way: a pirq from Xen per entry, the
    /// pirq in the message (vector 0), mask bits never written, MSI-X enabled, then each
    /// pirq bound to an event channel.
    pub fn setup_msix_pv_on_hvm(&mut self, n: u16) -> GResult<()> {
        let caps = self.capabilities()?;
        let Some(&(_, cap)) = caps.iter().find(|c| c.0 == CAP_ID_MSIX) else { return fail("no MSI-X capability") };
        self.msix_cap = cap;
        let table = self.cfg_read(cap + 4, 4)?;
        let table_addr = self.bar0 + (table & !7) as u64;
        self.vectors.clear();
        for i in 0..n {
            let pirq = self.g.get_free_pirq()?;
            let e = self.msix_entry_addr(table_addr, i);
            self.g.mmio_write(self.vcpu, e, 4, 0xfee0_0000 | ((pirq as u64 & 0xff) << 12))?;
            self.g.mmio_write(self.vcpu, e + 4, 4, pirq as u64 & 0xffff_ff00)?;
            self.g.mmio_write(self.vcpu, e + 8, 4, 0)?;
            self.vectors.push(pirq);
        }
        self.say(format!("PV-on-HVM: {n} entries carry pirqs {:?} (vector 0), mask bits untouched", self.vectors));
        self.cfg_write(cap + 2, 2, CONTROL_ENABLE_BIT as u32)?;
        for &p in &self.vectors.clone() {
            self.g.bind_pirq_evtchn(p)?;
        }
        self.say("MSI-X enabled; pirqs bound to event channels".into());
        Ok(())
    }

    /// Program MSI with enough vectors for `n` interrupt sources (a power of two), all
    /// unmasked, vectors `base | i`.
    pub fn setup_msi(&mut self, n: u16, base: u8) -> GResult<()> {
        let caps = self.capabilities()?;
        let Some(&(_, cap)) = caps.iter().find(|c| c.0 == CAP_ID_MSI) else { return fail("no MSI capability") };
        let ctrl = self.cfg_read(cap + 2, 2)?;
        let mmc = (ctrl >> 1) & 7;
        let want = (n as u32).next_power_of_two().trailing_zeros();
        if want > mmc {
            return fail(format!("want {n} MSI vectors, the function can do {}", 1 << mmc));
        }
        let is64 = ctrl & 0x80 != 0;
        let dest = self.g.apic_id(self.vcpu);
        self.cfg_write(cap + 4, 4, 0xfee0_0000 | dest << 12)?;
        let data_off = if is64 {
            self.cfg_write(cap + 8, 4, 0)?;
            cap + 12
        } else {
            cap + 8
        };
        self.cfg_write(data_off, 2, base as u32)?;
        if ctrl & 0x100 != 0 {
            self.cfg_write(data_off + 4, 4, 0)?;
        }
        self.cfg_write(cap + 2, 2, 1 | want << 4)?;
        let back = self.cfg_read(cap + 2, 2)?;
        if back & 1 == 0 {
            return fail("MSI did not stay enabled (xenpt refused it)");
        }
        let count = 1u32 << want;
        self.vectors = (0..n as u32).map(|i| (base as u32) | (i % count)).collect();
        self.say(format!("MSI enabled with {count} vector(s) {:#x}..", base));
        Ok(())
    }

    /// Use the INTx line: find the pin, route the GSI Xen derives from slot and pin
    /// (((slot << 2) + (slot >> 3) + pin) % 32 + 16) to `vector` in the IO-APIC, and make
    /// sure INTx is not disabled. Every interrupt source then shares `vector`.
    pub fn setup_intx(&mut self, n: u16, vector: u8) -> GResult<()> {
        let pin = self.cfg_read(INTERRUPT_PIN_OFFSET, 1)?;
        if !(1..=4).contains(&pin) {
            return fail(format!("no INTx: interrupt pin reads {pin}"));
        }
        let slot = self.sbdf.dev as u32;
        let gsi = ((slot << 2) + (slot >> 3) + pin - 1) % 32 + 16;
        self.g.ioapic_route(gsi, vector)?;
        let cmd = self.cfg_read(COMMAND_OFFSET, 2)?;
        self.cfg_write(COMMAND_OFFSET, 2, cmd & !(COMMAND_INTX_DISABLE_BIT as u32))?;
        self.vectors = vec![vector as u32; n as usize];
        self.say(format!("INTx: pin {}, guest GSI {gsi} routed to vector {vector:#x}", (b'A' + pin as u8 - 1) as char));
        Ok(())
    }

    /// Mask or unmask MSI vector `i` through the per-vector mask register.
    pub fn msi_mask(&mut self, i: u32, masked: bool) -> GResult<()> {
        let caps = self.capabilities()?;
        let Some(&(_, cap)) = caps.iter().find(|c| c.0 == CAP_ID_MSI) else { return fail("no MSI capability") };
        let ctrl = self.cfg_read(cap + 2, 2)?;
        let mask_off = cap + if ctrl & 0x80 != 0 { 16 } else { 12 };
        let cur = self.cfg_read(mask_off, 4)?;
        let v = if masked { cur | 1 << i } else { cur & !(1 << i) };
        self.cfg_write(mask_off, 4, v)
    }

    fn reg32(&self, off: u64) -> GResult<u32> {
        Ok(self.g.mmio_read(self.vcpu, self.bar0 + off, 4)? as u32)
    }

    fn wreg32(&self, off: u64, v: u32) -> GResult<()> {
        Ok(self.g.mmio_write(self.vcpu, self.bar0 + off, 4, v as u64)?)
    }

    fn wreg64(&self, off: u64, v: u64) -> GResult<()> {
        Ok(self.g.mmio_write(self.vcpu, self.bar0 + off, 8, v)?)
    }

    fn wait_ready(&self, want: bool) -> GResult<()> {
        for _ in 0..1000 {
            let csts = self.reg32(REG_CSTS)?;
            if csts & 2 != 0 {
                return fail("controller fatal status (CSTS.CFS)");
            }
            if (csts & CSTS_RDY_BIT != 0) == want {
                return Ok(());
            }
        }
        fail(format!("CSTS.RDY did not become {}", want as u8))
    }

    /// Reset and enable the controller with an admin queue pair on MSI-X entry 0.
    pub fn nvme_enable(&mut self) -> GResult<()> {
        let cap_lo = self.reg32(REG_CAP)?;
        let vs = self.reg32(REG_VS)?;
        self.say(format!("NVMe CAP.MQES={} VS={}.{}", (cap_lo & 0xffff) + 1, vs >> 16, (vs >> 8) & 0xff));
        self.wreg32(REG_CC, 0)?;
        self.wait_ready(false)?;
        let size = 32u16;
        let (sq, cq) = (self.alloc(size as u64 * 64), self.alloc(size as u64 * 16));
        self.wreg32(REG_AQA, (size as u32 - 1) << 16 | (size as u32 - 1))?;
        self.wreg64(REG_ASQ, sq)?;
        self.wreg64(REG_ACQ, cq)?;
        self.wreg32(REG_CC, CC_EN_BIT | 6 << 16 | 4 << 20)?;
        self.wait_ready(true)?;
        self.admin =
            Some(QueuePair { qid: 0, sq, cq, size, sq_tail: 0, cq_head: 0, phase: true, irq: self.vectors[0] });
        self.say(format!("controller enabled: admin SQ at {sq:#x}, CQ at {cq:#x}, {size} entries"));
        Ok(())
    }

    /// Submit one command and wait for its completion by interrupt. Returns (status, dw0).
    /// Submit one command and wait for its completion by interrupt. Returns (status, dw0).
    fn submit(&mut self, q: &mut QueuePair, cmd: [u8; 64]) -> GResult<(u16, u32)> {
        self.post(q, cmd)?;
        self.wait_irq(q.irq, q.qid)?;
        self.reap(q)
    }

    /// Put a command on a submission queue and ring its doorbell.
    fn post(&mut self, q: &mut QueuePair, mut cmd: [u8; 64]) -> GResult<()> {
        self.cid = self.cid.wrapping_add(1);
        cmd[2..4].copy_from_slice(&self.cid.to_le_bytes());
        self.g.ram_write(q.sq + q.sq_tail as u64 * 64, &cmd)?;
        q.sq_tail = (q.sq_tail + 1) % q.size;
        self.wreg32(REG_DOORBELL + 8 * q.qid as u64, q.sq_tail as u32)
    }

    /// Take the completion the interrupt announced. Returns (status, dw0).
    fn reap(&mut self, q: &mut QueuePair) -> GResult<(u16, u32)> {
        let mut cqe = [0u8; 16];
        self.g.ram_read(q.cq + q.cq_head as u64 * 16, &mut cqe)?;
        let sf = u16::from_le_bytes([cqe[14], cqe[15]]);
        if (sf & 1 != 0) != q.phase {
            return fail("interrupt arrived but the completion entry is not posted (phase)");
        }
        let cid = u16::from_le_bytes([cqe[12], cqe[13]]);
        if cid != self.cid {
            return fail(format!("completion for command {cid}, expected {}", self.cid));
        }
        q.cq_head = (q.cq_head + 1) % q.size;
        if q.cq_head == 0 {
            q.phase = !q.phase;
        }
        self.wreg32(REG_DOORBELL + 8 * q.qid as u64 + 4, q.cq_head as u32)?;
        Ok((sf >> 1, u32::from_le_bytes(cqe[0..4].try_into().expect("4 bytes"))))
    }

    /// Submit a read of one block on I/O queue `qid` without waiting for it; then
    /// `finish_read` waits for its interrupt and takes the completion.
    pub fn start_read(&mut self, qid: u16, lba: u64, buf: u64) -> GResult<()> {
        let c = Self::cmd(IO_READ, 1, buf, 0, [lba as u32, (lba >> 32) as u32, 0, 0, 0, 0]);
        let i = self.io_queue(qid)?;
        let mut q = self.io_queues[i];
        let r = self.post(&mut q, c);
        self.io_queues[i] = q;
        r
    }

    pub fn finish_read(&mut self, qid: u16) -> GResult<()> {
        let i = self.io_queue(qid)?;
        let mut q = self.io_queues[i];
        let r = self.wait_irq(q.irq, qid).and_then(|_| self.reap(&mut q));
        self.io_queues[i] = q;
        match r? {
            (0, _) => Ok(()),
            (st, _) => fail(format!("read on queue {qid}: status {st:#x}")),
        }
    }

    fn io_queue(&self, qid: u16) -> GResult<usize> {
        self.io_queues
            .iter()
            .position(|q| q.qid == qid)
            .ok_or_else(|| GuestOsError::Failed(format!("no I/O queue {qid}")))
    }

    /// Wait for the interrupt that announces a completion: an APIC vector on this vCPU,
    /// or the pirq's event for a PV-on-HVM guest.
    pub fn wait_irq(&mut self, expected: u32, qid: u16) -> GResult<()> {
        let got = match self.flavour {
            GuestFlavour::Linux => self.g.wait_interrupt(self.vcpu, IRQ_TIMEOUT)?.map(u32::from),
            GuestFlavour::PvOnHvm => self.g.wait_pirq_event(IRQ_TIMEOUT)?,
        };
        let what = if self.flavour == GuestFlavour::Linux { "vector" } else { "pirq" };
        let Some(v) = got else {
            return fail(format!(
                "no interrupt within {IRQ_TIMEOUT:?} for queue {qid} (expected {what} {expected:#x})"
            ));
        };
        self.interrupts.push(v);
        if v != expected {
            return fail(format!("interrupt on {what} {v:#x}, queue {qid} completes on {expected:#x}"));
        }
        Ok(())
    }

    fn admin_cmd(&mut self, cmd: [u8; 64]) -> GResult<(u16, u32)> {
        let mut q = self.admin.ok_or_else(|| GuestOsError::Failed("controller not enabled".into()))?;
        let r = self.submit(&mut q, cmd);
        self.admin = Some(q);
        r
    }

    fn cmd(opc: u8, nsid: u32, prp1: u64, prp2: u64, cdw: [u32; 6]) -> [u8; 64] {
        let mut c = [0u8; 64];
        c[0] = opc;
        c[4..8].copy_from_slice(&nsid.to_le_bytes());
        c[24..32].copy_from_slice(&prp1.to_le_bytes());
        c[32..40].copy_from_slice(&prp2.to_le_bytes());
        for (i, d) in cdw.iter().enumerate() {
            c[40 + 4 * i..44 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        c
    }

    /// Identify Controller and Namespace 1. Returns (model, serial, blocks).
    pub fn identify(&mut self) -> GResult<(String, String, u64)> {
        let buf = self.alloc(4096);
        let (st, _) = self.admin_cmd(Self::cmd(ADMIN_IDENTIFY, 0, buf, 0, [1, 0, 0, 0, 0, 0]))?;
        if st != 0 {
            return fail(format!("Identify Controller failed: status {st:#x}"));
        }
        let mut page = vec![0u8; 4096];
        self.g.ram_read(buf, &mut page)?;
        let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&page[r]).trim().to_string();
        let (serial, model) = (text(4..24), text(24..64));
        let (st, _) = self.admin_cmd(Self::cmd(ADMIN_IDENTIFY, 1, buf, 0, [0; 6]))?;
        if st != 0 {
            return fail(format!("Identify Namespace failed: status {st:#x}"));
        }
        self.g.ram_read(buf, &mut page)?;
        let blocks = u64::from_le_bytes(page[0..8].try_into().expect("8 bytes"));
        let lbads = page[130];
        self.say(format!(
            "Identify: model \"{model}\", serial \"{serial}\", namespace 1: {blocks} blocks of {} bytes",
            1u32 << lbads
        ));
        Ok((model, serial, blocks))
    }

    /// Create I/O queue pairs 1..=n, queue i completing on MSI-X entry i.
    pub fn create_io_queues(&mut self, n: u16) -> GResult<Vec<u16>> {
        let size = 16u16;
        let mut qs = Vec::new();
        for qid in 1..=n {
            let (sq, cq) = (self.alloc(size as u64 * 64), self.alloc(size as u64 * 16));
            let qsz = (size as u32 - 1) << 16 | qid as u32;
            let (st, _) =
                self.admin_cmd(Self::cmd(ADMIN_CREATE_CQ, 0, cq, 0, [qsz, (qid as u32) << 16 | 3, 0, 0, 0, 0]))?;
            if st != 0 {
                return fail(format!("Create I/O CQ {qid}: status {st:#x}"));
            }
            let (st, _) =
                self.admin_cmd(Self::cmd(ADMIN_CREATE_SQ, 0, sq, 0, [qsz, (qid as u32) << 16 | 1, 0, 0, 0, 0]))?;
            if st != 0 {
                return fail(format!("Create I/O SQ {qid}: status {st:#x}"));
            }
            let irq = *self
                .vectors
                .get(qid as usize)
                .ok_or_else(|| GuestOsError::Failed(format!("no interrupt source for queue {qid}")))?;
            self.io_queues.push(QueuePair { qid, sq, cq, size, sq_tail: 0, cq_head: 0, phase: true, irq });
            qs.push(qid);
        }
        self.say(format!("created {n} I/O queue pair(s), queue i on interrupt source i"));
        Ok(qs)
    }

    /// Build PRP1/PRP2 for a buffer of `len` bytes at `buf` (page aligned).
    fn prps(&mut self, buf: u64, len: u64) -> GResult<(u64, u64)> {
        let pages = len.div_ceil(PAGE_SIZE);
        Ok(match pages {
            1 => (buf, 0),
            2 => (buf, buf + PAGE_SIZE),
            _ => {
                let list = self.alloc(PAGE_SIZE);
                let entries: Vec<u8> = (1..pages).flat_map(|p| (buf + p * PAGE_SIZE).to_le_bytes()).collect();
                self.g.ram_write(list, &entries)?;
                (buf, list)
            }
        })
    }

    /// Read or write `blocks` blocks at `lba` on I/O queue `qid` through guest buffer `buf`.
    pub fn rw(&mut self, qid: u16, write: bool, lba: u64, blocks: u32, buf: u64) -> GResult<()> {
        let (prp1, prp2) = self.prps(buf, blocks as u64 * LBA_SIZE as u64)?;
        let opc = if write { IO_WRITE } else { IO_READ };
        let c = Self::cmd(opc, 1, prp1, prp2, [lba as u32, (lba >> 32) as u32, blocks - 1, 0, 0, 0]);
        let i = self
            .io_queues
            .iter()
            .position(|q| q.qid == qid)
            .ok_or_else(|| GuestOsError::Failed(format!("no I/O queue {qid}")))?;
        let mut q = self.io_queues[i];
        let r = self.submit(&mut q, c);
        self.io_queues[i] = q;
        let (st, _) = r?;
        if st != 0 {
            return fail(format!(
                "{} of {blocks} blocks at LBA {lba} on queue {qid}: status {st:#x}",
                if write { "write" } else { "read" }
            ));
        }
        Ok(())
    }
}
