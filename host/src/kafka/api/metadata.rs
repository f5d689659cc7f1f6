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
use crate::broker::{Topic, TopicError};

/// Answers a Metadata request.
pub fn handle(ctx: &Context<'_>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let broker = ctx.broker;
    let config = broker.config();
    let node = config.broker.node_id;
    let (host, port) = config.kafka.advertised();

    let mut response = MetadataResponse::default();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(node);
    b.host = kstr(host);
    b.port = port as i32;
    response.brokers = vec![b];
    if version >= 2 {
        response.cluster_id = Some(kstr(broker.metadata().cluster_id()));
    }
    if version >= 1 {
        response.controller_id = BrokerId(node);
    }

    // v0: an empty list means every topic; v1+: null means every topic.
    let requested = match request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => topics,
        _ => {
            response.topics = broker
                .topics()
                .iter()
                .map(|t| topic_entry(t, node, version))
                .collect();
            return response;
        }
    };
    let auto_create =
        config.kafka.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    for wanted in requested {
        let entry = match (&wanted.name, version >= 10 && !wanted.topic_id.is_nil()) {
            (_, true) => match broker.topic_by_id(wanted.topic_id) {
                Some(topic) => topic_entry(&topic, node, version),
                None => {
                    let mut t = MetadataResponseTopic::default();
                    t.error_code = ResponseError::UnknownTopicId.code();
                    t.topic_id = wanted.topic_id;
                    t
                }
            },
            (Some(name), false) => {
                let name = name.0.as_str();
                match broker.topic(name) {
                    Some(topic) => topic_entry(&topic, node, version),
                    None if auto_create => auto_create_topic(ctx, name, node, version),
                    None => error_entry(name, ResponseError::UnknownTopicOrPartition),
                }
            }
            (None, false) => error_entry("", ResponseError::InvalidTopicException),
        };
        response.topics.push(entry);
    }
    response
}

fn auto_create_topic(
    ctx: &Context<'_>,
    name: &str,
    node: i32,
    version: i16,
) -> MetadataResponseTopic {
    let broker = ctx.broker;
    match broker.create_topic(name, -1, -1, BTreeMap::new(), false) {
        Ok(_) => {
            tracing::info!(topic = name, client = ?ctx.header.client_id.as_ref().map(|c| c.as_str()), "auto-created topic");
        }
        // Another request created it in the meantime.
        Err(TopicError::Exists(_)) => {}
        Err(e) => return error_entry(name, e.code()),
    }
    match broker.topic(name) {
        Some(topic) => topic_entry(&topic, node, version),
        None => error_entry(name, ResponseError::LeaderNotAvailable),
    }
}

fn error_entry(name: &str, error: ResponseError) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = error.code();
    t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
    t
}

fn topic_entry(topic: &Topic, node: i32, version: i16) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(kstr(topic.meta.name.clone())));
    if version >= 10 {
        t.topic_id = topic.meta.id;
    }
    if version >= 1 {
        t.is_internal = topic.meta.internal;
    }
    t.partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let mut e = MetadataResponsePartition::default();
            e.partition_index = p.index();
            e.leader_id = BrokerId(node);
            if version >= 7 {
                e.leader_epoch = p.leader_epoch();
            }
            e.replica_nodes = vec![BrokerId(node)];
            e.isr_nodes = vec![BrokerId(node)];
            e
        })
        .collect();
    t
}
