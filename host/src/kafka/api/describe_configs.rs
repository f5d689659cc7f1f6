//! DescribeConfigs (32): a topic's effective configs (with where each value came from)
//! and the broker's settings under their Kafka names.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{kstr, Context};
use crate::config::topic::{self, Source};
use crate::config::Config;
use crate::tenancy::acl::Operation;

/// One reported config: name, value, source, Kafka type code, documentation.
type Entry = (String, String, Source, i8, &'static str);

/// Kafka's resource types.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

/// Answers a DescribeConfigs request.
pub fn handle(
    ctx: &Context<'_>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let broker = ctx.broker;
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.as_str();
        let access = config_access(
            ctx,
            resource.resource_type,
            name,
            Operation::DescribeConfigs,
        );
        let entries: Result<Vec<Entry>, (ResponseError, String)> = match resource.resource_type {
            _ if access.is_err() => access.map(|()| Vec::new()),
            RESOURCE_TOPIC => match broker.topic(name) {
                Some(t) => Ok(topic::effective(&broker.config().log, &t.meta.configs)
                    .into_iter()
                    .map(|(key, value, source)| {
                        let def = topic::def(key).expect("effective lists known configs");
                        (key.to_string(), value, source, def.type_code(), def.doc)
                    })
                    .collect()),
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                )),
            },
            RESOURCE_BROKER
                if name.is_empty() || name == broker.config().broker.node_id.to_string() =>
            {
                Ok(broker_entries(broker.config()))
            }
            RESOURCE_BROKER => Err((
                ResponseError::InvalidRequest,
                format!(
                    "this is broker {}, not '{name}'",
                    broker.config().broker.node_id
                ),
            )),
            other => Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        };
        match entries {
            Ok(entries) => {
                // Null and empty both mean every config, as in Kafka.
                let wanted = resource
                    .configuration_keys
                    .as_ref()
                    .filter(|k| !k.is_empty());
                for (key, value, source, type_code, doc) in entries {
                    if wanted.is_some_and(|w| !w.iter().any(|k| k.as_str() == key)) {
                        continue;
                    }
                    let mut entry = DescribeConfigsResourceResult::default();
                    entry.name = kstr(key.clone());
                    entry.value = Some(kstr(value.clone()));
                    entry.config_source = source as i8;
                    if request.include_synonyms {
                        let mut synonym = DescribeConfigsSynonym::default();
                        synonym.name = kstr(key);
                        synonym.value = Some(kstr(value));
                        synonym.source = source as i8;
                        entry.synonyms = vec![synonym];
                    }
                    if version >= 3 {
                        entry.config_type = type_code;
                        if request.include_documentation {
                            entry.documentation = Some(kstr(doc));
                        }
                    }
                    result.configs.push(entry);
                }
            }
            Err((error, message)) => {
                result.error_code = error.code();
                result.error_message = Some(kstr(message));
            }
        }
        response.results.push(result);
    }
    response
}

/// The broker's settings under Kafka's names; all static (from quiver.toml, env, flags).
/// Whether the client may do `operation` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on a
/// config resource: a topic needs it on the topic, a broker on the cluster.
pub(crate) fn config_access(
    ctx: &Context<'_>,
    resource_type: i8,
    name: &str,
    operation: Operation,
) -> Result<(), (ResponseError, String)> {
    match resource_type {
        RESOURCE_TOPIC if !ctx.topic_allowed(operation, name) => Err((
            ResponseError::TopicAuthorizationFailed,
            format!(
                "not authorized to {} on topic '{name}'",
                operation.name().to_uppercase()
            ),
        )),
        RESOURCE_BROKER if !ctx.cluster_allowed(operation) => Err((
            ResponseError::ClusterAuthorizationFailed,
            format!(
                "not authorized to {} on the cluster",
                operation.name().to_uppercase()
            ),
        )),
        _ => Ok(()),
    }
}

fn broker_entries(config: &Config) -> Vec<Entry> {
    const STRING: i8 = 2;
    const INT: i8 = 3;
    const LONG: i8 = 5;
    const BOOLEAN: i8 = 1;
    let log = &config.log;
    vec![
        (
            "broker.id",
            config.broker.node_id.to_string(),
            INT,
            "this broker's id (broker.node_id)",
        ),
        (
            "log.dirs",
            config.broker.data_dir.display().to_string(),
            STRING,
            "data directory (broker.data_dir)",
        ),
        (
            "auto.create.topics.enable",
            config.kafka.auto_create_topics.to_string(),
            BOOLEAN,
            "create topics named in Metadata requests (kafka.auto_create_topics)",
        ),
        (
            "num.partitions",
            config.kafka.default_partitions.to_string(),
            INT,
            "partitions of auto-created topics (kafka.default_partitions)",
        ),
        (
            "socket.request.max.bytes",
            config.kafka.max_frame_bytes.to_string(),
            INT,
            "largest request frame (kafka.max_frame_bytes)",
        ),
        (
            "max.connections",
            config.kafka.max_connections.to_string(),
            INT,
            "most connections per listener (kafka.max_connections)",
        ),
        (
            "max.connections.per.ip",
            // Kafka's "no limit" is Integer.MAX_VALUE, as it reports it.
            match config.kafka.max_connections_per_ip {
                0 => i32::MAX.to_string(),
                n => n.to_string(),
            },
            INT,
            "most connections per client address (kafka.max_connections_per_ip)",
        ),
        (
            "connections.max.idle.ms",
            config.kafka.connections_max_idle_ms.to_string(),
            LONG,
            "idle connections are closed after this long (kafka.connections_max_idle_ms)",
        ),
        (
            "message.max.bytes",
            log.max_message_bytes.to_string(),
            INT,
            "largest record batch (log.max_message_bytes)",
        ),
        (
            "log.segment.bytes",
            log.segment_bytes.to_string(),
            INT,
            "segment size (log.segment_bytes)",
        ),
        (
            "log.roll.ms",
            log.segment_ms.to_string(),
            LONG,
            "segment age (log.segment_ms)",
        ),
        (
            "log.retention.ms",
            log.retention_ms.to_string(),
            LONG,
            "retention time (log.retention_ms)",
        ),
        (
            "log.retention.bytes",
            log.retention_bytes.to_string(),
            LONG,
            "retention size (log.retention_bytes)",
        ),
        (
            "log.retention.check.interval.ms",
            log.retention_check_interval_ms.to_string(),
            LONG,
            "retention check period (log.retention_check_interval_ms)",
        ),
        (
            "log.flush.interval.ms",
            log.flush_interval_ms.to_string(),
            LONG,
            "fsync period (log.flush_interval_ms)",
        ),
        (
            "log.flush.interval.messages",
            log.flush_interval_messages.to_string(),
            LONG,
            "fsync every N records (log.flush_interval_messages)",
        ),
        (
            "log.message.timestamp.type",
            log.message_timestamp_type.clone(),
            STRING,
            "CreateTime or LogAppendTime (log.message_timestamp_type)",
        ),
        (
            "compression.type",
            log.compression_type.clone(),
            STRING,
            "broker-side compression (log.compression_type)",
        ),
        (
            "log.cleanup.policy",
            log.cleanup_policy.clone(),
            STRING,
            "delete or compact (log.cleanup_policy)",
        ),
    ]
    .into_iter()
    .map(|(key, value, ty, doc)| (key.to_string(), value, Source::Default, ty, doc))
    .collect()
}

/// Refusal for attempts to change broker settings at runtime.
pub(crate) fn static_broker_configs() -> (ResponseError, String) {
    (
        ResponseError::InvalidRequest,
        "broker settings are static: change quiver.toml, QUIVER_* or --set and restart".to_string(),
    )
}
