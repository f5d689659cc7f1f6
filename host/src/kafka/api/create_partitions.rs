//! CreatePartitions (37): grows topics' partition counts, placing the new partitions'
//! replicas or taking them from the request's assignments.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{kstr, Context};
use crate::tenancy::acl::Operation;
use kafka_protocol::error::ResponseError;

/// Answers a CreatePartitions request.
pub async fn handle(
    ctx: &Context<'_>,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for wanted in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = wanted.name.clone();
        if !ctx.topic_allowed(Operation::Alter, wanted.name.0.as_str()) {
            result.error_code = ResponseError::TopicAuthorizationFailed.code();
            result.error_message = Some(kstr(format!(
                "not authorized to ALTER topic '{}'",
                wanted.name.0.as_str()
            )));
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
        }
        response.results.push(result);
    }
    response
}
