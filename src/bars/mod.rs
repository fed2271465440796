//! BARs: the guest's committed BAR addresses, the planner that turns them into mappings,
//! and the mapper that applies the difference through the Xen boundary.
//!
//! Committing: a 32-bit BAR commits on its write; a 64-bit BAR commits once both of its
//! halves have been written since its last commit, in either order (one half alone is an
//! intermediate address, never mapped), and every BAR re-commits when the guest toggles a
//! decode bit. A write that leaves a register at its sizing value (every address bit set,
//! in either half of a 64-bit BAR; for the ROM with its enable bit unchanged) is a probe
//! and commits nothing: sizing with decode on costs no hypercalls and the BAR stays mapped
//! where it was until the guest restores it. A decode toggle commits what the registers
//! hold. The sizing pattern and addresses over the x86 interrupt/firmware window
//! (0xFEC0_0000..4 GiB: IO-APIC, LAPIC, HPET, BIOS) count as "not mapped".

pub mod mapper;
pub mod plan;

use crate::config_space::caps::msix::MsixLayout;
use crate::config_space::header::guest_bar_size;
use crate::config_space::ConfigSpace;
use crate::host::{BarKind, HostBar, HostResources};
use crate::pci::*;
use plan::{MemBarInput, Plan, PortRun};

/// Guest physical addresses at or above this are refused: a BAR committed across it maps
/// nothing (issue 4: "beyond the guest's physical address width").
///
/// A fixed 2^46 (64 TiB), not the guest's own width, because xenpt has no trustworthy
/// per-guest value: [`crate::xen::DomainInfo`] carries none. `XEN_DOMCTL_getdomaininfo`
/// has a `gpaddr_bits` byte only since Xen 4.16 (the 8 bytes that moved `emulation_flags`
/// from offset 96 to 104), and on x86 it is the host-wide `hap_paddr_bits` (what a HAP p2m
/// can address), not the guest's MAXPHYADDR, which lives in the domain's CPUID policy
/// behind another unstable domctl (`XEN_DOMCTL_get_cpu_policy`) that xenpt keeps out of
/// its ABI surface.
///
/// The bound is a sanity limit, not what keeps the guest safe: whatever Xen does with a
/// gfn beyond the guest's real width (refuse the `memory_mapping`, which the mapper reports
/// and leaves the BAR unmapped, or map a frame the guest cannot reach), only the device's
/// own frames are ever mapped. So the costs are lopsided: too high costs one failed or
/// useless hypercall, too low breaks a guest that put a BAR legitimately above it. 46 bits
/// is the physical width of common x86 server CPUs, below the 48 bits a 4-level EPT/NPT
/// p2m holds, and far above where guest firmware (hvmloader, OVMF) puts 64-bit BARs (just
/// above the guest's RAM). Reading `gpaddr_bits` where Xen has it and taking the smaller
/// of the two would be the refinement.
pub const GUEST_ADDR_LIMIT: u64 = 1 << 46;
/// The x86 window below 4 GiB that a BAR must never cover (IO-APIC at 0xFEC0_0000, LAPIC at
/// 0xFEE0_0000, HPET, the BIOS): mapping over it would shadow the guest's interrupt hardware.
pub const RESERVED_WINDOW: (u64, u64) = (0xfec0_0000, 0x1_0000_0000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestBar {
    pub host: HostBar,
    pub guest_size: u64,
    /// Committed guest address.
    pub committed: u64,
}

#[derive(Clone, Debug)]
pub struct BarState {
    pub bars: [Option<GuestBar>; 6],
    pub rom: Option<GuestBar>,
    /// Per 64-bit BAR: halves written since its last commit (bit 0 low, bit 1 high).
    halves: [u8; 6],
    /// Whether the guest's ROM enable bit is set (a disabled ROM claims no addresses).
    pub rom_enabled: bool,
}

impl BarState {
    pub fn new(res: &HostResources) -> Self {
        let g = |h: HostBar| GuestBar { host: h, guest_size: guest_bar_size(h.kind, h.size), committed: 0 };
        BarState { bars: res.bars.map(|b| b.map(g)), rom: res.rom.map(g), halves: [0; 6], rom_enabled: false }
    }

    /// The guest's current register value for BAR `i`, address bits only.
    fn register_addr(cfg: &ConfigSpace, b: &GuestBar) -> u64 {
        let off = BAR0_OFFSET + 4 * b.host.index as u16;
        let lo = cfg.emulated(off, 4) as u64;
        match b.host.kind {
            BarKind::Io => lo & !0x3,
            BarKind::Mem32 => lo & !0xf,
            BarKind::Mem64 => (lo & !0xf) | (cfg.emulated(off + 4, 4) as u64) << 32,
        }
    }

    /// Whether BAR `b`'s register (either half of a 64-bit one) holds its sizing value:
    /// every address bit set, a probe in progress rather than an address.
    fn probing(cfg: &ConfigSpace, b: &GuestBar) -> bool {
        let off = BAR0_OFFSET + 4 * b.host.index as u16;
        let mask = !(b.guest_size - 1);
        let lo = cfg.emulated(off, 4);
        match b.host.kind {
            BarKind::Io => lo & !0x3 == mask as u32 & !0x3,
            BarKind::Mem32 => lo & !0xf == mask as u32 & !0xf,
            BarKind::Mem64 => lo & !0xf == mask as u32 & !0xf || cfg.emulated(off + 4, 4) == (mask >> 32) as u32,
        }
    }

    /// A write to BAR register `reg` (0-5). Returns true if a committed address changed.
    pub fn on_bar_write(&mut self, cfg: &ConfigSpace, reg: u8) -> bool {
        // Register `reg` is either a BAR's own (low) register or the upper half of the
        // 64-bit BAR before it.
        let (idx, upper) = match self.bars.get(reg as usize).copied().flatten() {
            Some(_) => (reg as usize, false),
            None if reg > 0 => match self.bars[reg as usize - 1] {
                Some(b) if b.host.kind == BarKind::Mem64 => (reg as usize - 1, true),
                _ => return false,
            },
            None => return false,
        };
        let Some(b) = self.bars[idx].as_mut() else { return false };
        if b.host.kind == BarKind::Mem64 {
            self.halves[idx] |= if upper { 2 } else { 1 };
            if self.halves[idx] != 3 || Self::probing(cfg, b) {
                return false; // wait for the other half, or for the probe to be undone
            }
            self.halves[idx] = 0;
        } else if Self::probing(cfg, b) {
            return false;
        }
        let a = Self::register_addr(cfg, b);
        let changed = a != b.committed;
        b.committed = a;
        changed
    }

    pub fn on_rom_write(&mut self, cfg: &ConfigSpace) -> bool {
        self.commit_rom(cfg, true)
    }

    fn commit_rom(&mut self, cfg: &ConfigSpace, probe_rule: bool) -> bool {
        let reg = cfg.emulated(ROM_BAR_OFFSET, 4);
        let enabled = reg & ROM_ENABLE_BIT != 0;
        let toggled = enabled != self.rom_enabled;
        self.rom_enabled = enabled;
        let Some(r) = self.rom.as_mut() else { return false };
        let a = reg as u64 & !0x7ff;
        if probe_rule && !toggled && a as u32 == !(r.guest_size - 1) as u32 & 0xffff_f800 {
            return false; // a probe: the ROM stays where it was
        }
        let changed = a != r.committed;
        r.committed = a;
        changed
    }

    /// Re-commit every BAR from the registers (decode bit toggled).
    pub fn commit_all(&mut self, cfg: &ConfigSpace) {
        for b in self.bars.iter_mut().flatten() {
            b.committed = Self::register_addr(cfg, b);
        }
        self.halves = [0; 6];
        self.commit_rom(cfg, false);
    }

    fn valid_mem(&self, idx: Option<usize>, b: &GuestBar) -> bool {
        let a = b.committed;
        if a == 0 || a % b.guest_size != 0 || a.checked_add(b.guest_size).is_none_or(|e| e > GUEST_ADDR_LIMIT) {
            return false;
        }
        let end = a + b.guest_size;
        if b.host.kind != BarKind::Mem64 && end > 1 << 32 {
            return false;
        }
        // The sizing pattern (every address bit set) is a probe, not an address.
        let width_mask: u64 = if b.host.kind == BarKind::Mem64 { !0 } else { 0xffff_ffff };
        if a | (b.guest_size - 1) == width_mask {
            return false;
        }
        if a < RESERVED_WINDOW.1 && RESERVED_WINDOW.0 < end {
            return false;
        }
        // Overlap with another memory BAR (or the enabled ROM) of this device maps nothing
        // for either.
        let overlaps = |o: &GuestBar| o.committed != 0 && o.committed < end && a < o.committed + o.guest_size;
        let others = self.bars.iter().enumerate().filter(|(j, _)| Some(*j) != idx).filter_map(|(_, o)| o.as_ref());
        let others = others.chain(self.rom.iter().filter(|_| idx.is_some() && self.rom_enabled));
        !others.filter(|o| o.host.kind != BarKind::Io).any(overlaps)
    }

    /// The complete desired mapping for the current guest state.
    pub fn plan(&self, mem_decode: bool, io_decode: bool, rom_enabled: bool, msix: Option<&MsixLayout>) -> Plan {
        let mut p = Plan::default();
        for (i, b) in self.bars.iter().enumerate() {
            let Some(b) = b else { continue };
            if b.host.kind == BarKind::Io {
                let a = b.committed;
                if io_decode && a != 0 && a + b.guest_size <= 0x10000 {
                    p.pio.push(PortRun { gport: a as u32, mport: b.host.base as u32, nr: b.host.size as u32 });
                }
                continue;
            }
            if !mem_decode || !self.valid_mem(Some(i), b) {
                continue;
            }
            let mut holes = [(0, 0); 2];
            if let Some(m) = msix {
                if m.table_bar as usize == i {
                    holes[0] = (m.table_offset, m.table_len());
                }
                if m.pba_bar as usize == i {
                    holes[1] = (m.pba_offset, m.pba_len());
                }
            }
            let input = MemBarInput {
                guest: b.committed,
                guest_size: b.guest_size,
                host_base: b.host.base,
                host_size: b.host.size,
                holes,
            };
            plan::plan_mem_bar(&input, &mut p);
        }
        if let Some(r) = &self.rom {
            if mem_decode && rom_enabled && self.valid_mem(None, r) {
                let input = MemBarInput {
                    guest: r.committed,
                    guest_size: r.guest_size,
                    host_base: r.host.base,
                    host_size: r.host.size,
                    holes: [(0, 0); 2],
                };
                plan::plan_mem_bar(&input, &mut p);
            }
        }
        p.mmio.sort();
        p.pio.sort();
        p.traps.sort();
        p
    }

    /// Guest address of the MSI-X table while its BAR is decoded, else None.
    pub fn msix_table_gaddr(&self, mem_decode: bool, m: &MsixLayout) -> Option<u64> {
        let b = self.bars.get(m.table_bar as usize)?.as_ref()?;
        (mem_decode && self.valid_mem(Some(m.table_bar as usize), b)).then_some(b.committed + m.table_offset)
    }

    /// Which BAR and offset a trapped guest address falls in (memory BARs only).
    pub fn locate(&self, gpa: u64) -> Option<(u8, u64)> {
        self.bars
            .iter()
            .flatten()
            .find(|b| {
                b.host.kind != BarKind::Io && b.committed != 0 && b.committed <= gpa && gpa < b.committed + b.guest_size
            })
            .map(|b| (b.host.index, gpa - b.committed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_space::{ConfigSpace, Reg};
    use crate::host::{HostBar, HostResources};

    fn setup() -> (BarState, ConfigSpace) {
        let mut r = HostResources::default();
        r.bars[0] =
            Some(HostBar { index: 0, base: 0xfe00_0000, size: 0x4000, kind: BarKind::Mem64, prefetchable: false });
        r.bars[2] =
            Some(HostBar { index: 2, base: 0xfd00_0000, size: 0x1000, kind: BarKind::Mem32, prefetchable: false });
        let mut cfg = ConfigSpace::new(crate::pci::Sbdf::new(0, 1, 0, 0), 256);
        for off in [0x10u16, 0x14, 0x18] {
            cfg.define(off, 4, Reg::scratch(0, !0));
        }
        (BarState::new(&r), cfg)
    }

    fn write(st: &mut BarState, cfg: &mut ConfigSpace, reg: u8, v: u32) -> bool {
        cfg.set(0x10 + 4 * reg as u16, 4, v);
        st.on_bar_write(cfg, reg)
    }

    #[test]
    fn a_64bit_bar_commits_after_both_halves_in_either_order() {
        let (mut st, mut cfg) = setup();
        assert!(!write(&mut st, &mut cfg, 1, 0x1), "upper half alone: intermediate");
        assert_eq!(st.bars[0].unwrap().committed, 0);
        assert!(write(&mut st, &mut cfg, 0, 0xe000_0004), "both halves now");
        assert_eq!(st.bars[0].unwrap().committed, 0x1_e000_0000);
        assert!(!write(&mut st, &mut cfg, 0, 0xd000_0004), "lower half alone: intermediate");
        assert!(write(&mut st, &mut cfg, 1, 0x0));
        assert_eq!(st.bars[0].unwrap().committed, 0xd000_0000);
    }

    #[test]
    fn sizing_patterns_and_the_interrupt_window_map_nothing() {
        let (mut st, mut cfg) = setup();
        write(&mut st, &mut cfg, 2, 0xffff_f000);
        assert!(st.plan(true, false, false, None).mmio.is_empty(), "sizing pattern of a 32-bit BAR");
        write(&mut st, &mut cfg, 2, 0xfee0_0000);
        assert!(st.plan(true, false, false, None).mmio.is_empty(), "over the LAPIC");
        write(&mut st, &mut cfg, 2, 0xf000_0000);
        assert_eq!(st.plan(true, false, false, None).mmio.len(), 1);
        assert!(st.plan(false, false, false, None).mmio.is_empty(), "decode off");
    }

    #[test]
    fn overlapping_bars_of_one_device_map_neither() {
        let (mut st, mut cfg) = setup();
        write(&mut st, &mut cfg, 0, 0xf000_0004);
        write(&mut st, &mut cfg, 1, 0);
        write(&mut st, &mut cfg, 2, 0xf000_1000);
        assert!(st.plan(true, false, false, None).mmio.is_empty());
        write(&mut st, &mut cfg, 2, 0xf000_8000);
        assert_eq!(st.plan(true, false, false, None).mmio.len(), 2);
    }
}
