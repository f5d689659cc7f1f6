//! Behaviour of the whole log against real files in temporary directories.

use super::*;
use bytes::BytesMut;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

/// One batch whose records carry `values` and the given timestamps (one per value).
fn batch(values: &[String], timestamps: &[i64], compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = values
        .iter()
        .zip(timestamps)
        .enumerate()
        .map(|(i, (value, &timestamp))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp,
            key: None,
            value: Some(Bytes::from(value.clone())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.to_vec()
}

/// A batch of `n` records tagged `tag-0..n` with timestamps from `ts`.
pub(super) fn tagged(tag: &str, n: usize, ts: i64) -> Vec<u8> {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let timestamps: Vec<i64> = (0..n as i64).map(|i| ts + i).collect();
    batch(&values, &timestamps, Compression::None)
}

/// Decodes returned bytes into (offset, value) pairs.
pub(super) fn records(bytes: &Bytes) -> Vec<(i64, String)> {
    let mut buf = bytes.clone();
    RecordBatchDecoder::decode_all(&mut buf)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect()
}

/// Reads every record from the log start to the end.
pub(super) fn read_everything(log: &Log) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let result = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        let got = records(&result.records);
        assert!(!got.is_empty(), "no progress at offset {offset}");
        offset = got.last().unwrap().0 + 1;
        out.extend(got);
    }
    out
}

pub(super) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn append(log: &Log, bytes: Vec<u8>, now: i64) -> AppendInfo {
    log.append(&bytes, now).unwrap()
}

#[test]
fn a_leader_append_writes_offsets_and_epoch_without_touching_the_sent_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    append(&log, tagged("first", 2, 1000), 1);
    // 700 batches in one append: 1,400 slices, more than one vectored write takes.
    let sent: Vec<u8> = (0..700)
        .flat_map(|b| tagged(&format!("b{b}"), 1 + b % 3, 2000 + b as i64))
        .collect();
    let before = sent.clone();
    let info = log.append_as_leader(&sent, 7, 1).unwrap();
    assert_eq!(sent, before, "the producer's bytes are left as sent");
    assert_eq!(info.base_offset, 2);
    let total: i64 = (0..700).map(|b| 1 + b % 3).sum();
    assert_eq!(info.last_offset, 1 + total);

    let read = log.read(2, usize::MAX, i64::MAX, true).unwrap().records;
    let mut next = 2;
    let mut stored = Vec::new();
    for item in Batches::new(&read) {
        let (header, range) = item.unwrap();
        assert_eq!(header.base_offset, next, "batches follow each other");
        assert_eq!(header.partition_leader_epoch, 7);
        batch::verify_crc(&read[range.clone()]).unwrap();
        stored.extend_from_slice(&read[range.start + batch::LEADER_PREFIX_LEN..range.end]);
        next = header.last_offset() + 1;
    }
    assert_eq!(next, 2 + total);
    let sent_tails: Vec<u8> = Batches::new(&sent)
        .flat_map(|item| {
            let (_, range) = item.unwrap();
            sent[range.start + batch::LEADER_PREFIX_LEN..range.end].to_vec()
        })
        .collect();
    assert_eq!(
        stored, sent_tails,
        "everything after the prefix is stored as sent"
    );
    assert_eq!(
        log.latest_epoch(),
        Some(7),
        "the leader-epoch cache learnt the epoch"
    );
}

#[test]
fn append_and_read_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let mut expected = Vec::new();
    for b in 0..40 {
        let info = append(&log, tagged(&format!("b{b}"), 3, 1000 + b), 1);
        assert_eq!(info.base_offset, b * 3);
        assert_eq!(info.last_offset, b * 3 + 2);
        assert_eq!(info.max_timestamp, 1002 + b);
        expected.extend((0..3).map(|i| (b * 3 + i, format!("b{b}-{i}"))));
    }
    assert!(log.segment_count() > 3, "small segments should have rolled");
    assert_eq!(log.log_end_offset(), 120);
    assert_eq!(read_everything(&log), expected);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(files.contains(&"00000000000000000000.log".to_string()));
    assert!(files.contains(&"00000000000000000000.index".to_string()));
    assert!(files.contains(&"00000000000000000000.timeindex".to_string()));
}

#[test]
fn append_of_several_batches_assigns_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    append(&log, tagged("first", 2, 0), 0);
    let mut bytes = tagged("a", 3, 0);
    bytes.extend(tagged("b", 4, 0));
    let info = append(&log, bytes, 0);
    assert_eq!((info.base_offset, info.last_offset), (2, 8));
    let got = records(&log.read(2, 1 << 20, i64::MAX, true).unwrap().records);
    assert_eq!(got.first().unwrap(), &(2, "a-0".to_string()));
    assert_eq!(got.last().unwrap(), &(8, "b-3".to_string()));
}

#[test]
fn read_from_inside_a_batch_returns_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..10 {
        append(&log, tagged(&format!("b{b}"), 5, 0), 0);
    }
    for offset in [0, 3, 17, 49] {
        let got = records(&log.read(offset, 1, i64::MAX, true).unwrap().records);
        let batch_base = offset / 5 * 5;
        assert_eq!(got.len(), 5, "offset {offset}");
        assert_eq!(got[0].0, batch_base);
        assert!(got.iter().any(|(o, _)| *o == offset));
    }
}

#[test]
fn max_bytes_min_one_and_upper_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    let one = tagged("x", 4, 0);
    let batch_len = one.len();
    for _ in 0..5 {
        append(&log, one.clone(), 0);
    }
    let two = log.read(0, batch_len * 2 + 10, i64::MAX, false).unwrap();
    assert_eq!(two.records.len(), batch_len * 2);
    let none = log.read(0, batch_len - 1, i64::MAX, false).unwrap();
    assert!(none.records.is_empty());
    let forced = log.read(0, 0, i64::MAX, true).unwrap();
    assert_eq!(forced.records.len(), batch_len);
    // The high watermark excludes batches starting at or after it.
    let bounded = log.read(0, 1 << 20, 8, true).unwrap();
    assert_eq!(records(&bounded.records).last().unwrap().0, 7);
    let at_bound = log.read(8, 1 << 20, 8, true).unwrap();
    assert!(at_bound.records.is_empty());
    let end = log.read(20, 1 << 20, i64::MAX, true).unwrap();
    assert!(end.records.is_empty());
    assert_eq!((end.log_start_offset, end.log_end_offset), (0, 20));
}

#[test]
fn out_of_range_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    append(&log, tagged("x", 4, 0), 0);
    match log.read(5, 100, i64::MAX, true) {
        Err(LogError::OffsetOutOfRange {
            offset: 5,
            log_start_offset: 0,
            log_end_offset: 4,
        }) => {}
        other => panic!("expected out of range, got {other:?}"),
    }
    log.delete_records_before(2).unwrap();
    assert!(matches!(
        log.read(1, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange {
            offset: 1,
            log_start_offset: 2,
            ..
        })
    ));
    assert!(matches!(
        log.delete_records_before(9),
        Err(LogError::OffsetOutOfRange { offset: 9, .. })
    ));
}

#[test]
fn rolls_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    append(&log, tagged("a", 1, 0), 10_000);
    append(&log, tagged("b", 1, 0), 10_500);
    assert_eq!(log.segment_count(), 1);
    append(&log, tagged("c", 1, 0), 11_001);
    assert_eq!(log.segment_count(), 2);
    // The periodic task rolls an old active segment even without appends.
    assert_eq!(log.enforce_retention(12_002).unwrap(), 0);
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_everything(&log).len(), 3);
}

#[test]
fn retention_by_bytes_deletes_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..30 {
        append(&log, tagged(&format!("b{b}"), 3, 0), 0);
    }
    let before = log.segment_count();
    log.set_config(LogConfig {
        retention_bytes: 1024,
        ..small_config()
    });
    let deleted = log.enforce_retention(0).unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), before - deleted);
    assert!(log.size_bytes() <= 1024 + 1024);
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(read_everything(&log).first().unwrap().0, start);
    assert_eq!(log.log_end_offset(), 90);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".deleted")
        })
        .count();
    assert_eq!(leftovers, 0);
    drop(log);
    let reopened = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(reopened.log_start_offset(), start);
}

#[test]
fn retention_by_time_rolls_and_deletes_expired_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 10_000,
        ..small_config()
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    for b in 0..20 {
        append(&log, tagged(&format!("old{b}"), 3, 1_000), 1_000);
    }
    assert!(log.segment_count() > 1);
    assert_eq!(log.enforce_retention(5_000).unwrap(), 0);
    // Everything is expired, the active segment included: it is rolled and all go.
    let deleted = log.enforce_retention(100_000).unwrap();
    assert!(deleted > 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 60);
    assert_eq!(log.log_end_offset(), 60);
    assert!(log
        .read(60, 100, i64::MAX, true)
        .unwrap()
        .records
        .is_empty());
    let info = append(&log, tagged("new", 1, 100_000), 100_000);
    assert_eq!(info.base_offset, 60);
    assert_eq!(info.log_start_offset, 60);
}

#[test]
fn delete_records_advances_start_and_drops_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..30 {
        append(&log, tagged(&format!("b{b}"), 3, 0), 0);
    }
    let before = log.segment_count();
    assert_eq!(log.delete_records_before(40).unwrap(), 40);
    assert!(log.segment_count() < before);
    assert_eq!(log.log_start_offset(), 40);
    let first = records(&log.read(40, 1 << 20, i64::MAX, true).unwrap().records);
    assert!(first.iter().any(|(o, _)| *o == 40));
    // Moving backwards is a no-op.
    assert_eq!(log.delete_records_before(10).unwrap(), 40);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.log_start_offset(), 40);
    assert_eq!(log.delete_records_before(90).unwrap(), 90);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..25 {
        append(&log, tagged(&format!("b{b}"), 2, b), 0);
    }
    let before = read_everything(&log);
    let segments = log.segment_count();
    log.close().unwrap();
    assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.log_end_offset(), 50);
    assert_eq!(read_everything(&log), before);
    assert_eq!(append(&log, tagged("more", 1, 0), 0).base_offset, 50);
    assert_eq!(log.max_timestamp().unwrap(), Some((25, 49)));
}

#[test]
fn crash_recovery_truncates_torn_and_corrupt_tail() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    let mut positions = Vec::new();
    for b in 0..10 {
        positions.push(log.size_bytes());
        append(&log, tagged(&format!("b{b}"), 4, 0), 0);
    }
    let end = log.size_bytes();
    drop(log); // no close: no clean-shutdown marker

    let path = dir.path().join("00000000000000000000.log");
    let mut data = std::fs::read(&path).unwrap();
    // Tear the last batch in half, and flip a byte inside the one before it.
    data.truncate(((positions[9] + end) / 2) as usize);
    data[positions[8] as usize + 70] ^= 0xff;
    std::fs::write(&path, &data).unwrap();

    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(log.log_end_offset(), 32);
    assert_eq!(log.size_bytes(), positions[8]);
    let got = read_everything(&log);
    assert_eq!(got.len(), 32);
    assert_eq!(got.last().unwrap(), &(31, "b7-3".to_string()));
    assert!(matches!(
        log.read(33, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let info = append(&log, tagged("after", 2, 0), 0);
    assert_eq!(info.base_offset, 32);
    assert_eq!(
        records(&log.read(32, 1 << 20, i64::MAX, true).unwrap().records),
        vec![(32, "after-0".to_string()), (33, "after-1".to_string())]
    );
}

#[test]
fn tail_damaged_after_a_clean_shutdown_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    let mut positions = Vec::new();
    for b in 0..10 {
        positions.push(log.size_bytes());
        append(&log, tagged(&format!("b{b}"), 4, 0), 0);
    }
    let end = log.size_bytes();
    log.close().unwrap();
    drop(log);

    // While the broker is down: cut the last batch in half, then flip a byte in the
    // batch that is now last.
    let path = dir.path().join("00000000000000000000.log");
    let mut data = std::fs::read(&path).unwrap();
    data.truncate(((positions[9] + end) / 2) as usize);
    data[positions[8] as usize + 70] ^= 0xff;
    std::fs::write(&path, &data).unwrap();

    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 32);
    assert_eq!(
        read_everything(&log).last().unwrap(),
        &(31, "b7-3".to_string())
    );
    assert_eq!(append(&log, tagged("after", 1, 0), 0).base_offset, 32);
    log.close().unwrap();
    drop(log);

    // Only a cut, nothing flipped: the torn batch alone goes.
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() - 3]).unwrap();
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(log.log_end_offset(), 32);
}

#[test]
fn flipped_byte_below_the_recovery_point_is_truncated_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        flush_interval_messages: 1,
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone(), 0).unwrap();
    let mut positions = Vec::new();
    for b in 0..10 {
        positions.push(log.size_bytes());
        append(&log, tagged(&format!("b{b}"), 4, 0), 0);
    }
    // Every batch was fsynced: the recovery point is the log end. A crash, then a
    // byte of batch 6 flips on disk.
    drop(log);
    let path = dir.path().join("00000000000000000000.log");
    let mut data = std::fs::read(&path).unwrap();
    data[positions[6] as usize + 70] ^= 0x10;
    std::fs::write(&path, &data).unwrap();

    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(
        log.log_end_offset(),
        24,
        "the damaged batch and what follows it go"
    );
    assert_eq!(
        read_everything(&log).last().unwrap(),
        &(23, "b5-3".to_string())
    );
}

#[test]
fn a_storage_failure_takes_the_log_offline_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    append(&log, tagged("before", 3, 0), 0);
    assert!(log.storage_failure().is_none());

    // What a failed fsync in `flush` records.
    let eio = || std::io::Error::from_raw_os_error(5);
    let failure = sync_error(&dir.path().join("00000000000000000000.log"), eio());
    assert!(failure.takes_log_offline());
    log.note_failure(&failure);
    let reason = log.storage_failure().expect("offline");
    assert!(
        reason.contains("fsync of") && reason.contains("os error 5"),
        "{reason}"
    );

    let offline = |e: LogError| matches!(e, LogError::Offline { .. });
    assert!(offline(log.append(&tagged("after", 1, 0), 0).unwrap_err()));
    assert!(offline(log.flush().unwrap_err()));
    assert!(offline(log.read(0, 1 << 20, i64::MAX, true).unwrap_err()));
    assert!(offline(log.close().unwrap_err()));
    assert_eq!(
        log.log_end_offset(),
        3,
        "nothing was appended while offline"
    );
    drop(log);

    // A restart recovers the log from disk, online again.
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert!(log.storage_failure().is_none());
    assert_eq!(append(&log, tagged("after", 1, 0), 0).base_offset, 3);
    assert_eq!(read_everything(&log).len(), 4);
}

#[test]
fn only_a_full_disk_on_a_write_leaves_the_log_online() {
    let path = Path::new("/data/t-0/00000000000000000000.log");
    let kind = |kind: std::io::ErrorKind| io_error(path, "append to segment", kind.into());
    assert!(!kind(std::io::ErrorKind::StorageFull).takes_log_offline());
    assert!(!kind(std::io::ErrorKind::QuotaExceeded).takes_log_offline());
    assert!(kind(std::io::ErrorKind::StorageFull).is_out_of_space());
    // ENOSPC from fsync: what reached the disk is unknown.
    assert!(sync_error(path, std::io::Error::from_raw_os_error(28)).takes_log_offline());
    assert!(io_error(
        path,
        "append to segment",
        std::io::Error::from_raw_os_error(5)
    )
    .takes_log_offline());
    assert!(!LogError::OffsetOutOfRange {
        offset: 9,
        log_start_offset: 0,
        log_end_offset: 1
    }
    .takes_log_offline());
}

#[test]
fn crash_in_a_rolled_unsynced_segment_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..30 {
        append(&log, tagged(&format!("b{b}"), 3, 0), 0);
    }
    assert!(log.segment_count() >= 3);
    drop(log);
    // Damage the last batch of the first segment: it was never fsynced.
    let first = dir.path().join("00000000000000000000.log");
    let mut data = std::fs::read(&first).unwrap();
    let len = data.len();
    data[len - 1] ^= 0x01;
    std::fs::write(&first, &data).unwrap();

    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.segment_count(), 1);
    let got = read_everything(&log);
    assert_eq!(got.len() as i64, log.log_end_offset());
    assert!(log.log_end_offset() > 0 && log.log_end_offset() < 90);
}

#[test]
fn damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..30 {
        append(&log, tagged(&format!("b{b}"), 3, 100 + b), 0);
    }
    let before = read_everything(&log);
    let at_ts = log.offset_for_timestamp(115).unwrap();
    log.close().unwrap();
    drop(log);

    let index = dir.path().join("00000000000000000000.index");
    let good_index = std::fs::read(&index).unwrap();
    assert!(!good_index.is_empty());
    std::fs::remove_file(&index).unwrap();
    let time_index = dir.path().join("00000000000000000000.timeindex");
    std::fs::write(&time_index, b"garbage!!").unwrap();
    let second = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .find(|p| p != &index)
        .unwrap();
    // Well-sized but out of order: position beyond the file.
    let mut bogus = Vec::new();
    bogus.extend_from_slice(&1u32.to_be_bytes());
    bogus.extend_from_slice(&u32::MAX.to_be_bytes());
    std::fs::write(&second, &bogus).unwrap();

    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(read_everything(&log), before);
    assert_eq!(log.offset_for_timestamp(115).unwrap(), at_ts);
    assert_eq!(std::fs::read(&index).unwrap(), good_index);
    assert_ne!(std::fs::read(&second).unwrap(), bogus);
}

#[test]
fn stray_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    append(&log, tagged("a", 1, 0), 0);
    log.close().unwrap();
    drop(log);
    for name in [
        "00000000000000000100.log.deleted",
        "recovery-point.tmp",
        "00000000000000000500.index",
    ] {
        std::fs::write(dir.path().join(name), b"x").unwrap();
    }
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    for name in [
        "00000000000000000100.log.deleted",
        "recovery-point.tmp",
        "00000000000000000500.index",
    ] {
        assert!(!dir.path().join(name).exists(), "{name}");
    }
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn timestamps_are_found_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), None);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    // Timestamps rise by 10 per record, except for one out-of-order batch.
    for b in 0..20i64 {
        let ts: Vec<i64> = (0..4).map(|i| 1_000 + (b * 4 + i) * 10).collect();
        let values: Vec<String> = (0..4).map(|i| format!("b{b}-{i}")).collect();
        append(&log, batch(&values, &ts, Compression::Lz4), 0);
    }
    let values = vec!["late-0".to_string(), "late-1".to_string()];
    append(&log, batch(&values, &[5_000, 1_005], Compression::Gzip), 0);
    append(&log, tagged("tail", 2, 2_000), 0);
    assert!(log.segment_count() > 1);

    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1_000)));
    assert_eq!(log.offset_for_timestamp(1_000).unwrap(), Some((0, 1_000)));
    assert_eq!(log.offset_for_timestamp(1_001).unwrap(), Some((1, 1_010)));
    assert_eq!(log.offset_for_timestamp(1_555).unwrap(), Some((56, 1_560)));
    assert_eq!(log.offset_for_timestamp(1_790).unwrap(), Some((79, 1_790)));
    assert_eq!(log.offset_for_timestamp(1_791).unwrap(), Some((80, 5_000)));
    assert_eq!(log.offset_for_timestamp(5_000).unwrap(), Some((80, 5_000)));
    assert_eq!(log.offset_for_timestamp(5_001).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), Some((5_000, 80)));

    let mut stamped = tagged("stamped", 3, 10);
    batch::set_log_append_time(&mut stamped, 9_000);
    append(&log, stamped, 9_000);
    assert_eq!(log.max_timestamp().unwrap(), Some((9_000, 84)));
    assert_eq!(log.offset_for_timestamp(6_000).unwrap(), Some((84, 9_000)));
    log.delete_records_before(85).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((85, 9_000)));
}

#[test]
fn flush_interval_messages_advances_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_interval_messages: 1,
        flush_interval_ms: -1,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config, 0).unwrap();
    append(&log, tagged("a", 3, 0), 0);
    let point = checkpoint::read(&dir.path().join(RECOVERY_POINT_FILE)).unwrap();
    assert_eq!(point, Some(3));

    log.set_config(LogConfig {
        flush_interval_ms: 100,
        ..LogConfig::default()
    });
    append(&log, tagged("b", 1, 0), 0);
    log.flush_if_due(50).unwrap();
    assert_eq!(
        checkpoint::read(&dir.path().join(RECOVERY_POINT_FILE)).unwrap(),
        Some(3)
    );
    log.flush_if_due(100).unwrap();
    assert_eq!(
        checkpoint::read(&dir.path().join(RECOVERY_POINT_FILE)).unwrap(),
        Some(4)
    );
}

#[test]
fn append_after_close_withdraws_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.close().unwrap();
    append(&log, tagged("late", 1, 0), 0);
    assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
}

#[test]
fn empty_or_torn_append_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert!(matches!(log.append(&[], 0), Err(LogError::Batch(_))));
    let mut torn = tagged("x", 2, 0);
    torn.pop();
    assert!(matches!(
        log.append(&torn, 0),
        Err(LogError::Batch(BatchError::Truncated { .. }))
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn delete_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let log = Log::open(&path, LogConfig::default(), 0).unwrap();
    append(&log, tagged("x", 1, 0), 0);
    let reader = log.read(0, 100, i64::MAX, true).unwrap();
    log.delete().unwrap();
    assert!(!path.exists());
    assert_eq!(records(&reader.records).len(), 1);
}

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
}

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, codec: u8 },
    Reopen { clean: bool },
    Read { pick: usize, max_bytes: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..8, 0u8..5).prop_map(|(records, codec)| Op::Append { records, codec }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        3 => (any::<usize>(), 0usize..600).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
    ]
}

fn codec(n: u8) -> Compression {
    match n {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        _ => Compression::Zstd,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn appended_records_stay_readable_at_their_offsets(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 700, index_interval_bytes: 100, retention_ms: -1, ..LogConfig::default() };
        let mut log = Log::open(dir.path(), config.clone(), 0).unwrap();
        let mut expected: Vec<String> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { records: n, codec: c } => {
                    let values: Vec<String> = (0..n).map(|i| format!("s{step}-{i}")).collect();
                    let ts: Vec<i64> = (0..n as i64).map(|i| step as i64 * 100 + i).collect();
                    let info = append(&log, batch(&values, &ts, codec(c)), step as i64);
                    prop_assert_eq!(info.base_offset, expected.len() as i64);
                    expected.extend(values);
                    prop_assert_eq!(info.last_offset, expected.len() as i64 - 1);
                }
                Op::Reopen { clean } => {
                    if clean {
                        log.close().unwrap();
                    }
                    drop(log);
                    log = Log::open(dir.path(), config.clone(), 0).unwrap();
                }
                Op::Read { pick, max_bytes } => {
                    if expected.is_empty() {
                        continue;
                    }
                    let offset = (pick % expected.len()) as i64;
                    let got = records(&log.read(offset, max_bytes, i64::MAX, true).unwrap().records);
                    prop_assert!(got.iter().any(|(o, _)| *o == offset));
                    for (o, value) in got {
                        prop_assert_eq!(&expected[o as usize], &value);
                    }
                }
            }
            prop_assert_eq!(log.log_end_offset(), expected.len() as i64);
        }
        let all: Vec<String> = read_everything(&log).into_iter().map(|(_, v)| v).collect();
        prop_assert_eq!(all, expected);
    }
}

/// Found by the `segment_recovery` fuzz target (tests/fuzz/regressions/
/// segment_recovery-overlapping-segments): a segment whose last batch runs into the next
/// segment's offsets was recovered whole, so the log served offsets at and past its own
/// end. Recovery now cuts the segment before that batch, like any other invalid batch.
#[test]
fn a_batch_reaching_into_the_next_segment_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let values = |n: usize| (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>();
    let mut first = batch(&values(2), &[0, 0], Compression::None);
    let mut overlapping = batch(&values(4), &[0; 4], Compression::None);
    batch::set_base_offset(&mut overlapping, 2);
    first.extend_from_slice(&overlapping);
    let mut next = batch(&values(1), &[0], Compression::None);
    batch::set_base_offset(&mut next, 3);
    std::fs::write(dir.path().join("00000000000000000000.log"), &first).unwrap();
    std::fs::write(dir.path().join("00000000000000000003.log"), &next).unwrap();

    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 2);
    let got = read_everything(&log);
    assert_eq!(got, vec![(0, "v0".to_string()), (1, "v1".to_string())]);
    // The later segment followed a truncation, so it went too.
    assert_eq!(log.segment_count(), 1);
}
