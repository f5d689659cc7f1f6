//! What every subcommand prints: a human summary, then one JSON line for scripts.
//!
//! The JSON line is always the last line on stdout, so a script can take
//! `stdout.splitlines()[-1]` whatever the summary above it says. Counts sit next to
//! rates in both forms: a rate without the count behind it could hide lost records.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Latencies are recorded in microseconds: fine enough for loopback, and a three-digit
/// histogram up to an hour stays small.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Records a latency, clamped to the histogram's range (a record older than an hour is
/// still counted, as an hour).
pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    h.saturating_record(us);
}

/// One run's figures.
#[derive(Debug)]
pub struct Report {
    /// `produce`, `consume`, `e2e`, `nats-publish` or `nats-consume`.
    pub mode: &'static str,
    /// Records the run set out to move (0 when it ran for a time instead).
    pub requested: u64,
    /// Records acknowledged by the broker (produce) or received (consume).
    pub records: u64,
    /// Value bytes of those records (keys not counted).
    pub bytes: u64,
    pub elapsed: Duration,
    /// What the latency measures, e.g. "send to ack"; `None` when the mode has none.
    pub latency_of: Option<&'static str>,
    pub latency: Option<Histogram<u64>>,
    /// Mode-specific counts and settings (errors, gaps, partitions, ...).
    pub extra: Map<String, Value>,
    /// False when records were lost, duplicated or refused: the figure is not valid.
    pub ok: bool,
    /// Why `ok` is false.
    pub problems: Vec<String>,
}

impl Report {
    pub fn new(mode: &'static str) -> Self {
        Report {
            mode,
            requested: 0,
            records: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            latency_of: None,
            latency: None,
            extra: Map::new(),
            ok: true,
            problems: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.extra.insert(key.to_string(), value.into());
    }

    pub fn fail(&mut self, problem: String) {
        self.ok = false;
        self.problems.push(problem);
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn msgs_per_s(&self) -> f64 {
        self.records as f64 / self.secs()
    }

    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs() / 1e6
    }

    fn latency_ms(&self) -> Value {
        match &self.latency {
            Some(h) if !h.is_empty() => {
                let ms = |q: f64| (h.value_at_quantile(q) as f64) / 1000.0;
                json!({
                    "of": self.latency_of,
                    "count": h.len(),
                    "p50": ms(0.50),
                    "p99": ms(0.99),
                    "p999": ms(0.999),
                    "max": h.max() as f64 / 1000.0,
                    "mean": h.mean() / 1000.0,
                })
            }
            _ => Value::Null,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "mode": self.mode,
            "ok": self.ok,
            "problems": self.problems,
            "requested": self.requested,
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(self.secs(), 4),
            "msgs_per_s": round(self.msgs_per_s(), 1),
            "mb_per_s": round(self.mb_per_s(), 2),
            "latency_ms": self.latency_ms(),
        });
        let obj = v.as_object_mut().expect("json! object");
        for (k, val) in &self.extra {
            obj.insert(k.clone(), val.clone());
        }
        v
    }

    /// Prints the summary and, last, the JSON line.
    pub fn print(&self) {
        println!(
            "{}: {} records, {:.1} MB in {:.2} s = {:.0} msgs/s, {:.1} MB/s",
            self.mode,
            self.records,
            self.bytes as f64 / 1e6,
            self.secs(),
            self.msgs_per_s(),
            self.mb_per_s()
        );
        match (&self.latency, self.latency_of) {
            (Some(h), Some(of)) if !h.is_empty() => {
                let ms = |q: f64| (h.value_at_quantile(q) as f64) / 1000.0;
                println!(
                    "latency ({of}, {} samples): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                    h.len(),
                    ms(0.5),
                    ms(0.99),
                    ms(0.999),
                    h.max() as f64 / 1000.0
                );
            }
            _ => println!("latency: not measured in this mode"),
        }
        for (k, v) in &self.extra {
            println!("{k}: {v}");
        }
        if self.ok {
            println!("counts check: ok");
        } else {
            for p in &self.problems {
                println!("COUNTS CHECK FAILED: {p}");
            }
        }
        println!("{}", self.to_json());
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_carries_counts_rates_and_percentiles() {
        let mut r = Report::new("produce");
        r.requested = 4;
        r.records = 4;
        r.bytes = 4000;
        r.elapsed = Duration::from_secs(2);
        let mut h = new_histogram();
        for us in [100, 200, 300, 4000] {
            record(&mut h, Duration::from_micros(us));
        }
        r.latency = Some(h);
        r.latency_of = Some("send to ack");
        r.set("errors", 0);
        let v = r.to_json();
        assert_eq!(v["records"], 4);
        assert_eq!(v["msgs_per_s"], 2.0);
        assert_eq!(v["mb_per_s"], 0.0);
        assert_eq!(v["errors"], 0);
        assert_eq!(v["ok"], true);
        assert_eq!(v["latency_ms"]["count"], 4);
        let p50 = v["latency_ms"]["p50"].as_f64().unwrap();
        assert!((0.19..=0.21).contains(&p50), "p50 {p50}");
        let max = v["latency_ms"]["max"].as_f64().unwrap();
        assert!((3.99..=4.01).contains(&max), "max {max}");
    }

    #[test]
    fn a_failed_check_makes_the_line_not_ok() {
        let mut r = Report::new("consume");
        r.fail("consumed 3 of 4 records".into());
        let v = r.to_json();
        assert_eq!(v["ok"], false);
        assert_eq!(v["problems"][0], "consumed 3 of 4 records");
        assert_eq!(v["latency_ms"], Value::Null);
    }
}
