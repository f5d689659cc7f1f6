//! Per-plugin counters and a call-time histogram, lock-free so the call path only pays
//! a few atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds (µs) of the call-time histogram buckets; the last bucket is open.
pub const BUCKETS_US: [u64; 10] = [5, 10, 25, 50, 100, 250, 1_000, 10_000, 100_000, 1_000_000];

/// Counters of one deployed plugin.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    calls: AtomicU64,
    records: AtomicU64,
    errors: AtomicU64,
    traps: AtomicU64,
    call_time_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
}

/// A point-in-time copy of [`PluginMetrics`].
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Records passed in.
    pub records: u64,
    /// Calls that returned an error or bad output.
    pub errors: u64,
    /// Calls that trapped (panic, deadline, memory cap).
    pub traps: u64,
    /// Total time in calls, µs.
    pub call_time_us: u64,
    /// (upper bound µs or None for the open bucket, count).
    pub histogram: Vec<(Option<u64>, u64)>,
}

/// How one call ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Returned a usable result.
    Ok,
    /// Returned an error or unusable output.
    Error,
    /// Trapped.
    Trap,
}

impl PluginMetrics {
    /// Counts one call of `records` records that took `elapsed`.
    pub fn record(&self, records: usize, elapsed: Duration, outcome: Outcome) {
        let us = elapsed.as_micros() as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.call_time_us.fetch_add(us, Ordering::Relaxed);
        match outcome {
            Outcome::Ok => {}
            Outcome::Error => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Trap => {
                self.traps.fetch_add(1, Ordering::Relaxed);
            }
        }
        let bucket = BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            call_time_us: self.call_time_us.load(Ordering::Relaxed),
            histogram: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, c)| (BUCKETS_US.get(i).copied(), c.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_their_buckets() {
        let m = PluginMetrics::default();
        m.record(10, Duration::from_micros(3), Outcome::Ok);
        m.record(1, Duration::from_micros(30), Outcome::Error);
        m.record(1, Duration::from_secs(5), Outcome::Trap);
        let s = m.snapshot();
        assert_eq!((s.calls, s.records, s.errors, s.traps), (3, 12, 1, 1));
        assert_eq!(s.histogram[0], (Some(5), 1));
        assert_eq!(s.histogram[3], (Some(50), 1));
        assert_eq!(s.histogram[10], (None, 1));
    }
}
