//! A compacted partition used as a small key/value store of JSON records: what the
//! broker's own runners keep their positions in (`__quiver_transforms`,
//! `__quiver_mirrors`). Keys are text; a null value deletes its key, and compaction
//! keeps the latest record per key.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::encode::{encode_batch, RecordData};
use super::Partition;

/// Why records could not be read or encoded.
#[derive(Debug, thiserror::Error)]
pub enum KeyedError {
    /// Reading the partition failed.
    #[error("reading offset {offset}: {reason}")]
    Read {
        /// Where.
        offset: i64,
        /// Why.
        reason: String,
    },
    /// Encoding or appending failed.
    #[error("writing: {0}")]
    Write(String),
}

/// Every record of a replica, latest per key. Records that do not decode as `T` are
/// skipped with a warning naming `what` they were meant to be.
///
/// Reads to the replica's log end, not its high watermark: a follower learns the high
/// watermark late, and the runners write a position only after what it covers is
/// committed, so even one that is not committed yet names a position safe to resume
/// from.
pub fn load<T: DeserializeOwned>(
    partition: &Partition,
    what: &str,
) -> Result<BTreeMap<String, T>, KeyedError> {
    let mut out = BTreeMap::new();
    let end = partition.log().log_end_offset();
    let mut offset = partition.log().log_start_offset();
    while offset < end {
        let read = partition
            .log()
            .read(offset, 1024 * 1024, end, true)
            .map_err(|e| KeyedError::Read {
                offset,
                reason: e.to_string(),
            })?;
        let mut bytes = read.records;
        if bytes.is_empty() {
            break;
        }
        let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|e| KeyedError::Read {
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
            match record.value.as_deref().map(serde_json::from_slice::<T>) {
                Some(Ok(value)) => {
                    out.insert(key, value);
                }
                Some(Err(e)) => {
                    tracing::warn!(key, offset = record.offset, error = %e, "skipped an unreadable {what} record");
                }
                None => {
                    out.remove(&key);
                }
            }
        }
        if next == offset {
            break;
        }
        offset = next;
    }
    Ok(out)
}

/// One batch of records (a `None` deletes the key).
pub fn encode<T: Serialize>(
    records: &[(String, Option<&T>)],
    now: i64,
) -> Result<Bytes, KeyedError> {
    let data: Vec<RecordData> = records
        .iter()
        .map(|(key, value)| {
            let value = value
                .map(|p| serde_json::to_vec(p).map(Bytes::from))
                .transpose()
                .map_err(|e| KeyedError::Write(e.to_string()))?;
            Ok(RecordData {
                key: Some(Bytes::from(key.clone())),
                value,
                headers: Vec::new(),
                timestamp: now,
            })
        })
        .collect::<Result<_, KeyedError>>()?;
    encode_batch(&data, Compression::None).map_err(KeyedError::Write)
}

/// Appends records to the local leader `partition` (acks=1: used for tombstones, whose
/// loss only leaves a stale record behind).
pub fn write<T: Serialize>(
    partition: &Partition,
    records: &[(String, Option<&T>)],
    now: i64,
) -> Result<(), KeyedError> {
    let batch = encode(records, now)?;
    partition
        .append(&batch, now)
        .map_err(|e| KeyedError::Write(e.to_string()))?;
    Ok(())
}
