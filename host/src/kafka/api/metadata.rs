//! Metadata (3): brokers, topics, partitions and their leaders; creates topics on
//! demand when `kafka.auto_create_topics` and the client both allow it.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{kstr, Context};
use crate::broker::Broker;
use crate::controller::{State, TopicMeta, NO_LEADER};
use crate::tenancy::acl::{Operation, ResourceType};

/// Answers a Metadata request from this broker's replica of the cluster metadata.
pub async fn handle(ctx: &Context<'_>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let broker = ctx.broker;
    let config = broker.config();
    let mut state = broker.metadata();

    let mut response = MetadataResponse::default();
    let listener = ctx.session.listener.name.as_str();
    response.brokers = brokers(broker, &state, listener);
    if version >= 2 {
        response.cluster_id = Some(kstr(broker.cluster_id().to_string()));
    }
    if version >= 1 {
        // Every broker forwards admin requests to the Raft leader, so, as in KRaft
        // mode, clients are told to send them here: a client whose cached controller
        // died would otherwise wait for a metadata refresh before creating a topic.
        response.controller_id = BrokerId(config.broker.node_id);
    }

    // v0: an empty list means every topic; v1+: null means every topic.
    let requested = match request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => topics,
        _ => {
            // Only what the client may see: no topic name leaks to another tenant.
            response.topics = state
                .topics
                .values()
                .filter(|t| {
                    ctx.authorize_in(&state, Operation::Describe, ResourceType::Topic, &t.name)
                })
                .map(|t| topic_entry(t, &state, version))
                .collect();
            return response;
        }
    };
    let auto_create =
        config.kafka.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    for wanted in requested {
        // A request may name any number of topics (100,000 fit in a frame): answering
        // them gives the runtime back its thread now and then, so one such request does
        // not hold up the other connections served there.
        tokio::task::consume_budget().await;
        let entry = match (&wanted.name, version >= 10 && !wanted.topic_id.is_nil()) {
            (_, true) => match state.topics.values().find(|t| t.id == wanted.topic_id) {
                Some(topic)
                    if !ctx.authorize_in(
                        &state,
                        Operation::Describe,
                        ResourceType::Topic,
                        &topic.name,
                    ) =>
                {
                    let mut t = MetadataResponseTopic::default();
                    t.error_code = ResponseError::TopicAuthorizationFailed.code();
                    t.topic_id = wanted.topic_id;
                    t
                }
                Some(topic) => topic_entry(topic, &state, version),
                None => {
                    let mut t = MetadataResponseTopic::default();
                    t.error_code = ResponseError::UnknownTopicId.code();
                    t.topic_id = wanted.topic_id;
                    t
                }
            },
            (Some(name), false) => {
                let name = name.0.as_str();
                match state.topics.get(name) {
                    _ if !ctx.authorize_in(
                        &state,
                        Operation::Describe,
                        ResourceType::Topic,
                        name,
                    ) =>
                    {
                        error_entry(name, ResponseError::TopicAuthorizationFailed)
                    }
                    Some(topic) => topic_entry(topic, &state, version),
                    None if auto_create
                        && !ctx.cluster_allowed(Operation::Create)
                        && !ctx.topic_allowed(Operation::Create, name) =>
                    {
                        error_entry(name, ResponseError::TopicAuthorizationFailed)
                    }
                    None if auto_create => {
                        let entry = auto_create_topic(ctx, name, version).await;
                        state = broker.metadata();
                        response.brokers = brokers(broker, &state, listener);
                        entry
                    }
                    None => error_entry(name, ResponseError::UnknownTopicOrPartition),
                }
            }
            (None, false) => error_entry("", ResponseError::InvalidTopicException),
        };
        response.topics.push(entry);
    }
    response
}

/// Every live broker (and a freshly fenced one, see [`Broker::metadata_brokers`]), as
/// clients of `listener` should reach it.
fn brokers(broker: &Broker, state: &State, listener: &str) -> Vec<MetadataResponseBroker> {
    broker
        .metadata_brokers(state)
        .into_iter()
        .map(|meta| {
            let (host, port) = meta.endpoint(listener);
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(meta.id);
            b.host = kstr(host.to_string());
            b.port = port as i32;
            b.rack = meta.rack.clone().map(kstr);
            b
        })
        .collect()
}

async fn auto_create_topic(ctx: &Context<'_>, name: &str, version: i16) -> MetadataResponseTopic {
    let broker = ctx.broker;
    match broker
        .create_topic(name, -1, -1, BTreeMap::new(), false)
        .await
    {
        Ok(_) => {
            tracing::info!(topic = name, client = ?ctx.header.client_id.as_ref().map(|c| c.as_str()), "auto-created topic");
        }
        // Another request created it in the meantime.
        Err(e) if e.code() == ResponseError::TopicAlreadyExists => {}
        Err(e) => return error_entry(name, e.code()),
    }
    let state = broker.metadata();
    match state.topics.get(name) {
        Some(topic) => topic_entry(topic, &state, version),
        None => error_entry(name, ResponseError::LeaderNotAvailable),
    }
}

fn error_entry(name: &str, error: ResponseError) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = error.code();
    t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
    t
}

fn topic_entry(topic: &TopicMeta, state: &State, version: i16) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(kstr(topic.name.clone())));
    if version >= 10 {
        t.topic_id = topic.id;
    }
    if version >= 1 {
        t.is_internal = topic.internal;
    }
    let ids = |ids: &[i32]| ids.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    t.partitions = topic
        .assignments
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let mut e = MetadataResponsePartition::default();
            e.partition_index = index as i32;
            e.leader_id = BrokerId(p.leader);
            if p.leader == NO_LEADER {
                e.error_code = ResponseError::LeaderNotAvailable.code();
            }
            if version >= 7 {
                e.leader_epoch = p.leader_epoch;
            }
            e.replica_nodes = ids(&p.replicas);
            e.isr_nodes = ids(&p.isr);
            if version >= 5 {
                e.offline_replicas = ids(&p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !state.is_live(*r))
                    .collect::<Vec<_>>());
            }
            e
        })
        .collect();
    t
}
