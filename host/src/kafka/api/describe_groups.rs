//! DescribeGroups (15): state, protocol and members (with metadata and assignment) of
//! each group. An unknown group is described as `Dead` without an error, as Kafka does
//! before v6.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{kstr, Context};
use crate::tenancy::acl::Operation;

/// Answers a DescribeGroups request.
pub fn handle(
    ctx: &Context<'_>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    response.groups = request
        .groups
        .into_iter()
        .map(|id| {
            let mut out = DescribedGroup::default();
            out.group_state = kstr("Dead");
            match ctx.broker.groups().describe(id.0.as_str()) {
                _ if id.0.is_empty() => out.error_code = ResponseError::InvalidGroupId.code(),
                _ if !ctx.group_allowed(Operation::Describe, id.0.as_str()) => {
                    out.error_code = ResponseError::GroupAuthorizationFailed.code()
                }
                Err(error) => out.error_code = error.code(),
                Ok(None) => {}
                Ok(Some(group)) => {
                    out.group_state = kstr(group.state.name());
                    out.protocol_type = kstr(group.protocol_type);
                    out.protocol_data = kstr(group.protocol);
                    out.members = group
                        .members
                        .into_iter()
                        .map(|m| {
                            let mut member = DescribedGroupMember::default();
                            member.member_id = kstr(m.member_id);
                            if version >= 4 {
                                member.group_instance_id = m.instance_id.map(kstr);
                            }
                            member.client_id = kstr(m.client_id);
                            member.client_host = kstr(m.client_host);
                            member.member_metadata = m.metadata;
                            member.member_assignment = m.assignment;
                            member
                        })
                        .collect();
                }
            }
            out.group_id = id;
            out
        })
        .collect();
    response
}
