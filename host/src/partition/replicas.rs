//! The partition's view of its replica set: the high watermark, the in-sync replicas
//! and, while leading, how far each follower has come.
//!
//! This is Kafka's ISR arithmetic, kept pure (time comes in as `now_ms`) so it can be
//! tested without logs or clocks:
//!
//! - The leader's high watermark is the smallest log end offset over the *maximal* ISR
//!   and only moves forward. The maximal ISR is the committed ISR plus any member an
//!   in-flight change adds; while a shrink is in flight it is still the old, larger set.
//!   So the high watermark never counts on a change the controller has not accepted.
//! - acks=all and `min.insync.replicas` count the committed ISR only: an expansion counts
//!   once the controller has accepted it.
//! - A follower is caught up while its fetch reaches the leader's log end offset; it
//!   leaves the ISR once it has not been caught up for `replica.lag.time.max.ms`. A
//!   follower fetching at offset `o` was caught up at its previous fetch time if `o`
//!   reaches the log end offset the leader had then (Kafka's `lastCaughtUpTime`).
//! - A follower outside the ISR rejoins once its log end offset reaches both the high
//!   watermark and the start of the current leader epoch.
//! - At most one ISR change is in flight; each names the partition epoch it is based on,
//!   which is how the controller refuses a change made from a stale view.

use std::collections::BTreeMap;

use crate::controller::state::PartitionState;

/// An ISR change the leader asks the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader epoch the leader holds.
    pub leader_epoch: i32,
    /// The partition epoch the change is based on.
    pub partition_epoch: i32,
    /// The ISR asked for.
    pub isr: Vec<i32>,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// Its log end offset (its last fetch offset), -1 until it fetches.
    pub log_end_offset: i64,
    /// When it was last known to have everything the leader had.
    pub last_caught_up_ms: i64,
    /// When it last fetched, and the leader's log end offset then.
    pub last_fetch_ms: i64,
    pub last_fetch_leader_end: i64,
}

impl FollowerProgress {
    fn reset(in_sync: bool, now_ms: i64) -> FollowerProgress {
        FollowerProgress {
            log_end_offset: -1,
            last_caught_up_ms: if in_sync { now_ms } else { 0 },
            last_fetch_ms: 0,
            last_fetch_leader_end: -1,
        }
    }

    fn caught_up(&self, leader_end: i64, now_ms: i64, max_lag_ms: i64) -> bool {
        self.log_end_offset == leader_end || now_ms - self.last_caught_up_ms <= max_lag_ms
    }
}

/// Replica-set state of one partition, guarded by the partition.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaState {
    /// False until the broker first sets a role: the partition then leads alone at
    /// epoch 0 and its high watermark is its log end offset, as on a single node.
    pub managed: bool,
    pub own_id: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    /// The committed ISR.
    pub isr: Vec<i32>,
    /// The ISR an in-flight change asks for.
    pub pending: Option<Vec<i32>>,
    pub high_watermark: i64,
    /// Where the current leader epoch started in this log (leaders only).
    pub epoch_start_offset: i64,
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// `replica_lag_time_max_ms`, as last used to judge the ISR.
    pub max_lag_ms: Option<i64>,
}

impl ReplicaState {
    pub fn unmanaged(high_watermark: i64) -> ReplicaState {
        ReplicaState {
            managed: false,
            own_id: -1,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: Vec::new(),
            isr: Vec::new(),
            pending: None,
            high_watermark,
            epoch_start_offset: 0,
            followers: BTreeMap::new(),
            max_lag_ms: None,
        }
    }

    /// Size of the committed ISR (an unmanaged partition is its own ISR).
    pub fn isr_len(&self) -> usize {
        if self.managed {
            self.isr.len()
        } else {
            1
        }
    }

    /// ISR members that are in sync by the leader's own observation right now: itself
    /// and the followers that caught up within the lag time. Smaller than the committed
    /// ISR while a shrink waits for the controller — or cannot reach it at all.
    pub fn in_sync_now(&self, leader_end: i64, now_ms: i64) -> usize {
        let Some(max_lag) = self.max_lag_ms.filter(|_| self.managed) else {
            return self.isr_len();
        };
        self.isr
            .iter()
            .filter(|id| {
                **id == self.own_id
                    || self
                        .followers
                        .get(id)
                        .is_some_and(|f| f.caught_up(leader_end, now_ms, max_lag))
            })
            .count()
    }

    /// The committed ISR together with what an in-flight change adds.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        for id in self.pending.iter().flatten() {
            if !isr.contains(id) {
                isr.push(*id);
            }
        }
        isr
    }

    /// Takes the replica set and ISR from metadata; an in-flight change is settled by it.
    pub fn adopt(&mut self, state: &PartitionState) {
        self.replicas = state.replicas.clone();
        self.isr = state.isr.clone();
        self.partition_epoch = state.partition_epoch;
        self.pending = None;
        let own = self.own_id;
        self.followers
            .retain(|id, _| state.replicas.contains(id) && *id != own);
    }

    /// Resets follower tracking for a leader that starts its epoch at
    /// `epoch_start_offset`: nobody's log end offset is known, and ISR members count as
    /// caught up now so they are not dropped before they can fetch.
    pub fn become_leader(&mut self, epoch_start_offset: i64, now_ms: i64) {
        self.epoch_start_offset = epoch_start_offset;
        self.followers = self
            .replicas
            .iter()
            .filter(|id| **id != self.own_id)
            .map(|&id| (id, FollowerProgress::reset(self.isr.contains(&id), now_ms)))
            .collect();
    }

    /// Moves the leader's high watermark to the smallest log end offset over the maximal
    /// ISR, never backwards; true if it moved.
    pub fn advance_high_watermark(&mut self, leader_end: i64) -> bool {
        let candidate = if self.managed {
            self.maximal_isr()
                .iter()
                .filter(|id| **id != self.own_id)
                .map(|id| self.followers.get(id).map_or(-1, |f| f.log_end_offset))
                .fold(leader_end, i64::min)
        } else {
            leader_end
        };
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            true
        } else {
            false
        }
    }

    /// Records a follower's fetch at `fetch_offset` while the leader's log ends at
    /// `leader_end`. False if the follower is not a replica.
    pub fn record_fetch(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        leader_end: i64,
        now_ms: i64,
    ) -> bool {
        if follower == self.own_id || !self.replicas.contains(&follower) {
            return false;
        }
        let progress = self
            .followers
            .entry(follower)
            .or_insert_with(|| FollowerProgress::reset(false, now_ms));
        if fetch_offset >= leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.last_fetch_leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.last_fetch_leader_end = leader_end;
        progress.last_fetch_ms = now_ms;
        progress.log_end_offset = fetch_offset;
        true
    }

    /// The ISR without the followers that have not caught up for longer than
    /// `max_lag_ms`, if any, as a change to propose (and now in flight).
    pub fn propose_shrink(
        &mut self,
        topic: &str,
        partition: i32,
        leader_end: i64,
        now_ms: i64,
        max_lag_ms: i64,
    ) -> Option<IsrChange> {
        self.max_lag_ms = Some(max_lag_ms);
        if !self.managed || self.pending.is_some() {
            return None;
        }
        let lagging: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|id| *id != self.own_id)
            .filter(|id| {
                self.followers
                    .get(id)
                    .is_none_or(|f| !f.caught_up(leader_end, now_ms, max_lag_ms))
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|id| !lagging.contains(id))
            .collect();
        Some(self.propose(topic, partition, isr))
    }

    /// Adds `follower` to the ISR if it has caught up with the high watermark within the
    /// current leader epoch, as a change to propose (and now in flight).
    pub fn propose_expand(
        &mut self,
        topic: &str,
        partition: i32,
        follower: i32,
    ) -> Option<IsrChange> {
        if !self.managed || self.pending.is_some() || self.isr.contains(&follower) {
            return None;
        }
        let end = self.followers.get(&follower)?.log_end_offset;
        if end < self.high_watermark || end < self.epoch_start_offset {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.push(follower);
        isr.sort_by_key(|id| self.replicas.iter().position(|r| r == id));
        Some(self.propose(topic, partition, isr))
    }

    fn propose(&mut self, topic: &str, partition: i32, isr: Vec<i32>) -> IsrChange {
        self.pending = Some(isr.clone());
        IsrChange {
            topic: topic.to_string(),
            partition,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        }
    }

    /// Settles the in-flight `change` with the controller's answer; true if the
    /// committed ISR changed. An answer for a change that is no longer in flight (the
    /// metadata moved on meanwhile) is ignored.
    pub fn finish(&mut self, change: &IsrChange, result: Result<&PartitionState, &str>) -> bool {
        if self.pending.as_ref() != Some(&change.isr)
            || change.leader_epoch != self.leader_epoch
            || change.partition_epoch != self.partition_epoch
        {
            return false;
        }
        self.pending = None;
        match result {
            Ok(state)
                if state.leader == self.own_id
                    && state.leader_epoch == self.leader_epoch
                    && state.partition_epoch > self.partition_epoch =>
            {
                self.adopt(state);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 100;

    /// Broker 1 leading replicas 1, 2, 3 with `isr`, everything empty.
    fn leader(isr: &[i32]) -> ReplicaState {
        let mut s = ReplicaState::unmanaged(0);
        s.managed = true;
        s.own_id = 1;
        s.leader_epoch = 4;
        s.adopt(&PartitionState {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader: 1,
            leader_epoch: 4,
            partition_epoch: 7,
        });
        s.become_leader(0, 1_000);
        s
    }

    #[test]
    fn followers_silent_past_the_lag_do_not_count_for_acks_before_the_shrink_commits() {
        let mut s = leader(&[1, 2, 3]);
        assert_eq!(
            s.in_sync_now(10, 5_000),
            3,
            "the lag is unknown until judged once"
        );
        let change = s.propose_shrink("t", 0, 10, 1_050, LAG);
        assert!(change.is_none(), "within the lag nobody is shrunk");
        assert_eq!(s.in_sync_now(10, 1_050), 3);
        assert!(s.propose_shrink("t", 0, 10, 1_200, LAG).is_some());
        // The shrink is in flight (or the controller is unreachable): committed ISR
        // still 3, but only the leader is in sync by its own observation.
        assert_eq!(s.isr_len(), 3);
        assert_eq!(s.in_sync_now(10, 1_200), 1);
    }

    fn committed(isr: &[i32], partition_epoch: i32) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader: 1,
            leader_epoch: 4,
            partition_epoch,
        }
    }

    #[test]
    fn high_watermark_waits_for_every_isr_member() {
        let mut s = leader(&[1, 2, 3]);
        assert!(!s.advance_high_watermark(10), "no follower has fetched");
        s.record_fetch(2, 10, 10, 1_001);
        assert!(!s.advance_high_watermark(10), "3 is unknown");
        s.record_fetch(3, 6, 10, 1_001);
        assert!(s.advance_high_watermark(10));
        assert_eq!(s.high_watermark, 6);
        // It never moves back, even if a follower reports less (it truncated).
        s.record_fetch(3, 4, 10, 1_002);
        assert!(!s.advance_high_watermark(10));
        assert_eq!(s.high_watermark, 6);
        s.record_fetch(3, 10, 10, 1_003);
        assert!(s.advance_high_watermark(10));
        assert_eq!(s.high_watermark, 10);
        // Non-replicas are refused.
        assert!(!s.record_fetch(9, 10, 10, 1_003));
        assert!(!s.record_fetch(1, 10, 10, 1_003));
    }

    #[test]
    fn unmanaged_high_watermark_is_the_log_end() {
        let mut s = ReplicaState::unmanaged(0);
        assert!(s.advance_high_watermark(5));
        assert_eq!((s.high_watermark, s.isr_len()), (5, 1));
    }

    #[test]
    fn lagging_follower_is_shrunk_after_the_lag_time() {
        let mut s = leader(&[1, 2, 3]);
        // 2 keeps up; 3 fetched once, caught up, then stopped.
        s.record_fetch(3, 0, 0, 1_000);
        for t in (1_000..=1_200).step_by(50) {
            s.record_fetch(2, t - 1_000, t - 1_000, t);
        }
        let end = 200;
        assert_eq!(
            s.propose_shrink("t", 0, end, 1_100, LAG),
            None,
            "within the lag"
        );
        let change = s.propose_shrink("t", 0, end, 1_101, LAG).unwrap();
        assert_eq!(change.isr, vec![1, 2]);
        assert_eq!((change.leader_epoch, change.partition_epoch), (4, 7));
        assert_eq!(
            s.propose_shrink("t", 0, end, 5_000, LAG),
            None,
            "one change at a time"
        );
        // While the shrink is in flight the HW still waits for 3.
        s.record_fetch(2, end, end, 1_201);
        s.advance_high_watermark(end);
        assert_eq!(s.high_watermark, 0);
        assert!(s.finish(&change, Ok(&committed(&[1, 2], 8))));
        assert_eq!(s.isr, vec![1, 2]);
        assert!(s.advance_high_watermark(end));
        assert_eq!(s.high_watermark, end);
    }

    #[test]
    fn a_follower_at_the_log_end_is_never_lagging() {
        let mut s = leader(&[1, 2]);
        s.record_fetch(2, 50, 50, 1_000);
        // Nothing was appended for a long time: still caught up.
        assert_eq!(s.propose_shrink("t", 0, 50, 100_000, LAG), None);
        // A follower that fetches steadily but never reaches the end is caught up at
        // the previous fetch if it reached what the leader had then.
        s.record_fetch(2, 60, 70, 100_010);
        s.record_fetch(2, 70, 80, 100_020);
        assert_eq!(s.followers[&2].last_caught_up_ms, 100_010);
        assert!(s.propose_shrink("t", 0, 80, 100_110, LAG).is_none());
        assert!(s.propose_shrink("t", 0, 80, 100_111, LAG).is_some());
    }

    #[test]
    fn expansion_waits_for_the_high_watermark_and_the_epoch_start() {
        let mut s = leader(&[1, 2]);
        s.epoch_start_offset = 30;
        s.record_fetch(2, 40, 40, 1_000);
        s.advance_high_watermark(40);
        assert_eq!(s.high_watermark, 40);
        s.record_fetch(3, 20, 40, 1_000);
        assert_eq!(s.propose_expand("t", 0, 3), None, "below the epoch start");
        s.record_fetch(3, 35, 40, 1_001);
        assert_eq!(
            s.propose_expand("t", 0, 3),
            None,
            "below the high watermark"
        );
        s.record_fetch(3, 40, 40, 1_002);
        let change = s.propose_expand("t", 0, 3).unwrap();
        assert_eq!(change.isr, vec![1, 2, 3]);
        // In flight: the HW already waits for 3 (maximal ISR) but acks=all does not
        // count it yet.
        assert_eq!(s.maximal_isr(), vec![1, 2, 3]);
        assert_eq!(s.isr_len(), 2);
        // A refusal clears the change, and the next fetch may propose it again.
        assert!(!s.finish(&change, Err("stale")));
        assert!(s.pending.is_none());
        let again = s.propose_expand("t", 0, 3).unwrap();
        assert!(s.finish(&again, Ok(&committed(&[1, 2, 3], 8))));
        assert_eq!(s.isr, vec![1, 2, 3]);
        assert_eq!(s.partition_epoch, 8);
        assert_eq!(s.isr_len(), 3);
    }

    #[test]
    fn metadata_settles_an_in_flight_change() {
        let mut s = leader(&[1, 2, 3]);
        let change = s.propose_shrink("t", 0, 10, 10_000, LAG).unwrap();
        assert_eq!(change.isr, vec![1]);
        // The metadata moved on (someone else changed the partition): adopt it; the
        // controller's later answer to the old change is ignored.
        s.adopt(&committed(&[1, 2], 9));
        assert!(s.pending.is_none());
        assert!(!s.finish(&change, Ok(&committed(&[1], 9))));
        assert_eq!(s.isr, vec![1, 2]);
    }
}
