//! AlterConfigs (33): replaces a topic's whole set of config overrides.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::describe_configs::{
    config_access, static_broker_configs, RESOURCE_BROKER, RESOURCE_TOPIC,
};
use super::{kstr, Context};
use crate::tenancy::acl::Operation;

/// Answers an AlterConfigs request. Configs left out of the request return to their
/// defaults, as in Kafka.
pub async fn handle(
    ctx: &Context<'_>,
    request: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let mut result = AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let access = config_access(
            ctx,
            resource.resource_type,
            resource.resource_name.as_str(),
            Operation::AlterConfigs,
        );
        let outcome = match resource.resource_type {
            _ if access.is_err() => access,
            RESOURCE_TOPIC => {
                let configs: BTreeMap<String, String> = resource
                    .configs
                    .iter()
                    .filter_map(|c| {
                        Some((
                            c.name.as_str().to_string(),
                            c.value.as_ref()?.as_str().to_string(),
                        ))
                    })
                    .collect();
                ctx.broker
                    .set_topic_configs(
                        resource.resource_name.as_str(),
                        configs,
                        request.validate_only,
                    )
                    .await
                    .map_err(|e| (e.code(), e.to_string()))
            }
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
