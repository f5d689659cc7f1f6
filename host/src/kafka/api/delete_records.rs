//! DeleteRecords (21): advances partitions' log start offsets, on the leader (followers
//! take their log start from it).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::Context;
use crate::log::LogError;
use crate::tenancy::acl::Operation;

/// Answers a DeleteRecords request. An offset of -1 means the high watermark.
pub fn handle(
    ctx: &Context<'_>,
    request: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    for wanted in request.topics {
        let authorized = ctx.topic_allowed(Operation::Delete, wanted.name.0.as_str());
        let topic = authorized
            .then(|| ctx.broker.topic(wanted.name.0.as_str()))
            .flatten();
        let mut out = DeleteRecordsTopicResult::default();
        out.name = wanted.name.clone();
        for p in wanted.partitions {
            let mut r = DeleteRecordsPartitionResult::default();
            r.partition_index = p.partition_index;
            r.low_watermark = -1;
            let partition = topic
                .as_ref()
                .and_then(|t| t.partition(p.partition_index).cloned());
            match partition {
                None if !authorized => {
                    r.error_code = ResponseError::TopicAuthorizationFailed.code()
                }
                None => {
                    r.error_code =
                        super::not_hosted(ctx.broker, wanted.name.0.as_str(), p.partition_index)
                            .code()
                }
                // Followers take their log start from the leader, so only it deletes.
                Some(partition) if partition.check_leader(-1).is_err() => {
                    r.error_code = ResponseError::NotLeaderOrFollower.code()
                }
                Some(partition) => {
                    let hw = partition.high_watermark();
                    let offset = if p.offset == -1 { hw } else { p.offset };
                    if offset < 0 || offset > hw {
                        r.error_code = ResponseError::OffsetOutOfRange.code();
                    } else {
                        match partition.log().delete_records_before(offset) {
                            Ok(low) => r.low_watermark = low,
                            Err(LogError::OffsetOutOfRange { .. }) => {
                                r.error_code = ResponseError::OffsetOutOfRange.code()
                            }
                            Err(e) => {
                                tracing::error!(topic = partition.topic(), partition = p.partition_index, error = %e, "delete records failed");
                                r.error_code = ResponseError::KafkaStorageError.code();
                            }
                        }
                    }
                }
            }
            out.partitions.push(r);
        }
        response.topics.push(out);
    }
    response
}
