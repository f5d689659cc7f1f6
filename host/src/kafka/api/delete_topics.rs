//! DeleteTopics (20): removes topics and their data, by name or (v6) by id.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::{kstr, Context};
use crate::tenancy::acl::Operation;
use crate::tenancy::quota::QuotaType;

/// Answers a DeleteTopics request.
pub async fn handle(
    ctx: &Context<'_>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let broker = ctx.broker;
    let mut response = DeleteTopicsResponse::default();
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.0.as_str().to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(request.topics.iter().map(|t| {
        (
            t.name.as_ref().map(|n| n.0.as_str().to_string()),
            t.topic_id,
        )
    }));
    for (name, id) in targets {
        let mut result = DeletableTopicResult::default();
        let resolved = match (&name, id.is_nil()) {
            (Some(name), _) => Ok(name.clone()),
            (None, false) => broker.topic_by_id(id).map(|t| t.meta.name.clone()).ok_or((
                ResponseError::UnknownTopicId,
                format!("no topic has id {id}"),
            )),
            (None, true) => Err((
                ResponseError::InvalidRequest,
                "neither a name nor an id was given".to_string(),
            )),
        };
        let outcome = match resolved {
            // KIP-599: deleting partitions counts against controller_mutation_rate.
            Ok(_) if version >= 5 && ctx.quota(QuotaType::ControllerMutations, 0.0, false) > 0 => {
                Err((
                    ResponseError::ThrottlingQuotaExceeded,
                    "controller_mutation_rate exceeded; retry after throttle_time_ms".to_string(),
                ))
            }
            Ok(name) if !ctx.topic_allowed(Operation::Delete, &name) => Err((
                ResponseError::TopicAuthorizationFailed,
                format!("not authorized to DELETE topic '{name}'"),
            )),
            Ok(name) => broker
                .delete_topic(&name)
                .await
                .map_err(|e| (e.code(), e.to_string())),
            Err(e) => Err(e),
        };
        if let Ok(meta) = &outcome {
            ctx.quota(
                QuotaType::ControllerMutations,
                f64::from(meta.partitions),
                true,
            );
        }
        match outcome {
            Ok(meta) => {
                result.name = Some(TopicName(kstr(meta.name)));
                if version >= 6 {
                    result.topic_id = meta.id;
                }
            }
            Err((error, message)) => {
                result.name = name.map(|n| TopicName(kstr(n)));
                if version >= 6 {
                    result.topic_id = id;
                }
                result.error_code = error.code();
                if version >= 5 {
                    result.error_message = Some(kstr(message));
                }
            }
        }
        response.responses.push(result);
    }
    response.throttle_time_ms = ctx.session.throttle_time_ms();
    response
}
