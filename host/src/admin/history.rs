//! `GET /v1/history`: the last hour of the figures the console charts — group lag,
//! topic throughput, plugin call and error rates, tenants' usage against their quotas,
//! mirror latency and lag, transform lag — sampled every two seconds on this broker.
//!
//! Kept by the broker rather than by the page, so a console opened during an incident
//! shows how it began. Rates are deltas of the broker's counters between samples; a
//! counter first seen, or one that went backwards (a plugin's new version starts its
//! own), counts from zero. A series whose subject is gone stops growing and ages out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::body::QueryParams;
use super::{blocking, AdminState, ApiError};
use crate::broker::now_ms;
use crate::tenancy::quota::{self, QuotaType};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept per series: one hour.
const KEEP: usize = 1800;

/// Every series, by family and subject.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

/// Samples of one subject: (ms since the epoch, value), oldest first.
type Points = VecDeque<(i64, f64)>;

#[derive(Debug, Default)]
struct Inner {
    series: BTreeMap<&'static str, BTreeMap<String, Points>>,
    /// The counters at the previous sample, for rates: by family and subject.
    last: HashMap<(&'static str, String), f64>,
    last_ms: Option<i64>,
}

/// One sample of every family: values, and counters whose rate is wanted.
#[derive(Debug, Default)]
struct Sample {
    values: Vec<(&'static str, String, f64)>,
    /// (rate family, subject, counter value).
    counters: Vec<(&'static str, String, f64)>,
}

impl Sample {
    fn value(&mut self, family: &'static str, subject: &str, v: impl Into<f64>) {
        self.values.push((family, subject.to_string(), v.into()));
    }

    fn counter(&mut self, family: &'static str, subject: &str, v: u64) {
        self.counters.push((family, subject.to_string(), v as f64));
    }
}

impl History {
    fn record(&self, now: i64, sample: Sample) {
        let mut inner = self.inner.lock();
        let elapsed = inner
            .last_ms
            .map(|last| (now - last) as f64 / 1e3)
            .filter(|s| *s > 0.0);
        let mut points = sample.values;
        let mut last = HashMap::with_capacity(sample.counters.len());
        for (family, subject, value) in sample.counters {
            if let Some(seconds) = elapsed {
                // A subject first seen now (a new topic, a new plugin) counted from zero
                // since the previous sample; so did a counter that went backwards.
                let before = inner.last.get(&(family, subject.clone())).copied();
                let delta = match before {
                    Some(before) if value >= before => value - before,
                    _ => value,
                };
                points.push((family, subject.clone(), delta / seconds));
            }
            last.insert((family, subject), value);
        }
        inner.last = last;
        inner.last_ms = Some(now);
        for (family, subject, value) in points {
            let series = inner
                .series
                .entry(family)
                .or_default()
                .entry(subject)
                .or_default();
            if series.len() == KEEP {
                series.pop_front();
            }
            series.push_back((now, value));
        }
        let oldest = now - (KEEP as i64) * INTERVAL.as_millis() as i64;
        for family in inner.series.values_mut() {
            family.retain(|_, s| s.back().is_some_and(|(t, _)| *t >= oldest));
        }
    }

    /// The series, as JSON: `{family: {subject: [[ms, value], …]}}`, only points after
    /// `since` (ms since the epoch), only `family` if given.
    fn json(&self, family: Option<&str>, since: i64) -> Value {
        let inner = self.inner.lock();
        let mut out = serde_json::Map::new();
        for (name, subjects) in &inner.series {
            if family.is_some_and(|f| f != *name) {
                continue;
            }
            let subjects: serde_json::Map<String, Value> = subjects
                .iter()
                .map(|(subject, points)| {
                    let points: Vec<Value> = points
                        .iter()
                        .filter(|(t, _)| *t > since)
                        .map(|(t, v)| json!([t, v]))
                        .collect();
                    (subject.clone(), Value::Array(points))
                })
                .collect();
            out.insert(name.to_string(), Value::Object(subjects));
        }
        Value::Object(out)
    }
}

/// Reads every figure the console charts, as this broker sees it now.
fn sample(state: &AdminState) -> Sample {
    let mut s = Sample::default();
    let broker = &state.broker;
    let metadata = broker.metadata();

    for (group, _, _) in broker.groups().list().unwrap_or_default() {
        let lag: i64 = super::groups::offsets(state, &group)
            .iter()
            .filter_map(|o| o["lag"].as_i64())
            .sum();
        s.value("group_lag", &group, lag as f64);
    }

    let traffic = broker.metrics().traffic();
    for (topic, t) in &traffic {
        if topic.starts_with("__") {
            continue;
        }
        s.counter("topic_bytes_in_per_sec", topic, t.bytes_in);
        s.counter("topic_bytes_out_per_sec", topic, t.bytes_out);
        s.counter("topic_records_in_per_sec", topic, t.records_in);
    }

    for plugin in state.plugins.list() {
        s.counter("plugin_calls_per_sec", &plugin.name, plugin.metrics.calls);
        s.counter(
            "plugin_errors_per_sec",
            &plugin.name,
            plugin.metrics.errors + plugin.metrics.traps,
        );
    }

    let throttles = broker.metrics().throttles();
    for tenant in metadata.tenants.values() {
        let owned = traffic.iter().filter(|(t, _)| tenant.owns(t));
        let (bytes_in, bytes_out) =
            owned.fold((0, 0), |(i, o), (_, t)| (i + t.bytes_in, o + t.bytes_out));
        s.counter("tenant_produce_bytes_per_sec", &tenant.name, bytes_in);
        s.counter("tenant_fetch_bytes_per_sec", &tenant.name, bytes_out);
        for (kind, family) in [
            (QuotaType::ProduceBytes, "tenant_producer_byte_rate"),
            (QuotaType::FetchBytes, "tenant_consumer_byte_rate"),
        ] {
            if let Some((_, limit)) = quota::resolve_tenant(&metadata.quotas, &tenant.name, kind) {
                s.value(family, &tenant.name, limit);
            }
        }
        let throttled: f64 = throttles
            .iter()
            .filter(|((t, _), _)| *t == tenant.name)
            .map(|(_, t)| t.seconds)
            .sum();
        // Milliseconds of throttle per second: as a counter of whole milliseconds.
        s.counter(
            "tenant_throttle_ms_per_sec",
            &tenant.name,
            (throttled * 1e3) as u64,
        );
        s.value(
            "tenant_stored_bytes",
            &tenant.name,
            broker.tenant_stored_bytes(tenant) as f64,
        );
    }

    for name in metadata.mirrors.keys() {
        if let Some(report) = state.mirrors.report(name) {
            s.value("mirror_latency_p99_ms", name, report.latency_p99_ms as f64);
            s.value("mirror_latency_p50_ms", name, report.latency_p50_ms as f64);
            let behind: i64 = report
                .topics
                .values()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.behind.max(0))
                .sum();
            s.value("mirror_lag", name, behind as f64);
            s.counter("mirror_records_per_sec", name, report.records);
        }
    }

    for name in metadata.transforms.keys() {
        let reports = state.transforms.reports(name);
        if reports.is_empty() {
            continue;
        }
        let lag: i64 = reports.iter().map(|r| r.lag.max(0)).sum();
        s.value("transform_lag", name, lag as f64);
        let p99 = reports.iter().map(|r| r.latency_p99_ms).max().unwrap_or(0);
        s.value("transform_latency_p99_ms", name, p99 as f64);
        s.counter(
            "transform_records_in_per_sec",
            name,
            reports.iter().map(|r| r.records_in).sum(),
        );
    }
    s
}

/// Samples every [`INTERVAL`] until `shutdown` turns true.
pub(super) fn spawn(
    state: AdminState,
    history: Arc<History>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let (state, history) = (state.clone(), history.clone());
            // Reading offsets and sizes takes locks: off the async threads.
            let _ = tokio::task::spawn_blocking(move || {
                let sample = sample(&state);
                history.record(now_ms(), sample);
            })
            .await;
        }
    })
}

/// The query of `GET /v1/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Only this family.
    family: Option<String>,
    /// Only points after this time, ms since the epoch.
    since: Option<i64>,
}

/// Answers `GET /v1/history`.
pub(super) async fn get(
    State(state): State<AdminState>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let history = state.history.clone();
    let series =
        blocking(move || history.json(query.family.as_deref(), query.since.unwrap_or(0))).await?;
    Ok(Json(json!({
        "interval_ms": INTERVAL.as_millis() as u64,
        "series": series,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_counter_deltas_and_values_are_kept_as_given() {
        let history = History::default();
        let mut first = Sample::default();
        first.counter("topic_bytes_in_per_sec", "orders", 1000);
        first.value("group_lag", "billing", 5.0);
        history.record(10_000, first);
        let mut second = Sample::default();
        second.counter("topic_bytes_in_per_sec", "orders", 5000);
        second.value("group_lag", "billing", 7.0);
        history.record(12_000, second);
        // A counter that went backwards started again from zero.
        let mut third = Sample::default();
        third.counter("topic_bytes_in_per_sec", "orders", 400);
        history.record(14_000, third);
        let json = history.json(None, 0);
        assert_eq!(
            json["topic_bytes_in_per_sec"]["orders"],
            json!([[12_000, 2000.0], [14_000, 200.0]])
        );
        assert_eq!(
            json["group_lag"]["billing"],
            json!([[10_000, 5.0], [12_000, 7.0]])
        );
        // A subject that appears after the first sample counts from zero.
        let mut fourth = Sample::default();
        fourth.counter("topic_bytes_in_per_sec", "new", 600);
        history.record(16_000, fourth);
        assert_eq!(
            history.json(Some("topic_bytes_in_per_sec"), 15_000)["topic_bytes_in_per_sec"]["new"],
            json!([[16_000, 300.0]])
        );
        assert_eq!(
            history.json(Some("group_lag"), 11_000),
            json!({"group_lag": {"billing": [[12_000, 7.0]]}})
        );
    }

    #[test]
    fn a_series_whose_subject_is_gone_ages_out() {
        let history = History::default();
        let mut s = Sample::default();
        s.value("group_lag", "gone", 1.0);
        history.record(0, s);
        let hour = KEEP as i64 * INTERVAL.as_millis() as i64;
        let mut later = Sample::default();
        later.value("group_lag", "kept", 1.0);
        history.record(hour + 1, later);
        let json = history.json(None, -1);
        assert!(json["group_lag"].get("gone").is_none(), "{json}");
        assert!(json["group_lag"].get("kept").is_some(), "{json}");
    }
}
