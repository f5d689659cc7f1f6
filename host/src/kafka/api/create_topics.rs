//! CreateTopics (19): creates topics with partition counts and config overrides, or
//! only validates the request (`validate_only`).

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{kstr, Context};
use crate::broker::{Replicas, TopicError};
use crate::config::topic;
use crate::controller::placement::AssignmentError;
use crate::tenancy::acl::Operation;
use crate::tenancy::quota::QuotaType;
use crate::tenancy::tenant;

/// Answers a CreateTopics request.
pub async fn handle(
    ctx: &Context<'_>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let broker = ctx.broker;
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
        } else if version >= 6 && ctx.quota(QuotaType::ControllerMutations, 0.0, false) > 0 {
            Err((
                ResponseError::ThrottlingQuotaExceeded,
                "controller_mutation_rate exceeded; retry after throttle_time_ms".to_string(),
            ))
        } else if let Some(message) = outside_namespace(ctx, &name) {
            Err((ResponseError::TopicAuthorizationFailed, message))
        } else if !ctx.cluster_allowed(Operation::Create)
            && !ctx.topic_allowed(Operation::Create, &name)
        {
            Err((
                ResponseError::TopicAuthorizationFailed,
                format!("not authorized to CREATE topic '{name}'"),
            ))
        } else {
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
            match replicas(&wanted) {
                Ok(replicas) => broker
                    .create_topic_with(&name, replicas, configs, request.validate_only)
                    .await
                    .map_err(|e: TopicError| (e.code(), e.to_string())),
                Err(refused) => Err(refused),
            }
        };
        if let Ok(meta) = &outcome {
            if !request.validate_only {
                ctx.quota(
                    QuotaType::ControllerMutations,
                    f64::from(meta.partitions),
                    true,
                );
            }
        }
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
    if version >= 2 {
        response.throttle_time_ms = ctx.session.throttle_time_ms();
    }
    response
}

/// The replicas a topic asks for: a count and a replication factor, or, as Kafka's
/// `--replica-assignment`, a broker list per partition (numbered 0.. once each), in
/// which case the count and factor must be -1.
/// A tenant's principal creates topics only under the tenant's prefix; says why not.
fn outside_namespace(ctx: &Context<'_>, name: &str) -> Option<String> {
    let metadata = ctx.broker.metadata();
    let tenant = tenant::of_principal(&metadata.tenants, &ctx.session.principal)?;
    (!tenant.owns(name)).then(|| {
        format!(
            "{} acts for tenant {}, whose topics are named '{}…'; '{name}' is outside it",
            ctx.session.principal, tenant.name, tenant.prefix
        )
    })
}

fn replicas(wanted: &CreatableTopic) -> Result<Replicas, (ResponseError, String)> {
    if wanted.assignments.is_empty() {
        return Ok(Replicas::Placed {
            partitions: wanted.num_partitions,
            replication_factor: wanted.replication_factor,
        });
    }
    if wanted.num_partitions != -1 || wanted.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "with replica assignments, the partition count and replication factor must be -1 \
             (they follow from the assignments)"
                .to_string(),
        ));
    }
    let mut lists: Vec<(i32, Vec<i32>)> = wanted
        .assignments
        .iter()
        .map(|a| {
            (
                a.partition_index,
                a.broker_ids.iter().map(|b| b.0).collect(),
            )
        })
        .collect();
    lists.sort_by_key(|(p, _)| *p);
    if lists.iter().enumerate().any(|(i, (p, _))| *p != i as i32) {
        let found: Vec<String> = lists.iter().map(|(p, _)| p.to_string()).collect();
        let error = TopicError::from(AssignmentError::Numbering {
            first: 0,
            end: lists.len() as i32,
            found: found.join(","),
        });
        return Err((error.code(), error.to_string()));
    }
    Ok(Replicas::Assigned(
        lists.into_iter().map(|(_, brokers)| brokers).collect(),
    ))
}
