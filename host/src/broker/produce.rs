//! Broker-side produce: records that arrive without a partition (HTTP produce today;
//! transform outputs and mirror targets later) are routed by the topic's partitioner —
//! a plugin named by the `partitioner` topic config, or the built-in murmur2 that
//! matches the Java client — then appended, one batch per partition.
//!
//! Kafka-protocol produce never comes here: Kafka clients choose partitions themselves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use quiver_plugin_sdk::columns::{Columns, ColumnsBuilder};

use super::{now_ms, Broker};
// The Java client's keyed choice; one implementation shared with the plugins.
use crate::partition::encode::{encode_batch, RecordData};
use crate::partition::AppendError;
use crate::plugin::{CallError, Plugins};
use quiver_plugin_sdk::hash::murmur2_partition as partition_for_key;

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    /// Key, or null.
    pub key: Option<Bytes>,
    /// Value, or null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// A partition chosen by the caller; `None` lets the topic's partitioner decide.
    pub partition: Option<i32>,
    /// Timestamp (ms); `None` is now.
    pub timestamp: Option<i64>,
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// Why a broker-side produce failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// No such topic.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// A record names a partition the topic does not have.
    #[error("topic '{topic}' has partitions 0..{partitions}; record {index} asks for partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// Its partition count.
        partitions: i32,
        /// The record's position in the request.
        index: usize,
        /// The partition asked for.
        partition: i32,
    },
    /// The topic's partitioner plugin failed and the topic does not fall back.
    #[error("partitioner plugin '{plugin}' {error}")]
    Partitioner {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        error: CallError,
    },
    /// This broker does not lead the partition; HTTP produce goes to the leader.
    #[error("partition {partition} of '{topic}' is led by broker {leader}, not this one")]
    NotLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Its leader (-1 when it has none).
        leader: i32,
    },
    /// The partition refused the batch.
    #[error("partition {partition}: {source}")]
    Append {
        /// The partition.
        partition: i32,
        /// Why.
        source: AppendError,
    },
}

/// Spreads keyless records over partitions, a request at a time.
static ROUND_ROBIN: AtomicU32 = AtomicU32::new(0);

/// Routes and appends `records` to `topic`; returns each record's placement, in order.
pub fn produce(
    broker: &Broker,
    plugins: &Plugins,
    topic_name: &str,
    records: Vec<NewRecord>,
) -> Result<Vec<Placement>, ProduceError> {
    let topic = broker
        .topic(topic_name)
        .ok_or_else(|| ProduceError::UnknownTopic(topic_name.to_string()))?;
    let partitions = topic.meta.partitions;
    let now = now_ms();
    for (index, r) in records.iter().enumerate() {
        if let Some(p) = r.partition {
            if !(0..partitions).contains(&p) {
                return Err(ProduceError::UnknownPartition {
                    topic: topic_name.to_string(),
                    partitions,
                    index,
                    partition: p,
                });
            }
        }
    }
    let chosen = choose_partitions(
        plugins,
        topic_name,
        &topic.settings,
        &records,
        partitions as u32,
        now,
    )?;

    // Group by partition, keeping each record's position in the request.
    let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, &p) in chosen.iter().enumerate() {
        by_partition.entry(p).or_default().push(i);
    }
    let mut placements = vec![
        Placement {
            partition: 0,
            offset: -1
        };
        records.len()
    ];
    for (partition, indices) in by_partition {
        let batch = encode(&records, &indices, now);
        let me = broker.config().broker.node_id;
        let leader = topic.assignment(partition).map(|a| a.leader).unwrap_or(-1);
        let replica = topic
            .partition(partition)
            .filter(|_| leader == me)
            .ok_or_else(|| ProduceError::NotLeader {
                topic: topic_name.to_string(),
                partition,
                leader,
            })?;
        let (info, _) = replica
            .append(&batch, now)
            .map_err(|source| ProduceError::Append { partition, source })?;
        broker
            .metrics()
            .produced(replica.topic_name(), batch.len(), indices.len() as u64);
        for (n, &i) in indices.iter().enumerate() {
            placements[i] = Placement {
                partition,
                offset: info.base_offset + n as i64,
            };
        }
    }
    broker.notify_appended();
    Ok(placements)
}

/// One partition per record: the caller's choice where given, otherwise the topic's
/// partitioner plugin, otherwise murmur2 of the key (keyless records round robin).
///
/// Public so `host/examples/plugin_bench.rs` times the broker's own path with and
/// without a plugin.
pub fn choose_partitions(
    plugins: &Plugins,
    topic: &str,
    settings: &crate::config::topic::TopicSettings,
    records: &[NewRecord],
    partitions: u32,
    now: i64,
) -> Result<Vec<i32>, ProduceError> {
    let unplaced: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].partition.is_none())
        .collect();
    let mut chosen: Vec<i32> = records.iter().map(|r| r.partition.unwrap_or(-1)).collect();
    if unplaced.is_empty() {
        return Ok(chosen);
    }
    let builtin = |records: &[NewRecord], indices: &[usize], chosen: &mut Vec<i32>| {
        let rr = ROUND_ROBIN.fetch_add(1, Ordering::Relaxed) % partitions;
        for &i in indices {
            chosen[i] = match &records[i].key {
                Some(key) => partition_for_key(key, partitions) as i32,
                None => rr as i32,
            };
        }
    };
    match &settings.partitioner {
        None => builtin(records, &unplaced, &mut chosen),
        Some(plugin) => {
            let columns = columns(topic, records, &unplaced, now);
            match plugins.partition(plugin, columns, partitions) {
                Ok(picked) => {
                    for (&i, p) in unplaced.iter().zip(picked) {
                        chosen[i] = p as i32;
                    }
                }
                Err(error) if settings.partitioner_fallback => {
                    tracing::warn!(topic, plugin = %plugin, %error, "partitioner plugin failed; falling back to murmur2");
                    builtin(records, &unplaced, &mut chosen);
                }
                Err(error) => {
                    return Err(ProduceError::Partitioner {
                        plugin: plugin.clone(),
                        error,
                    })
                }
            }
        }
    }
    Ok(chosen)
}

/// The records at `indices` as plugin columns (public for the plugin benchmark).
pub fn columns(topic: &str, records: &[NewRecord], indices: &[usize], now: i64) -> Columns {
    // Sized up front: growing the buffers record by record cost as much as the plugin's
    // hashing did (tests/bench, `plugin_bench`).
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    let (mut headers, mut bytes) = (0, 0);
    for &i in indices {
        let r = &records[i];
        bytes += len(&r.key) + len(&r.value);
        headers += r.headers.len();
        for (k, v) in &r.headers {
            bytes += k.len() + len(v);
        }
    }
    let mut builder = ColumnsBuilder::new(topic, -1);
    builder.reserve(indices.len(), headers, bytes);
    for &i in indices {
        let r = &records[i];
        builder.push_with(
            r.key.as_deref(),
            r.value.as_deref(),
            r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_deref())),
            r.timestamp.unwrap_or(now),
            -1,
        );
    }
    builder.build()
}

/// One RecordBatch v2 holding the records at `indices`.
fn encode(records: &[NewRecord], indices: &[usize], now: i64) -> Bytes {
    let data: Vec<RecordData> = indices
        .iter()
        .map(|&i| {
            let r = &records[i];
            RecordData {
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
                timestamp: r.timestamp.unwrap_or(now),
            }
        })
        .collect();
    encode_batch(&data, Compression::None)
        .expect("encoding an uncompressed batch of in-memory records cannot fail")
}
