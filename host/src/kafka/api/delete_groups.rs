//! DeleteGroups (42): removes empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Context;
use crate::tenancy::acl::Operation;
use kafka_protocol::error::ResponseError;

/// Answers a DeleteGroups request.
pub fn handle(
    ctx: &Context<'_>,
    request: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    response.results = request
        .groups_names
        .into_iter()
        .map(|id| {
            let mut out = DeletableGroupResult::default();
            if !ctx.group_allowed(Operation::Delete, id.0.as_str()) {
                out.error_code = ResponseError::GroupAuthorizationFailed.code();
            } else if let Err(error) = ctx.broker.groups().delete_group(id.0.as_str()) {
                out.error_code = error.code();
            }
            out.group_id = id;
            out
        })
        .collect();
    response
}
