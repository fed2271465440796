//! The default host backend: /sys/bus/pci/devices/SSSS:BB:DD.F/{config,resource,...},
//! exactly what the Xen toolstack and QEMU use. Config accesses are pread/pwrite at the
//! register offset, which the kernel turns into naturally aligned config cycles.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Mutex;

use super::*;
use crate::pci::PAGE_SIZE;

/// A memory BAR mapped from sysfs `resourceN` (whole BAR; address space only, pages are
/// touched on access). Unmapped on drop.
struct BarMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain process memory of device registers, only accessed with
// volatile reads/writes under the BarMaps mutex.
unsafe impl Send for BarMap {}

impl Drop for BarMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in SysfsDevice::bar_map, once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// sysfs `resource` flags (include/linux/ioport.h).
pub const IORESOURCE_IO: u64 = 0x100;
pub const IORESOURCE_MEM: u64 = 0x200;
pub const IORESOURCE_PREFETCH: u64 = 0x2000;
pub const IORESOURCE_MEM_64: u64 = 0x100000;

pub struct SysfsDevice {
    sbdf: Sbdf,
    dir: PathBuf,
    root: PathBuf,
    config: File,
    config_size: usize,
    writable: bool,
    maps: Mutex<[Option<BarMap>; 6]>,
}

impl SysfsDevice {
    /// Open a device under /sys/bus/pci/devices. `writable` opens `config` for writing
    /// (needs root); tests open read-only.
    pub fn open(sbdf: Sbdf, writable: bool) -> Result<Self, HostError> {
        Self::open_at(Path::new("/sys/bus/pci/devices"), sbdf, writable)
    }

    pub fn open_at(root: &Path, sbdf: Sbdf, writable: bool) -> Result<Self, HostError> {
        let dir = root.join(sbdf.to_string());
        let io = |what: String| move |source| HostError::Io { sbdf, what, source };
        let path = dir.join("config");
        let config = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(io(format!("cannot open {} (is {sbdf} present? are you root?)", path.display())))?;
        let len = config.metadata().map_err(io(format!("stat {}", path.display())))?.len() as usize;
        // Without CAP_SYS_ADMIN the file is readable but only 64 bytes come back.
        let mut probe = [0u8; 4];
        let got = config.read_at(&mut probe, 0x40).unwrap_or(0);
        let config_size = if got < 4 { 64 } else { len.min(4096) };
        Ok(SysfsDevice {
            sbdf,
            dir,
            root: root.to_path_buf(),
            config,
            config_size,
            writable,
            maps: Mutex::new(Default::default()),
        })
    }

    /// Check an access of `size` bytes at `offset` against memory BAR `bar`, then run `f`
    /// on the BAR's mapping (mapped on first use).
    fn with_bar<T>(&self, bar: u8, offset: u64, size: u8, f: impl FnOnce(&BarMap) -> T) -> Result<T, HostError> {
        let res = self.resources()?;
        let b = res
            .bars
            .get(bar as usize)
            .copied()
            .flatten()
            .filter(|b| b.kind != BarKind::Io)
            .ok_or_else(|| HostError::Invalid { sbdf: self.sbdf, what: format!("BAR{bar} is not a memory BAR") })?;
        check_bar_access(self.sbdf, bar, offset, size, b.size)?;
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if maps[bar as usize].is_none() {
            let path = self.dir.join(format!("resource{bar}"));
            let file = OpenOptions::new().read(true).write(self.writable).open(&path).map_err(|source| {
                HostError::Io { sbdf: self.sbdf, what: format!("open {}", path.display()), source }
            })?;
            let len = b.size.max(PAGE_SIZE) as usize;
            let prot = libc::PROT_READ | if self.writable { libc::PROT_WRITE } else { 0 };
            // SAFETY: a shared mapping of the BAR's sysfs resource file; the kernel bounds it
            // to the BAR and we check the result.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, file.as_raw_fd(), 0) };
            if p == libc::MAP_FAILED {
                return Err(HostError::Io {
                    sbdf: self.sbdf,
                    what: format!("mmap {}", path.display()),
                    source: std::io::Error::last_os_error(),
                });
            }
            let ptr =
                NonNull::new(p.cast()).ok_or_else(|| HostError::Invalid { sbdf: self.sbdf, what: "mmap".into() })?;
            maps[bar as usize] = Some(BarMap { ptr, len });
        }
        let m =
            maps[bar as usize].as_ref().ok_or_else(|| HostError::Invalid { sbdf: self.sbdf, what: "no map".into() })?;
        Ok(f(m))
    }

    fn read_attr(&self, name: &str) -> Result<String, HostError> {
        let p = self.dir.join(name);
        std::fs::read_to_string(&p).map(|s| s.trim().to_string()).map_err(|source| HostError::Io {
            sbdf: self.sbdf,
            what: format!("read {}", p.display()),
            source,
        })
    }

    fn hex_attr(&self, name: &str) -> Result<u32, HostError> {
        let s = self.read_attr(name)?;
        u32::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| HostError::Invalid { sbdf: self.sbdf, what: format!("{name}: {s:?} is not hex") })
    }
}

/// Parse the text of sysfs `resource` (start end flags per line; lines 0-5 BARs, 6 ROM).
pub fn parse_resource(sbdf: Sbdf, text: &str) -> Result<HostResources, HostError> {
    let mut res = HostResources::default();
    for (i, line) in text.lines().enumerate().take(7) {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16))
            .collect::<Result<_, _>>()
            .map_err(|_| HostError::Invalid { sbdf, what: format!("resource line {i}: {line:?}") })?;
        let [start, end, flags] = f[..] else {
            return Err(HostError::Invalid { sbdf, what: format!("resource line {i}: expected 3 fields: {line:?}") });
        };
        if flags & (IORESOURCE_IO | IORESOURCE_MEM) == 0 || end < start || (start == 0 && end == 0) {
            continue;
        }
        let kind = if flags & IORESOURCE_IO != 0 {
            BarKind::Io
        } else if flags & IORESOURCE_MEM_64 != 0 {
            BarKind::Mem64
        } else {
            BarKind::Mem32
        };
        let bar = HostBar {
            index: i as u8,
            base: start,
            size: end - start + 1,
            kind,
            prefetchable: flags & IORESOURCE_PREFETCH != 0,
        };
        if i == 6 {
            res.rom = Some(bar);
        } else {
            res.bars[i] = Some(bar);
        }
    }
    Ok(res)
}

impl HostDevice for SysfsDevice {
    fn sbdf(&self) -> Sbdf {
        self.sbdf
    }

    fn backend(&self) -> &'static str {
        "sysfs"
    }

    fn config_size(&self) -> usize {
        self.config_size
    }

    fn config_read(&self, offset: u16, size: u8) -> Result<u32, HostError> {
        check_config_access(self.sbdf, offset, size, self.config_size)?;
        let mut b = [0u8; 4];
        let n = self.config.read_at(&mut b[..size as usize], offset as u64).map_err(|source| HostError::Io {
            sbdf: self.sbdf,
            what: format!("config read at {offset:#x}"),
            source,
        })?;
        if n != size as usize {
            return Err(HostError::BadAccess { sbdf: self.sbdf, offset, size });
        }
        Ok(u32::from_le_bytes(b))
    }

    fn config_read_all(&self, buf: &mut [u8]) -> Result<(), HostError> {
        check_config_block(self.sbdf, buf.len(), self.config_size)?;
        // One pread: the kernel still reads the function dword by dword.
        self.config.read_exact_at(buf, 0).map_err(|source| HostError::Io {
            sbdf: self.sbdf,
            what: format!("config read of {} bytes", buf.len()),
            source,
        })
    }

    fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), HostError> {
        check_config_access(self.sbdf, offset, size, self.config_size)?;
        let b = value.to_le_bytes();
        self.config.write_all_at(&b[..size as usize], offset as u64).map_err(|source| HostError::Io {
            sbdf: self.sbdf,
            what: format!("config write at {offset:#x}"),
            source,
        })
    }

    fn resources(&self) -> Result<HostResources, HostError> {
        parse_resource(self.sbdf, &self.read_attr("resource")?)
    }

    fn ids(&self) -> Result<HostIds, HostError> {
        let class = self.hex_attr("class")?;
        let revision =
            self.read_attr("revision").ok().and_then(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok());
        Ok(HostIds {
            vendor: self.hex_attr("vendor")? as u16,
            device: self.hex_attr("device")? as u16,
            subsys_vendor: self.hex_attr("subsystem_vendor").unwrap_or(0) as u16,
            subsys_device: self.hex_attr("subsystem_device").unwrap_or(0) as u16,
            class,
            revision: match revision {
                Some(r) => r,
                None => self.config_read(0x08, 1)? as u8,
            },
        })
    }

    fn irq(&self) -> Option<u32> {
        self.read_attr("irq").ok()?.parse().ok().filter(|&i| i != 0)
    }

    fn bar_read(&self, bar: u8, offset: u64, size: u8) -> Result<u64, HostError> {
        self.with_bar(bar, offset, size, |m| {
            // SAFETY: with_bar checked offset + size <= BAR size <= mapping length and
            // natural alignment, as device registers require.
            unsafe {
                let p = m.ptr.as_ptr().add(offset as usize);
                match size {
                    1 => p.read_volatile() as u64,
                    2 => p.cast::<u16>().read_volatile() as u64,
                    4 => p.cast::<u32>().read_volatile() as u64,
                    _ => p.cast::<u64>().read_volatile(),
                }
            }
        })
    }

    fn bar_write(&self, bar: u8, offset: u64, size: u8, value: u64) -> Result<(), HostError> {
        if !self.writable {
            return Err(HostError::Invalid { sbdf: self.sbdf, what: "opened read-only".into() });
        }
        self.with_bar(bar, offset, size, |m| {
            // SAFETY: as in bar_read; the mapping is writable because the device was opened
            // writable.
            unsafe {
                let p = m.ptr.as_ptr().add(offset as usize);
                match size {
                    1 => p.write_volatile(value as u8),
                    2 => p.cast::<u16>().write_volatile(value as u16),
                    4 => p.cast::<u32>().write_volatile(value as u32),
                    _ => p.cast::<u64>().write_volatile(value),
                }
            }
        })
    }

    fn page_sharers(&self, bar: &HostBar) -> Result<Vec<Sbdf>, HostError> {
        let first = bar.base & !(PAGE_SIZE - 1);
        let last = (bar.base + bar.size.max(1) - 1) | (PAGE_SIZE - 1);
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.root).map_err(|source| HostError::Io {
            sbdf: self.sbdf,
            what: format!("list {}", self.root.display()),
            source,
        })?;
        for e in entries.flatten() {
            let Some(other) = e.file_name().to_str().and_then(|n| n.parse::<Sbdf>().ok()) else { continue };
            let Ok(text) = std::fs::read_to_string(e.path().join("resource")) else { continue };
            let Ok(res) = parse_resource(other, &text) else { continue };
            let hit = res.bars.iter().flatten().chain(res.rom.iter()).any(|r| {
                r.kind != BarKind::Io
                    && r.base <= last
                    && first < r.end()
                    && !(other == self.sbdf && r.index == bar.index)
            });
            if hit && !out.contains(&other) {
                out.push(other);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_with_64bit_prefetch_io_and_rom() {
        let text = "\
0x00000000fe000000 0x00000000fe003fff 0x0000000000140204
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x000000000000c000 0x000000000000c01f 0x0000000000040101
0x00000000e0000000 0x00000000efffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x00000000fe100000 0x00000000fe13ffff 0x0000000000046200
";
        let r = parse_resource(Sbdf::new(0, 1, 0, 0), text).unwrap();
        let b0 = r.bars[0].unwrap();
        assert_eq!((b0.base, b0.size, b0.kind, b0.prefetchable), (0xfe00_0000, 0x4000, BarKind::Mem64, false));
        assert_eq!(r.bars[1], None);
        let b2 = r.bars[2].unwrap();
        assert_eq!((b2.base, b2.size, b2.kind), (0xc000, 0x20, BarKind::Io));
        let b3 = r.bars[3].unwrap();
        assert!(b3.prefetchable && b3.kind == BarKind::Mem64 && b3.size == 0x1000_0000);
        assert_eq!(r.rom.unwrap().size, 0x40000);
    }

    #[test]
    fn malformed_resource_is_an_error_naming_the_device() {
        let e = parse_resource(Sbdf::new(0, 2, 3, 0), "0x0 0x1\n").unwrap_err();
        assert!(e.to_string().contains("0000:02:03.0"), "{e}");
    }

    /// A line of `resource`: (index, start, size, flags).
    type Line = (usize, u64, u64, u64);

    /// A fake devices directory: each function gets a `resource` and an empty 256-byte
    /// `config`.
    fn tree(devs: &[(Sbdf, &[Line])]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (sbdf, lines) in devs {
            let dir = t.path().join(sbdf.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let mut res = vec![(0u64, 0u64, 0u64); 13];
            for &(i, start, size, flags) in lines.iter() {
                res[i] = (start, start + size - 1, flags);
            }
            let text: String = res.iter().map(|(s, e, f)| format!("{s:#018x} {e:#018x} {f:#018x}\n")).collect();
            std::fs::write(dir.join("resource"), text).unwrap();
            std::fs::write(dir.join("config"), [0u8; 256]).unwrap();
        }
        t
    }

    const MEM: u64 = IORESOURCE_MEM;
    const MEM64: u64 = IORESOURCE_MEM | IORESOURCE_MEM_64 | IORESOURCE_PREFETCH;
    const ROM: u64 = IORESOURCE_MEM | IORESOURCE_PREFETCH;

    #[test]
    fn page_sharers_are_the_functions_with_a_memory_bar_or_rom_in_the_page() {
        let me = Sbdf::new(0, 0, 0x1a, 0);
        let page = 0x1_2345_6000u64;
        let d = |dev| Sbdf::new(0, 5, dev, 0);
        let t = tree(&[
            (me, &[(0, page, 0x400, MEM64)]),
            (d(1), &[(2, page + 0x800, 0x100, MEM64)]), // a BAR in the page
            (d(2), &[(6, page + 0xc00, 0x400, ROM)]),   // a ROM in the page
            (d(3), &[(0, page - 0x100, 0x100, MEM)]),   // ends where the page begins
            (d(4), &[(0, page + 0x1000, 0x100, MEM)]),  // starts where the page ends
            (d(5), &[(0, page + 0x400, 0x20, IORESOURCE_IO)]), // ports, not memory
            (d(6), &[(1, page + 0x200, 0x80, MEM), (3, 0xfe00_0000, 0x1000, MEM)]), // BAR1 in it
        ]);
        // Not functions, or unreadable: skipped.
        std::fs::create_dir(t.path().join("not-a-device")).unwrap();
        std::fs::create_dir(t.path().join("0000:05:07.0")).unwrap();
        std::fs::write(t.path().join("0000:05:08.0"), "").unwrap();
        let dev = SysfsDevice::open_at(t.path(), me, false).unwrap();
        let bar = dev.resources().unwrap().bars[0].unwrap();
        let mut got = dev.page_sharers(&bar).unwrap();
        got.sort();
        assert_eq!(got, [d(1), d(2), d(6)]);
        // From another function's point of view this one shares the page too.
        let other = SysfsDevice::open_at(t.path(), d(1), false).unwrap();
        let bar = other.resources().unwrap().bars[2].unwrap();
        let mut got = other.page_sharers(&bar).unwrap();
        got.sort();
        assert_eq!(got, [me, d(2), d(6)]);
    }

    #[test]
    fn another_bar_of_the_same_function_in_the_page_counts_but_the_bar_itself_does_not() {
        // Two sub-page BARs of one function in one page: mapping BAR0's page would also
        // map BAR2's registers at an address the guest never gave BAR2 (which may hold
        // the MSI-X table that must stay trapped), so the function itself is named.
        let me = Sbdf::new(0, 3, 0, 0);
        let t = tree(&[(me, &[(0, 0xfe10_0000, 0x800, MEM), (2, 0xfe10_0800, 0x800, MEM)])]);
        let dev = SysfsDevice::open_at(t.path(), me, false).unwrap();
        let res = dev.resources().unwrap();
        assert_eq!(dev.page_sharers(&res.bars[0].unwrap()).unwrap(), [me]);
        // Alone in its page: nobody, not even the BAR itself.
        let t = tree(&[(me, &[(0, 0xfe10_0000, 0x800, MEM), (2, 0xfe10_1000, 0x800, MEM)])]);
        let dev = SysfsDevice::open_at(t.path(), me, false).unwrap();
        let res = dev.resources().unwrap();
        assert_eq!(dev.page_sharers(&res.bars[0].unwrap()).unwrap(), Vec::<Sbdf>::new());
        assert_eq!(dev.page_sharers(&res.bars[2].unwrap()).unwrap(), Vec::<Sbdf>::new());
    }
}
