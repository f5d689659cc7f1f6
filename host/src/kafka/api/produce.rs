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
//!
//! Producer ids from 2^62 on belong to the brokers' own writers (transform outputs,
//! written through the partition directly, or over the cluster transport's writes
//! channel when another broker leads the partition): a client's records carrying one
//! are refused whole with INVALID_REQUEST, and nothing of them is appended.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{kstr, Context};
use crate::broker::now_ms;
use crate::log::batch::Batches;
use crate::partition::producer_state::{is_internal, SequenceError, INTERNAL_PRODUCER_IDS};
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
                match internal_producer(&records).filter(|_| ctx.session.own_broker.is_none()) {
                    Some(refusal) => Err(refusal),
                    None => partition
                        .append_with_acks(&records, now_ms(), request.acks)
                        .map_err(|e| (append_error_code(&e), e.to_string())),
                }
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

/// The refusal of records of which a batch carries one of the broker's own producer ids
/// (a transform's exactly-once output): a client writing with one could fence the
/// transform's runner or have its own records taken for the transform's duplicates.
/// InitProducerId never hands such ids out, so only a forged request carries them.
///
/// INVALID_REQUEST, not UNKNOWN_PRODUCER_ID or INVALID_PRODUCER_ID_MAPPING: clients
/// (librdkafka, the Java producer) take those two for producer state the broker lost
/// and answer by asking for a new id or bumping the epoch and sending again, so a
/// confused client would loop; INVALID_REQUEST is never retried, fails just the batch,
/// and carries the reason in the partition's error message (v8+).
fn internal_producer(records: &[u8]) -> Option<(ResponseError, String)> {
    // A batch that does not parse is the append's to refuse (CORRUPT_MESSAGE).
    let id = Batches::new(records)
        .map_while(Result::ok)
        .map(|(header, _)| header.producer_id)
        .find(|&id| is_internal(id))?;
    Some((
        ResponseError::InvalidRequest,
        format!(
            "producer id {id} is reserved for the broker's own writers (ids from {INTERNAL_PRODUCER_IDS} on); a producer id comes from InitProducerId"
        ),
    ))
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::Compression;

    use super::super::test_support::{broker, Client};
    use super::*;
    use crate::partition::encode::{encode_sequenced_batch, RecordData};

    fn batch(producer_id: i64, n: usize) -> Bytes {
        let data = vec![RecordData::default(); n];
        encode_sequenced_batch(&data, Compression::None, (producer_id, 0, 0)).unwrap()
    }

    fn produce(partitions: Vec<(i32, Bytes)>) -> ProduceRequest {
        let mut t = TopicProduceData::default();
        t.name = TopicName(StrBytes::from_static_str("t"));
        for (index, records) in partitions {
            let mut p = PartitionProduceData::default();
            p.index = index;
            p.records = Some(records);
            t.partition_data.push(p);
        }
        let mut r = ProduceRequest::default();
        r.acks = 1;
        r.timeout_ms = 1_000;
        r.topic_data = vec![t];
        r
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_brokers_own_producer_ids_are_refused_to_clients() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        b.create_topic("t", 3, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let client = Client::new();
        let ctx = client.context(&b);
        let forged = INTERNAL_PRODUCER_IDS + 3;
        // Partition 1: a client's batch, then a forged one in the same records: neither
        // is appended. Partition 2: the highest id there is.
        let mixed = [batch(7, 2), batch(forged, 1)].concat();
        let request = produce(vec![
            (0, batch(forged, 3)),
            (1, Bytes::from(mixed)),
            (2, batch(i64::MAX, 1)),
        ]);
        let response = handle(&ctx, request, 9).await.unwrap();
        let got: Vec<_> = response.responses[0]
            .partition_responses
            .iter()
            .map(|p| {
                (
                    p.index,
                    p.error_code,
                    p.base_offset,
                    p.error_message.as_ref().map(|m| m.to_string()),
                )
            })
            .collect();
        let reserved = |id: i64| {
            Some(format!(
                "producer id {id} is reserved for the broker's own writers (ids from 4611686018427387904 on); a producer id comes from InitProducerId"
            ))
        };
        let invalid = ResponseError::InvalidRequest.code();
        assert_eq!(
            got,
            vec![
                (0, invalid, -1, reserved(forged)),
                (1, invalid, -1, reserved(forged)),
                (2, invalid, -1, reserved(i64::MAX)),
            ]
        );
        for p in 0..3 {
            assert_eq!(b.partition("t", p).unwrap().log().log_end_offset(), 0);
        }

        // The id just below the range is a client's like any other.
        let below = INTERNAL_PRODUCER_IDS - 1;
        let response = handle(&ctx, produce(vec![(0, batch(below, 2))]), 9)
            .await
            .unwrap();
        let p = &response.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0));
        assert_eq!(b.partition("t", 0).unwrap().log().log_end_offset(), 2);

        // A writer of another broker of the cluster (a transform's output to a partition
        // led here) may use them.
        let peer = Client::own_broker(2);
        let response = super::handle(&peer.context(&b), produce(vec![(1, batch(forged, 2))]), 8)
            .await
            .unwrap();
        let p = &response.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0));
        assert_eq!(b.partition("t", 1).unwrap().log().log_end_offset(), 2);

        // Nor does InitProducerId bump the epoch of such an id (KIP-360).
        let init = |id: i64| {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = None;
            r.transaction_timeout_ms = 60_000;
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
            r
        };
        let refused = super::super::init_producer_id::handle(&ctx, init(forged), 4).await;
        assert_eq!(
            (
                refused.error_code,
                refused.producer_id.0,
                refused.producer_epoch
            ),
            (invalid, -1, -1)
        );
        let bumped = super::super::init_producer_id::handle(&ctx, init(below), 4).await;
        assert_eq!(
            (
                bumped.error_code,
                bumped.producer_id.0,
                bumped.producer_epoch
            ),
            (0, below, 1)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producer_new_to_a_partition_must_start_at_sequence_zero() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        b.create_topic("t", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let client = Client::new();
        let ctx = client.context(&b);
        let sequenced = |seq: i32, n: usize| {
            let data = vec![RecordData::default(); n];
            encode_sequenced_batch(&data, Compression::None, (11, 0, seq)).unwrap()
        };
        let answer = |response: kafka_protocol::messages::ProduceResponse| {
            let p = &response.responses[0].partition_responses[0];
            (
                p.error_code,
                p.base_offset,
                p.error_message.as_ref().map(|m| m.to_string()),
            )
        };
        // Sequences 0-16 went to a former leader and were lost with its truncated log:
        // the batch after them is refused, so the client sends them again.
        let response = handle(&ctx, produce(vec![(0, sequenced(17, 3))]), 9)
            .await
            .unwrap();
        assert_eq!(
            answer(response),
            (
                ResponseError::OutOfOrderSequenceNumber.code(),
                -1,
                Some("producer 11 epoch 0: expected sequence 0, got 17".to_string())
            )
        );
        assert_eq!(b.partition("t", 0).unwrap().log().log_end_offset(), 0);
        let response = handle(&ctx, produce(vec![(0, sequenced(0, 17))]), 9)
            .await
            .unwrap();
        assert_eq!(answer(response), (0, 0, None));
        let response = handle(&ctx, produce(vec![(0, sequenced(17, 3))]), 9)
            .await
            .unwrap();
        assert_eq!(answer(response), (0, 17, None));
    }
}
