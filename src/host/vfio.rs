//! The VFIO host backend: a function bound to vfio-pci, reached through its VFIO device
//! file. Config space through the config region, BAR contents through the BAR regions
//! (pread/pwrite, no mmap), region sizes and flags from VFIO_DEVICE_GET_REGION_INFO, MSI
//! and MSI-X vector counts from VFIO_DEVICE_GET_IRQ_INFO, function reset with
//! VFIO_DEVICE_RESET. What VFIO does not give comes from sysfs, read-only: the host
//! physical BAR addresses (`resource`), the IDs, the IRQ, and the page-sharing check.
//!
//! Mirrors linux/include/uapi/linux/vfio.h; every struct has a layout assertion and every
//! ioctl number a value check. vfio-bindings would give the structs but not the request
//! numbers, so both are written here.
//!
//! Under Xen, dom0 sees no IOMMU (Xen owns it), so vfio-pci binds only in the kernel's
//! no-IOMMU mode (CONFIG_VFIO_NOIOMMU and `vfio.enable_unsafe_noiommu_mode=1`), through
//! /dev/vfio/noiommu-N. Debian's kernels are built without CONFIG_VFIO_NOIOMMU: there the
//! device cannot be opened at all, and the error says so.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs::{File, OpenOptions};
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::sysfs::SysfsDevice;
use super::*;

// --- include/uapi/linux/vfio.h -----------------------------------------------------------

const VFIO_TYPE: u64 = b';' as u64;
const fn vfio_io(n: u64) -> u64 {
    (VFIO_TYPE << 8) | (100 + n) // _IO(VFIO_TYPE, VFIO_BASE + n)
}
pub const VFIO_GET_API_VERSION: u64 = vfio_io(0);
pub const VFIO_CHECK_EXTENSION: u64 = vfio_io(1);
pub const VFIO_SET_IOMMU: u64 = vfio_io(2);
pub const VFIO_GROUP_GET_STATUS: u64 = vfio_io(3);
pub const VFIO_GROUP_SET_CONTAINER: u64 = vfio_io(4);
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
pub const VFIO_DEVICE_GET_INFO: u64 = vfio_io(7);
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
pub const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
pub const VFIO_DEVICE_RESET: u64 = vfio_io(11);
const _: () = assert!(VFIO_GET_API_VERSION == 0x3b64 && VFIO_GROUP_GET_DEVICE_FD == 0x3b6a);
const _: () = assert!(VFIO_DEVICE_GET_REGION_INFO == 0x3b6c && VFIO_DEVICE_RESET == 0x3b6f);

pub const VFIO_API_VERSION: i32 = 0;
pub const VFIO_TYPE1_IOMMU: u64 = 1;
pub const VFIO_TYPE1V2_IOMMU: u64 = 3;
pub const VFIO_NOIOMMU_IOMMU: u64 = 8;
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1;
pub const VFIO_DEVICE_FLAGS_PCI: u32 = 2;
pub const VFIO_REGION_INFO_FLAG_READ: u32 = 1;
pub const VFIO_REGION_INFO_FLAG_WRITE: u32 = 2;
pub const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
pub const VFIO_PCI_MSI_IRQ_INDEX: u32 = 1;
pub const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VfioGroupStatus {
    pub argsz: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<VfioGroupStatus>() == 8);

/// `struct vfio_device_info` (with cap_offset, Linux 4.14+).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VfioDeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
    pub cap_offset: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<VfioDeviceInfo>() == 24 && offset_of!(VfioDeviceInfo, num_irqs) == 12);

/// `struct vfio_region_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VfioRegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}
const _: () = assert!(size_of::<VfioRegionInfo>() == 32 && offset_of!(VfioRegionInfo, size) == 16);
const _: () = assert!(offset_of!(VfioRegionInfo, offset) == 24);

/// `struct vfio_irq_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VfioIrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}
const _: () = assert!(size_of::<VfioIrqInfo>() == 16 && offset_of!(VfioIrqInfo, count) == 12);

// --- the backend -------------------------------------------------------------------------

/// One VFIO region: where it sits in the device file, and how big it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub size: u64,
    pub flags: u32,
}

/// What VFIO says about the function, for `xenpt host-info` and start-up checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioInfo {
    /// "/dev/vfio/7" or "/dev/vfio/noiommu-0".
    pub group: String,
    pub noiommu: bool,
    pub reset: bool,
    /// BARs 0-5 and the ROM (index 6); size 0 when absent.
    pub regions: [Region; 7],
    pub config: Region,
    pub msi_vectors: u32,
    pub msix_vectors: u32,
}

pub struct VfioDevice {
    sysfs: SysfsDevice,
    /// Config space through sysfs (the `run` use): VFIO's config region virtualises the
    /// MSI/MSI-X control and INTx-disable bits, and drops MSI-X control writes, which
    /// xenpt must really make on the device for Xen's interrupt remapping to work.
    config_via_sysfs: bool,
    // Kept open for the device's lifetime: closing the group or container drops the device.
    _container: File,
    _group: File,
    device: File,
    info: VfioInfo,
}

fn io_err(sbdf: Sbdf, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Io { sbdf, what, source }
}

/// An ioctl whose argument is a pointer to a #[repr(C)] struct or an int.
fn ioctl_ptr<T>(fd: RawFd, req: u64, arg: &mut T) -> std::io::Result<i32> {
    // SAFETY: `arg` is a live, exclusively borrowed #[repr(C)] struct whose layout is the
    // one the VFIO ioctl `req` expects (asserted above); the kernel writes at most
    // `argsz` = size_of::<T>() bytes into it.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ioctl_int(fd: RawFd, req: u64, arg: libc::c_ulong) -> std::io::Result<i32> {
    // SAFETY: these VFIO ioctls take their argument by value (an integer or an fd
    // number); no memory is passed to the kernel.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The VFIO group device file of `sbdf`: its iommu_group number, and whether it is a
/// no-IOMMU group (the kernel marks those with an `iommu_group/name` of "vfio-noiommu").
fn group_of(sysfs_root: &Path, sbdf: Sbdf) -> Result<(PathBuf, bool), HostError> {
    let dev = sysfs_root.join(sbdf.to_string());
    let link = std::fs::read_link(dev.join("iommu_group")).map_err(|_| HostError::Invalid {
        sbdf,
        what: "has no IOMMU group, so VFIO cannot reach it. Under Xen dom0 sees no IOMMU: vfio-pci binds only in \
               the kernel's no-IOMMU mode (a kernel built with CONFIG_VFIO_NOIOMMU, which Debian's are not, and \
               `modprobe vfio enable_unsafe_noiommu_mode=1`); otherwise use the sysfs backend with pciback"
            .into(),
    })?;
    let n = link.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let noiommu = std::fs::read_to_string(dev.join("iommu_group/name")).is_ok_and(|s| s.trim() == "vfio-noiommu");
    let path = if noiommu { format!("/dev/vfio/noiommu-{n}") } else { format!("/dev/vfio/{n}") };
    Ok((PathBuf::from(path), noiommu))
}

impl VfioDevice {
    /// Open a function bound to vfio-pci, for looking at it (`guest-view`, `host-info`):
    /// config space through VFIO's config region.
    pub fn open(sbdf: Sbdf) -> Result<Self, HostError> {
        Self::open_with(sbdf, false)
    }

    /// Open it for `xenpt run`: BARs through VFIO regions, config space through sysfs
    /// (opened writable).
    pub fn open_for_run(sbdf: Sbdf) -> Result<Self, HostError> {
        Self::open_with(sbdf, true)
    }

    fn open_with(sbdf: Sbdf, config_via_sysfs: bool) -> Result<Self, HostError> {
        let root = Path::new("/sys/bus/pci/devices");
        let driver = std::fs::read_link(root.join(sbdf.to_string()).join("driver"))
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "none".into());
        if driver != "vfio-pci" {
            return Err(HostError::Invalid {
                sbdf,
                what: format!(
                    "is bound to driver {driver:?}, not vfio-pci: `echo {sbdf} > /sys/bus/pci/devices/{sbdf}/driver/unbind; \
                     echo vfio-pci > /sys/bus/pci/devices/{sbdf}/driver_override; echo {sbdf} > /sys/bus/pci/drivers_probe`"
                ),
            });
        }
        let (group_path, noiommu) = group_of(root, sbdf)?;
        let rw = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
        let container = rw(Path::new("/dev/vfio/vfio")).map_err(io_err(sbdf, "cannot open /dev/vfio/vfio"))?;
        let cfd = container.as_raw_fd();
        let api = ioctl_int(cfd, VFIO_GET_API_VERSION, 0).map_err(io_err(sbdf, "VFIO_GET_API_VERSION"))?;
        if api != VFIO_API_VERSION {
            return Err(HostError::Invalid { sbdf, what: format!("unknown VFIO API version {api}") });
        }
        let group = rw(&group_path).map_err(io_err(sbdf, format!("cannot open {}", group_path.display())))?;
        let gfd = group.as_raw_fd();
        let mut status = VfioGroupStatus { argsz: size_of::<VfioGroupStatus>() as u32, flags: 0 };
        ioctl_ptr(gfd, VFIO_GROUP_GET_STATUS, &mut status).map_err(io_err(sbdf, "VFIO_GROUP_GET_STATUS"))?;
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(HostError::Invalid {
                sbdf,
                what: format!(
                    "VFIO group {} is not viable: every function in it must be bound to vfio-pci (or no driver)",
                    group_path.display()
                ),
            });
        }
        let mut container_fd = cfd;
        ioctl_ptr(gfd, VFIO_GROUP_SET_CONTAINER, &mut container_fd)
            .map_err(io_err(sbdf, "VFIO_GROUP_SET_CONTAINER"))?;
        let iommu = if noiommu { VFIO_NOIOMMU_IOMMU } else { VFIO_TYPE1V2_IOMMU };
        let iommu = if !noiommu && ioctl_int(cfd, VFIO_CHECK_EXTENSION, iommu).unwrap_or(0) == 0 {
            VFIO_TYPE1_IOMMU
        } else {
            iommu
        };
        ioctl_int(cfd, VFIO_SET_IOMMU, iommu).map_err(io_err(sbdf, format!("VFIO_SET_IOMMU({iommu})")))?;
        let name = std::ffi::CString::new(sbdf.to_string()).expect("an SBDF has no NUL");
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD takes a NUL-terminated device name, which `name`
        // is and which outlives the call.
        let dfd = unsafe { libc::ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD as _, name.as_ptr()) };
        if dfd < 0 {
            return Err(io_err(sbdf, "VFIO_GROUP_GET_DEVICE_FD")(std::io::Error::last_os_error()));
        }
        // SAFETY: the ioctl returned a new file descriptor that nothing else owns.
        let device = unsafe { File::from_raw_fd(dfd) };
        let info = Self::query(sbdf, &device, group_path.display().to_string(), noiommu)?;
        // sysfs is opened writable only when config writes go through it.
        let sysfs = SysfsDevice::open(sbdf, config_via_sysfs)?;
        Ok(VfioDevice { sysfs, config_via_sysfs, _container: container, _group: group, device, info })
    }

    fn query(sbdf: Sbdf, device: &File, group: String, noiommu: bool) -> Result<VfioInfo, HostError> {
        let fd = device.as_raw_fd();
        let mut di = VfioDeviceInfo { argsz: size_of::<VfioDeviceInfo>() as u32, ..Default::default() };
        ioctl_ptr(fd, VFIO_DEVICE_GET_INFO, &mut di).map_err(io_err(sbdf, "VFIO_DEVICE_GET_INFO"))?;
        if di.flags & VFIO_DEVICE_FLAGS_PCI == 0 || di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX {
            return Err(HostError::Invalid { sbdf, what: "VFIO does not present it as a PCI device".into() });
        }
        let region = |index: u32| -> Result<Region, HostError> {
            let mut r = VfioRegionInfo { argsz: size_of::<VfioRegionInfo>() as u32, index, ..Default::default() };
            ioctl_ptr(fd, VFIO_DEVICE_GET_REGION_INFO, &mut r)
                .map_err(io_err(sbdf, format!("VFIO_DEVICE_GET_REGION_INFO({index})")))?;
            Ok(Region { offset: r.offset, size: r.size, flags: r.flags })
        };
        let mut regions = [Region::default(); 7];
        for (i, r) in regions.iter_mut().enumerate() {
            *r = region(i as u32)?;
        }
        let config = region(VFIO_PCI_CONFIG_REGION_INDEX)?;
        let irqs = |index: u32| {
            let mut q = VfioIrqInfo { argsz: size_of::<VfioIrqInfo>() as u32, index, ..Default::default() };
            ioctl_ptr(fd, VFIO_DEVICE_GET_IRQ_INFO, &mut q).map(|_| q.count).unwrap_or(0)
        };
        Ok(VfioInfo {
            group,
            noiommu,
            reset: di.flags & VFIO_DEVICE_FLAGS_RESET != 0,
            regions,
            config,
            msi_vectors: irqs(VFIO_PCI_MSI_IRQ_INDEX),
            msix_vectors: irqs(VFIO_PCI_MSIX_IRQ_INDEX),
        })
    }

    pub fn info(&self) -> &VfioInfo {
        &self.info
    }

    /// VFIO_DEVICE_RESET (FLR, or whatever reset the kernel has for the function).
    pub fn reset(&self) -> Result<(), HostError> {
        if !self.info.reset {
            return Err(HostError::Unsupported { sbdf: self.sysfs.sbdf(), backend: "vfio", what: "function reset" });
        }
        ioctl_int(self.device.as_raw_fd(), VFIO_DEVICE_RESET, 0)
            .map(|_| ())
            .map_err(io_err(self.sysfs.sbdf(), "VFIO_DEVICE_RESET"))
    }

    /// The region of BAR `bar`, with the access checked against it.
    fn bar_region(&self, bar: u8, offset: u64, size: u8) -> Result<Region, HostError> {
        let sbdf = self.sysfs.sbdf();
        let r =
            *self.info.regions.get(bar as usize).ok_or(HostError::BadAccess { sbdf, offset: offset as u16, size })?;
        check_bar_access(sbdf, bar, offset, size, r.size)?;
        Ok(r)
    }

    fn region_rw(&self, r: Region, offset: u64, buf: &mut [u8], write: bool) -> Result<(), HostError> {
        let sbdf = self.sysfs.sbdf();
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > r.size) {
            return Err(HostError::BadAccess { sbdf, offset: offset as u16, size: buf.len() as u8 });
        }
        let at = r.offset + offset;
        let n = if write { self.device.write_at(buf, at) } else { self.device.read_at(buf, at) }
            .map_err(io_err(sbdf, format!("VFIO region access at {at:#x}")))?;
        if n != buf.len() {
            return Err(HostError::Invalid { sbdf, what: format!("short VFIO region access at {at:#x}") });
        }
        Ok(())
    }
}

impl HostDevice for VfioDevice {
    fn sbdf(&self) -> Sbdf {
        self.sysfs.sbdf()
    }
    fn backend(&self) -> &'static str {
        if self.config_via_sysfs {
            "vfio (config through sysfs)"
        } else {
            "vfio"
        }
    }
    fn reset(&self) -> Result<(), HostError> {
        VfioDevice::reset(self)
    }
    fn config_size(&self) -> usize {
        if self.config_via_sysfs {
            return self.sysfs.config_size();
        }
        (self.info.config.size as usize).clamp(256, 4096)
    }
    fn config_read(&self, offset: u16, size: u8) -> Result<u32, HostError> {
        if self.config_via_sysfs {
            return self.sysfs.config_read(offset, size);
        }
        check_config_access(self.sbdf(), offset, size, self.config_size())?;
        let mut b = [0u8; 4];
        self.region_rw(self.info.config, offset as u64, &mut b[..size as usize], false)?;
        Ok(u32::from_le_bytes(b))
    }
    fn config_read_all(&self, buf: &mut [u8]) -> Result<(), HostError> {
        if self.config_via_sysfs {
            return self.sysfs.config_read_all(buf);
        }
        check_config_block(self.sbdf(), buf.len(), self.config_size())?;
        self.region_rw(self.info.config, 0, buf, false)
    }
    fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), HostError> {
        if self.config_via_sysfs {
            return self.sysfs.config_write(offset, size, value);
        }
        check_config_access(self.sbdf(), offset, size, self.config_size())?;
        let mut b = value.to_le_bytes();
        self.region_rw(self.info.config, offset as u64, &mut b[..size as usize], true)
    }
    fn resources(&self) -> Result<HostResources, HostError> {
        // Host physical addresses are not VFIO's to give: sysfs `resource`. Each BAR's
        // size must agree with VFIO's region (a disagreement means a stale sysfs view).
        let res = self.sysfs.resources()?;
        for b in res.bars.iter().flatten().chain(res.rom.iter()) {
            let r = self.info.regions[b.index.min(6) as usize];
            if r.size != 0 && r.size != b.size {
                return Err(HostError::Invalid {
                    sbdf: self.sbdf(),
                    what: format!("BAR {} is {:#x} bytes in sysfs but {:#x} in VFIO", b.index, b.size, r.size),
                });
            }
        }
        Ok(res)
    }
    fn ids(&self) -> Result<HostIds, HostError> {
        self.sysfs.ids()
    }
    fn irq(&self) -> Option<u32> {
        self.sysfs.irq()
    }
    fn bar_read(&self, bar: u8, offset: u64, size: u8) -> Result<u64, HostError> {
        let r = self.bar_region(bar, offset, size)?;
        let mut b = [0u8; 8];
        self.region_rw(r, offset, &mut b[..size as usize], false)?;
        Ok(u64::from_le_bytes(b))
    }
    fn bar_write(&self, bar: u8, offset: u64, size: u8, value: u64) -> Result<(), HostError> {
        let r = self.bar_region(bar, offset, size)?;
        let mut b = value.to_le_bytes();
        self.region_rw(r, offset, &mut b[..size as usize], true)
    }
    fn page_sharers(&self, bar: &HostBar) -> Result<Vec<Sbdf>, HostError> {
        self.sysfs.page_sharers(bar)
    }
}

/// The text `xenpt host-info --backend vfio` prints.
pub fn describe(info: &VfioInfo) -> String {
    let mut s = format!(
        "group {}{}, reset {}, MSI vectors {}, MSI-X vectors {}, config region {:#x} bytes\n",
        info.group,
        if info.noiommu { " (no-IOMMU mode)" } else { "" },
        if info.reset { "supported" } else { "not supported" },
        info.msi_vectors,
        info.msix_vectors,
        info.config.size
    );
    for (i, r) in info.regions.iter().enumerate().filter(|(_, r)| r.size != 0) {
        let name = if i == 6 { "ROM".to_string() } else { format!("BAR{i}") };
        s.push_str(&format!(
            "  region {name}: {:#x} bytes{}{}\n",
            r.size,
            if r.flags & VFIO_REGION_INFO_FLAG_READ != 0 { ", read" } else { "" },
            if r.flags & VFIO_REGION_INFO_FLAG_WRITE != 0 { ", write" } else { "" },
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs device directory with an IOMMU group link (and its name file).
    fn tree(group: Option<(&str, Option<&str>)>) -> (tempfile::TempDir, Sbdf) {
        let sbdf = Sbdf::new(0, 3, 0, 0);
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join(sbdf.to_string());
        std::fs::create_dir_all(&dev).unwrap();
        if let Some((n, name)) = group {
            let g = t.path().join("iommu_groups").join(n);
            std::fs::create_dir_all(&g).unwrap();
            if let Some(name) = name {
                std::fs::write(g.join("name"), format!("{name}\n")).unwrap();
            }
            std::os::unix::fs::symlink(&g, dev.join("iommu_group")).unwrap();
        }
        (t, sbdf)
    }

    #[test]
    fn the_group_device_follows_the_iommu_group_and_its_no_iommu_name() {
        let (t, sbdf) = tree(Some(("7", None)));
        assert_eq!(group_of(t.path(), sbdf).unwrap(), (PathBuf::from("/dev/vfio/7"), false));
        let (t, sbdf) = tree(Some(("0", Some("vfio-noiommu"))));
        assert_eq!(group_of(t.path(), sbdf).unwrap(), (PathBuf::from("/dev/vfio/noiommu-0"), true));
    }

    #[test]
    fn no_iommu_group_explains_xen_dom0_and_no_iommu_mode() {
        let (t, sbdf) = tree(None);
        let e = group_of(t.path(), sbdf).unwrap_err().to_string();
        for want in
            ["0000:03:00.0", "no IOMMU group", "Xen", "CONFIG_VFIO_NOIOMMU", "enable_unsafe_noiommu_mode=1", "pciback"]
        {
            assert!(e.contains(want), "{want:?} missing from: {e}");
        }
    }

    #[test]
    fn describe_lists_the_regions_vfio_reports() {
        let mut regions = [Region::default(); 7];
        regions[0] =
            Region { offset: 0, size: 0x4000, flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE };
        regions[6] = Region { offset: 0x6_0000_0000, size: 0x4_0000, flags: VFIO_REGION_INFO_FLAG_READ };
        let info = VfioInfo {
            group: "/dev/vfio/3".into(),
            noiommu: false,
            reset: true,
            regions,
            config: Region { offset: 0x7_0000_0000, size: 0x1000, flags: 3 },
            msi_vectors: 0,
            msix_vectors: 65,
        };
        assert_eq!(
            describe(&info),
            "group /dev/vfio/3, reset supported, MSI vectors 0, MSI-X vectors 65, config region 0x1000 bytes\n  \
             region BAR0: 0x4000 bytes, read, write\n  region ROM: 0x40000 bytes, read\n"
        );
    }
}
