//! A histogram of durations with fixed buckets that records with relaxed atomic adds alone.
//!
//! prometheus-client's own `Histogram` takes a mutex for every observation, and the delivery path
//! takes no lock for metrics. An observation here is a search of [`BOUNDS_NS`] and two relaxed adds
//! (its bucket, the sum); a scrape reads the buckets one by one. The count is the sum of the
//! buckets read, so `_count` and the `+Inf` bucket always agree; the sum may miss an observation
//! that landed between the reads, which Prometheus tolerates (it only ever rates it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds: 10 µs to 1 s. A line is usually delivered within
/// a millisecond (a deferred publish waits at most 1 ms for its round, see `hub/deliver.rs`);
/// the tail shows a worker that was busy or a room too big for one round.
pub(crate) const BOUNDS_NS: [u64; 15] = [
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
    1_000_000_000,
];

/// Observations per bucket (not cumulative; the last is above every bound) and their sum.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

/// What a scrape read: buckets as (upper bound in seconds, observations in it, not cumulative),
/// the last one's bound infinite, as prometheus-client's encoders take them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) count: u64,
    pub(crate) sum_secs: f64,
}

impl Latency {
    /// Records one duration.
    pub(crate) fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // The first bound at or above ns: buckets are "less than or equal" (`le`).
        let i = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Reads every bucket and the sum.
    pub(crate) fn read(&self) -> Reading {
        let bounds = BOUNDS_NS
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        Reading {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_secs: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = Latency::default();
        for us in [0, 10, 11, 999, 1000, 5_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let r = h.read();
        assert_eq!(r.count, 6);
        assert_eq!(r.buckets.len(), BOUNDS_NS.len() + 1);
        let count_at = |secs: f64| r.buckets.iter().find(|(b, _)| *b == secs).unwrap().1;
        // 0 and exactly 10 µs are "le 10 µs"; 11 µs is the next bucket's.
        assert_eq!(count_at(0.00001), 2);
        assert_eq!(count_at(0.000025), 1);
        assert_eq!(count_at(0.001), 2);
        // 5 s is beyond every bound.
        assert_eq!(r.buckets.last(), Some(&(f64::INFINITY, 1)));
        let expected = (10 + 11 + 999 + 1000 + 5_000_000) as f64 / 1e6;
        assert!((r.sum_secs - expected).abs() < 1e-9, "{}", r.sum_secs);
    }

    #[test]
    fn bounds_increase() {
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }
}
