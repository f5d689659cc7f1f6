//! Heartbeat (12): keeps a member's session alive and tells it about rebalances.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::Context;
use crate::tenancy::acl::Operation;
use kafka_protocol::error::ResponseError;

/// Answers a Heartbeat request.
pub fn handle(ctx: &Context<'_>, request: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    if !ctx.group_allowed(Operation::Read, request.group_id.0.as_str()) {
        let mut response = HeartbeatResponse::default();
        response.error_code = ResponseError::GroupAuthorizationFailed.code();
        return response;
    }
    let error = ctx.broker.groups().heartbeat(
        request.group_id.0.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(|i| i.as_str()),
    );
    let mut response = HeartbeatResponse::default();
    response.error_code = error.map_or(0, |e| e.code());
    response
}
