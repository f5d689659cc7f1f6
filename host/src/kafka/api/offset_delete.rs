//! OffsetDelete (47): forgets committed offsets of partitions the group does not
//! consume; offsets of topics its live members subscribe to are refused.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::Context;
use crate::tenancy::acl::Operation;

/// Answers an OffsetDelete request.
pub fn handle(
    ctx: &Context<'_>,
    request: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let broker = ctx.broker;
    let mut response = OffsetDeleteResponse::default();
    if !ctx.group_allowed(Operation::Delete, request.group_id.0.as_str()) {
        response.error_code = ResponseError::GroupAuthorizationFailed.code();
        return response;
    }
    let readable = |topic: &str| ctx.topic_allowed(Operation::Read, topic);
    let mut known = Vec::new();
    for topic in &request.topics {
        if !readable(topic.name.0.as_str()) {
            continue;
        }
        for p in &topic.partitions {
            if broker
                .partition(topic.name.0.as_str(), p.partition_index)
                .is_some()
            {
                known.push((topic.name.0.to_string(), p.partition_index));
            }
        }
    }
    let verdicts = match broker
        .groups()
        .delete_offsets(request.group_id.0.as_str(), &known)
    {
        Ok(verdicts) => verdicts,
        Err(error) => {
            response.error_code = error.code();
            return response;
        }
    };
    let mut verdicts = known.into_iter().zip(verdicts);
    response.topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let mut out = OffsetDeleteResponseTopic::default();
            let allowed = readable(topic.name.0.as_str());
            out.partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = OffsetDeleteResponsePartition::default();
                    r.partition_index = p.partition_index;
                    let known = broker
                        .partition(topic.name.0.as_str(), p.partition_index)
                        .is_some();
                    r.error_code = if !allowed {
                        ResponseError::TopicAuthorizationFailed.code()
                    } else if known {
                        verdicts
                            .next()
                            .and_then(|(_, verdict)| verdict)
                            .map_or(0, |e| e.code())
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                    r
                })
                .collect();
            out.name = topic.name;
            out
        })
        .collect();
    response
}
