//! `xenpt guest-view`: what a guest would see of a function, without Xen: the guest-visible
//! config space in `lspci -xxxx` format (feed it to `lspci -F FILE -vvv`), and on stderr which
//! capabilities are exposed or hidden and why. Never writes to a live device.

use crate::device::{DeviceError, DeviceModel, DeviceOptions};
use crate::host::dump::{format_dump, DumpDevice};
use crate::host::sysfs::SysfsDevice;
use crate::host::{HostDevice, HostError};
use crate::pci::Sbdf;
use crate::Profile;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not an lspci -x dump: {why}")]
    Parse { path: String, why: String },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// How guest-view prints the guest's config space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A register table: offset, register, the guest's value, and who owns which bits.
    Table,
    /// `lspci -xxxx` format, readable by `lspci -F FILE -vvv`.
    Lspci,
}

/// The register table: every header dword and every dword of each exposed capability
/// (conventional and extended), with the guest's value and the policy masks.
fn table(dm: &DeviceModel, bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "offset  register                                   guest     emulated  writable  w1c       source"
    );
    let mut dwords: Vec<u16> = (0..0x40).step_by(4).collect();
    for c in dm.caps.caps.iter().filter(|c| c.hidden.is_none()) {
        dwords.extend((c.offset & !3..c.offset + c.len).step_by(4));
    }
    for c in dm.caps.ext.iter().filter(|c| c.hidden.is_none()) {
        dwords.extend((c.offset..c.offset + c.len.max(4)).step_by(4));
    }
    dwords.sort();
    dwords.dedup();
    for off in dwords {
        let o = off as usize;
        let Some(v) = bytes.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) else { continue };
        let (_, emu, wr, w1c) = dm.cfg.masks(off);
        let source = match (emu, wr & !emu, w1c & !emu) {
            (0xffff_ffff, _, _) => "xenpt",
            (0, 0, 0) => "host, read-only",
            (_, 0, 0) => "xenpt + host read-only",
            _ => "xenpt + host pass-through",
        };
        let name = crate::console::view::register_name(&dm.caps, off);
        let _ = writeln!(out, "0x{off:03x}   {name:<42} {v:08x}  {emu:08x}  {wr:08x}  {w1c:08x}  {source}");
    }
    out
}

/// The guest view of a host function: (output text, capability report lines).
pub fn guest_view_as(
    host: Box<dyn HostDevice>,
    profile: Profile,
    slot: u8,
    format: Format,
) -> Result<(String, Vec<String>), ViewError> {
    let name = host.ids().ok().map(|ids| {
        let n = crate::names::lookup(&ids);
        format!("{} [{:04x}:{:04x}] (names: {})", n.describe(&ids), ids.vendor, ids.device, n.source)
    });
    let (dump, mut report, table_text) = view(host, profile, slot)?;
    if let Some(name) = name {
        report.insert(1.min(report.len()), format!("  {name}"));
    }
    Ok((if format == Format::Lspci { dump } else { table_text }, report))
}

/// The guest view of a host function in lspci format: (dump text, capability report lines).
pub fn guest_view(host: Box<dyn HostDevice>, profile: Profile, slot: u8) -> Result<(String, Vec<String>), ViewError> {
    view(host, profile, slot).map(|(dump, report, _)| (dump, report))
}

fn view(host: Box<dyn HostDevice>, profile: Profile, slot: u8) -> Result<(String, Vec<String>, String), ViewError> {
    let opts = DeviceOptions {
        domid: 0,
        guest_sbdf: Sbdf::new(0, 0, slot, 0),
        profile,
        permissive: false,
        read_only_host: true,
    };
    let host_sbdf = host.sbdf();
    let backend = host.backend();
    let mut dm = DeviceModel::new(host, 0, opts)?;
    let bytes = dm.guest_snapshot();
    let mut report =
        vec![format!("guest view of {host_sbdf} ({backend} backend), {profile:?} profile, guest slot {slot:02x}")];
    for c in &dm.caps.caps {
        let name = crate::config_space::caps::name(c.id);
        match c.hidden {
            None => report.push(format!("  [{:02x}] {name}: exposed", c.offset)),
            Some(why) => report.push(format!("  [{:02x}] {name}: hidden ({why})", c.offset)),
        }
    }
    for c in &dm.caps.ext {
        let name = crate::config_space::caps::ext::name(c.id);
        match c.hidden {
            None => report.push(format!("  [{:03x}] {name}: exposed", c.offset)),
            Some(why) => report.push(format!("  [{:03x}] {name}: hidden ({why})", c.offset)),
        }
    }
    report.extend(dm.caps.warnings.iter().map(|w| format!("  warning: {w}")));
    let desc = "xenpt guest view";
    let table_text = table(&dm, &bytes);
    Ok((format_dump(Sbdf::new(0, 0, slot, 0), desc, &bytes), report, table_text))
}

pub fn from_dump(path: &str, profile: Profile, slot: u8, format: Format) -> Result<(String, Vec<String>), ViewError> {
    let text = std::fs::read_to_string(path).map_err(|source| ViewError::Read { path: path.into(), source })?;
    let dev = DumpDevice::from_text(&text).map_err(|why| ViewError::Parse { path: path.into(), why })?;
    guest_view_as(Box::new(dev), profile, slot, format)
}

/// As [`from_sysfs`], reading the function through VFIO (bound to vfio-pci).
pub fn from_vfio(sbdf: Sbdf, profile: Profile, slot: u8, format: Format) -> Result<(String, Vec<String>), ViewError> {
    let dev = crate::host::vfio::VfioDevice::open(sbdf)?;
    guest_view_as(Box::new(dev), profile, slot, format)
}

pub fn from_sysfs(sbdf: Sbdf, profile: Profile, slot: u8, format: Format) -> Result<(String, Vec<String>), ViewError> {
    let dev = SysfsDevice::open(sbdf, false)?;
    guest_view_as(Box::new(dev), profile, slot, format)
}
