//! What each console command shows, rendered from the device model. Reading never
//! changes device state: host config and BAR reads are side-effect free, and the
//! host-read counter a guest-view snapshot bumps is put back.

use std::fmt::Write;

use super::command::HELP;
use super::Env;
use crate::config_space::caps::msi::CONTROL_ENABLE_BIT as MSI_ENABLE_BIT;
use crate::config_space::caps::msix::{ENTRY_MASKED_BIT, ENTRY_SIZE, ENTRY_VECTOR_CTRL_OFFSET};
use crate::config_space::caps::{self, ext, CapLayout};
use crate::device::DeviceModel;
use crate::host::dump::format_dump;
use crate::host::{BarKind, HostBar};
use crate::ioreq::ServerStats;
use crate::pci::*;
use crate::pirq::Vector;
use crate::xen::PtIrq;

/// `writeln!` into a String (which cannot fail).
macro_rules! line {
    ($s:expr, $($t:tt)*) => {{
        let _ = writeln!($s, $($t)*);
    }};
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

pub fn help() -> String {
    let mut s = String::from("commands (one per line; every reply ends with an empty line):\n");
    for (usage, what) in HELP {
        line!(s, "  {usage:<18} {what}");
    }
    s
}

fn uptime(d: std::time::Duration) -> String {
    let t = d.as_secs();
    if t < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if t < 3600 {
        format!("{}m{:02}s", t / 60, t % 60)
    } else {
        format!("{}h{:02}m{:02}s", t / 3600, (t / 60) % 60, t % 60)
    }
}

fn profile(dm: &DeviceModel) -> String {
    format!("{:?}", dm.opts.profile).to_ascii_lowercase()
}

pub fn status(env: &mut Env) -> String {
    let mut s = String::new();
    line!(s, "xenpt {} debug console (pid {})", env!("CARGO_PKG_VERSION"), std::process::id());
    match env.device.as_deref() {
        Some(dm) => {
            let host = dm.host();
            let ids = match host.ids() {
                Ok(i) => format!(
                    "[{:04x}:{:04x}] class {:06x} rev {:#04x}, subsystem [{:04x}:{:04x}]",
                    i.vendor, i.device, i.class, i.revision, i.subsys_vendor, i.subsys_device
                ),
                Err(e) => format!("(ids unreadable: {e})"),
            };
            line!(s, "device:    host {} {ids}, {} backend", dm.host_sbdf(), host.backend());
            let (name, source) = dm.name();
            line!(s, "name:      {name} (names: {source})");
            line!(s, "guest:     {} on the guest's bus 0", dm.opts.guest_sbdf);
            line!(s, "domain:    {}, profile {}, permissive {}", dm.opts.domid, profile(dm), on(dm.opts.permissive));
        }
        None => line!(s, "device:    none attached"),
    }
    line!(s, "xen:       {}", env.info.xen.as_deref().unwrap_or("unknown"));
    line!(s, "uptime:    {}", uptime(env.info.started.elapsed()));
    let mode =
        if env.info.write { "read-write (--console-write given)" } else { "read-only (--console-write not given)" };
    let path = env.path.map(|p| p.display().to_string()).unwrap_or_else(|| "(no socket)".into());
    line!(s, "console:   {path}, {mode}, {} client(s) connected", env.clients);
    match crate::log::current() {
        Some((level, trace)) => line!(s, "log:       level {level}, trace {}", on(trace)),
        None => line!(s, "log:       filter not reloadable in this process"),
    }
    if let Some(dm) = env.device.as_deref() {
        let msix = match &dm.msix {
            Some(m) => {
                let bound = dm.pirqs.iter().filter(|(v, p)| matches!(v, Vector::Msix(_)) && p.bound.is_some()).count();
                format!("MSI-X {} ({bound} of {} entries bound)", on(m.enabled), m.entries.len())
            }
            None => "no MSI-X".into(),
        };
        let msi = match &dm.msi {
            Some(m) => format!("MSI {} ({} vectors bound)", on(m.regs.enable), m.bound.count_ones()),
            None => "no MSI".into(),
        };
        line!(s, "irqs:      {msix}, {msi}, {} pirq(s) mapped", dm.pirqs.iter().count());
        let cur = dm.mapper.current();
        let cmd = dm.cfg.emulated(COMMAND_OFFSET, 2) as u16;
        line!(
            s,
            "bars:      memory decode {}, I/O decode {}; {} page(s) mapped, {} range(s) trapped, {} port run(s)",
            on(cmd & COMMAND_MEMORY_BIT != 0),
            on(cmd & COMMAND_IO_BIT != 0),
            cur.mmio.iter().map(|r| r.nr).sum::<u64>(),
            cur.traps.len(),
            cur.pio.len()
        );
    }
    s
}

/// The guest's view: what it reads now, host bits included.
fn guest_bytes(dm: &mut DeviceModel) -> Vec<u8> {
    let host_reads = dm.cfg.stats.host_reads;
    let bytes = dm.guest_snapshot();
    dm.cfg.stats.host_reads = host_reads; // the console's reads are not guest activity
    bytes
}

/// The host function's config space; a dword that cannot be read shows as all-ones.
fn host_bytes(dm: &DeviceModel) -> (Vec<u8>, usize) {
    let host = dm.host();
    let size = host.config_size();
    let mut failed = 0;
    let bytes = (0..size / 4)
        .flat_map(|i| {
            host.config_read((i * 4) as u16, 4)
                .unwrap_or_else(|_| {
                    failed += 1;
                    !0
                })
                .to_le_bytes()
        })
        .collect();
    (bytes, failed)
}

pub fn config_guest(dm: &mut DeviceModel) -> String {
    let bytes = guest_bytes(dm);
    let desc = format!("{} (xenpt guest view of {}, domain {})", dm.name().0, dm.host_sbdf(), dm.opts.domid);
    format_dump(dm.opts.guest_sbdf, &desc, &bytes)
}

pub fn config_host(dm: &mut DeviceModel) -> String {
    let (bytes, failed) = host_bytes(dm);
    let desc = format!("{} (host function, {} backend)", dm.name().0, dm.host().backend());
    let mut s = format_dump(dm.host_sbdf(), &desc, &bytes);
    if failed > 0 {
        // Not part of the dump format, so at the end where lspci -F stops reading anyway.
        line!(s, "# {failed} dword(s) could not be read from the host and show as ff");
    }
    s
}

fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]])).unwrap_or(!0)
}

/// A name for the register(s) in the dword at `off`.
pub fn register_name(caps: &CapLayout, off: u16) -> String {
    let off = off & !3;
    if off >= CONFIG_SPACE_SIZE as u16 {
        return match caps.ext.iter().find(|c| off >= c.offset && off < c.offset + c.len.max(4)) {
            Some(c) => format!("{} [{:03x}] +{:#x}", ext::name(c.id), c.offset, off - c.offset),
            None => "extended config space".into(),
        };
    }
    if off < 0x40 {
        return match off {
            0x00 => "Vendor ID / Device ID".into(),
            0x04 => "Command / Status".into(),
            0x08 => "Revision / Class code".into(),
            0x0c => "Cache line / Latency / Header type / BIST".into(),
            0x10..=0x24 => format!("BAR{}", (off - 0x10) / 4),
            0x28 => "CardBus CIS pointer".into(),
            0x2c => "Subsystem vendor / Subsystem ID".into(),
            0x30 => "Expansion ROM".into(),
            0x34 => "Capabilities pointer".into(),
            0x38 => "Reserved".into(),
            _ => "Interrupt line / pin / Min_Gnt / Max_Lat".into(),
        };
    }
    match caps.caps.iter().find(|c| off >= c.offset && off < c.offset + c.len.max(2)) {
        Some(c) => format!("{} [{:02x}] +{:#x}", caps::name(c.id), c.offset, off - c.offset),
        None => "device-specific".into(),
    }
}

/// Why a hidden dword is hidden, if it is.
fn hidden_reason(dm: &DeviceModel, off: u16) -> Option<String> {
    if off as usize >= CONFIG_SPACE_SIZE {
        return dm
            .caps
            .ext
            .iter()
            .find(|c| c.hidden.is_some() && off + 4 > c.offset && off < c.offset + c.len.max(4))
            .map(|c| format!("{} extended capability hidden: {}", ext::name(c.id), c.hidden.unwrap_or("")));
    }
    dm.caps
        .caps
        .iter()
        .find(|c| c.hidden.is_some() && off + 4 > c.offset && off < c.offset + c.len.max(2))
        .map(|c| format!("{} capability hidden: {}", caps::name(c.id), c.hidden.unwrap_or("")))
}

pub fn diff(dm: &mut DeviceModel) -> String {
    let guest = guest_bytes(dm);
    let (host, failed) = host_bytes(dm);
    let n = guest.len().min(host.len());
    struct Row {
        off: u16,
        g: u32,
        h: u32,
        why: String,
        hidden: bool,
    }
    let mut rows = Vec::new();
    let (mut emulated, mut masked, mut hidden, mut raced) = (0, 0, 0, 0);
    for off in (0..n).step_by(4) {
        let (g, h) = (le32(&guest, off), le32(&host, off));
        let d = g ^ h;
        if d == 0 {
            continue;
        }
        let (_, emu, wr, _) = dm.cfg.masks(off as u16);
        let mut why = Vec::new();
        let hid = hidden_reason(dm, off as u16);
        if let Some(r) = &hid {
            hidden += 1;
            why.push(format!("hidden: {r}"));
        } else {
            if d & emu & wr != 0 {
                emulated += 1;
                why.push(format!(
                    "emulated: bits {:#010x} are the guest's own (virtual), never written to the host",
                    d & emu & wr
                ));
            }
            if d & emu & !wr != 0 {
                masked += 1;
                why.push(format!(
                    "masked: bits {:#010x} read xenpt's fixed value instead of the host's",
                    d & emu & !wr
                ));
            }
        }
        if d & !emu != 0 {
            raced += 1;
            why.push(format!("bits {:#010x} pass through but changed on the host between the two reads", d & !emu));
        }
        rows.push(Row { off: off as u16, g, h, why: why.join("; "), hidden: hid.is_some() });
    }
    let mut s = String::new();
    line!(
        s,
        "guest view vs host, {n} bytes: {} dword(s) differ ({emulated} emulated, {masked} masked, {hidden} hidden, {raced} changed while reading)",
        rows.len()
    );
    if failed > 0 {
        line!(s, "note: {failed} host dword(s) could not be read and count as ffffffff");
    }
    if rows.is_empty() {
        return s;
    }
    line!(s, "{:<12} {:<40} {:<10} {:<10} why", "offset", "register", "guest", "host");
    let mut i = 0;
    while i < rows.len() {
        let r = &rows[i];
        // A run of hidden dwords with the same reason collapses into one line.
        let mut j = i + 1;
        while r.hidden && j < rows.len() && rows[j].hidden && rows[j].why == r.why {
            j += 1;
        }
        if j - i > 2 {
            let last = rows[j - 1].off;
            line!(
                s,
                "{:<12} {:<40} {:<10} {:<10} {} ({} dwords differ)",
                format!("{:#05x}-{:#05x}", r.off, last + 3),
                register_name(&dm.caps, r.off),
                "(zeros)",
                "(various)",
                r.why,
                j - i
            );
            i = j;
            continue;
        }
        line!(
            s,
            "{:<12} {:<40} {:08x}   {:08x}   {}",
            format!("{:#05x}", r.off),
            register_name(&dm.caps, r.off),
            r.g,
            r.h,
            r.why
        );
        i += 1;
    }
    s
}

pub fn caps(dm: &mut DeviceModel) -> String {
    let mut s = String::new();
    let exposed = dm.caps.caps.iter().filter(|c| c.hidden.is_none()).count();
    line!(
        s,
        "capabilities of {} (host chain order): {exposed} exposed, {} hidden",
        dm.host_sbdf(),
        dm.caps.caps.len() - exposed
    );
    for c in &dm.caps.caps {
        let what = match c.hidden {
            None => "exposed".to_string(),
            Some(why) => format!("hidden: {why}"),
        };
        line!(s, "  [{:02x}] id {:#04x} {:<18} {:>2} bytes  {what}", c.offset, c.id, caps::name(c.id), c.len);
    }
    let chain: Vec<String> =
        dm.caps.caps.iter().filter(|c| c.hidden.is_none()).map(|c| format!("{:#04x}", c.offset)).collect();
    line!(
        s,
        "guest chain: {}",
        if chain.is_empty() {
            "empty (Status.Capabilities List still reflects the host)".into()
        } else {
            chain.join(" -> ")
        }
    );
    if let Some(m) = dm.caps.msix {
        line!(
            s,
            "MSI-X layout: {} entries, table BAR{}+{:#x}, PBA BAR{}+{:#x}",
            m.entries,
            m.table_bar,
            m.table_offset,
            m.pba_bar,
            m.pba_offset
        );
    }
    if let Some(l) = dm.caps.msi {
        line!(
            s,
            "MSI layout: cap {:#04x}, {}-bit, per-vector masking {}, up to {} vector(s)",
            l.cap_offset,
            if l.is_64 { 64 } else { 32 },
            yes(l.per_vector_mask),
            l.max_vectors()
        );
    }
    if dm.cfg.size() > CONFIG_SPACE_SIZE {
        if dm.caps.ext.is_empty() {
            line!(s, "extended capabilities: none on the host");
        } else {
            let exposed = dm.caps.ext.iter().filter(|c| c.hidden.is_none()).count();
            line!(
                s,
                "extended capabilities (0x100-0xfff), host chain order: {exposed} exposed, {} hidden",
                dm.caps.ext.len() - exposed
            );
            for c in &dm.caps.ext {
                let what = match c.hidden {
                    None => "exposed".to_string(),
                    Some(why) => format!("hidden: {why}"),
                };
                line!(
                    s,
                    "  [{:03x}] id {:#06x} v{} {:<28} {:>3} bytes  {what}",
                    c.offset,
                    c.id,
                    c.version,
                    ext::name(c.id),
                    c.len
                );
            }
            let chain: Vec<String> = dm
                .caps
                .guest_ext_chain()
                .iter()
                .map(|&(id, o)| if id == 0 { format!("{o:#05x} (Null)") } else { format!("{o:#05x}") })
                .collect();
            line!(s, "guest extended chain: {}", if chain.is_empty() { "empty".into() } else { chain.join(" -> ") });
        }
    }
    for w in &dm.caps.warnings {
        line!(s, "warning: {w}");
    }
    s
}

fn kind(b: &HostBar) -> String {
    let k = match b.kind {
        BarKind::Io => "io",
        BarKind::Mem32 => "mem32",
        BarKind::Mem64 => "mem64",
    };
    if b.prefetchable {
        format!("{k} pf")
    } else {
        k.to_string()
    }
}

/// "BARn+off" for a host address, if it is inside one of the function's BARs.
fn host_place(dm: &DeviceModel, addr: u64) -> String {
    dm.resources
        .bars
        .iter()
        .flatten()
        .chain(dm.resources.rom.iter())
        .find(|b| b.kind != BarKind::Io && b.base <= addr && addr < b.end())
        .map(|b| {
            if b.index == 6 {
                format!("ROM+{:#x}", addr - b.base)
            } else {
                format!("BAR{}+{:#x}", b.index, addr - b.base)
            }
        })
        .unwrap_or_else(|| "outside the BARs".into())
}

pub fn bars(dm: &mut DeviceModel) -> String {
    let mut s = String::new();
    let cmd = dm.cfg.emulated(COMMAND_OFFSET, 2) as u16;
    line!(
        s,
        "guest command register: memory decode {}, I/O decode {}; ROM enable {}",
        on(cmd & COMMAND_MEMORY_BIT != 0),
        on(cmd & COMMAND_IO_BIT != 0),
        on(dm.bars.rom_enabled)
    );
    line!(s, "{:<5} {:<10} {:<20} {:<10} {:<10} guest address", "bar", "type", "host base", "size", "guest size");
    let rows = dm
        .bars
        .bars
        .iter()
        .flatten()
        .map(|b| (format!("BAR{}", b.host.index), b))
        .chain(dm.bars.rom.iter().map(|b| ("ROM".to_string(), b)));
    let mut any = false;
    for (name, b) in rows {
        any = true;
        let committed = if b.committed == 0 { "not programmed".to_string() } else { format!("{:#x}", b.committed) };
        line!(
            s,
            "{name:<5} {:<10} {:<20} {:<10} {:<10} {committed}",
            kind(&b.host),
            format!("{:#x}", b.host.base),
            format!("{:#x}", b.host.size),
            format!("{:#x}", b.guest_size)
        );
    }
    if !any {
        line!(s, "  (the function has no BARs)");
    }
    let cur = dm.mapper.current().clone();
    line!(s, "mapped (guest frames -> host frames, direct):");
    if cur.mmio.is_empty() {
        line!(s, "  none");
    }
    for r in &cur.mmio {
        let (g, h, len) = (r.gfn << PAGE_SHIFT, r.mfn << PAGE_SHIFT, r.nr << PAGE_SHIFT);
        line!(
            s,
            "  {:#x}-{:#x} -> {:#x}-{:#x}  {} page(s), {}",
            g,
            g + len - 1,
            h,
            h + len - 1,
            r.nr,
            host_place(dm, h)
        );
    }
    line!(s, "trapped (guest accesses served by xenpt):");
    if cur.traps.is_empty() {
        line!(s, "  none");
    }
    let msix = dm.caps.msix;
    for t in &cur.traps {
        let mut what = Vec::new();
        let place = match dm.bars.locate(t.start) {
            Some((bar, off)) => {
                if let Some(m) = msix {
                    let overlaps = |b: u8, o: u64, l: u64| b == bar && o < off + t.len && off < o + l;
                    if overlaps(m.table_bar, m.table_offset, m.table_len()) {
                        what.push("MSI-X table");
                    }
                    if overlaps(m.pba_bar, m.pba_offset, m.pba_len()) {
                        what.push("PBA");
                    }
                }
                format!("BAR{bar}+{off:#x}")
            }
            None => "not inside a guest BAR".into(),
        };
        if what.is_empty() {
            what.push("registers sharing a trapped page");
        }
        line!(s, "  {:#x}-{:#x}  {place}: {}", t.start, t.start + t.len - 1, what.join(", "));
    }
    line!(s, "ports (guest -> host, direct):");
    if cur.pio.is_empty() {
        line!(s, "  none");
    }
    for p in &cur.pio {
        line!(s, "  {:#x}-{:#x} -> {:#x}-{:#x}", p.gport, p.gport + p.nr - 1, p.mport, p.mport + p.nr - 1);
    }
    s
}

fn binding(b: Option<PtIrq>) -> (String, String) {
    match b {
        Some(PtIrq::Msi { gflags, gtable, .. }) => (format!("{gflags:#x}"), format!("{gtable:#x}")),
        Some(PtIrq::PciIntx { .. }) => ("intx".into(), "-".into()),
        None => ("-".into(), "-".into()),
    }
}

pub fn msix(dm: &mut DeviceModel, all: bool) -> String {
    let mut s = String::new();
    let Some(m) = dm.msix.as_ref() else {
        let why = dm.caps.caps.iter().find(|c| c.id == CAP_ID_MSIX).and_then(|c| c.hidden);
        return match why {
            Some(w) => format!("MSI-X: hidden from the guest ({w})"),
            None => "MSI-X: the function has no MSI-X capability".into(),
        };
    };
    let l = m.layout;
    let cmd = dm.cfg.emulated(COMMAND_OFFSET, 2) as u16;
    let gtable = dm
        .bars
        .msix_table_gaddr(cmd & COMMAND_MEMORY_BIT != 0, &l)
        .map(|g| format!("{g:#x}"))
        .unwrap_or_else(|| "not mapped".into());
    line!(
        s,
        "MSI-X: {}, function mask {}; {} entries; table BAR{}+{:#x} (guest {gtable}), PBA BAR{}+{:#x}",
        if m.enabled { "enabled" } else { "disabled" },
        on(m.maskall),
        l.entries,
        l.table_bar,
        l.table_offset,
        l.pba_bar,
        l.pba_offset
    );
    line!(
        s,
        "{:<5} {:<18} {:<10} {:<4} {:<6} {:<7} {:<7} {:<5} {:<5} {:<7} gtable",
        "entry",
        "address",
        "data",
        "gvec",
        "masked",
        "hw-mask",
        "pending",
        "bound",
        "pirq",
        "gflags"
    );
    let host = dm.host();
    let mut pba_word: Option<(u64, Option<u64>)> = None;
    let mut skipped = 0;
    for (i, e) in m.entries.iter().enumerate() {
        let p = dm.pirqs.get(Vector::Msix(i as u16));
        if !all && !e.written && p.is_none() {
            skipped += 1;
            continue;
        }
        // Pending bits and the device's own vector-control mask (which Xen keeps as guest
        // mask OR its own) are read from the host, side-effect free.
        let w = i as u64 / 64;
        if pba_word.map(|(n, _)| n) != Some(w) {
            pba_word = Some((w, host.bar_read(l.pba_bar, l.pba_offset + w * 8, 8).ok()));
        }
        let pending = match pba_word.and_then(|(_, v)| v) {
            Some(v) => yes(v >> (i % 64) & 1 != 0),
            None => "?",
        };
        let ctrl = host.bar_read(l.table_bar, l.table_offset + i as u64 * ENTRY_SIZE + ENTRY_VECTOR_CTRL_OFFSET, 4);
        let hw_mask = match ctrl {
            Ok(v) => yes(v as u32 & ENTRY_MASKED_BIT != 0),
            Err(_) => "?",
        };
        let (gflags, gt) = binding(p.and_then(|p| p.bound));
        let mut note = String::new();
        if e.dirty {
            note.push_str("  (latched change not yet in effect)");
        }
        line!(
            s,
            "{:<5} {:<18} {:<10} {:<4} {:<6} {:<7} {:<7} {:<5} {:<5} {:<7} {gt}{note}",
            i,
            format!("{:#x}", e.msg.addr),
            format!("{:#x}", e.msg.data),
            format!("{:#04x}", e.msg.gvec()),
            yes(e.masked()),
            hw_mask,
            pending,
            yes(p.is_some_and(|p| p.bound.is_some())),
            p.map(|p| p.pirq.to_string()).unwrap_or_else(|| "-".into()),
            gflags
        );
    }
    if skipped > 0 {
        line!(s, "{skipped} other entries never written by the guest (masked, no pirq); `msix all` lists them");
    }
    line!(s, "masked: the guest's mask as xenpt last saw it (Xen's msixtbl handles mask writes of bound entries); hw-mask: the device's vector control");
    s
}

pub fn msi(dm: &mut DeviceModel) -> String {
    let mut s = String::new();
    let Some((st, l)) = dm.msi.as_ref().and_then(|m| m.layout.map(|l| (m.clone(), l))) else {
        let why = dm.caps.caps.iter().find(|c| c.id == CAP_ID_MSI).and_then(|c| c.hidden);
        return match why {
            Some(w) => format!("MSI: hidden from the guest ({w})"),
            None => "MSI: the function has no MSI capability".into(),
        };
    };
    line!(
        s,
        "MSI capability at {:#04x}: {}-bit, per-vector masking {}, up to {} vector(s)",
        l.cap_offset,
        if l.is_64 { 64 } else { 32 },
        yes(l.per_vector_mask),
        l.max_vectors()
    );
    let ctrl = dm.cfg.emulated(l.cap_offset + 2, 2) as u16;
    let lo = dm.cfg.emulated(l.cap_offset + 4, 4) as u64;
    let hi = l.addr_hi().map(|o| dm.cfg.emulated(o, 4) as u64).unwrap_or(0);
    let data = dm.cfg.emulated(l.data(), 2);
    let mask = l.mask().map(|o| dm.cfg.emulated(o, 4));
    line!(
        s,
        "guest registers: enable {}, MME {} ({} vector(s)), address {:#x}, data {:#06x}, mask {}",
        on(ctrl & MSI_ENABLE_BIT != 0),
        (ctrl >> 4) & 7,
        1u32 << ((ctrl >> 4) & 7),
        lo | hi << 32,
        data,
        mask.map(|m| format!("{m:#010x}")).unwrap_or_else(|| "(no per-vector masking)".into())
    );
    line!(
        s,
        "in effect: enable {}, {} vector(s), address {:#x}, data {:#06x}, bound vectors {:#010x}",
        on(st.regs.enable),
        if st.regs.enable { 1u32 << st.regs.mme } else { 0 },
        st.regs.msg.addr,
        st.regs.msg.data,
        st.bound
    );
    let pending = l.pending().and_then(|o| dm.host().config_read(o, 4).ok());
    let count = if st.regs.enable { 1u32 << st.regs.mme } else { 0 };
    let in_table = dm.pirqs.iter().filter(|(v, _)| matches!(v, Vector::Msi(_))).count() as u32;
    let rows = count.max(in_table);
    if rows == 0 {
        line!(s, "no vectors (MSI disabled)");
        return s;
    }
    line!(s, "{:<6} {:<4} {:<6} {:<7} {:<5} {:<5} gflags", "vector", "gvec", "masked", "pending", "bound", "pirq");
    for i in 0..rows {
        let p = dm.pirqs.get(Vector::Msi(i as u8));
        let (gflags, _) = binding(p.and_then(|p| p.bound));
        line!(
            s,
            "{:<6} {:<4} {:<6} {:<7} {:<5} {:<5} {gflags}",
            i,
            format!("{:#04x}", (st.regs.msg.data as u8) | i as u8),
            match mask {
                Some(m) => yes(m >> i & 1 != 0),
                None => "-",
            },
            match pending {
                Some(pb) => yes(pb >> i & 1 != 0),
                None => "-",
            },
            yes(p.is_some_and(|p| p.bound.is_some())),
            p.map(|p| p.pirq.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    s
}

pub fn pirqs(dm: &mut DeviceModel) -> String {
    let mut s = String::new();
    let n = dm.pirqs.iter().count();
    line!(s, "{n} pirq(s) mapped into domain {} for {}", dm.opts.domid, dm.host_sbdf());
    if n > 0 {
        line!(s, "{:<10} {:<6} binding", "source", "pirq");
    }
    for (v, p) in dm.pirqs.iter() {
        let src = match v {
            Vector::Msix(e) => format!("MSI-X {e}"),
            Vector::Msi(i) => format!("MSI {i}"),
            Vector::Intx => "INTx".to_string(),
        };
        let b = p.bound.map(|b| format!("bound: {b}")).unwrap_or_else(|| "mapped, not bound".into());
        line!(s, "{src:<10} {:<6} {b}", p.pirq);
    }
    let st = dm.pirqs.stats;
    line!(
        s,
        "since start: {} map, {} unmap, {} bind, {} unbind, {} failed",
        st.maps,
        st.unmaps,
        st.binds,
        st.unbinds,
        st.failures
    );
    s
}

pub fn stats(dm: &mut DeviceModel, ioreqs: Option<ServerStats>) -> String {
    let mut s = String::new();
    match ioreqs {
        Some(r) => line!(
            s,
            "ioreqs: {} events ({} spurious); pci-config {}, mmio {}, pio {}, invalidate {}, unsupported {}",
            r.events,
            r.spurious,
            r.pci_config,
            r.mmio,
            r.pio,
            r.invalidate,
            r.unsupported
        ),
        None => line!(s, "ioreqs: no ioreq server attached"),
    }
    if let Some(r) = ioreqs {
        line!(
            s,
            "request handling (slot taken to completion, 1 in {} timed): {}",
            crate::ioreq::LATENCY_SAMPLE,
            r.latency.summary()
        );
    }
    line!(
        s,
        "interrupts: Xen delivers them to the guest without xenpt (count them in the guest's /proc/interrupts, \
         or with `xl debug-keys M`); below, what xenpt did to route them"
    );
    let c = &dm.cfg.stats;
    line!(
        s,
        "config space: {} guest reads, {} guest writes, {} host reads, {} host writes, {} malformed accesses",
        c.reads,
        c.writes,
        c.host_reads,
        c.host_writes,
        c.bad_accesses
    );
    if c.dropped.is_empty() {
        line!(s, "dropped guest writes (unknown registers): none");
    } else {
        line!(s, "dropped guest writes (unknown registers), by dword:");
        for (off, n) in &c.dropped {
            line!(s, "  {:#05x} {:<36} {n}", off, register_name(&dm.caps, *off));
        }
    }
    let d = dm.stats;
    line!(
        s,
        "MSI-X table: {} reads, {} writes; MMIO: {} dropped writes, {} malformed accesses",
        d.msix_table_reads,
        d.msix_table_writes,
        d.dropped_mmio_writes,
        d.bad_mmio
    );
    let m = dm.mapper.stats;
    line!(
        s,
        "hypercalls, BARs: {} memory_mapping, {} ioport_mapping, {} io-range (trap) calls; {} failed",
        m.memory_mapping_calls,
        m.ioport_mapping_calls,
        m.trap_calls,
        m.failures
    );
    let p = dm.pirqs.stats;
    line!(
        s,
        "hypercalls, interrupts: {} map_pirq, {} unmap_pirq, {} bind_pt_irq, {} unbind_pt_irq; {} failed",
        p.maps,
        p.unmaps,
        p.binds,
        p.unbinds,
        p.failures
    );
    line!(s, "device errors: {} BAR mapping, {} interrupt binding", d.map_errors, d.bind_errors);
    s
}
