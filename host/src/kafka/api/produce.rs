//! Produce (0): validates and appends record batches on the partition's leader; answers
//! with the offsets assigned, or nothing at all for acks=0.
//!
//! acks=0 and acks=1 complete once the batch is in the leader's log (and fsynced if the
//! topic's flush policy says so). acks=all (-1) is refused up front with
//! NOT_ENOUGH_REPLICAS while the ISR is smaller than `min.insync.replicas`, and
//! otherwise answered once every in-sync replica has the batch (the high watermark
//! passed it): NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum
//! meanwhile, REQUEST_TIMED_OUT after the request's timeout. A partition with a single
//! replica is its own ISR, so there acks=all completes with the append, as before.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{kstr, Context};
use crate::broker::now_ms;
use crate::partition::producer_state::SequenceError;
use crate::partition::{AppendError, Partition};
use crate::tenancy::acl::Operation;
use crate::tenancy::quota::QuotaType;

/// Longest an acks=all produce waits for replication, whatever the client asks.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Appends every partition's batches; `None` when the client asked for no response.
pub async fn handle(
    ctx: &Context<'_>,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let broker = ctx.broker;
    let acks_valid = matches!(request.acks, -1..=1);
    let mut appended_any = false;
    let mut response = ProduceResponse::default();
    // acks=all: (topic index, partition index, partition, end offset to wait for).
    let mut waits: Vec<(usize, usize, std::sync::Arc<Partition>, i64)> = Vec::new();
    let tenants = broker.metadata().tenants.clone();
    let mut produced_bytes = 0usize;
    for topic_data in request.topic_data {
        let name = topic_data.name.0.as_str().to_string();
        let authorized = ctx.topic_allowed(Operation::Write, &name);
        let over_storage = if authorized {
            storage_refusal(ctx, &tenants, &name)
        } else {
            None
        };
        // An unauthorized client learns nothing about the topic, not even that it exists.
        let topic = authorized.then(|| broker.topic(&name)).flatten();
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = topic_data.name.clone();
        for partition_data in topic_data.partition_data {
            let mut p = PartitionProduceResponse::default();
            p.index = partition_data.index;
            let mut batch_bytes = 0;
            let partition = topic
                .as_ref()
                .and_then(|t| t.partition(partition_data.index).cloned());
            let outcome = if !authorized {
                Err((
                    ResponseError::TopicAuthorizationFailed,
                    format!("not authorized to WRITE to topic '{name}'"),
                ))
            } else if let Some(message) = &over_storage {
                Err((ResponseError::PolicyViolation, message.clone()))
            } else if !acks_valid {
                Err((
                    ResponseError::InvalidRequiredAcks,
                    format!("acks must be -1, 0 or 1, not {}", request.acks),
                ))
            } else if let Some(partition) = &partition {
                let records = partition_data.records.unwrap_or_default();
                produced_bytes += records.len();
                batch_bytes = records.len();
                partition
                    .append_with_acks(&records, now_ms(), request.acks)
                    .map_err(|e| (append_error_code(&e), e.to_string()))
            } else {
                let error = super::not_hosted(broker, &name, partition_data.index);
                let message = if error == ResponseError::NotLeaderOrFollower {
                    format!("{name}-{} is not led by this broker", partition_data.index)
                } else {
                    format!("{name}-{} does not exist", partition_data.index)
                };
                Err((error, message))
            };
            match outcome {
                Ok((info, append_time)) => {
                    appended_any = true;
                    if let Some(partition) = &partition {
                        broker.metrics().produced(
                            partition.topic_name(),
                            batch_bytes,
                            (info.last_offset - info.base_offset + 1).max(0) as u64,
                        );
                    }
                    p.base_offset = info.base_offset;
                    if version >= 2 {
                        p.log_append_time_ms = append_time;
                    }
                    if version >= 5 {
                        p.log_start_offset = info.log_start_offset;
                    }
                    if let (-1, Some(partition)) = (request.acks, partition) {
                        waits.push((
                            response.responses.len(),
                            topic_response.partition_responses.len(),
                            partition,
                            info.last_offset + 1,
                        ));
                    }
                }
                Err((error, message)) => refuse(&mut p, version, &name, error, message),
            }
            topic_response.partition_responses.push(p);
        }
        response.responses.push(topic_response);
    }
    if appended_any {
        broker.notify_appended();
    }
    // One deadline for the whole request, as Kafka's delayed produce has.
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64).min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    for (t, i, partition, end_offset) in waits {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Err(e) = partition.wait_for_commit(end_offset, left).await {
            let topic = &mut response.responses[t];
            let name = topic.name.0.as_str().to_string();
            refuse(
                &mut topic.partition_responses[i],
                version,
                &name,
                e.code(),
                e.to_string(),
            );
        }
    }
    let throttle = ctx.quota(QuotaType::ProduceBytes, produced_bytes as f64, true);
    if version >= 1 {
        response.throttle_time_ms = throttle;
    }
    (request.acks != 0).then_some(response)
}

/// Why a produce to `topic` is refused by its tenant's `max_stored_bytes`, if it is.
fn storage_refusal(
    ctx: &Context<'_>,
    tenants: &std::collections::BTreeMap<String, crate::tenancy::tenant::Tenant>,
    topic: &str,
) -> Option<String> {
    let owner = crate::tenancy::tenant::owner(tenants, topic)?;
    let max = owner.limits.max_stored_bytes?;
    let stored = ctx.broker.tenant_stored_bytes(owner);
    (stored >= max as u64).then(|| {
        format!(
            "tenant {} stores {stored} bytes on this broker, its limit is {max} (max_stored_bytes); retention or deleting records makes room",
            owner.name
        )
    })
}

fn refuse(
    p: &mut PartitionProduceResponse,
    version: i16,
    topic: &str,
    error: ResponseError,
    message: String,
) {
    tracing::debug!(topic, partition = p.index, %error, %message, "produce refused");
    p.error_code = error.code();
    p.base_offset = -1;
    if version >= 8 {
        p.error_message = Some(kstr(message));
    }
}

/// The Kafka error a producer gets for each way an append can be refused.
fn append_error_code(error: &AppendError) -> ResponseError {
    match error {
        AppendError::Empty | AppendError::Corrupt { .. } | AppendError::Recompress { .. } => {
            ResponseError::CorruptMessage
        }
        AppendError::CountMismatch { .. } | AppendError::InvalidRecord { .. } => {
            ResponseError::InvalidRecord
        }
        AppendError::TooLarge { .. } => ResponseError::MessageTooLarge,
        AppendError::Sequence(SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        AppendError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        AppendError::NotLeader | AppendError::NotFollower => ResponseError::NotLeaderOrFollower,
        AppendError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        AppendError::Storage(_) => ResponseError::KafkaStorageError,
    }
}
