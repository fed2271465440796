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

/// The guest view of a host function: (dump text, capability report lines).
pub fn guest_view(host: Box<dyn HostDevice>, profile: Profile, slot: u8) -> Result<(String, Vec<String>), ViewError> {
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
    Ok((format_dump(Sbdf::new(0, 0, slot, 0), desc, &bytes), report))
}

pub fn from_dump(path: &str, profile: Profile, slot: u8) -> Result<(String, Vec<String>), ViewError> {
    let text = std::fs::read_to_string(path).map_err(|source| ViewError::Read { path: path.into(), source })?;
    let dev = DumpDevice::from_text(&text).map_err(|why| ViewError::Parse { path: path.into(), why })?;
    guest_view(Box::new(dev), profile, slot)
}

pub fn from_sysfs(sbdf: Sbdf, profile: Profile, slot: u8) -> Result<(String, Vec<String>), ViewError> {
    let dev = SysfsDevice::open(sbdf, false)?;
    guest_view(Box::new(dev), profile, slot)
}
