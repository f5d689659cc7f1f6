//! The consumer group coordinator: group membership and rebalances (the classic
//! protocol), and committed offsets, made durable in the internal compacted topic
//! `__consumer_offsets`.
//!
//! The protocol itself is the pure state machine in [`state`]; this module is its
//! runtime. It parks JoinGroup and SyncGroup responses on oneshot channels until the
//! state machine completes them, drives its timers (sessions, rebalance deadlines, the
//! initial rebalance delay) from one task, and persists what the state machine asks for
//! in Kafka's own record schemas ([`records`]) before any response that depends on it
//! goes out: an OffsetCommit is acknowledged only once its records are in every in-sync
//! replica of their offsets partition (acks=all), so an acknowledged commit survives
//! the loss of the coordinator.
//!
//! A group lives in partition `abs(hashCode(group)) % N` of `__consumer_offsets`, as in
//! Kafka, and is coordinated by that partition's leader: this broker serves the groups
//! of the offsets partitions it leads ([`GroupCoordinator::take_over`] replays one when
//! it gains the leadership, [`GroupCoordinator::resign`] forgets its groups when it
//! loses it) and answers NOT_COORDINATOR for the rest. Until the offsets topic is known
//! requests get COORDINATOR_LOAD_IN_PROGRESS.
//!
//! FindCoordinator for *transaction* keys also names this broker: it will be the
//! transaction coordinator, and a transactional client then learns from InitProducerId
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, with a logged reason) that transactions are
//! not supported yet, instead of retrying COORDINATOR_NOT_AVAILABLE until it times out.

pub mod records;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::broker::now_ms;
use crate::log::LogError;
use crate::partition::encode::{self, RecordData};
use crate::partition::{AppendError, CommitError, Partition};
use records::{GroupValue, OffsetValue, RecordKey};
use state::{
    GroupDescription, GroupState, Groups, JoinRequest, JoinResponse, Leaving, Limits, Output,
    SyncRequest, SyncResponse, Token,
};

/// The internal topic holding offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The broker coordinating `key` (a group id, or a transactional id) by `metadata`:
/// the leader of the `__consumer_offsets` partition the key hashes to. `None` while
/// that topic does not exist or the partition has no leader.
pub fn coordinator_of(metadata: &crate::controller::State, key: &str) -> Option<i32> {
    let topic = metadata.topics.get(OFFSETS_TOPIC)?;
    let partition = records::partition_for(key, topic.partitions);
    metadata
        .partition(OFFSETS_TOPIC, partition)
        .map(|p| p.leader)
        .filter(|l| *l != crate::controller::NO_LEADER)
}

/// The longest the timer task sleeps without looking, so a clock step is noticed.
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);

/// Why the coordinator could not load or store group state.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Reading a partition of the offsets topic failed.
    #[error("reading {OFFSETS_TOPIC}-{partition} at offset {offset}: {source}")]
    Read {
        /// The partition.
        partition: i32,
        /// Where the read started.
        offset: i64,
        /// What failed.
        source: LogError,
    },
    /// A batch in the offsets topic does not decode.
    #[error("decoding {OFFSETS_TOPIC}-{partition} at offset {offset}: {reason}")]
    Decode {
        /// The partition.
        partition: i32,
        /// Where the read started.
        offset: i64,
        /// The decoder's message.
        reason: String,
    },
    /// Records could not be encoded into a batch.
    #[error("encoding {OFFSETS_TOPIC} records: {0}")]
    Encode(String),
    /// The offsets topic refused the append.
    #[error("appending to {OFFSETS_TOPIC}-{partition}: {source}")]
    Append {
        /// The partition.
        partition: i32,
        /// What failed.
        source: AppendError,
    },
}

impl GroupError {
    /// The error a committing client receives when storing failed.
    pub fn commit_code(&self) -> ResponseError {
        match self {
            GroupError::Append {
                source: AppendError::TooLarge { .. },
                ..
            } => ResponseError::InvalidCommitOffsetSize,
            // The leadership moved: the client finds the new coordinator.
            GroupError::Append {
                source: AppendError::NotLeader,
                ..
            } => ResponseError::NotCoordinator,
            _ => ResponseError::CoordinatorNotAvailable,
        }
    }
}

/// What a startup replay found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Records read.
    pub records: u64,
    /// Records whose key or value did not parse (skipped, logged).
    pub skipped: u64,
    /// Groups known afterwards.
    pub groups: usize,
}

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

struct Inner {
    groups: Groups,
    /// Partitions of the offsets topic, which places groups; 0 until loaded.
    count: i32,
    /// The offsets partitions this broker coordinates: it leads them and has replayed
    /// them.
    owned: BTreeMap<i32, Arc<Partition>>,
    /// Whether the cluster's metadata names this broker leader of an offsets
    /// partition: such a partition not yet taken over is loading, not elsewhere.
    leads: Option<LeadershipProbe>,
    /// How long responses wait for their group metadata to replicate.
    store_timeout: Duration,
    waiters: HashMap<Token, Waiter>,
    next_token: Token,
}

/// Kafka's `offsets.commit.timeout.ms` default.
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers whether this broker leads offsets partition `index` in the metadata.
pub type LeadershipProbe = Arc<dyn Fn(i32) -> bool + Send + Sync>;

/// The group coordinator of this broker.
pub struct GroupCoordinator {
    inner: Mutex<Inner>,
    /// Wakes the timer task when a new deadline may be earlier than the one it sleeps to.
    wake: Notify,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("GroupCoordinator")
            .field("owned", &inner.owned.len())
            .field("parked", &inner.waiters.len())
            .finish()
    }
}

impl GroupCoordinator {
    /// A coordinator that answers COORDINATOR_LOAD_IN_PROGRESS until [`load`](Self::load).
    pub fn new(limits: Limits) -> GroupCoordinator {
        GroupCoordinator {
            inner: Mutex::new(Inner {
                groups: Groups::new(limits),
                count: 0,
                owned: BTreeMap::new(),
                leads: None,
                store_timeout: DEFAULT_STORE_TIMEOUT,
                waiters: HashMap::new(),
                next_token: 0,
            }),
            wake: Notify::new(),
        }
    }

    /// Starts serving with an offsets topic of `count` partitions, coordinating the
    /// groups of `led` (the partitions this broker leads), each replayed first.
    pub fn load(&self, count: i32, led: Vec<Arc<Partition>>) -> Result<LoadStats, GroupError> {
        let mut stats = LoadStats::default();
        {
            let mut inner = self.inner.lock();
            inner.count = count;
        }
        for partition in led {
            let one = self.take_over(partition)?;
            stats.records += one.records;
            stats.skipped += one.skipped;
        }
        stats.groups = self.inner.lock().groups.list().len();
        Ok(stats)
    }

    /// Becomes the coordinator of the groups of offsets `partition`, which this broker
    /// now leads: replays it whole (as leader, its log is the truth, including what the
    /// previous coordinator wrote since this broker last looked) before serving them.
    pub fn take_over(&self, partition: Arc<Partition>) -> Result<LoadStats, GroupError> {
        let now = now_ms();
        let index = partition.index();
        let mut inner = self.inner.lock();
        let count = inner.count;
        // Whatever is in memory for these groups is from an earlier tenure.
        inner.groups.unload(
            |g| records::partition_for(g, count) == index,
            ResponseError::NotCoordinator,
        );
        let mut stats = LoadStats::default();
        let end = partition.log().log_end_offset();
        replay(&partition, &mut inner.groups, now, end, &mut stats)?;
        // Loading may have restored members whose sessions now run.
        inner.groups.take_outputs();
        inner.owned.insert(index, partition);
        stats.groups = inner.groups.list().len();
        drop(inner);
        self.wake.notify_one();
        Ok(stats)
    }

    /// Stops coordinating the groups of offsets partition `index` (another broker leads
    /// it now): forgets them and sends their parked joins and syncs to the new
    /// coordinator with NOT_COORDINATOR. Returns how many groups were forgotten.
    pub fn resign(&self, index: i32) -> usize {
        let mut inner = self.inner.lock();
        if inner.owned.remove(&index).is_none() {
            return 0;
        }
        let count = inner.count;
        let forgotten = inner.groups.unload(
            |g| records::partition_for(g, count) == index,
            ResponseError::NotCoordinator,
        );
        inner.run_outputs();
        forgotten
    }

    /// Lets the coordinator tell a partition it is about to take over (the metadata
    /// already names this broker its leader: COORDINATOR_LOAD_IN_PROGRESS, retried by
    /// clients) from one another broker coordinates (NOT_COORDINATOR).
    pub fn set_leadership_probe(&self, probe: LeadershipProbe) {
        self.inner.lock().leads = Some(probe);
    }

    /// How long an OffsetCommit or a group's metadata may take to reach the offsets
    /// partition's in-sync replicas (`group.offsets_commit_timeout_ms`).
    pub fn set_store_timeout(&self, timeout: Duration) {
        self.inner.lock().store_timeout = timeout;
    }

    /// How many partitions the offsets topic has (0 until loaded).
    pub fn partition_count(&self) -> usize {
        self.inner.lock().count as usize
    }

    /// The offsets partitions this broker coordinates.
    pub fn coordinated(&self) -> Vec<i32> {
        self.inner.lock().owned.keys().copied().collect()
    }

    /// Handles a JoinGroup, waiting as long as the rebalance takes.
    pub async fn join(&self, request: JoinRequest) -> JoinResponse {
        let member = request.member_id.clone();
        let receiver = {
            let mut inner = self.inner.lock();
            if let Err(e) = inner.owner(&request.group_id) {
                return error_join(e, &member);
            }
            let token = inner.token();
            let (tx, rx) = oneshot::channel();
            inner.waiters.insert(token, Waiter::Join(tx));
            inner.groups.join(now_ms(), token, request);
            inner.run_outputs();
            rx
        };
        self.wake.notify_one();
        receiver.await.unwrap_or_else(|_| {
            // The waiter is only dropped if the coordinator forgot it: a bug, but the
            // client can retry.
            error_join(ResponseError::UnknownServerError, &member)
        })
    }

    /// Handles a SyncGroup, waiting for the leader's assignment when needed.
    pub async fn sync(&self, request: SyncRequest) -> SyncResponse {
        let receiver = {
            let mut inner = self.inner.lock();
            if let Err(e) = inner.owner(&request.group_id) {
                return error_sync(e);
            }
            let token = inner.token();
            let (tx, rx) = oneshot::channel();
            inner.waiters.insert(token, Waiter::Sync(tx));
            inner.groups.sync(now_ms(), token, request);
            inner.run_outputs();
            rx
        };
        self.wake.notify_one();
        receiver
            .await
            .unwrap_or_else(|_| error_sync(ResponseError::UnknownServerError))
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        instance: Option<&str>,
    ) -> Option<ResponseError> {
        let mut inner = self.inner.lock();
        if let Err(e) = inner.owner(group) {
            return Some(e);
        }
        inner
            .groups
            .heartbeat(now_ms(), group, generation, member, instance)
    }

    /// Handles a LeaveGroup; one result per member named.
    pub fn leave(
        &self,
        group: &str,
        leaving: &[Leaving],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let results = {
            let mut inner = self.inner.lock();
            inner.owner(group)?;
            let results = inner.groups.leave(now_ms(), group, leaving);
            inner.run_outputs();
            results
        };
        self.wake.notify_one();
        Ok(results)
    }

    /// Validates a commit, appends its records, applies it, and returns once the
    /// records are in every in-sync replica (or `timeout` passed: REQUEST_TIMED_OUT,
    /// the client retries; leadership lost meanwhile: NOT_COORDINATOR).
    pub async fn commit(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        instance: Option<&str>,
        offsets: Vec<((String, i32), OffsetValue)>,
        timeout: Duration,
    ) -> Result<(), ResponseError> {
        let (partition, end) = self.store_offsets(group, generation, member, instance, offsets)?;
        replicated(&partition, end, timeout).await
    }

    /// The synchronous half of [`commit`](Self::commit): what it appended, and where.
    fn store_offsets(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        instance: Option<&str>,
        offsets: Vec<((String, i32), OffsetValue)>,
    ) -> Result<(Arc<Partition>, i64), ResponseError> {
        let now = now_ms();
        let mut inner = self.inner.lock();
        let partition = inner.owner(group)?;
        inner
            .groups
            .validate_commit(now, group, generation, member, instance)?;
        if offsets.is_empty() {
            return Ok((partition, 0));
        }
        let records = offsets
            .iter()
            .map(|((topic, partition), value)| {
                let key = RecordKey::Offset {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                (key.encode(), Some(value.encode()))
            })
            .collect::<Vec<_>>();
        let end = inner.append(group, &records, now, -1).map_err(|e| {
            tracing::warn!(group, error = %e, "storing committed offsets failed");
            e.commit_code()
        })?;
        // Applied now, answered once replicated: a reader may see it a moment early,
        // and if it is lost with the leadership, so are these groups (resign), which
        // the next coordinator rebuilds from what was replicated.
        inner.groups.apply_offsets(
            now,
            group,
            offsets.into_iter().map(|(tp, value)| (tp, Some(value))),
        );
        Ok((partition, end))
    }

    /// A group's committed offsets.
    pub fn offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<(String, i32), OffsetValue>, ResponseError> {
        let inner = self.inner.lock();
        inner.owner(group)?;
        Ok(inner.groups.offsets(group))
    }

    /// Describes a group (`None`: it does not exist).
    pub fn describe(&self, group: &str) -> Result<Option<GroupDescription>, ResponseError> {
        let inner = self.inner.lock();
        inner.owner(group)?;
        Ok(inner.groups.describe(group))
    }

    /// Every group this broker coordinates, with its protocol type and state.
    pub fn list(&self) -> Result<Vec<(String, String, GroupState)>, ResponseError> {
        let inner = self.inner.lock();
        if inner.count == 0 {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        let mut groups = inner.groups.list();
        groups.retain(|(g, _, _)| {
            inner
                .owned
                .contains_key(&records::partition_for(g, inner.count))
        });
        Ok(groups)
    }

    /// Deletes an empty group and its offsets (tombstones first, then forgotten).
    pub fn delete_group(&self, group: &str) -> Result<(), ResponseError> {
        let now = now_ms();
        let mut inner = self.inner.lock();
        inner.owner(group)?;
        let offsets = inner.groups.deletable(group)?;
        let mut records: Vec<(Bytes, Option<Bytes>)> = offsets
            .into_iter()
            .map(|(topic, partition)| {
                let key = RecordKey::Offset {
                    group: group.to_string(),
                    topic,
                    partition,
                };
                (key.encode(), None)
            })
            .collect();
        records.push((
            RecordKey::Group {
                group: group.to_string(),
            }
            .encode(),
            None,
        ));
        inner.append(group, &records, now, 1).map_err(|e| {
            tracing::warn!(group, error = %e, "storing a group deletion failed");
            e.commit_code()
        })?;
        inner.groups.remove_group(group);
        tracing::info!(group, "deleted group");
        Ok(())
    }

    /// Deletes committed offsets of partitions the group no longer consumes.
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let now = now_ms();
        let mut inner = self.inner.lock();
        inner.owner(group)?;
        let verdicts = inner.groups.deletable_offsets(group, partitions)?;
        let doomed: Vec<(String, i32)> = partitions
            .iter()
            .zip(&verdicts)
            .filter(|(tp, verdict)| {
                verdict.is_none() && inner.groups.offset(group, &tp.0, tp.1).is_some()
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        if !doomed.is_empty() {
            let records: Vec<(Bytes, Option<Bytes>)> = doomed
                .iter()
                .map(|(topic, partition)| {
                    let key = RecordKey::Offset {
                        group: group.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    (key.encode(), None)
                })
                .collect();
            inner.append(group, &records, now, 1).map_err(|e| {
                tracing::warn!(group, error = %e, "storing offset deletions failed");
                e.commit_code()
            })?;
            inner
                .groups
                .apply_offsets(now, group, doomed.into_iter().map(|tp| (tp, None)));
        }
        Ok(verdicts)
    }

    /// Drives session expiry and rebalance deadlines until the coordinator is dropped.
    pub fn spawn_timers(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let woken = this.wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let next = {
                    let mut inner = this.inner.lock();
                    let now = now_ms();
                    inner.groups.tick(now);
                    inner.run_outputs();
                    inner.groups.next_deadline().map(|d| d - now)
                };
                let sleep = next
                    .map(|ms| Duration::from_millis(ms.max(0) as u64))
                    .unwrap_or(MAX_TIMER_SLEEP)
                    .min(MAX_TIMER_SLEEP);
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
        })
    }
}

impl Inner {
    /// The offsets partition of `group` if this broker coordinates it: loaded, and
    /// still its leader.
    fn owner(&self, group: &str) -> Result<Arc<Partition>, ResponseError> {
        if self.count == 0 {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        let index = records::partition_for(group, self.count);
        match self.owned.get(&index) {
            Some(p) if p.check_leader(-1).is_ok() => Ok(p.clone()),
            _ if self.leads.as_ref().is_some_and(|leads| leads(index)) => {
                Err(ResponseError::CoordinatorLoadInProgress)
            }
            _ => Err(ResponseError::NotCoordinator),
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    /// Carries out the state machine's outputs in order: group metadata is stored
    /// before the responses that follow it are released, and, where the offsets
    /// partition is replicated, those responses wait until the store is in every
    /// in-sync replica (as Kafka's SyncGroup does), so a member never works from an
    /// assignment a coordinator failover could forget.
    fn run_outputs(&mut self) {
        let now = now_ms();
        // Stores the responses still wait for: (partition, end offset).
        let mut stores: Vec<(Arc<Partition>, i64)> = Vec::new();
        let mut held: Vec<(Waiter, Output)> = Vec::new();
        for output in self.groups.take_outputs() {
            match output {
                Output::Persist { group, value } => {
                    let record = (
                        RecordKey::Group {
                            group: group.clone(),
                        }
                        .encode(),
                        value.as_ref().map(GroupValue::encode),
                    );
                    match self.append(&group, &[record], now, 1) {
                        Ok(end) => {
                            let index = records::partition_for(&group, self.count);
                            if let Some(partition) = self.owned.get(&index) {
                                if partition.commit_status(end).is_none() {
                                    stores.push((partition.clone(), end));
                                }
                            }
                        }
                        // The membership is still valid in memory; only a restart
                        // before the next successful store loses this generation.
                        Err(e) => {
                            tracing::error!(group, error = %e, "storing group metadata failed")
                        }
                    }
                }
                Output::Join(token, _) | Output::Sync(token, _) => {
                    let Some(waiter) = self.waiters.remove(&token) else {
                        continue;
                    };
                    if stores.is_empty() {
                        deliver(waiter, output);
                    } else {
                        held.push((waiter, output));
                    }
                }
            }
        }
        if held.is_empty() {
            return;
        }
        let timeout = self.store_timeout;
        tokio::spawn(async move {
            let mut failed = None;
            for (partition, end) in stores {
                if let Err(e) = partition.wait_for_commit(end, timeout).await {
                    tracing::warn!(partition = partition.index(), error = %e, "group metadata was not replicated; its members will rejoin");
                    failed = Some(match e {
                        CommitError::NotLeader => ResponseError::NotCoordinator,
                        _ => ResponseError::CoordinatorNotAvailable,
                    });
                    break;
                }
            }
            for (waiter, output) in held {
                match (failed, output) {
                    (None, output) => deliver(waiter, output),
                    (Some(e), Output::Join(_, r)) => {
                        deliver_join(waiter, error_join(e, &r.member_id))
                    }
                    (Some(e), _) => deliver_sync(waiter, error_sync(e)),
                }
            }
        });
    }

    /// Appends `records` to the group's offsets partition as its leader; returns the
    /// end offset to wait for when `acks` is -1 (checked against
    /// `min.insync.replicas` first, as a produce would be).
    fn append(
        &self,
        group: &str,
        records: &[(Bytes, Option<Bytes>)],
        now: i64,
        acks: i16,
    ) -> Result<i64, GroupError> {
        let index = records::partition_for(group, self.count);
        let partition = self.owned.get(&index).ok_or(GroupError::Append {
            partition: index,
            source: AppendError::NotLeader,
        })?;
        let batch = encode_batch(records, now)?;
        let (info, _) = partition
            .append_with_acks(&batch, now, acks)
            .map_err(|source| GroupError::Append {
                partition: index,
                source,
            })?;
        Ok(info.last_offset + 1)
    }
}

fn deliver(waiter: Waiter, output: Output) {
    match output {
        Output::Join(_, response) => deliver_join(waiter, response),
        Output::Sync(_, response) => deliver_sync(waiter, response),
        Output::Persist { .. } => {}
    }
}

fn deliver_join(waiter: Waiter, response: JoinResponse) {
    if let Waiter::Join(tx) = waiter {
        let _ = tx.send(response);
    }
}

fn deliver_sync(waiter: Waiter, response: SyncResponse) {
    if let Waiter::Sync(tx) = waiter {
        let _ = tx.send(response);
    }
}

/// Waits until `partition` has replicated up to `end` to its in-sync replicas.
async fn replicated(
    partition: &Partition,
    end: i64,
    timeout: Duration,
) -> Result<(), ResponseError> {
    if end == 0 {
        return Ok(());
    }
    partition
        .wait_for_commit(end, timeout)
        .await
        .map_err(|e| match e {
            CommitError::NotLeader => ResponseError::NotCoordinator,
            CommitError::Timeout => ResponseError::RequestTimedOut,
            CommitError::NotEnoughReplicas { .. } | CommitError::Storage => {
                ResponseError::CoordinatorNotAvailable
            }
        })
}

/// One uncompressed batch of keyed records.
fn encode_batch(records: &[(Bytes, Option<Bytes>)], now: i64) -> Result<Bytes, GroupError> {
    let data: Vec<RecordData> = records
        .iter()
        .map(|(key, value)| RecordData {
            key: Some(key.clone()),
            value: value.clone(),
            headers: Vec::new(),
            timestamp: now,
        })
        .collect();
    encode::encode_batch(&data, Compression::None).map_err(GroupError::Encode)
}

/// Applies every record of one offsets partition, oldest first.
fn replay(
    partition: &Partition,
    groups: &mut Groups,
    now: i64,
    end: i64,
    stats: &mut LoadStats,
) -> Result<(), GroupError> {
    let index = partition.index();
    let mut offset = partition.log().log_start_offset();
    while offset < end {
        let read = partition
            .log()
            .read(offset, 1024 * 1024, end, true)
            .map_err(|source| GroupError::Read {
                partition: index,
                offset,
                source,
            })?;
        let mut bytes = read.records;
        if bytes.is_empty() {
            break;
        }
        let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|e| GroupError::Decode {
            partition: index,
            offset,
            reason: e.to_string(),
        })?;
        let mut next = offset;
        for set in sets {
            for record in set.records {
                next = next.max(record.offset + 1);
                if record.offset < offset || record.control {
                    continue;
                }
                stats.records += 1;
                if let Err(reason) = apply_record(groups, now, &record) {
                    stats.skipped += 1;
                    tracing::warn!(partition = index, offset = record.offset, %reason, "skipped an unreadable group record");
                }
            }
        }
        if next == offset {
            break;
        }
        offset = next;
    }
    Ok(())
}

fn apply_record(groups: &mut Groups, now: i64, record: &Record) -> Result<(), String> {
    let key = record.key.as_ref().ok_or("record without a key")?;
    match RecordKey::decode(key).map_err(|e| e.to_string())? {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            let value = match &record.value {
                Some(v) => Some(OffsetValue::decode(v).map_err(|e| e.to_string())?),
                None => None,
            };
            groups.apply_offsets(now, &group, [((topic, partition), value)]);
        }
        RecordKey::Group { group } => {
            let value = match &record.value {
                Some(v) => Some(GroupValue::decode(v).map_err(|e| e.to_string())?),
                None => None,
            };
            groups.load_group(now, &group, value);
        }
    }
    Ok(())
}

fn error_join(error: ResponseError, member: &str) -> JoinResponse {
    JoinResponse {
        error: Some(error),
        generation: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        skip_assignment: false,
        member_id: member.to_string(),
        members: Vec::new(),
    }
}

fn error_sync(error: ResponseError) -> SyncResponse {
    SyncResponse {
        error: Some(error),
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::topic::resolve;
    use crate::config::LogDefaults;
    use crate::log::Log;

    fn offsets_partitions(dir: &std::path::Path, n: i32) -> Vec<Arc<Partition>> {
        let settings = Arc::new(resolve(&LogDefaults::default(), &BTreeMap::new()));
        (0..n)
            .map(|i| {
                let log = Log::open(&dir.join(format!("p{i}")), settings.log.clone(), 0).unwrap();
                Arc::new(Partition::open(OFFSETS_TOPIC.into(), i, log, settings.clone()).unwrap())
            })
            .collect()
    }

    fn limits() -> Limits {
        Limits {
            initial_rebalance_delay_ms: 0,
            ..Limits::default()
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    fn join_request(group: &str) -> JoinRequest {
        JoinRequest {
            group_id: group.into(),
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
            require_known_member_id: false,
        }
    }

    #[tokio::test]
    async fn state_survives_a_reload_from_the_offsets_topic() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = GroupCoordinator::new(limits());
        assert_eq!(
            coordinator.heartbeat("g", 0, "m", None),
            Some(ResponseError::CoordinatorLoadInProgress)
        );
        coordinator
            .load(3, offsets_partitions(dir.path(), 3))
            .unwrap();

        let joined = coordinator.join(join_request("g")).await;
        assert_eq!(joined.error, None);
        let synced = coordinator
            .sync(SyncRequest {
                group_id: "g".into(),
                generation: joined.generation,
                member_id: joined.member_id.clone(),
                instance_id: None,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"a"))],
            })
            .await;
        assert_eq!(synced.assignment, Bytes::from_static(b"a"));
        let value = |offset| OffsetValue {
            offset,
            leader_epoch: 4,
            metadata: "meta".into(),
            commit_timestamp: 1,
        };
        coordinator
            .commit(
                "g",
                joined.generation,
                &joined.member_id,
                None,
                vec![(("t".into(), 0), value(10)), (("t".into(), 1), value(11))],
                WAIT,
            )
            .await
            .unwrap();
        coordinator
            .commit(
                "solo",
                -1,
                "",
                None,
                vec![(("t".into(), 0), value(5))],
                WAIT,
            )
            .await
            .unwrap();
        coordinator
            .commit(
                "gone",
                -1,
                "",
                None,
                vec![(("t".into(), 0), value(6))],
                WAIT,
            )
            .await
            .unwrap();
        coordinator.delete_group("gone").unwrap();
        coordinator
            .delete_offsets("solo", &[("t".into(), 0)])
            .unwrap();
        assert_eq!(
            coordinator
                .commit(
                    "g",
                    joined.generation + 1,
                    &joined.member_id,
                    None,
                    vec![],
                    WAIT
                )
                .await,
            Err(ResponseError::IllegalGeneration)
        );

        let reloaded = GroupCoordinator::new(limits());
        let stats = reloaded.load(3, offsets_partitions(dir.path(), 3)).unwrap();
        assert_eq!(stats.skipped, 0);
        let offsets = reloaded.offsets("g").unwrap();
        assert_eq!(offsets[&("t".to_string(), 0)], value(10));
        assert_eq!(offsets[&("t".to_string(), 1)], value(11));
        assert!(reloaded.offsets("solo").unwrap().is_empty());
        assert!(reloaded.describe("gone").unwrap().is_none());
        let described = reloaded.describe("g").unwrap().unwrap();
        assert_eq!(described.state, GroupState::Stable);
        assert_eq!(described.members[0].assignment, Bytes::from_static(b"a"));
        assert_eq!(
            reloaded.heartbeat("g", joined.generation, &joined.member_id, None),
            None
        );
    }

    #[tokio::test]
    async fn parked_joins_are_released_by_the_timer() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = Arc::new(GroupCoordinator::new(Limits {
            initial_rebalance_delay_ms: 50,
            ..Limits::default()
        }));
        coordinator
            .load(1, offsets_partitions(dir.path(), 1))
            .unwrap();
        let timers = coordinator.spawn_timers();
        let (a, b) = tokio::join!(
            coordinator.join(join_request("g")),
            coordinator.join(join_request("g"))
        );
        timers.abort();
        assert_eq!(a.generation, 1);
        assert_eq!(b.generation, 1);
        assert_eq!(a.leader, b.leader);
    }

    /// A group whose offsets partition `index` of `n`.
    fn group_in(index: i32, n: i32) -> String {
        (0..)
            .map(|i| format!("g{i}"))
            .find(|g| records::partition_for(g, n) == index)
            .unwrap()
    }

    #[tokio::test]
    async fn only_the_groups_of_led_partitions_are_served_and_resigning_releases_them() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = Arc::new(GroupCoordinator::new(Limits {
            initial_rebalance_delay_ms: 60_000,
            ..Limits::default()
        }));
        let partitions = offsets_partitions(dir.path(), 3);
        // This broker leads partitions 0 and 1 of 3.
        coordinator.load(3, partitions[..2].to_vec()).unwrap();
        assert_eq!(coordinator.coordinated(), vec![0, 1]);
        let (mine, other) = (group_in(1, 3), group_in(2, 3));
        assert_eq!(
            coordinator.join(join_request(&other)).await.error,
            Some(ResponseError::NotCoordinator)
        );
        // once the metadata names this broker leader of partition 2, its groups are
        // loading here (clients retry), not elsewhere
        coordinator.set_leadership_probe(Arc::new(|index| index == 2));
        assert_eq!(
            coordinator.offsets(&other),
            Err(ResponseError::CoordinatorLoadInProgress)
        );
        coordinator.set_leadership_probe(Arc::new(|_| false));
        assert_eq!(
            coordinator.offsets(&other),
            Err(ResponseError::NotCoordinator)
        );
        assert_eq!(
            coordinator.commit(&other, -1, "", None, vec![], WAIT).await,
            Err(ResponseError::NotCoordinator)
        );
        let value = OffsetValue {
            offset: 7,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 1,
        };
        coordinator
            .commit(
                &mine,
                -1,
                "",
                None,
                vec![(("t".into(), 0), value.clone())],
                WAIT,
            )
            .await
            .unwrap();

        // A join parks for the initial rebalance delay; losing the partition answers it.
        let parked = tokio::spawn({
            let coordinator = coordinator.clone();
            let mine = mine.clone();
            async move { coordinator.join(join_request(&mine)).await }
        });
        while coordinator
            .describe(&mine)
            .unwrap()
            .is_none_or(|d| d.members.is_empty())
        {
            tokio::task::yield_now().await;
        }
        assert_eq!(coordinator.resign(1), 1);
        assert_eq!(
            parked.await.unwrap().error,
            Some(ResponseError::NotCoordinator)
        );
        assert_eq!(
            coordinator.offsets(&mine),
            Err(ResponseError::NotCoordinator)
        );
        assert!(coordinator.list().unwrap().is_empty());

        // Leading it again replays what was committed.
        coordinator.take_over(partitions[1].clone()).unwrap();
        assert_eq!(
            coordinator.offsets(&mine).unwrap()[&("t".to_string(), 0)],
            value
        );
    }
}
