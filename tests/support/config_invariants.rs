//! The config-space invariants shared by the property tests (tests/config_props.rs) and the
//! fuzz target (fuzz/fuzz_targets/config_space.rs): a DeviceModel over a [`DumpDevice`],
//! driven one access at a time, every step checked for:
//! - read-only bits never change: every bit the policy does not let the guest write
//!   (`!(writable | w1c)` of `ConfigSpace::masks`) reads the same before and after a
//!   write, in every dword of the space;
//! - only pass-through bits reach the device: the policy passes through only the bits
//!   xenpt documents (bus master, status and PCIe Device Status error bits); every host
//!   config write changes only those bits or the ones xenpt itself owns (start-up: command
//!   decode and INTx disable; MSI and MSI-X Enable, MME and Function Mask; ROM enable;
//!   teardown: bus master); no host write carries a 1 to a host W1C bit the guest did not
//!   write 1 to; the host's decode is never turned off after start-up (XSA-120/126);
//! - bad accesses read all-ones; good reads agree with the guest-visible snapshot;
//! - the guest-visible capability chain stays inside 0x40..0xff, never loops, has
//!   dword-aligned pointers, agrees with the Capabilities List bit, and is the chain of
//!   exposed capabilities the device was built with, before and after any sequence (the
//!   extended chain, if any, stays inside 0x100..size, never loops, and is the chain of
//!   exposed extended capabilities, behind a Null header at 0x100 when the host's first
//!   one is hidden).

#![allow(dead_code)] // each includer uses its own part

use std::collections::BTreeMap;
use std::path::Path;

use xenpt::device::{DeviceModel, DeviceOptions};
use xenpt::host::dump::{format_dump, parse_dump, DumpDevice, HostWrite, WriteLog};
use xenpt::pci::*;
use xenpt::xen::sim::{Sim, SimXen};
use xenpt::xen::GuestKind;
use xenpt::Profile;

/// One guest config access.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Read { off: u32, size: u32 },
    Write { off: u32, size: u32, value: u32 },
}

pub fn opts(domid: u16, profile: Profile) -> DeviceOptions {
    DeviceOptions::new(domid, Sbdf::new(0, 0, 4, 0), profile)
}

/// (file name, dump text) of every corpus device xenpt accepts in the HVM profile
/// (bridges and mid-page BARs are refused), sorted by file name: the fuzz target's first
/// input byte indexes this list.
pub fn usable_corpus(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpus lives next to the project root)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "lspci"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| (f.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&f).unwrap()))
        .filter(|(_, text)| {
            let dev = DumpDevice::from_text(text).unwrap();
            DeviceModel::new(Box::new(dev), 0, opts(1, Profile::Hvm)).is_ok()
        })
        .collect()
}

/// Size 1, 2 or 4, inside one dword, inside a space of `limit` bytes.
pub fn legal(off: u32, size: u32, limit: usize) -> bool {
    matches!(size, 1 | 2 | 4) && off % 4 + size <= 4 && off as u64 + size as u64 <= limit as u64
}

fn all_ones(size: u32) -> u32 {
    if size >= 4 {
        !0
    } else {
        (1u32 << (8 * size)) - 1
    }
}

fn dword(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap())
}

/// What may reach the host, per dword.
struct HostRules {
    /// Host-owned bits a guest write may change (writable or W1C).
    pass: Vec<u32>,
    /// Host-owned W1C bits.
    w1c: Vec<u32>,
    msix_ctrl: Option<usize>,
    msi_ctrl: Option<usize>,
    /// The host's decode bits xenpt keeps on (for the BAR kinds the device has).
    decode: u32,
}

impl HostRules {
    fn new(dm: &DeviceModel) -> Self {
        let masks: Vec<_> = (0..dm.cfg.size() / 4).map(|i| dm.cfg.masks((i * 4) as u16)).collect();
        let bars = || dm.resources.bars.iter().flatten();
        let decode = if bars().any(|b| b.is_io()) { COMMAND_IO_BIT } else { 0 }
            | if bars().any(|b| !b.is_io()) { COMMAND_MEMORY_BIT } else { 0 };
        HostRules {
            pass: masks.iter().map(|&(_, emu, wr, w1c)| !emu & (wr | w1c)).collect(),
            w1c: masks.iter().map(|&(_, emu, _, w1c)| !emu & w1c).collect(),
            msix_ctrl: dm.caps.msix.map(|m| m.cap_offset as usize / 4),
            // xenpt turns off the first MSI capability at start-up even when it hides it.
            msi_ctrl: dm.caps.caps.iter().find(|c| c.id == CAP_ID_MSI).map(|c| c.offset as usize / 4),
            decode: decode as u32,
        }
    }

    /// The pass-through bits xenpt documents (DESIGN: only these ever reach hardware from a
    /// guest write): command bus master, status error bits (W1C), PCIe Device Status error
    /// bits and Link Status bandwidth-status bits (W1C). A policy that passes any other bit through fails here, whatever its
    /// masks say.
    fn check_documented(&self, dm: &DeviceModel) -> Result<(), String> {
        let mut allowed = vec![0u32; self.pass.len()];
        allowed[COMMAND_OFFSET as usize / 4] = COMMAND_MASTER_BIT as u32 | (STATUS_ERROR_W1C_MASK as u32) << 16;
        if let Some(c) = dm.caps.caps.iter().find(|c| c.id == CAP_ID_EXP && c.hidden.is_none()) {
            allowed[c.offset as usize / 4 + 2] |= 0x000f_0000;
            if c.len >= 0x14 {
                allowed[c.offset as usize / 4 + 4] |= 0xc000_0000;
            }
        }
        for (i, (&pass, &ok)) in self.pass.iter().zip(&allowed).enumerate() {
            if pass & !ok != 0 {
                return Err(format!("dword {:#05x}: bits {:#010x} pass through to the host", i * 4, pass & !ok));
            }
        }
        Ok(())
    }

    /// Check one host write. `phase` is "start-up", "guest" (with the guest's dword index
    /// and data placed under its byte mask) or "teardown".
    fn check(&self, w: &HostWrite, phase: &str, guest: Option<(usize, u32)>) -> Result<(), String> {
        let i = w.offset as usize / 4;
        let shift = (w.offset as u32 % 4) * 8;
        let span = if w.size == 4 { !0 } else { ((1u32 << (8 * w.size as u32)) - 1) << shift };
        let changed = (w.old ^ w.new) << shift;
        let written = w.new << shift;
        let mut own = 0u32;
        match phase {
            "start-up" if i == COMMAND_OFFSET as usize / 4 => {
                own |= (COMMAND_IO_BIT | COMMAND_MEMORY_BIT | COMMAND_INTX_DISABLE_BIT) as u32
            }
            "teardown" if i == COMMAND_OFFSET as usize / 4 => own |= COMMAND_MASTER_BIT as u32,
            "guest" if i == ROM_BAR_OFFSET as usize / 4 => own |= ROM_ENABLE_BIT,
            _ => {}
        }
        if Some(i) == self.msix_ctrl {
            own |= 0xc000_0000; // MSI-X Enable and Function Mask
        }
        if Some(i) == self.msi_ctrl {
            own |= 0x0071_0000; // MSI Enable and Multiple Message Enable
        }
        let bad = changed & !(self.pass[i] | own);
        if bad != 0 {
            return Err(format!("{phase} host write {w:x?} changes bits {bad:#010x} that are not pass-through"));
        }
        let guest_ones = guest.filter(|&(g, _)| g == i).map(|(_, d)| d).unwrap_or(0);
        let stray = written & self.w1c[i] & !guest_ones;
        if stray != 0 {
            return Err(format!("{phase} host write {w:x?} writes 1 to host W1C bits {stray:#010x} the guest did not"));
        }
        let decode = self.decode & span;
        if phase != "start-up" && i == COMMAND_OFFSET as usize / 4 && written & decode != decode {
            return Err(format!("{phase} host write {w:x?} turns the host's decode off (XSA-120/126)"));
        }
        Ok(())
    }
}

/// The guest-visible capability chain: (id, offset) in order, or why it is broken.
pub fn guest_chain(snap: &[u8]) -> Result<Vec<(u8, u16)>, String> {
    let status = u16::from_le_bytes([snap[STATUS_OFFSET as usize], snap[STATUS_OFFSET as usize + 1]]);
    let mut ptr = snap[CAP_PTR_OFFSET as usize];
    if (status & STATUS_CAP_LIST_BIT != 0) != (ptr != 0) {
        return Err(format!("Capabilities List bit (status {status:#06x}) disagrees with the pointer {ptr:#04x}"));
    }
    let mut chain = Vec::new();
    let mut seen = [false; 256];
    while ptr != 0 {
        if ptr & 3 != 0 || ptr < 0x40 {
            return Err(format!("pointer {ptr:#04x} (after {chain:x?}) is unaligned or points into the header"));
        }
        if std::mem::replace(&mut seen[ptr as usize], true) {
            return Err(format!("chain loops at {ptr:#04x}: {chain:x?}"));
        }
        chain.push((snap[ptr as usize], ptr as u16));
        ptr = snap[ptr as usize + 1];
    }
    Ok(chain)
}

/// The guest-visible extended capability chain from 0x100: (id, offset) in order, or why
/// it is broken (pointer out of 0x100..size, unaligned, looping, all-ones header).
pub fn guest_ext_chain(snap: &[u8]) -> Result<Vec<(u16, u16)>, String> {
    let mut chain = Vec::new();
    if snap.len() <= 0x100 {
        return Ok(chain);
    }
    let mut ext = 0x100usize;
    let mut seen = std::collections::HashSet::new();
    loop {
        if ext < 0x100 || ext % 4 != 0 || ext + 4 > snap.len() || !seen.insert(ext) {
            return Err(format!("extended chain broken at {ext:#x} (after {chain:x?})"));
        }
        let h = dword(snap, ext / 4);
        if h == 0 {
            break;
        }
        if h == !0 {
            return Err(format!("extended header at {ext:#x} reads all-ones (after {chain:x?})"));
        }
        chain.push((h as u16, ext as u16));
        ext = (h >> 20) as usize;
        if ext == 0 {
            break;
        }
    }
    Ok(chain)
}

/// What a run exercised.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub guest_writes: usize,
    /// Host writes during guest writes, by offset.
    pub host_writes: BTreeMap<u16, usize>,
    /// Of those, writes to an exposed MSI or MSI-X Message Control.
    pub control_writes: usize,
}

/// A DeviceModel under test, on its own simulated Xen.
pub struct Harness {
    _sim: Sim,
    x: SimXen,
    pub dm: DeviceModel,
    log: WriteLog,
    seen: usize,
    rules: HostRules,
    ro: Vec<u32>,
    exposed: Vec<(u8, u16)>,
    ext_exposed: Vec<(u16, u16)>,
    controls: Vec<u16>,
    step: usize,
    pub stats: Stats,
}

impl Harness {
    /// Build the device and check the start-up invariants. Ok(None): xenpt refuses the
    /// device (bridge, unaligned BAR, ...), which is not a failure.
    pub fn new(host: DumpDevice, profile: Profile) -> Result<Option<Harness>, String> {
        let sim = Sim::default();
        let kind = if profile == Profile::Pvh { GuestKind::Pvh } else { GuestKind::Hvm };
        let domid = sim.create_domain(kind, 1, 4096);
        let x = sim.xen();
        let log = host.write_log();
        let Ok(dm) = DeviceModel::new(Box::new(host), 0, opts(domid, profile)) else { return Ok(None) };
        let rules = HostRules::new(&dm);
        rules.check_documented(&dm)?;
        let ro =
            (0..dm.cfg.size() / 4).map(|i| dm.cfg.masks((i * 4) as u16)).map(|(_, _, wr, w1c)| !(wr | w1c)).collect();
        let exposed = dm.caps.caps.iter().filter(|c| c.hidden.is_none()).map(|c| (c.id, c.offset)).collect();
        let controls = dm
            .caps
            .caps
            .iter()
            .filter(|c| matches!(c.id, CAP_ID_MSI | CAP_ID_MSIX) && c.hidden.is_none())
            .map(|c| c.offset + 2)
            .collect();
        let ext_exposed = dm.caps.guest_ext_chain();
        let mut h = Harness {
            _sim: sim,
            x,
            dm,
            log,
            seen: 0,
            rules,
            ro,
            exposed,
            ext_exposed,
            controls,
            step: 0,
            stats: Stats::default(),
        };
        for w in h.new_writes() {
            h.rules.check(&w, "start-up", None)?;
        }
        h.check_chain("at start-up")?;
        Ok(Some(h))
    }

    fn new_writes(&mut self) -> Vec<HostWrite> {
        let l = self.log.lock().unwrap();
        let v = l[self.seen..].to_vec();
        self.seen = l.len();
        v
    }

    fn check_chain(&mut self, when: &str) -> Result<(), String> {
        let snap = self.dm.guest_snapshot();
        let chain = guest_chain(&snap).map_err(|e| format!("{when}: {e}"))?;
        if chain != self.exposed {
            return Err(format!("{when}: guest chain {chain:x?} is not the exposed capabilities {:x?}", self.exposed));
        }
        let ext = guest_ext_chain(&snap).map_err(|e| format!("{when}: {e}"))?;
        if ext != self.ext_exposed {
            return Err(format!(
                "{when}: guest extended chain {ext:x?} is not the exposed capabilities {:x?}",
                self.ext_exposed
            ));
        }
        Ok(())
    }

    /// One guest access, with every per-step invariant checked.
    pub fn step(&mut self, op: Op) -> Result<(), String> {
        let n = self.step;
        self.step += 1;
        let limit = self.dm.cfg.size();
        match op {
            Op::Read { off, size } => {
                let got = self.dm.config_read(off, size);
                let want = if legal(off, size, limit) {
                    let snap = self.dm.guest_snapshot();
                    (0..size).fold(0, |a, k| a | (snap[(off + k) as usize] as u32) << (8 * k))
                } else {
                    all_ones(size)
                };
                if got != want {
                    return Err(format!("step {n} {op:x?}: read {got:#x}, expected {want:#x}"));
                }
            }
            Op::Write { off, size, value } => {
                self.stats.guest_writes += 1;
                let before = self.dm.guest_snapshot();
                self.dm.config_write(&mut self.x, off, size, value);
                let after = self.dm.guest_snapshot();
                for (i, &ro) in self.ro.iter().enumerate() {
                    let (b, a) = (dword(&before, i), dword(&after, i));
                    if (b ^ a) & ro != 0 {
                        return Err(format!(
                            "step {n} {op:x?}: read-only bits {:#010x} of dword {:#05x} changed ({b:#010x} -> {a:#010x})",
                            (b ^ a) & ro,
                            i * 4
                        ));
                    }
                }
                let guest = legal(off, size, limit).then(|| {
                    let shift = (off % 4) * 8;
                    ((off / 4) as usize, (value << shift) & (all_ones(size) << shift))
                });
                for w in self.new_writes() {
                    *self.stats.host_writes.entry(w.offset).or_insert(0) += 1;
                    if self.controls.contains(&w.offset) {
                        self.stats.control_writes += 1;
                    }
                    self.rules.check(&w, "guest", guest).map_err(|e| format!("step {n} {op:x?}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// The end-of-sequence checks: the chain, then teardown's host writes.
    pub fn finish(mut self) -> Result<Stats, String> {
        self.check_chain("after the sequence")?;
        self.dm.teardown(&mut self.x);
        for w in self.new_writes() {
            self.rules.check(&w, "teardown", None)?;
        }
        Ok(self.stats)
    }
}

/// Run a whole sequence on a device given as dump text (Ok(None) if xenpt refuses it).
pub fn run(text: &str, profile: Profile, ops: &[Op]) -> Result<Option<Stats>, String> {
    let host = DumpDevice::from_text(text).map_err(|e| format!("dump: {e}"))?;
    let Some(mut h) = Harness::new(host, profile)? else { return Ok(None) };
    for &op in ops {
        h.step(op)?;
    }
    h.finish().map(Some)
}

const FUZZ_SIZES: [u32; 8] = [1, 2, 4, 1, 2, 4, 3, 8];
const FUZZ_MAX_OPS: usize = 512;

fn fuzz_op(r: &[u8]) -> Op {
    let size = FUZZ_SIZES[(r[0] & 7) as usize];
    let off = match (r[0] >> 3) & 3 {
        0 => r[1] as u32,                                                  // header and capabilities
        1 => (r[1] as u32) & !(size.min(4) - 1),                           // the same, naturally aligned
        2 => u16::from_le_bytes([r[1], r[2]]) as u32 % 0x1100,             // extended space and just past it
        _ => u32::from_le_bytes([r[1], r[2], r[3], r[4]]).rotate_left(16), // anything
    };
    let value = u32::from_le_bytes([r[3], r[4], r[5], r[6]]);
    if r[0] & 0x80 != 0 {
        Op::Write { off, size, value }
    } else {
        Op::Read { off, size }
    }
}

/// Run one input of the config_space fuzz target (layout in fuzz/README.md) against the
/// usable corpus devices `texts`. Ok(None): the input is too short or xenpt refused the
/// (possibly corrupted) device.
pub fn run_fuzz_input(texts: &[&str], data: &[u8]) -> Result<Option<Stats>, String> {
    let [dev, flags, rest @ ..] = data else { return Ok(None) };
    let text = texts[*dev as usize % texts.len()];
    let profile = if flags & 1 != 0 { Profile::Pvh } else { Profile::Hvm };
    let patches = ((flags >> 1) & 7) as usize;
    if rest.len() < 2 * patches {
        return Ok(None);
    }
    let (patch, ops) = rest.split_at(2 * patches);
    let host = if patches == 0 {
        DumpDevice::from_text(text)
    } else {
        // A corrupted host: loops, pointers into the header, capabilities running off the
        // end, odd BARs. xenpt must cope (or refuse the device), never panic.
        let (sbdf, desc, mut bytes) = parse_dump(text).map_err(|e| format!("dump: {e}"))?;
        // The high nibble of the flags picks the 256-byte page the patches land in, so
        // extended chains (0x100..0xfff of 4 KiB dumps) get corrupted too; page 0 is the
        // conventional space, as the first seeds were written.
        let page = (flags >> 4) as usize * 0x100;
        for p in patch.chunks(2) {
            let at = (page + p[0] as usize) % bytes.len();
            bytes[at] = p[1];
        }
        DumpDevice::from_text(&format_dump(sbdf, &desc, &bytes))
    }
    .map_err(|e| format!("dump: {e}"))?;
    let Some(mut h) = Harness::new(host, profile)? else { return Ok(None) };
    for r in ops.chunks_exact(7).take(FUZZ_MAX_OPS) {
        h.step(fuzz_op(r))?;
    }
    h.finish().map(Some)
}
