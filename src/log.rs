//! Rate limiting for guest-triggerable log lines (XSA-130): a guest must never be able
//! to flood the host's logs through xenpt.

use std::time::{Duration, Instant};

/// Allows `burst` lines per `window`; counts what it suppressed and reports the count with
/// the next line it allows.
#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    burst: u32,
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
    pub total_suppressed: u64,
}

impl RateLimit {
    pub const fn new(burst: u32, window: Duration) -> Self {
        RateLimit { window, burst, start: None, used: 0, suppressed: 0, total_suppressed: 0 }
    }

    /// Default for guest-triggerable warnings: 10 lines per 10 seconds.
    pub const fn guest() -> Self {
        Self::new(10, Duration::from_secs(10))
    }

    /// Returns Some(number suppressed since the last allowed line) if a line may be logged.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    pub fn allow_at(&mut self, now: Instant) -> Option<u64> {
        match self.start {
            Some(s) if now.duration_since(s) < self.window => {}
            _ => {
                self.start = Some(now);
                self.used = 0;
            }
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            self.total_suppressed += 1;
            None
        }
    }
}

/// Log a guest-triggerable warning through a [`RateLimit`].
#[macro_export]
macro_rules! guest_warn {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(n) = $limit.allow() {
            if n > 0 {
                tracing::warn!(target: "xenpt::guest", suppressed = n, $($arg)+);
            } else {
                tracing::warn!(target: "xenpt::guest", $($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xsa_130_guest_triggered_lines_are_rate_limited() {
        let mut r = RateLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| r.allow_at(t0).is_some()).count();
        assert_eq!(allowed, 3);
        assert_eq!(r.total_suppressed, 997);
        assert_eq!(r.allow_at(t0 + Duration::from_secs(11)), Some(997), "the next window reports what was dropped");
    }
}
