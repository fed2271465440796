//! The sysfs host backend against this machine's real PCI devices, read-only: nothing here
//! writes a config register.

use std::path::Path;

use xenpt::host::sysfs::SysfsDevice;
use xenpt::host::{BarKind, HostDevice};
use xenpt::pci::Sbdf;

fn devices() -> Vec<Sbdf> {
    let mut v: Vec<Sbdf> = std::fs::read_dir("/sys/bus/pci/devices")
        .expect("/sys/bus/pci/devices must exist on the test machine")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    v
}

fn attr(sbdf: Sbdf, name: &str) -> String {
    std::fs::read_to_string(Path::new("/sys/bus/pci/devices").join(sbdf.to_string()).join(name))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn every_real_device_reads_consistently_through_the_sysfs_backend() {
    let devs = devices();
    assert!(!devs.is_empty(), "this test needs at least one PCI device on the machine");
    for sbdf in devs {
        let d = SysfsDevice::open(sbdf, false).unwrap();
        let ids = d.ids().unwrap();
        assert_eq!(format!("{:#06x}", ids.vendor), attr(sbdf, "vendor"), "{sbdf}");
        assert_eq!(format!("{:#06x}", ids.device), attr(sbdf, "device"), "{sbdf}");
        // Config space agrees with sysfs for a physical function.
        let id = d.config_read(0, 4).unwrap();
        assert_eq!(id & 0xffff, ids.vendor as u32, "{sbdf}");
        assert_eq!(d.config_read(2, 2).unwrap(), ids.device as u32, "{sbdf}");
        assert_eq!(d.config_read(0x0b, 1).unwrap(), ids.class >> 16, "{sbdf} base class");
        // Sub-dword reads agree with the dword read.
        let dw = d.config_read(0, 4).unwrap();
        assert_eq!(d.config_read(1, 1).unwrap(), (dw >> 8) & 0xff);
        // The one-pread snapshot equals the dword-by-dword reads of the header and
        // capabilities (0x00-0x3f and the ID/pointer bytes; status bits may change between
        // the two reads on a live device, so the IDs and the capability pointer are compared).
        let mut all = vec![0u8; d.config_size()];
        d.config_read_all(&mut all).unwrap();
        for off in [0x00u16, 0x08, 0x2c, 0x34] {
            let v = d.config_read(off, 4).unwrap();
            assert_eq!(&all[off as usize..off as usize + 4], &v.to_le_bytes(), "{sbdf} snapshot at {off:#x}");
        }
        assert!(d.config_read_all(&mut vec![0u8; d.config_size() + 4]).is_err(), "past the end is refused");
        // Misaligned and out-of-range accesses are refused, not attempted.
        assert!(d.config_read(1, 2).is_err());
        assert!(d.config_read(0x3ff, 4).is_err());
        assert!(d.config_read(d.config_size() as u16, 1).is_err());
        // BARs from `resource` match what lspci-style decoding of the registers says
        // about their type.
        let res = d.resources().unwrap();
        for b in res.bars.iter().flatten() {
            let reg = d.config_read(0x10 + 4 * b.index as u16, 4).unwrap();
            assert_eq!(reg & 1 == 1, b.kind == BarKind::Io, "{sbdf} BAR{} type", b.index);
            if b.kind == BarKind::Mem64 {
                assert_eq!(reg & 6, 4, "{sbdf} BAR{} is 64-bit in config space too", b.index);
                assert!(res.bars[b.index as usize + 1].is_none());
            }
            assert!(b.size.is_power_of_two(), "{sbdf} BAR{} size {:#x}", b.index, b.size);
        }
    }
}

#[test]
fn opening_a_missing_device_names_it() {
    let e = SysfsDevice::open(Sbdf::new(0x7ff, 0xff, 0x1f, 7), false).err().unwrap();
    assert!(e.to_string().contains("07ff:ff:1f.7"), "{e}");
}
