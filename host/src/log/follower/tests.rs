//! Follower appends, truncation, reset and the leader-epoch cache, against real files.

use bytes::Bytes;

use super::super::tests::{read_everything, records, tagged};
use super::super::*;

/// Segments of a few batches each.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 512,
        ..super::super::tests::small_config()
    }
}

/// A batch of `n` records tagged `tag-i`, stamped with leader epoch `epoch`.
fn stamped(tag: &str, n: usize, epoch: i32) -> Vec<u8> {
    let mut bytes = tagged(tag, n, 1_000);
    batch::set_partition_leader_epoch(&mut bytes, epoch);
    bytes
}

/// Appends as a leader would, stamping `epoch`.
fn lead(log: &Log, tag: &str, n: usize, epoch: i32) -> AppendInfo {
    log.append(&stamped(tag, n, epoch), 0).unwrap()
}

fn entries(log: &Log) -> Vec<(i32, i64)> {
    log.epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

/// Every byte from `from` to the end, as whole batches.
fn raw(log: &Log, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        assert!(!read.records.is_empty(), "no progress at {offset}");
        for item in Batches::new(&read.records) {
            let (header, _) = item.unwrap();
            offset = header.last_offset() + 1;
        }
        out.extend_from_slice(&read.records);
    }
    out
}

/// Copies `leader` into `follower` the way a fetcher does: reads of at most `chunk`
/// bytes from the follower's end, appended as they come.
fn replicate(leader: &Log, follower: &Log, chunk: usize) {
    while follower.log_end_offset() < leader.log_end_offset() {
        let read = leader
            .read(follower.log_end_offset(), chunk, i64::MAX, true)
            .unwrap();
        follower.append_replicated(&read.records, 0).unwrap();
    }
}

#[test]
fn replicated_appends_keep_offsets_epochs_and_bytes() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Log::open(ld.path(), small_config(), 0).unwrap();
    for b in 0..30 {
        lead(
            &leader,
            &format!("b{b}"),
            1 + b % 4,
            if b < 10 { 0 } else { 3 },
        );
    }
    let follower = Log::open(fd.path(), small_config(), 0).unwrap();
    // Large reads: many batches per append, split over the follower's small segments.
    replicate(&leader, &follower, 1 << 20);
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(raw(&follower, 0), raw(&leader, 0), "byte for byte");
    assert!(follower.segment_count() > 3, "the follower rolls too");
    for segment in follower.state.lock().segments.values() {
        assert!(segment.size() <= small_config().segment_bytes);
    }
    assert_eq!(entries(&follower), entries(&leader));
    assert_eq!(entries(&follower), vec![(0, 0), (3, 23)]);
    // Every offset is found through the follower's indexes.
    for offset in 0..follower.log_end_offset() {
        let got = records(&follower.read(offset, 1, i64::MAX, true).unwrap().records);
        assert!(got.iter().any(|(o, _)| *o == offset), "offset {offset}");
    }
    drop(follower);
    let follower = Log::open(fd.path(), small_config(), 0).unwrap();
    assert_eq!(raw(&follower, 0), raw(&leader, 0));
}

#[test]
fn replicated_offsets_must_follow_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    let mut first = stamped("a", 3, 0);
    batch::set_base_offset(&mut first, 0);
    log.append_replicated(&first, 0).unwrap();
    // Overlapping the log end.
    let mut overlap = stamped("b", 2, 0);
    batch::set_base_offset(&mut overlap, 2);
    assert!(matches!(
        log.append_replicated(&overlap, 0),
        Err(LogError::NonMonotonic {
            offset: 2,
            follows: 2
        })
    ));
    // Out of order within one buffer.
    let mut two = stamped("c", 2, 0);
    batch::set_base_offset(&mut two, 10);
    let mut back = stamped("d", 2, 0);
    batch::set_base_offset(&mut back, 5);
    two.extend(back);
    assert!(matches!(
        log.append_replicated(&two, 0),
        Err(LogError::NonMonotonic { offset: 5, .. })
    ));
    // A torn buffer.
    let whole = stamped("e", 2, 0);
    assert!(log.append_replicated(&whole[..whole.len() - 1], 0).is_err());
    assert!(log.append_replicated(&[], 0).is_err());
    assert_eq!(log.log_end_offset(), 3, "nothing was written");
    // A gap (a compacted leader) is fine.
    let mut gap = stamped("f", 2, 0);
    batch::set_base_offset(&mut gap, 7);
    let info = log.append_replicated(&gap, 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (7, 8));
    assert_eq!(log.log_end_offset(), 9);
    let got: Vec<i64> = read_everything(&log).iter().map(|r| r.0).collect();
    assert_eq!(got, vec![0, 1, 2, 7, 8]);
}

#[test]
fn truncate_to_across_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..40 {
        lead(&log, &format!("b{b}"), 3, b / 10);
    }
    let segments = log.segment_count();
    assert!(segments > 5);
    let bases: Vec<i64> = log.state.lock().segments.keys().copied().collect();
    let everything = read_everything(&log);

    // Exactly at a segment base: that segment and all later ones go.
    let at = bases[segments - 2];
    assert_eq!(log.truncate_to(at, 0).unwrap(), at);
    assert_eq!(log.log_end_offset(), at);
    assert_eq!(log.segment_count(), segments - 2);
    assert_eq!(read_everything(&log), everything[..at as usize]);

    // Inside a batch, two segments back: the whole batch holding the offset goes.
    let inside = bases[segments - 4] + 4;
    let end = log.truncate_to(inside, 0).unwrap();
    assert_eq!(end, inside - inside % 3, "cut at the batch boundary");
    assert_eq!(log.segment_count(), segments - 3);
    assert_eq!(read_everything(&log), everything[..end as usize]);
    // Every remaining offset is still found through the indexes.
    for offset in 0..end {
        let got = records(&log.read(offset, 1, i64::MAX, true).unwrap().records);
        assert!(got.iter().any(|(o, _)| *o == offset), "offset {offset}");
    }
    // Epochs that started past the cut are gone; the latest ends at the new end.
    let latest = *entries(&log).last().unwrap();
    assert!(latest.1 < end);
    assert_eq!(log.end_offset_for_epoch(latest.0), Some((latest.0, end)));
    // Beyond the end is a no-op.
    assert_eq!(log.truncate_to(end + 100, 0).unwrap(), end);

    // Appends continue at the cut and everything survives an unclean reopen.
    let info = lead(&log, "after", 2, 7);
    assert_eq!(info.base_offset, end);
    let expected = read_everything(&log);
    let kept_entries = entries(&log);
    assert_eq!(kept_entries.last(), Some(&(7, end)));
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(read_everything(&log), expected);
    assert_eq!(entries(&log), kept_entries);
}

#[test]
fn truncation_is_durable_and_lowers_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..20 {
        lead(&log, &format!("b{b}"), 2, 1);
    }
    log.flush().unwrap();
    assert_eq!(log.truncate_to(11, 0).unwrap(), 10);
    assert_eq!(
        checkpoint::read(&dir.path().join(RECOVERY_POINT_FILE)).unwrap(),
        Some(10)
    );
    // Data written after the cut is not vouched for by the old recovery point: damage
    // in it is found and cut at the next open.
    lead(&log, "new", 2, 2);
    let active = log.state.lock().active().log_path().to_path_buf();
    let len = std::fs::metadata(&active).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"\xff", len - 1).unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(entries(&log), vec![(1, 0)]);
}

#[test]
fn epoch_cache_survives_reopen_truncation_and_loss() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    lead(&log, "a", 3, 0);
    lead(&log, "b", 3, 0);
    lead(&log, "c", 2, 2);
    assert_eq!(log.begin_epoch(5).unwrap(), 8);
    assert_eq!(
        log.begin_epoch(5).unwrap(),
        8,
        "beginning twice changes nothing"
    );
    lead(&log, "d", 4, 5);
    assert_eq!(entries(&log), vec![(0, 0), (2, 6), (5, 8)]);
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 6)));
    assert_eq!(log.end_offset_for_epoch(1), Some((0, 6)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 8)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 12)));
    assert_eq!(log.end_offset_for_epoch(6), None);
    assert_eq!(log.latest_epoch(), Some(5));

    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(entries(&log), vec![(0, 0), (2, 6), (5, 8)]);

    assert_eq!(log.truncate_to(7, 0).unwrap(), 6);
    assert_eq!(entries(&log), vec![(0, 0)]);
    assert_eq!(log.end_offset_for_epoch(2), None);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(entries(&log), vec![(0, 0)]);
    lead(&log, "e", 2, 6);
    drop(log);

    // Lost: rebuilt from the batch headers.
    std::fs::remove_file(dir.path().join(epoch::LEADER_EPOCH_FILE)).unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(entries(&log), vec![(0, 0), (6, 6)]);
    assert!(dir.path().join(epoch::LEADER_EPOCH_FILE).exists());
    drop(log);

    // Ahead of the data (written before a batch a crash then lost): cut back at open.
    std::fs::write(
        dir.path().join(epoch::LEADER_EPOCH_FILE),
        "0\n3\n0 0\n6 6\n9 8\n",
    )
    .unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(entries(&log), vec![(0, 0), (6, 6)]);

    // The log start moving up forgets epochs wholly below it.
    log.delete_records_before(7).unwrap();
    assert_eq!(entries(&log), vec![(6, 7)]);
}

#[test]
fn reset_starts_the_log_over_at_the_leaders_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for b in 0..10 {
        lead(&log, &format!("b{b}"), 3, 1);
    }
    log.flush().unwrap();
    log.reset_to(1_000, 0).unwrap();
    assert_eq!(log.log_start_offset(), 1_000);
    assert_eq!(log.log_end_offset(), 1_000);
    assert_eq!(log.segment_count(), 1);
    assert!(entries(&log).is_empty());
    let mut next = stamped("x", 2, 4);
    batch::set_base_offset(&mut next, 1_000);
    log.append_replicated(&next, 0).unwrap();
    assert_eq!(entries(&log), vec![(4, 1_000)]);
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.log_start_offset(), 1_000);
    assert_eq!(
        read_everything(&log),
        vec![(1_000, "x-0".to_string()), (1_001, "x-1".to_string())]
    );

    // Truncating to the log start or below leaves nothing either: the same reset.
    assert_eq!(log.truncate_to(1_000, 0).unwrap(), 1_000);
    assert_eq!(log.log_end_offset(), 1_000);
    assert_eq!(log.truncate_to(500, 0).unwrap(), 500);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    let read = log.read(500, 100, i64::MAX, true).unwrap();
    assert_eq!(read.records, Bytes::new());
}
