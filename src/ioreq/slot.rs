//! `struct ioreq` in the shared page: decoding, and the two halves of the synchronous
//! handshake (Xen posts READY; the device model takes it and answers IORESP_READY).
//! The simulator uses the Xen half, so the device-model half is exercised by the very
//! same code against a real shared page.

use std::sync::atomic::{fence, Ordering};

use crate::xen::abi::*;
use crate::xen::SharedPage;

/// One decoded ioreq, as copied out of the shared page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ioreq {
    pub addr: u64,
    pub data: u64,
    pub count: u32,
    pub size: u32,
    pub vp_eport: u32,
    pub state: u8,
    pub data_is_ptr: bool,
    /// true = read (IOREQ_READ)
    pub dir_read: bool,
    pub df: bool,
    pub ty: u8,
}

impl Ioreq {
    pub fn simple(ty: u8, addr: u64, size: u32, write: Option<u64>) -> Self {
        Ioreq {
            addr,
            data: write.unwrap_or(0),
            count: 1,
            size,
            vp_eport: 0,
            state: STATE_IOREQ_NONE,
            data_is_ptr: false,
            dir_read: write.is_none(),
            df: false,
            ty,
        }
    }
}

fn slot_offset(vcpu: u32) -> usize {
    assert!(vcpu < MAX_VCPUS_PER_PAGE, "vcpu {vcpu} has no slot in one ioreq page");
    vcpu as usize * IOREQ_SIZE
}

/// Access to the slot of one vCPU.
#[derive(Clone)]
pub struct Slot {
    page: SharedPage,
    base: usize,
}

impl Slot {
    pub fn new(page: &SharedPage, vcpu: u32) -> Self {
        Slot { page: page.clone(), base: slot_offset(vcpu) }
    }

    fn flags(&self) -> &std::sync::atomic::AtomicU8 {
        self.page.atomic_u8(self.base + IOREQ_FLAGS_OFFSET)
    }

    pub fn state(&self) -> u8 {
        self.flags().load(Ordering::Acquire) & IOREQ_STATE_MASK
    }

    pub fn vp_eport(&self) -> u32 {
        self.page.read_u32(self.base + IOREQ_VP_EPORT_OFFSET)
    }

    /// Xen side: write vp_eport (done when the server is enabled).
    pub fn set_vp_eport(&self, port: u32) {
        self.page.write_u32(self.base + IOREQ_VP_EPORT_OFFSET, port);
    }

    /// Set the state with a read-modify-write of the flags byte, preserving the other bits.
    fn set_state(&self, state: u8) {
        let f = self.flags();
        let mut cur = f.load(Ordering::Relaxed);
        loop {
            let new = (cur & !IOREQ_STATE_MASK) | state;
            match f.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
    }

    /// Device-model side: copy the request out if the slot is READY, and mark it
    /// INPROCESS. Returns None for a spurious notification.
    pub fn take(&self) -> Option<Ioreq> {
        let flags = self.flags().load(Ordering::Acquire);
        if flags & IOREQ_STATE_MASK != STATE_IOREQ_READY {
            return None;
        }
        // Read barrier between the state and the body (Xen wrote the body first).
        fence(Ordering::Acquire);
        let p = &self.page;
        let b = self.base;
        let req = Ioreq {
            addr: p.read_u64(b + IOREQ_ADDR_OFFSET),
            data: p.read_u64(b + IOREQ_DATA_OFFSET),
            count: p.read_u32(b + IOREQ_COUNT_OFFSET),
            size: p.read_u32(b + IOREQ_SIZE_OFFSET),
            vp_eport: p.read_u32(b + IOREQ_VP_EPORT_OFFSET),
            state: STATE_IOREQ_READY,
            data_is_ptr: flags & IOREQ_DATA_IS_PTR_BIT != 0,
            dir_read: flags & IOREQ_DIR_BIT != 0,
            df: flags & IOREQ_DF_BIT != 0,
            ty: p.atomic_u8(b + IOREQ_TYPE_OFFSET).load(Ordering::Relaxed),
        };
        self.set_state(STATE_IOREQ_INPROCESS);
        Some(req)
    }

    /// Device-model side: publish the result (`data` for reads) and IORESP_READY.
    pub fn complete(&self, read_data: Option<u64>) {
        if let Some(d) = read_data {
            self.page.write_u64(self.base + IOREQ_DATA_OFFSET, d);
        }
        // Write barrier: data visible before the state.
        fence(Ordering::Release);
        self.set_state(STATE_IORESP_READY);
    }

    /// Xen side: post a request. Fails (returns false) unless the slot is NONE, as Xen's
    /// ioreq_send requires.
    pub fn post(&self, req: &Ioreq) -> bool {
        if self.state() != STATE_IOREQ_NONE {
            return false;
        }
        let p = &self.page;
        let b = self.base;
        p.write_u64(b + IOREQ_ADDR_OFFSET, req.addr);
        p.write_u64(b + IOREQ_DATA_OFFSET, req.data);
        p.write_u32(b + IOREQ_COUNT_OFFSET, req.count);
        p.write_u32(b + IOREQ_SIZE_OFFSET, req.size);
        p.atomic_u8(b + IOREQ_TYPE_OFFSET).store(req.ty, Ordering::Relaxed);
        let mut flags = STATE_IOREQ_READY;
        if req.data_is_ptr {
            flags |= IOREQ_DATA_IS_PTR_BIT;
        }
        if req.dir_read {
            flags |= IOREQ_DIR_BIT;
        }
        if req.df {
            flags |= IOREQ_DF_BIT;
        }
        fence(Ordering::Release);
        self.flags().store(flags, Ordering::Release);
        true
    }

    /// Xen side: collect a response. Returns the data once IORESP_READY and sets NONE.
    pub fn collect(&self) -> Option<u64> {
        if self.state() != STATE_IORESP_READY {
            return None;
        }
        fence(Ordering::Acquire);
        let d = self.page.read_u64(self.base + IOREQ_DATA_OFFSET);
        self.set_state(STATE_IOREQ_NONE);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_moves_ready_inprocess_response_none() {
        let page = SharedPage::heap();
        let xen = Slot::new(&page, 3);
        let dm = Slot::new(&page, 3);
        assert_eq!(dm.take(), None, "an empty slot is a spurious notification");
        let req = Ioreq::simple(IOREQ_TYPE_PCI_CONFIG, 0x0000_0018_0000_0004, 2, None);
        assert!(xen.post(&req));
        assert!(!xen.post(&req), "Xen never posts into a busy slot");
        let got = dm.take().unwrap();
        assert_eq!((got.addr, got.size, got.dir_read, got.ty), (req.addr, 2, true, IOREQ_TYPE_PCI_CONFIG));
        assert_eq!(xen.state(), STATE_IOREQ_INPROCESS);
        assert_eq!(dm.take(), None, "INPROCESS is not taken twice");
        assert_eq!(xen.collect(), None);
        dm.complete(Some(0xbeef));
        assert_eq!(xen.collect(), Some(0xbeef));
        assert_eq!(xen.state(), STATE_IOREQ_NONE);
    }

    #[test]
    fn state_update_preserves_neighbouring_flag_bits() {
        let page = SharedPage::heap();
        let s = Slot::new(&page, 0);
        let mut req = Ioreq::simple(IOREQ_TYPE_COPY, 0xfebf_0000, 4, None);
        req.df = true;
        req.data_is_ptr = true;
        assert!(s.post(&req));
        let got = s.take().unwrap();
        assert!(got.df && got.data_is_ptr && got.dir_read);
        s.complete(None);
        let raw = page.atomic_u8(IOREQ_FLAGS_OFFSET).load(Ordering::Relaxed);
        assert_eq!(raw, STATE_IORESP_READY | IOREQ_DF_BIT | IOREQ_DATA_IS_PTR_BIT | IOREQ_DIR_BIT);
    }

    #[test]
    fn slots_of_different_vcpus_are_independent() {
        let page = SharedPage::heap();
        let a = Slot::new(&page, 0);
        let b = Slot::new(&page, 1);
        assert!(a.post(&Ioreq::simple(IOREQ_TYPE_PIO, 0xcfc, 4, Some(1))));
        assert!(b.post(&Ioreq::simple(IOREQ_TYPE_PIO, 0xcfc, 4, None)));
        let rb = b.take().unwrap();
        assert!(rb.dir_read);
        b.complete(Some(7));
        assert_eq!(a.state(), STATE_IOREQ_READY, "vcpu 0 still waiting while vcpu 1 completed");
        assert_eq!(b.collect(), Some(7));
        let ra = a.take().unwrap();
        assert_eq!(ra.data, 1);
    }
}
