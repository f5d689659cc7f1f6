//! A bounded window of recent latency samples, for the operator's view of a pipeline
//! that copies records (a mirror, a transform): how long a record took from its
//! timestamp to being written, as the median and 99th percentile of the last few
//! thousand records.
//!
//! Samples are pushed on the write path (two per written batch, its first and last
//! record) and sorted only when someone asks, so the cost of a scrape nobody makes is
//! nothing and the cost of a write is a push into a ring.

use std::collections::VecDeque;

/// Samples kept: enough for a stable 99th percentile, small enough to sort per scrape.
const SAMPLES: usize = 4096;

/// The last [`SAMPLES`] latencies, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    samples: VecDeque<i64>,
}

impl LatencyWindow {
    /// Adds one sample; a negative one (a record stamped ahead of this broker's clock)
    /// counts as zero rather than skewing the percentiles down.
    pub fn record(&mut self, ms: i64) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(ms.max(0));
    }

    /// Records the latency of a written batch: `now` minus the timestamps of its first
    /// and last records, which bound the batch's spread without a sample per record.
    pub fn record_batch(&mut self, now: i64, first: i64, last: i64) {
        self.record(now - first);
        self.record(now - last);
    }

    /// The median and 99th percentile, or `None` before the first sample.
    pub fn p50_p99(&self) -> Option<(i64, i64)> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<i64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_samples_and_the_window_slides() {
        let mut window = LatencyWindow::default();
        assert_eq!(window.p50_p99(), None);
        for ms in 1..=100 {
            window.record(ms);
        }
        assert_eq!(window.p50_p99(), Some((51, 99)));
        // A full window of slow samples pushes the fast ones out.
        for _ in 0..SAMPLES {
            window.record(1000);
        }
        assert_eq!(window.p50_p99(), Some((1000, 1000)));
        window.record(-5);
        assert_eq!(window.samples.back(), Some(&0));
    }

    #[test]
    fn a_batch_is_sampled_by_its_first_and_last_record() {
        let mut window = LatencyWindow::default();
        window.record_batch(10_000, 9_000, 9_990);
        assert_eq!(window.samples, [1000, 10]);
    }
}
