//! FindCoordinator (10): a group's coordinator is the leader of the `__consumer_offsets`
//! partition the group hashes to; transaction keys are answered the same way (see
//! [`crate::group`]). v4 batches keys in `coordinator_keys`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{kstr, Context};
use crate::group::{coordinator_of, OFFSETS_TOPIC};
use crate::tenancy::acl::{Operation, ResourceType};

/// Key types Kafka defines: 0 group, 1 transaction.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

/// Answers a FindCoordinator request: a group's coordinator is the leader of its
/// `__consumer_offsets` partition (created here on first use).
pub async fn handle(
    ctx: &Context<'_>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let broker = ctx.broker;
    if let Err(e) = broker.ensure_offsets_topic().await {
        tracing::debug!(error = %e, "{OFFSETS_TOPIC} cannot be created yet");
    }
    let state = broker.metadata();
    let me = broker.config().broker.node_id;
    let loaded = broker.groups().partition_count() > 0;
    let coordinator = |key_type: i8, key: &str| -> Result<(i32, String, u16), ResponseError> {
        if key_type != KEY_GROUP && key_type != KEY_TRANSACTION {
            return Err(ResponseError::InvalidRequest);
        }
        if key_type == KEY_GROUP
            && !ctx.authorize_in(&state, Operation::Describe, ResourceType::Group, key)
        {
            return Err(ResponseError::GroupAuthorizationFailed);
        }
        if key_type == KEY_TRANSACTION
            && !ctx.authorize_in(
                &state,
                Operation::Describe,
                ResourceType::TransactionalId,
                key,
            )
        {
            return Err(ResponseError::TransactionalIdAuthorizationFailed);
        }
        let leader = coordinator_of(&state, key).ok_or(ResponseError::CoordinatorNotAvailable)?;
        if leader == me && !loaded {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let node = state
            .brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let (host, port) = node.endpoint(&ctx.session.listener.name);
        Ok((leader, host.to_string(), port))
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                match coordinator(request.key_type, key.as_str()) {
                    Ok((node, host, port)) => {
                        c.node_id = BrokerId(node);
                        c.host = kstr(host);
                        c.port = port as i32;
                    }
                    Err(error) => {
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_code = error.code();
                        c.error_message = Some(StrBytes::from_static_str(message(error)));
                    }
                }
                c.key = key;
                c
            })
            .collect();
        return response;
    }
    let key_type = if version >= 1 {
        request.key_type
    } else {
        KEY_GROUP
    };
    match coordinator(key_type, request.key.as_str()) {
        Ok((node, host, port)) => {
            response.node_id = BrokerId(node);
            response.host = kstr(host);
            response.port = port as i32;
            if version >= 1 {
                response.error_message = None;
            }
        }
        Err(error) => {
            response.error_code = error.code();
            response.node_id = BrokerId(-1);
            response.port = -1;
            if version >= 1 {
                response.error_message = Some(StrBytes::from_static_str(message(error)));
            }
        }
    }
    response
}

fn message(error: ResponseError) -> &'static str {
    match error {
        ResponseError::CoordinatorNotAvailable => "the group coordinator is still loading",
        ResponseError::GroupAuthorizationFailed => "not authorized to DESCRIBE this group",
        ResponseError::TransactionalIdAuthorizationFailed => {
            "not authorized to DESCRIBE this transactional id"
        }
        _ => "unknown coordinator key type",
    }
}
