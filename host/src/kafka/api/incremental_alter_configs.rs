//! IncrementalAlterConfigs (44): sets, deletes, appends to or subtracts from individual
//! topic configs, leaving the others as they are.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::describe_configs::{
    config_access, static_broker_configs, RESOURCE_BROKER, RESOURCE_TOPIC,
};
use super::{kstr, Context};
use crate::config::topic;
use crate::tenancy::acl::Operation;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// Answers an IncrementalAlterConfigs request.
pub async fn handle(
    ctx: &Context<'_>,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let broker = ctx.broker;
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let mut result = AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.as_str();
        let access = config_access(ctx, resource.resource_type, name, Operation::AlterConfigs);
        let outcome = match resource.resource_type {
            _ if access.is_err() => access,
            RESOURCE_TOPIC => match broker.topic(name) {
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                )),
                Some(t) => {
                    let mut configs = t.meta.configs.clone();
                    let effective = topic::effective(&broker.config().log, &configs);
                    let mut applied = Ok(());
                    for op in &resource.configs {
                        let key = op.name.as_str().to_string();
                        let value = op.value.as_ref().map(|v| v.as_str().to_string());
                        let current = || {
                            configs.get(&key).cloned().or_else(|| {
                                effective
                                    .iter()
                                    .find(|(n, ..)| *n == key)
                                    .map(|(_, v, _)| v.clone())
                            })
                        };
                        match (op.config_operation, value) {
                            (SET, Some(v)) => {
                                configs.insert(key, v);
                            }
                            (DELETE, _) => {
                                configs.remove(&key);
                            }
                            (APPEND, Some(v)) => {
                                let mut items: Vec<String> = current()
                                    .map(|c| {
                                        c.split(',')
                                            .map(|s| s.trim().to_string())
                                            .filter(|s| !s.is_empty())
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                for item in v.split(',').map(str::trim) {
                                    if !items.iter().any(|i| i == item) {
                                        items.push(item.to_string());
                                    }
                                }
                                configs.insert(key, items.join(","));
                            }
                            (SUBTRACT, Some(v)) => {
                                let remove: Vec<&str> = v.split(',').map(str::trim).collect();
                                let items: Vec<String> = current()
                                    .map(|c| {
                                        c.split(',')
                                            .map(|s| s.trim().to_string())
                                            .filter(|s| !remove.contains(&s.as_str()))
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                configs.insert(key, items.join(","));
                            }
                            (op, _) => {
                                applied = Err((ResponseError::InvalidRequest, format!("operation {op} on `{key}` needs a known operation and a value")));
                                break;
                            }
                        }
                    }
                    match applied {
                        Ok(()) => broker
                            .set_topic_configs(name, configs, request.validate_only)
                            .await
                            .map_err(|e| (e.code(), e.to_string())),
                        Err(e) => Err(e),
                    }
                }
            },
            RESOURCE_BROKER => Err(static_broker_configs()),
            other => Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        };
        if let Err((error, message)) = outcome {
            result.error_code = error.code();
            result.error_message = Some(kstr(message));
        }
        response.responses.push(result);
    }
    response
}
