//! CreatePartitions (37): grows topics' partition counts, placing the new partitions'
//! replicas or taking them from the request's assignments.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{kstr, Context};
use crate::tenancy::acl::Operation;
use crate::tenancy::quota::QuotaType;
use kafka_protocol::error::ResponseError;

/// Answers a CreatePartitions request.
pub async fn handle(
    ctx: &Context<'_>,
    request: CreatePartitionsRequest,
    version: i16,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for wanted in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = wanted.name.clone();
        let before = ctx
            .broker
            .topic(wanted.name.0.as_str())
            .map(|t| t.meta.partitions);
        if !ctx.topic_allowed(Operation::Alter, wanted.name.0.as_str()) {
            result.error_code = ResponseError::TopicAuthorizationFailed.code();
            result.error_message = Some(kstr(format!(
                "not authorized to ALTER topic '{}'",
                wanted.name.0.as_str()
            )));
        } else if version >= 3 && ctx.quota(QuotaType::ControllerMutations, 0.0, false) > 0 {
            // KIP-599: new partitions count against controller_mutation_rate.
            result.error_code = ResponseError::ThrottlingQuotaExceeded.code();
            result.error_message = Some(kstr(
                "controller_mutation_rate exceeded; retry after throttle_time_ms",
            ));
        } else if let Err(e) = ctx
            .broker
            .create_partitions(
                wanted.name.0.as_str(),
                wanted.count,
                wanted.assignments.as_ref().map(|lists| {
                    lists
                        .iter()
                        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                        .collect()
                }),
                request.validate_only,
            )
            .await
        {
            result.error_code = e.code().code();
            result.error_message = Some(kstr(e.to_string()));
        } else if !request.validate_only {
            let added = wanted.count - before.unwrap_or(wanted.count);
            ctx.quota(
                QuotaType::ControllerMutations,
                f64::from(added.max(0)),
                true,
            );
        }
        response.results.push(result);
    }
    response.throttle_time_ms = ctx.session.throttle_time_ms();
    response
}
