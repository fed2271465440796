//! The simulator's side: one thread per connected device model, each with its own
//! [`SimXen`] handle (its own event-channel endpoint, as a process opening /dev/xen/evtchn
//! has), serving requests until the device model closes the socket.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::client::{bar_from, bar_words, range_kind};
use super::{op, recv, send, send_fd, Msg, PROTOCOL};
use crate::host::nvme::{EmulatedNvme, NvmeHost};
use crate::host::HostDevice;
use crate::pci::Sbdf;
use crate::xen::sim::{Sim, SimXen};
use crate::xen::{BufIoreq, Errno, GuestKind, IoRange, PirqMap, PtIrq, Xen, XenError};

/// A simulator serving device models in other processes.
pub struct Server {
    pub sim: Sim,
    devices: Arc<BTreeMap<Sbdf, EmulatedNvme>>,
}

impl Server {
    /// Serve `sim` and its emulated NVMe functions (added to the machine already).
    pub fn new(sim: Sim, devices: impl IntoIterator<Item = EmulatedNvme>) -> Self {
        sim.use_memfd_pages();
        let devices = devices.into_iter().map(|d| (d.sbdf(), d)).collect();
        Server { sim, devices: Arc::new(devices) }
    }

    /// Accept device models on `listener` until it fails; a thread per connection.
    pub fn spawn(self, listener: UnixListener) -> JoinHandle<()> {
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    // Out of fds, or a client gone before accept: keep serving the others.
                    Err(e) => {
                        tracing::warn!("simulator: accept: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                };
                let (sim, devices) = (self.sim.clone(), self.devices.clone());
                let spawned = std::thread::Builder::new()
                    .name("sim-conn".into())
                    .stack_size(256 << 10)
                    .spawn(move || serve_connection(stream, sim, &devices));
                if let Err(e) = spawned {
                    tracing::warn!("simulator: no thread for a new device model: {e}");
                }
            }
        })
    }
}

/// A reply: errno (0 = success), values, message, fds to pass after it.
struct Reply<'a> {
    words: Vec<u64>,
    text: String,
    fds: Vec<std::os::fd::BorrowedFd<'a>>,
}

fn ok(values: impl IntoIterator<Item = u64>) -> Reply<'static> {
    let mut words = vec![0];
    words.extend(values);
    Reply { words, text: String::new(), fds: Vec::new() }
}

fn fail(errno: Errno, mut text: String) -> Reply<'static> {
    if text.len() > super::MAX_TEXT {
        let mut cut = super::MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Reply { words: vec![errno.0 as u64], text, fds: Vec::new() }
}

fn xen<T>(r: Result<T, XenError>, f: impl FnOnce(T) -> Vec<u64>) -> Reply<'static> {
    match r {
        Ok(v) => ok(f(v)),
        Err(e) => fail(e.errno, e.to_string()),
    }
}

fn serve_connection(stream: UnixStream, sim: Sim, devices: &BTreeMap<Sbdf, EmulatedNvme>) {
    let mut x = sim.xen();
    let mut hosts: BTreeMap<Sbdf, NvmeHost> = BTreeMap::new();
    while let Ok(m) = recv(&stream) {
        let w = |i: usize| m.word(i);
        let code = w(0);
        match code {
            op::HELLO => {
                let proto_ok = w(1) == PROTOCOL;
                let r = if proto_ok { ok([PROTOCOL]) } else { fail(Errno::EINVAL, String::new()) };
                if send(&stream, &r.words, "").is_err()
                    || !proto_ok
                    || send_fd(&stream, x.evtchn_socket().as_fd()).is_err()
                {
                    break;
                }
                continue;
            }
            // One-way: no reply (the evtchn device's notify ioctl and unmask write).
            op::EVTCHN_NOTIFY => {
                if let Err(e) = x.evtchn_notify(w(1) as u32) {
                    tracing::debug!("simulator: {e}");
                }
                continue;
            }
            op::EVTCHN_UNMASK => {
                let _ = x.evtchn_unmask(w(1) as u32);
                continue;
            }
            _ => {}
        }
        let pages;
        let r = if code == op::MAP_IOREQ_PAGES {
            match x.map_ioreq_pages(w(1) as u16, w(2) as u16) {
                Ok(p) => {
                    pages = p;
                    let buf = pages.bufioreq.is_some();
                    let mut r =
                        ok([buf as u64, pages.bufioreq_port.is_some() as u64, pages.bufioreq_port.unwrap_or(0) as u64]);
                    match (pages.ioreq.fd(), pages.bufioreq.as_ref().map(|p| p.fd())) {
                        (Some(a), None) => r.fds.push(a),
                        (Some(a), Some(Some(b))) => r.fds.extend([a, b]),
                        _ => r = fail(Errno::EINVAL, "the simulator's ioreq pages are not shareable".into()),
                    }
                    r
                }
                Err(e) => fail(e.errno, e.to_string()),
            }
        } else if code >= op::HOST_OPEN {
            host_op(&m, devices, &mut hosts)
        } else {
            xen_op(&mut x, &m)
        };
        if send(&stream, &r.words, &r.text).is_err() {
            break;
        }
        if r.fds.iter().any(|fd| send_fd(&stream, *fd).is_err()) {
            break;
        }
    }
    // Dropping `x` unbinds its ports, as closing /dev/xen/evtchn does; its ioreq servers
    // stay (Xen does not notice a device model's death).
}

fn xen_op(x: &mut SimXen, m: &Msg) -> Reply<'static> {
    let w = |i: usize| m.word(i);
    let d = w(1) as u16;
    let sbdf = |i: usize| Sbdf::from_u32(w(i) as u32);
    let opt = |i: usize| (w(i) != 0).then_some(w(i + 1) as u32);
    match w(0) {
        op::VERSION => xen(x.version(), |v| vec![v.major as u64, v.minor as u64]),
        op::DOMAIN_INFO => xen(x.domain_info(d), |i| {
            let kind = match i.kind {
                GuestKind::Pv => 0,
                GuestKind::Hvm => 1,
                GuestKind::Pvh => 2,
            };
            let f = i.emulation_flags;
            vec![kind, i.vcpus as u64, i.dying as u64, i.shutdown as u64, f.is_some() as u64, f.unwrap_or(0) as u64]
        }),
        op::CREATE_IOREQ_SERVER => {
            let buf = match w(2) {
                0 => BufIoreq::Off,
                1 => BufIoreq::Legacy,
                _ => BufIoreq::Atomic,
            };
            xen(x.create_ioreq_server(d, buf), |id| vec![id as u64])
        }
        op::MAP_IO_RANGE | op::UNMAP_IO_RANGE => {
            let Some(kind) = range_kind(w(3)) else { return fail(Errno::EINVAL, String::new()) };
            let r = IoRange { kind, start: w(4), end: w(5) };
            let res = if w(0) == op::MAP_IO_RANGE {
                x.map_io_range(d, w(2) as u16, r)
            } else {
                x.unmap_io_range(d, w(2) as u16, r)
            };
            xen(res, |_| vec![])
        }
        op::SET_IOREQ_SERVER_STATE => xen(x.set_ioreq_server_state(d, w(2) as u16, w(3) != 0), |_| vec![]),
        op::DESTROY_IOREQ_SERVER => xen(x.destroy_ioreq_server(d, w(2) as u16), |_| vec![]),
        op::EVTCHN_BIND_INTERDOMAIN => xen(x.evtchn_bind_interdomain(d, w(2) as u32), |p| vec![p as u64]),
        op::EVTCHN_UNBIND => xen(x.evtchn_unbind(w(1) as u32), |_| vec![]),
        op::MEMORY_MAPPING => xen(x.memory_mapping(d, w(2), w(3), w(4), w(5) != 0), |n| vec![n]),
        op::IOPORT_MAPPING => xen(x.ioport_mapping(d, w(2) as u32, w(3) as u32, w(4) as u32, w(5) != 0), |_| vec![]),
        op::MAP_PIRQ => {
            let req = match w(2) {
                0 => PirqMap::Msi { sbdf: sbdf(3), pirq: opt(4) },
                1 => PirqMap::Msix { sbdf: sbdf(3), entry: w(4) as u16, table_base: w(5), pirq: opt(6) },
                2 => PirqMap::MultiMsi { sbdf: sbdf(3), count: w(4) as u32 },
                3 => PirqMap::Gsi { gsi: w(3) as u32, pirq: opt(4) },
                _ => return fail(Errno::EINVAL, String::new()),
            };
            xen(x.map_pirq(d, req), |p| vec![p.pirq as u64, p.count as u64])
        }
        op::UNMAP_PIRQ => xen(x.unmap_pirq(d, w(2) as u32), |_| vec![]),
        op::BIND_PT_IRQ | op::UNBIND_PT_IRQ => {
            let bind = match w(2) {
                0 => PtIrq::Msi { pirq: w(3) as u32, gvec: w(4) as u8, gflags: w(5) as u32, gtable: w(6) },
                1 => PtIrq::PciIntx { pirq: w(3) as u32, bus: w(4) as u8, device: w(5) as u8, intx: w(6) as u8 },
                _ => return fail(Errno::EINVAL, String::new()),
            };
            let res = if w(0) == op::BIND_PT_IRQ { x.bind_pt_irq(d, bind) } else { x.unbind_pt_irq(d, bind) };
            xen(res, |_| vec![])
        }
        op::IOMEM_PERMISSION => xen(x.iomem_permission(d, w(2), w(3), w(4) != 0), |_| vec![]),
        op::IOPORT_PERMISSION => xen(x.ioport_permission(d, w(2) as u32, w(3) as u32, w(4) != 0), |_| vec![]),
        op::IRQ_PERMISSION => xen(x.irq_permission(d, w(2) as u32, w(3) != 0), |_| vec![]),
        op::ASSIGN_DEVICE => xen(x.assign_device(d, sbdf(2), w(3) != 0), |_| vec![]),
        op::GSI_PERMISSION => xen(x.gsi_permission(d, w(2) as u32, w(3) != 0), |_| vec![]),
        op::PCIDEV_GSI => xen(x.pcidev_gsi(sbdf(1)), |g| vec![g as u64]),
        other => fail(Errno::EINVAL, format!("unknown operation {other}")),
    }
}

fn host_op(m: &Msg, devices: &BTreeMap<Sbdf, EmulatedNvme>, hosts: &mut BTreeMap<Sbdf, NvmeHost>) -> Reply<'static> {
    let w = |i: usize| m.word(i);
    let sbdf = Sbdf::from_u32(w(1) as u32);
    if w(0) == op::HOST_OPEN {
        let Some(d) = devices.get(&sbdf) else {
            return fail(Errno::ENODEV, format!("no device {sbdf} in the simulator"));
        };
        let h = d.host();
        let irq = h.irq();
        let r = ok([h.config_size() as u64, irq.is_some() as u64, irq.unwrap_or(0) as u64]);
        hosts.insert(sbdf, h);
        return r;
    }
    let Some(h) = hosts.get(&sbdf) else {
        return fail(Errno::ENODEV, format!("{sbdf} was not opened on this connection"));
    };
    let host = |r: Result<Vec<u64>, crate::host::HostError>| match r {
        Ok(v) => ok(v),
        Err(e) => fail(Errno(libc::EIO), e.to_string()),
    };
    match w(0) {
        op::HOST_CONFIG_READ => host(h.config_read(w(2) as u16, w(3) as u8).map(|v| vec![v as u64])),
        op::HOST_CONFIG_READ_ALL => {
            let mut buf = vec![0u8; (w(2) as usize).min(h.config_size()) & !3];
            host(h.config_read_all(&mut buf).map(|_| {
                buf.chunks(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b[..c.len()].copy_from_slice(c);
                        u64::from_le_bytes(b)
                    })
                    .collect()
            }))
        }
        op::HOST_CONFIG_WRITE => host(h.config_write(w(2) as u16, w(3) as u8, w(4) as u32).map(|_| vec![])),
        op::HOST_RESOURCES => host(h.resources().map(|r| {
            let mut v = Vec::with_capacity(42);
            for b in r.bars.iter().chain(std::iter::once(&r.rom)) {
                match b {
                    Some(b) => {
                        v.push(1);
                        v.extend(bar_words(b));
                    }
                    None => v.extend([0; 6]),
                }
            }
            v
        })),
        op::HOST_IDS => host(h.ids().map(|i| {
            vec![
                i.vendor as u64,
                i.device as u64,
                i.subsys_vendor as u64,
                i.subsys_device as u64,
                i.class as u64,
                i.revision as u64,
            ]
        })),
        op::HOST_BAR_READ => host(h.bar_read(w(2) as u8, w(3), w(4) as u8).map(|v| vec![v])),
        op::HOST_BAR_WRITE => host(h.bar_write(w(2) as u8, w(3), w(4) as u8, w(5)).map(|_| vec![])),
        op::HOST_PAGE_SHARERS => {
            let bar = bar_from(m.words.get(2..).unwrap_or(&[]));
            host(h.page_sharers(&bar).map(|v| v.iter().map(|s| s.to_u32() as u64).collect()))
        }
        op::HOST_RESET => host(h.reset().map(|_| vec![])),
        other => fail(Errno::EINVAL, format!("unknown operation {other}")),
    }
}
