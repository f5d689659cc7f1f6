//! Log recovery over whatever a crash, a bad disk or an operator left in a partition
//! directory.
//!
//! The input is the directory's files: a first segment `.log` at offset 0, optionally
//! its `.index` and `.timeindex`, a second segment at an offset the input picks, the
//! leader-epoch checkpoint, the log start offset and the recovery point, each arbitrary
//! bytes (the first byte says which exist). There is no clean-shutdown marker, so the
//! broker must recover: [`quiver::log::Log::open`] must return a log or an error, never
//! panic; then everything is read back, and every batch the log serves must parse and
//! pass its CRC check, with offsets inside the log's range. Finally a new batch is
//! appended and read back, which fails if recovery left the indexes pointing wrong.

#![no_main]

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use libfuzzer_sys::fuzz_target;
use quiver::log::{batch, Log, LogConfig};

const NOW_MS: i64 = 1_700_000_000_000;

/// Pieces of the input, each with a two-byte length.
struct Pieces<'a>(&'a [u8]);

impl<'a> Pieces<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn piece(&mut self) -> &'a [u8] {
        let len = usize::from(u16::from_be_bytes([self.byte(), self.byte()])).min(self.0.len());
        let (piece, rest) = self.0.split_at(len);
        self.0 = rest;
        piece
    }
}

fn segment_name(base: i64, suffix: &str) -> String {
    format!("{base:020}.{suffix}")
}

fn scratch() -> tempfile::TempDir {
    // Memory-backed when the machine has it: the log fsyncs, and a disk makes that slow.
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("quiver-fuzz-")
        .tempdir_in(shm);
    builder.unwrap_or_else(|_| tempfile::tempdir().expect("a scratch directory"))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Pieces(data);
    let flags = input.byte();
    let dir = scratch();
    let part = dir.path().join("topic-0");
    std::fs::create_dir(&part).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(part.join(name), bytes).unwrap();

    // The remainder of the input is the first segment's log, so a seed that is only a
    // flags byte and batches needs no length prefixes.
    let mut files: Vec<(String, &[u8])> = Vec::new();
    if flags & 1 != 0 {
        files.push((segment_name(0, "index"), input.piece()));
    }
    if flags & 2 != 0 {
        files.push((segment_name(0, "timeindex"), input.piece()));
    }
    if flags & 4 != 0 {
        let base = i64::from(input.byte()) + 1;
        files.push((segment_name(base, "log"), input.piece()));
    }
    if flags & 8 != 0 {
        files.push(("leader-epoch-checkpoint".into(), input.piece()));
    }
    if flags & 16 != 0 {
        files.push(("log-start-offset".into(), input.piece()));
    }
    if flags & 32 != 0 {
        files.push(("recovery-point".into(), input.piece()));
    }
    files.push((segment_name(0, "log"), input.0));
    for (name, bytes) in &files {
        write(name, bytes);
    }

    let config = LogConfig {
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let Ok(log) = Log::open(&part, config, NOW_MS) else {
        return;
    };
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    assert!(0 <= start && start <= end, "log range {start}..{end}");

    let mut offset = start;
    while offset < end {
        let Ok(read) = log.read(offset, 64 * 1024, i64::MAX, true) else {
            break;
        };
        if read.records.is_empty() {
            break;
        }
        let mut next = offset;
        for item in batch::Batches::new(&read.records) {
            let (header, range) = item.expect("a served batch parses");
            batch::verify_crc(&read.records[range]).expect("a served batch passes its CRC check");
            assert!(
                header.last_offset() < end,
                "a batch past the log end was served"
            );
            assert!(header.last_offset() >= next, "batches go backwards");
            next = header.last_offset() + 1;
        }
        assert!(next > offset, "a read made no progress at {offset}");
        offset = next;
    }
    let _ = log.offset_for_timestamp(NOW_MS - 1_000);
    let _ = log.max_timestamp();

    // The recovered log takes a new batch at its end and serves it back.
    let fresh = one_batch();
    let Ok(info) = log.append(&fresh, NOW_MS) else {
        return;
    };
    assert_eq!(
        info.base_offset, end,
        "an append after recovery starts at the log end"
    );
    let read = log
        .read(end, 1 << 20, i64::MAX, true)
        .expect("the batch just appended reads back");
    let (header, range) = batch::Batches::new(&read.records)
        .next()
        .expect("the batch just appended is served")
        .expect("the batch just appended parses");
    assert_eq!(header.base_offset, end);
    assert_eq!(&read.records[range], &fresh[..]);
});

fn one_batch() -> Vec<u8> {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: NOW_MS,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: IndexMap::new(),
    };
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        [record].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    out.to_vec()
}
