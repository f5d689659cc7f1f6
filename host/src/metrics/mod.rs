//! The broker's event instruments: what is counted as it happens, on the request
//! path — Kafka requests and their latency per API, connections, bytes and records
//! in and out per topic, ISR changes, quota throttling per tenant.
//!
//! What is a state rather than an event (partition offsets and sizes, consumer lag,
//! controller and plugin state) is read when `/metrics` is scraped, by the admin
//! API's exposition (`admin/metrics.rs`), so nothing here has to track it.
//!
//! Counters are atomics; a labelled family takes a read lock and a hash lookup per
//! update, once per request or per partition in a request, never per record.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
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

/// A name shared with the partition or topic it labels, so a label costs a reference
/// count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiLabels {
    api: Api,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TopicLabels {
    topic: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ThrottleLabels {
    /// The tenant of the throttled client ("" when it belongs to none).
    tenant: String,
    /// The quota type that throttled it, as Kafka names it.
    quota: &'static str,
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
    bytes_in: Family<TopicLabels, Counter>,
    records_in: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    isr_shrinks: Counter,
    isr_expands: Counter,
    throttle_seconds: Family<ThrottleLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    throttled: Family<ThrottleLabels, Counter>,
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
            "Kafka connections closed, by why: client (the client closed it), shutdown, quota (over connection_creation_rate), authentication, protocol (a malformed or unsupported request), io",
            connections_closed.clone(),
        );
        let bytes_in = Family::<TopicLabels, Counter>::default();
        registry.register(
            "topic_bytes_in",
            "Record batch bytes appended by producers, per topic (replication not included)",
            bytes_in.clone(),
        );
        let records_in = Family::<TopicLabels, Counter>::default();
        registry.register(
            "topic_records_in",
            "Records appended by producers, per topic",
            records_in.clone(),
        );
        let bytes_out = Family::<TopicLabels, Counter>::default();
        registry.register(
            "topic_bytes_out",
            "Record batch bytes sent to Kafka fetchers (consumers, mirrors), per topic",
            bytes_out.clone(),
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
        let throttle_seconds = Family::default();
        registry.register(
            "quota_throttle_seconds",
            "Throttle time imposed on clients, per tenant and quota type",
            throttle_seconds.clone(),
        );
        let throttled = Family::default();
        registry.register(
            "quota_throttled_requests",
            "Requests answered with a throttle, per tenant and quota type",
            throttled.clone(),
        );
        Self {
            registry,
            request_seconds,
            connections_accepted,
            connections_active,
            connections_closed,
            bytes_in,
            records_in,
            bytes_out,
            isr_shrinks,
            isr_expands,
            throttle_seconds,
            throttled,
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

    /// `bytes` in `records` records appended to `topic` by a producer.
    pub fn produced(&self, topic: &Arc<str>, bytes: usize, records: u64) {
        let labels = TopicLabels {
            topic: Name(topic.clone()),
        };
        self.bytes_in.get_or_create(&labels).inc_by(bytes as u64);
        self.records_in.get_or_create(&labels).inc_by(records);
    }

    /// `bytes` of `topic` sent to a fetcher.
    pub fn fetched(&self, topic: &Arc<str>, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.bytes_out
            .get_or_create(&TopicLabels {
                topic: Name(topic.clone()),
            })
            .inc_by(bytes as u64);
    }

    /// Forgets a deleted topic's series, so deleted topics do not accumulate.
    pub fn forget_topic(&self, topic: &str) {
        let labels = TopicLabels {
            topic: Name(Arc::from(topic)),
        };
        self.bytes_in.remove(&labels);
        self.records_in.remove(&labels);
        self.bytes_out.remove(&labels);
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
        let labels = ThrottleLabels {
            tenant: tenant.unwrap_or_default().to_string(),
            quota,
        };
        self.throttle_seconds
            .get_or_create(&labels)
            .inc_by(throttle.as_secs_f64());
        self.throttled.get_or_create(&labels).inc();
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
