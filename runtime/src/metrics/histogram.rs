//! A lock-free latency histogram: fixed buckets of atomic counters, so observing costs a bucket
//! search and three relaxed atomic adds, and the hot path never takes a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds: 1 µs to 10 s, roughly ×2.5 apart. Latencies of
/// a warm wasm call (~1 µs) and of an fsync (0.5-8 ms on this project's disks) both land in
/// buckets of their own.
pub const BOUNDS_NS: [u64; 22] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A histogram of durations, in Prometheus' cumulative-bucket form when read.
#[derive(Debug)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_NS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.observe_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one duration in nanoseconds.
    pub fn observe_ns(&self, ns: u64) {
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// A point-in-time copy: cumulative counts per bound (the last is `+Inf`, the total count)
    /// and the sum in seconds.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0u64; BOUNDS_NS.len() + 1];
        let mut total = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            total += b.load(Relaxed);
            *c = total;
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_ns.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram one thread fills without atomics and adds to a shared [`Histogram`] at once
/// (a delivery lane flushes its batch's invocation times this way: no contended cache line per
/// invocation).
#[derive(Debug)]
pub struct LocalHistogram {
    buckets: [u64; BOUNDS_NS.len() + 1],
    sum_ns: u64,
}

impl Default for LocalHistogram {
    fn default() -> Self {
        LocalHistogram {
            buckets: [0; BOUNDS_NS.len() + 1],
            sum_ns: 0,
        }
    }
}

impl LocalHistogram {
    /// Records one duration.
    pub fn observe(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[BOUNDS_NS.partition_point(|&b| b < ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds everything recorded to `shared` and starts over.
    pub fn flush_into(&mut self, shared: &Histogram) {
        for (local, shared) in self.buckets.iter_mut().zip(&shared.buckets) {
            if *local > 0 {
                shared.fetch_add(*local, Relaxed);
                *local = 0;
            }
        }
        shared.sum_ns.fetch_add(self.sum_ns, Relaxed);
        self.sum_ns = 0;
    }
}

/// What a scrape reads of a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bound of [`BOUNDS_NS`], then `+Inf`.
    pub cumulative: [u64; BOUNDS_NS.len() + 1],
    /// Sum of observations, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.cumulative[BOUNDS_NS.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = Histogram::new();
        h.observe_ns(1_000); // le 1µs
        h.observe_ns(1_001); // le 2.5µs
        h.observe(Duration::from_secs(60)); // +Inf
        let mut local = LocalHistogram::default();
        local.observe(Duration::from_nanos(999));
        local.flush_into(&h);
        local.flush_into(&h); // nothing twice
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 2);
        assert_eq!(s.cumulative[1], 3);
        assert_eq!(s.cumulative[BOUNDS_NS.len() - 1], 3);
        assert_eq!(s.count(), 4);
        assert!((s.sum_seconds - 60.000_003_000).abs() < 1e-9);
    }
}
