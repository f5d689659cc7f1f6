//! Where each transform partition is: the next input offset to process and, for
//! exactly-once transforms, the producer identity and the next sequence number per
//! output partition at that position. Kept in the compacted internal topic
//! `__quiver_transforms`, one record per (transform, input partition), written after
//! the outputs it covers, so a restart resumes from the last record and a replay
//! regenerates outputs with the sequence numbers they had the first time.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::spec::TransformSpec;
use crate::partition::keyed::{self, KeyedError};
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
    /// The producer epoch of the runner that wrote this (its input partition's leader
    /// epoch; 0 for producer ids from before epochs were bumped). A runner that finds
    /// a higher one here is not the newest and does not start.
    #[serde(default)]
    pub producer_epoch: i16,
    /// When this was written, ms since the epoch.
    #[serde(default)]
    pub written_ms: i64,
}

/// Why progress could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{PROGRESS_TOPIC}: {0}")]
pub struct ProgressError(#[from] KeyedError);

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

/// Every progress record of a replica of `__quiver_transforms`, latest per key.
pub fn load(partition: &Partition) -> Result<BTreeMap<String, Progress>, ProgressError> {
    Ok(keyed::load(partition, "transform progress")?)
}

/// One batch of progress records (a `None` deletes the key).
pub fn encode(records: &[(String, Option<&Progress>)], now: i64) -> Result<Bytes, ProgressError> {
    Ok(keyed::encode(records, now)?)
}

/// Appends progress records to the local leader `partition` (acks=1: for tombstones).
pub fn write(
    partition: &Partition,
    records: &[(String, Option<&Progress>)],
    now: i64,
) -> Result<(), ProgressError> {
    Ok(keyed::write(partition, records, now)?)
}
