//! JoinGroup (11): parks until the group's rebalance completes (see [`crate::group`]).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{client_host, client_id, kstr, Context};
use crate::group::state::JoinRequest;
use crate::tenancy::acl::Operation;
use kafka_protocol::error::ResponseError;

/// Answers a JoinGroup request once the coordinator has decided.
pub async fn handle(
    ctx: &Context<'_>,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    if !ctx.group_allowed(Operation::Read, request.group_id.0.as_str()) {
        let mut response = JoinGroupResponse::default();
        response.error_code = ResponseError::GroupAuthorizationFailed.code();
        response.generation_id = -1;
        response.member_id = request.member_id;
        // Before v7 the protocol name is not nullable.
        response.protocol_name = (version < 7).then(|| kstr(""));
        return response;
    }
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        client_id: client_id(ctx),
        client_host: client_host(ctx),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout; Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let joined = ctx.broker.groups().join(join).await;
    let mut response = JoinGroupResponse::default();
    response.error_code = joined.error.map_or(0, |e| e.code());
    response.generation_id = joined.generation;
    if version >= 7 {
        response.protocol_type = joined.protocol_type.map(kstr);
    }
    response.protocol_name = match (joined.protocol_name, version >= 7) {
        (Some(name), _) => Some(kstr(name)),
        (None, true) => None,
        // Before v7 the field is not nullable.
        (None, false) => Some(kstr("")),
    };
    response.leader = kstr(joined.leader);
    if version >= 9 {
        response.skip_assignment = joined.skip_assignment;
    }
    response.member_id = kstr(joined.member_id);
    response.members = joined
        .members
        .into_iter()
        .map(|m| {
            let mut out = JoinGroupResponseMember::default();
            out.member_id = kstr(m.member_id);
            if version >= 5 {
                out.group_instance_id = m.instance_id.map(kstr);
            }
            out.metadata = m.metadata;
            out
        })
        .collect();
    response
}
