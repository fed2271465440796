//! PCI vocabulary shared by every module: addresses and config-space offsets.

use std::fmt;
use std::str::FromStr;

/// Segment/bus/device/function address of a PCI function, as Xen spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sbdf {
    pub seg: u16,
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Sbdf {
    pub const fn new(seg: u16, bus: u8, dev: u8, func: u8) -> Self {
        Sbdf { seg, bus, dev: dev & 0x1f, func: func & 7 }
    }

    /// `XEN_DMOP_PCI_SBDF` encoding: seg<<16 | bus<<8 | dev<<3 | func.
    pub const fn to_u32(self) -> u32 {
        (self.seg as u32) << 16 | (self.bus as u32) << 8 | (self.dev as u32) << 3 | self.func as u32
    }

    pub const fn from_u32(v: u32) -> Self {
        Sbdf::new((v >> 16) as u16, (v >> 8) as u8, ((v >> 3) & 0x1f) as u8, (v & 7) as u8)
    }

    pub const fn devfn(self) -> u8 {
        self.dev << 3 | self.func
    }
}

impl fmt::Display for Sbdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.seg, self.bus, self.dev, self.func)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid PCI address {0:?}: expected SSSS:BB:DD.F or BB:DD.F in hex, e.g. 0000:03:00.0")]
pub struct SbdfParseError(String);

impl FromStr for Sbdf {
    type Err = SbdfParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SbdfParseError(s.to_string());
        let (seg, rest) = match s.matches(':').count() {
            2 => {
                let (seg, rest) = s.split_once(':').ok_or_else(bad)?;
                (u16::from_str_radix(seg, 16).map_err(|_| bad())?, rest)
            }
            1 => (0, s),
            _ => return Err(bad()),
        };
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
        let bus = u8::from_str_radix(bus, 16).map_err(|_| bad())?;
        let dev = u8::from_str_radix(dev, 16).map_err(|_| bad())?;
        let func = u8::from_str_radix(func, 16).map_err(|_| bad())?;
        if dev > 0x1f || func > 7 || bus.to_string().is_empty() {
            return Err(bad());
        }
        Ok(Sbdf::new(seg, bus, dev, func))
    }
}

/// Conventional config space size (what CF8/CFC reaches).
pub const CONFIG_SPACE_SIZE: usize = 256;
/// PCIe extended config space size.
pub const EXT_CONFIG_SPACE_SIZE: usize = 4096;

pub const VENDOR_ID_OFFSET: u16 = 0x00;
pub const DEVICE_ID_OFFSET: u16 = 0x02;
pub const COMMAND_OFFSET: u16 = 0x04;
pub const STATUS_OFFSET: u16 = 0x06;
pub const REVISION_OFFSET: u16 = 0x08;
pub const CLASS_PROG_OFFSET: u16 = 0x09;
pub const CACHE_LINE_OFFSET: u16 = 0x0c;
pub const LATENCY_OFFSET: u16 = 0x0d;
pub const HEADER_TYPE_OFFSET: u16 = 0x0e;
pub const BIST_OFFSET: u16 = 0x0f;
pub const BAR0_OFFSET: u16 = 0x10;
pub const CARDBUS_CIS_OFFSET: u16 = 0x28;
pub const SUBSYS_VENDOR_OFFSET: u16 = 0x2c;
pub const SUBSYS_ID_OFFSET: u16 = 0x2e;
pub const ROM_BAR_OFFSET: u16 = 0x30;
pub const CAP_PTR_OFFSET: u16 = 0x34;
pub const INTERRUPT_LINE_OFFSET: u16 = 0x3c;
pub const INTERRUPT_PIN_OFFSET: u16 = 0x3d;

pub const COMMAND_IO_BIT: u16 = 1 << 0;
pub const COMMAND_MEMORY_BIT: u16 = 1 << 1;
pub const COMMAND_MASTER_BIT: u16 = 1 << 2;
pub const COMMAND_SPECIAL_BIT: u16 = 1 << 3;
pub const COMMAND_INVALIDATE_BIT: u16 = 1 << 4;
pub const COMMAND_VGA_SNOOP_BIT: u16 = 1 << 5;
pub const COMMAND_PARITY_BIT: u16 = 1 << 6;
pub const COMMAND_WAIT_BIT: u16 = 1 << 7;
pub const COMMAND_SERR_BIT: u16 = 1 << 8;
pub const COMMAND_FAST_BACK_BIT: u16 = 1 << 9;
pub const COMMAND_INTX_DISABLE_BIT: u16 = 1 << 10;

pub const STATUS_INTX_BIT: u16 = 1 << 3;
pub const STATUS_CAP_LIST_BIT: u16 = 1 << 4;
/// Error bits of the status register, all write-1-to-clear.
pub const STATUS_ERROR_W1C_MASK: u16 = 0xf900;

pub const HEADER_TYPE_MULTIFUNCTION_BIT: u8 = 0x80;

pub const BAR_IO_BIT: u32 = 1;
pub const BAR_MEM_TYPE_MASK: u32 = 0x6;
pub const BAR_MEM_TYPE_64: u32 = 0x4;
pub const BAR_MEM_PREFETCH_BIT: u32 = 0x8;
pub const ROM_ENABLE_BIT: u32 = 1;

pub const CAP_ID_PM: u8 = 0x01;
pub const CAP_ID_VPD: u8 = 0x03;
pub const CAP_ID_MSI: u8 = 0x05;
pub const CAP_ID_VENDOR: u8 = 0x09;
pub const CAP_ID_EXP: u8 = 0x10;
pub const CAP_ID_MSIX: u8 = 0x11;

pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_SHIFT: u32 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbdf_parses_both_forms_and_encodes_like_xen() {
        let a: Sbdf = "0000:03:1f.7".parse().unwrap();
        assert_eq!(a, Sbdf::new(0, 3, 0x1f, 7));
        assert_eq!(a.to_u32(), 3 << 8 | 0x1f << 3 | 7);
        assert_eq!(Sbdf::from_u32(a.to_u32()), a);
        let b: Sbdf = "01:00.1".parse().unwrap();
        assert_eq!(b, Sbdf::new(0, 1, 0, 1));
        assert_eq!(b.to_string(), "0000:01:00.1");
        for bad in ["", "0000:03:20.0", "0000:03:00.8", "zz:00.0", "1:2:3:4.0", "03:00"] {
            assert!(bad.parse::<Sbdf>().is_err(), "{bad} should not parse");
        }
    }
}
