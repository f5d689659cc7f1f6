//! Where each transform partition is: the next input offset to process and, for
//! exactly-once transforms, the producer identity and the next sequence number per
//! output partition at that position. Kept in the compacted internal topic
//! `__quiver_transforms`, one record per (transform, input partition), written after
//! the outputs it covers, so a restart resumes from the last record and a replay
//! regenerates outputs with the sequence numbers they had the first time.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use serde::{Deserialize, Serialize};

use super::spec::TransformSpec;
use crate::partition::encode::{encode_batch, RecordData};
use crate::partition::Partition;

/// The internal topic holding progress records.
pub const PROGRESS_TOPIC: &str = "__quiver_transforms";

/// One transform partition's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The next input offset to process.
    pub next_offset: i64,
    /// The producer id of the outputs (-1 for an at-least-once transform).
    pub producer_id: i64,
    /// The next sequence number per output partition, keyed `topic/partition`.
    #[serde(default)]
    pub sequences: BTreeMap<String, i32>,
    /// When this was written, ms since the epoch.
    #[serde(default)]
    pub written_ms: i64,
}

/// Why progress could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// Reading the topic failed.
    #[error("reading {PROGRESS_TOPIC} at offset {offset}: {reason}")]
    Read {
        /// Where.
        offset: i64,
        /// Why.
        reason: String,
    },
    /// Appending failed.
    #[error("writing {PROGRESS_TOPIC}: {0}")]
    Write(String),
}

/// The record key of a transform partition: readable, and unambiguous because
/// transform and topic names cannot contain `/`. The transform's id is part of it, so a
/// transform removed and created again under the same name starts afresh.
pub fn key(spec: &TransformSpec, partition: i32) -> String {
    format!("{}/{}/{}/{partition}", spec.name, spec.id, spec.input)
}

/// Whether a progress key belongs to `spec` (any of its partitions).
pub fn belongs_to(key: &str, spec: &TransformSpec) -> bool {
    let mut parts = key.splitn(3, '/');
    parts.next() == Some(spec.name.as_str()) && parts.next() == Some(spec.id.as_str())
}

/// The key of an output partition in [`Progress::sequences`].
pub fn output_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// Every progress record of a replica of `__quiver_transforms`, latest per key (a null
/// value, written when a transform is removed, deletes the key).
///
/// Reads to the replica's log end, not its high watermark: a follower learns the high
/// watermark late, and a progress record is only ever written after the outputs it
/// covers are committed, so even one that is not committed yet names a position that
/// is safe to resume from.
pub fn load(partition: &Partition) -> Result<BTreeMap<String, Progress>, ProgressError> {
    let mut progress = BTreeMap::new();
    let end = partition.log().log_end_offset();
    let mut offset = partition.log().log_start_offset();
    while offset < end {
        let read = partition
            .log()
            .read(offset, 1024 * 1024, end, true)
            .map_err(|e| ProgressError::Read {
                offset,
                reason: e.to_string(),
            })?;
        let mut bytes = read.records;
        if bytes.is_empty() {
            break;
        }
        let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|e| ProgressError::Read {
            offset,
            reason: e.to_string(),
        })?;
        let mut next = offset;
        for record in sets.into_iter().flat_map(|s| s.records) {
            next = next.max(record.offset + 1);
            if record.offset < offset || record.control {
                continue;
            }
            let Some(key) = record.key.as_deref() else {
                continue;
            };
            let key = String::from_utf8_lossy(key).into_owned();
            match record
                .value
                .as_deref()
                .map(serde_json::from_slice::<Progress>)
            {
                Some(Ok(value)) => {
                    progress.insert(key, value);
                }
                Some(Err(e)) => {
                    tracing::warn!(key, offset = record.offset, error = %e, "skipped an unreadable transform progress record");
                }
                None => {
                    progress.remove(&key);
                }
            }
        }
        if next == offset {
            break;
        }
        offset = next;
    }
    Ok(progress)
}

/// One batch of progress records (a `None` deletes the key).
pub fn encode(records: &[(String, Option<&Progress>)], now: i64) -> Result<Bytes, ProgressError> {
    let data: Vec<RecordData> = records
        .iter()
        .map(|(key, value)| {
            let value = value
                .map(|p| serde_json::to_vec(p).map(Bytes::from))
                .transpose()
                .map_err(|e| ProgressError::Write(e.to_string()))?;
            Ok(RecordData {
                key: Some(Bytes::from(key.clone())),
                value,
                headers: Vec::new(),
                timestamp: now,
            })
        })
        .collect::<Result<_, ProgressError>>()?;
    encode_batch(&data, Compression::None).map_err(ProgressError::Write)
}

/// Appends progress records to the local leader `partition` (acks=1: used for
/// tombstones, whose loss only leaves a stale record behind).
pub fn write(
    partition: &Partition,
    records: &[(String, Option<&Progress>)],
    now: i64,
) -> Result<(), ProgressError> {
    let batch = encode(records, now)?;
    partition
        .append(&batch, now)
        .map_err(|e| ProgressError::Write(e.to_string()))?;
    Ok(())
}
