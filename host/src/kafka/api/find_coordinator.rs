//! FindCoordinator (10): this broker coordinates every group, and answers transaction
//! keys too (see [`crate::group`] for why). v4 batches keys in `coordinator_keys`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{kstr, Context};

/// Key types Kafka defines: 0 group, 1 transaction.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

/// Answers a FindCoordinator request.
pub fn handle(
    ctx: &Context<'_>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let config = ctx.broker.config();
    let node = config.broker.node_id;
    let (host, port) = config.kafka.advertised();
    let loaded = ctx.broker.groups().partition_count() > 0;
    let verdict = |key_type: i8| -> Option<ResponseError> {
        match key_type {
            KEY_GROUP if !loaded => Some(ResponseError::CoordinatorNotAvailable),
            KEY_GROUP | KEY_TRANSACTION => None,
            _ => Some(ResponseError::InvalidRequest),
        }
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                match verdict(request.key_type) {
                    None => {
                        c.node_id = BrokerId(node);
                        c.host = kstr(host.clone());
                        c.port = port as i32;
                    }
                    Some(error) => {
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_code = error.code();
                        c.error_message = Some(StrBytes::from_static_str(message(error)));
                    }
                }
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
    match verdict(key_type) {
        None => {
            response.node_id = BrokerId(node);
            response.host = kstr(host);
            response.port = port as i32;
            if version >= 1 {
                response.error_message = None;
            }
        }
        Some(error) => {
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
        _ => "unknown coordinator key type",
    }
}
