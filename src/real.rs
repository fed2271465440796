//! `xenpt run`: serve a host PCI function to a running guest on real Xen.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::console::{Console, ConsoleInfo};
use crate::device::DeviceOptions;
use crate::host::sysfs::SysfsDevice;
use crate::host::{BarKind, HostDevice, HostError};
use crate::ioreq::event_loop::{EventLoop, LoopError, StopReason};
use crate::pci::{Sbdf, CAP_ID_MSI, CAP_ID_MSIX, PAGE_SHIFT};
use crate::runner::{self, StartError};
use crate::xen::privcmd::{OpenError, PrivcmdXen};
use crate::xen::{DomId, GuestKind, Xen, XenError};
use crate::Profile;

/// `xenpt run`'s arguments (also the clap definition of the subcommand).
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Guest domain id.
    #[arg(long)]
    pub domid: DomId,
    /// Host PCI function, e.g. 0000:03:00.0.
    #[arg(long)]
    pub sbdf: Sbdf,
    /// Device number the guest sees the function at, on bus 0 (pick a slot QEMU does not use).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=31))]
    pub guest_slot: u8,
    /// Function number at that slot (0-7). Functions 1-7 are only found by a guest whose
    /// function 0 at the same slot says multifunction (see --multifunction).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=7))]
    pub guest_function: u8,
    /// Set the multifunction bit in the header type the guest reads: give it to the xenpt
    /// serving function 0 of a slot when other xenpt processes serve functions 1-7 there.
    #[arg(long)]
    pub multifunction: bool,
    /// How to reach the host function: sysfs (default; bound to pciback) or vfio (bound
    /// to vfio-pci: BAR contents through VFIO regions, VFIO reset at start and exit;
    /// config space still through sysfs, because VFIO's config region virtualises the
    /// MSI/MSI-X and INTx-disable bits xenpt must set on the device for Xen).
    #[arg(long, value_enum, default_value = "sysfs")]
    pub backend: crate::host::Backend,
    /// Guest profile; default from the domain's type.
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Let guest writes to registers xenpt does not know reach the device (unsafe; logged).
    #[arg(long)]
    pub permissive: bool,
    /// Write one line to this fd once the ioreq server is enabled (for the toolstack to wait on).
    #[arg(long)]
    pub ready_fd: Option<i32>,
    /// Do the toolstack's part too: assign the device to the domain and grant it its BARs,
    /// undone exactly at exit (for use without libxl's pci= support).
    #[arg(long)]
    pub assign: bool,
    /// Debug console socket (mode 0600), default /run/xenpt/DOMID-SBDF.sock; query it with
    /// `xenpt console PATH` or `socat - UNIX-CONNECT:PATH`. An explicit path that cannot be
    /// created is fatal; the default is best effort.
    #[arg(long, value_name = "PATH", conflicts_with = "no_console")]
    pub console: Option<PathBuf>,
    /// No debug console.
    #[arg(long)]
    pub no_console: bool,
    /// Allow console commands that change device state (none exist yet; shown by `status`).
    #[arg(long)]
    pub console_write: bool,
    /// PVH profile: do not present the host bridge at 00:00.0 and port 0xCF8 (another
    /// xenpt serving the same guest presents them; one per guest is enough).
    #[arg(long)]
    pub no_host_bridge: bool,
    /// Write xenpt's pid to this file (removed at exit).
    #[arg(long)]
    pub pidfile: Option<PathBuf>,
    /// Serve a device of xenpt's Xen simulator running in another process, reached at this
    /// socket, instead of real Xen (for measurements and tests: `tools/perf`). The host
    /// function is the simulator's emulated device at --sbdf.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["backend", "assign"])]
    pub simulator: Option<PathBuf>,
}

/// The pidfile, removed again when xenpt exits (also on errors).
struct PidFile(Option<PathBuf>);

impl PidFile {
    fn create(path: Option<&PathBuf>) -> Result<Self, RunError> {
        if let Some(p) = path {
            std::fs::write(p, format!("{}\n", std::process::id()))
                .map_err(|source| RunError::PidFile { path: p.display().to_string(), source })?;
        }
        Ok(PidFile(path.cloned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("connecting to the simulator at {path}: {source}")]
    Simulator { path: String, source: std::io::Error },
    #[error("writing the pidfile {path}: {source}")]
    PidFile { path: String, source: std::io::Error },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(
        "{sbdf} is bound to driver {driver:?}, not pciback: make it assignable first with `xl pci-assignable-add {sbdf}`"
    )]
    NotAssignable { sbdf: Sbdf, driver: String },
    #[error(
        "{sbdf} still has {what} set by a previous owner: the function was not reset. Reset it before \
         passing it through (`echo 1 > /sys/bus/pci/devices/{sbdf}/reset`, or `xl pci-assignable-remove {sbdf}` \
         then `xl pci-assignable-add {sbdf}`, which resets it through pciback)"
    )]
    NotReset { sbdf: Sbdf, what: &'static str },
    #[error("domain {domid}: {source}")]
    Domain { domid: DomId, source: XenError },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("--assign: {0}")]
    Assign(XenError),
    #[error("writing the ready line to fd {fd}: {source}")]
    Ready { fd: i32, source: std::io::Error },
    #[error("debug console at {path}: {source}")]
    Console { path: String, source: std::io::Error },
    #[error(transparent)]
    Loop(#[from] LoopError),
}

/// What `--assign` did, to be undone exactly at exit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Granted {
    pub assigned: bool,
    pub iomem: Vec<(u64, u64)>,
    pub ioports: Vec<(u32, u32)>,
    /// The INTx line: (GSI, granted with gsi_permission (PVH dom0) rather than
    /// irq_permission (PV dom0)).
    pub intx: Option<(u32, bool)>,
}

fn driver_of(sbdf: Sbdf) -> Option<String> {
    let link = std::fs::read_link(Path::new("/sys/bus/pci/devices").join(sbdf.to_string()).join("driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The toolstack's part of passthrough, for `--assign`: assign the device to the domain
/// (IOMMU context), let the domain reach its BARs (iomem/ioport permission) and its INTx
/// line (irq permission on a PV dom0; gsi permission, Xen 4.20+, on a PVH dom0, where the
/// GSI comes from privcmd). Records each grant in `g` as it is made, for [`undo_assign`].
pub fn do_assign(xen: &mut dyn Xen, domid: DomId, host: &dyn HostDevice, g: &mut Granted) -> Result<(), XenError> {
    xen.assign_device(domid, host.sbdf(), true)?;
    g.assigned = true;
    let res = host.resources().map_err(|_| XenError::new("resources", domid, crate::xen::Errno::EINVAL))?;
    for b in res.bars.iter().flatten().chain(res.rom.iter()) {
        if b.kind == BarKind::Io {
            xen.ioport_permission(domid, b.base as u32, b.size as u32, true)?;
            g.ioports.push((b.base as u32, b.size as u32));
        } else {
            let first = b.base >> PAGE_SHIFT;
            let nr = (b.base + b.size - 1) >> PAGE_SHIFT;
            xen.iomem_permission(domid, first, nr - first + 1, true)?;
            g.iomem.push((first, nr - first + 1));
        }
    }
    let dom0 = runner::dom0_kind(xen);
    if let Some(gsi) = runner::host_gsi_in(xen, host, dom0) {
        let pvh = dom0 == GuestKind::Pvh;
        let granted = if pvh { xen.gsi_permission(domid, gsi, true) } else { xen.irq_permission(domid, gsi, true) };
        match granted {
            Ok(()) => g.intx = Some((gsi, pvh)),
            // Not fatal: Xen maps the GSI for the guest without it on the releases tested;
            // libxl grants it for the guest's own use of the line.
            Err(e) => tracing::warn!(
                "--assign: could not let domain {domid} use GSI {gsi} ({e}){}; INTx may not reach the guest",
                if pvh { " (a PVH dom0 needs Xen 4.20 or later for this)" } else { "" }
            ),
        }
    }
    Ok(())
}

/// Undo what [`do_assign`] recorded, newest first; errors are logged, not fatal.
pub fn undo_assign(xen: &mut dyn Xen, domid: DomId, sbdf: Sbdf, g: &Granted) {
    if let Some((gsi, pvh)) = g.intx {
        let r = if pvh { xen.gsi_permission(domid, gsi, false) } else { xen.irq_permission(domid, gsi, false) };
        if let Err(e) = r {
            tracing::warn!("revoking GSI {gsi}: {e}");
        }
    }
    for &(first, nr) in g.ioports.iter().rev() {
        if let Err(e) = xen.ioport_permission(domid, first, nr, false) {
            tracing::warn!("revoking ioports {first:#x}+{nr}: {e}");
        }
    }
    for &(first, nr) in g.iomem.iter().rev() {
        if let Err(e) = xen.iomem_permission(domid, first, nr, false) {
            tracing::warn!("revoking iomem {first:#x}+{nr}: {e}");
        }
    }
    if g.assigned {
        if let Err(e) = xen.assign_device(domid, sbdf, false) {
            tracing::warn!("deassigning {sbdf}: {e}");
        }
    }
}

/// Fail closed on a function a previous owner left with MSI or MSI-X enabled (or MSI-X
/// function-masked and enabled): its vectors may still point at another guest's interrupt
/// handling and its state is unknown. pciback's reset (and xenpt's own teardown) clear
/// these. Memory/I/O decode left on is normal after pciback and is not a sign of a
/// missing reset (xenpt keeps the host's decode on anyway); bus mastering a previous owner
/// left on is turned off at start-up (the guest turns it back on).
pub fn check_reset(host: &dyn HostDevice) -> Result<(), RunError> {
    let mut cfg = [0u8; 256];
    host.config_read_all(&mut cfg)?;
    let (caps, _) = crate::config_space::caps::walk(&cfg);
    for (id, off) in caps {
        let o = off as usize;
        if o + 4 > cfg.len() {
            continue;
        }
        let ctrl = u16::from_le_bytes([cfg[o + 2], cfg[o + 3]]);
        let what = match id {
            CAP_ID_MSI if ctrl & 1 != 0 => "MSI Enable",
            CAP_ID_MSIX if ctrl & 0x8000 != 0 => "MSI-X Enable",
            _ => continue,
        };
        return Err(RunError::NotReset { sbdf: host.sbdf(), what });
    }
    Ok(())
}

/// Run until a termination signal; returns why the loop stopped.
pub fn run(args: &RunArgs) -> Result<StopReason, RunError> {
    // Every line this process logs names its device and domain.
    let _span = tracing::info_span!("xenpt", dev = %args.sbdf, dom = args.domid).entered();
    if let Some(path) = &args.simulator {
        let simulator = |source| RunError::Simulator { path: path.display().to_string(), source };
        let xen = crate::xen::remote::connect(path).map_err(simulator)?;
        let host = xen.host(args.sbdf)?;
        let xen_info = format!("simulated Xen in another process, at {}", path.display());
        tracing::info!("{xen_info}");
        return serve(args, xen, Box::new(host), xen_info, false);
    }
    let xen = PrivcmdXen::open()?;
    tracing::info!(
        "Xen {} (domctl interface {:#x}), hypercall buffers from {}",
        xen.xen_version(),
        xen.domctl_interface_version(),
        if xen.buffers_from_device { "/dev/xen/hypercall" } else { "locked anonymous memory" }
    );
    let driver = driver_of(args.sbdf).unwrap_or_else(|| "none".into());
    let vfio = args.backend == crate::host::Backend::Vfio;
    match (vfio, driver.as_str()) {
        (false, "pciback" | "xen-pciback") | (true, "vfio-pci") => {}
        (false, _) => return Err(RunError::NotAssignable { sbdf: args.sbdf, driver }),
        (true, _) => {
            return Err(RunError::Host(HostError::Invalid {
                sbdf: args.sbdf,
                what: format!("--backend vfio: bound to driver {driver:?}, not vfio-pci (`xenpt host-info --backend vfio` prints the commands to bind it)"),
            }))
        }
    }
    let host: Box<dyn HostDevice> = if vfio {
        let d = crate::host::vfio::VfioDevice::open_for_run(args.sbdf)?;
        // A fresh start: the function as its reset leaves it (when VFIO can reset it).
        if d.info().reset {
            d.reset()?;
        }
        Box::new(d)
    } else {
        Box::new(SysfsDevice::open(args.sbdf, true)?)
    };
    let xen_info = format!(
        "Xen {} (real, /dev/xen/privcmd), domctl interface {:#x}",
        xen.xen_version(),
        xen.domctl_interface_version()
    );
    serve(args, xen, host, xen_info, true)
}

/// Serve `host` to the guest until a signal, the guest's end, or an error; then tear down.
/// `real`: real Xen (watch xenstore for the domain's end; reset through VFIO at exit).
fn serve<X: Xen>(
    args: &RunArgs,
    mut xen: X,
    host: Box<dyn HostDevice>,
    xen_info: String,
    real: bool,
) -> Result<StopReason, RunError> {
    let vfio = args.backend == crate::host::Backend::Vfio;
    let info = xen.domain_info(args.domid).map_err(|source| RunError::Domain { domid: args.domid, source })?;
    let profile = args.profile.unwrap_or(if info.kind == GuestKind::Pvh { Profile::Pvh } else { Profile::Hvm });
    check_reset(&*host)?;
    let mut granted = Granted::default();
    if args.assign {
        if let Err(e) = do_assign(&mut xen, args.domid, &*host, &mut granted) {
            undo_assign(&mut xen, args.domid, args.sbdf, &granted);
            return Err(RunError::Assign(e));
        }
    }
    let guest_sbdf = Sbdf::new(0, 0, args.guest_slot, args.guest_function);
    let opts = DeviceOptions { permissive: args.permissive, ..DeviceOptions::new(args.domid, guest_sbdf, profile) };
    if args.permissive {
        tracing::warn!("permissive mode: guest writes to unknown registers of {} reach the device", args.sbdf);
    }
    let _pidfile = PidFile::create(args.pidfile.as_ref())?;
    let bridge = profile == Profile::Pvh && !args.no_host_bridge;
    let mut inst = match runner::start_with(&mut xen, host, opts, bridge) {
        Ok(i) => i,
        Err(e) => {
            undo_assign(&mut xen, args.domid, args.sbdf, &granted);
            return Err(e.into());
        }
    };
    // Before the ready line: the toolstack unpauses the guest only after it.
    inst.device.set_multifunction(args.multifunction);
    let result = (|| -> Result<StopReason, RunError> {
        let mut ev = EventLoop::new(&xen)?;
        ev.catch_termination_signals()?;
        if !args.no_console {
            let path = args.console.clone().unwrap_or_else(|| crate::console::default_path(args.domid, args.sbdf));
            match Console::bind(&path, ConsoleInfo::new(Some(xen_info.clone()), args.console_write)) {
                Ok(c) => {
                    tracing::info!(
                        "debug console at {} ({})",
                        path.display(),
                        if args.console_write { "read-write" } else { "read-only" }
                    );
                    ev.attach_console(c)?;
                }
                // Asked for explicitly: a failure is fatal. The default is best effort.
                Err(source) if args.console.is_some() => {
                    return Err(RunError::Console { path: path.display().to_string(), source })
                }
                Err(e) => tracing::warn!("no debug console: {}: {e}", path.display()),
            }
        }
        if let Some(fd) = args.ready_fd {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{fd}"))
                .map_err(|source| RunError::Ready { fd, source })?;
            writeln!(f, "ready {} d{} {guest_sbdf}", args.sbdf, args.domid)
                .map_err(|source| RunError::Ready { fd, source })?;
        }
        // After "ready": the name lookup reads pci.ids, which the guest need not wait for.
        let name = inst.device.name().0.to_string();
        tracing::info!(
            "serving {} [{name}] to domain {} at guest {guest_sbdf}: profile {}, permissive {}, host bridge {}",
            args.sbdf,
            args.domid,
            format!("{profile:?}").to_lowercase(),
            if args.permissive { "on" } else { "off" },
            if bridge { "presented" } else { "not presented" },
        );
        // The simulator has no xenstore: there xenpt stops with a signal.
        if real {
            match crate::xen::xenstore::Watch::new("@releaseDomain", "xenpt") {
                Ok(w) => ev.watch_domains(w)?,
                Err(e) => tracing::warn!(
                    "no xenstore watch ({}: {e}); xenpt will not notice domain {}'s death by itself",
                    crate::xen::xenstore::XENBUS_PATH,
                    args.domid
                ),
            }
        }
        loop {
            let reason = runner::serve(&mut xen, &mut inst, &mut ev)?;
            if reason != StopReason::DomainEvent {
                return Ok(reason);
            }
            // Some domain was released: is it ours? Tear down at the first sign of
            // shutdown, while Xen still accepts the unbind/unmap calls.
            match xen.domain_info(args.domid) {
                Ok(i) if !i.dying && !i.shutdown => continue,
                Ok(_) => {
                    tracing::info!("domain {} is shutting down; tearing down", args.domid);
                    return Ok(reason);
                }
                Err(e) => {
                    tracing::info!("domain {} is gone ({e}); tearing down", args.domid);
                    return Ok(reason);
                }
            }
        }
    })();
    let dying = matches!(result, Ok(StopReason::DomainEvent));
    for e in runner::shutdown(&mut xen, &mut inst) {
        // A dying domain refuses some operations: expected, not a failure.
        if dying {
            tracing::info!("teardown (domain going away): {e}");
        } else {
            tracing::warn!("teardown: {e}");
        }
    }
    undo_assign(&mut xen, args.domid, args.sbdf, &granted);
    // With VFIO the function is left as a reset leaves it for its next user.
    if vfio && real {
        match inst.device.host().reset() {
            Ok(()) => tracing::info!("{} reset through VFIO", args.sbdf),
            Err(e) => tracing::info!("no reset at exit: {e}"),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::dump::DumpDevice;

    fn corpus(name: &str) -> DumpDevice {
        let p = format!("{}/../shared/pci-corpus/{name}", env!("CARGO_MANIFEST_DIR"));
        DumpDevice::from_text(&std::fs::read_to_string(&p).unwrap()).unwrap()
    }

    #[test]
    fn a_function_left_with_msi_or_msix_enabled_is_refused_until_reset() {
        // Dumps taken from running machines: their drivers had interrupts enabled.
        let xg5 = corpus("1179_0116_xg5-nvme-ssd-controller.lspci");
        let msix_on = xg5.config_read(0xb2, 2).unwrap() & 0x8000 != 0;
        match check_reset(&xg5) {
            Err(RunError::NotReset { what, .. }) => {
                assert_eq!(what, if msix_on { "MSI-X Enable" } else { "MSI Enable" })
            }
            other => panic!("a live NVMe dump was accepted: {other:?}"),
        }
        let msg = check_reset(&xg5).unwrap_err().to_string();
        assert!(msg.contains("not reset") && msg.contains("/reset") && msg.contains("xl pci-assignable-add"), "{msg}");
        // The same function after a reset (enables clear) passes.
        let text = std::fs::read_to_string(format!(
            "{}/../shared/pci-corpus/1179_0116_xg5-nvme-ssd-controller.lspci",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let (sbdf, desc, mut bytes) = crate::host::dump::parse_dump(&text).unwrap();
        let (caps, _) = crate::config_space::caps::walk(&bytes);
        for (id, off) in caps {
            if id == CAP_ID_MSI || id == CAP_ID_MSIX {
                bytes[off as usize + 2] &= !1;
                bytes[off as usize + 3] &= !0x80;
            }
        }
        let fresh = DumpDevice::from_text(&crate::host::dump::format_dump(sbdf, &desc, &bytes)).unwrap();
        assert!(check_reset(&fresh).is_ok());
    }
}
