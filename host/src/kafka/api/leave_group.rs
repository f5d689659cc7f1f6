//! LeaveGroup (13): members leave (v3+: several at once, by member or instance id) and
//! the group rebalances at once instead of waiting for their sessions to lapse.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::Context;
use crate::group::state::Leaving;
use crate::tenancy::acl::Operation;
use kafka_protocol::error::ResponseError;

/// Answers a LeaveGroup request.
pub fn handle(ctx: &Context<'_>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let leaving: Vec<Leaving> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| Leaving {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            })
            .collect()
    } else {
        vec![Leaving {
            member_id: request.member_id.to_string(),
            instance_id: None,
        }]
    };
    let mut response = LeaveGroupResponse::default();
    if !ctx.group_allowed(Operation::Read, request.group_id.0.as_str()) {
        response.error_code = ResponseError::GroupAuthorizationFailed.code();
        return response;
    }
    match ctx
        .broker
        .groups()
        .leave(request.group_id.0.as_str(), &leaving)
    {
        Err(error) => response.error_code = error.code(),
        Ok(results) if version >= 3 => {
            response.members = request
                .members
                .into_iter()
                .zip(results)
                .map(|(m, error)| {
                    let mut out = MemberResponse::default();
                    out.member_id = m.member_id;
                    out.group_instance_id = m.group_instance_id;
                    out.error_code = error.map_or(0, |e| e.code());
                    out
                })
                .collect();
        }
        Ok(results) => {
            response.error_code = results.first().copied().flatten().map_or(0, |e| e.code());
        }
    }
    response
}
