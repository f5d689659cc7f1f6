//! InitProducerId (22): hands idempotent producers a producer id and epoch.
//!
//! Ids come from the metadata store, which reserves them durably in blocks, so an id is
//! never handed out twice across restarts. A producer re-initialising with its id gets
//! the next epoch (KIP-360), unless the id is one of the broker's own writers' (from
//! 2^62 on), which no client was given: that is refused with INVALID_REQUEST.
//! Transactional producers are authorized like Kafka's (WRITE on the transactional id)
//! and then refused with UNSUPPORTED_VERSION until transactions exist: an outsider
//! learns nothing more than before, and an owner's client fails fast with an error
//! that is not mistaken for a missing ACL.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Context;
use crate::partition::producer_state::is_internal;
use crate::tenancy::acl::{Operation, ResourceType};

/// Answers an InitProducerId request.
pub async fn handle(
    ctx: &Context<'_>,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if request.transactional_id.is_none() && !idempotence_allowed(ctx) {
        response.error_code = ResponseError::ClusterAuthorizationFailed.code();
        return response;
    }
    if let Some(transactional_id) = &request.transactional_id {
        if !ctx.authorize(
            Operation::Write,
            ResourceType::TransactionalId,
            transactional_id.as_str(),
        ) {
            response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            return response;
        }
        tracing::info!(
            client = ?ctx.header.client_id.as_ref().map(|c| c.as_str()),
            transactional_id = transactional_id.as_str(),
            "refused a transactional producer: transactions are not supported yet"
        );
        response.error_code = ResponseError::UnsupportedVersion.code();
        return response;
    }
    let (existing_id, existing_epoch) = if version >= 3 {
        (request.producer_id.0, request.producer_epoch)
    } else {
        (-1, -1)
    };
    if is_internal(existing_id) {
        // Such an id was never handed out: bumping its epoch would let the client fence
        // a transform's writer. INVALID_REQUEST as for a produce carrying one (see
        // produce.rs); this response has no message field, so the reason is logged.
        tracing::info!(
            client = ?ctx.header.client_id.as_ref().map(|c| c.as_str()),
            producer_id = existing_id,
            "refused InitProducerId: the producer id is reserved for the broker's own writers"
        );
        response.error_code = ResponseError::InvalidRequest.code();
        return response;
    }
    if existing_id >= 0 && (0..i16::MAX - 1).contains(&existing_epoch) {
        response.producer_id = ProducerId(existing_id);
        response.producer_epoch = existing_epoch + 1;
        return response;
    }
    match ctx.broker.allocate_producer_id().await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "could not allocate a producer id");
            response.error_code = ResponseError::CoordinatorNotAvailable.code();
        }
    }
    response
}

/// Kafka's rule since 2.8 (KIP-679): an idempotent producer needs IDEMPOTENT_WRITE on
/// the cluster, or WRITE on any topic.
fn idempotence_allowed(ctx: &Context<'_>) -> bool {
    if ctx.cluster_allowed(Operation::IdempotentWrite) {
        return true;
    }
    let security = ctx.broker.security();
    security.authorize_any(
        &ctx.broker.metadata(),
        &ctx.session.principal,
        ctx.peer.ip(),
        Operation::Write,
        ResourceType::Topic,
    )
}
