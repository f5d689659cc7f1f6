//! ListOffsets (2): earliest, latest, max-timestamp and by-timestamp offset lookups, on
//! the partition's leader. "Latest" is the high watermark: what consumers can read.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::Context;
use crate::tenancy::acl::Operation;

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// Answers a ListOffsets request.
pub fn handle(ctx: &Context<'_>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let broker = ctx.broker;
    let mut response = ListOffsetsResponse::default();
    for wanted in request.topics {
        let authorized = ctx.topic_allowed(Operation::Describe, wanted.name.0.as_str());
        let topic = broker.topic(wanted.name.0.as_str());
        let mut out = ListOffsetsTopicResponse::default();
        out.name = wanted.name.clone();
        for p in wanted.partitions {
            let mut r = ListOffsetsPartitionResponse::default();
            r.partition_index = p.partition_index;
            r.timestamp = -1;
            r.offset = -1;
            if !authorized {
                r.error_code = ResponseError::TopicAuthorizationFailed.code();
                out.partitions.push(r);
                continue;
            }
            let partition = topic
                .as_ref()
                .and_then(|t| t.partition(p.partition_index).cloned());
            let Some(partition) = partition else {
                r.error_code =
                    super::not_hosted(broker, wanted.name.0.as_str(), p.partition_index).code();
                out.partitions.push(r);
                continue;
            };
            let current_epoch = if version >= 4 {
                p.current_leader_epoch
            } else {
                -1
            };
            match partition.check_leader(current_epoch) {
                Ok(epoch) if version >= 4 => r.leader_epoch = epoch,
                Ok(_) => {}
                Err(e) => {
                    r.error_code = e.code().code();
                    out.partitions.push(r);
                    continue;
                }
            }
            let log = partition.log();
            let looked_up = match p.timestamp {
                LATEST => Ok(Some((-1, partition.high_watermark()))),
                EARLIEST | EARLIEST_LOCAL => Ok(Some((-1, log.log_start_offset()))),
                MAX_TIMESTAMP => log.max_timestamp(),
                ts if ts >= 0 => log
                    .offset_for_timestamp(ts)
                    .map(|found| found.map(|(off, ts)| (ts, off))),
                other => {
                    r.error_code = ResponseError::InvalidRequest.code();
                    tracing::debug!(
                        timestamp = other,
                        "ListOffsets with an unknown special timestamp"
                    );
                    out.partitions.push(r);
                    continue;
                }
            };
            match looked_up {
                Ok(Some((ts, offset))) => {
                    r.timestamp = ts;
                    r.offset = offset;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = partition.topic(), partition = p.partition_index, error = %e, "offset lookup failed");
                    r.error_code = ResponseError::KafkaStorageError.code();
                }
            }
            out.partitions.push(r);
        }
        response.topics.push(out);
    }
    response
}
