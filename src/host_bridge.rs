//! The PVH profile's PCI root: a PVH domU has no emulated chipset, so nobody answers port
//! 0xCF8 and there is no host bridge at 00:00.0, and a guest OS that probes configuration
//! mechanism #1 (write 0x8000_0000 to 0xCF8, read it back) concludes there is no PCI at
//! all. xenpt presents both, once per guest: it claims port 0xCF8 (Xen forwards the
//! guest's CF8 writes to the server claiming the port after latching them itself) and the
//! SBDF 0000:00:00.0, where a read-only host bridge answers.
//!
//! Only one xenpt per PVH guest may present it (with several ioreq servers claiming the
//! same range the highest id wins, so a second one would be harmless but pointless):
//! `xenpt run --no-host-bridge` for the others.

use crate::device::DeviceModel;
use crate::ioreq::{IoHandler, Request};
use crate::pci::*;
use crate::xen::abi::CF8_PORT;
use crate::xen::{IoRange, Xen};

/// Red Hat's (QEMU's) PCIe host bridge IDs: a generic, driverless host bridge.
pub const BRIDGE_VENDOR: u16 = 0x1b36;
pub const BRIDGE_DEVICE: u16 = 0x0008;
pub const BRIDGE_SBDF: Sbdf = Sbdf::new(0, 0, 0, 0);

pub struct HostBridge {
    cf8: u32,
    cfg: [u8; CONFIG_SPACE_SIZE],
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBridge {
    pub fn new() -> Self {
        let mut cfg = [0u8; CONFIG_SPACE_SIZE];
        cfg[0..2].copy_from_slice(&BRIDGE_VENDOR.to_le_bytes());
        cfg[2..4].copy_from_slice(&BRIDGE_DEVICE.to_le_bytes());
        cfg[0x08] = 0; // revision
        cfg[0x0b] = 0x06; // class: bridge, host bridge (0600), prog-if 0
        cfg[0x0a] = 0x00;
        cfg[0x2c..0x2e].copy_from_slice(&0x1af4u16.to_le_bytes());
        cfg[0x2e..0x30].copy_from_slice(&0x1100u16.to_le_bytes());
        HostBridge { cf8: 0, cfg }
    }

    /// The extra ranges the server claims: port 0xCF8 (4 bytes) and the bridge's SBDF.
    pub fn ranges() -> [IoRange; 2] {
        [IoRange::port(CF8_PORT as u64, 4), IoRange::pci(BRIDGE_SBDF)]
    }

    fn config_read(&self, reg: u32, size: u32) -> u32 {
        match crate::config_space::Access::new(reg, size, CONFIG_SPACE_SIZE) {
            Some(a) => {
                let i = a.dword * 4;
                let dw = u32::from_le_bytes([self.cfg[i], self.cfg[i + 1], self.cfg[i + 2], self.cfg[i + 3]]);
                (dw & a.mask) >> a.shift
            }
            None => !0 >> (32 - 8 * size.clamp(1, 4)),
        }
    }

    /// Port 0xCF8: the guest's writes (4-byte) latch; reads give the latch back, so the
    /// guest's type-1 probe succeeds.
    fn cf8(&mut self, port: u16, size: u32, write: Option<u32>) -> u64 {
        match write {
            Some(v) if port == CF8_PORT && size == 4 => {
                self.cf8 = v & 0x80ff_fffc;
                0
            }
            Some(_) => 0,
            None if port == CF8_PORT && size == 4 => self.cf8 as u64,
            None => !0u32 as u64 >> (32 - 8 * size.clamp(1, 4)),
        }
    }
}

/// What one xenpt serves: its device, plus the host bridge and CF8 in the PVH profile.
pub struct Served<'a> {
    pub device: &'a mut DeviceModel,
    pub bridge: Option<&'a mut HostBridge>,
}

impl IoHandler for Served<'_> {
    fn handle(&mut self, xen: &mut dyn Xen, req: Request) -> u64 {
        if let Some(b) = self.bridge.as_deref_mut() {
            match req {
                Request::PciConfig { sbdf, reg, size, write } if sbdf == BRIDGE_SBDF => {
                    // Read-only: writes to the bridge are dropped.
                    return if write.is_some() { 0 } else { b.config_read(reg, size) as u64 };
                }
                Request::Pio { port, size, write } if (CF8_PORT..CF8_PORT + 4).contains(&port) => {
                    return b.cf8(port, size, write);
                }
                _ => {}
            }
        }
        self.device.handle(xen, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_answers_the_type1_probe_and_identifies_itself() {
        let mut b = HostBridge::new();
        assert_eq!(b.cf8(CF8_PORT, 4, Some(0x8000_0000)), 0);
        assert_eq!(b.cf8(CF8_PORT, 4, None), 0x8000_0000);
        assert_eq!(b.config_read(0, 4), 0x0008_1b36);
        assert_eq!(b.config_read(0x0a, 2), 0x0600);
        assert_eq!(b.config_read(0x0e, 1), 0, "type 0, single function");
        assert_eq!(b.config_read(0x10, 4), 0, "no BARs");
        assert_eq!(b.config_read(0x0f, 2), 0xffff, "straddling access");
        assert_eq!(b.cf8(CF8_PORT + 1, 1, None), 0xff);
    }
}
