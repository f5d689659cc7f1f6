//! What the benchmark examples share: the clock a timed region counts by, and the
//! median-and-range statistics every figure is printed with. Included by each example
//! with `#[path]` (examples are separate binaries).

use serde_json::{json, Value};

/// What a timed region counts.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Clock {
    /// CPU time of the calling thread: excludes time spent waiting for a CPU.
    Thread,
    /// Wall-clock time.
    Wall,
}

impl Clock {
    /// Nanoseconds on this clock since an arbitrary origin.
    pub fn now_ns(self) -> u64 {
        let id = match self {
            Clock::Thread => libc::CLOCK_THREAD_CPUTIME_ID,
            Clock::Wall => libc::CLOCK_MONOTONIC,
        };
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on Linux.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime({self:?}) failed");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

/// Median and range over runs.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// Median over the runs.
    pub median: f64,
    /// Least.
    pub min: f64,
    /// Most.
    pub max: f64,
}

/// Median and range of `values`.
pub fn stat(values: &[f64]) -> Stat {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

/// `values` as JSON: median, range and every run.
pub fn stat_json(values: &[f64]) -> Value {
    let s = stat(values);
    json!({ "median": s.median, "min": s.min, "max": s.max, "runs": values })
}

/// `median (min–max)` with `digits` decimals.
pub fn fmt_stat(values: &[f64], digits: usize) -> String {
    let s = stat(values);
    format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits)
}
