//! Bring-up, serving and ordered teardown of one xenpt instance, independent of which
//! Xen (simulated or real) and which host backend it runs on.

use crate::device::{DeviceError, DeviceModel, DeviceOptions};
use crate::host::HostDevice;
use crate::host_bridge::{HostBridge, Served};
use crate::ioreq::event_loop::{EventLoop, LoopError, StopReason};
use crate::ioreq::IoreqServer;
use crate::pci::INTERRUPT_PIN_OFFSET;
use crate::xen::{abi::MAX_NR_IOREQ_SERVERS, Errno, GuestKind, IoRange, Xen, XenError};
use crate::Profile;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("domain {domid} not found: {source}")]
    NoDomain { domid: u16, source: XenError },
    #[error("domain {domid} is a PV guest; xenpt serves HVM and PVH guests (PV guests use pcifront/pciback)")]
    PvGuest { domid: u16 },
    #[error("domain {domid} is {actual:?} but the {profile:?} profile was asked for; drop --profile to use the domain's own type")]
    WrongProfile { domid: u16, actual: GuestKind, profile: Profile },
    #[error("domain {domid} is dying")]
    Dying { domid: u16 },
    #[error(
        "domain {domid} already has {max} ioreq servers (Xen's limit): a guest can have at most {} xenpt-served functions next to QEMU",
        max - 1
    )]
    TooManyServers { domid: u16, max: usize },
    #[error("creating the ioreq server for domain {domid}: {source}")]
    Server { domid: u16, source: XenError },
    #[error("{0}")]
    Device(#[from] DeviceError),
}

/// A running instance: its ioreq server and device model, and in the PVH profile the
/// guest's host bridge and CF8 port.
pub struct Instance {
    pub server: IoreqServer,
    pub device: DeviceModel,
    pub bridge: Option<HostBridge>,
}

/// Create the ioreq server, build the device model, claim the guest SBDF and enable the
/// server. Anything created before a failure is destroyed again. In the PVH profile the
/// instance also presents the guest's host bridge and port 0xCF8 (see host_bridge).
pub fn start(xen: &mut dyn Xen, host: Box<dyn HostDevice>, opts: DeviceOptions) -> Result<Instance, StartError> {
    let bridge = opts.profile == Profile::Pvh;
    start_with(xen, host, opts, bridge)
}

/// As [`start`], choosing whether to present the PVH host bridge.
pub fn start_with(
    xen: &mut dyn Xen,
    host: Box<dyn HostDevice>,
    opts: DeviceOptions,
    host_bridge: bool,
) -> Result<Instance, StartError> {
    let domid = opts.domid;
    let info = xen.domain_info(domid).map_err(|source| StartError::NoDomain { domid, source })?;
    if info.dying {
        return Err(StartError::Dying { domid });
    }
    let expected = match opts.profile {
        Profile::Hvm => GuestKind::Hvm,
        Profile::Pvh => GuestKind::Pvh,
    };
    match info.kind {
        GuestKind::Pv => return Err(StartError::PvGuest { domid }),
        k if k != expected => return Err(StartError::WrongProfile { domid, actual: k, profile: opts.profile }),
        _ => {}
    }
    let mut server = IoreqServer::create(xen, domid, info.vcpus).map_err(|source| match source.errno {
        Errno::ENOSPC => StartError::TooManyServers { domid, max: MAX_NR_IOREQ_SERVERS },
        _ => StartError::Server { domid, source },
    })?;
    let guest_sbdf = opts.guest_sbdf;
    let mut device = match DeviceModel::new(host, server.id(), opts) {
        Ok(d) => d,
        Err(e) => {
            server.destroy(xen);
            return Err(e.into());
        }
    };
    // Only a function that offers the guest a pin needs its GSI (not the PVH profile).
    let pin = device.cfg.emulated(INTERRUPT_PIN_OFFSET, 1);
    let gsi = if pin != 0 { host_gsi(xen, device.host()) } else { None };
    device.start_intx(xen, gsi);
    let mut ranges = vec![IoRange::pci(guest_sbdf)];
    if host_bridge {
        ranges.extend(HostBridge::ranges());
    }
    let enabled = ranges.into_iter().try_for_each(|r| server.map_range(xen, r)).and_then(|_| server.enable(xen));
    if let Err(source) = enabled {
        server.destroy(xen);
        return Err(StartError::Server { domid, source });
    }
    Ok(Instance { server, device, bridge: host_bridge.then(HostBridge::new) })
}

/// What kind of domain xenpt runs in: the hardware domain's type from Xen (PV unless Xen
/// says it is an HVM-container, i.e. PVH). An error reads as PV, the long-standing case.
pub fn dom0_kind(xen: &mut dyn Xen) -> GuestKind {
    match xen.domain_info(0) {
        Ok(i) => i.kind,
        Err(e) => {
            tracing::debug!("cannot read domain 0's type ({e}); assuming a PV dom0");
            GuestKind::Pv
        }
    }
}

/// The GSI of the host function's INTx line as Xen numbers it: sysfs `irq` on a PV dom0
/// (the kernel maps GSIs 1:1 there); on a PVH dom0 sysfs gives a Linux IRQ number, so the
/// GSI comes from privcmd's PCIDEV_GET_GSI. None: no INTx line, or it cannot be named
/// (then the guest is offered no INTx and the log says why).
pub fn host_gsi(xen: &mut dyn Xen, host: &dyn HostDevice) -> Option<u32> {
    let dom0 = dom0_kind(xen);
    host_gsi_in(xen, host, dom0)
}

/// [`host_gsi`] for a caller that already knows what dom0 is.
pub fn host_gsi_in(xen: &mut dyn Xen, host: &dyn HostDevice, dom0: GuestKind) -> Option<u32> {
    let irq = host.irq()?;
    match dom0 {
        GuestKind::Pvh => match xen.pcidev_gsi(host.sbdf()) {
            Ok(gsi) => {
                if gsi != irq {
                    tracing::debug!(device = %host.sbdf(), "PVH dom0: Linux IRQ {irq} is GSI {gsi}");
                }
                Some(gsi)
            }
            Err(e) => {
                tracing::warn!(device = %host.sbdf(),
                    "PVH dom0: the GSI of the device's INTx cannot be found ({e}; privcmd's PCIDEV_GET_GSI \
                     needs Linux 6.12 or later); the guest gets no INTx, MSI and MSI-X are unaffected");
                None
            }
        },
        _ => Some(irq),
    }
}

/// Serve until the event loop is stopped.
pub fn serve(xen: &mut dyn Xen, inst: &mut Instance, ev: &mut EventLoop) -> Result<StopReason, LoopError> {
    let mut served = Served { device: &mut inst.device, bridge: inst.bridge.as_mut() };
    ev.run_inspect(xen, &mut inst.server, &mut served)
}

/// Ordered teardown: pirqs (unbind, unmap), BARs, then the ioreq server.
pub fn shutdown(xen: &mut dyn Xen, inst: &mut Instance) -> Vec<XenError> {
    let mut errors = inst.device.teardown(xen);
    errors.extend(inst.server.destroy(xen));
    errors
}
