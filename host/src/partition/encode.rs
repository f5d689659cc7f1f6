//! Encoding batches the broker writes itself (HTTP produce, group metadata, transform
//! outputs) or the CLI sends: RecordBatch v2, written record by record so that every
//! header survives, repeated names included; as a non-idempotent producer would
//! (producer id and base sequence -1) unless a producer is given.

use bytes::Bytes;
use kafka_protocol::records::Compression;

use crate::log::batch::{build_batch, put_varint, put_varlong, with_codec, BatchHeader};

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

/// A record the broker encodes, borrowed from wherever it lives: a [`RecordData`], or
/// a plugin's output columns, which then reach the batch without a copy in between.
pub trait OutRecord {
    /// Key, or null.
    fn key(&self) -> Option<&[u8]>;
    /// Value, or null (a tombstone).
    fn value(&self) -> Option<&[u8]>;
    /// Timestamp, ms since the epoch.
    fn timestamp(&self) -> i64;
    /// Headers in order, repeats kept; asked twice per record (count, then bytes).
    fn headers(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)>;

    /// Roughly what the record takes in a batch, for sizing batches.
    fn size_hint(&self) -> usize {
        self.key().map_or(0, <[u8]>::len) + self.value().map_or(0, <[u8]>::len) + 64
    }
}

impl OutRecord for RecordData {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    fn timestamp(&self) -> i64 {
        self.timestamp
    }

    fn headers(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_deref()))
    }
}

/// Encodes `records` as one RecordBatch v2 with relative offsets 0.. (the log assigns
/// the real ones on append).
pub fn encode_batch<'a, R: OutRecord + 'a>(
    records: impl IntoIterator<Item = &'a R>,
    compression: Compression,
) -> Result<Bytes, String> {
    encode(records, compression, None)
}

/// Encodes `records` as one idempotent RecordBatch v2 of `producer`: `(id, epoch, base
/// sequence)`, record i carrying sequence `base + i` (transform outputs, whose
/// sequence numbers let a replay be recognised as one).
pub fn encode_sequenced_batch<'a, R: OutRecord + 'a>(
    records: impl IntoIterator<Item = &'a R>,
    compression: Compression,
    producer: (i64, i16, i32),
) -> Result<Bytes, String> {
    encode(records, compression, Some(producer))
}

fn encode<'a, R: OutRecord + 'a>(
    records: impl IntoIterator<Item = &'a R>,
    compression: Compression,
    producer: Option<(i64, i16, i32)>,
) -> Result<Bytes, String> {
    let records: Vec<&R> = records.into_iter().collect();
    let Some(first) = records.first() else {
        return Err("a batch needs at least one record".into());
    };
    let count = i32::try_from(records.len()).map_err(|_| "too many records for one batch")?;
    // Built here rather than by kafka-protocol's encoder, whose records keep headers in
    // a map: a record's repeated header names (which Kafka allows) must all survive.
    let base_timestamp = first.timestamp();
    let mut plain = Vec::with_capacity(records.iter().map(|r| r.size_hint()).sum());
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        body.clear();
        body.push(0); // record attributes: unused in v2
        put_varlong(&mut body, r.timestamp() - base_timestamp);
        put_varint(&mut body, i as i64);
        put_nullable(&mut body, r.key());
        put_nullable(&mut body, r.value());
        put_varint(&mut body, r.headers().count() as i64);
        for (key, value) in r.headers() {
            put_varint(&mut body, key.len() as i64);
            body.extend_from_slice(key);
            put_nullable(&mut body, value);
        }
        put_varint(&mut plain, body.len() as i64);
        plain.extend_from_slice(&body);
    }
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let header = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: with_codec(0, compression),
        last_offset_delta: count - 1,
        base_timestamp,
        max_timestamp: records
            .iter()
            .map(|r| r.timestamp())
            .max()
            .unwrap_or(base_timestamp),
        producer_id,
        producer_epoch,
        base_sequence,
        records_count: count,
    };
    let mut out = Vec::with_capacity(plain.len() + 64);
    build_batch(&header, &plain, count, &mut out).map_err(|e| e.to_string())?;
    Ok(Bytes::from(out))
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
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

    #[test]
    fn every_field_and_repeated_header_survives_a_round_trip() {
        use crate::log::batch::{records_section, Records};
        let headers = vec![
            ("hop".to_string(), Some(Bytes::from_static(b"a"))),
            ("x".to_string(), None),
            ("hop".to_string(), Some(Bytes::from_static(b"b"))),
        ];
        let records = vec![
            RecordData {
                key: None,
                value: Some(Bytes::from_static(b"v0")),
                headers: headers.clone(),
                timestamp: 2000,
            },
            RecordData {
                key: Some(Bytes::from_static(b"k1")),
                value: None,
                headers: vec![],
                timestamp: 1990,
            },
        ];
        for codec in [Compression::None, Compression::Lz4] {
            let bytes = encode_sequenced_batch(&records, codec, (7, 2, 40)).unwrap();
            crate::log::batch::verify_crc(&bytes).unwrap();
            let (header, plain) = records_section(&bytes).unwrap();
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence
                ),
                (7, 2, 40)
            );
            assert_eq!((header.base_timestamp, header.max_timestamp), (2000, 2000));
            let got: Vec<_> = Records::new(&plain).map(|r| r.unwrap()).collect();
            assert_eq!(got.len(), 2);
            assert_eq!((got[0].key, got[0].value), (None, Some(&b"v0"[..])));
            let names: Vec<_> = got[0].headers();
            assert_eq!(
                names,
                [
                    (&b"hop"[..], Some(&b"a"[..])),
                    (&b"x"[..], None),
                    (&b"hop"[..], Some(&b"b"[..]))
                ]
            );
            assert_eq!((got[1].key, got[1].value), (Some(&b"k1"[..]), None));
            assert_eq!(2000 + got[1].timestamp_delta, 1990);
            assert_eq!(got[1].offset_delta, 1);
        }
    }
}
