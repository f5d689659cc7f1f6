//! The leader-epoch cache: for every leader epoch that wrote to this log, the offset of
//! its first record, kept in `leader-epoch-checkpoint`.
//!
//! It is what lets two replicas find where their logs part (KIP-101, KIP-320): a
//! follower names the epoch of its last batch, the leader answers with the offset where
//! that epoch ended in *its* log, and the follower truncates there. Without it a follower
//! could only truncate to its high watermark, which loses committed data when leadership
//! moves twice in quick succession, or keeps divergent data.
//!
//! The file uses Kafka's text layout — a version line (`0`), an entry count, then one
//! `epoch start_offset` line per entry — and is replaced atomically like the other
//! checkpoints. It is derived data: missing or unreadable, it is rebuilt from the
//! `partition_leader_epoch` field of the batch headers. The log writes it before the data
//! an entry describes, so after a crash it can only run ahead of the data, which
//! [`EpochCache::truncate_from_end`] at open corrects.

use std::path::{Path, PathBuf};

use super::{checkpoint, io_error, LogError};

/// The checkpoint's file name in the partition directory.
pub(super) const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
const FORMAT_VERSION: i32 = 0;

/// One epoch and the offset of its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// Offset of the first record written in it.
    pub start_offset: i64,
}

/// The epochs of one log, ascending in both epoch and start offset.
#[derive(Debug)]
pub(super) struct EpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// Loads the checkpoint in `dir`. `None` if it is missing or does not parse (the
    /// caller then rebuilds it from the log).
    pub fn load(dir: &Path) -> Result<Option<EpochCache>, LogError> {
        let path = dir.join(LEADER_EPOCH_FILE);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, "read leader-epoch checkpoint", e)),
        };
        match parse(&text) {
            Ok(entries) => Ok(Some(EpochCache { path, entries })),
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "ignoring leader-epoch checkpoint, rebuilding it from the log");
                Ok(None)
            }
        }
    }

    /// An empty cache for `dir`, not yet written.
    pub fn empty(dir: &Path) -> EpochCache {
        EpochCache {
            path: dir.join(LEADER_EPOCH_FILE),
            entries: Vec::new(),
        }
    }

    /// Writes the checkpoint.
    pub fn persist(&self) -> Result<(), LogError> {
        let mut text = format!("{FORMAT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        checkpoint::replace(&self.path, text.as_bytes())
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`, in memory only; true if that
    /// changed anything. As in Kafka, an entry that is not strictly after the latest one
    /// replaces every entry it conflicts with (same or later epoch, same or later start),
    /// and a negative epoch (a batch never stamped by a leader) is ignored.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(latest) = self.latest() {
            if latest.epoch == epoch && start_offset >= latest.start_offset {
                return false;
            }
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// OffsetsForLeaderEpoch: the largest epoch at most `epoch` and the offset where it
    /// ended — the next epoch's start, or `log_end_offset` for the latest epoch. An epoch
    /// older than every entry answers with itself and the first entry's start (nothing of
    /// it is in this log); `None` when the epoch is newer than any known one, or the
    /// cache is empty (Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET).
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        let latest = self.latest()?;
        if latest.epoch == epoch {
            return Some((epoch, log_end_offset));
        }
        let higher = self.entries.iter().position(|e| e.epoch > epoch)?;
        let end = self.entries[higher].start_offset;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].epoch, end)),
            None => Some((epoch, end)),
        }
    }

    /// The epoch `offset` was written in: that of the last entry starting at or
    /// before it; `None` when the cache knows no epoch that old.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// Drops the entries of epochs that start at or after `end_offset` (the log was
    /// truncated there); true if any went.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// Forgets epochs wholly below `start_offset` (the log start moved up): the epoch
    /// in force at `start_offset` now starts there. True if anything changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let Some(floor) = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset)
        else {
            return false;
        };
        if floor == 0 && self.entries[0].start_offset == start_offset {
            return false;
        }
        self.entries.drain(..floor);
        self.entries[0].start_offset = start_offset;
        true
    }

    /// Forgets every epoch.
    pub fn clear(&mut self) -> bool {
        let had = !self.entries.is_empty();
        self.entries.clear();
        had
    }
}

/// Parses Kafka's checkpoint layout, insisting on ascending epochs and offsets.
fn parse(bytes: &[u8]) -> Result<Vec<EpochEntry>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_string())?;
    let mut lines = text.lines();
    let version = lines.next().ok_or("empty file")?;
    if version.trim() != FORMAT_VERSION.to_string() {
        return Err(format!("unknown version {version:?}"));
    }
    let count: usize = lines
        .next()
        .ok_or("no entry count")?
        .trim()
        .parse()
        .map_err(|_| "entry count is not a number".to_string())?;
    let mut entries: Vec<EpochEntry> = Vec::new();
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("malformed entry {line:?}"));
        };
        let entry = EpochEntry {
            epoch: epoch
                .parse()
                .map_err(|_| format!("malformed epoch {epoch:?}"))?,
            start_offset: start
                .parse()
                .map_err(|_| format!("malformed offset {start:?}"))?,
        };
        if entry.epoch < 0 || entry.start_offset < 0 {
            return Err(format!("negative entry {line:?}"));
        }
        if let Some(prev) = entries.last() {
            if entry.epoch <= prev.epoch || entry.start_offset <= prev.start_offset {
                return Err(format!("entry {line:?} does not follow {prev:?}"));
            }
        }
        entries.push(entry);
    }
    if entries.len() != count {
        return Err(format!(
            "{count} entries announced, {} found",
            entries.len()
        ));
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("trailing data".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut cache = EpochCache::empty(Path::new("/nonexistent"));
        for &(epoch, start) in entries {
            assert!(cache.assign(epoch, start));
        }
        cache
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(4, 40), Some((4, 40)));
        // A known epoch ends where the next one starts.
        assert_eq!(c.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(c.end_offset_for(1, 40), Some((1, 10)));
        // An epoch this log never saw: the largest epoch below it, ending where the
        // next one starts.
        assert_eq!(c.end_offset_for(2, 40), Some((1, 10)));
        // Older than everything: the epoch itself, ending at the first start.
        assert_eq!(c.end_offset_for(0, 40), Some((0, 0)));
        // Newer than everything, or undefined.
        assert_eq!(c.end_offset_for(5, 40), None);
        assert_eq!(c.end_offset_for(-1, 40), None);
        assert_eq!(cache(&[]).end_offset_for(0, 0), None);
    }

    #[test]
    fn an_offset_belongs_to_the_epoch_it_was_written_in() {
        let c = cache(&[(1, 4), (3, 10), (4, 25)]);
        assert_eq!(c.epoch_at(3), None, "before every known epoch");
        assert_eq!(c.epoch_at(4), Some(1));
        assert_eq!(c.epoch_at(9), Some(1));
        assert_eq!(c.epoch_at(10), Some(3));
        assert_eq!(c.epoch_at(24), Some(3));
        assert_eq!(c.epoch_at(25), Some(4));
        assert_eq!(c.epoch_at(1000), Some(4));
        assert_eq!(cache(&[]).epoch_at(0), None);
    }

    #[test]
    fn assign_keeps_entries_monotonic() {
        let mut c = cache(&[(1, 0), (2, 10)]);
        assert!(!c.assign(2, 15), "same epoch later: nothing new");
        assert!(!c.assign(-1, 20), "unstamped batches are ignored");
        // A conflicting entry replaces what it conflicts with.
        assert!(c.assign(2, 5));
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 5
                }
            ]
        );
        // An older epoch after newer ones: they are gone, as a truncation would leave it.
        assert!(c.assign(1, 7));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 1,
                start_offset: 7
            }]
        );
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert!(c.truncate_from_end(25));
        assert_eq!(c.latest().unwrap().epoch, 3);
        assert!(!c.truncate_from_end(30));
        assert!(c.truncate_from_start(12));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 3,
                start_offset: 12
            }]
        );
        assert!(!c.truncate_from_start(12));
        assert!(
            !c.truncate_from_start(5),
            "below every entry: nothing to forget"
        );
        assert!(c.clear());
    }

    #[test]
    fn file_round_trip_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::empty(dir.path());
        c.assign(0, 0);
        c.assign(2, 100);
        c.persist().unwrap();
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
        assert_eq!(text, "0\n2\n0 0\n2 100\n");
        let loaded = EpochCache::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.entries(), c.entries());
        for garbage in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 x\n",
            "0\n2\n3 0\n2 10\n",
            "0\n1\n0 0 0\n",
            "0\n1\n0 0\njunk\n",
        ] {
            std::fs::write(dir.path().join(LEADER_EPOCH_FILE), garbage).unwrap();
            assert!(
                EpochCache::load(dir.path()).unwrap().is_none(),
                "{garbage:?}"
            );
        }
        std::fs::remove_file(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
        assert!(EpochCache::load(dir.path()).unwrap().is_none());
    }
}
