//! Access-shape tests in the spirit of Xen's tools/tests/vpci harness: registers of every
//! kind at scattered offsets with undefined gaps between them, then every access size
//! (valid and not) at every offset of that window, checked against an independent per-bit
//! model of what each kind of bit means:
//!
//! | kind | guest reads | guest write of 1 / 0 | host |
//! |---|---|---|---|
//! | `Rw` (emulated) | xenpt's value | sets / clears it | never written |
//! | `Ro` (emulated) | xenpt's value | ignored | never written |
//! | `W1c` (emulated) | xenpt's value | clears it / ignored | never written |
//! | `RsvdP` | the host's bit | ignored | preserved: written back as it is |
//! | `RsvdZ` | 0 | ignored | preserved |
//! | `HostRw` | the host's bit | reaches the host | the guest's bit |
//! | `HostW1c` | the host's bit | a 1 reaches the host / nothing | cleared by the 1 |
//! | gap (no policy) | the host's bit | dropped and counted (passed in permissive mode) | preserved |
//!
//! The fake host clears its hardware W1C bits (`W1c` and `HostW1c` positions) when written
//! 1, so a stray 1 sent to one of them shows up as a cleared bit.

use super::tests::FakeHost;
use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rw,
    Ro,
    W1c,
    RsvdP,
    RsvdZ,
    HostRw,
    HostW1c,
}

/// A register: offset, length and its bits grouped by kind (masks relative to the field).
struct Field {
    offset: u16,
    len: u32,
    bits: &'static [(u32, Kind)],
}

/// The scattered layout. Gaps: 0x30-0x3f, 0x46-0x47, 0x49, 0x5b, 0x60-0x63, 0x68-0xff.
const LAYOUT: &[Field] = &[
    Field { offset: 0x40, len: 4, bits: &[(!0, Kind::Rw)] },
    Field { offset: 0x44, len: 2, bits: &[(0xffff, Kind::Ro)] },
    Field { offset: 0x48, len: 1, bits: &[(0xff, Kind::W1c)] },
    Field { offset: 0x4a, len: 2, bits: &[(0xffff, Kind::RsvdP)] },
    Field { offset: 0x4c, len: 2, bits: &[(0xffff, Kind::RsvdZ)] },
    Field { offset: 0x4e, len: 1, bits: &[(0xff, Kind::HostRw)] },
    Field { offset: 0x4f, len: 1, bits: &[(0xff, Kind::HostW1c)] },
    // Shaped like the command register: emulated decode, pass-through bus master,
    // host-reserved bits, emulated INTx disable, reserved-zero top.
    Field {
        offset: 0x50,
        len: 2,
        bits: &[
            (0x0003, Kind::Rw),
            (0x0004, Kind::HostRw),
            (0x03f8, Kind::RsvdP),
            (0x0400, Kind::Rw),
            (0xf800, Kind::RsvdZ),
        ],
    },
    // Shaped like the status register: emulated read-only low bits, host read-only
    // middle, host W1C error bits.
    Field {
        offset: 0x52,
        len: 2,
        bits: &[(0x0007, Kind::RsvdZ), (0x0010, Kind::Ro), (0x06e8, Kind::RsvdP), (0xf900, Kind::HostW1c)],
    },
    // Bytes that mix emulated and host bits.
    Field { offset: 0x54, len: 1, bits: &[(0x0f, Kind::HostRw), (0xf0, Kind::Rw)] },
    Field { offset: 0x55, len: 1, bits: &[(0x80, Kind::W1c), (0x7f, Kind::Ro)] },
    Field { offset: 0x56, len: 1, bits: &[(0x01, Kind::W1c), (0xfe, Kind::HostRw)] },
    Field { offset: 0x57, len: 1, bits: &[(0x81, Kind::HostW1c), (0x7e, Kind::RsvdP)] },
    Field { offset: 0x58, len: 2, bits: &[(0xffff, Kind::HostRw)] },
    Field { offset: 0x5a, len: 1, bits: &[(0xff, Kind::RsvdZ)] },
    Field { offset: 0x5c, len: 4, bits: &[(0x0000_ffff, Kind::HostRw), (0xffff_0000, Kind::RsvdP)] },
    Field { offset: 0x64, len: 4, bits: &[(0xff00_ff00, Kind::HostW1c), (0x00ff_00ff, Kind::Rw)] },
];

/// Dwords with a hook: their writes must report the old and new guest-visible dword.
const HOOKED: [u16; 2] = [0x50, 0x64];

fn emu_init(off: usize) -> u8 {
    0x5a ^ (off as u8).wrapping_mul(37)
}

fn host_init(off: usize) -> u8 {
    0xc3 ^ (off as u8).wrapping_mul(29)
}

/// The per-bit model: which bits of each byte are of which kind, and the expected
/// emulated and host values.
#[derive(Clone)]
struct Model {
    kind: [[u8; 7]; 256],
    emu: [u8; 256],
    host: [u8; 256],
    permissive: bool,
    dropped: BTreeMap<u16, u64>,
    bad: u64,
}

impl Model {
    fn of(&self, off: usize, k: Kind) -> u8 {
        self.kind[off][k as usize]
    }
    fn gap(&self, off: usize) -> u8 {
        !self.kind[off].iter().fold(0, |a, m| a | m)
    }
    fn read_byte(&self, off: usize) -> u8 {
        let emu = self.of(off, Kind::Rw) | self.of(off, Kind::Ro) | self.of(off, Kind::W1c);
        let host = self.of(off, Kind::RsvdP) | self.of(off, Kind::HostRw) | self.of(off, Kind::HostW1c) | self.gap(off);
        (self.emu[off] & emu) | (self.host[off] & host)
    }
    /// Size 1, 2 or 4, inside one dword, inside the 256-byte space.
    fn legal(off: u32, size: u32) -> bool {
        matches!(size, 1 | 2 | 4) && off % 4 + size <= 4 && off as u64 + size as u64 <= 256
    }
    fn read(&self, off: u32, size: u32) -> u32 {
        if !Self::legal(off, size) {
            return if size >= 4 { !0 } else { (1u32 << (8 * size)) - 1 };
        }
        (0..size).fold(0, |a, i| a | (self.read_byte((off + i) as usize) as u32) << (8 * i))
    }
    fn write(&mut self, off: u32, size: u32, data: u32) {
        if !Self::legal(off, size) {
            self.bad += 1;
            return;
        }
        let mut gap_hit = false;
        for i in 0..size {
            let o = (off + i) as usize;
            let d = (data >> (8 * i)) as u8;
            let (rw, w1c) = (self.of(o, Kind::Rw), self.of(o, Kind::W1c));
            self.emu[o] = ((self.emu[o] & !rw) | (d & rw)) & !(d & w1c);
            let gap = self.gap(o);
            let mut host_rw = self.of(o, Kind::HostRw);
            if gap != 0 {
                gap_hit = true;
                if self.permissive {
                    host_rw |= gap;
                }
            }
            self.host[o] = ((self.host[o] & !host_rw) | (d & host_rw)) & !(d & self.of(o, Kind::HostW1c));
        }
        if gap_hit && !self.permissive {
            *self.dropped.entry((off & !3) as u16).or_insert(0) += 1;
        }
    }
    /// Bits of a byte that a host write may carry from the guest (everything else must be
    /// the host's own value, with its W1C bits 0).
    fn pass_through(&self, off: usize) -> u8 {
        self.of(off, Kind::HostRw) | self.of(off, Kind::HostW1c) | if self.permissive { self.gap(off) } else { 0 }
    }
}

/// A fresh space with `LAYOUT` defined, its host, and the model of both.
fn setup(permissive: bool) -> (ConfigSpace, FakeHost, Model) {
    let mut kind = [[0u8; 7]; 256];
    let mut cs = ConfigSpace::new(Sbdf::new(0, 1, 0, 0), 256);
    cs.set_permissive(permissive);
    let mut hw_w1c = [0u8; 256];
    let emu: [u8; 256] = std::array::from_fn(emu_init);
    let host: [u8; 256] = std::array::from_fn(host_init);
    for f in LAYOUT {
        let shift = 8 * (f.offset as u32 % 4);
        let base = (f.offset & !3) as usize;
        let init = u32::from_le_bytes(emu[base..base + 4].try_into().unwrap()) >> shift;
        let mut reg = Reg::default();
        for &(m, k) in f.bits {
            match k {
                Kind::Rw => {
                    (reg.emu, reg.writable, reg.value) = (reg.emu | m, reg.writable | m, reg.value | (init & m))
                }
                Kind::Ro => (reg.emu, reg.value) = (reg.emu | m, reg.value | (init & m)),
                Kind::W1c => (reg.emu, reg.w1c, reg.value) = (reg.emu | m, reg.w1c | m, reg.value | (init & m)),
                Kind::RsvdP => {}
                Kind::RsvdZ => reg.emu |= m,
                Kind::HostRw => reg.writable |= m,
                Kind::HostW1c => reg.w1c |= m,
            }
            for i in 0..f.len as usize {
                let byte = (m >> (8 * i)) as u8;
                kind[f.offset as usize + i][k as usize] |= byte;
                if matches!(k, Kind::W1c | Kind::HostW1c) {
                    hw_w1c[f.offset as usize + i] |= byte;
                }
            }
        }
        cs.define(f.offset, f.len, reg);
    }
    for off in HOOKED {
        cs.set_hook(off, Hook::Command);
    }
    let h = FakeHost { w1c: hw_w1c, ..FakeHost::new() };
    h.set(0, &host);
    let model = Model { kind, emu, host, permissive, dropped: BTreeMap::new(), bad: 0 };
    (cs, h, model)
}

/// Every offset of the window with the registers and gaps, and the end of the space.
fn offsets() -> impl Iterator<Item = u32> {
    (0x30..0x70).chain(0xf8..0x104).chain([0x1000, u32::MAX - 1])
}

const SIZES: [u32; 6] = [1, 2, 4, 0, 3, 8];

fn host_bytes(h: &FakeHost) -> [u8; 256] {
    *h.cfg.lock().unwrap()
}

/// Compare everything the guest and the host can see with the model.
fn check(cs: &mut ConfigSpace, h: &FakeHost, m: &Model, what: &str) {
    for off in 0..256u32 {
        assert_eq!(cs.read(h, off, 1), m.read_byte(off as usize) as u32, "{what}: guest byte {off:#x}");
    }
    let host = host_bytes(h);
    for (off, (&got, &want)) in host.iter().zip(m.host.iter()).enumerate() {
        assert_eq!(got, want, "{what}: host byte {off:#x}");
    }
    assert_eq!(cs.stats.dropped, m.dropped, "{what}: dropped-write counters");
    assert_eq!(cs.stats.bad_accesses, m.bad, "{what}: bad-access counter");
}

/// One guest write, checked against the model: guest view, host bytes, the shape and
/// content of every host write, and the hook report.
fn write_checked(cs: &mut ConfigSpace, h: &FakeHost, m: &mut Model, off: u32, size: u32, data: u32) {
    let what = format!("write {data:#x} at {off:#x} size {size} (permissive {})", m.permissive);
    let before_host = host_bytes(h);
    let dword = off & !3;
    let old = m.read(dword, 4);
    let n_writes = h.writes().len();
    let touched = cs.write(h, off, size, data);
    m.write(off, size, data);
    check(cs, h, m, &what);

    for &(woff, wsize, value) in &h.writes()[n_writes..] {
        assert!(Model::legal(woff as u32, wsize as u32), "{what}: host write {woff:#x}/{wsize} is malformed");
        assert_eq!(woff as u32 % wsize as u32, 0, "{what}: host write {woff:#x}/{wsize} is not naturally aligned");
        assert_eq!(woff as u32 & !3, dword, "{what}: host write {woff:#x} outside the guest's dword");
        for i in 0..wsize as usize {
            let o = woff as usize + i;
            let b = (value >> (8 * i)) as u8;
            let pt = m.pass_through(o);
            assert_ne!(pt, 0, "{what}: host byte {o:#x} has no pass-through bit but was written");
            assert!(o as u32 >= off && (o as u32) < off + size, "{what}: host byte {o:#x} outside the guest's access");
            let own = before_host[o] & !h.w1c[o];
            assert_eq!(
                b & !pt,
                own & !pt,
                "{what}: host byte {o:#x} got {b:#04x}: not its own value outside pass-through bits"
            );
            let hw1c = m.of(o, Kind::HostW1c);
            let guest = (data >> (8 * (o as u32 - off))) as u8;
            assert_eq!(b & hw1c & !guest, 0, "{what}: host byte {o:#x}: a W1C 1 the guest did not write");
        }
    }
    // A guest W1C 1 is sent even where the bit already reads 0; any other write that
    // changes nothing on the host is not issued.
    let w1c_one = Model::legal(off, size)
        && (0..size).any(|i| m.of((off + i) as usize, Kind::HostW1c) & (data >> (8 * i)) as u8 != 0);
    if m.host == before_host && !w1c_one {
        assert_eq!(h.writes().len(), n_writes, "{what}: a host write that changes nothing was issued");
    }

    let hooked = HOOKED.contains(&(dword as u16)) && Model::legal(off, size);
    match touched {
        Some(t) => {
            assert!(hooked, "{what}: hook reported for an unhooked dword or a bad access");
            assert_eq!((t.offset as u32, t.old, t.new), (dword, old, m.read(dword, 4)), "{what}: hook report");
        }
        None => assert!(!hooked, "{what}: hooked dword written without a report"),
    }
}

#[test]
fn the_model_agrees_with_the_access_normaliser() {
    for off in offsets() {
        for size in SIZES {
            assert_eq!(Model::legal(off, size), Access::new(off, size, 256).is_some(), "{off:#x}/{size}");
        }
    }
}

#[test]
fn every_read_of_every_size_at_every_offset_composes_from_bytes() {
    for permissive in [false, true] {
        let (mut cs, h, m) = setup(permissive);
        check(&mut cs, &h, &m, "initial state");
        let mut bad = 0;
        for off in offsets() {
            for size in SIZES {
                let got = cs.read(&h, off, size);
                assert_eq!(got, m.read(off, size), "read {off:#x} size {size}");
                if Access::new(off, size, 256).is_some() {
                    let bytes = (0..size).fold(0, |a, i| a | cs.read(&h, off + i, 1) << (8 * i));
                    assert_eq!(got, bytes, "read {off:#x} size {size} vs its byte reads");
                } else {
                    bad += 1;
                    let ones = if size >= 4 { !0 } else { (1u32 << (8 * size)) - 1 };
                    assert_eq!(got, ones, "bad read {off:#x} size {size} reads all-ones");
                }
            }
        }
        assert_eq!(cs.stats.bad_accesses, bad);
        assert!(h.writes().is_empty(), "reads never write the host");
    }
}

#[test]
fn every_write_of_every_size_at_every_offset_from_a_fresh_state() {
    let mut checked = 0;
    for permissive in [false, true] {
        for off in offsets() {
            for size in SIZES {
                for data in [0u32, !0, 0x5aa5_c33c] {
                    let (mut cs, h, mut m) = setup(permissive);
                    write_checked(&mut cs, &h, &mut m, off, size, data);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * offsets().count() * SIZES.len() * 3);
}

#[test]
fn every_write_of_every_size_at_every_offset_in_one_long_sequence() {
    // State carries over: W1C bits cleared early stay clear, pass-through bytes keep the
    // last guest value, emulated values the last write.
    for permissive in [false, true] {
        let (mut cs, h, mut m) = setup(permissive);
        for data in [!0u32, 0, 0x5aa5_c33c, !0] {
            for off in offsets() {
                for size in SIZES {
                    write_checked(&mut cs, &h, &mut m, off, size, data.rotate_left(off));
                }
            }
        }
    }
}

#[test]
fn writes_straddling_a_dword_or_the_space_are_refused_whole() {
    let cases: &[(u32, u32)] = &[
        (0x43, 2), // Rw dword into RO
        (0x47, 2), // gap into W1C
        (0x4f, 2), // host W1C into the command-like register
        (0x42, 4),
        (0x45, 4),
        (0x4e, 4),
        (0x53, 4),
        (0x5f, 2),
        (0xff, 2),
        (0xfe, 4),
        (0xfd, 4),
        (0x100, 1),
        (0x40, 3),
        (0x40, 8),
        (0x40, 0),
    ];
    for &(off, size) in cases {
        for data in [0u32, !0] {
            let (mut cs, h, m) = setup(false);
            let before: Vec<u32> = (0..64).map(|d| cs.read(&h, d * 4, 4)).collect();
            assert_eq!(cs.write(&h, off, size, data), None, "{off:#x}/{size}");
            assert!(h.writes().is_empty(), "{off:#x}/{size}: refused write reached the host");
            let after: Vec<u32> = (0..64).map(|d| cs.read(&h, d * 4, 4)).collect();
            assert_eq!(before, after, "{off:#x}/{size} {data:#x}: refused write changed the guest view");
            assert_eq!(host_bytes(&h), m.host, "{off:#x}/{size}: refused write changed the host");
            assert_eq!(cs.stats.bad_accesses, 1);
            assert!(cs.stats.dropped.is_empty(), "refused writes are bad accesses, not dropped registers");
        }
    }
}

/// Explicit expectations, one register kind at a time, with all-zeros and all-ones writes
/// (independent of the model above).
#[test]
fn register_kinds_with_all_zeros_and_all_ones() {
    struct Case {
        name: &'static str,
        off: u32,
        size: u32,
        data: u32,
        guest_after: u32,
        host_after: u32,
        host_writes: &'static [(u16, u8, u32)],
    }
    let host = |off: u32, size: u32| (0..size).fold(0, |a, i| a | (host_init((off + i) as usize) as u32) << (8 * i));
    let emu = |off: u32, size: u32| (0..size).fold(0, |a, i| a | (emu_init((off + i) as usize) as u32) << (8 * i));
    // The initial values the table is written against.
    assert_eq!(emu(0x44, 2), 0xa38e);
    assert_eq!(emu(0x48, 1), 0x32);
    assert_eq!(emu(0x52, 1) & 0x10, 0);
    assert_eq!(host(0x4a, 2), 0xbca1);
    assert_eq!(host(0x4c, 2), 0x7a5f);
    assert_eq!(host(0x4e, 2), 0x3015);
    assert_eq!(host(0x52, 2), 0xa489);
    #[rustfmt::skip]
    let cases = [
        Case { name: "Rw all ones", off: 0x40, size: 4, data: !0, guest_after: !0, host_after: host(0x40, 4), host_writes: &[] },
        Case { name: "Rw all zeros", off: 0x40, size: 4, data: 0, guest_after: 0, host_after: host(0x40, 4), host_writes: &[] },
        Case { name: "Ro all ones", off: 0x44, size: 2, data: !0, guest_after: 0xa38e, host_after: host(0x44, 2), host_writes: &[] },
        Case { name: "Ro all zeros", off: 0x44, size: 2, data: 0, guest_after: 0xa38e, host_after: host(0x44, 2), host_writes: &[] },
        Case { name: "W1c all zeros keeps", off: 0x48, size: 1, data: 0, guest_after: 0x32, host_after: host(0x48, 1), host_writes: &[] },
        Case { name: "W1c all ones clears", off: 0x48, size: 1, data: 0xff, guest_after: 0, host_after: host(0x48, 1), host_writes: &[] },
        Case { name: "W1c some ones", off: 0x48, size: 1, data: 0x30, guest_after: 0x02, host_after: host(0x48, 1), host_writes: &[] },
        Case { name: "RsvdP all ones", off: 0x4a, size: 2, data: !0, guest_after: 0xbca1, host_after: 0xbca1, host_writes: &[] },
        Case { name: "RsvdP all zeros", off: 0x4a, size: 2, data: 0, guest_after: 0xbca1, host_after: 0xbca1, host_writes: &[] },
        Case { name: "RsvdZ all ones", off: 0x4c, size: 2, data: !0, guest_after: 0, host_after: 0x7a5f, host_writes: &[] },
        Case { name: "RsvdZ all zeros", off: 0x4c, size: 2, data: 0, guest_after: 0, host_after: 0x7a5f, host_writes: &[] },
        Case { name: "HostRw all ones", off: 0x4e, size: 1, data: 0xff, guest_after: 0xff, host_after: 0xff, host_writes: &[(0x4e, 1, 0xff)] },
        Case { name: "HostRw all zeros", off: 0x4e, size: 1, data: 0, guest_after: 0, host_after: 0, host_writes: &[(0x4e, 1, 0)] },
        Case { name: "HostW1c all ones", off: 0x4f, size: 1, data: 0xff, guest_after: 0, host_after: 0, host_writes: &[(0x4f, 1, 0xff)] },
        Case { name: "HostW1c all zeros", off: 0x4f, size: 1, data: 0, guest_after: 0x30, host_after: 0x30, host_writes: &[] },
        // A word over HostRw and HostW1c: both bytes carry pass-through bits, one write
        // carrying only the guest's W1C 1 (not the host's other set W1C bit, 0x20).
        Case { name: "HostRw+HostW1c word", off: 0x4e, size: 2, data: 0x1000, guest_after: 0x2000, host_after: 0x2000, host_writes: &[(0x4e, 2, 0x1000)] },
        // Status-like: error bits W1C pass through, the rest keeps the host's value
        // (bits 0-2 RsvdZ, bit 4 emulated 0, 0x06e8 host-preserved).
        Case { name: "status all ones", off: 0x52, size: 2, data: 0xffff, guest_after: 0x0488, host_after: 0x0489, host_writes: &[(0x53, 1, 0xfd)] },
        Case { name: "status all zeros", off: 0x52, size: 2, data: 0, guest_after: 0xa488, host_after: 0xa489, host_writes: &[] },
    ];
    for c in cases {
        let (mut cs, h, _) = setup(false);
        cs.write(&h, c.off, c.size, c.data);
        assert_eq!(cs.read(&h, c.off, c.size), c.guest_after, "{}: guest view", c.name);
        assert_eq!(h.config_read(c.off as u16, c.size as u8).unwrap(), c.host_after, "{}: host value", c.name);
        assert_eq!(h.writes(), c.host_writes, "{}: host writes", c.name);
    }
}
