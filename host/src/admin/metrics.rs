//! `GET /metrics`: the broker's metrics in Prometheus' text format (0.0.4).
//!
//! Two sources, one answer. Events (requests, bytes, throttles, ISR changes) are
//! counted as they happen in [`crate::metrics::Metrics`]. States — the controller,
//! partitions, consumer lag, plugins, transforms, mirrors, tenants — are read here, at
//! scrape time, from the same structures the admin API describes, so a figure on a
//! dashboard and in `quiver … describe` cannot disagree.
//!
//! Each broker answers for itself: partitions it hosts, groups it coordinates,
//! transforms and mirrors it runs. Cluster-wide figures (brokers, offline partitions)
//! come from its replica of the metadata, as every broker has one.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::metrics::families::{labels, CounterOf, Families, Labels};

use super::{blocking, AdminState, ApiError};
use crate::broker::now_ms;
use crate::plugin::metrics::BUCKETS_US;
use crate::plugin::Status;

/// Answers `GET /metrics`.
pub(super) async fn scrape(State(state): State<AdminState>) -> Result<Response, ApiError> {
    // Reading partitions' sizes and groups' offsets takes locks: off the async threads.
    let text = blocking(move || exposition(&state)).await?;
    Ok((
        [(
            CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// The whole exposition text.
fn exposition(state: &AdminState) -> String {
    let mut out = String::new();
    let mut scraped = Registry::with_prefix("quiver");
    scraped.register_collector(Box::new(Scrape(state.clone())));
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(
        &mut out,
        state.broker.metrics().registry(),
    );
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &scraped);
    out
}

/// The metrics read at scrape time.
#[derive(Debug)]
struct Scrape(AdminState);

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut out = Families(encoder);
        let state = &self.0;
        cluster(state, &mut out)?;
        partitions(state, &mut out)?;
        groups(state, &mut out)?;
        plugins(state, &mut out)?;
        transforms(state, &mut out)?;
        mirrors(state, &mut out)?;
        tenants(state, &mut out)
    }
}

fn cluster(state: &AdminState, out: &mut Families<'_>) -> std::fmt::Result {
    let broker = &state.broker;
    let raft = broker.controller().raft_status();
    let metadata = broker.metadata();
    let me = broker.config().broker.node_id;
    let node = me.to_string();
    out.gauge(
        "broker_info",
        "This broker: its id, cluster id and version (always 1)",
        [(
            labels([
                ("node_id", &node),
                ("cluster_id", broker.cluster_id()),
                ("version", env!("CARGO_PKG_VERSION")),
            ]),
            1i64,
        )],
    )?;
    out.gauge(
        "controller_active",
        "1 when this broker is the active controller (the metadata quorum's leader)",
        [(Labels::new(), i64::from(raft.leader == Some(me)))],
    )?;
    out.gauge(
        "controller_leader_known",
        "1 when this broker knows which broker is the active controller",
        [(Labels::new(), i64::from(raft.leader.is_some()))],
    )?;
    out.gauge(
        "controller_raft_term",
        "The metadata quorum's Raft term as this broker knows it",
        [(Labels::new(), raft.term)],
    )?;
    out.gauge(
        "controller_raft_commit_index",
        "Index of the last metadata log entry applied on this broker",
        [(Labels::new(), raft.commit_index)],
    )?;
    let fenced = metadata.brokers.values().filter(|b| b.fenced).count();
    out.gauge(
        "cluster_brokers",
        "Registered brokers, by state (active or fenced)",
        [
            (
                labels([("state", "active")]),
                metadata.brokers.len() - fenced,
            ),
            (labels([("state", "fenced")]), fenced),
        ],
    )?;
    let (mut total, mut offline, mut under) = (0usize, 0usize, 0usize);
    for topic in metadata.topics.values() {
        for p in &topic.assignments {
            total += 1;
            if p.is_offline() {
                offline += 1;
            } else if p.is_under_replicated() {
                under += 1;
            }
        }
    }
    out.gauge(
        "cluster_partitions",
        "Partitions in the cluster, by state: online (a leader, full ISR), under_replicated (ISR smaller than the replica set), offline (no leader)",
        [
            (labels([("state", "online")]), total - offline - under),
            (labels([("state", "under_replicated")]), under),
            (labels([("state", "offline")]), offline),
        ],
    )
}

fn partitions(state: &AdminState, out: &mut Families<'_>) -> std::fmt::Result {
    let broker = &state.broker;
    let me = broker.config().broker.node_id;
    struct Row {
        labels: Labels,
        led: bool,
        hw: i64,
        start: i64,
        end: i64,
        size: u64,
        isr: usize,
        replicas: usize,
        storage_offline: bool,
    }
    let mut rows = Vec::new();
    for topic in broker.topics() {
        for partition in &topic.partitions {
            let assignment = topic.assignment(partition.index());
            let log = partition.log();
            rows.push(Row {
                labels: labels([
                    ("topic", &topic.meta.name),
                    ("partition", &partition.index().to_string()),
                ]),
                led: assignment.is_some_and(|a| a.leader == me),
                hw: partition.high_watermark(),
                start: log.log_start_offset(),
                end: log.log_end_offset(),
                size: log.size_bytes(),
                isr: assignment.map_or(0, |a| a.isr.len()),
                replicas: assignment.map_or(0, |a| a.replicas.len()),
                storage_offline: log.storage_failure().is_some(),
            });
        }
    }
    let led: Vec<&Row> = rows.iter().filter(|r| r.led).collect();
    out.gauge(
        "partitions_led",
        "Partitions this broker leads",
        [(Labels::new(), led.len())],
    )?;
    out.gauge(
        "partitions_under_replicated",
        "Partitions this broker leads whose ISR is smaller than their replica set",
        [(
            Labels::new(),
            led.iter().filter(|r| r.isr < r.replicas).count(),
        )],
    )?;
    out.gauge(
        "partitions_storage_offline",
        "Partition replicas here whose log went offline after a storage failure (a failed fsync or write); a restart recovers them",
        [(
            Labels::new(),
            rows.iter().filter(|r| r.storage_offline).count(),
        )],
    )?;
    out.gauge(
        "partition_storage_offline",
        "1 when this replica's log is offline after a storage failure, refusing produce and fetch with KAFKA_STORAGE_ERROR",
        rows.iter()
            .map(|r| (r.labels.clone(), i64::from(r.storage_offline))),
    )?;
    out.gauge(
        "partition_leader",
        "1 when this broker leads the partition, 0 when it follows",
        rows.iter().map(|r| (r.labels.clone(), i64::from(r.led))),
    )?;
    out.gauge(
        "partition_high_watermark",
        "The partition's high watermark on this replica (the offset consumers read up to)",
        rows.iter().map(|r| (r.labels.clone(), r.hw)),
    )?;
    out.gauge(
        "partition_log_start_offset",
        "The first offset still in this replica's log",
        rows.iter().map(|r| (r.labels.clone(), r.start)),
    )?;
    out.gauge(
        "partition_log_end_offset",
        "The offset the next record appended to this replica gets",
        rows.iter().map(|r| (r.labels.clone(), r.end)),
    )?;
    out.gauge(
        "partition_size_bytes",
        "Bytes of this replica's log segments on disk",
        rows.iter().map(|r| (r.labels.clone(), r.size)),
    )?;
    out.gauge(
        "partition_isr_size",
        "In-sync replicas of a partition this broker leads",
        led.iter().map(|r| (r.labels.clone(), r.isr)),
    )?;
    out.gauge(
        "partition_replicas",
        "Replicas assigned to a partition this broker leads",
        led.iter().map(|r| (r.labels.clone(), r.replicas)),
    )
}

fn groups(state: &AdminState, out: &mut Families<'_>) -> std::fmt::Result {
    let broker = &state.broker;
    let coordinator = broker.groups();
    // Still loading __consumer_offsets: no groups to report yet.
    let listed = coordinator.list().unwrap_or_default();
    let mut members = Vec::new();
    let mut states = Vec::new();
    let mut committed = Vec::new();
    let mut lag = Vec::new();
    for (group, _protocol, group_state) in listed {
        if let Ok(Some(description)) = coordinator.describe(&group) {
            members.push((labels([("group", &group)]), description.members.len()));
        }
        states.push((
            labels([("group", &group), ("state", group_state.name())]),
            1i64,
        ));
        let Ok(offsets) = coordinator.offsets(&group) else {
            continue;
        };
        for ((topic, partition), value) in offsets {
            let labels = labels([
                ("group", &group),
                ("topic", &topic),
                ("partition", &partition.to_string()),
            ]);
            // Lag needs the partition's high watermark, known where a replica is.
            if let Some(p) = broker.partition(&topic, partition) {
                lag.push((labels.clone(), (p.high_watermark() - value.offset).max(0)));
            }
            committed.push((labels, value.offset));
        }
    }
    out.gauge(
        "consumer_group_members",
        "Members of a consumer group this broker coordinates",
        members,
    )?;
    out.gauge(
        "consumer_group_state",
        "A coordinated group's state (1 for the state it is in)",
        states,
    )?;
    out.gauge(
        "consumer_group_committed_offset",
        "A group's committed offset: the next offset it will consume",
        committed,
    )?;
    out.gauge(
        "consumer_group_lag",
        "Records between a group's committed offset and the partition's high watermark (partitions with a replica on the coordinating broker)",
        lag,
    )
}

fn plugins(state: &AdminState, out: &mut Families<'_>) -> std::fmt::Result {
    let plugins = state.plugins.list();
    let rows: Vec<(Labels, &crate::plugin::Description)> = plugins
        .iter()
        .map(|p| {
            (
                labels([("plugin", &p.name), ("kind", &p.kind.to_string())]),
                p,
            )
        })
        .collect();
    out.gauge(
        "plugin_version",
        "The version of a plugin serving calls",
        rows.iter().map(|(l, p)| (l.clone(), p.active_version)),
    )?;
    out.gauge(
        "plugin_failed",
        "1 when a plugin is marked failed (repeated traps) and no longer called",
        rows.iter().map(|(l, p)| {
            (
                l.clone(),
                i64::from(matches!(p.status, Status::Failed { .. })),
            )
        }),
    )?;
    let counters: [CounterOf<crate::plugin::Description>; 4] = [
        (
            "plugin_calls",
            "Calls into a plugin (its serving version)",
            |p| p.metrics.calls,
        ),
        ("plugin_records", "Records passed to a plugin", |p| {
            p.metrics.records
        }),
        (
            "plugin_errors",
            "Plugin calls that returned an error or unusable output",
            |p| p.metrics.errors,
        ),
        (
            "plugin_traps",
            "Plugin calls that trapped (panic, deadline, memory cap)",
            |p| p.metrics.traps,
        ),
    ];
    out.counters(&counters, rows.iter().map(|(l, p)| (l.clone(), *p)))?;
    out.family(
        "plugin_call_duration_seconds",
        "Time spent in plugin calls",
        MetricType::Histogram,
        rows.iter().map(|(l, p)| (l.clone(), *p)),
        |m, p| {
            let buckets: Vec<(f64, u64)> = p
                .metrics
                .histogram
                .iter()
                .map(|(bound, count)| {
                    let bound = bound.map_or(f64::INFINITY, |us| us as f64 / 1e6);
                    (bound, *count)
                })
                .collect();
            debug_assert_eq!(buckets.len(), BUCKETS_US.len() + 1);
            m.encode_histogram::<NoLabelSet>(
                p.metrics.call_time_us as f64 / 1e6,
                p.metrics.calls,
                &buckets,
                None,
            )
        },
    )
}

fn transforms(state: &AdminState, out: &mut Families<'_>) -> std::fmt::Result {
    let metadata = state.broker.metadata();
    let mut rows = Vec::new();
    for name in metadata.transforms.keys() {
        for report in state.transforms.reports(name) {
            let labels = labels([
                ("transform", name),
                ("partition", &report.partition.to_string()),
            ]);
            rows.push((labels, report));
        }
    }
    out.gauge(
        "transform_lag",
        "Input records a transform partition has yet to process (high watermark minus position)",
        rows.iter().map(|(l, r)| (l.clone(), r.lag)),
    )?;
    out.gauge(
        "transform_latency_seconds",
        "Input record timestamp to its outputs acknowledged, over recent steps (quantile 0.5 and 0.99)",
        rows.iter().flat_map(|(l, r)| {
            [("0.5", r.latency_p50_ms), ("0.99", r.latency_p99_ms)].map(|(q, ms)| {
                let mut with_quantile = l.clone();
                with_quantile.push(("quantile", q.to_string()));
                (with_quantile, ms as f64 / 1e3)
            })
        }),
    )?;
    out.gauge(
        "transform_running",
        "1 when a transform partition is running, 0 when paused, stopped, failed or waiting",
        rows.iter()
            .map(|(l, r)| (l.clone(), i64::from(r.state == "running"))),
    )?;
    let counters: [CounterOf<crate::transform::runner::PartitionReport>; 4] = [
        (
            "transform_records_in",
            "Input records a transform processed",
            |r| r.records_in,
        ),
        (
            "transform_records_out",
            "Output records a transform wrote",
            |r| r.records_out,
        ),
        (
            "transform_dead_letters",
            "Records a transform sent to its dead-letter topic",
            |r| r.dead_letters,
        ),
        ("transform_errors", "Failed transform plugin calls", |r| {
            r.errors
        }),
    ];
    out.counters(&counters, rows.iter().map(|(l, r)| (l.clone(), r)))
}

fn mirrors(state: &AdminState, out: &mut Families<'_>) -> std::fmt::Result {
    let metadata = state.broker.metadata();
    let now = now_ms();
    let reports: Vec<(String, crate::connect::runner::MirrorReport)> = metadata
        .mirrors
        .keys()
        .filter_map(|name| Some((name.clone(), state.mirrors.report(name)?)))
        .collect();
    let mirror = |name: &str| labels([("mirror", name)]);
    out.gauge(
        "mirror_running",
        "1 when a mirror running on this broker is copying, 0 when starting, retrying or stopped",
        reports
            .iter()
            .map(|(n, r)| (mirror(n), i64::from(r.state == "running"))),
    )?;
    let counters: [CounterOf<crate::connect::runner::MirrorReport>; 5] = [
        (
            "mirror_records",
            "Records a mirror wrote to this cluster",
            |r| r.records,
        ),
        (
            "mirror_bytes",
            "Key and value bytes a mirror wrote to this cluster",
            |r| r.bytes,
        ),
        (
            "mirror_filtered",
            "Records a mirror's plugin dropped",
            |r| r.filtered,
        ),
        (
            "mirror_loops_prevented",
            "Records a mirror did not copy because they came from this cluster",
            |r| r.loops_prevented,
        ),
        (
            "mirror_restarts",
            "Restarts of a mirror after a failure",
            |r| r.restarts,
        ),
    ];
    out.counters(&counters, reports.iter().map(|(n, r)| (mirror(n), r)))?;
    out.gauge(
        "mirror_latency_seconds",
        "Replication latency, source record timestamp to append here, over recent records (quantile 0.5 and 0.99)",
        reports.iter().flat_map(|(n, r)| {
            [
                (
                    labels([("mirror", n), ("quantile", "0.5")]),
                    r.latency_p50_ms as f64 / 1e3,
                ),
                (
                    labels([("mirror", n), ("quantile", "0.99")]),
                    r.latency_p99_ms as f64 / 1e3,
                ),
            ]
        }),
    )?;
    let age = |ms: i64| {
        if ms > 0 {
            (now - ms).max(0) as f64 / 1e3
        } else {
            f64::NAN
        }
    };
    out.gauge(
        "mirror_source_contact_age_seconds",
        "Seconds since the mirror's source last answered (NaN before it ever has)",
        reports
            .iter()
            .map(|(n, r)| (mirror(n), age(r.last_contact_ms))),
    )?;
    out.gauge(
        "mirror_checkpoint_age_seconds",
        "Seconds since the mirror last translated group offsets (NaN before it has)",
        reports
            .iter()
            .map(|(n, r)| (mirror(n), age(r.last_checkpoint_ms))),
    )?;
    out.gauge(
        "mirror_lag",
        "Source records not yet copied, per mirrored partition (source high watermark minus position)",
        reports.iter().flat_map(|(n, r)| {
            r.topics.iter().flat_map(move |(topic, t)| {
                t.partitions.iter().map(move |p| {
                    (
                        labels([
                            ("mirror", n),
                            ("topic", topic),
                            ("partition", &p.partition.to_string()),
                        ]),
                        p.behind,
                    )
                })
            })
        }),
    )
}

fn tenants(state: &AdminState, out: &mut Families<'_>) -> std::fmt::Result {
    let metadata = state.broker.metadata();
    let tenants: Vec<_> = metadata.tenants.values().collect();
    out.gauge(
        "tenant_stored_bytes",
        "Log bytes of a tenant's partitions led by this broker",
        tenants.iter().map(|t| {
            (
                labels([("tenant", &t.name)]),
                state.broker.tenant_stored_bytes(t),
            )
        }),
    )?;
    out.gauge(
        "tenant_max_stored_bytes",
        "A tenant's max_stored_bytes limit, per broker (tenants with one)",
        tenants
            .iter()
            .filter_map(|t| Some((labels([("tenant", &t.name)]), t.limits.max_stored_bytes?))),
    )
}
