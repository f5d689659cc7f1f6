//! Compaction against real files: what survives, what it keeps of each batch, and what a
//! crash at each step of the segment swap leaves behind.

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

use super::super::batch::{BatchHeader, Batches};
use super::super::{Log, LogConfig};
use super::CrashPoint;

const PRODUCER: i64 = 7;
const EPOCH: i16 = 3;

/// One record to write: key, value (`None` = tombstone).
type Kv = (Option<String>, Option<String>);

fn kv(key: &str, value: &str) -> Kv {
    (Some(key.to_string()), Some(value.to_string()))
}

fn tombstone(key: &str) -> Kv {
    (Some(key.to_string()), None)
}

/// Encodes one batch. With `producer`, records carry that producer id, epoch 3 and
/// sequences from `base_sequence`; timestamps start at `ts` and rise by one.
fn encode(records: &[Kv], ts: i64, codec: Compression, producer: Option<(i64, i32)>) -> Vec<u8> {
    let (producer_id, producer_epoch, base_sequence) = match producer {
        Some((id, seq)) => (id, EPOCH, seq),
        None => (-1, -1, -1),
    };
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let mut headers = IndexMap::new();
            headers.insert(
                StrBytes::from_static_str("h"),
                Some(Bytes::from(format!("header-{i}"))),
            );
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // Offset minus sequence must stay constant for the encoder to keep one
                // batch; it then writes `base_sequence` as the batch's base sequence.
                sequence: base_sequence.wrapping_add(i as i32),
                timestamp: ts + i as i64,
                key: key.clone().map(Bytes::from),
                value: value.clone().map(Bytes::from),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .unwrap();
    buf.to_vec()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: -1,
        delete_retention_ms: 5_000,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn append(log: &Log, records: &[Kv], ts: i64) -> i64 {
    let bytes = encode(records, ts, Compression::None, None);
    log.append(&bytes, ts).unwrap().base_offset
}

/// Every batch from the log start to the end, raw.
fn raw_batches(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        assert!(!read.records.is_empty(), "no progress at offset {offset}");
        for item in Batches::new(&read.records) {
            let (header, range) = item.unwrap();
            offset = header.last_offset() + 1;
            out.push(read.records[range].to_vec());
        }
    }
    out
}

/// Every record in the log, decoded.
fn all_records(log: &Log) -> Vec<Record> {
    raw_batches(log)
        .into_iter()
        .flat_map(|b| {
            RecordBatchDecoder::decode(&mut Bytes::from(b))
                .unwrap()
                .records
        })
        .collect()
}

/// (offset, key, value) of every record.
fn triples(log: &Log) -> Vec<(i64, String, Option<String>)> {
    all_records(log)
        .into_iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            )
        })
        .collect()
}

/// Key -> value of its last record (a tombstone is `None`), reading the whole log.
fn latest(log: &Log) -> BTreeMap<String, Option<String>> {
    triples(log).into_iter().map(|(_, k, v)| (k, v)).collect()
}

fn active_base(log: &Log) -> i64 {
    *log.state.lock().segments.keys().next_back().unwrap()
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".deleted"))
        .collect()
}

/// 60 batches of 4 updates over 10 keys: several closed segments full of overwrites.
fn fill(log: &Log) -> Vec<(i64, String, Option<String>)> {
    let mut written = Vec::new();
    for b in 0..60i64 {
        let records: Vec<Kv> = (0..4)
            .map(|i| {
                kv(
                    &format!("k{}", (b * 4 + i) % 10),
                    &format!("v{}", b * 4 + i),
                )
            })
            .collect();
        let base = append(log, &records, 1_000 + b);
        for (i, (k, v)) in records.into_iter().enumerate() {
            written.push((base + i as i64, k.unwrap(), v));
        }
    }
    written
}

/// What compaction should leave: below `active`, only each key's last record there;
/// from `active` on, everything.
fn expected_after(
    written: &[(i64, String, Option<String>)],
    active: i64,
) -> Vec<(i64, String, Option<String>)> {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (offset, key, _) in written.iter().filter(|(o, _, _)| *o < active) {
        last.insert(key, *offset);
    }
    written
        .iter()
        .filter(|(o, k, _)| *o >= active || last[k.as_str()] == *o)
        .cloned()
        .collect()
}

#[test]
fn keeps_the_latest_record_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), 0).unwrap();
    let written = fill(&log);
    let active = active_base(&log);
    let active_path = log.state.lock().active().log_path().to_path_buf();
    let active_bytes = std::fs::read(&active_path).unwrap();
    let segments = log.segment_count();
    assert!(segments > 4, "the test needs several closed segments");

    let stats = log.compact(10_000).unwrap().expect("a pass was due");
    assert_eq!(stats.cleaned_up_to, active);
    assert_eq!(stats.records_removed as usize, {
        let kept_below = expected_after(&written, active)
            .iter()
            .filter(|(o, _, _)| *o < active)
            .count();
        written.iter().filter(|(o, _, _)| *o < active).count() - kept_below
    });
    assert!(stats.bytes_after < stats.bytes_before);
    assert_eq!(triples(&log), expected_after(&written, active));
    assert_eq!(log.log_end_offset(), 240);
    // The active segment is neither rewritten nor replaced.
    assert_eq!(std::fs::read(&active_path).unwrap(), active_bytes);
    assert_eq!(active_base(&log), active);
    assert!(leftovers(dir.path()).is_empty());

    // Nothing dirty is left: no pass is due.
    assert!(log.compact(10_000).unwrap().is_none());

    // A second pass once the active segment has rolled merges the small clean segments.
    for b in 0..8 {
        append(&log, &[kv("k0", &format!("late{b}")), kv("x", "y")], 2_000);
    }
    let before = log.segment_count();
    let second = log.compact(10_000).unwrap().unwrap();
    assert!(second.segments_after < before, "{second:?}");
    let model: BTreeMap<String, Option<String>> = written
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .chain([
            ("k0".to_string(), Some("late7".to_string())),
            ("x".to_string(), Some("y".to_string())),
        ])
        .collect();
    assert_eq!(latest(&log), model);

    // Indexes of the rewritten segments are consistent: every offset reads back.
    let after = triples(&log);
    for (offset, key, value) in &after {
        let read = log.read(*offset, 1, i64::MAX, true).unwrap();
        let mut bytes = read.records;
        let got = RecordBatchDecoder::decode(&mut bytes).unwrap().records;
        let hit = got
            .iter()
            .find(|r| r.offset == *offset)
            .expect("offset found");
        assert_eq!(hit.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(hit.value.as_deref(), value.as_deref().map(str::as_bytes));
    }
    drop(log);
    let reopened = Log::open(dir.path(), config(), 0).unwrap();
    assert_eq!(triples(&reopened), after);
    assert!(reopened.compact(10_000).unwrap().is_none());
}

#[test]
fn dirty_ratio_and_compaction_lag_hold_the_cleaner_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 60_000,
            ..config()
        },
        0,
    )
    .unwrap();
    // Distinct keys only: compaction removes nothing, so the clean part stays large.
    let mut next_key = 0;
    let mut write_until_rolled = |log: &Log, segments: usize| {
        let target = log.segment_count() + segments;
        while log.segment_count() < target {
            let records: Vec<Kv> = (0..3)
                .map(|i| kv(&format!("u{}", next_key + i), "value"))
                .collect();
            next_key += 3;
            append(log, &records, 1_000);
        }
    };
    write_until_rolled(&log, 6);
    // Record timestamps are around 1_000: younger than the lag at 30_000.
    assert!(log.compact(30_000).unwrap().is_none());
    let first = log.compact(70_000).unwrap().unwrap();
    assert_eq!(first.records_removed, 0);
    let clean_segments = log.segment_count() - 1;
    // One more closed segment is far below half of the cleanable bytes.
    write_until_rolled(&log, 1);
    assert!(log.compact(70_000).unwrap().is_none());
    // As many dirty segments as clean ones (plus the one above) tip the ratio.
    write_until_rolled(&log, clean_segments);
    let second = log.compact(70_000).unwrap().unwrap();
    assert_eq!(second.records_removed, 0);
    assert_eq!(second.cleaned_up_to, active_base(&log));
}

#[test]
fn tombstones_stay_until_delete_retention_passed_since_first_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), 0).unwrap();
    append(&log, &[kv("a", "1"), kv("b", "1")], 100);
    append(&log, &[kv("a", "2")], 100);
    let tomb = append(&log, &[tombstone("a"), kv("c", "1")], 100);
    // Roll so the tombstone sits in a closed segment.
    log.state.lock().roll(dir.path(), 0).unwrap();
    append(&log, &[kv("d", "1")], 100);

    // First pass at t=1000: a's values go, its tombstone stays (horizon 6000).
    log.compact(1_000).unwrap().unwrap();
    assert_eq!(
        triples(&log),
        vec![
            (1, "b".into(), Some("1".into())),
            (tomb, "a".into(), None),
            (tomb + 1, "c".into(), Some("1".into())),
            (tomb + 2, "d".into(), Some("1".into())),
        ]
    );
    // Timestamps of retained records did not change even though the tombstone's batch
    // now carries its delete horizon in the base timestamp.
    let tomb_record = all_records(&log)
        .into_iter()
        .find(|r| r.offset == tomb)
        .unwrap();
    assert_eq!(tomb_record.timestamp, 100);
    assert!(tomb_record.delete_horizon);

    // Just before the horizon: nothing due, nothing removed, even after a restart.
    assert!(log.compact(5_999).unwrap().is_none());
    drop(log);
    let log = Log::open(dir.path(), config(), 0).unwrap();
    assert!(log.compact(5_999).unwrap().is_none());
    assert_eq!(latest(&log).get("a"), Some(&None));

    // At the horizon the pending expiry alone triggers a pass that drops the tombstone.
    let stats = log.compact(6_000).unwrap().unwrap();
    assert_eq!(stats.tombstones_removed, 1);
    assert!(!latest(&log).contains_key("a"));
    assert_eq!(
        triples(&log)
            .into_iter()
            .map(|(o, k, _)| (o, k))
            .collect::<Vec<_>>(),
        vec![
            (1, "b".into()),
            (tomb + 1, "c".into()),
            (tomb + 2, "d".into())
        ]
    );
    assert!(log.compact(100_000).unwrap().is_none());
}

#[test]
fn compressed_batches_keep_their_codec_and_stay_one_batch() {
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config(), 0).unwrap();
        // Ten records over five keys in one batch, then a batch overwriting two keys.
        let first: Vec<Kv> = (0..10)
            .map(|i| kv(&format!("k{}", i % 5), &format!("first-{i}")))
            .collect();
        log.append(&encode(&first, 500, codec, None), 0).unwrap();
        let second = [kv("k0", "second-0"), kv("k1", "second-1")];
        log.append(&encode(&second, 600, codec, None), 0).unwrap();
        log.state.lock().roll(dir.path(), 0).unwrap();
        append(&log, &[kv("tail", "t")], 0);

        log.compact(1_000).unwrap().unwrap();
        let batches = raw_batches(&log);
        assert_eq!(batches.len(), 3, "{codec:?}: one batch per input batch");
        let first_header = BatchHeader::parse(&batches[0]).unwrap();
        assert_eq!(first_header.compression(), codec, "{codec:?}");
        assert_eq!(first_header.base_offset, 0);
        assert_eq!(first_header.last_offset_delta, 9, "last offset kept");
        assert_eq!(first_header.records_count, 3);
        super::super::batch::verify_crc(&batches[0]).unwrap();
        let records = RecordBatchDecoder::decode(&mut Bytes::from(batches[0].clone()))
            .unwrap()
            .records;
        let got: Vec<(i64, i64, &[u8])> = records
            .iter()
            .map(|r| (r.offset, r.timestamp, r.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (7, 507, &b"first-7"[..]),
                (8, 508, &b"first-8"[..]),
                (9, 509, &b"first-9"[..]),
            ],
            "{codec:?}"
        );
        assert_eq!(first_header.max_timestamp, 509);
        assert_eq!(
            records[0].headers.get(&StrBytes::from_static_str("h")),
            Some(&Some(Bytes::from("header-7")))
        );
        assert_eq!(
            BatchHeader::parse(&batches[1]).unwrap().compression(),
            codec
        );
    }
}

#[test]
fn producer_metadata_survives_and_last_batches_stay_as_empty_headers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(), 0).unwrap();
    let batches: [&[Kv]; 3] = [
        &[kv("a", "1"), kv("b", "1"), kv("c", "1")],
        &[kv("a", "2"), kv("b", "2")],
        &[kv("z", "1")],
    ];
    let mut sequence = 10;
    for records in batches {
        let bytes = encode(records, 100, Compression::Lz4, Some((PRODUCER, sequence)));
        log.append(&bytes, 0).unwrap();
        sequence += records.len() as i32;
    }
    // Another producer's batch wholly superseded, and then its key rewritten by the first.
    let other = encode(&[kv("z", "0")], 100, Compression::None, Some((99, 0)));
    log.append(&other, 0).unwrap();
    let last = encode(
        &[kv("z", "2")],
        100,
        Compression::None,
        Some((PRODUCER, sequence)),
    );
    log.append(&last, 0).unwrap();
    log.state.lock().roll(dir.path(), 0).unwrap();
    append(&log, &[kv("tail", "t")], 0);
    let before: Vec<BatchHeader> = raw_batches(&log)
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap())
        .collect();

    log.compact(1_000).unwrap().unwrap();
    let after: Vec<BatchHeader> = raw_batches(&log)
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap())
        .collect();
    // Batch 0 keeps c; batch 1 keeps a and b; batch 2 (z=1) is superseded and not its
    // producer's last, so it goes; producer 99's only batch stays as an empty header;
    // the producer's last batch keeps z=2.
    let kept = [0usize, 1, 3, 4, 5];
    assert_eq!(after.len(), kept.len());
    for (header, &i) in after.iter().zip(&kept) {
        let original = before[i];
        assert_eq!(header.base_offset, original.base_offset);
        assert_eq!(header.last_offset_delta, original.last_offset_delta);
        assert_eq!(header.producer_id, original.producer_id);
        assert_eq!(header.producer_epoch, original.producer_epoch);
        assert_eq!(header.base_sequence, original.base_sequence);
        assert_eq!(
            header.partition_leader_epoch,
            original.partition_leader_epoch
        );
    }
    assert_eq!(after[0].records_count, 1);
    assert_eq!(after[0].compression(), Compression::Lz4);
    assert_eq!(after[1].records_count, 2);
    assert_eq!(
        after[2].records_count, 0,
        "producer 99's last batch is kept empty"
    );
    assert_eq!(after[2].producer_id, 99);
    let records = all_records(&log);
    let c = records.iter().find(|r| r.offset == 2).unwrap();
    assert_eq!(
        (c.producer_id, c.producer_epoch, c.sequence),
        (PRODUCER, EPOCH, 12)
    );
    let b = records.iter().find(|r| r.offset == 4).unwrap();
    assert_eq!(b.sequence, 14);
    // Time lookups skip the empty batch, whose max timestamp no record has.
    assert!(log.max_timestamp().unwrap().is_some());
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((2, 102)));
}

/// Writes the same updates into a fresh log and returns it with the records the log
/// should hold once compacted.
fn crash_setup(dir: &std::path::Path) -> (Log, Vec<(i64, String, Option<String>)>) {
    let log = Log::open(dir, config(), 0).unwrap();
    let written = fill(&log);
    let expected = expected_after(&written, active_base(&log));
    (log, expected)
}

#[test]
fn a_crash_at_any_step_of_the_swap_leaves_a_correct_log() {
    for point in [
        CrashPoint::CleanedWritten,
        CrashPoint::SwapRenamed,
        CrashPoint::OriginalDeleted,
        CrashPoint::Swapped,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (log, expected) = crash_setup(dir.path());
        let before = triples(&log);
        let model = latest(&log);
        log.crash_before(point);
        assert!(log.compact(10_000).is_err(), "{point:?}");
        let left = leftovers(dir.path());
        match point {
            CrashPoint::CleanedWritten => {
                assert!(left.iter().any(|n| n.ends_with(".log.cleaned")), "{left:?}")
            }
            CrashPoint::SwapRenamed | CrashPoint::OriginalDeleted => {
                assert!(left.iter().any(|n| n.ends_with(".log.swap")), "{left:?}")
            }
            CrashPoint::Swapped => assert!(left.is_empty(), "{left:?}"),
        }
        drop(log); // no close: as after kill -9

        let log = Log::open(dir.path(), config(), 0).unwrap();
        assert!(leftovers(dir.path()).is_empty(), "{point:?}");
        let now = triples(&log);
        // Either the old or the new version of each group: offsets increase, every record
        // is one that was written there, and the latest value of every key is intact.
        assert!(now.windows(2).all(|w| w[0].0 < w[1].0), "{point:?}");
        assert!(now.iter().all(|r| before.contains(r)), "{point:?}");
        assert_eq!(latest(&log), model, "{point:?}");
        if point != CrashPoint::CleanedWritten {
            assert_ne!(now, before, "{point:?}: the committed swap was completed");
        }
        // The next pass finishes the job.
        log.compact(10_000).unwrap();
        assert_eq!(triples(&log), expected, "{point:?}");
        drop(log);
        let log = Log::open(dir.path(), config(), 0).unwrap();
        assert_eq!(triples(&log), expected, "{point:?}");
    }
}

#[test]
fn a_crash_between_renaming_indexes_and_log_is_completed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = crash_setup(dir.path());
    let model = latest(&log);
    log.crash_before(CrashPoint::OriginalDeleted);
    assert!(log.compact(10_000).is_err());
    drop(log);
    // Finish deleting the group's originals and rename the index swap files, as a crash
    // inside the final renames (which move the log file last) would leave them.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let swap = names.iter().find(|n| n.ends_with(".log.swap")).unwrap();
    let stem = swap.split('.').next().unwrap();
    for suffix in ["index", "timeindex"] {
        std::fs::rename(
            dir.path().join(format!("{stem}.{suffix}.swap")),
            dir.path().join(format!("{stem}.{suffix}")),
        )
        .unwrap();
    }
    let log = Log::open(dir.path(), config(), 0).unwrap();
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(latest(&log), model);
    let now = triples(&log);
    assert!(now.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn unfinished_output_alone_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = crash_setup(dir.path());
    let before = triples(&log);
    drop(log);
    // A torn `.cleaned` log and an index swap without its log: neither is committed.
    std::fs::write(dir.path().join("00000000000000000000.log.cleaned"), b"torn").unwrap();
    std::fs::write(dir.path().join("00000000000000000000.index.swap"), b"x").unwrap();
    let log = Log::open(dir.path(), config(), 0).unwrap();
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(triples(&log), before);
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(u8, Option<u8>)>),
    Compact { advance: i64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (0u8..12, proptest::option::weighted(0.8, any::<u8>()));
    prop_oneof![
        6 => proptest::collection::vec(record, 1..6).prop_map(Op::Write),
        2 => (0i64..4_000).prop_map(|advance| Op::Compact { advance }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_exactly_the_latest_value_per_key(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 400, index_interval_bytes: 64, ..config() };
        let mut log = Log::open(dir.path(), config.clone(), 0).unwrap();
        let mut now = 0i64;
        // Every record written, by offset, and the latest (offset, value) per key.
        let mut written: BTreeMap<i64, (String, Option<String>)> = BTreeMap::new();
        let mut model: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write(records) => {
                    let records: Vec<Kv> = records
                        .iter()
                        .map(|(k, v)| (Some(format!("k{k}")), v.map(|v| format!("s{step}-{v}"))))
                        .collect();
                    let base = append(&log, &records, now);
                    for (i, (k, v)) in records.into_iter().enumerate() {
                        let offset = base + i as i64;
                        let k = k.unwrap();
                        written.insert(offset, (k.clone(), v.clone()));
                        model.insert(k, (offset, v));
                    }
                }
                Op::Compact { advance } => {
                    now += advance;
                    log.compact(now).unwrap();
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), config.clone(), 0).unwrap();
                }
            }
            let got = triples(&log);
            prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
            for (offset, key, value) in &got {
                prop_assert_eq!(&written[offset], &(key.clone(), value.clone()));
            }
            let last: BTreeMap<String, (i64, Option<String>)> =
                got.into_iter().map(|(o, k, v)| (k, (o, v))).collect();
            for (key, (offset, value)) in &model {
                match (last.get(key), value) {
                    (Some(found), _) => prop_assert_eq!(found, &(*offset, value.clone())),
                    // Only a tombstone may have gone, and only once it expired.
                    (None, None) => prop_assert!(now >= config.delete_retention_ms),
                    (None, Some(_)) => prop_assert!(false, "latest value of {} lost", key),
                }
            }
            prop_assert_eq!(last.len() <= model.len(), true);
        }
    }
}
