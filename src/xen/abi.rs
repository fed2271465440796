//! Constants of Xen's public ABI that both the simulator and the real backend use.
//! Values from xen/include/public/hvm/ioreq.h (unchanged 4.10 -> master).

pub const IOREQ_WRITE: u8 = 0;
pub const IOREQ_READ: u8 = 1;

pub const IOREQ_TYPE_PIO: u8 = 0;
pub const IOREQ_TYPE_COPY: u8 = 1;
pub const IOREQ_TYPE_PCI_CONFIG: u8 = 2;
pub const IOREQ_TYPE_TIMEOFFSET: u8 = 7;
pub const IOREQ_TYPE_INVALIDATE: u8 = 8;

pub const STATE_IOREQ_NONE: u8 = 0;
pub const STATE_IOREQ_READY: u8 = 1;
pub const STATE_IOREQ_INPROCESS: u8 = 2;
pub const STATE_IORESP_READY: u8 = 3;

/// `sizeof(struct ioreq)`; `shared_iopage.vcpu_ioreq[vcpu]` is at `IOREQ_SIZE * vcpu`.
pub const IOREQ_SIZE: usize = 32;
pub const IOREQ_ADDR_OFFSET: usize = 0;
pub const IOREQ_DATA_OFFSET: usize = 8;
pub const IOREQ_COUNT_OFFSET: usize = 16;
pub const IOREQ_SIZE_OFFSET: usize = 20;
pub const IOREQ_VP_EPORT_OFFSET: usize = 24;
/// Bits 0-3 state, bit 4 data_is_ptr, bit 5 dir, bit 6 df.
pub const IOREQ_FLAGS_OFFSET: usize = 30;
pub const IOREQ_TYPE_OFFSET: usize = 31;

pub const IOREQ_STATE_MASK: u8 = 0x0f;
pub const IOREQ_DATA_IS_PTR_BIT: u8 = 0x10;
pub const IOREQ_DIR_BIT: u8 = 0x20;
pub const IOREQ_DF_BIT: u8 = 0x40;

/// A 4 KiB shared_iopage holds this many vCPU slots.
pub const MAX_VCPUS_PER_PAGE: u32 = 4096 / IOREQ_SIZE as u32;

/// Xen's MAX_NR_IOREQ_SERVERS.
pub const MAX_NR_IOREQ_SERVERS: usize = 8;
/// Xen's MAX_NR_IO_RANGES per type per server.
pub const MAX_NR_IO_RANGES: usize = 256;

/// x86 Xen's map_mmio_regions() does at most this many iterations per hypercall, then
/// returns partial progress.
pub const MEMORY_MAPPING_BATCH: u64 = 64;

pub const CF8_PORT: u16 = 0xcf8;
pub const CFC_PORT: u16 = 0xcfc;
