//! DescribeProducers (61, KIP-664): the idempotent producers a partition leader tracks,
//! with each one's epoch and last sequence number. Operators use it (`kafka-transactions
//! describe-producers`) to see who writes a partition; Quiver's transforms use it to
//! learn where a remote output partition's sequence stands before replaying into it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::tenancy::acl::Operation;

/// Answers a DescribeProducers request from the partitions this broker leads.
pub fn handle(
    ctx: &Context<'_>,
    request: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let mut response = DescribeProducersResponse::default();
    for wanted in request.topics {
        let name = wanted.name.0.as_str();
        let authorized = ctx.topic_allowed(Operation::Read, name);
        let topic = authorized.then(|| ctx.broker.topic(name)).flatten();
        let mut out = TopicResponse::default();
        out.name = wanted.name.clone();
        for index in wanted.partition_indexes {
            let mut r = PartitionResponse::default();
            r.partition_index = index;
            match topic.as_ref().and_then(|t| t.partition(index).cloned()) {
                None if !authorized => {
                    r.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
                None => {
                    let error = super::not_hosted(ctx.broker, name, index);
                    r.error_code = error.code();
                }
                Some(partition) if partition.check_leader(-1).is_err() => {
                    r.error_code = ResponseError::NotLeaderOrFollower.code();
                    r.error_message = Some(StrBytes::from_static_str(
                        "this broker does not lead the partition",
                    ));
                }
                Some(partition) => {
                    r.active_producers = partition
                        .producers()
                        .into_iter()
                        .map(|p| {
                            let mut s = ProducerState::default();
                            s.producer_id = ProducerId(p.producer_id);
                            s.producer_epoch = i32::from(p.epoch);
                            s.last_sequence = p.last_sequence;
                            s.last_timestamp = p.last_timestamp;
                            s.coordinator_epoch = -1;
                            s.current_txn_start_offset = -1;
                            s
                        })
                        .collect();
                }
            }
            out.partitions.push(r);
        }
        response.topics.push(out);
    }
    response
}
