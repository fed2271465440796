//! BARs: the guest's committed BAR addresses, the planner that turns them into mappings,
//! and the mapper that applies the difference through the Xen boundary.
//!
//! Committing: a 32-bit BAR commits on its write; a 64-bit BAR commits when its upper
//! half is written (the lower half alone would be an intermediate address), and every BAR
//! re-commits when the guest toggles a decode bit.

pub mod mapper;
pub mod plan;

use crate::config_space::caps::msix::MsixLayout;
use crate::config_space::header::guest_bar_size;
use crate::config_space::ConfigSpace;
use crate::host::{BarKind, HostBar, HostResources};
use crate::pci::*;
use plan::{MemBarInput, Plan, PortRun};

/// Guest physical addresses at or above this are refused (the guest's address width).
pub const GUEST_ADDR_LIMIT: u64 = 1 << 46;

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
}

impl BarState {
    pub fn new(res: &HostResources) -> Self {
        let g = |h: HostBar| GuestBar { host: h, guest_size: guest_bar_size(h.kind, h.size), committed: 0 };
        BarState { bars: res.bars.map(|b| b.map(g)), rom: res.rom.map(g) }
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
        if b.host.kind == BarKind::Mem64 && !upper {
            return false; // wait for the upper half
        }
        let a = Self::register_addr(cfg, b);
        let changed = a != b.committed;
        b.committed = a;
        changed
    }

    pub fn on_rom_write(&mut self, cfg: &ConfigSpace) -> bool {
        let Some(r) = self.rom.as_mut() else { return false };
        let a = cfg.emulated(ROM_BAR_OFFSET, 4) as u64 & !0x7ff;
        let changed = a != r.committed;
        r.committed = a;
        changed
    }

    /// Re-commit every BAR from the registers (decode bit toggled).
    pub fn commit_all(&mut self, cfg: &ConfigSpace) {
        for b in self.bars.iter_mut().flatten() {
            b.committed = Self::register_addr(cfg, b);
        }
        self.on_rom_write(cfg);
    }

    fn valid_mem(&self, idx: Option<usize>, b: &GuestBar) -> bool {
        let a = b.committed;
        if a == 0 || a % b.guest_size != 0 || a.checked_add(b.guest_size).is_none_or(|e| e > GUEST_ADDR_LIMIT) {
            return false;
        }
        if b.host.kind == BarKind::Mem32 && a + b.guest_size > 1 << 32 {
            return false;
        }
        // Overlap with another memory BAR of this device maps nothing for either.
        let overlaps =
            |o: &GuestBar| o.committed < a + b.guest_size && a < o.committed + o.guest_size && o.committed != 0;
        let others = self.bars.iter().enumerate().filter(|(j, _)| Some(*j) != idx).filter_map(|(_, o)| o.as_ref());
        let others = others.chain(self.rom.iter().filter(|_| idx.is_some()));
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

    /// Which BAR and offset a trapped guest address falls in.
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
