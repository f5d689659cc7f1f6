//! OffsetFetch (9): a group's committed offsets, with their metadata and leader epoch
//! exactly as committed; v8+ asks for several groups at once. A partition without a
//! committed offset answers -1, as in Kafka.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{kstr, Context};
use crate::group::records::OffsetValue;
use crate::tenancy::acl::{Operation, ResourceType};

/// One partition's answer: (partition, committed offset if any).
/// A partition's committed offset, none, or why the client may not see it.
type Slot = Result<Option<OffsetValue>, ResponseError>;
type Fetched = Vec<(String, Vec<(i32, Slot)>)>;

/// Answers an OffsetFetch request.
pub fn handle(ctx: &Context<'_>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        response.groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let mut out = OffsetFetchResponseGroup::default();
                match fetch(ctx, g.group_id.0.as_str(), wanted) {
                    Ok(found) => {
                        out.topics = found
                            .into_iter()
                            .map(|(topic, partitions)| {
                                let mut t = OffsetFetchResponseTopics::default();
                                t.name = TopicName(kstr(topic));
                                t.partitions = partitions
                                    .into_iter()
                                    .map(|(index, value)| {
                                        let mut p = OffsetFetchResponsePartitions::default();
                                        p.partition_index = index;
                                        p.error_code = fill(value, |o, e, m| {
                                            p.committed_offset = o;
                                            p.committed_leader_epoch = e;
                                            p.metadata = Some(kstr(m));
                                        });
                                        p
                                    })
                                    .collect();
                                t
                            })
                            .collect();
                    }
                    Err(error) => out.error_code = error.code(),
                }
                out.group_id = GroupId(g.group_id.0);
                out
            })
            .collect();
        return response;
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let wanted_for_error = wanted.clone();
    match fetch(ctx, request.group_id.0.as_str(), wanted) {
        Ok(found) => response.topics = v1_topics(found, version, None),
        Err(error) if version >= 2 => response.error_code = error.code(),
        // v1 has no top-level error: every partition carries it.
        Err(error) => {
            let found: Fetched = wanted_for_error
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps): (String, Vec<i32>)| {
                    (t, ps.into_iter().map(|p| (p, Ok(None))).collect())
                })
                .collect();
            response.topics = v1_topics(found, version, Some(error));
        }
    }
    response
}

fn v1_topics(
    found: Fetched,
    version: i16,
    error: Option<ResponseError>,
) -> Vec<OffsetFetchResponseTopic> {
    found
        .into_iter()
        .map(|(topic, partitions)| {
            let mut t = OffsetFetchResponseTopic::default();
            t.name = TopicName(kstr(topic));
            t.partitions = partitions
                .into_iter()
                .map(|(index, value)| {
                    let mut p = OffsetFetchResponsePartition::default();
                    p.partition_index = index;
                    let own = fill(value, |o, e, m| {
                        p.committed_offset = o;
                        if version >= 5 {
                            p.committed_leader_epoch = e;
                        }
                        p.metadata = Some(kstr(m));
                    });
                    p.error_code = error.map_or(own, |e| e.code());
                    p
                })
                .collect();
            t
        })
        .collect()
}

/// Sets the offset fields from `value`; returns the partition's error code.
fn fill(value: Slot, mut set: impl FnMut(i64, i32, String)) -> i16 {
    match value {
        Ok(Some(v)) => {
            set(v.offset, v.leader_epoch, v.metadata);
            0
        }
        Ok(None) => {
            set(-1, -1, String::new());
            0
        }
        Err(error) => {
            set(-1, -1, String::new());
            error.code()
        }
    }
}

/// The committed offsets of `wanted` (every committed partition when `None`).
fn fetch(
    ctx: &Context<'_>,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Fetched, ResponseError> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    let metadata = ctx.broker.metadata();
    if !ctx.authorize_in(&metadata, Operation::Describe, ResourceType::Group, group) {
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    let visible =
        |topic: &str| ctx.authorize_in(&metadata, Operation::Describe, ResourceType::Topic, topic);
    let mut committed = ctx.broker.groups().offsets(group)?;
    Ok(match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let allowed = visible(&topic);
                let values = partitions
                    .into_iter()
                    .map(|p| {
                        let value = committed.remove(&(topic.clone(), p));
                        (
                            p,
                            if allowed {
                                Ok(value)
                            } else {
                                Err(ResponseError::TopicAuthorizationFailed)
                            },
                        )
                    })
                    .collect();
                (topic, values)
            })
            .collect(),
        None => {
            // Every committed partition the client may see; the others are left out.
            let mut by_topic: BTreeMap<String, Vec<(i32, Slot)>> = BTreeMap::new();
            for ((topic, partition), value) in committed {
                if visible(&topic) {
                    by_topic
                        .entry(topic)
                        .or_default()
                        .push((partition, Ok(Some(value))));
                }
            }
            by_topic.into_iter().collect()
        }
    })
}
