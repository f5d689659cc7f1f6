//! ListGroups (16): every group this coordinator owns; v4 filters by state.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{kstr, Context};
use crate::tenancy::acl::{Operation, ResourceType};

/// Answers a ListGroups request.
pub fn handle(ctx: &Context<'_>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let mut response = ListGroupsResponse::default();
    let groups = match ctx.broker.groups().list() {
        Ok(groups) => groups,
        Err(error) => {
            response.error_code = error.code();
            return response;
        }
    };
    let filter: Vec<String> = if version >= 4 {
        request
            .states_filter
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect()
    } else {
        Vec::new()
    };
    // Kafka's rule: DESCRIBE on the cluster lists every group; otherwise only the
    // groups the client may DESCRIBE, so no group name leaks to another tenant.
    let all = ctx.cluster_allowed(Operation::Describe);
    let metadata = ctx.broker.metadata();
    response.groups = groups
        .into_iter()
        .filter(|(_, _, state)| {
            filter.is_empty() || filter.contains(&state.name().to_ascii_lowercase())
        })
        .filter(|(id, _, _)| {
            all || ctx.authorize_in(&metadata, Operation::Describe, ResourceType::Group, id)
        })
        .map(|(id, protocol_type, state)| {
            let mut out = ListedGroup::default();
            out.group_id = GroupId(kstr(id));
            out.protocol_type = kstr(protocol_type);
            if version >= 4 {
                out.group_state = kstr(state.name());
            }
            out
        })
        .collect();
    response
}
