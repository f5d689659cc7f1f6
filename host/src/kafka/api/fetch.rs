//! Fetch (1): serves record batches straight from the leader's log, without
//! re-encoding, with long polling (`max_wait_ms` / `min_bytes`) and Kafka's byte limits.
//!
//! Consumers read below the high watermark only, and only from the leader: a replica
//! that does not lead answers NOT_LEADER_OR_FOLLOWER, and a `current_leader_epoch`
//! older or newer than ours FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH. A long poll
//! wakes on appends and on high watermark moves (a replicated write becomes visible
//! when the followers have it, not when it is appended).
//!
//! Limits follow KIP-74: the response stops at `max_bytes` and each partition at its
//! `partition_max_bytes`, except that the first batch of the first partition with data is
//! returned whole even if it is larger, so a consumer can always make progress. Fetch
//! sessions (KIP-227) are not kept: the response's session id is 0, which tells clients
//! to send full requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::Context;
use crate::broker::Topic;
use crate::log::LogError;
use crate::partition::{Changes, Partition};
use crate::tenancy::acl::Operation;
use crate::tenancy::quota::QuotaType;

/// Longest a fetch may park, whatever the client asks: keeps a hostile `max_wait_ms`
/// from pinning a connection.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// Answers a Fetch, waiting for data up to `max_wait_ms` when there is less than
/// `min_bytes`.
pub async fn handle(ctx: &Context<'_>, request: FetchRequest, version: i16) -> FetchResponse {
    let broker = ctx.broker;
    // A client over its consumer_byte_rate gets an empty answer carrying the throttle,
    // as Kafka does since KIP-219, and its connection is muted that long.
    let throttle = ctx.quota(QuotaType::FetchBytes, 0.0, false);
    if throttle > 0 {
        let mut response = FetchResponse::default();
        if version >= 1 {
            response.throttle_time_ms = throttle;
        }
        return response;
    }
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before reading so an append between the read and the wait is seen.
        let appended = broker.appended();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let partitions = requested(ctx, &request, version);
        let mut changes = Changes::register(partitions.iter().map(|p| &**p));
        let (response, read, has_error) = collect(ctx, &request, version);
        let bytes = read.iter().map(|(_, n)| n).sum::<usize>();
        let satisfied = bytes >= request.min_bytes.max(0) as usize || has_error;
        if satisfied || tokio::time::Instant::now() >= deadline {
            // Counted once, for the answer sent: a long poll's earlier reads were not.
            for (partition, n) in &read {
                broker.metrics().fetched(partition.topic_name(), *n);
            }
            let mut response = response;
            let throttle = ctx.quota(QuotaType::FetchBytes, bytes as f64, true);
            if version >= 1 {
                response.throttle_time_ms = throttle;
            }
            return response;
        }
        tokio::select! {
            _ = appended => {}
            _ = changes.wait() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Reads every requested partition once. Returns the response, the record bytes it
/// holds from each partition read, and whether any partition carries an error (errors
/// answer immediately).
fn collect(
    ctx: &Context<'_>,
    request: &FetchRequest,
    version: i16,
) -> (FetchResponse, Vec<(Arc<Partition>, usize)>, bool) {
    let broker = ctx.broker;
    let mut response = FetchResponse::default();
    let mut budget = if version >= 3 {
        request.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut reads = Vec::new();
    let mut has_error = false;
    for wanted in &request.topics {
        let topic = resolve(ctx, wanted, version);
        let mut out = FetchableTopicResponse::default();
        if version >= 13 {
            out.topic_id = wanted.topic_id;
        } else {
            out.topic = wanted.topic.clone();
        }
        for p in &wanted.partitions {
            let mut data = PartitionData::default();
            data.partition_index = p.partition;
            data.records = Some(Bytes::new());
            let partition = topic
                .as_ref()
                .ok()
                .and_then(|t| t.partition(p.partition).cloned());
            let Some(partition) = partition else {
                data.error_code = match &topic {
                    Err(ResponseError::UnknownTopicOrPartition) | Ok(_) => {
                        super::not_hosted(broker, wanted.topic.0.as_str(), p.partition)
                    }
                    Err(e) => *e,
                }
                .code();
                data.high_watermark = -1;
                has_error = true;
                out.partitions.push(data);
                continue;
            };
            if version < 4 || request.isolation_level == 0 {
                data.aborted_transactions = None;
            }
            let current_epoch = if version >= 9 {
                p.current_leader_epoch
            } else {
                -1
            };
            if let Err(e) = partition.check_leader(current_epoch) {
                data.error_code = e.code().code();
                data.high_watermark = -1;
                has_error = true;
                out.partitions.push(data);
                continue;
            }
            let hw = partition.high_watermark();
            data.high_watermark = hw;
            data.last_stable_offset = hw;
            if version >= 5 {
                data.log_start_offset = partition.log().log_start_offset();
            }
            let limit = (p.partition_max_bytes.max(0) as usize).min(budget);
            // KIP-74: the first data in the response may exceed the limits.
            let min_one = total == 0;
            if limit == 0 && !min_one {
                out.partitions.push(data);
                continue;
            }
            match partition.read(p.fetch_offset, limit, min_one) {
                Ok(read) => {
                    let n = read.records.len();
                    total += n;
                    budget = budget.saturating_sub(n);
                    data.records = Some(read.records);
                    if n > 0 {
                        reads.push((partition.clone(), n));
                    }
                }
                Err(LogError::OffsetOutOfRange { .. }) => {
                    data.error_code = ResponseError::OffsetOutOfRange.code();
                    has_error = true;
                }
                // Reported once, when the log went offline.
                Err(LogError::Offline { .. }) => {
                    data.error_code = ResponseError::KafkaStorageError.code();
                    has_error = true;
                }
                Err(e) => {
                    tracing::error!(topic = partition.topic(), partition = p.partition, error = %e, "fetch read failed");
                    data.error_code = ResponseError::KafkaStorageError.code();
                    has_error = true;
                }
            }
            out.partitions.push(data);
        }
        response.responses.push(out);
    }
    (response, reads, has_error)
}

/// The partitions a fetch names that exist here.
fn requested(ctx: &Context<'_>, request: &FetchRequest, version: i16) -> Vec<Arc<Partition>> {
    let mut found = Vec::new();
    for wanted in &request.topics {
        if let Ok(topic) = resolve(ctx, wanted, version) {
            found.extend(wanted.partitions.iter().filter_map(|p| {
                usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| topic.partitions.get(i).cloned())
            }));
        }
    }
    found
}

/// Finds the topic a fetch names: by id from v13, by name before.
/// A topic the client may not READ is TOPIC_AUTHORIZATION_FAILED whether it exists or
/// not, so its existence does not leak.
fn resolve(
    ctx: &Context<'_>,
    wanted: &FetchTopic,
    version: i16,
) -> Result<Arc<Topic>, ResponseError> {
    let broker = ctx.broker;
    if version >= 13 {
        let topic = broker
            .topic_by_id(wanted.topic_id)
            .ok_or(ResponseError::UnknownTopicId)?;
        if !ctx.topic_allowed(Operation::Read, &topic.meta.name) {
            return Err(ResponseError::TopicAuthorizationFailed);
        }
        Ok(topic)
    } else {
        let name = wanted.topic.0.as_str();
        if !ctx.topic_allowed(Operation::Read, name) {
            return Err(ResponseError::TopicAuthorizationFailed);
        }
        broker
            .topic(name)
            .ok_or(ResponseError::UnknownTopicOrPartition)
    }
}
