//! An offline host backend: a function described by an `lspci -xxx`/`-xxxx` dump (as in
//! ../shared/pci-corpus), for `xenpt guest-view` and the corpus tests. Writes land in an
//! in-memory copy and are recorded, so tests can check what would have reached hardware.
//!
//! A dump carries no BAR sizes and no sysfs `resource`; resources are derived from the BAR
//! registers: the address is the register's, the size is the smallest power of two of at
//! least 4 KiB (256 bytes for I/O) that holds the MSI-X table and PBA placed in that BAR,
//! unless `sizes` overrides it.

use std::sync::{Arc, Mutex};

/// One config write that reached the dump "hardware": value before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostWrite {
    pub offset: u16,
    pub size: u8,
    pub old: u32,
    pub new: u32,
}

/// A handle on a [`DumpDevice`]'s write record that stays usable after the device moved.
pub type WriteLog = Arc<Mutex<Vec<HostWrite>>>;

use super::*;
use crate::pci::*;

pub struct DumpDevice {
    sbdf: Sbdf,
    size: usize,
    cfg: Mutex<Vec<u8>>,
    resources: HostResources,
    writes: WriteLog,
    pub description: String,
}

/// Parse the text of an `lspci -x` style dump: an optional "BB:DD.F description" line,
/// then lines of "off: xx xx ...". Returns (sbdf, description, bytes).
pub fn parse_dump(text: &str) -> Result<(Sbdf, String, Vec<u8>), String> {
    let mut bytes = vec![0u8; EXT_CONFIG_SPACE_SIZE];
    let mut top = 0usize;
    let mut sbdf = Sbdf::new(0, 0, 0, 0);
    let mut desc = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        match line.split_once(": ") {
            Some((off, rest)) if off.len() <= 3 && off.chars().all(|c| c.is_ascii_hexdigit()) => {
                let base = usize::from_str_radix(off, 16).map_err(|e| format!("line {}: {e}", n + 1))?;
                for (i, b) in rest.split_whitespace().enumerate() {
                    let v = u8::from_str_radix(b, 16).map_err(|e| format!("line {}: {e}", n + 1))?;
                    let at = base + i;
                    if at >= bytes.len() {
                        return Err(format!("line {}: offset {at:#x} beyond 4 KiB", n + 1));
                    }
                    bytes[at] = v;
                    top = top.max(at + 1);
                }
            }
            _ if n == 0 => {
                let (addr, d) = line.split_once(' ').unwrap_or((line, ""));
                sbdf = addr.parse().map_err(|e| format!("line 1: {e}"))?;
                desc = d.to_string();
            }
            _ => return Err(format!("line {}: not a dump line: {line:?}", n + 1)),
        }
    }
    if top < 64 {
        return Err("dump has fewer than 64 bytes".into());
    }
    bytes.truncate(if top > CONFIG_SPACE_SIZE { EXT_CONFIG_SPACE_SIZE } else { CONFIG_SPACE_SIZE });
    Ok((sbdf, desc, bytes))
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Resources from the BAR registers of a type-0 header (see the module comment).
fn derive_resources(cfg: &[u8]) -> HostResources {
    let mut res = HostResources::default();
    if cfg[HEADER_TYPE_OFFSET as usize] & 0x7f != 0 {
        return res;
    }
    // MSI-X placement, to size the BARs that hold the table and PBA.
    let mut need = [0u64; 6];
    let (found, _) = crate::config_space::caps::walk(cfg);
    for (id, off) in found {
        if id == CAP_ID_MSIX {
            if let Some(l) = crate::config_space::caps::msix::layout(cfg, off) {
                let t = l.table_bar as usize;
                need[t] = need[t].max(l.table_offset + l.table_len());
                let p = l.pba_bar as usize;
                need[p] = need[p].max(l.pba_offset + l.pba_len());
            }
        }
    }
    let mut i = 0;
    while i < 6 {
        let reg = le32(cfg, BAR0_OFFSET as usize + 4 * i);
        if reg & BAR_IO_BIT != 0 {
            let base = (reg & !3) as u64;
            if base != 0 {
                res.bars[i] = Some(HostBar { index: i as u8, base, size: 256, kind: BarKind::Io, prefetchable: false });
            }
            i += 1;
            continue;
        }
        let is64 = reg & BAR_MEM_TYPE_MASK == BAR_MEM_TYPE_64 && i < 5;
        let hi = if is64 { le32(cfg, BAR0_OFFSET as usize + 4 * (i + 1)) as u64 } else { 0 };
        let base = (reg & !0xf) as u64 | hi << 32;
        if base != 0 {
            let mut size = need[i].max(PAGE_SIZE).next_power_of_two();
            // A BAR is naturally aligned: never claim more than the address allows.
            size = size.min(1 << base.trailing_zeros().min(63));
            res.bars[i] = Some(HostBar {
                index: i as u8,
                base,
                size,
                kind: if is64 { BarKind::Mem64 } else { BarKind::Mem32 },
                prefetchable: reg & BAR_MEM_PREFETCH_BIT != 0,
            });
        }
        i += if is64 { 2 } else { 1 };
    }
    let rom = le32(cfg, ROM_BAR_OFFSET as usize);
    if rom & !0x7ff != 0 {
        res.rom = Some(HostBar {
            index: 6,
            base: (rom & !0x7ff) as u64,
            size: 0x10000,
            kind: BarKind::Mem32,
            prefetchable: false,
        });
    }
    res
}

impl DumpDevice {
    pub fn from_text(text: &str) -> Result<Self, String> {
        let (sbdf, description, bytes) = parse_dump(text)?;
        let resources = derive_resources(&bytes);
        Ok(DumpDevice {
            sbdf,
            size: bytes.len(),
            cfg: Mutex::new(bytes),
            resources,
            writes: WriteLog::default(),
            description,
        })
    }

    /// The record of every config write that reaches this "hardware".
    pub fn write_log(&self) -> WriteLog {
        self.writes.clone()
    }
}

impl HostDevice for DumpDevice {
    fn sbdf(&self) -> Sbdf {
        self.sbdf
    }
    fn backend(&self) -> &'static str {
        "dump"
    }
    fn config_size(&self) -> usize {
        self.size
    }
    fn config_read(&self, offset: u16, size: u8) -> Result<u32, HostError> {
        check_config_access(self.sbdf, offset, size, self.size)?;
        let c = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        Ok((0..size as usize).fold(0, |a, i| a | (c[offset as usize + i] as u32) << (8 * i)))
    }
    fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), HostError> {
        check_config_access(self.sbdf, offset, size, self.size)?;
        let mut c = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        let old = (0..size as usize).fold(0, |a, i| a | (c[offset as usize + i] as u32) << (8 * i));
        for i in 0..size as usize {
            c[offset as usize + i] = (value >> (8 * i)) as u8;
        }
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).push(HostWrite { offset, size, old, new: value });
        Ok(())
    }
    fn resources(&self) -> Result<HostResources, HostError> {
        Ok(self.resources.clone())
    }
    fn ids(&self) -> Result<HostIds, HostError> {
        let c = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        let w = |o: usize| u16::from_le_bytes([c[o], c[o + 1]]);
        Ok(HostIds {
            vendor: w(0),
            device: w(2),
            subsys_vendor: w(0x2c),
            subsys_device: w(0x2e),
            class: le32(&c, 8) >> 8,
            revision: c[8],
        })
    }
    fn irq(&self) -> Option<u32> {
        let c = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        (c[INTERRUPT_PIN_OFFSET as usize] != 0).then_some(c[INTERRUPT_LINE_OFFSET as usize] as u32)
    }
    fn bar_read(&self, bar: u8, offset: u64, size: u8) -> Result<u64, HostError> {
        let bs = self.resources.bars.get(bar as usize).copied().flatten().map(|b| b.size).unwrap_or(0);
        check_bar_access(self.sbdf, bar, offset, size, bs)?;
        Ok(0) // a dump has no BAR contents: reads as zero (an empty PBA)
    }
    fn bar_write(&self, bar: u8, _offset: u64, _size: u8, _value: u64) -> Result<(), HostError> {
        Err(HostError::Unsupported {
            sbdf: self.sbdf,
            backend: "dump",
            what: if bar < 6 { "BAR writes" } else { "ROM writes" },
        })
    }
    fn page_sharers(&self, _bar: &HostBar) -> Result<Vec<Sbdf>, HostError> {
        Ok(Vec::new()) // unknown for a dump: assume the page is the function's own
    }
}

/// Format config bytes as `lspci -xxxx` does (readable back with `lspci -F`).
pub fn format_dump(sbdf: Sbdf, description: &str, bytes: &[u8]) -> String {
    let mut s = format!("{:02x}:{:02x}.{} {description}\n", sbdf.bus, sbdf.dev, sbdf.func);
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        s.push_str(&format!("{:02x}: {}\n", i * 16, hex.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_round_trips_through_the_formatter() {
        let mut bytes = vec![0u8; 256];
        bytes[0..4].copy_from_slice(&[0x36, 0x1b, 0x10, 0x00]);
        bytes[0x0e] = 0;
        let text = format_dump(Sbdf::new(0, 0, 4, 0), "test", &bytes);
        let (sbdf, desc, back) = parse_dump(&text).unwrap();
        assert_eq!((sbdf, desc.as_str(), back), (Sbdf::new(0, 0, 4, 0), "test", bytes));
        assert!(parse_dump("00:04.0 x\n00: zz\n").is_err());
        assert!(parse_dump("00:04.0 x\n").is_err());
    }
}
