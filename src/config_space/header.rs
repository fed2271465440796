//! The type-0 header (0x00-0x3f): every register decided explicitly.
//!
//! Profiles: the HVM and PVH columns are the same except for the interrupt pin (PVH has
//! no IO-APIC, so 0) — the PVH profile's other difference, the host bridge at 00:00.0, is
//! a separate function (host_bridge.rs). The hardware domain has no column: xenpt never
//! serves it. A PVH dom0's config accesses are trapped by Xen's own vPCI before any ioreq
//! server sees them, and a PV dom0 reaches the hardware directly; xenpt runs *in* either
//! kind of dom0 and serves domUs (runner::host_gsi, real::do_assign).
//!
//! | reg | policy |
//! |---|---|
//! | vendor/device, subsystem IDs, class, revision | emulated, read-only, from sysfs (a VF reads 0xffff in config space) |
//! | command | IO/MEM decode virtual (drive p2m map/unmap), bus master passed through, parity/SERR/INTx-disable virtual; the host's decode, SERR and parity never follow the guest (XSA-120/126) |
//! | status | Capabilities List emulated from the exposed chain; error bits W1C passed through; the rest read from the host, read-only |
//! | cache line, latency | emulated scratch |
//! | header type | emulated: type 0, multifunction from the guest topology |
//! | BIST, CardBus CIS | emulated zero |
//! | BARs, ROM | emulated (sizing masks from the host size rounded up to 4 KiB; guest address starts at 0) |
//! | capabilities pointer | emulated: first exposed capability |
//! | interrupt line | emulated scratch |
//! | interrupt pin | host pin if the host has an IRQ and the profile has INTx (HVM) and binding it succeeded, else 0 (a pin that never fires would strand a driver's INTx fallback) |
//! | min gnt / max lat | emulated, read-only, from the host |

use super::{ConfigSpace, Hook, Reg};
use crate::host::{BarKind, HostIds, HostResources};
use crate::pci::*;
use crate::Profile;

/// Guest-visible size of a host BAR: memory rounded up to a page (so two BARs never share
/// a guest page), I/O as is.
pub fn guest_bar_size(kind: BarKind, size: u64) -> u64 {
    match kind {
        BarKind::Io => size.next_power_of_two(),
        _ => size.max(PAGE_SIZE).next_power_of_two(),
    }
}

/// Emulated command bits and which of them the guest may set.
pub const COMMAND_EMU_MASK: u16 =
    COMMAND_IO_BIT | COMMAND_MEMORY_BIT | COMMAND_PARITY_BIT | COMMAND_SERR_BIT | COMMAND_INTX_DISABLE_BIT;

/// The interrupt pin the guest is offered: the host's, if the host has an IRQ and the
/// profile has INTx (HVM: an IO-APIC); 0 otherwise ("bogus interrupt pin" lesson). If
/// binding the INTx fails at start-up the device model sets it back to 0.
pub fn intx_pin(host_cfg: &[u8], host_has_irq: bool, profile: Profile) -> u8 {
    let host_pin = host_cfg[INTERRUPT_PIN_OFFSET as usize];
    if host_has_irq && profile == Profile::Hvm && (1..=4).contains(&host_pin) {
        host_pin
    } else {
        0
    }
}

pub struct HeaderInputs<'a> {
    pub host_cfg: &'a [u8],
    pub ids: HostIds,
    pub resources: &'a HostResources,
    pub host_has_irq: bool,
    pub profile: Profile,
    pub multifunction: bool,
    pub first_cap: u8,
}

pub fn build(cfg: &mut ConfigSpace, h: &HeaderInputs) {
    let ids = h.ids;
    cfg.define(VENDOR_ID_OFFSET, 2, Reg::constant(ids.vendor as u32));
    cfg.define(DEVICE_ID_OFFSET, 2, Reg::constant(ids.device as u32));

    let has_io = h.resources.bars.iter().flatten().any(|b| b.kind == BarKind::Io);
    let has_mem = h.resources.bars.iter().flatten().any(|b| b.kind != BarKind::Io) || h.resources.rom.is_some();
    let mut cmd_wr = COMMAND_MASTER_BIT | COMMAND_PARITY_BIT | COMMAND_SERR_BIT | COMMAND_INTX_DISABLE_BIT;
    if has_io {
        cmd_wr |= COMMAND_IO_BIT;
    }
    if has_mem {
        cmd_wr |= COMMAND_MEMORY_BIT;
    }
    // Bits not emulated and not writable (special cycles, MWI, VGA snoop, stepping,
    // fast back-to-back, reserved) read the host and ignore writes.
    cfg.define(
        COMMAND_OFFSET,
        2,
        Reg { value: 0, emu: COMMAND_EMU_MASK as u32 | 0xf800, writable: cmd_wr as u32, w1c: 0 },
    );
    cfg.set_hook(COMMAND_OFFSET, Hook::Command);
    let cap_list = if h.first_cap != 0 { STATUS_CAP_LIST_BIT } else { 0 };
    cfg.define(
        STATUS_OFFSET,
        2,
        Reg {
            value: cap_list as u32,
            emu: (STATUS_CAP_LIST_BIT | 0x0007) as u32,
            writable: 0,
            w1c: STATUS_ERROR_W1C_MASK as u32,
        },
    );
    cfg.define(REVISION_OFFSET, 1, Reg::constant(ids.revision as u32));
    cfg.define(CLASS_PROG_OFFSET, 1, Reg::constant(ids.class & 0xff));
    cfg.define(CLASS_PROG_OFFSET + 1, 2, Reg::constant(ids.class >> 8));
    cfg.define(CACHE_LINE_OFFSET, 1, Reg::scratch(0, 0xff));
    cfg.define(LATENCY_OFFSET, 1, Reg::scratch(0, 0xff));
    let mf = if h.multifunction { HEADER_TYPE_MULTIFUNCTION_BIT } else { 0 };
    cfg.define(HEADER_TYPE_OFFSET, 1, Reg::constant(mf as u32));
    cfg.define(BIST_OFFSET, 1, Reg::constant(0));

    let mut i = 0;
    while i < 6 {
        let off = BAR0_OFFSET + 4 * i as u16;
        cfg.set_hook(off, Hook::Bar(i as u8));
        match h.resources.bars[i] {
            Some(b) => {
                let size = guest_bar_size(b.kind, b.size);
                let mask = !(size - 1);
                match b.kind {
                    BarKind::Io => cfg.define(
                        off,
                        4,
                        Reg { value: BAR_IO_BIT, emu: !0, writable: (mask as u32) & 0xffff_fffc, w1c: 0 },
                    ),
                    BarKind::Mem32 => {
                        let ty = if b.prefetchable { BAR_MEM_PREFETCH_BIT } else { 0 };
                        cfg.define(off, 4, Reg { value: ty, emu: !0, writable: (mask as u32) & 0xffff_fff0, w1c: 0 });
                    }
                    BarKind::Mem64 => {
                        let ty = BAR_MEM_TYPE_64 | if b.prefetchable { BAR_MEM_PREFETCH_BIT } else { 0 };
                        cfg.define(off, 4, Reg { value: ty, emu: !0, writable: (mask as u32) & 0xffff_fff0, w1c: 0 });
                        if i + 1 < 6 {
                            cfg.define(off + 4, 4, Reg::scratch(0, (mask >> 32) as u32));
                            cfg.set_hook(off + 4, Hook::Bar(i as u8 + 1));
                            i += 1;
                        }
                    }
                }
            }
            None => cfg.define(off, 4, Reg::constant(0)),
        }
        i += 1;
    }
    cfg.define(CARDBUS_CIS_OFFSET, 4, Reg::constant(0));
    cfg.define(SUBSYS_VENDOR_OFFSET, 2, Reg::constant(ids.subsys_vendor as u32));
    cfg.define(SUBSYS_ID_OFFSET, 2, Reg::constant(ids.subsys_device as u32));
    match h.resources.rom {
        Some(r) => {
            let size = guest_bar_size(BarKind::Mem32, r.size);
            cfg.define(
                ROM_BAR_OFFSET,
                4,
                Reg { value: 0, emu: !0, writable: (!(size - 1) as u32 & 0xffff_f800) | ROM_ENABLE_BIT, w1c: 0 },
            );
        }
        None => cfg.define(ROM_BAR_OFFSET, 4, Reg::constant(0)),
    }
    cfg.set_hook(ROM_BAR_OFFSET, Hook::Rom);
    cfg.define(CAP_PTR_OFFSET, 1, Reg::constant(h.first_cap as u32));
    cfg.define(0x35, 1, Reg::constant(0));
    cfg.define(0x36, 2, Reg::constant(0));
    cfg.define(0x38, 4, Reg::constant(0));
    cfg.define(INTERRUPT_LINE_OFFSET, 1, Reg::scratch(0, 0xff));
    let pin = intx_pin(h.host_cfg, h.host_has_irq, h.profile);
    cfg.define(INTERRUPT_PIN_OFFSET, 1, Reg::constant(pin as u32));
    cfg.define(0x3e, 2, Reg::constant(u16::from_le_bytes([h.host_cfg[0x3e], h.host_cfg[0x3f]]) as u32));
}
