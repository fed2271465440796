//! Independent cross-check of the Rust ABI layer against the real Xen public headers
//! (Debian's libxen-dev, Xen 4.17): a small C program prints the sizes, offsets and
//! constants from the headers, and every one must equal what xenpt uses. `.ci/run`
//! installs libxen-dev; without it this test fails rather than skip.

use std::collections::BTreeMap;
use std::process::Command;

use xenpt::xen::privcmd::abi::{domctl_version, layout_facts};

const PROGRAM: &str = r#"
#define __XEN_TOOLS__ 1
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/types.h>
#include <xen/xen.h>
#include <xen/domctl.h>
#include <xen/physdev.h>
#include <xen/memory.h>
#include <xen/version.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/ioreq.h>
#include <xen/sys/privcmd.h>
#include <xen/sys/evtchn.h>
#define S(t) printf("sizeof %s %zu\n", #t, sizeof(t));
#define O(t, f) printf("offsetof %s.%s %zu\n", #t, #f, offsetof(t, f));
#define C(c) printf("const %s %llu\n", #c, (unsigned long long)(c));
int main(void) {
    S(privcmd_hypercall_t) S(privcmd_dm_op_buf_t) S(privcmd_dm_op_t) O(privcmd_dm_op_t, ubufs)
    S(privcmd_mmap_resource_t) O(privcmd_mmap_resource_t, idx) O(privcmd_mmap_resource_t, addr)
    C(IOCTL_PRIVCMD_HYPERCALL) C(IOCTL_PRIVCMD_DM_OP) C(IOCTL_PRIVCMD_RESTRICT) C(IOCTL_PRIVCMD_MMAP_RESOURCE)
    C(IOCTL_EVTCHN_BIND_INTERDOMAIN) C(IOCTL_EVTCHN_UNBIND) C(IOCTL_EVTCHN_NOTIFY) C(IOCTL_EVTCHN_RESET)
    C(IOCTL_EVTCHN_RESTRICT_DOMID) S(struct ioctl_evtchn_bind_interdomain)
    C(__HYPERVISOR_memory_op) C(__HYPERVISOR_xen_version) C(__HYPERVISOR_physdev_op) C(__HYPERVISOR_domctl)
    C(__HYPERVISOR_dm_op)
    C(XEN_DMOP_create_ioreq_server) C(XEN_DMOP_get_ioreq_server_info) C(XEN_DMOP_map_io_range_to_ioreq_server)
    C(XEN_DMOP_unmap_io_range_from_ioreq_server) C(XEN_DMOP_set_ioreq_server_state) C(XEN_DMOP_destroy_ioreq_server)
    C(XEN_DMOP_no_gfns) C(XEN_DMOP_IO_RANGE_PORT) C(XEN_DMOP_IO_RANGE_MEMORY) C(XEN_DMOP_IO_RANGE_PCI)
    S(struct xen_dm_op) O(struct xen_dm_op, u)
    S(struct xen_dm_op_create_ioreq_server) O(struct xen_dm_op_create_ioreq_server, id)
    S(struct xen_dm_op_get_ioreq_server_info) O(struct xen_dm_op_get_ioreq_server_info, bufioreq_port)
    S(struct xen_dm_op_ioreq_server_range) O(struct xen_dm_op_ioreq_server_range, start)
    S(struct xen_dm_op_set_ioreq_server_state) S(struct xen_dm_op_destroy_ioreq_server)
    C(XENMEM_resource_ioreq_server) C(XENMEM_resource_ioreq_server_frame_ioreq(0))
    S(struct xen_domctl) O(struct xen_domctl, domain) O(struct xen_domctl, u)
    C(XEN_DOMCTL_getdomaininfo) C(XEN_DOMCTL_irq_permission) C(XEN_DOMCTL_iomem_permission)
    C(XEN_DOMCTL_ioport_permission) C(XEN_DOMCTL_assign_device) C(XEN_DOMCTL_bind_pt_irq)
    C(XEN_DOMCTL_memory_mapping) C(XEN_DOMCTL_ioport_mapping) C(XEN_DOMCTL_deassign_device)
    C(XEN_DOMCTL_unbind_pt_irq) C(XEN_DOMCTL_DEV_PCI) C(XEN_DOMCTL_DEV_RDM_RELAXED)
    C(PT_IRQ_TYPE_PCI) C(PT_IRQ_TYPE_MSI)
    O(struct xen_domctl_getdomaininfo, flags) O(struct xen_domctl_getdomaininfo, max_vcpu_id)
    O(struct xen_domctl_getdomaininfo, arch_config)
    S(struct xen_domctl_memory_mapping) O(struct xen_domctl_memory_mapping, add_mapping)
    S(struct xen_domctl_ioport_mapping)
    S(struct xen_domctl_bind_pt_irq) O(struct xen_domctl_bind_pt_irq, u.msi.gvec)
    O(struct xen_domctl_bind_pt_irq, u.msi.gflags) O(struct xen_domctl_bind_pt_irq, u.msi.gtable)
    O(struct xen_domctl_bind_pt_irq, u.pci.device) O(struct xen_domctl_bind_pt_irq, u.pci.intx)
    S(struct xen_domctl_iomem_permission) O(struct xen_domctl_iomem_permission, allow_access)
    S(struct xen_domctl_ioport_permission) S(struct xen_domctl_irq_permission)
    S(struct xen_domctl_assign_device) O(struct xen_domctl_assign_device, u.pci.machine_sbdf)
    C(PHYSDEVOP_map_pirq) C(PHYSDEVOP_unmap_pirq) C(MAP_PIRQ_TYPE_GSI) C(MAP_PIRQ_TYPE_MSI_SEG)
    C(MAP_PIRQ_TYPE_MULTI_MSI)
    S(struct physdev_map_pirq) O(struct physdev_map_pirq, pirq) O(struct physdev_map_pirq, entry_nr)
    O(struct physdev_map_pirq, table_base) S(struct physdev_unmap_pirq)
    S(struct ioreq) O(struct ioreq, data) O(struct ioreq, count) O(struct ioreq, size) O(struct ioreq, vp_eport)
    O(struct ioreq, type)
    C(IOREQ_TYPE_PIO) C(IOREQ_TYPE_COPY) C(IOREQ_TYPE_PCI_CONFIG) C(IOREQ_TYPE_INVALIDATE)
    C(STATE_IOREQ_READY) C(STATE_IORESP_READY)
    C(XEN_DOMCTL_INTERFACE_VERSION)
    printf("const MAX_NR_IOREQ_SERVERS 8\n");
    return 0;
}
"#;

#[test]
fn rust_abi_layer_matches_the_xen_4_17_public_headers() {
    assert!(
        std::path::Path::new("/usr/include/xen/domctl.h").exists(),
        "/usr/include/xen/domctl.h missing: install Debian's libxen-dev (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("abi.c");
    let exe = dir.path().join("abi");
    std::fs::write(&src, PROGRAM).unwrap();
    let out = Command::new("cc").arg("-o").arg(&exe).arg(&src).output().expect("a C compiler (cc) is needed");
    assert!(out.status.success(), "compiling the header probe failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let c: BTreeMap<String, u64> = text
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let mut checked = 0;
    for (name, rust) in layout_facts() {
        let Some(&hdr) = c.get(name) else { panic!("the C probe does not print {name:?}") };
        assert_eq!(rust, hdr, "{name}: xenpt has {rust:#x}, the Xen 4.17 headers say {hdr:#x}");
        checked += 1;
    }
    assert_eq!(
        Some(c["const XEN_DOMCTL_INTERFACE_VERSION"] as u32),
        domctl_version(4, 17),
        "domctl version table for 4.17"
    );
    assert!(checked >= 100, "only {checked} facts checked");
}
