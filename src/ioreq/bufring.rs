//! The buffered ioreq ring (`buffered_iopage`): Xen posts fire-and-forget writes there
//! (stdvga, TIMEOFFSET broadcasts) for servers created with buffered ioreqs. Layout per
//! xen/include/public/hvm/ioreq.h: u32 read_pointer @0 (the device model advances it),
//! u32 write_pointer @4 (Xen advances it), then 511 slots of 8 bytes.
//!
//! Slot word 0: bits 0-7 type, bit 9 dir, bits 10-11 size (0..3 = 1,2,4,8 bytes), bits
//! 12-31 address; word 1: data. An 8-byte write takes two consecutive slots, the second
//! carrying the upper 32 bits. The read pointer is advanced atomically, since in ATOMIC
//! mode Xen rewrites both pointers with a 64-bit cmpxchg to keep them small.

use std::sync::atomic::{fence, Ordering};

use super::slot::Ioreq;
use crate::xen::abi::{IOREQ_TYPE_COPY, STATE_IOREQ_READY};
use crate::xen::SharedPage;

pub const SLOTS: u32 = 511;
const READ_POINTER_OFFSET: usize = 0;
const WRITE_POINTER_OFFSET: usize = 4;
const SLOT_BASE: usize = 8;

fn slot_offset(pointer: u32) -> usize {
    SLOT_BASE + 8 * (pointer % SLOTS) as usize
}

/// Take every buffered request Xen has posted. A malformed slot (bad size) is consumed
/// and reported as None so the ring never stalls.
pub fn drain(page: &SharedPage, out: &mut Vec<Option<Ioreq>>) -> usize {
    let mut n = 0;
    loop {
        let rd = page.atomic_u32(READ_POINTER_OFFSET).load(Ordering::Acquire);
        let wr = page.atomic_u32(WRITE_POINTER_OFFSET).load(Ordering::Acquire);
        if rd == wr {
            return n;
        }
        fence(Ordering::Acquire);
        let w0 = page.read_u32(slot_offset(rd));
        let data_lo = page.read_u32(slot_offset(rd) + 4) as u64;
        let size = 1u32 << ((w0 >> 10) & 3);
        let (data, used) = if size == 8 {
            if wr.wrapping_sub(rd) < 2 {
                return n; // the second half is not posted yet
            }
            let hi = page.read_u32(slot_offset(rd.wrapping_add(1)) + 4) as u64;
            (data_lo | hi << 32, 2)
        } else {
            (data_lo, 1)
        };
        out.push(Some(Ioreq {
            addr: (w0 >> 12) as u64,
            data,
            count: 1,
            size,
            vp_eport: 0,
            state: STATE_IOREQ_READY,
            data_is_ptr: false,
            dir_read: w0 & (1 << 9) != 0,
            df: false,
            ty: w0 as u8,
        }));
        page.fetch_add_u32(READ_POINTER_OFFSET, used);
        n += 1;
    }
}

/// Xen's side (for the simulator and tests): post one buffered write. Returns false if
/// the ring is full or the request cannot be buffered (addresses must fit 20 bits).
pub fn post(page: &SharedPage, ty: u8, addr: u64, size: u32, data: u64) -> bool {
    let rd = page.atomic_u32(READ_POINTER_OFFSET).load(Ordering::Acquire);
    let wr = page.atomic_u32(WRITE_POINTER_OFFSET).load(Ordering::Acquire);
    let need = if size == 8 { 2 } else { 1 };
    if addr >= 1 << 20 || !matches!(size, 1 | 2 | 4 | 8) || wr.wrapping_sub(rd) + need > SLOTS {
        return false;
    }
    let size_code = size.trailing_zeros();
    let w0 = ty as u32 | size_code << 10 | (addr as u32) << 12;
    page.write_u32(slot_offset(wr), w0);
    page.write_u32(slot_offset(wr) + 4, data as u32);
    if size == 8 {
        page.write_u32(slot_offset(wr.wrapping_add(1)), w0);
        page.write_u32(slot_offset(wr.wrapping_add(1)) + 4, (data >> 32) as u32);
    }
    fence(Ordering::Release);
    page.atomic_u32(WRITE_POINTER_OFFSET).store(wr.wrapping_add(need), Ordering::Release);
    true
}

/// The default buffered type (stdvga writes are COPY).
pub const BUFFERED_TYPE: u8 = IOREQ_TYPE_COPY;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::abi::IOREQ_TYPE_TIMEOFFSET;

    #[test]
    fn ring_wraps_around_its_511_slots() {
        let page = SharedPage::heap();
        let mut out = Vec::new();
        let mut total = 0;
        for round in 0..5u64 {
            for i in 0..300u64 {
                assert!(post(&page, BUFFERED_TYPE, 0xa0000 + i, 2, round * 1000 + i));
            }
            out.clear();
            total += drain(&page, &mut out);
            assert_eq!(out.len(), 300);
            for (i, r) in out.iter().enumerate() {
                let r = r.unwrap();
                assert_eq!(
                    (r.addr, r.size, r.data, r.dir_read),
                    (0xa0000 + i as u64, 2, round * 1000 + i as u64, false)
                );
            }
        }
        assert_eq!(total, 1500);
        let rd = page.atomic_u32(0).load(Ordering::Relaxed);
        assert_eq!(rd, 1500, "read pointer advanced past the wrap");
    }

    #[test]
    fn a_64_bit_write_takes_two_slots_even_across_the_wrap() {
        let page = SharedPage::heap();
        let mut out = Vec::new();
        for _ in 0..510 {
            post(&page, BUFFERED_TYPE, 0, 1, 0);
        }
        drain(&page, &mut out);
        // Pointers now at 510: the 8-byte write uses slot 510 and slot 0.
        assert!(post(&page, IOREQ_TYPE_TIMEOFFSET, 0, 8, 0x1122_3344_5566_7788));
        out.clear();
        assert_eq!(drain(&page, &mut out), 1);
        let r = out[0].unwrap();
        assert_eq!((r.ty, r.size, r.data), (IOREQ_TYPE_TIMEOFFSET, 8, 0x1122_3344_5566_7788));
        assert_eq!(page.atomic_u32(0).load(Ordering::Relaxed), 512);
    }

    #[test]
    fn a_full_ring_refuses_and_half_posted_64_bit_writes_wait() {
        let page = SharedPage::heap();
        for _ in 0..SLOTS {
            assert!(post(&page, BUFFERED_TYPE, 0, 4, 1));
        }
        assert!(!post(&page, BUFFERED_TYPE, 0, 4, 1), "full");
        let mut out = Vec::new();
        drain(&page, &mut out);
        // Forge the first half of an 8-byte write only: the consumer must wait.
        page.write_u32(slot_offset(SLOTS), BUFFERED_TYPE as u32 | 3 << 10);
        page.atomic_u32(4).fetch_add(1, Ordering::Release);
        out.clear();
        assert_eq!(drain(&page, &mut out), 0);
        assert!(!post(&page, BUFFERED_TYPE, 1 << 20, 4, 0), "addresses beyond 20 bits are not bufferable");
    }
}
