//! The event loop: one mio poll over the event-channel fd, a waker (stop requests from
//! other threads), the termination signals (SIGTERM, SIGINT, SIGHUP, delivered through a
//! self-pipe) and, when attached, the debug console's listener and client sockets. No
//! timers and no polling: an idle guest costs zero wake-ups. (A console client with work
//! left after its per-turn budget makes the next poll non-blocking until it is served.)

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::SigId;

use super::{IoHandler, IoreqServer};
use crate::console::{Console, Inspect};
use crate::xen::{epoll_level_triggered, Readiness, Xen, XenError};

const EVTCHN: Token = Token(0);
const STOP: Token = Token(1);
const CONSOLE: Token = Token(2);
const WATCH: Token = Token(3);
const SIGNAL_BASE: usize = 16;
/// Console clients get tokens from here up.
const CONSOLE_CLIENT_BASE: usize = 1024;

/// The signals that make xenpt tear down and exit.
pub const TERMINATION_SIGNALS: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("event loop: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Xen(#[from] XenError),
}

/// Why the loop returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Another thread asked (the waker).
    Requested,
    /// A termination signal arrived.
    Signal(i32),
    /// The xenstore watch fired (@releaseDomain: some domain went away); the caller checks
    /// whether it was the guest and serves on if not.
    DomainEvent,
}

struct SignalPipe {
    signal: i32,
    rx: UnixStream,
    id: SigId,
}

pub struct EventLoop {
    poll: Poll,
    waker: Arc<Waker>,
    evtchn_fd: RawFd,
    signals: Vec<SignalPipe>,
    console: Option<Console>,
    watch: Option<crate::xen::xenstore::Watch>,
    /// Times the loop woke up (for the idle budget: an idle guest must cost none).
    wakeups: Arc<std::sync::atomic::AtomicU64>,
}

/// What a run serves: a plain handler, or one the console can look into.
enum Target<'a> {
    Plain(&'a mut dyn IoHandler),
    Inspect(&'a mut dyn Inspect),
}

impl Target<'_> {
    fn handler(&mut self) -> &mut dyn IoHandler {
        match self {
            Target::Plain(h) => &mut **h,
            Target::Inspect(i) => i.handler(),
        }
    }

    fn device(&mut self) -> Option<&mut crate::device::DeviceModel> {
        match self {
            Target::Plain(_) => None,
            Target::Inspect(i) => i.device(),
        }
    }
}

impl EventLoop {
    pub fn new(xen: &dyn Xen) -> Result<Self, LoopError> {
        let poll = Poll::new()?;
        let fd = xen.evtchn_fd();
        poll.registry().register(&mut SourceFd(&fd), EVTCHN, Interest::READABLE)?;
        // mio registers edge-triggered; level-triggered spares a read per wake-up
        // (Readiness::Level). Undone with the registration on drop.
        epoll_level_triggered(poll.as_raw_fd(), fd, EVTCHN.0 as u64)?;
        let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
        Ok(EventLoop {
            poll,
            waker,
            evtchn_fd: fd,
            signals: Vec::new(),
            console: None,
            watch: None,
            wakeups: Arc::default(),
        })
    }

    /// Learn of domain deaths without polling: a xenstore watch (see crate::xen::xenstore)
    /// makes `run` return `StopReason::DomainEvent` whenever it fires.
    pub fn watch_domains(&mut self, watch: crate::xen::xenstore::Watch) -> Result<(), LoopError> {
        let fd = watch.fd();
        self.poll.registry().register(&mut SourceFd(&fd), WATCH, Interest::READABLE)?;
        self.watch = Some(watch);
        Ok(())
    }

    /// Serve the debug console from this loop (see crate::console).
    pub fn attach_console(&mut self, mut console: Console) -> Result<(), LoopError> {
        console.register(self.poll.registry(), CONSOLE, CONSOLE_CLIENT_BASE)?;
        self.console = Some(console);
        Ok(())
    }

    pub fn console(&self) -> Option<&Console> {
        self.console.as_ref()
    }

    /// Route SIGTERM, SIGINT and SIGHUP into the loop: each makes `run` return
    /// `StopReason::Signal`, so the caller tears down in order. Undone on drop.
    pub fn catch_termination_signals(&mut self) -> Result<(), LoopError> {
        for (i, &signal) in TERMINATION_SIGNALS.iter().enumerate() {
            let (rx, tx) = UnixStream::pair()?;
            rx.set_nonblocking(true)?;
            tx.set_nonblocking(true)?;
            let id = signal_hook::low_level::pipe::register(signal, tx)?;
            use std::os::fd::AsRawFd;
            let rfd = rx.as_raw_fd();
            self.poll.registry().register(&mut SourceFd(&rfd), Token(SIGNAL_BASE + i), Interest::READABLE)?;
            self.signals.push(SignalPipe { signal, rx, id });
        }
        Ok(())
    }

    /// A counter of the loop's wake-ups, readable from another thread.
    pub fn wakeup_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.wakeups.clone()
    }

    /// A handle another thread uses to stop the loop.
    pub fn stopper(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Serve until stopped. The event-channel fd is level-triggered here, so each readiness
    /// is served up to a short read of it (IoreqServer::poll_as, Readiness::Level); what
    /// fired meanwhile is reported by the next poll. A console, if
    /// attached, answers the commands that need no device model.
    pub fn run(
        &mut self,
        xen: &mut dyn Xen,
        server: &mut IoreqServer,
        handler: &mut dyn IoHandler,
    ) -> Result<StopReason, LoopError> {
        self.serve(xen, server, Target::Plain(handler))
    }

    /// As [`EventLoop::run`], with the console looking into the served device model.
    pub fn run_inspect(
        &mut self,
        xen: &mut dyn Xen,
        server: &mut IoreqServer,
        target: &mut dyn Inspect,
    ) -> Result<StopReason, LoopError> {
        self.serve(xen, server, Target::Inspect(target))
    }

    fn serve(
        &mut self,
        xen: &mut dyn Xen,
        server: &mut IoreqServer,
        mut target: Target,
    ) -> Result<StopReason, LoopError> {
        let mut events = Events::with_capacity(64);
        // Anything that arrived before registration (Xen's bind-time pending event).
        server.poll_as(xen, target.handler(), Readiness::Level)?;
        loop {
            let backlog = self.console.as_ref().is_some_and(|c| c.has_backlog());
            match self.poll.poll(&mut events, backlog.then_some(Duration::ZERO)) {
                Ok(()) => {
                    self.wakeups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in events.iter() {
                match ev.token() {
                    EVTCHN => {
                        server.poll_as(xen, target.handler(), Readiness::Level)?;
                    }
                    STOP => return Ok(StopReason::Requested),
                    WATCH => {
                        if let Some(w) = self.watch.as_mut() {
                            if w.fired()? {
                                return Ok(StopReason::DomainEvent);
                            }
                        }
                    }
                    CONSOLE => {
                        if let Some(c) = self.console.as_mut() {
                            c.accept(self.poll.registry());
                        }
                    }
                    t @ Token(n) if n >= CONSOLE_CLIENT_BASE => {
                        if let Some(c) = self.console.as_mut() {
                            c.client_ready(self.poll.registry(), t, target.device(), Some(server.stats));
                        }
                    }
                    Token(t) if t >= SIGNAL_BASE => {
                        if let Some(s) = self.signals.get_mut(t - SIGNAL_BASE) {
                            let mut buf = [0u8; 16];
                            while matches!(s.rx.read(&mut buf), Ok(n) if n > 0) {}
                            return Ok(StopReason::Signal(s.signal));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(c) = self.console.as_mut() {
                if c.has_backlog() {
                    c.serve_backlog(self.poll.registry(), target.device(), Some(server.stats));
                }
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        let _ = self.poll.registry().deregister(&mut SourceFd(&self.evtchn_fd));
        if let Some(w) = self.watch.take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&w.fd()));
        }
        for s in self.signals.drain(..) {
            signal_hook::low_level::unregister(s.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::sim::Sim;
    use crate::xen::GuestKind;

    struct Nothing;
    impl IoHandler for Nothing {
        fn handle(&mut self, _: &mut dyn Xen, _: super::super::Request) -> u64 {
            0
        }
    }

    /// An enabled server for a one-vCPU HVM guest, and a loop over its event channel.
    fn enabled() -> (Sim, crate::xen::sim::SimXen, IoreqServer, EventLoop) {
        let sim = Sim::default();
        let d = sim.create_domain(GuestKind::Hvm, 1, 4096);
        let mut x = sim.xen();
        let mut server = IoreqServer::create(&mut x, d, 1).unwrap();
        server.enable(&mut x).unwrap();
        let ev = EventLoop::new(&x).unwrap();
        (sim, x, server, ev)
    }

    #[test]
    fn sighup_stops_the_loop_with_its_reason() {
        let (_sim, mut x, mut server, mut ev) = enabled();
        ev.catch_termination_signals().unwrap();
        // SIGHUP only: SIGTERM/SIGINT would hit the test harness if raced.
        signal_hook::low_level::raise(SIGHUP).unwrap();
        assert_eq!(ev.run(&mut x, &mut server, &mut Nothing).unwrap(), StopReason::Signal(SIGHUP));
        assert!(server.destroy(&mut x).is_empty());
    }

    #[test]
    fn a_waker_from_another_thread_stops_the_loop() {
        let (_sim, mut x, mut server, mut ev) = enabled();
        let w = ev.stopper();
        std::thread::spawn(move || w.wake().unwrap());
        assert_eq!(ev.run(&mut x, &mut server, &mut Nothing).unwrap(), StopReason::Requested);
    }
}
