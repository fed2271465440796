//! Request-handling latency, as a histogram cheap enough to keep on for every request:
//! power-of-two buckets of nanoseconds (bucket k holds 2^k <= t < 2^(k+1)), one counter
//! bump per request and no allocation. Percentiles are read off as the upper bound of the
//! bucket they fall in, so they are exact to within a factor of two, which is what an
//! operator needs to tell "microseconds" from "a hypercall stalled for milliseconds".

use std::time::Duration;

const BUCKETS: usize = 40; // 2^40 ns ~ 18 minutes: nothing real is slower

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    counts: [u64; BUCKETS],
    max_ns: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { counts: [0; BUCKETS], max_ns: 0 }
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let k = (63 - ns.max(1).leading_zeros()) as usize;
        self.counts[k.min(BUCKETS - 1)] += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The smallest bucket bound below which at least `p` percent of the requests fall
    /// (capped by the largest value seen); `None` with no requests.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let want = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                // The last bucket is open-ended: its bound is the largest value seen.
                let bound = if k + 1 >= BUCKETS { u64::MAX } else { (1u64 << (k + 1)) - 1 };
                return Some(Duration::from_nanos(bound.min(self.max_ns)));
            }
        }
        Some(self.max())
    }

    /// "p50 <= 2.0us, p90 <= 4.1us, p99 <= 16.4us, max 20.3us over 1234 requests".
    pub fn summary(&self) -> String {
        let n = self.count();
        if n == 0 {
            return "no requests yet".into();
        }
        let f = |d: Option<Duration>| fmt(d.unwrap_or_default());
        format!(
            "p50 <= {}, p90 <= {}, p99 <= {}, max {} over {n} requests",
            f(self.percentile(50.0)),
            f(self.percentile(90.0)),
            f(self.percentile(99.0)),
            fmt(self.max())
        )
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_bucket_bounds() {
        let mut l = Latency::default();
        assert_eq!(l.percentile(50.0), None);
        assert_eq!(l.summary(), "no requests yet");
        for _ in 0..90 {
            l.record(Duration::from_nanos(1500)); // bucket 2^10..2^11
        }
        for _ in 0..9 {
            l.record(Duration::from_nanos(40_000)); // bucket 2^15..2^16
        }
        l.record(Duration::from_millis(3));
        assert_eq!(l.count(), 100);
        assert_eq!(l.percentile(50.0), Some(Duration::from_nanos(2047)));
        assert_eq!(l.percentile(90.0), Some(Duration::from_nanos(2047)));
        assert_eq!(l.percentile(99.0), Some(Duration::from_nanos(65_535)));
        assert_eq!(l.percentile(100.0), Some(Duration::from_millis(3)), "capped by the maximum seen");
        assert_eq!(l.summary(), "p50 <= 2.0us, p90 <= 2.0us, p99 <= 65.5us, max 3.0ms over 100 requests");
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut l = Latency::default();
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(u64::MAX));
        assert_eq!(l.count(), 2);
        assert_eq!(l.percentile(50.0), Some(Duration::from_nanos(1)));
        assert!(l.percentile(100.0).unwrap() >= Duration::from_secs(1 << 30));
    }
}
