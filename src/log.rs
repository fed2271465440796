//! Rate limiting for guest-triggerable log lines (XSA-130): a guest must never be able
//! to flood the host's logs through xenpt.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

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

/// The process's log filter, behind tracing-subscriber's reload layer so that the debug
/// console can change the level and switch the per-access trace at run time.
struct LogControl {
    handle: reload::Handle<Targets, Registry>,
    /// (level or directives as given, whether the per-access trace is on)
    state: Mutex<(String, bool)>,
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// The target of the per-request trace lines (one per served ioreq).
pub const ACCESS_TRACE_TARGET: &str = "xenpt::ioreq";

/// The filter for `level`: a plain level (error, warn, info, debug, trace, off) applies to
/// xenpt and everything else; anything else is taken as `target=level` directives
/// (RUST_LOG style, without span or field filters: a plain target filter keeps the regex
/// engine out of the binary).
pub fn filter_for(level: &str, trace: bool) -> Result<Targets, String> {
    let level = level.trim();
    let mut directives = match level.to_ascii_lowercase().as_str() {
        l @ ("error" | "warn" | "info" | "debug" | "trace" | "off") => format!("xenpt={l},{l}"),
        _ if level.is_empty() => return Err("empty log level".into()),
        _ => level.to_string(),
    };
    if trace {
        directives.push_str(&format!(",{ACCESS_TRACE_TARGET}=trace"));
    }
    directives.parse::<Targets>().map_err(|e| format!("bad log level {level:?}: {e}"))
}

/// Install the process-wide logger on stderr (no colours unless stderr is a terminal), with
/// a reloadable filter. An invalid `level` falls back to `warn`. Later calls do nothing.
pub fn init(level: &str) {
    use std::io::IsTerminal;
    let (filter, level) = match filter_for(level, false) {
        Ok(f) => (f, level.to_string()),
        Err(_) => (Targets::new().with_default(tracing::Level::WARN), "warn".to_string()),
    };
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr);
    if tracing_subscriber::registry().with(layer).with(fmt).try_init().is_ok() {
        let _ = CONTROL.set(LogControl { handle, state: Mutex::new((level, false)) });
    }
}

const NOT_RELOADABLE: &str = "not supported in this process (the logger was not installed by xenpt::log::init)";

fn reload_with(change: impl FnOnce(&mut (String, bool))) -> Result<String, String> {
    let c = CONTROL.get().ok_or(NOT_RELOADABLE)?;
    let mut st = c.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = st.clone();
    change(&mut next);
    let filter = filter_for(&next.0, next.1)?;
    let shown = filter.to_string();
    c.handle.reload(filter).map_err(|e| format!("reloading the log filter: {e}"))?;
    *st = next;
    Ok(shown)
}

/// Change the log level (or directives) at run time. Returns the filter now in effect.
pub fn set_level(level: &str) -> Result<String, String> {
    reload_with(|s| s.0 = level.trim().to_string())
}

/// Switch the per-access trace (every served ioreq at trace level, target
/// [`ACCESS_TRACE_TARGET`]) on or off, independently of the level. Returns the filter.
pub fn set_trace(on: bool) -> Result<String, String> {
    reload_with(|s| s.1 = on)
}

/// The level as last set and whether the per-access trace is on, if the logger is
/// reloadable.
pub fn current() -> Option<(String, bool)> {
    CONTROL.get().map(|c| c.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
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

    #[test]
    fn log_filters_from_levels_and_directives() {
        assert_eq!(filter_for("debug", false).unwrap().to_string(), "xenpt=debug,debug");
        // The most specific directive comes first.
        assert_eq!(filter_for("WARN", true).unwrap().to_string(), "xenpt::ioreq=trace,xenpt=warn,warn");
        assert_eq!(filter_for("xenpt::config=debug,info", false).unwrap().to_string(), "xenpt::config=debug,info");
        assert!(filter_for("", false).is_err());
        assert!(filter_for("xenpt=loud", false).is_err());
    }
}
