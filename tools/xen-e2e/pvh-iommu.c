/*
 * Test-only, for the xenpt-pvh scenario of tools/xen-e2e: LD_PRELOADed into `xl create`,
 * it adds the IOMMU flag (XEN_DOMCTL_CDF_iommu) to the creation of a PVH domain.
 *
 * Why: libxl refuses `passthrough=` for x86 PVH guests ("passthrough not yet supported
 * for x86 PVH guests", libxl_x86.c), so without it a PVH domain has no IOMMU context and
 * XEN_DOMCTL_assign_device fails. The hypervisor itself accepts a PVH domain created with
 * the flag; only the toolstack stands in the way. This shim stands in for the toolstack
 * change (a libxl that allows passthrough for PVH) so the rest of the path can be tested.
 * xenpt never links or loads it: xenpt talks to Xen only through privcmd and evtchn.
 *
 * Built by run.sh with the host's gcc against Debian's libxen-dev 4.17 headers (the same
 * Xen release as the dom0 image).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <xenctrl.h>

typedef int (*create_fn)(xc_interface *, uint32_t *, struct xen_domctl_createdomain *);

int xc_domain_create(xc_interface *xch, uint32_t *pdomid, struct xen_domctl_createdomain *config)
{
    create_fn real = (create_fn)dlsym(RTLD_NEXT, "xc_domain_create");
    if (!real) {
        fprintf(stderr, "pvh-iommu: no xc_domain_create to wrap\n");
        return -1;
    }
    /* Only PVH: an HVM-container domain whose only emulated device is the local APIC. */
    if ((config->flags & XEN_DOMCTL_CDF_hvm) &&
        !(config->arch.emulation_flags & ~(uint32_t)XEN_X86_EMU_LAPIC) &&
        !(config->flags & XEN_DOMCTL_CDF_iommu)) {
        config->flags |= XEN_DOMCTL_CDF_iommu;
        fprintf(stderr, "pvh-iommu: creating the PVH domain with XEN_DOMCTL_CDF_iommu\n");
    }
    return real(xch, pdomid, config);
}
