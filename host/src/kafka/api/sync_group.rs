//! SyncGroup (14): the leader hands in the assignment; every member waits for its own
//! (see [`crate::group`]).

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{kstr, Context};
use crate::group::state::SyncRequest;
use crate::tenancy::acl::Operation;
use kafka_protocol::error::ResponseError;

/// Answers a SyncGroup request once the assignment is known.
pub async fn handle(
    ctx: &Context<'_>,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    if !ctx.group_allowed(Operation::Read, request.group_id.0.as_str()) {
        let mut response = SyncGroupResponse::default();
        response.error_code = ResponseError::GroupAuthorizationFailed.code();
        return response;
    }
    let sync = SyncRequest {
        group_id: request.group_id.0.to_string(),
        generation: request.generation_id,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        protocol_type: request.protocol_type.map(|p| p.to_string()),
        protocol_name: request.protocol_name.map(|p| p.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let synced = ctx.broker.groups().sync(sync).await;
    let mut response = SyncGroupResponse::default();
    response.error_code = synced.error.map_or(0, |e| e.code());
    if version >= 5 {
        response.protocol_type = synced.protocol_type.map(kstr);
        response.protocol_name = synced.protocol_name.map(kstr);
    }
    response.assignment = synced.assignment;
    response
}
