//! Vendor-specific capability (ID 0x09): readable, never writable.
//!
//! Drivers find firmware versions, feature bits and device-specific windows here (Intel
//! GPUs, Mellanox, Realtek...). Its body is defined only by the vendor, so xenpt cannot
//! know which writes are harmless: the guest reads the host's bytes, its writes are
//! dropped. Byte 2 is the capability's own length (header included); a length that is
//! too short to hold it, or that runs into the next capability, is cut to what fits.

use super::super::ConfigSpace;

/// Header (ID, next) plus the length byte.
pub const MIN_LEN: u16 = 3;

/// The capability's length as it states it, within `room`.
pub fn len(host_cfg: &[u8], off: u16, room: u16) -> u16 {
    u16::from(host_cfg[off as usize + 2]).max(MIN_LEN).min(room)
}

/// Body from the host, read-only (the ID and next pointer are the chain builder's).
pub fn define(cfg: &mut ConfigSpace, off: u16, len: u16) {
    cfg.define_host_ro(off + 2, len - 2);
}
