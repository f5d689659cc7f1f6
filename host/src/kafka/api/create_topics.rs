//! CreateTopics (19): creates topics with partition counts and config overrides, or
//! only validates the request (`validate_only`).

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{kstr, Context};
use crate::broker::TopicError;
use crate::config::topic;

/// Answers a CreateTopics request.
pub async fn handle(
    ctx: &Context<'_>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let broker = ctx.broker;
    let node = broker.config().broker.node_id;
    let mut response = CreateTopicsResponse::default();
    let mut seen = HashSet::new();
    let duplicated: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.as_str().to_string()))
        .map(|t| t.name.0.as_str().to_string())
        .collect();
    for wanted in request.topics {
        let name = wanted.name.0.as_str().to_string();
        let mut result = CreatableTopicResult::default();
        result.name = wanted.name.clone();
        let outcome = if duplicated.contains(&name) {
            Err((
                ResponseError::InvalidRequest,
                format!("topic '{name}' appears more than once in the request"),
            ))
        } else if !wanted.assignments.is_empty()
            && wanted
                .assignments
                .iter()
                .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
        {
            Err((
                ResponseError::InvalidReplicaAssignment,
                format!("replica assignments may only name broker {node}"),
            ))
        } else {
            let partitions = if wanted.assignments.is_empty() {
                wanted.num_partitions
            } else {
                wanted.assignments.len() as i32
            };
            let configs: BTreeMap<String, String> = wanted
                .configs
                .iter()
                .filter_map(|c| {
                    Some((
                        c.name.as_str().to_string(),
                        c.value.as_ref()?.as_str().to_string(),
                    ))
                })
                .collect();
            broker
                .create_topic(
                    &name,
                    partitions,
                    wanted.replication_factor,
                    configs,
                    request.validate_only,
                )
                .await
                .map_err(|e: TopicError| (e.code(), e.to_string()))
        };
        match outcome {
            Ok(meta) => {
                if version >= 7 {
                    result.topic_id = meta.id;
                }
                if version >= 5 {
                    result.num_partitions = meta.partitions;
                    result.replication_factor = meta
                        .assignments
                        .first()
                        .map(|p| p.replicas.len() as i16)
                        .unwrap_or(1);
                    let effective = topic::effective(&broker.config().log, &meta.configs);
                    result.configs = Some(
                        effective
                            .into_iter()
                            .map(|(name, value, source)| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = kstr(name);
                                c.value = Some(kstr(value));
                                c.config_source = source as i8;
                                c
                            })
                            .collect(),
                    );
                }
            }
            Err((error, message)) => {
                result.error_code = error.code();
                if version >= 1 {
                    result.error_message = Some(kstr(message));
                }
                if version >= 5 {
                    result.num_partitions = -1;
                    result.replication_factor = -1;
                }
            }
        }
        response.topics.push(result);
    }
    response
}
