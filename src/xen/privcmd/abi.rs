//! Raw ABI structs for /dev/xen/privcmd, /dev/xen/evtchn, domctl, physdev and dm_op, each
//! with compile-time size and offset assertions. Layouts from ../shared/reference/xen-abi.md
//! (computed from the Xen public headers 4.10 .. master and Linux include/uapi/xen/*.h);
//! a CI test also checks them against Debian's libxen-dev headers with a C compiler.

#![allow(dead_code)]

use std::mem::{offset_of, size_of};

/// `_IOC(dir, type, nr, size)` on x86.
const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u64 {
    ((dir as u64) << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

// --- include/uapi/xen/privcmd.h --------------------------------------------------------

/// `struct privcmd_hypercall`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivcmdHypercall {
    pub op: u64,
    pub arg: [u64; 5],
}
const _: () = assert!(size_of::<PrivcmdHypercall>() == 48);

/// `struct privcmd_dm_op_buf`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivcmdDmOpBuf {
    pub uptr: u64,
    pub size: u64,
}
const _: () = assert!(size_of::<PrivcmdDmOpBuf>() == 16);

/// `struct privcmd_dm_op`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivcmdDmOp {
    pub dom: u16,
    pub num: u16,
    pub pad: u32,
    pub ubufs: u64,
}
const _: () = assert!(size_of::<PrivcmdDmOp>() == 16 && offset_of!(PrivcmdDmOp, ubufs) == 8);

/// `struct privcmd_mmap_resource`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivcmdMmapResource {
    pub dom: u16,
    pub pad: u16,
    pub ty: u32,
    pub id: u32,
    pub idx: u32,
    pub num: u64,
    pub addr: u64,
}
const _: () = assert!(size_of::<PrivcmdMmapResource>() == 32);
const _: () = assert!(offset_of!(PrivcmdMmapResource, ty) == 4 && offset_of!(PrivcmdMmapResource, idx) == 12);
const _: () = assert!(offset_of!(PrivcmdMmapResource, num) == 16 && offset_of!(PrivcmdMmapResource, addr) == 24);

/// `struct privcmd_pcidev_get_gsi`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrivcmdPcidevGetGsi {
    pub sbdf: u32,
    pub gsi: u32,
}
const _: () = assert!(size_of::<PrivcmdPcidevGetGsi>() == 8);

pub const IOCTL_PRIVCMD_HYPERCALL: u64 = ioc(0, b'P', 0, size_of::<PrivcmdHypercall>());
pub const IOCTL_PRIVCMD_DM_OP: u64 = ioc(0, b'P', 5, size_of::<PrivcmdDmOp>());
pub const IOCTL_PRIVCMD_RESTRICT: u64 = ioc(0, b'P', 6, 2);
pub const IOCTL_PRIVCMD_MMAP_RESOURCE: u64 = ioc(0, b'P', 7, size_of::<PrivcmdMmapResource>());
pub const IOCTL_PRIVCMD_PCIDEV_GET_GSI: u64 = ioc(0, b'P', 10, size_of::<PrivcmdPcidevGetGsi>());
const _: () = assert!(IOCTL_PRIVCMD_HYPERCALL == 0x0030_5000);
const _: () = assert!(IOCTL_PRIVCMD_DM_OP == 0x0010_5005);
const _: () = assert!(IOCTL_PRIVCMD_RESTRICT == 0x0002_5006);
const _: () = assert!(IOCTL_PRIVCMD_MMAP_RESOURCE == 0x0020_5007);
const _: () = assert!(IOCTL_PRIVCMD_PCIDEV_GET_GSI == 0x0008_500a);

// --- include/uapi/xen/evtchn.h ---------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}
const _: () = assert!(size_of::<EvtchnBindInterdomain>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnPortArg {
    pub port: u32,
}

pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 = ioc(0, b'E', 1, 8);
pub const IOCTL_EVTCHN_UNBIND: u64 = ioc(0, b'E', 3, 4);
pub const IOCTL_EVTCHN_NOTIFY: u64 = ioc(0, b'E', 4, 4);
pub const IOCTL_EVTCHN_RESET: u64 = ioc(0, b'E', 5, 0);
pub const IOCTL_EVTCHN_RESTRICT_DOMID: u64 = ioc(0, b'E', 6, 2);
const _: () = assert!(IOCTL_EVTCHN_BIND_INTERDOMAIN == 0x0008_4501);
const _: () = assert!(IOCTL_EVTCHN_UNBIND == 0x0004_4503);
const _: () = assert!(IOCTL_EVTCHN_NOTIFY == 0x0004_4504);
const _: () = assert!(IOCTL_EVTCHN_RESET == 0x0000_4505);

// --- xen/include/public/xen.h: hypercall numbers ----------------------------------------

pub const HYPERVISOR_MEMORY_OP: u64 = 12;
pub const HYPERVISOR_XEN_VERSION: u64 = 17;
pub const HYPERVISOR_PHYSDEV_OP: u64 = 33;
pub const HYPERVISOR_DOMCTL: u64 = 36;
pub const HYPERVISOR_DM_OP: u64 = 41;
pub const XENVER_VERSION: u64 = 0;

// --- public/hvm/dm_op.h ----------------------------------------------------------------

pub const XEN_DMOP_CREATE_IOREQ_SERVER: u32 = 1;
pub const XEN_DMOP_GET_IOREQ_SERVER_INFO: u32 = 2;
pub const XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER: u32 = 3;
pub const XEN_DMOP_UNMAP_IO_RANGE_FROM_IOREQ_SERVER: u32 = 4;
pub const XEN_DMOP_SET_IOREQ_SERVER_STATE: u32 = 5;
pub const XEN_DMOP_DESTROY_IOREQ_SERVER: u32 = 6;
pub const XEN_DMOP_NO_GFNS: u16 = 1;

/// `struct xen_dm_op`: op, pad, then a 24-byte union.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenDmOp {
    pub op: u32,
    pub pad: u32,
    pub u: [u64; 3],
}
const _: () = assert!(size_of::<XenDmOp>() == 32);

/// `struct xen_dm_op_create_ioreq_server`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DmCreateIoreqServer {
    pub handle_bufioreq: u8,
    pub pad: [u8; 3],
    pub id: u16,
}
const _: () = assert!(size_of::<DmCreateIoreqServer>() == 6 && offset_of!(DmCreateIoreqServer, id) == 4);

/// `struct xen_dm_op_get_ioreq_server_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DmGetIoreqServerInfo {
    pub id: u16,
    pub flags: u16,
    pub bufioreq_port: u32,
    pub ioreq_gfn: u64,
    pub bufioreq_gfn: u64,
}
const _: () = assert!(size_of::<DmGetIoreqServerInfo>() == 24 && offset_of!(DmGetIoreqServerInfo, bufioreq_port) == 4);

/// `struct xen_dm_op_ioreq_server_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DmIoreqServerRange {
    pub id: u16,
    pub pad: u16,
    pub ty: u32,
    pub start: u64,
    pub end: u64,
}
const _: () = assert!(size_of::<DmIoreqServerRange>() == 24 && offset_of!(DmIoreqServerRange, start) == 8);

/// `struct xen_dm_op_set_ioreq_server_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DmSetIoreqServerState {
    pub id: u16,
    pub enabled: u8,
    pub pad: u8,
}
const _: () = assert!(size_of::<DmSetIoreqServerState>() == 4);

/// `struct xen_dm_op_destroy_ioreq_server`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DmDestroyIoreqServer {
    pub id: u16,
    pub pad: u16,
}
const _: () = assert!(size_of::<DmDestroyIoreqServer>() == 4);

// --- public/memory.h: XENMEM_acquire_resource --------------------------------------------

pub const XENMEM_RESOURCE_IOREQ_SERVER: u32 = 0;
/// Frame index of the synchronous ioreq page (frame 0 is the buffered ring).
pub const XENMEM_RESOURCE_IOREQ_SERVER_FRAME_IOREQ0: u32 = 1;

// --- public/domctl.h -------------------------------------------------------------------

pub const XEN_DOMCTL_GETDOMAININFO: u32 = 5;
pub const XEN_DOMCTL_IRQ_PERMISSION: u32 = 19;
pub const XEN_DOMCTL_IOMEM_PERMISSION: u32 = 20;
pub const XEN_DOMCTL_IOPORT_PERMISSION: u32 = 21;
pub const XEN_DOMCTL_ASSIGN_DEVICE: u32 = 37;
pub const XEN_DOMCTL_BIND_PT_IRQ: u32 = 38;
pub const XEN_DOMCTL_MEMORY_MAPPING: u32 = 39;
pub const XEN_DOMCTL_IOPORT_MAPPING: u32 = 40;
pub const XEN_DOMCTL_DEASSIGN_DEVICE: u32 = 47;
pub const XEN_DOMCTL_UNBIND_PT_IRQ: u32 = 48;
pub const XEN_DOMCTL_GSI_PERMISSION: u32 = 88;

pub const PT_IRQ_TYPE_PCI: u32 = 0;
pub const PT_IRQ_TYPE_MSI: u32 = 2;
pub const XEN_DOMCTL_DEV_PCI: u32 = 0;
pub const XEN_DOMCTL_DEV_RDM_RELAXED: u32 = 1;

/// `struct xen_domctl`: header plus a 128-byte union.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct XenDomctl {
    pub cmd: u32,
    pub interface_version: u32,
    pub domain: u16,
    pub pad: [u16; 3],
    pub u: [u8; 128],
}
const _: () = assert!(size_of::<XenDomctl>() == 144);
const _: () = assert!(offset_of!(XenDomctl, domain) == 8 && offset_of!(XenDomctl, u) == 16);

impl XenDomctl {
    pub fn new(cmd: u32, version: u32, domain: u16) -> Self {
        XenDomctl { cmd, interface_version: version, domain, pad: [0; 3], u: [0; 128] }
    }

    /// Copy a payload struct into the union.
    pub fn set<T: Copy>(&mut self, payload: &T) {
        let n = size_of::<T>();
        assert!(n <= 128);
        // SAFETY: T is a plain-old-data #[repr(C)] struct of n <= 128 bytes; reading its
        // bytes is valid and the destination has room for them.
        let bytes = unsafe { std::slice::from_raw_parts(payload as *const T as *const u8, n) };
        self.u[..n].copy_from_slice(bytes);
    }
}

/// `struct xen_domctl_getdomaininfo` fields xenpt reads, as union offsets.
pub mod getdomaininfo {
    pub const DOMAIN: usize = 0;
    pub const FLAGS: usize = 4;
    pub const MAX_VCPU_ID: usize = 68;
    /// arch_config.emulation_flags: 96 in 4.10.1 .. 4.15, 104 from 4.16.
    pub const EMULATION_FLAGS_4_10: usize = 96;
    pub const EMULATION_FLAGS_4_16: usize = 104;
    pub const FLAG_DYING: u32 = 1 << 0;
    pub const FLAG_HVM: u32 = 1 << 1;
    pub const FLAG_SHUTDOWN: u32 = 1 << 2;
}

/// `struct xen_domctl_memory_mapping`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomctlMemoryMapping {
    pub first_gfn: u64,
    pub first_mfn: u64,
    pub nr_mfns: u64,
    pub add_mapping: u32,
    pub padding: u32,
}
const _: () = assert!(size_of::<DomctlMemoryMapping>() == 32 && offset_of!(DomctlMemoryMapping, add_mapping) == 24);

/// `struct xen_domctl_ioport_mapping`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomctlIoportMapping {
    pub first_gport: u32,
    pub first_mport: u32,
    pub nr_ports: u32,
    pub add_mapping: u32,
}
const _: () = assert!(size_of::<DomctlIoportMapping>() == 16);

/// `struct xen_domctl_bind_pt_irq` (layout since 4.10).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomctlBindPtIrq {
    pub machine_irq: u32,
    pub irq_type: u32,
    /// union: pci {bus u8, device u8, intx u8} | msi {gvec u8, pad, gflags u32 @4, gtable u64 @8}
    pub u: [u8; 16],
}
const _: () = assert!(size_of::<DomctlBindPtIrq>() == 24 && offset_of!(DomctlBindPtIrq, u) == 8);

/// `struct xen_domctl_iomem_permission`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomctlIomemPermission {
    pub first_mfn: u64,
    pub nr_mfns: u64,
    pub allow_access: u8,
    pub pad: [u8; 7],
}
const _: () =
    assert!(size_of::<DomctlIomemPermission>() == 24 && offset_of!(DomctlIomemPermission, allow_access) == 16);

/// `struct xen_domctl_ioport_permission`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomctlIoportPermission {
    pub first_port: u32,
    pub nr_ports: u32,
    pub allow_access: u8,
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<DomctlIoportPermission>() == 12);

/// `struct xen_domctl_irq_permission`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomctlIrqPermission {
    pub pirq: u32,
    pub allow_access: u8,
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<DomctlIrqPermission>() == 8);

/// `struct xen_domctl_gsi_permission` (4.20+).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomctlGsiPermission {
    pub gsi: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<DomctlGsiPermission>() == 8);

/// `struct xen_domctl_assign_device` (PCI member of the union).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomctlAssignDevice {
    pub dev: u32,
    pub flags: u32,
    pub machine_sbdf: u32,
    pub pad: [u32; 3],
}
const _: () = assert!(size_of::<DomctlAssignDevice>() == 24 && offset_of!(DomctlAssignDevice, machine_sbdf) == 8);

// --- public/physdev.h ------------------------------------------------------------------

pub const PHYSDEVOP_MAP_PIRQ: u64 = 13;
pub const PHYSDEVOP_UNMAP_PIRQ: u64 = 14;
pub const MAP_PIRQ_TYPE_GSI: i32 = 1;
pub const MAP_PIRQ_TYPE_MSI_SEG: i32 = 3;
pub const MAP_PIRQ_TYPE_MULTI_MSI: i32 = 4;

/// `struct physdev_map_pirq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PhysdevMapPirq {
    pub domid: u16,
    pub pad: u16,
    pub ty: i32,
    pub index: i32,
    pub pirq: i32,
    pub bus: i32,
    pub devfn: i32,
    pub entry_nr: i32,
    pub pad2: u32,
    pub table_base: u64,
}
const _: () = assert!(size_of::<PhysdevMapPirq>() == 40);
const _: () = assert!(offset_of!(PhysdevMapPirq, ty) == 4 && offset_of!(PhysdevMapPirq, pirq) == 12);
const _: () = assert!(offset_of!(PhysdevMapPirq, entry_nr) == 24 && offset_of!(PhysdevMapPirq, table_base) == 32);

/// `struct physdev_unmap_pirq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PhysdevUnmapPirq {
    pub domid: u16,
    pub pad: u16,
    pub pirq: i32,
}
const _: () = assert!(size_of::<PhysdevUnmapPirq>() == 8);

/// Domctl interface version per Xen release (major, minor), newest first.
pub const DOMCTL_VERSIONS: &[((u16, u16), u32)] = &[
    ((4, 22), 0x18),
    ((4, 21), 0x17),
    ((4, 20), 0x17),
    ((4, 19), 0x17),
    ((4, 18), 0x16),
    ((4, 17), 0x15),
    ((4, 16), 0x14),
    ((4, 15), 0x13),
    ((4, 14), 0x12),
    ((4, 13), 0x12),
    ((4, 12), 0x11),
    ((4, 11), 0x10),
    // 4.10.0 used 0x0e; 4.10.1+ 0x0f. The probe falls back on EACCES.
    ((4, 10), 0x0f),
];

/// The domctl interface version for a Xen release, if it is in the table.
pub fn domctl_version(major: u16, minor: u16) -> Option<u32> {
    DOMCTL_VERSIONS.iter().find(|(v, _)| *v == (major, minor)).map(|&(_, i)| i)
}

/// Sizes, offsets and constants of this module under the names the C headers use, for
/// the cross-check against Debian's libxen-dev headers (tests/abi_headers.rs).
pub fn layout_facts() -> Vec<(&'static str, u64)> {
    use crate::xen::abi as io;
    macro_rules! f {
        ($($name:expr => $v:expr),* $(,)?) => { vec![$(($name, $v as u64)),*] };
    }
    f![
        "sizeof privcmd_hypercall_t" => size_of::<PrivcmdHypercall>(),
        "sizeof privcmd_dm_op_buf_t" => size_of::<PrivcmdDmOpBuf>(),
        "sizeof privcmd_dm_op_t" => size_of::<PrivcmdDmOp>(),
        "offsetof privcmd_dm_op_t.ubufs" => offset_of!(PrivcmdDmOp, ubufs),
        "sizeof privcmd_mmap_resource_t" => size_of::<PrivcmdMmapResource>(),
        "offsetof privcmd_mmap_resource_t.idx" => offset_of!(PrivcmdMmapResource, idx),
        "offsetof privcmd_mmap_resource_t.addr" => offset_of!(PrivcmdMmapResource, addr),
        "const IOCTL_PRIVCMD_HYPERCALL" => IOCTL_PRIVCMD_HYPERCALL,
        "const IOCTL_PRIVCMD_DM_OP" => IOCTL_PRIVCMD_DM_OP,
        "const IOCTL_PRIVCMD_RESTRICT" => IOCTL_PRIVCMD_RESTRICT,
        "const IOCTL_PRIVCMD_MMAP_RESOURCE" => IOCTL_PRIVCMD_MMAP_RESOURCE,
        "const IOCTL_EVTCHN_BIND_INTERDOMAIN" => IOCTL_EVTCHN_BIND_INTERDOMAIN,
        "const IOCTL_EVTCHN_UNBIND" => IOCTL_EVTCHN_UNBIND,
        "const IOCTL_EVTCHN_NOTIFY" => IOCTL_EVTCHN_NOTIFY,
        "const IOCTL_EVTCHN_RESET" => IOCTL_EVTCHN_RESET,
        "const IOCTL_EVTCHN_RESTRICT_DOMID" => IOCTL_EVTCHN_RESTRICT_DOMID,
        "sizeof struct ioctl_evtchn_bind_interdomain" => size_of::<EvtchnBindInterdomain>(),
        "const __HYPERVISOR_memory_op" => HYPERVISOR_MEMORY_OP,
        "const __HYPERVISOR_xen_version" => HYPERVISOR_XEN_VERSION,
        "const __HYPERVISOR_physdev_op" => HYPERVISOR_PHYSDEV_OP,
        "const __HYPERVISOR_domctl" => HYPERVISOR_DOMCTL,
        "const __HYPERVISOR_dm_op" => HYPERVISOR_DM_OP,
        "const XEN_DMOP_create_ioreq_server" => XEN_DMOP_CREATE_IOREQ_SERVER,
        "const XEN_DMOP_get_ioreq_server_info" => XEN_DMOP_GET_IOREQ_SERVER_INFO,
        "const XEN_DMOP_map_io_range_to_ioreq_server" => XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER,
        "const XEN_DMOP_unmap_io_range_from_ioreq_server" => XEN_DMOP_UNMAP_IO_RANGE_FROM_IOREQ_SERVER,
        "const XEN_DMOP_set_ioreq_server_state" => XEN_DMOP_SET_IOREQ_SERVER_STATE,
        "const XEN_DMOP_destroy_ioreq_server" => XEN_DMOP_DESTROY_IOREQ_SERVER,
        "const XEN_DMOP_no_gfns" => XEN_DMOP_NO_GFNS,
        "const XEN_DMOP_IO_RANGE_PORT" => crate::xen::IoRangeKind::Port as u32,
        "const XEN_DMOP_IO_RANGE_MEMORY" => crate::xen::IoRangeKind::Memory as u32,
        "const XEN_DMOP_IO_RANGE_PCI" => crate::xen::IoRangeKind::Pci as u32,
        "sizeof struct xen_dm_op" => size_of::<XenDmOp>(),
        "offsetof struct xen_dm_op.u" => 8,
        "sizeof struct xen_dm_op_create_ioreq_server" => size_of::<DmCreateIoreqServer>(),
        "offsetof struct xen_dm_op_create_ioreq_server.id" => offset_of!(DmCreateIoreqServer, id),
        "sizeof struct xen_dm_op_get_ioreq_server_info" => size_of::<DmGetIoreqServerInfo>(),
        "offsetof struct xen_dm_op_get_ioreq_server_info.bufioreq_port" => offset_of!(DmGetIoreqServerInfo, bufioreq_port),
        "sizeof struct xen_dm_op_ioreq_server_range" => size_of::<DmIoreqServerRange>(),
        "offsetof struct xen_dm_op_ioreq_server_range.start" => offset_of!(DmIoreqServerRange, start),
        "sizeof struct xen_dm_op_set_ioreq_server_state" => size_of::<DmSetIoreqServerState>(),
        "sizeof struct xen_dm_op_destroy_ioreq_server" => size_of::<DmDestroyIoreqServer>(),
        "const XENMEM_resource_ioreq_server" => XENMEM_RESOURCE_IOREQ_SERVER,
        "const XENMEM_resource_ioreq_server_frame_ioreq(0)" => XENMEM_RESOURCE_IOREQ_SERVER_FRAME_IOREQ0,
        "sizeof struct xen_domctl" => size_of::<XenDomctl>(),
        "offsetof struct xen_domctl.domain" => offset_of!(XenDomctl, domain),
        "offsetof struct xen_domctl.u" => offset_of!(XenDomctl, u),
        "const XEN_DOMCTL_getdomaininfo" => XEN_DOMCTL_GETDOMAININFO,
        "const XEN_DOMCTL_irq_permission" => XEN_DOMCTL_IRQ_PERMISSION,
        "const XEN_DOMCTL_iomem_permission" => XEN_DOMCTL_IOMEM_PERMISSION,
        "const XEN_DOMCTL_ioport_permission" => XEN_DOMCTL_IOPORT_PERMISSION,
        "const XEN_DOMCTL_assign_device" => XEN_DOMCTL_ASSIGN_DEVICE,
        "const XEN_DOMCTL_bind_pt_irq" => XEN_DOMCTL_BIND_PT_IRQ,
        "const XEN_DOMCTL_memory_mapping" => XEN_DOMCTL_MEMORY_MAPPING,
        "const XEN_DOMCTL_ioport_mapping" => XEN_DOMCTL_IOPORT_MAPPING,
        "const XEN_DOMCTL_deassign_device" => XEN_DOMCTL_DEASSIGN_DEVICE,
        "const XEN_DOMCTL_unbind_pt_irq" => XEN_DOMCTL_UNBIND_PT_IRQ,
        "const XEN_DOMCTL_DEV_PCI" => XEN_DOMCTL_DEV_PCI,
        "const XEN_DOMCTL_DEV_RDM_RELAXED" => XEN_DOMCTL_DEV_RDM_RELAXED,
        "const PT_IRQ_TYPE_PCI" => PT_IRQ_TYPE_PCI,
        "const PT_IRQ_TYPE_MSI" => PT_IRQ_TYPE_MSI,
        "offsetof struct xen_domctl_getdomaininfo.flags" => getdomaininfo::FLAGS,
        "offsetof struct xen_domctl_getdomaininfo.max_vcpu_id" => getdomaininfo::MAX_VCPU_ID,
        "offsetof struct xen_domctl_getdomaininfo.arch_config" => getdomaininfo::EMULATION_FLAGS_4_16,
        "sizeof struct xen_domctl_memory_mapping" => size_of::<DomctlMemoryMapping>(),
        "offsetof struct xen_domctl_memory_mapping.add_mapping" => offset_of!(DomctlMemoryMapping, add_mapping),
        "sizeof struct xen_domctl_ioport_mapping" => size_of::<DomctlIoportMapping>(),
        "sizeof struct xen_domctl_bind_pt_irq" => size_of::<DomctlBindPtIrq>(),
        "offsetof struct xen_domctl_bind_pt_irq.u.msi.gvec" => 8,
        "offsetof struct xen_domctl_bind_pt_irq.u.msi.gflags" => 12,
        "offsetof struct xen_domctl_bind_pt_irq.u.msi.gtable" => 16,
        "offsetof struct xen_domctl_bind_pt_irq.u.pci.device" => 9,
        "offsetof struct xen_domctl_bind_pt_irq.u.pci.intx" => 10,
        "sizeof struct xen_domctl_iomem_permission" => size_of::<DomctlIomemPermission>(),
        "offsetof struct xen_domctl_iomem_permission.allow_access" => offset_of!(DomctlIomemPermission, allow_access),
        "sizeof struct xen_domctl_ioport_permission" => size_of::<DomctlIoportPermission>(),
        "sizeof struct xen_domctl_irq_permission" => size_of::<DomctlIrqPermission>(),
        "sizeof struct xen_domctl_assign_device" => size_of::<DomctlAssignDevice>(),
        "offsetof struct xen_domctl_assign_device.u.pci.machine_sbdf" => offset_of!(DomctlAssignDevice, machine_sbdf),
        "const PHYSDEVOP_map_pirq" => PHYSDEVOP_MAP_PIRQ,
        "const PHYSDEVOP_unmap_pirq" => PHYSDEVOP_UNMAP_PIRQ,
        "const MAP_PIRQ_TYPE_GSI" => MAP_PIRQ_TYPE_GSI,
        "const MAP_PIRQ_TYPE_MSI_SEG" => MAP_PIRQ_TYPE_MSI_SEG,
        "const MAP_PIRQ_TYPE_MULTI_MSI" => MAP_PIRQ_TYPE_MULTI_MSI,
        "sizeof struct physdev_map_pirq" => size_of::<PhysdevMapPirq>(),
        "offsetof struct physdev_map_pirq.pirq" => offset_of!(PhysdevMapPirq, pirq),
        "offsetof struct physdev_map_pirq.entry_nr" => offset_of!(PhysdevMapPirq, entry_nr),
        "offsetof struct physdev_map_pirq.table_base" => offset_of!(PhysdevMapPirq, table_base),
        "sizeof struct physdev_unmap_pirq" => size_of::<PhysdevUnmapPirq>(),
        "sizeof struct ioreq" => io::IOREQ_SIZE,
        "offsetof struct ioreq.data" => io::IOREQ_DATA_OFFSET,
        "offsetof struct ioreq.count" => io::IOREQ_COUNT_OFFSET,
        "offsetof struct ioreq.size" => io::IOREQ_SIZE_OFFSET,
        "offsetof struct ioreq.vp_eport" => io::IOREQ_VP_EPORT_OFFSET,
        "offsetof struct ioreq.type" => io::IOREQ_TYPE_OFFSET,
        "const IOREQ_TYPE_PIO" => io::IOREQ_TYPE_PIO,
        "const IOREQ_TYPE_COPY" => io::IOREQ_TYPE_COPY,
        "const IOREQ_TYPE_PCI_CONFIG" => io::IOREQ_TYPE_PCI_CONFIG,
        "const IOREQ_TYPE_INVALIDATE" => io::IOREQ_TYPE_INVALIDATE,
        "const STATE_IOREQ_READY" => io::STATE_IOREQ_READY,
        "const STATE_IORESP_READY" => io::STATE_IORESP_READY,
        "const MAX_NR_IOREQ_SERVERS" => io::MAX_NR_IOREQ_SERVERS,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domctl_versions_follow_the_release_table() {
        assert_eq!(domctl_version(4, 17), Some(0x15));
        assert_eq!(domctl_version(4, 19), Some(0x17));
        assert_eq!(domctl_version(4, 21), Some(0x17));
        assert_eq!(domctl_version(4, 22), Some(0x18));
        assert_eq!(domctl_version(4, 10), Some(0x0f));
        assert_eq!(domctl_version(4, 9), None);
        assert_eq!(domctl_version(4, 23), None);
    }

    #[test]
    fn domctl_payload_lands_at_offset_16() {
        let mut d = XenDomctl::new(XEN_DOMCTL_MEMORY_MAPPING, 0x15, 3);
        d.set(&DomctlMemoryMapping { first_gfn: 0x1122, first_mfn: 0x3344, nr_mfns: 2, add_mapping: 1, padding: 0 });
        assert_eq!(&d.u[0..8], &0x1122u64.to_le_bytes());
        assert_eq!(&d.u[8..16], &0x3344u64.to_le_bytes());
        assert_eq!(d.u[24], 1);
    }
}
