//! The follower's side: one task per leader broker, fetching every partition this
//! broker follows from it in one request, in a loop.
//!
//! Each round re-reads which partitions follow that leader (roles change whenever the
//! broker calls [`ReplicaManager::update`], which also wakes the fetcher), asks for each
//! from its log end offset, naming the epoch of its last batch, and then per partition:
//!
//! - records: appended at the leader's offsets, then the leader's high watermark and log
//!   start offset are taken;
//! - a diverging epoch: the log is truncated where the leader says the logs part, using
//!   the follower's own epoch cache as Kafka does: if the follower does not know the
//!   leader's epoch it truncates to the end of the largest epoch below it and asks again;
//! - OFFSET_OUT_OF_RANGE: a log longer than the leader's is cut to the leader's end, one
//!   that ends before the leader's start starts over there, and otherwise (the leader
//!   cannot place our last epoch) our latest epoch is dropped and the question repeats;
//! - errors that mean the metadata is stale (not leader, fenced epoch…): the partition
//!   waits for the next metadata update; an unknown leader epoch (the leader has not
//!   heard yet) is retried shortly.
//!
//! Transport errors drop the link and retry with exponential backoff. Every append and
//! truncation names the leader and epoch it was fetched under, so a response that
//! arrives after the role changed is ignored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::wire::{FetchError, FetchRequest, FetchResponse, PartitionData, PartitionFetch};
use super::{key, Key, LeaderLink, ReplicaManager};
use crate::partition::{AppendError, Partition};

/// First wait after a transport error; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a partition whose metadata looks stale waits, unless an update comes first.
const STALE_METADATA_BACKOFF: Duration = Duration::from_secs(1);
/// How long a partition waits for a leader that has not learned its epoch yet.
const UNKNOWN_EPOCH_BACKOFF: Duration = Duration::from_millis(100);
/// How long opening a link may take.
const OPEN_GRACE: Duration = Duration::from_secs(10);
/// How long past its long poll a leader may send nothing of its answer before the call
/// counts as failed. An answer that is arriving is waited for however long it takes:
/// over a lossy link a fixed deadline would cut a large answer and ask for it again and
/// again.
const ANSWER_GRACE: Duration = Duration::from_secs(5);
/// Most record bytes asked for in one response.
const RESPONSE_MAX_BYTES: u32 = 10 * 1024 * 1024;

/// What to do after a round.
enum Next {
    Fetch,
    Sleep(Duration),
    /// Nothing follows this leader: wait for an update.
    Idle,
}

struct Fetcher {
    leader: i32,
    addr: SocketAddr,
    link: Option<Box<dyn LeaderLink>>,
    backoff: Duration,
    /// Partitions sitting out until the given time (or the next metadata update).
    delayed: HashMap<Key, Instant>,
}

/// Runs the fetcher for `leader` until the manager is gone or the task is aborted.
/// `updates` changes whenever the metadata does.
pub(super) async fn run(
    manager: Weak<ReplicaManager>,
    leader: i32,
    addr: SocketAddr,
    mut updates: watch::Receiver<u64>,
) {
    let mut fetcher = Fetcher {
        leader,
        addr,
        link: None,
        backoff: MIN_BACKOFF,
        delayed: HashMap::new(),
    };
    loop {
        if updates.has_changed().unwrap_or(false) {
            updates.borrow_and_update();
            fetcher.delayed.clear();
        }
        let next = {
            let Some(manager) = manager.upgrade() else {
                return;
            };
            fetcher.round(&manager).await
        };
        let wait = match next {
            Next::Fetch => continue,
            Next::Sleep(d) => d,
            Next::Idle => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

impl Fetcher {
    async fn round(&mut self, manager: &Arc<ReplicaManager>) -> Next {
        let followed = manager.followed_from(self.leader);
        if followed.is_empty() {
            return Next::Idle;
        }
        let now = Instant::now();
        self.delayed.retain(|_, until| *until > now);
        let active: Vec<(Arc<Partition>, i32)> = followed
            .into_iter()
            .filter(|(p, _)| !self.delayed.contains_key(&key(p)))
            .collect();
        if active.is_empty() {
            let until = self.delayed.values().min().copied().unwrap_or(now);
            return Next::Sleep(until.saturating_duration_since(now));
        }
        let config = &manager.config;
        let request = FetchRequest {
            follower_id: manager.own_id,
            incarnation: manager.own_incarnation(),
            max_wait_ms: config.replica_fetch_wait_max_ms.min(u64::from(u32::MAX)) as u32,
            max_bytes: RESPONSE_MAX_BYTES.max(config.replica_fetch_max_bytes),
            partitions: active
                .iter()
                .map(|(p, epoch)| {
                    let log = p.log();
                    PartitionFetch {
                        topic: p.topic().to_string(),
                        partition: p.index(),
                        current_leader_epoch: *epoch,
                        fetch_offset: log.log_end_offset(),
                        last_fetched_epoch: log.latest_epoch().unwrap_or(-1),
                        log_start_offset: log.log_start_offset(),
                        high_watermark: p.high_watermark(),
                        max_bytes: config.replica_fetch_max_bytes,
                    }
                })
                .collect(),
        };
        let quiet = Duration::from_millis(u64::from(request.max_wait_ms)) + ANSWER_GRACE;
        let response = match self.call(manager, request.encode(), quiet).await {
            Ok(response) => response,
            Err(reason) => {
                tracing::warn!(leader = self.leader, addr = %self.addr, %reason, "replica fetch failed");
                self.link = None;
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                return Next::Sleep(wait);
            }
        };
        self.backoff = MIN_BACKOFF;
        let mut by_key: HashMap<Key, (Arc<Partition>, i32)> =
            active.into_iter().map(|(p, e)| (key(&p), (p, e))).collect();
        for data in response.partitions {
            let Some((partition, epoch)) =
                by_key.remove(&(Arc::from(data.topic.as_str()), data.partition))
            else {
                continue;
            };
            let now_ms = manager.clock.now_ms();
            self.process(&partition, epoch, data, now_ms);
        }
        Next::Fetch
    }

    async fn call(
        &mut self,
        manager: &ReplicaManager,
        request: bytes::Bytes,
        quiet: Duration,
    ) -> Result<FetchResponse, String> {
        if self.link.is_none() {
            let open = manager.links.open(self.leader, self.addr);
            let link = tokio::time::timeout(OPEN_GRACE, open)
                .await
                .map_err(|_| "opening the link timed out".to_string())??;
            self.link = Some(link);
        }
        let link = self.link.as_mut().expect("opened above");
        let bytes = link.call(request, quiet).await?;
        FetchResponse::decode(bytes).map_err(|e| e.to_string())
    }

    fn delay(&mut self, partition: &Partition, for_: Duration) {
        self.delayed.insert(key(partition), Instant::now() + for_);
    }

    fn process(
        &mut self,
        partition: &Arc<Partition>,
        epoch: i32,
        data: PartitionData,
        now_ms: i64,
    ) {
        let leader = self.leader;
        let outcome = match data.error {
            FetchError::None => {
                if let Some((leader_epoch, end)) = data.diverging {
                    self.truncate_diverging(partition, epoch, leader_epoch, end, now_ms)
                } else {
                    let appended = if data.records.is_empty() {
                        Ok(())
                    } else {
                        partition
                            .append_as_follower(&data.records, leader, epoch, now_ms)
                            .map(|_| ())
                    };
                    appended.and_then(|()| {
                        partition.update_from_leader(
                            data.high_watermark,
                            data.log_start_offset,
                            leader,
                            epoch,
                        )
                    })
                }
            }
            FetchError::OffsetOutOfRange => self.out_of_range(partition, epoch, &data, now_ms),
            FetchError::UnknownLeaderEpoch => {
                self.delay(partition, UNKNOWN_EPOCH_BACKOFF);
                Ok(())
            }
            error => {
                tracing::debug!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    leader,
                    ?error,
                    "replica fetch refused; waiting for metadata"
                );
                self.delay(partition, STALE_METADATA_BACKOFF);
                Ok(())
            }
        };
        match outcome {
            Ok(()) | Err(AppendError::NotFollower) => {}
            Err(e) => {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), leader, error = %e, "could not apply fetched data");
                self.delay(partition, STALE_METADATA_BACKOFF);
            }
        }
    }

    /// KIP-320 on the follower (Kafka's `getOffsetTruncationState`).
    fn truncate_diverging(
        &mut self,
        partition: &Partition,
        epoch: i32,
        leader_epoch: i32,
        leader_end: i64,
        now_ms: i64,
    ) -> Result<(), AppendError> {
        let log = partition.log();
        let end = log.log_end_offset();
        let target = match log.end_offset_for_epoch(leader_epoch) {
            // We hold nothing of that epoch or any before it: the leader's end is it.
            None => leader_end.min(end),
            // We do not know the leader's epoch: cut to the end of the largest one below
            // it that we know, and ask again.
            Some((ours, our_end)) if ours != leader_epoch => our_end.min(end),
            Some((_, our_end)) => our_end.min(leader_end).min(end),
        };
        tracing::info!(
            topic = partition.topic(),
            partition = partition.index(),
            leader = self.leader,
            leader_epoch,
            leader_end,
            log_end_offset = end,
            truncate_to = target,
            "follower log diverges from the leader's"
        );
        partition
            .truncate_as_follower(target, self.leader, epoch, now_ms)
            .map(|_| ())
    }

    fn out_of_range(
        &mut self,
        partition: &Partition,
        epoch: i32,
        data: &PartitionData,
        now_ms: i64,
    ) -> Result<(), AppendError> {
        let log = partition.log();
        let end = log.log_end_offset();
        if data.log_end_offset >= 0 && data.log_end_offset < end {
            tracing::warn!(
                topic = partition.topic(),
                partition = partition.index(),
                leader_end = data.log_end_offset,
                log_end_offset = end,
                "follower log is longer than the leader's; truncating"
            );
            return partition
                .truncate_as_follower(data.log_end_offset, self.leader, epoch, now_ms)
                .map(|_| ());
        }
        if data.log_start_offset > end {
            tracing::info!(
                topic = partition.topic(),
                partition = partition.index(),
                leader_start = data.log_start_offset,
                log_end_offset = end,
                "follower is behind the leader's log start; starting over there"
            );
            return partition.reset_as_follower(data.log_start_offset, self.leader, epoch, now_ms);
        }
        match log.epoch_entries().last() {
            Some(latest) => {
                tracing::warn!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    epoch = latest.epoch,
                    "the leader cannot place our latest epoch; dropping it"
                );
                partition
                    .truncate_as_follower(latest.start_offset, self.leader, epoch, now_ms)
                    .map(|_| ())
            }
            None => {
                self.delay(partition, STALE_METADATA_BACKOFF);
                Ok(())
            }
        }
    }
}
