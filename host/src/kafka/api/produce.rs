//! Produce (0): validates and appends record batches; answers with the offsets
//! assigned, or nothing at all for acks=0.
//!
//! On a single replica acks=1 and acks=all complete at the same point: once the batch is
//! in the log (and fsynced if the topic's flush policy says so).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{kstr, Context};
use crate::broker::now_ms;
use crate::partition::producer_state::SequenceError;
use crate::partition::AppendError;

/// Appends every partition's batches; `None` when the client asked for no response.
pub fn handle(ctx: &Context<'_>, request: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let broker = ctx.broker;
    let acks_valid = matches!(request.acks, -1..=1);
    let mut appended_any = false;
    let mut response = ProduceResponse::default();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.as_str().to_string();
        let topic = broker.topic(&name);
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = topic_data.name.clone();
        for partition_data in topic_data.partition_data {
            let mut p = PartitionProduceResponse::default();
            p.index = partition_data.index;
            let partition = topic
                .as_ref()
                .and_then(|t| t.partition(partition_data.index).cloned());
            let outcome = if !acks_valid {
                Err((
                    ResponseError::InvalidRequiredAcks,
                    format!("acks must be -1, 0 or 1, not {}", request.acks),
                ))
            } else if let Some(partition) = partition {
                let records = partition_data.records.unwrap_or_default();
                partition
                    .append(&records, now_ms())
                    .map_err(|e| (append_error_code(&e), e.to_string()))
            } else {
                Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("{name}-{} does not exist", partition_data.index),
                ))
            };
            match outcome {
                Ok((info, append_time)) => {
                    appended_any = true;
                    p.base_offset = info.base_offset;
                    if version >= 2 {
                        p.log_append_time_ms = append_time;
                    }
                    if version >= 5 {
                        p.log_start_offset = info.log_start_offset;
                    }
                }
                Err((error, message)) => {
                    tracing::debug!(topic = %name, partition = partition_data.index, %error, %message, "produce refused");
                    p.error_code = error.code();
                    p.base_offset = -1;
                    if version >= 8 {
                        p.error_message = Some(kstr(message));
                    }
                }
            }
            topic_response.partition_responses.push(p);
        }
        response.responses.push(topic_response);
    }
    if appended_any {
        broker.notify_appended();
    }
    (request.acks != 0).then_some(response)
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
        AppendError::Storage(_) => ResponseError::KafkaStorageError,
    }
}
