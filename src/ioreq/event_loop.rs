//! The event loop: one mio poll over the event-channel fd and a waker (stop requests;
//! signals and the console join later). No timers and no polling: an idle guest costs
//! zero wake-ups.

use std::os::fd::RawFd;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::{IoHandler, IoreqServer};
use crate::xen::{Xen, XenError};

const EVTCHN: Token = Token(0);
const STOP: Token = Token(1);

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("event loop: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Xen(#[from] XenError),
}

pub struct EventLoop {
    poll: Poll,
    waker: Arc<Waker>,
    evtchn_fd: RawFd,
}

impl EventLoop {
    pub fn new(xen: &dyn Xen) -> Result<Self, LoopError> {
        let poll = Poll::new()?;
        let fd = xen.evtchn_fd();
        poll.registry().register(&mut SourceFd(&fd), EVTCHN, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
        Ok(EventLoop { poll, waker, evtchn_fd: fd })
    }

    /// A handle another thread uses to stop the loop.
    pub fn stopper(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Serve until stopped. The event-channel fd is edge-triggered in mio, so every
    /// readiness drains it completely (IoreqServer::poll reads until empty).
    pub fn run(
        &mut self,
        xen: &mut dyn Xen,
        server: &mut IoreqServer,
        handler: &mut dyn IoHandler,
    ) -> Result<(), LoopError> {
        let mut events = Events::with_capacity(8);
        // Anything that arrived before registration (Xen's bind-time pending event).
        server.poll(xen, handler)?;
        loop {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in events.iter() {
                match ev.token() {
                    EVTCHN => {
                        server.poll(xen, handler)?;
                    }
                    STOP => return Ok(()),
                    _ => {}
                }
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        let _ = self.poll.registry().deregister(&mut SourceFd(&self.evtchn_fd));
    }
}
