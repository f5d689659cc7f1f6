//! Record batches as the produce path and the log see them, with every codec.
//!
//! The first byte chooses the mode and the topic the batches are produced to (its
//! `compression.type` and whether it is compacted):
//! - mode 0: the rest is a produce request's record set, arbitrary bytes, checked by the
//!   broker's produce validation ([`quiver::partition::validate`], which recompresses
//!   when the topic's codec differs) and walked by the log's batch reader, record
//!   counter and record decoder. Whatever validation accepts must be whole batches with
//!   good CRCs whose records decode.
//! - mode 1: the rest is a compressed records section, decompressed with each codec.
//! - mode 2: the rest describes records (keys, values, headers, timestamps); they are
//!   encoded into a batch the way a producer does, with a codec the input picks, and the
//!   broker must accept that batch and give every record back exactly.

#![no_main]

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use libfuzzer_sys::fuzz_target;
use quiver::config::topic::{resolve, TopicSettings};
use quiver::config::LogDefaults;
use quiver::log::batch;
use quiver::partition::validate;

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// The most a fuzzed section may decompress to: enough for any input the fuzzer makes,
/// small enough that a decompression bomb costs milliseconds.
const DECOMPRESS_LIMIT: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let settings = topic(selector >> 2);
    match selector & 3 {
        0 => arbitrary_record_set(rest, &settings),
        1 => {
            for codec in CODECS {
                let _ = batch::decompress(rest, codec, DECOMPRESS_LIMIT);
            }
        }
        _ => producer_batch(rest, &settings),
    }
});

/// A topic whose compression.type and cleanup.policy come from `pick`.
fn topic(pick: u8) -> TopicSettings {
    const CODEC_NAMES: [&str; 6] = ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"];
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "compression.type".to_string(),
        CODEC_NAMES[usize::from(pick % 6)].to_string(),
    );
    if pick / 6 % 2 == 1 {
        overrides.insert("cleanup.policy".to_string(), "compact".to_string());
    }
    resolve(&LogDefaults::default(), &overrides)
}

fn arbitrary_record_set(bytes: &[u8], settings: &TopicSettings) {
    let bytes = Bytes::copy_from_slice(bytes);
    // The log's readers over the same bytes: none may panic.
    for item in batch::Batches::new(&bytes) {
        let Ok((_, range)) = item else { break };
        let one = &bytes[range];
        let _ = batch::verify_crc(one);
        let _ = batch::count_records(one);
        let _ = batch::has_null_key(one);
        if let Ok((_, plain)) = batch::records_section(one) {
            for record in batch::Records::new(&plain) {
                let Ok(record) = record else { break };
                let _ = record.headers();
            }
        }
    }
    let _ = batch::decode_records(&bytes, 0, i64::MAX);
    let Ok(accepted) = validate(&bytes, settings) else {
        return;
    };
    check_accepted(&accepted);
}

/// What validation hands to the log: whole batches, good CRCs, decodable records.
fn check_accepted(accepted: &[u8]) -> Vec<batch::DecodedRecord> {
    let mut end = 0;
    for item in batch::Batches::new(accepted) {
        let (header, range) = item.expect("an accepted record set parses");
        end = range.end;
        batch::verify_crc(&accepted[range.clone()]).expect("an accepted batch's CRC is good");
        let count =
            batch::count_records(&accepted[range]).expect("an accepted batch's records parse");
        assert_eq!(
            count, header.records_count,
            "an accepted batch's record count"
        );
    }
    assert_eq!(
        end,
        accepted.len(),
        "an accepted record set is whole batches"
    );
    let (_, records) = batch::decode_records(&Bytes::copy_from_slice(accepted), 0, i64::MAX)
        .expect("an accepted record set decodes");
    records
}

/// Reads fuzzer bytes as a list of length-prefixed fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A field of at most 255 bytes, or null.
    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.byte()?;
        if len == 0xff {
            return Some(None);
        }
        let len = usize::from(len).min(self.0.len());
        let (field, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(Some(field))
    }
}

fn producer_batch(input: &[u8], settings: &TopicSettings) {
    let mut fields = Fields(input);
    let Some(codec) = fields.byte() else { return };
    let codec = CODECS[usize::from(codec) % CODECS.len()];
    let mut records = Vec::new();
    while let (Some(flags), Some(key), Some(value)) =
        (fields.byte(), fields.bytes(), fields.bytes())
    {
        let offset = records.len() as i64;
        let mut headers = IndexMap::new();
        for _ in 0..flags % 4 {
            let (Some(Some(name)), Some(value)) = (fields.bytes(), fields.bytes()) else {
                break;
            };
            // The producer's record type keeps headers in a map of string keys.
            let name = String::from_utf8_lossy(name).into_owned();
            headers.insert(
                StrBytes::from_string(name),
                value.map(Bytes::copy_from_slice),
            );
        }
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            // A constant offset - sequence keeps every record in one batch.
            sequence: (offset - 1) as i32,
            timestamp: 1_700_000_000_000 + i64::from(flags >> 2) * 1_000 - offset,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers,
        });
    }
    if records.is_empty() {
        return;
    }
    let mut encoded = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut encoded,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .expect("a producer's batch encodes");
    let accepted = match validate(&encoded.freeze(), settings) {
        Ok(accepted) => accepted,
        Err(e) if settings.compact && records.iter().any(|r| r.key.is_none()) => {
            assert!(
                e.to_string().contains("key"),
                "keyless record refused for: {e}"
            );
            return;
        }
        Err(e) => panic!(
            "a well-formed {codec:?} batch of {} records was refused: {e}",
            records.len()
        ),
    };
    let decoded = check_accepted(&accepted);
    assert_eq!(decoded.len(), records.len(), "records given back");
    for (got, sent) in decoded.iter().zip(&records) {
        assert_eq!(got.offset, sent.offset);
        assert_eq!(got.timestamp, sent.timestamp);
        assert_eq!(got.key, sent.key);
        assert_eq!(got.value, sent.value);
        let headers: Vec<(String, Option<Bytes>)> = sent
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(got.headers, headers);
    }
}
