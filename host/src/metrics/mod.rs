//! The broker's event instruments: what is counted as it happens, on the request
//! path — Kafka requests and their latency per API, connections, bytes and records
//! in and out per topic, ISR changes, quota throttling per tenant.
//!
//! What is a state rather than an event (partition offsets and sizes, consumer lag,
//! controller and plugin state) is read when `/metrics` is scraped, by the admin
//! API's exposition (`admin/metrics.rs`), so nothing here has to track it.
//!
//! Counters are atomics; a labelled one takes a read lock and a hash lookup per
//! update, once per request or per partition in a request, never per record. Topic
//! traffic and throttles are kept where they can be listed, as well as exposed, since
//! the console's history takes its rates from them.

pub mod families;
pub mod latency;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the request-latency buckets: 100 µs to 10 s, which spans
/// an in-memory metadata answer to a long-polling fetch.
const REQUEST_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A Kafka API as a label value: its name as Kafka's documentation spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Api(pub ApiKey);

impl EncodeLabelValue for Api {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{:?}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiLabels {
    api: Api,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// The broker's instruments, registered once at startup.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    request_seconds: HistogramFamily<ApiLabels>,
    connections_accepted: Counter,
    connections_active: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    isr_shrinks: Counter,
    isr_expands: Counter,
    listed: Arc<Listed>,
}

/// What one topic's producers and fetchers moved through this broker.
#[derive(Debug, Default)]
pub struct TopicTraffic {
    bytes_in: AtomicU64,
    records_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A copy of a topic's [`TopicTraffic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Record batch bytes appended by producers.
    pub bytes_in: u64,
    /// Records appended by producers.
    pub records_in: u64,
    /// Record batch bytes sent to fetchers.
    pub bytes_out: u64,
}

/// Throttling of one tenant by one quota type.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Throttled {
    /// Throttle time imposed, seconds.
    pub seconds: f64,
    /// Responses that carried a throttle.
    pub requests: u64,
}

/// The counters that can be listed: per topic and per (tenant, quota type).
#[derive(Debug, Default)]
struct Listed {
    topics: RwLock<HashMap<Arc<str>, Arc<TopicTraffic>>>,
    /// By tenant ("" for clients of none) and quota type.
    throttles: Mutex<BTreeMap<(String, &'static str), Throttled>>,
}

impl Listed {
    fn traffic(&self) -> Vec<(Arc<str>, Traffic)> {
        let mut out: Vec<(Arc<str>, Traffic)> = self
            .topics
            .read()
            .iter()
            .map(|(name, t)| {
                let traffic = Traffic {
                    bytes_in: t.bytes_in.load(Ordering::Relaxed),
                    records_in: t.records_in.load(Ordering::Relaxed),
                    bytes_out: t.bytes_out.load(Ordering::Relaxed),
                };
                (name.clone(), traffic)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Collector for Listed {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        use families::{labels, Families};
        let mut out = Families(encoder);
        let traffic = self.traffic();
        let topic = |name: &str| labels([("topic", name)]);
        out.counter(
            "topic_bytes_in",
            "Record batch bytes appended here, per topic: Kafka producers, HTTP produce, and the mirrors and transforms writing to it (replication not included)",
            traffic.iter().map(|(n, t)| (topic(n), t.bytes_in)),
        )?;
        out.counter(
            "topic_records_in",
            "Records appended here, per topic (as topic_bytes_in)",
            traffic.iter().map(|(n, t)| (topic(n), t.records_in)),
        )?;
        out.counter(
            "topic_bytes_out",
            "Record batch bytes sent to Kafka fetchers (consumers, mirrors), per topic",
            traffic.iter().map(|(n, t)| (topic(n), t.bytes_out)),
        )?;
        let throttles: Vec<_> = self
            .throttles
            .lock()
            .iter()
            .map(|((tenant, quota), t)| (labels([("tenant", tenant), ("quota", quota)]), *t))
            .collect();
        out.counter(
            "quota_throttle_seconds",
            "Throttle time imposed on clients, per tenant (\"\" for clients of none) and quota type",
            throttles.iter().map(|(l, t)| (l.clone(), t.seconds)),
        )?;
        out.counter(
            "quota_throttled_requests",
            "Responses that carried a throttle, per tenant and quota type",
            throttles.iter().map(|(l, t)| (l.clone(), t.requests)),
        )
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every instrument, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("quiver");
        let request_seconds: HistogramFamily<ApiLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register(
            "kafka_request_duration_seconds",
            "Time from a Kafka request's arrival to its response, per API (long-polling fetches included)",
            request_seconds.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "kafka_connections_accepted",
            "Kafka connections accepted",
            connections_accepted.clone(),
        );
        let connections_active = Gauge::default();
        registry.register(
            "kafka_connections_active",
            "Kafka connections open now",
            connections_active.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "kafka_connections_closed",
            "Kafka connections closed, by why: client (the client closed it), shutdown, quota (over connection_creation_rate), limit (refused at accept: over kafka.max_connections or kafka.max_connections_per_ip), idle (no request, or a response not read, within kafka.connections_max_idle_ms), slow (a request not in full within kafka.request_timeout_ms of its first byte), authentication, protocol (a malformed or unsupported request), io",
            connections_closed.clone(),
        );
        let isr_shrinks = Counter::default();
        registry.register(
            "isr_shrinks",
            "ISR shrinks of partitions this broker leads (a follower fell behind or was fenced)",
            isr_shrinks.clone(),
        );
        let isr_expands = Counter::default();
        registry.register(
            "isr_expands",
            "ISR expansions of partitions this broker leads (a follower caught up)",
            isr_expands.clone(),
        );
        let listed = Arc::new(Listed::default());
        registry.register_collector(Box::new(ListedRef(listed.clone())));
        Self {
            registry,
            request_seconds,
            connections_accepted,
            connections_active,
            connections_closed,
            isr_shrinks,
            isr_expands,
            listed,
        }
    }

    /// The registry, for the exposition.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One Kafka request of `api` answered after `elapsed`.
    pub fn request(&self, api: ApiKey, elapsed: Duration) {
        self.request_seconds
            .get_or_create(&ApiLabels { api: Api(api) })
            .observe(elapsed.as_secs_f64());
    }

    /// A Kafka connection was accepted; the returned guard counts it closed with the
    /// reason it is given (or "io" if dropped without one).
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_accepted.inc();
        self.connections_active.inc();
        OpenConnection {
            metrics: self.clone(),
            reason: "io",
        }
    }

    fn topic(&self, topic: &Arc<str>) -> Arc<TopicTraffic> {
        if let Some(t) = self.listed.topics.read().get(topic) {
            return t.clone();
        }
        self.listed
            .topics
            .write()
            .entry(topic.clone())
            .or_default()
            .clone()
    }

    /// `bytes` in `records` records appended to `topic` by a writer (a Kafka or HTTP
    /// producer, a mirror, a transform).
    pub fn produced(&self, topic: &Arc<str>, bytes: usize, records: u64) {
        let t = self.topic(topic);
        t.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        t.records_in.fetch_add(records, Ordering::Relaxed);
    }

    /// `bytes` of `topic` sent to a fetcher.
    pub fn fetched(&self, topic: &Arc<str>, bytes: usize) {
        if bytes > 0 {
            self.topic(topic)
                .bytes_out
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// Forgets a deleted topic's counters, so deleted topics do not accumulate.
    pub fn forget_topic(&self, topic: &str) {
        self.listed.topics.write().remove(topic);
    }

    /// Every topic's traffic through this broker since it started, by name.
    pub fn traffic(&self) -> Vec<(Arc<str>, Traffic)> {
        self.listed.traffic()
    }

    /// Every (tenant, quota type) throttled since the broker started.
    pub fn throttles(&self) -> BTreeMap<(String, &'static str), Throttled> {
        self.listed.throttles.lock().clone()
    }

    /// An ISR shrink (`expanded` false) or expansion of a partition led here.
    pub fn isr_changed(&self, expanded: bool) {
        if expanded {
            self.isr_expands.inc();
        } else {
            self.isr_shrinks.inc();
        }
    }

    /// A client of `tenant` throttled for `throttle` by a quota of type `quota`.
    pub fn throttled(&self, tenant: Option<&str>, quota: &'static str, throttle: Duration) {
        let mut throttles = self.listed.throttles.lock();
        let entry = throttles
            .entry((tenant.unwrap_or_default().to_string(), quota))
            .or_default();
        entry.seconds += throttle.as_secs_f64();
        entry.requests += 1;
    }
}

/// The listed counters as a registry's collector.
#[derive(Debug)]
struct ListedRef(Arc<Listed>);

impl Collector for ListedRef {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        self.0.encode(encoder)
    }
}

/// An open Kafka connection, counted closed when dropped.
#[derive(Debug)]
pub struct OpenConnection {
    metrics: Arc<Metrics>,
    reason: &'static str,
}

impl OpenConnection {
    /// Why the connection ends (see the `kafka_connections_closed` help).
    pub fn closing(&mut self, reason: &'static str) {
        self.reason = reason;
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections_active.dec();
        self.metrics
            .connections_closed
            .get_or_create(&ReasonLabels {
                reason: self.reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode as encode_registry;

    fn text(metrics: &Metrics) -> String {
        let mut out = String::new();
        encode_registry(&mut out, metrics.registry()).unwrap();
        out
    }

    #[test]
    fn counts_requests_topics_and_throttles_by_label() {
        let metrics = Arc::new(Metrics::new());
        metrics.request(ApiKey::Produce, Duration::from_micros(300));
        metrics.request(ApiKey::Produce, Duration::from_millis(30));
        let topic: Arc<str> = Arc::from("orders");
        metrics.produced(&topic, 1000, 10);
        metrics.fetched(&topic, 400);
        metrics.throttled(
            Some("acme"),
            "producer_byte_rate",
            Duration::from_millis(250),
        );
        {
            let mut conn = metrics.connection_opened();
            conn.closing("client");
        }
        let out = text(&metrics);
        assert!(out.contains("quiver_kafka_request_duration_seconds_count{api=\"Produce\"} 2"));
        assert!(out.contains(
            "quiver_kafka_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0005\"} 1"
        ));
        assert!(out.contains("quiver_topic_bytes_in_total{topic=\"orders\"} 1000"));
        assert!(out.contains("quiver_topic_records_in_total{topic=\"orders\"} 10"));
        assert!(out.contains("quiver_topic_bytes_out_total{topic=\"orders\"} 400"));
        assert!(out.contains(
            "quiver_quota_throttle_seconds_total{tenant=\"acme\",quota=\"producer_byte_rate\"} 0.25"
        ));
        assert!(out.contains("quiver_kafka_connections_active 0"));
        assert!(out.contains("quiver_kafka_connections_closed_total{reason=\"client\"} 1"));

        metrics.forget_topic("orders");
        assert!(!text(&metrics).contains("topic=\"orders\""));
    }
}
