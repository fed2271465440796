//! The guest-visible config space: a per-bit register policy held as data.
//!
//! Every byte of the guest's config space carries four masks, and one table decides who
//! owns each bit:
//! - `emu`: the bit's value is xenpt's (stored in `value`); otherwise it is read from the
//!   host device;
//! - `writable`: the guest may change it (an emulated bit changes `value`; a host bit is
//!   written through to the device, and only that bit);
//! - `w1c`: writing 1 clears it (emulated: in `value`; host: passed through as a 1);
//! - everything else is read-only: reserved-preserve bits read the host, reserved-zero and
//!   hidden bits are emulated zeros.
//!
//! Accesses are normalised once ([`Access`]): size 1/2/4, inside the space, not straddling
//! a dword. Anything else reads all-ones and drops writes. Registers with side effects
//! (command, BARs, MSI-X control, ...) are tagged with a [`Hook`] per dword; a write returns
//! the hooks it touched with the dword's old and new value, and the device logic turns
//! those into effects. Device-internal updates use [`ConfigSpace::set`], which bypasses the
//! guest masks.

pub mod caps;
pub mod header;

use std::collections::BTreeMap;

use crate::host::HostDevice;
use crate::pci::Sbdf;

/// A side-effecting register, at dword granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Command (low half) and status.
    Command,
    /// BAR register `n` (for a 64-bit BAR, n is the low half and n+1 the high half).
    Bar(u8),
    Rom,
    /// MSI-X capability header + message control.
    MsixControl,
    /// PM control/status.
    PmCsr,
    /// Any dword of the MSI capability.
    Msi,
}

/// A normalised config access: dword index and byte-enable mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub dword: usize,
    /// Bit shift of the accessed bytes inside the dword (8 * byte offset).
    pub shift: u32,
    /// Mask of the accessed bits inside the dword.
    pub mask: u32,
}

impl Access {
    /// Validate (offset, size) against a space of `limit` bytes.
    pub fn new(offset: u32, size: u32, limit: usize) -> Option<Access> {
        if !matches!(size, 1 | 2 | 4) || (offset % 4) + size > 4 || offset as usize + size as usize > limit {
            return None;
        }
        let shift = (offset % 4) * 8;
        let mask = if size == 4 { !0 } else { ((1u32 << (size * 8)) - 1) << shift };
        Some(Access { dword: (offset / 4) as usize, shift, mask })
    }
}

/// A register's policy for [`ConfigSpace::define`]: masks over a dword-or-smaller field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reg {
    /// Initial emulated value.
    pub value: u32,
    pub emu: u32,
    pub writable: u32,
    pub w1c: u32,
}

impl Reg {
    /// Fully emulated, read-only, constant.
    pub const fn constant(value: u32) -> Reg {
        Reg { value, emu: !0, writable: 0, w1c: 0 }
    }
    /// Fully emulated, guest-writable (a virtual register or scratch).
    pub const fn scratch(value: u32, writable: u32) -> Reg {
        Reg { value, emu: !0, writable, w1c: 0 }
    }
    /// Read from the host, guest writes dropped.
    pub const fn host_ro() -> Reg {
        Reg { value: 0, emu: 0, writable: 0, w1c: 0 }
    }
}

/// Counters the console and tests read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigStats {
    pub reads: u64,
    pub writes: u64,
    pub host_reads: u64,
    pub host_writes: u64,
    pub bad_accesses: u64,
    /// Writes (or parts of writes) the policy dropped, by dword offset.
    pub dropped: BTreeMap<u16, u64>,
}

/// What a guest write touched, for the device logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touched {
    pub hook: Hook,
    /// Byte offset of the dword.
    pub offset: u16,
    pub old: u32,
    pub new: u32,
}

pub struct ConfigSpace {
    sbdf: Sbdf,
    size: usize,
    value: Vec<u32>,
    emu: Vec<u32>,
    writable: Vec<u32>,
    w1c: Vec<u32>,
    /// Bits some policy definition covers; writes to the rest are "unknown register"
    /// writes (dropped and logged once, or passed through in permissive mode).
    known: Vec<u32>,
    hooks: Vec<Option<Hook>>,
    /// Permissive mode: guest writes to host bits the policy does not know reach the
    /// device (an explicit, logged opt-in).
    permissive: bool,
    /// Rate limit for guest-triggerable warnings (XSA-130).
    log: crate::log::RateLimit,
    /// Names registers for log lines ("0x0f0 (device-specific)"); set by the device model,
    /// which knows the capability layout.
    register_names: Option<Box<dyn Fn(u16) -> String + Send>>,
    pub stats: ConfigStats,
}

impl ConfigSpace {
    /// A space of `size` bytes in which no bit has a policy yet: every bit reads the
    /// host, and writes are dropped as writes to unknown registers.
    pub fn new(sbdf: Sbdf, size: usize) -> Self {
        let n = size / 4;
        ConfigSpace {
            sbdf,
            size,
            value: vec![0; n],
            emu: vec![0; n],
            writable: vec![0; n],
            w1c: vec![0; n],
            known: vec![0; n],
            hooks: vec![None; n],
            permissive: false,
            log: crate::log::RateLimit::guest(),
            register_names: None,
            stats: ConfigStats::default(),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn set_permissive(&mut self, on: bool) {
        self.permissive = on;
    }

    /// Define the policy of the field at `offset` of `len` bytes (1, 2 or 4, inside one
    /// dword). Panics on a bad field: the tables are xenpt's own, checked by tests.
    pub fn define(&mut self, offset: u16, len: u32, reg: Reg) {
        let a = Access::new(offset as u32, len, self.size).unwrap_or_else(|| panic!("bad field {offset:#x}/{len}"));
        let m = a.mask;
        let i = a.dword;
        let put = |arr: &mut Vec<u32>, v: u32| arr[i] = (arr[i] & !m) | ((v << a.shift) & m);
        put(&mut self.value, reg.value);
        put(&mut self.emu, reg.emu);
        put(&mut self.writable, reg.writable);
        put(&mut self.w1c, reg.w1c);
        put(&mut self.known, !0);
    }

    /// Define a run of bytes read from the host and read-only (reserved-preserve or
    /// plain informational registers).
    pub fn define_host_ro(&mut self, offset: u16, len: u16) {
        for o in offset..offset + len {
            self.define(o, 1, Reg::host_ro());
        }
    }

    /// Hide a run of bytes: they read 0 and ignore writes.
    pub fn hide(&mut self, offset: u16, len: u16) {
        for o in offset..offset + len {
            self.define(o, 1, Reg::constant(0));
        }
    }

    /// How log lines name a register (by dword offset).
    pub fn set_register_names(&mut self, f: Box<dyn Fn(u16) -> String + Send>) {
        self.register_names = Some(f);
    }

    pub fn set_hook(&mut self, offset: u16, hook: Hook) {
        self.hooks[offset as usize / 4] = Some(hook);
    }

    /// Device-internal update of emulated bits, bypassing the guest masks.
    pub fn set(&mut self, offset: u16, len: u32, value: u32) {
        let a = Access::new(offset as u32, len, self.size).unwrap_or_else(|| panic!("bad set {offset:#x}/{len}"));
        let v = &mut self.value[a.dword];
        *v = (*v & !a.mask) | ((value << a.shift) & a.mask);
    }

    /// The emulated value of a field (no host read).
    pub fn emulated(&self, offset: u16, len: u32) -> u32 {
        let a = Access::new(offset as u32, len, self.size).unwrap_or_else(|| panic!("bad get {offset:#x}/{len}"));
        (self.value[a.dword] & a.mask) >> a.shift
    }

    /// Guest read. Host bits come from the device; a failed host read gives all-ones
    /// for those bits.
    pub fn read(&mut self, host: &dyn HostDevice, offset: u32, size: u32) -> u32 {
        self.stats.reads += 1;
        let Some(a) = Access::new(offset, size, self.size) else {
            self.stats.bad_accesses += 1;
            return if size >= 4 { !0 } else { (1u32 << (size.min(3) * 8)) - 1 };
        };
        let dword = self.read_dword(host, a.dword, a.mask);
        (dword & a.mask) >> a.shift
    }

    fn read_dword(&mut self, host: &dyn HostDevice, i: usize, mask: u32) -> u32 {
        let emu = self.emu[i];
        let mut v = self.value[i] & emu;
        if !emu & mask != 0 {
            self.stats.host_reads += 1;
            let hw = if (i * 4) < host.config_size() { host.config_read((i * 4) as u16, 4).unwrap_or(!0) } else { !0 };
            v |= hw & !emu;
        }
        v
    }

    /// Guest write. Returns the hook of the dword, if any, with old and new guest-visible
    /// values of the dword.
    pub fn write(&mut self, host: &dyn HostDevice, offset: u32, size: u32, data: u32) -> Option<Touched> {
        self.stats.writes += 1;
        let Some(a) = Access::new(offset, size, self.size) else {
            self.stats.bad_accesses += 1;
            return None;
        };
        let i = a.dword;
        let data = (data << a.shift) & a.mask;
        let hook = self.hooks[i];
        let old = hook.map(|_| self.read_dword(host, i, !0));
        let (emu, wr, w1c) = (self.emu[i], self.writable[i], self.w1c[i]);

        // Emulated bits.
        let emu_wr = emu & wr & a.mask;
        let emu_clr = emu & w1c & a.mask & data;
        self.value[i] = ((self.value[i] & !emu_wr) | (data & emu_wr)) & !emu_clr;

        // Host bits: only pass-through bits and bytes ever reach the device.
        let mut host_wr = !emu & wr & a.mask;
        let host_w1c = !emu & w1c & a.mask & data;
        let unknown = !self.known[i] & a.mask;
        if unknown != 0 {
            if self.permissive {
                host_wr |= unknown;
            } else {
                let n = self.stats.dropped.entry((i * 4) as u16).or_insert(0);
                *n += 1;
                if *n == 1 {
                    let name =
                        self.register_names.as_ref().map(|f| format!(" ({})", f((i * 4) as u16))).unwrap_or_default();
                    tracing::warn!(target: "xenpt::config", device = %self.sbdf,
                        "dropped guest write to {:#05x}{name}: no policy lets it reach the device (XSA-131 default-deny; \
                         logged once per register; --permissive lets such writes through, the xl.cfg permissive=1)",
                        i * 4);
                }
            }
        }
        if host_wr | host_w1c != 0 {
            self.write_host(host, a, host_wr, host_w1c, data, w1c);
        }
        hook.map(|h| Touched {
            hook: h,
            offset: (i * 4) as u16,
            old: old.unwrap_or(0),
            new: self.read_dword(host, i, !0),
        })
    }

    /// Write the bytes that hold pass-through bits: guest bits under `host_wr`, 1s under
    /// `host_w1c`, and the device's own current value for its other bits in those bytes
    /// (with its W1C bits written 0 so nothing is cleared by accident). Never an emulated
    /// value (XSA-128). The guest's access is reproduced as is when every byte of it
    /// carries pass-through bits; otherwise each such byte is written alone.
    fn write_host(&mut self, host: &dyn HostDevice, a: Access, host_wr: u32, host_w1c: u32, data: u32, w1c: u32) {
        let touched = host_wr | host_w1c;
        self.stats.host_reads += 1;
        let base = (a.dword * 4) as u16;
        let cur = match host.config_read(base, 4) {
            Ok(v) => v,
            Err(e) => {
                if self.log.allow().is_some() {
                    tracing::warn!(target: "xenpt::config", device = %self.sbdf, "host config read at {base:#x} failed, write dropped: {e}");
                }
                return;
            }
        };
        let new = (cur & !w1c & !host_wr) | (data & host_wr) | host_w1c;
        let bytes: Vec<u32> = (0..4).filter(|b| touched & (0xff << (b * 8)) != 0).collect();
        let whole = (0..4).filter(|b| a.mask & (0xff << (b * 8)) != 0).count() == bytes.len();
        let (first, len) = (a.shift / 8, a.mask.count_ones() / 8);
        // Hardware takes naturally aligned accesses only (a word at byte 1 is legal through
        // CF8/CFC but not as a config cycle): such writes go byte by byte.
        let writes: Vec<(u32, u32)> =
            if whole && first % len == 0 { vec![(first, len)] } else { bytes.iter().map(|&b| (b, 1)).collect() };
        for (first, len) in writes {
            let span = if len == 4 { !0u32 } else { ((1u32 << (len * 8)) - 1) << (first * 8) };
            if new & span == cur & !w1c & span && host_w1c & span == 0 {
                continue; // nothing would change on the device
            }
            self.stats.host_writes += 1;
            let off = base + first as u16;
            if let Err(e) = host.config_write(off, len as u8, (new & span) >> (first * 8)) {
                if self.log.allow().is_some() {
                    tracing::warn!(target: "xenpt::config", device = %self.sbdf, "host config write at {off:#x} failed: {e}");
                }
            }
        }
    }

    /// The guest-visible bytes (host bits read from the device), for dumps.
    pub fn snapshot(&mut self, host: &dyn HostDevice) -> Vec<u8> {
        (0..self.size / 4).flat_map(|i| self.read_dword(host, i, !0).to_le_bytes()).collect()
    }

    /// Per-dword masks, for the console and tests: (value, emu, writable, w1c).
    pub fn masks(&self, offset: u16) -> (u32, u32, u32, u32) {
        let i = offset as usize / 4;
        (self.value[i], self.emu[i], self.writable[i], self.w1c[i])
    }
}

#[cfg(test)]
mod shape_tests;
#[cfg(test)]
mod tests;
