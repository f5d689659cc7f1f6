//! Where each mirrored partition stands, and how source offsets translate to target
//! offsets: the records a mirror keeps in the compacted internal topic
//! `__quiver_mirrors`.
//!
//! A [`Position`] per (mirror, source partition) holds the next source offset to copy,
//! the exactly-once producer identity, and the offset syncs: runs of source offsets
//! that were written to consecutive target offsets. A mirror that copies everything to
//! a target nobody else writes keeps a single run per partition however long it runs;
//! filtered records, source gaps (compaction, transaction markers) and other writers of
//! the target start new runs. A [`Checkpoint`] per (mirror, group) holds the group's
//! committed source offsets and their translation, which `mirror failover` applies.
//!
//! Translation never skips: an offset inside a run maps exactly; one after a run (a
//! record that was not copied, or one copied but not yet recorded, as after a crash
//! between a write and its position) maps to the end of that run, so a group may
//! re-read what follows but never misses a record. An offset older than the oldest
//! run kept is not translated at all.

use serde::{Deserialize, Serialize};

/// The internal topic of mirror positions and checkpoints.
pub const MIRRORS_TOPIC: &str = "__quiver_mirrors";

/// Runs kept per partition: the oldest go first (only groups further behind than that
/// many target gaps lose their translation).
pub const MAX_SYNCS: usize = 1000;

/// Source offsets `source..source + len` were written to `target..target + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    /// First source offset of the run.
    pub source: i64,
    /// Where it was written.
    pub target: i64,
    /// Records in the run.
    pub len: i64,
}

/// One mirrored partition's position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The next source offset to copy.
    pub next_offset: i64,
    /// The target topic.
    pub target: String,
    /// The producer id of the target writes (-1 unless exactly-once).
    pub producer_id: i64,
    /// The next sequence number of those writes.
    pub next_sequence: i32,
    /// Offset syncs, oldest first.
    pub syncs: Vec<Sync>,
    /// When this was written, ms since the epoch.
    pub written_ms: i64,
}

impl Position {
    /// Records that the records at `sources` (increasing) were written to consecutive
    /// target offsets from `target`.
    pub fn record(&mut self, sources: &[i64], mut target: i64) {
        let mut i = 0;
        while i < sources.len() {
            let start = i;
            while i + 1 < sources.len() && sources[i + 1] == sources[i] + 1 {
                i += 1;
            }
            i += 1;
            let run = Sync {
                source: sources[start],
                target,
                len: (i - start) as i64,
            };
            target += run.len;
            match self.syncs.last_mut() {
                Some(last)
                    if last.source + last.len == run.source
                        && last.target + last.len == run.target =>
                {
                    last.len += run.len;
                }
                _ => self.syncs.push(run),
            }
        }
        if self.syncs.len() > MAX_SYNCS {
            let excess = self.syncs.len() - MAX_SYNCS;
            self.syncs.drain(..excess);
        }
    }

    /// The target offset for the committed source offset `offset` (the next record a
    /// group would read), or `None` when it is older than every run kept, or nothing
    /// was copied yet.
    pub fn translate(&self, offset: i64) -> Option<i64> {
        let first = self.syncs.first()?;
        if offset < first.source {
            return None;
        }
        // The last run starting at or before the offset.
        let at = self.syncs.partition_point(|s| s.source <= offset) - 1;
        let run = self.syncs[at];
        if offset < run.source + run.len {
            return Some(run.target + (offset - run.source));
        }
        Some(run.target + run.len)
    }
}

/// A group's committed offset of one partition, at the source and translated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffset {
    /// The source topic.
    pub source_topic: String,
    /// The target topic.
    pub target_topic: String,
    /// The partition (the same at both ends).
    pub partition: i32,
    /// Committed at the source.
    pub source_offset: i64,
    /// What the target holds for it.
    pub target_offset: i64,
}

/// The translated offsets of one mirrored group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// When the source offsets were read, ms since the epoch.
    pub time_ms: i64,
    /// Per partition.
    pub offsets: Vec<GroupOffset>,
}

/// The key of a partition's position. Mirror names and ids hold no `/`; topic names
/// cannot either.
pub fn position_key(mirror: &str, id: &str, topic: &str, partition: i32) -> String {
    format!("pos/{mirror}/{id}/{topic}/{partition}")
}

/// The key of a group's checkpoint (group names may hold `/`: it comes last).
pub fn checkpoint_key(mirror: &str, id: &str, group: &str) -> String {
    format!("ckpt/{mirror}/{id}/{group}")
}

/// What a key of `__quiver_mirrors` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    /// A position: mirror, id, topic, partition.
    Position(&'a str, &'a str, &'a str, i32),
    /// A checkpoint: mirror, id, group.
    Checkpoint(&'a str, &'a str, &'a str),
}

/// Parses a key of `__quiver_mirrors`.
pub fn parse_key(key: &str) -> Option<Key<'_>> {
    let (kind, rest) = key.split_once('/')?;
    match kind {
        "pos" => {
            let mut parts = rest.splitn(4, '/');
            let (m, id, t, p) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some(Key::Position(m, id, t, p.parse().ok()?))
        }
        "ckpt" => {
            let mut parts = rest.splitn(3, '/');
            Some(Key::Checkpoint(parts.next()?, parts.next()?, parts.next()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dense_mirror_keeps_one_run() {
        let mut p = Position::default();
        p.record(&[0, 1, 2, 3], 0);
        p.record(&[4, 5], 4);
        p.record(&[6, 7, 8], 6);
        assert_eq!(
            p.syncs,
            vec![Sync {
                source: 0,
                target: 0,
                len: 9
            }]
        );
        assert_eq!(p.translate(0), Some(0));
        assert_eq!(p.translate(5), Some(5));
        assert_eq!(p.translate(9), Some(9));
        assert_eq!(p.translate(100), Some(9));
    }

    #[test]
    fn filtered_records_and_other_writers_never_make_a_group_skip() {
        let mut p = Position::default();
        // 10..=12 copied to 100..=102; 13 filtered; 14, 15 to 103, 104.
        p.record(&[10, 11, 12, 14, 15], 100);
        // Another producer wrote 105..=109; 16 went to 110.
        p.record(&[16], 110);
        assert_eq!(p.syncs.len(), 3);
        assert_eq!(p.translate(9), None);
        assert_eq!(p.translate(11), Some(101));
        // 13 was not copied: the next record copied is 14, at 103.
        assert_eq!(p.translate(13), Some(103));
        assert_eq!(p.translate(15), Some(104));
        assert_eq!(p.translate(16), Some(110));
        assert_eq!(p.translate(17), Some(111));
        // Copied after a crash but never recorded: re-read from the last run's end.
        let mut p = Position::default();
        p.record(&[0, 1], 500);
        p.record(&[51], 551);
        assert_eq!(p.translate(20), Some(502));
    }

    #[test]
    fn runs_are_capped_oldest_first() {
        let mut p = Position::default();
        for i in 0..(MAX_SYNCS as i64 + 10) {
            p.record(&[i * 2], i * 3);
        }
        assert_eq!(p.syncs.len(), MAX_SYNCS);
        assert_eq!(p.syncs[0].source, 20);
        assert_eq!(p.translate(0), None);
    }

    #[test]
    fn keys_round_trip() {
        let k = position_key("east", "abc", "orders", 7);
        assert_eq!(
            parse_key(&k),
            Some(Key::Position("east", "abc", "orders", 7))
        );
        let k = checkpoint_key("east", "abc", "team/billing");
        assert_eq!(
            parse_key(&k),
            Some(Key::Checkpoint("east", "abc", "team/billing"))
        );
        assert_eq!(parse_key("nope"), None);
    }
}
