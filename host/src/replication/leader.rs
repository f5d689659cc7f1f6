//! The leader's side of the replica fetch.
//!
//! For each partition a follower asks about, in Kafka's order: the partition must be
//! hosted here and led at the follower's epoch; if the follower names the epoch of its
//! last batch, the leader-epoch cache must agree that its log matches ours up to its
//! fetch offset, or the answer is where they diverge (KIP-320) and nothing else; the
//! fetch offset must lie within our log. Only then is the fetch offset recorded as the
//! follower's log end offset — which may advance the high watermark and wake acks=all
//! waiters, and may let the follower back into the ISR — and batches are read from it
//! up to our log end offset.
//!
//! With nothing new for the follower (no records, no errors, no divergence and a high
//! watermark it already knows) the request long-polls up to its max wait, woken by any
//! change of its partitions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::wire::{FetchError, FetchRequest, FetchResponse, PartitionData, PartitionFetch};
use super::ReplicaManager;
use crate::log::LogError;
use crate::partition::{Changes, LeaderError, Partition};

/// Longest a replica fetch may park, whatever it asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
/// Most record bytes in one response, whatever the follower asks (Kafka's
/// `replica.fetch.response.max.bytes` default).
const RESPONSE_MAX_BYTES: u32 = 10 * 1024 * 1024;

/// Answers one replica fetch from broker `peer`.
pub(super) async fn handle_fetch(
    manager: &Arc<ReplicaManager>,
    peer: i32,
    request: Bytes,
) -> Result<Bytes, String> {
    let request = FetchRequest::decode(request).map_err(|e| e.to_string())?;
    if request.follower_id != peer {
        return Err(format!(
            "broker {peer} sent a replica fetch as broker {}",
            request.follower_id
        ));
    }
    let zstd = manager.config.replication_compression == "zstd";
    if manager
        .incarnation_of(peer)
        .is_some_and(|known| request.incarnation < known)
    {
        // An older process of that broker: whatever it reports is not its log now.
        let partitions = request
            .partitions
            .iter()
            .map(|p| PartitionData::error(&p.topic, p.partition, FetchError::StaleBrokerEpoch))
            .collect();
        return Ok(FetchResponse { partitions }.encode(zstd));
    }
    let partitions: Vec<Option<Arc<Partition>>> = request
        .partitions
        .iter()
        .map(|p| manager.partition(&p.topic, p.partition))
        .collect();
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    let mut first = true;
    loop {
        // Registered before reading so a change between the read and the wait counts.
        let mut changes = Changes::register(partitions.iter().flatten().map(|p| &**p));
        let (response, news) = respond(manager, &request, &partitions, first);
        first = false;
        if news || tokio::time::Instant::now() >= deadline {
            return Ok(response.encode(zstd));
        }
        tokio::select! {
            _ = changes.wait() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Builds the response from the partitions' state now; true if it carries news. On the
/// first pass the fetch offsets are recorded as the follower's progress.
fn respond(
    manager: &ReplicaManager,
    request: &FetchRequest,
    partitions: &[Option<Arc<Partition>>],
    record: bool,
) -> (FetchResponse, bool) {
    let now = manager.clock.now_ms();
    let mut budget = request.max_bytes.min(RESPONSE_MAX_BYTES) as usize;
    let mut any_records = false;
    let mut news = false;
    let mut out = Vec::with_capacity(request.partitions.len());
    for (wanted, partition) in request.partitions.iter().zip(partitions) {
        let data = match partition {
            None => PartitionData::error(
                &wanted.topic,
                wanted.partition,
                FetchError::UnknownTopicOrPartition,
            ),
            Some(partition) => answer(
                manager,
                request.follower_id,
                wanted,
                partition,
                record,
                now,
                &mut budget,
                &mut any_records,
            ),
        };
        news |= data.error != FetchError::None
            || data.diverging.is_some()
            || !data.records.is_empty()
            || data.high_watermark != wanted.high_watermark;
        out.push(data);
    }
    (FetchResponse { partitions: out }, news)
}

#[allow(clippy::too_many_arguments)]
fn answer(
    manager: &ReplicaManager,
    follower: i32,
    wanted: &PartitionFetch,
    partition: &Arc<Partition>,
    record: bool,
    now_ms: i64,
    budget: &mut usize,
    any_records: &mut bool,
) -> PartitionData {
    let error = |error| PartitionData::error(&wanted.topic, wanted.partition, error);
    if let Err(e) = partition.check_leader(wanted.current_leader_epoch) {
        return error(match e {
            LeaderError::NotLeader => FetchError::NotLeaderOrFollower,
            LeaderError::Fenced { .. } => FetchError::FencedLeaderEpoch,
            LeaderError::UnknownEpoch { .. } => FetchError::UnknownLeaderEpoch,
            LeaderError::NotReplica(_) => FetchError::ReplicaNotAvailable,
        });
    }
    let log = partition.log();
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let mut data = PartitionData {
        topic: wanted.topic.clone(),
        partition: wanted.partition,
        error: FetchError::None,
        high_watermark: partition.high_watermark(),
        log_start_offset: start,
        log_end_offset: end,
        diverging: None,
        records: Bytes::new(),
    };
    if wanted.last_fetched_epoch >= 0 {
        match log.end_offset_for_epoch(wanted.last_fetched_epoch) {
            // The follower names an epoch newer than any here: we cannot tell where its
            // log leaves ours. Kafka answers OFFSET_OUT_OF_RANGE, and so do we.
            None => {
                data.error = FetchError::OffsetOutOfRange;
                return data;
            }
            Some((epoch, epoch_end))
                if epoch < wanted.last_fetched_epoch || epoch_end < wanted.fetch_offset =>
            {
                data.diverging = Some((epoch, epoch_end));
                return data;
            }
            Some(_) => {}
        }
    }
    if wanted.fetch_offset < start || wanted.fetch_offset > end {
        data.error = FetchError::OffsetOutOfRange;
        return data;
    }
    if record {
        match partition.record_follower_fetch(follower, wanted.fetch_offset, now_ms) {
            Ok(fetch) => {
                data.high_watermark = fetch.high_watermark;
                if let Some(change) = fetch.isr_change {
                    tracing::info!(topic = %change.topic, partition = change.partition, isr = ?change.isr, follower, "expanding the ISR");
                    manager.submit_isr_change(Arc::clone(partition), change);
                }
            }
            Err(LeaderError::NotReplica(_)) => {
                data.error = FetchError::ReplicaNotAvailable;
                return data;
            }
            Err(_) => {
                data.error = FetchError::NotLeaderOrFollower;
                return data;
            }
        }
    }
    if wanted.fetch_offset < end {
        // KIP-74: the first batch of the response is sent whole even past the limits.
        let limit = (wanted.max_bytes as usize).min(*budget);
        if limit > 0 || !*any_records {
            match partition.read_for_follower(wanted.fetch_offset, limit, !*any_records) {
                Ok(read) => {
                    *budget = budget.saturating_sub(read.records.len());
                    *any_records |= !read.records.is_empty();
                    data.records = read.records;
                }
                Err(LogError::OffsetOutOfRange { .. }) => data.error = FetchError::OffsetOutOfRange,
                Err(e) => {
                    tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "replica fetch read failed");
                    data.error = FetchError::KafkaStorageError;
                }
            }
        }
    }
    data
}
