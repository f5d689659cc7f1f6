//! The partition's role and everything that depends on it: becoming leader or follower
//! from the metadata, the checks Kafka requests pass against the leader epoch, acks=all
//! completion, the leader's bookkeeping of follower fetches and ISR changes, and the
//! follower's appends, truncations and high watermark updates.
//!
//! Every follower operation names the leader and epoch it was fetched under and is
//! refused ([`AppendError::NotFollower`]) if the role changed meanwhile: a fetch response
//! that arrives after the metadata moved on must not touch the log.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use super::replicas::{FollowerProgress, IsrChange};
use super::{rebuild_producer_state, AppendError, Partition};
use crate::controller::state::{PartitionState, NO_LEADER};
use crate::log::batch::{self, Batches};
use crate::log::{AppendInfo, LogError, ReadResult};
use crate::partition::producer_state::ProducerStates;

/// What this replica does for its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not a replica, or the partition has no leader: serves nothing.
    Offline,
    /// Leads the partition at `epoch`.
    Leader {
        /// The leader epoch.
        epoch: i32,
    },
    /// Copies from `leader`, which leads at `epoch`.
    Follower {
        /// The leader's broker id.
        leader: i32,
        /// The leader epoch.
        epoch: i32,
    },
}

impl Role {
    /// The role broker `own_id` has in a partition in state `state`.
    pub fn for_broker(own_id: i32, state: &PartitionState) -> Role {
        if state.leader == own_id {
            Role::Leader {
                epoch: state.leader_epoch,
            }
        } else if state.leader != NO_LEADER && state.replicas.contains(&own_id) {
            Role::Follower {
                leader: state.leader,
                epoch: state.leader_epoch,
            }
        } else {
            Role::Offline
        }
    }
}

/// What [`Partition::set_role`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// Nothing: the state was the one in force.
    Unchanged,
    /// Same role and epoch; the replica set or ISR changed.
    Updated,
    /// A new role (or a new epoch of the same role).
    Became(Role),
    /// The state is older than the epoch in force and was ignored.
    Stale,
}

/// Why a request that needs the leader was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaderError {
    /// This replica does not lead the partition.
    #[error("this broker is not the partition's leader")]
    NotLeader,
    /// The request's leader epoch is older than ours: its sender is behind.
    #[error("leader epoch {theirs} is older than the current epoch {ours}")]
    Fenced {
        /// Our epoch.
        ours: i32,
        /// The request's.
        theirs: i32,
    },
    /// The request's leader epoch is newer than ours: we are behind.
    #[error("leader epoch {theirs} is newer than the epoch {ours} this broker knows")]
    UnknownEpoch {
        /// Our epoch.
        ours: i32,
        /// The request's.
        theirs: i32,
    },
    /// A replica fetch from a broker that is not a replica of the partition.
    #[error("broker {0} is not a replica of this partition")]
    NotReplica(i32),
}

impl LeaderError {
    /// The Kafka error for it.
    pub fn code(&self) -> ResponseError {
        match self {
            LeaderError::NotLeader => ResponseError::NotLeaderOrFollower,
            LeaderError::Fenced { .. } => ResponseError::FencedLeaderEpoch,
            LeaderError::UnknownEpoch { .. } => ResponseError::UnknownLeaderEpoch,
            LeaderError::NotReplica(_) => ResponseError::ReplicaNotAvailable,
        }
    }
}

/// Why an acks=all produce was not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The records are committed, but the ISR shrank below `min.insync.replicas`.
    #[error("{isr} in-sync replicas after the append, min.insync.replicas is {min}")]
    NotEnoughReplicas {
        /// Size of the ISR.
        isr: usize,
        /// The topic's minimum.
        min: i32,
    },
    /// The ISR did not replicate the records in time.
    #[error("the records were not replicated to every in-sync replica in time")]
    Timeout,
    /// Leadership moved while waiting; the records may or may not survive.
    #[error("this broker stopped leading the partition")]
    NotLeader,
    /// The log went offline after a storage failure (KAFKA_STORAGE_ERROR): nothing
    /// that waited is acknowledged, whatever the followers have.
    #[error("the partition's log is offline after a storage failure")]
    Storage,
}

impl CommitError {
    /// The Kafka error for it.
    pub fn code(&self) -> ResponseError {
        match self {
            CommitError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicasAfterAppend,
            CommitError::Timeout => ResponseError::RequestTimedOut,
            CommitError::NotLeader => ResponseError::NotLeaderOrFollower,
            CommitError::Storage => ResponseError::KafkaStorageError,
        }
    }
}

/// What the leader learned from one follower fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerFetch {
    /// The high watermark after it.
    pub high_watermark: i64,
    /// An ISR expansion to propose (now in flight), if the follower caught up.
    pub isr_change: Option<IsrChange>,
}

impl Partition {
    /// The current role.
    pub fn role(&self) -> Role {
        *self.role.read()
    }

    /// The committed in-sync replicas (empty before a role is set).
    pub fn isr(&self) -> Vec<i32> {
        self.replicas.lock().isr.clone()
    }

    /// The replica set (empty before a role is set).
    pub fn replica_ids(&self) -> Vec<i32> {
        self.replicas.lock().replicas.clone()
    }

    /// Applies the partition's metadata as seen by broker `own_id`. A newer leader
    /// epoch (or a first call) changes the role: a new leader begins its epoch at its
    /// log end offset and forgets what it knew of followers; a follower keeps its log
    /// as is — it finds out what to truncate from its leader. The same epoch with a
    /// newer partition epoch updates the replica set and ISR; an older epoch is ignored.
    pub fn set_role(
        &self,
        own_id: i32,
        state: &PartitionState,
        now_ms: i64,
    ) -> Result<RoleChange, LogError> {
        let mut role = self.role.write();
        let mut replicas = self.replicas.lock();
        let new_role = Role::for_broker(own_id, state);
        if replicas.managed {
            if state.leader_epoch < replicas.leader_epoch {
                return Ok(RoleChange::Stale);
            }
            if state.leader_epoch == replicas.leader_epoch && new_role == *role {
                if state.partition_epoch <= replicas.partition_epoch {
                    return Ok(RoleChange::Unchanged);
                }
                // A member the ISR lost may let the high watermark move; one it gained
                // holds it until it fetches.
                replicas.adopt(state);
                if let Role::Leader { .. } = new_role {
                    replicas.advance_high_watermark(self.log.log_end_offset());
                }
                drop(replicas);
                drop(role);
                self.changed.notify_waiters();
                return Ok(RoleChange::Updated);
            }
        }
        let end = self.log.log_end_offset();
        // The only step that can fail comes first, so a failure changes nothing.
        let epoch_start = match new_role {
            Role::Leader { epoch } => Some(self.log.begin_epoch(epoch)?),
            _ => None,
        };
        replicas.managed = true;
        replicas.own_id = own_id;
        replicas.leader_epoch = state.leader_epoch;
        replicas.adopt(state);
        replicas.high_watermark = replicas.high_watermark.min(end);
        replicas.followers.clear();
        if let Some(start) = epoch_start {
            replicas.become_leader(start, now_ms);
            replicas.advance_high_watermark(end);
        }
        tracing::info!(
            topic = %self.topic,
            partition = self.index,
            role = ?new_role,
            isr = ?state.isr,
            high_watermark = replicas.high_watermark,
            log_end_offset = end,
            "partition role changed"
        );
        *role = new_role;
        drop(replicas);
        drop(role);
        self.changed.notify_waiters();
        Ok(RoleChange::Became(new_role))
    }

    /// Stops serving — no appends, consumer reads or replication — until the next
    /// [`Partition::set_role`] (the replica left the partition, or the broker is going
    /// down). Waiters are woken and find they are no longer on a leader.
    pub fn go_offline(&self) {
        let mut role = self.role.write();
        if *role == Role::Offline {
            return;
        }
        *role = Role::Offline;
        self.replicas.lock().followers.clear();
        drop(role);
        self.changed.notify_waiters();
    }

    /// Checks a request that must reach the leader: `current_leader_epoch` (-1 when the
    /// client sent none) must be ours, and we must lead. Returns our epoch.
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<i32, LeaderError> {
        let role = *self.role.read();
        let ours = self.leader_epoch();
        if current_leader_epoch >= 0 {
            if current_leader_epoch < ours {
                return Err(LeaderError::Fenced {
                    ours,
                    theirs: current_leader_epoch,
                });
            }
            if current_leader_epoch > ours {
                return Err(LeaderError::UnknownEpoch {
                    ours,
                    theirs: current_leader_epoch,
                });
            }
        }
        match role {
            Role::Leader { epoch } => Ok(epoch),
            _ => Err(LeaderError::NotLeader),
        }
    }

    /// Whether records up to `end_offset` (exclusive) are acknowledged for acks=all:
    /// `None` while the high watermark is below it.
    pub fn commit_status(&self, end_offset: i64) -> Option<Result<(), CommitError>> {
        let role = self.role.read();
        if !matches!(*role, Role::Leader { .. }) {
            return Some(Err(CommitError::NotLeader));
        }
        if self.log.storage_failure().is_some() {
            return Some(Err(CommitError::Storage));
        }
        let replicas = self.replicas.lock();
        let hw = if replicas.managed {
            replicas.high_watermark
        } else {
            self.log.log_end_offset()
        };
        if hw < end_offset {
            return None;
        }
        let min = self.settings().min_insync_replicas;
        let isr = replicas.isr_len();
        Some(if isr >= min.max(1) as usize {
            Ok(())
        } else {
            Err(CommitError::NotEnoughReplicas { isr, min })
        })
    }

    /// Waits until records up to `end_offset` (exclusive) are committed (acks=all):
    /// Ok once the high watermark reaches it with at least `min.insync.replicas` in the
    /// ISR, or the reason it will not be acknowledged.
    pub async fn wait_for_commit(
        &self,
        end_offset: i64,
        timeout: Duration,
    ) -> Result<(), CommitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(status) = self.commit_status(end_offset) {
                return status;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return self.commit_status(end_offset).unwrap_or(Err(CommitError::Timeout));
                }
            }
        }
    }

    /// Reads for a follower: whole batches from the one holding `offset`, up to the log
    /// end offset (not the high watermark); with `min_one` a first batch larger than
    /// `max_bytes` comes whole.
    pub fn read_for_follower(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, LogError> {
        self.log.read(offset, max_bytes, i64::MAX, min_one)
    }

    /// Records that `follower` fetched at `fetch_offset` (its log end offset), which the
    /// caller checked is within this leader's log; advances the high watermark and
    /// proposes an ISR expansion if the follower has caught up.
    pub fn record_follower_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<FollowerFetch, LeaderError> {
        let role = self.role.read();
        if !matches!(*role, Role::Leader { .. }) {
            return Err(LeaderError::NotLeader);
        }
        let end = self.log.log_end_offset();
        let mut replicas = self.replicas.lock();
        if !replicas.record_fetch(follower, fetch_offset, end, now_ms) {
            return Err(LeaderError::NotReplica(follower));
        }
        let advanced = replicas.advance_high_watermark(end);
        let isr_change = replicas.propose_expand(&self.topic, self.index, follower);
        let high_watermark = replicas.high_watermark;
        drop(replicas);
        drop(role);
        if advanced {
            self.changed.notify_waiters();
        }
        Ok(FollowerFetch {
            high_watermark,
            isr_change,
        })
    }

    /// Proposes dropping followers that have not caught up for `max_lag_ms` from the
    /// ISR (leaders only; the change is then in flight).
    pub fn propose_isr_shrink(&self, now_ms: i64, max_lag_ms: i64) -> Option<IsrChange> {
        let role = self.role.read();
        if !matches!(*role, Role::Leader { .. }) {
            return None;
        }
        let end = self.log.log_end_offset();
        self.replicas
            .lock()
            .propose_shrink(&self.topic, self.index, end, now_ms, max_lag_ms)
    }

    /// Settles an in-flight ISR change with the controller's answer; true if the ISR
    /// changed.
    pub fn finish_isr_change(
        &self,
        change: &IsrChange,
        result: Result<&PartitionState, &str>,
    ) -> bool {
        let role = self.role.read();
        let mut replicas = self.replicas.lock();
        if !replicas.finish(change, result) {
            return false;
        }
        tracing::info!(topic = %self.topic, partition = self.index, isr = ?replicas.isr, "ISR changed");
        if matches!(*role, Role::Leader { .. }) {
            replicas.advance_high_watermark(self.log.log_end_offset());
        }
        drop(replicas);
        drop(role);
        self.changed.notify_waiters();
        true
    }

    /// What the leader knows of each follower.
    pub fn follower_progress(&self) -> BTreeMap<i32, FollowerProgress> {
        self.replicas.lock().followers.clone()
    }

    fn require_follower(role: &Role, leader: i32, epoch: i32) -> Result<(), AppendError> {
        if *role == (Role::Follower { leader, epoch }) {
            Ok(())
        } else {
            Err(AppendError::NotFollower)
        }
    }

    /// Appends batches fetched from `leader` at `epoch`, at the offsets the leader gave
    /// them, after checking each CRC-32C, and records them in the producer state so this
    /// replica deduplicates retries once it leads.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        leader: i32,
        epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let role = self.role.read();
        Self::require_follower(&role, leader, epoch)?;
        for (index, item) in Batches::new(records).enumerate() {
            let (_, range) = item.map_err(|source| AppendError::Corrupt { index, source })?;
            batch::verify_crc(&records[range])
                .map_err(|source| AppendError::Corrupt { index, source })?;
        }
        let mut producers = self.producers.lock();
        let segments_before = self.log.segment_count();
        let info = self.log.append_replicated(records, now_ms)?;
        for (header, _) in Batches::new(records).flatten() {
            producers.record(&header);
        }
        if self.log.segment_count() != segments_before {
            self.write_producer_snapshot(&mut producers, now_ms);
        }
        drop(producers);
        drop(role);
        self.changed.notify_waiters();
        Ok(info)
    }

    /// Takes the high watermark and log start offset `leader` reported: the high
    /// watermark within this log, the log start moved up to the leader's (within this
    /// log), so records the leader deleted are deleted here too.
    pub fn update_from_leader(
        &self,
        leader_high_watermark: i64,
        leader_log_start: i64,
        leader: i32,
        epoch: i32,
    ) -> Result<(), AppendError> {
        let role = self.role.read();
        Self::require_follower(&role, leader, epoch)?;
        let end = self.log.log_end_offset();
        let start = leader_log_start.min(end);
        if start > self.log.log_start_offset() {
            self.log.delete_records_before(start)?;
        }
        let moved = {
            let mut replicas = self.replicas.lock();
            let hw = leader_high_watermark.min(end);
            if hw > replicas.high_watermark {
                replicas.high_watermark = hw;
                true
            } else {
                false
            }
        };
        drop(role);
        if moved {
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// Cuts the log back to `offset` (see [`crate::log::Log::truncate_to`]) where it
    /// diverges from `leader`'s, rebuilding the producer state from what is left.
    /// Returns the new log end offset.
    pub fn truncate_as_follower(
        &self,
        offset: i64,
        leader: i32,
        epoch: i32,
        now_ms: i64,
    ) -> Result<i64, AppendError> {
        let role = self.role.read();
        Self::require_follower(&role, leader, epoch)?;
        let mut producers = self.producers.lock();
        let end = self.log.truncate_to(offset, now_ms)?;
        *producers = rebuild_producer_state(&self.log)?;
        // The snapshot on disk may describe batches that are gone: replace it.
        self.write_producer_snapshot(&mut producers, now_ms);
        drop(producers);
        {
            let mut replicas = self.replicas.lock();
            replicas.high_watermark = replicas
                .high_watermark
                .min(end)
                .max(self.log.log_start_offset());
        }
        drop(role);
        self.changed.notify_waiters();
        Ok(end)
    }

    /// Starts the log over, empty, at `start` — the leader's log start offset, when this
    /// replica's log ends before it.
    pub fn reset_as_follower(
        &self,
        start: i64,
        leader: i32,
        epoch: i32,
        now_ms: i64,
    ) -> Result<(), AppendError> {
        let role = self.role.read();
        Self::require_follower(&role, leader, epoch)?;
        let mut producers = self.producers.lock();
        self.log.reset_to(start, now_ms)?;
        *producers = ProducerStates::default();
        if start > 0 {
            // Whoever wrote below `start` is unknown to this replica.
            producers.forget_everything();
        }
        self.write_producer_snapshot(&mut producers, now_ms);
        drop(producers);
        self.replicas.lock().high_watermark = start;
        drop(role);
        self.changed.notify_waiters();
        Ok(())
    }
}
