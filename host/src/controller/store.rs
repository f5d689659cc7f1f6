//! Durable Raft storage for the metadata log: the log itself, the vote, and snapshots
//! of the state machine.
//!
//! Layout of `<data_dir>/controller/`:
//! - `raft.log`: entries as `u32 length | u32 CRC-32C | JSON entry`, appended and
//!   fdatasynced before openraft is told they are durable. A torn or corrupt tail
//!   (the broker died mid-write) is cut off on open; Raft re-replicates it.
//! - `raft-meta.json`: vote, committed log id and the last purged log id, replaced
//!   atomically (temp file, fsync, rename, fsync of the directory).
//! - `snapshot.json`: the latest state-machine snapshot, replaced atomically.
//! - `incarnation`: the incarnation this broker last registered with, replaced
//!   atomically before it registers (see [`next_incarnation`]).
//!
//! The metadata log is small (topics, brokers, leadership changes), so entries are
//! also kept in memory; purging after a snapshot rewrites the file without the prefix.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::raft::{NodeId, Response, TypeConfig};
use super::state::{Applied, State};

/// Purged entries are dropped from the file once this many have accumulated.
const REWRITE_AFTER_PURGED: usize = 1024;

fn io_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::read(&e).into()
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    crate::durability::sync_file(&file, &tmp)?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        crate::durability::sync_dir(dir)?;
    }
    Ok(())
}

/// The incarnation a starting broker registers with: `candidate` (the wall clock in
/// nanoseconds) unless an earlier process in `dir` registered with as much or more,
/// then one above that; recorded in `dir/incarnation` before it is used.
///
/// The controller takes a registration with a smaller incarnation than it knows for a
/// live broker as a late message from an older process and ignores it. Wall-clock time
/// alone does not order restarts: a broker restarted with its clock set back (an NTP
/// step, a wrong time zone, a VM restored from a snapshot) would register under a
/// smaller number forever ignored, and never rejoin the cluster.
pub(super) fn next_incarnation(dir: &Path, candidate: u64) -> std::io::Result<u64> {
    let path = dir.join("incarnation");
    let last = match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not an incarnation number: {e}", path.display()),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let next = candidate.max(last.saturating_add(1));
    write_atomic(&path, next.to_string().as_bytes())?;
    Ok(next)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RaftMeta {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

#[derive(Debug)]
struct LogInner {
    dir: PathBuf,
    file: File,
    /// Entry index -> (entry, file position of its record).
    entries: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    len: u64,
    meta: RaftMeta,
    purged_since_rewrite: usize,
}

/// The Raft log and vote, on disk.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens the log in `dir`, cutting off a torn tail.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        crate::durability::create_dir_all(dir)?;
        let meta: RaftMeta = match fs::read(dir.join("raft-meta.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join("raft-meta.json").display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RaftMeta::default(),
            Err(e) => return Err(e),
        };
        let path = dir.join("raft.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        let mut entries = BTreeMap::new();
        let mut pos = 0usize;
        while pos + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
            let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
                break;
            };
            if crc32c::crc32c(body) != crc {
                break;
            }
            let Ok(entry) = serde_json::from_slice::<Entry<TypeConfig>>(body) else {
                break;
            };
            entries.insert(entry.log_id.index, (entry, pos as u64));
            pos += 8 + len;
        }
        if pos < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                kept = pos,
                dropped = bytes.len() - pos,
                "cut a torn tail off the controller log"
            );
            file.set_len(pos as u64)?;
            crate::durability::sync_file(&file, &path)?;
        }
        if let Some(purged) = meta.last_purged {
            entries.retain(|index, _| *index > purged.index);
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                file,
                entries,
                len: pos as u64,
                meta,
                purged_since_rewrite: 0,
            })),
        })
    }
}

impl LogInner {
    fn save_meta(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.meta).expect("raft meta serialises");
        write_atomic(&self.dir.join("raft-meta.json"), &bytes)
    }

    fn rewrite(&mut self) -> std::io::Result<()> {
        let path = self.dir.join("raft.log");
        let tmp = self.dir.join("raft.log.tmp");
        let mut out = Vec::new();
        let mut positions = Vec::with_capacity(self.entries.len());
        for (index, (entry, _)) in &self.entries {
            positions.push((*index, out.len() as u64));
            encode_record(&mut out, entry);
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        crate::durability::sync_file(&file, &tmp)?;
        fs::rename(&tmp, &path)?;
        crate::durability::sync_dir(&self.dir)?;
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        self.len = out.len() as u64;
        for (index, pos) in positions {
            if let Some(slot) = self.entries.get_mut(&index) {
                slot.1 = pos;
            }
        }
        self.purged_since_rewrite = 0;
        Ok(())
    }
}

fn encode_record(out: &mut Vec<u8>, entry: &Entry<TypeConfig>) {
    let body = serde_json::to_vec(entry).expect("raft entries serialise");
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock();
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (entry, _))| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|(entry, _)| entry.log_id)
            .or(inner.meta.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.meta.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        inner.meta.vote = Some(*vote);
        inner.save_meta().map_err(io_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().meta.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        inner.meta.committed = committed;
        inner.save_meta().map_err(io_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().meta.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = {
            let mut inner = self.inner.lock();
            let mut out = Vec::new();
            let mut placed = Vec::new();
            for entry in entries {
                placed.push((inner.len + out.len() as u64, entry.clone()));
                encode_record(&mut out, &entry);
            }
            let written = inner.file.write_all(&out).and_then(|_| {
                crate::durability::sync_file_data(&inner.file, &inner.dir.join("raft.log"))
            });
            if written.is_ok() {
                inner.len += out.len() as u64;
                for (pos, entry) in placed {
                    inner.entries.insert(entry.log_id.index, (entry, pos));
                }
            }
            written
        };
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = io_err(std::io::Error::new(e.kind(), e.to_string()));
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        let Some(pos) = inner.entries.get(&log_id.index).map(|(_, pos)| *pos) else {
            return Ok(());
        };
        inner.entries.split_off(&log_id.index);
        inner
            .file
            .set_len(pos)
            .and_then(|_| crate::durability::sync_file(&inner.file, &inner.dir.join("raft.log")))
            .map_err(io_err)?;
        inner.len = pos;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        inner.meta.last_purged = Some(log_id);
        inner.save_meta().map_err(io_err)?;
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.purged_since_rewrite += inner.entries.len();
        inner.entries = keep;
        if inner.purged_since_rewrite >= REWRITE_AFTER_PURGED {
            inner.rewrite().map_err(io_err)?;
        }
        Ok(())
    }
}

/// What a snapshot holds: the state machine at `last_applied`.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    state: State,
}

#[derive(Debug)]
struct Machine {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    state: State,
}

/// The latest snapshot: its metadata and its serialised bytes.
type StoredSnapshot = (SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>);

/// The metadata state machine as openraft drives it; publishes every applied state.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    dir: PathBuf,
    machine: Arc<Mutex<Machine>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    published: Arc<watch::Sender<Arc<State>>>,
}

impl StateMachineStore {
    /// Opens the state machine, restoring the latest snapshot in `dir` if any.
    pub fn open(dir: &Path) -> std::io::Result<StateMachineStore> {
        crate::durability::create_dir_all(dir)?;
        let path = dir.join("snapshot.json");
        let (machine, snapshot) = match fs::read(&path) {
            Ok(bytes) => {
                let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                (
                    Machine {
                        last_applied: file.meta.last_log_id,
                        membership: file.meta.last_membership.clone(),
                        state: file.state,
                    },
                    Some((file.meta, bytes)),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                Machine {
                    last_applied: None,
                    membership: StoredMembership::default(),
                    state: State::default(),
                },
                None,
            ),
            Err(e) => return Err(e),
        };
        let (published, _) = watch::channel(Arc::new(machine.state.clone()));
        Ok(StateMachineStore {
            dir: dir.to_path_buf(),
            machine: Arc::new(Mutex::new(machine)),
            snapshot: Arc::new(Mutex::new(snapshot)),
            published: Arc::new(published),
        })
    }

    /// Every applied state, newest first seen by the receiver.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.published.subscribe()
    }

    /// The current applied state.
    pub fn state(&self) -> Arc<State> {
        self.published.borrow().clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (meta, bytes) = {
            let machine = self.machine.lock();
            let meta = SnapshotMeta {
                last_log_id: machine.last_applied,
                last_membership: machine.membership.clone(),
                snapshot_id: format!(
                    "{}-{}",
                    machine.last_applied.map(|l| l.leader_id.term).unwrap_or(0),
                    machine.last_applied.map(|l| l.index).unwrap_or(0)
                ),
            };
            let file = SnapshotFile {
                meta: meta.clone(),
                state: machine.state.clone(),
            };
            (
                meta,
                serde_json::to_vec(&file).expect("snapshot serialises"),
            )
        };
        write_atomic(&self.dir.join("snapshot.json"), &bytes).map_err(io_err)?;
        *self.snapshot.lock() = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        let machine = self.machine.lock();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let state = {
            let mut machine = self.machine.lock();
            for entry in entries {
                machine.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Ok(Applied::Done),
                    EntryPayload::Normal(command) => machine.state.apply(command),
                    EntryPayload::Membership(membership) => {
                        machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Ok(Applied::Done)
                    }
                };
                responses.push(Response(response));
            }
            Arc::new(machine.state.clone())
        };
        self.published.send_replace(state);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(read_err)?;
        write_atomic(&self.dir.join("snapshot.json"), &bytes).map_err(io_err)?;
        let state = {
            let mut machine = self.machine.lock();
            machine.last_applied = meta.last_log_id;
            machine.membership = meta.last_membership.clone();
            machine.state = file.state;
            Arc::new(machine.state.clone())
        };
        *self.snapshot.lock() = Some((meta.clone(), bytes));
        self.published.send_replace(state);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.snapshot.lock().as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
