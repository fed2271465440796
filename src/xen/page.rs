//! A page of memory shared with the hypervisor (or with the simulator standing in for it):
//! the ioreq page and the buffered ioreq ring. Every access is volatile or atomic, since
//! the other side writes it concurrently.

use std::alloc::{self, Layout};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

pub const PAGE_BYTES: usize = 4096;

/// Who owns the memory behind a [`SharedPage`]; dropping the last handle releases it.
///
/// # Safety
/// Implementors guarantee that `as_ptr()` points to `PAGE_BYTES` bytes, 4096-aligned,
/// readable and writable, valid for as long as the backing lives, and that the address
/// never changes.
pub unsafe trait PageBacking: Send + Sync {
    fn as_ptr(&self) -> NonNull<u8>;
    /// A file descriptor another process can map to share the page (memfd pages only).
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// A page from the heap: what the simulator shares between "Xen" and the device model.
pub struct HeapPage(NonNull<u8>);

const HEAP_LAYOUT: Layout = match Layout::from_size_align(PAGE_BYTES, PAGE_BYTES) {
    Ok(l) => l,
    Err(_) => panic!("page layout"),
};

impl HeapPage {
    pub fn new() -> Self {
        // SAFETY: HEAP_LAYOUT has non-zero size.
        let p = unsafe { alloc::alloc_zeroed(HEAP_LAYOUT) };
        match NonNull::new(p) {
            Some(p) => HeapPage(p),
            None => alloc::handle_alloc_error(HEAP_LAYOUT),
        }
    }
}

impl Default for HeapPage {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HeapPage {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with HEAP_LAYOUT and freed exactly once, here.
        unsafe { alloc::dealloc(self.0.as_ptr(), HEAP_LAYOUT) }
    }
}

// SAFETY: the pointer is only used through volatile/atomic accesses in SharedPage.
unsafe impl Send for HeapPage {}
// SAFETY: as above; concurrent access is the whole point and is done atomically.
unsafe impl Sync for HeapPage {}

// SAFETY: alloc_zeroed with HEAP_LAYOUT gives PAGE_BYTES bytes, page aligned, owned by us
// until drop.
unsafe impl PageBacking for HeapPage {
    fn as_ptr(&self) -> NonNull<u8> {
        self.0
    }
}

const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A page of shared memory behind a file descriptor: created with memfd_create by the
/// simulator when it serves device models in other processes (`xen::remote`), or mapped
/// from such an fd received over the simulator's socket.
pub struct FdPage {
    fd: OwnedFd,
    ptr: NonNull<u8>,
}

impl FdPage {
    /// A new zeroed page in a memfd.
    pub fn create() -> std::io::Result<Self> {
        // SAFETY: a NUL-terminated name and valid flags; the result is checked.
        let raw =
            unsafe { libc::memfd_create(c"xenpt-shared-page".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on the descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), PAGE_BYTES as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The size is fixed for good: a mapping of it can never fault on a truncated file.
        // SAFETY: fcntl on the descriptor we own, with a seal mask.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Self::map(fd)
    }

    /// Map one page of `fd` (at offset 0), shared and writable. The fd must be a memfd
    /// of at least a page whose size is sealed (as [`FdPage::create`] makes them): a file
    /// that could shrink under the mapping would turn accesses into SIGBUS.
    pub fn map(fd: OwnedFd) -> std::io::Result<Self> {
        // SAFETY: fcntl F_GET_SEALS on a descriptor we own; the result is checked.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "page fd is not a size-sealed memfd"));
        }
        // SAFETY: fstat fills a stat buffer we own for a descriptor we own.
        let size = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            st.st_size
        };
        if size < PAGE_BYTES as libc::off_t {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "page fd is smaller than a page"));
        }
        // SAFETY: a fresh shared mapping of one page of a descriptor we own; the kernel
        // picks the address, and the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        match NonNull::new(p.cast::<u8>()) {
            Some(ptr) => Ok(FdPage { fd, ptr }),
            None => Err(std::io::Error::other("mmap returned address 0")),
        }
    }
}

impl Drop for FdPage {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `map` with this length and is unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), PAGE_BYTES) };
    }
}

// SAFETY: the pointer is only used through volatile/atomic accesses in SharedPage.
unsafe impl Send for FdPage {}
// SAFETY: as above.
unsafe impl Sync for FdPage {}

// SAFETY: mmap gave a page-aligned mapping of PAGE_BYTES readable, writable bytes that
// stays at its address until drop.
unsafe impl PageBacking for FdPage {
    fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

/// A cheaply clonable handle to a shared page. Offsets are bounds- and alignment-checked;
/// a bad offset is a programming error in xenpt (never guest-controlled) and panics.
#[derive(Clone)]
pub struct SharedPage {
    backing: Arc<dyn PageBacking>,
    base: NonNull<u8>,
}

// SAFETY: the backing is Send + Sync and all accesses are atomic or volatile.
unsafe impl Send for SharedPage {}
// SAFETY: as above.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    pub fn new(backing: Arc<dyn PageBacking>) -> Self {
        let base = backing.as_ptr();
        SharedPage { backing, base }
    }

    pub fn heap() -> Self {
        Self::new(Arc::new(HeapPage::new()))
    }

    /// A page in a memfd, mappable by another process (see [`SharedPage::fd`]).
    pub fn memfd() -> std::io::Result<Self> {
        Ok(Self::new(Arc::new(FdPage::create()?)))
    }

    /// The page's fd, if it lives in one.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.backing.fd()
    }

    /// True if both handles refer to the same memory.
    pub fn same_page(&self, other: &SharedPage) -> bool {
        Arc::ptr_eq(&self.backing, &other.backing)
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        assert!(offset + size <= PAGE_BYTES && offset % size == 0, "shared page access at {offset:#x}");
        // SAFETY: offset + size <= PAGE_BYTES, so the result stays inside the page.
        unsafe { self.base.as_ptr().add(offset).cast() }
    }

    pub fn read_u64(&self, offset: usize) -> u64 {
        // SAFETY: `at` checked bounds and natural alignment; the page outlives `self`.
        unsafe { self.at::<u64>(offset).read_volatile() }
    }

    pub fn write_u64(&self, offset: usize, v: u64) {
        // SAFETY: as in read_u64.
        unsafe { self.at::<u64>(offset).write_volatile(v) }
    }

    pub fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: as in read_u64.
        unsafe { self.at::<u32>(offset).read_volatile() }
    }

    pub fn write_u32(&self, offset: usize, v: u32) {
        // SAFETY: as in read_u64.
        unsafe { self.at::<u32>(offset).write_volatile(v) }
    }

    pub fn read_u16(&self, offset: usize) -> u16 {
        // SAFETY: as in read_u64.
        unsafe { self.at::<u16>(offset).read_volatile() }
    }

    pub fn write_u16(&self, offset: usize, v: u16) {
        // SAFETY: as in read_u64.
        unsafe { self.at::<u16>(offset).write_volatile(v) }
    }

    pub fn atomic_u8(&self, offset: usize) -> &AtomicU8 {
        // SAFETY: in bounds (checked by `at`), AtomicU8 has alignment 1, and the
        // reference cannot outlive `self`, which keeps the page alive.
        unsafe { &*self.at::<AtomicU8>(offset) }
    }

    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: in bounds and 4-aligned (checked by `at`); lifetime tied to `self`.
        unsafe { &*self.at::<AtomicU32>(offset) }
    }

    /// Atomically add to a u32 (the buffered ring's read pointer).
    pub fn fetch_add_u32(&self, offset: usize, v: u32) -> u32 {
        self.atomic_u32(offset).fetch_add(v, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_page_handles_see_each_others_writes() {
        let a = SharedPage::heap();
        let b = a.clone();
        a.write_u64(8, 0x1122_3344_5566_7788);
        assert_eq!(b.read_u64(8), 0x1122_3344_5566_7788);
        assert_eq!(b.read_u32(12), 0x1122_3344);
        b.atomic_u8(30).store(3, Ordering::Release);
        assert_eq!(a.read_u16(30), 3);
        assert!(a.same_page(&b));
        assert!(!a.same_page(&SharedPage::heap()));
    }

    #[test]
    fn a_memfd_page_mapped_twice_is_one_page() {
        let a = SharedPage::memfd().unwrap();
        let fd = a.fd().unwrap().try_clone_to_owned().unwrap();
        let b = SharedPage::new(Arc::new(FdPage::map(fd).unwrap()));
        a.write_u32(64, 0xfeed_f00d);
        assert_eq!(b.read_u32(64), 0xfeed_f00d);
        b.fetch_add_u32(64, 1);
        assert_eq!(a.read_u32(64), 0xfeed_f00e);
        assert!(SharedPage::heap().fd().is_none());
    }

    #[test]
    #[should_panic(expected = "shared page access")]
    fn out_of_page_access_is_refused() {
        SharedPage::heap().read_u64(4096);
    }
}
