//! The conventional-capability decision table: vendor-specific is readable and never
//! writable; every hardwired capability is hidden over its whole spec length with its
//! reason; unknown ones lose their header only; the guest's chain skips the hidden ones.

use super::*;
use crate::host::dump::{format_dump, DumpDevice};
use crate::pci::Sbdf;

/// A 256-byte function with the given capabilities (id, offset, body bytes after the
/// two header bytes), chained in order, every other byte 0x5a (so "reads 0" is visible).
fn host(caps: &[(u8, u8, &[u8])]) -> Vec<u8> {
    let mut b = vec![0x5au8; 256];
    b[0..0x40].fill(0);
    b[0..4].copy_from_slice(&0x1234_8086u32.to_le_bytes());
    b[STATUS_OFFSET as usize] = STATUS_CAP_LIST_BIT as u8;
    b[CAP_PTR_OFFSET as usize] = caps.first().map_or(0, |c| c.1);
    for (i, &(id, off, body)) in caps.iter().enumerate() {
        let o = off as usize;
        b[o] = id;
        b[o + 1] = caps.get(i + 1).map_or(0, |c| c.1);
        b[o + 2..o + 2 + body.len()].copy_from_slice(body);
    }
    b
}

fn built(bytes: &[u8]) -> (ConfigSpace, CapLayout, DumpDevice) {
    let dev = DumpDevice::from_text(&format_dump(Sbdf::new(0, 1, 0, 0), "test", bytes)).unwrap();
    let mut cfg = ConfigSpace::new(Sbdf::new(0, 1, 0, 0), 256);
    let layout = build(&mut cfg, bytes, &HostResources::default(), Profile::Hvm);
    (cfg, layout, dev)
}

#[test]
fn vendor_specific_reads_the_host_and_drops_writes() {
    // Length 12 (header included): bytes 0x42..0x4b are the vendor's.
    let body = [12u8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99];
    let bytes = host(&[(CAP_ID_VENDOR, 0x40, &body)]);
    let (mut cfg, layout, dev) = built(&bytes);
    assert_eq!(layout.caps[0].hidden, None);
    assert_eq!(layout.caps[0].len, 12);
    assert_eq!(cfg.read(&dev, 0x40, 4), 0x110c_0009, "ID, next 0, length, first vendor byte");
    assert_eq!(cfg.read(&dev, 0x48, 4), 0x9988_7766);
    for off in (0x40..0x4c).step_by(4) {
        assert_eq!(cfg.write(&dev, off, 4, 0xdead_beef), None);
    }
    assert!(dev.write_log().lock().unwrap().is_empty(), "no write reached the device");
    assert_eq!(cfg.read(&dev, 0x44, 4), 0x5544_3322, "unchanged");
}

#[test]
fn a_vendor_capability_claiming_more_than_its_room_is_cut() {
    let bytes = host(&[(CAP_ID_VENDOR, 0x40, &[0xff]), (CAP_ID_PM, 0x50, &[0x03, 0x00])]);
    let (_, layout, _) = built(&bytes);
    assert_eq!((layout.caps[0].hidden, layout.caps[0].len), (None, 0x10), "up to the next capability");
}

#[test]
fn hardwired_capabilities_are_hidden_over_their_whole_length() {
    // (id, decided hidden length, body)
    let pcix_mode2 = [0u8, 0, 0, 0, 0x06, 0];
    let cases: [(u8, u16, &[u8]); 12] = [
        (0x02, 12, &[]),
        (CAP_ID_VPD, 8, &[]),
        (0x04, 4, &[]),
        (0x06, 4, &[]),
        (0x07, 8, &[0, 0, 0, 0, 0, 0]), // status 0: conventional PCI-X
        (0x07, 0x18, &pcix_mode2),      // 266/533-capable: ECC registers too
        (0x0a, 4, &[]),
        (0x0c, 8, &[]),
        (0x12, 8, &[]),
        (0x13, 6, &[]),
        (0x08, 2, &[]), // variable length: header only
        (0x77, 2, &[]), // unknown: header only
    ];
    for (id, want_len, body) in cases {
        let bytes = host(&[(CAP_ID_PM, 0x40, &[0x03, 0x00]), (id, 0x60, body), (CAP_ID_VENDOR, 0xa0, &[4, 0xab])]);
        let (mut cfg, layout, dev) = built(&bytes);
        let c = &layout.caps[1];
        assert_eq!((c.id, c.len), (id, want_len), "{}", name(id));
        let why = c.hidden.unwrap_or_else(|| panic!("{} is exposed", name(id)));
        assert_eq!(why, decide_other(id));
        assert!(id == 0x77 || why != "unknown capability", "{} has no decision of its own", name(id));
        for o in 0x60..0x60 + want_len {
            assert_eq!(cfg.read(&dev, o as u32, 1), 0, "{} byte {o:#x} reads the host", name(id));
        }
        // The guest's chain: PM -> vendor, the hidden one skipped.
        assert_eq!(cfg.read(&dev, 0x41, 1), 0xa0, "{}", name(id));
        assert_eq!(cfg.read(&dev, 0xa1, 1), 0);
        // Nothing written there reaches the device.
        for o in (0x60..0x60 + want_len).step_by(2) {
            cfg.write(&dev, o as u32, 2, 0xffff);
        }
        assert!(dev.write_log().lock().unwrap().is_empty(), "{}: a write reached the device", name(id));
    }
}
