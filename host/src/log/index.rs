//! Sparse per-segment indexes: offset -> file position and timestamp -> offset.
//!
//! Both indexes live in memory (a sorted `Vec`, searched by binary search) and on disk as
//! append-only files of fixed-size big-endian entries. New entries are buffered in memory
//! and written out when the segment is flushed or sealed, so the append path never pays a
//! second write per batch. The files are only a startup shortcut: a missing or damaged
//! one is rebuilt from the segment's batches, so they are never fsynced ahead of the data.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{io_error, LogError};

/// One fixed-size entry of an index file.
pub(super) trait IndexEntry: Copy {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Self;
}

/// Maps the offset of a batch (relative to the segment base) to its byte position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")),
        }
    }
}

/// Records that every batch up to and including the one at `relative_offset` has a max
/// timestamp of at most `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
        }
    }
}

/// An index held in memory and mirrored, append-only, in a file.
pub(super) struct IndexFile<E> {
    path: PathBuf,
    file: Arc<File>,
    entries: Vec<E>,
    /// How many leading entries are already in the file.
    persisted: usize,
}

impl<E: IndexEntry> IndexFile<E> {
    /// Reads the entries of an existing index file. `None` when the file is missing or its
    /// size is not a whole number of entries, i.e. when it cannot be trusted as is.
    pub fn read_entries(path: &Path) -> Result<Option<Vec<E>>, LogError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path, "read index", e)),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        Ok(Some(bytes.chunks_exact(E::SIZE).map(E::decode).collect()))
    }

    /// Opens an existing index file whose `entries` were read and validated by the caller.
    pub fn open_existing(path: PathBuf, entries: Vec<E>) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, "open index", e))?;
        let persisted = entries.len();
        Ok(IndexFile {
            path,
            file: Arc::new(file),
            entries,
            persisted,
        })
    }

    /// Creates (or replaces) the index file with exactly `entries`.
    pub fn create(path: PathBuf, entries: Vec<E>) -> Result<Self, LogError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_error(&path, "create index", e))?;
        let mut bytes = Vec::with_capacity(entries.len() * E::SIZE);
        for entry in &entries {
            entry.encode(&mut bytes);
        }
        file.write_all(&bytes)
            .map_err(|e| io_error(&path, "write index", e))?;
        let persisted = entries.len();
        Ok(IndexFile {
            path,
            file: Arc::new(file),
            entries,
            persisted,
        })
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// Writes buffered entries to the file (page cache only).
    pub fn write_pending(&mut self) -> Result<(), LogError> {
        if self.persisted == self.entries.len() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity((self.entries.len() - self.persisted) * E::SIZE);
        for entry in &self.entries[self.persisted..] {
            entry.encode(&mut bytes);
        }
        let at = (self.persisted * E::SIZE) as u64;
        self.file
            .write_all_at(&bytes, at)
            .map_err(|e| io_error(&self.path, "write index", e))?;
        self.persisted = self.entries.len();
        Ok(())
    }

    /// Keeps the first `len` entries, cutting the file too if it held more.
    pub fn truncate(&mut self, len: usize) -> Result<(), LogError> {
        if len >= self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(len);
        if self.persisted > len {
            self.file
                .set_len((len * E::SIZE) as u64)
                .map_err(|e| io_error(&self.path, "truncate index", e))?;
            self.persisted = len;
        }
        Ok(())
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the file was renamed.
    pub fn set_path(&mut self, path: PathBuf) {
        self.path = path;
    }
}

impl IndexFile<OffsetEntry> {
    /// Position of the last indexed batch at or before `relative_offset`, or 0.
    pub fn position_for(&self, relative_offset: u32) -> u32 {
        let after = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map_or(0, |i| self.entries[i].position)
    }
}

impl IndexFile<TimeEntry> {
    /// The last entry whose timestamp is strictly below `timestamp`: every record up to its
    /// batch is older than `timestamp`, so a search may start there. Strictness matters: an
    /// earlier record may carry exactly `timestamp`.
    pub fn entry_before(&self, timestamp: i64) -> Option<TimeEntry> {
        let after = self.entries.partition_point(|e| e.timestamp < timestamp);
        after.checked_sub(1).map(|i| self.entries[i])
    }
}

/// Whether offset index entries are strictly increasing and point inside a file of
/// `file_len` bytes.
pub(super) fn offset_entries_valid(entries: &[OffsetEntry], file_len: u64) -> bool {
    entries.iter().all(|e| u64::from(e.position) < file_len)
        && entries
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
}

/// Whether time index entries have strictly increasing timestamps and non-decreasing
/// offsets, as the append path writes them.
pub(super) fn time_entries_valid(entries: &[TimeEntry]) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].timestamp < w[1].timestamp && w[0].relative_offset <= w[1].relative_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = IndexFile::create(path.clone(), Vec::new()).unwrap();
        for i in 0..5u32 {
            index.push(OffsetEntry {
                relative_offset: i * 10,
                position: i * 100,
            });
        }
        index.write_pending().unwrap();
        index.push(OffsetEntry {
            relative_offset: 50,
            position: 500,
        });
        index.write_pending().unwrap();
        let read = IndexFile::<OffsetEntry>::read_entries(&path)
            .unwrap()
            .unwrap();
        assert_eq!(read, index.entries());
        assert!(offset_entries_valid(&read, 501));
        assert!(!offset_entries_valid(&read, 500));
        assert_eq!(index.position_for(0), 0);
        assert_eq!(index.position_for(9), 0);
        assert_eq!(index.position_for(10), 100);
        assert_eq!(index.position_for(1000), 500);

        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(IndexFile::<OffsetEntry>::read_entries(&path)
            .unwrap()
            .is_none());
    }

    #[test]
    fn time_lookup_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            TimeEntry {
                timestamp: 10,
                relative_offset: 0,
            },
            TimeEntry {
                timestamp: 20,
                relative_offset: 5,
            },
        ];
        assert!(time_entries_valid(&entries));
        let index = IndexFile::create(dir.path().join("0.timeindex"), entries).unwrap();
        assert_eq!(index.entry_before(10), None);
        assert_eq!(index.entry_before(20).unwrap().timestamp, 10);
        assert_eq!(index.entry_before(21).unwrap().relative_offset, 5);
    }
}
