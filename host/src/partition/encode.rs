//! Encoding batches the broker writes itself (HTTP produce, group metadata) or the CLI
//! sends, as a non-idempotent producer would.
//!
//! kafka-protocol's encoder starts a new batch whenever `offset - sequence` changes
//! between records; giving record i the sequence i - 1 keeps every record in one batch
//! and yields baseSequence -1, which marks the batch as not idempotent.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One record to encode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordData {
    /// Key, or null.
    pub key: Option<Bytes>,
    /// Value, or null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
}

/// Encodes `records` as one RecordBatch v2 with relative offsets 0.. (the log assigns
/// the real ones on append).
pub fn encode_batch<'a>(
    records: impl IntoIterator<Item = &'a RecordData>,
    compression: Compression,
) -> Result<Bytes, String> {
    encode(records, compression, None)
}

/// Encodes `records` as one idempotent RecordBatch v2 of `producer`: `(id, epoch, base
/// sequence)`, record i carrying sequence `base + i` (transform outputs, whose
/// sequence numbers let a replay be recognised as one).
pub fn encode_sequenced_batch<'a>(
    records: impl IntoIterator<Item = &'a RecordData>,
    compression: Compression,
    producer: (i64, i16, i32),
) -> Result<Bytes, String> {
    encode(records, compression, Some(producer))
}

fn encode<'a>(
    records: impl IntoIterator<Item = &'a RecordData>,
    compression: Compression,
    producer: Option<(i64, i16, i32)>,
) -> Result<Bytes, String> {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Without a producer, i - 1 keeps offset - sequence constant (one batch)
            // and makes the base sequence -1 (see the module docs).
            sequence: if producer.is_some() {
                base_sequence.wrapping_add(i as i32) & i32::MAX
            } else {
                i as i32 - 1
            },
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{BatchHeader, Batches};

    #[test]
    fn records_share_one_non_idempotent_batch() {
        let records: Vec<RecordData> = (0..50)
            .map(|i| RecordData {
                key: Some(Bytes::from(format!("k{i}"))),
                value: (i % 7 != 0).then(|| Bytes::from(format!("v{i}"))),
                headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
                timestamp: 1000 + i,
            })
            .collect();
        for codec in [Compression::None, Compression::Zstd] {
            let bytes = encode_batch(&records, codec).unwrap();
            assert_eq!(Batches::new(&bytes).count(), 1, "{codec:?}");
            let header = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(header.records_count, 50);
            assert_eq!(header.base_sequence, -1);
            assert_eq!(header.compression(), codec);
        }
    }
}
