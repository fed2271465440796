//! The host-device boundary: how xenpt reaches the physical PCI function it passes
//! through. One trait, [`HostDevice`]; backends: [`sysfs`] (what Xen toolstacks use) and
//! [`nvme`] (an emulated NVMe controller for the demo and the tests).
//!
//! BAR addresses come from trusted host data (sysfs `resource`), never from reading the
//! device's BAR registers back (XSA-337).

pub mod dump;
pub mod nvme;
pub mod sysfs;
pub mod vfio;

/// How xenpt reaches a live host function (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// sysfs config/resource files; the function bound to pciback (what Xen toolstacks use).
    #[default]
    Sysfs,
    /// VFIO (the function bound to vfio-pci): BARs through VFIO regions, VFIO reset.
    Vfio,
}

use crate::pci::Sbdf;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{sbdf}: {what}: {source}")]
    Io {
        sbdf: Sbdf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{sbdf}: {what}")]
    Invalid { sbdf: Sbdf, what: String },
    #[error("{sbdf}: config access at {offset:#x} size {size} is out of range or misaligned")]
    BadAccess { sbdf: Sbdf, offset: u16, size: u8 },
    #[error("{sbdf}: {what} is not supported by the {backend} backend")]
    Unsupported { sbdf: Sbdf, backend: &'static str, what: &'static str },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64,
}

/// One host BAR (or the ROM) from trusted data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostBar {
    pub index: u8,
    pub base: u64,
    pub size: u64,
    pub kind: BarKind,
    pub prefetchable: bool,
}

impl HostBar {
    pub fn is_io(&self) -> bool {
        self.kind == BarKind::Io
    }
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// BARs 0-5 and the expansion ROM. For a 64-bit BAR at index n, index n+1 is None.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostResources {
    pub bars: [Option<HostBar>; 6],
    pub rom: Option<HostBar>,
}

/// Identity of the function from trusted sources (sysfs), not config read-back: a VF
/// reads 0xffff as vendor/device ID in config space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostIds {
    pub vendor: u16,
    pub device: u16,
    pub subsys_vendor: u16,
    pub subsys_device: u16,
    /// class << 8 | prog-if, with the base class in bits 23:16.
    pub class: u32,
    pub revision: u8,
}

/// Access to the physical function.
pub trait HostDevice: Send {
    fn sbdf(&self) -> Sbdf;
    /// Backend name for messages ("sysfs", "emulated-nvme").
    fn backend(&self) -> &'static str;
    /// 256 or 4096.
    fn config_size(&self) -> usize;
    /// Naturally aligned 1-, 2- or 4-byte config read.
    fn config_read(&self, offset: u16, size: u8) -> Result<u32, HostError>;
    /// The first `buf.len()` bytes of config space (a multiple of 4, at most
    /// `config_size()`), for the start-up snapshot. Backends that can read it in one go
    /// (sysfs: one pread; the simulator: one round trip) override this.
    fn config_read_all(&self, buf: &mut [u8]) -> Result<(), HostError> {
        check_config_block(self.sbdf(), buf.len(), self.config_size())?;
        for (i, dw) in buf.chunks_exact_mut(4).enumerate() {
            dw.copy_from_slice(&self.config_read((i * 4) as u16, 4)?.to_le_bytes());
        }
        Ok(())
    }
    /// Naturally aligned 1-, 2- or 4-byte config write. Only the register policy calls
    /// this, and only for pass-through bits.
    fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), HostError>;
    fn resources(&self) -> Result<HostResources, HostError>;
    fn ids(&self) -> Result<HostIds, HostError>;
    /// The legacy IRQ/GSI, if the function has one.
    fn irq(&self) -> Option<u32>;
    /// Naturally aligned 1-, 2-, 4- or 8-byte read from a memory BAR (PBA, registers
    /// sharing the MSI-X table page). The caller has checked the offset against the BAR.
    fn bar_read(&self, bar: u8, offset: u64, size: u8) -> Result<u64, HostError>;
    /// Naturally aligned write to a memory BAR (registers sharing the MSI-X table page).
    fn bar_write(&self, bar: u8, offset: u64, size: u8, value: u64) -> Result<(), HostError>;
    /// Other PCI functions with a memory resource in the same 4 KiB page(s) as `bar`
    /// (a sub-page BAR may only be mapped if the page is its alone).
    fn page_sharers(&self, bar: &HostBar) -> Result<Vec<Sbdf>, HostError>;
    /// Reset the function, where the backend can (VFIO); the sysfs backend leaves resets
    /// to the toolstack (pciback).
    fn reset(&self) -> Result<(), HostError> {
        Err(HostError::Unsupported { sbdf: self.sbdf(), backend: self.backend(), what: "function reset" })
    }
}

/// Check a BAR access: size 1/2/4/8, naturally aligned, inside `bar_size`.
pub fn check_bar_access(sbdf: Sbdf, bar: u8, offset: u64, size: u8, bar_size: u64) -> Result<(), HostError> {
    let ok = matches!(size, 1 | 2 | 4 | 8)
        && offset % size as u64 == 0
        && offset.checked_add(size as u64).is_some_and(|e| e <= bar_size);
    if ok {
        Ok(())
    } else {
        Err(HostError::Invalid { sbdf, what: format!("BAR{bar} access at {offset:#x} size {size}") })
    }
}

/// Check a whole-block config read ([`HostDevice::config_read_all`]): a multiple of 4
/// bytes from offset 0, inside `limit`.
pub fn check_config_block(sbdf: Sbdf, len: usize, limit: usize) -> Result<(), HostError> {
    if len % 4 == 0 && len <= limit {
        Ok(())
    } else {
        Err(HostError::BadAccess { sbdf, offset: 0, size: 4 })
    }
}

/// Check a config access is naturally aligned, of size 1/2/4, and inside `limit`.
pub fn check_config_access(sbdf: Sbdf, offset: u16, size: u8, limit: usize) -> Result<(), HostError> {
    let ok = matches!(size, 1 | 2 | 4) && offset % size as u16 == 0 && offset as usize + size as usize <= limit;
    if ok {
        Ok(())
    } else {
        Err(HostError::BadAccess { sbdf, offset, size })
    }
}
