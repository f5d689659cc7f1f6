//! OffsetCommit (8): a group member (or, for an empty group, an outside tool with
//! generation -1) stores consumed positions. The answer goes out only after the
//! records are in every in-sync replica of their `__consumer_offsets` partition.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::Context;
use crate::broker::now_ms;
use crate::group::records::OffsetValue;
use crate::tenancy::acl::{Operation, ResourceType};

/// Answers an OffsetCommit request.
pub async fn handle(
    ctx: &Context<'_>,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let broker = ctx.broker;
    let max_metadata = broker.config().group.max_offset_metadata_bytes as usize;
    let now = now_ms();
    // Any partition of the cluster may be committed, not only the ones hosted here.
    let cluster = broker.metadata();
    let mut verdicts: HashMap<(String, i32), Option<ResponseError>> = HashMap::new();
    let mut accepted = Vec::new();
    let group_allowed = ctx.authorize_in(
        &cluster,
        Operation::Read,
        ResourceType::Group,
        request.group_id.0.as_str(),
    );
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let topic_allowed = ctx.authorize_in(&cluster, Operation::Read, ResourceType::Topic, &name);
        for p in &topic.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let verdict = if !group_allowed {
                Some(ResponseError::GroupAuthorizationFailed)
            } else if !topic_allowed {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if cluster.partition(&name, p.partition_index).is_none() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > max_metadata {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                accepted.push((
                    (name.clone(), p.partition_index),
                    OffsetValue {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata,
                        commit_timestamp: now,
                    },
                ));
                None
            };
            verdicts.insert((name.clone(), p.partition_index), verdict);
        }
    }
    if !accepted.is_empty() {
        let keys: Vec<(String, i32)> = accepted.iter().map(|(tp, _)| tp.clone()).collect();
        let stored = broker.groups().commit(
            request.group_id.0.as_str(),
            request.generation_id_or_member_epoch,
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
            accepted,
            Duration::from_millis(broker.config().group.offsets_commit_timeout_ms),
        );
        if let Err(error) = stored.await {
            for key in keys {
                verdicts.insert(key, Some(error));
            }
        }
    }
    let mut response = OffsetCommitResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|topic| {
            let mut out = OffsetCommitResponseTopic::default();
            out.name = topic.name.clone();
            out.partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = OffsetCommitResponsePartition::default();
                    r.partition_index = p.partition_index;
                    r.error_code = verdicts
                        .get(&(topic.name.0.to_string(), p.partition_index))
                        .copied()
                        .flatten()
                        .map_or(0, |e| e.code());
                    r
                })
                .collect();
            out
        })
        .collect();
    response
}
