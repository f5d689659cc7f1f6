//! SaslHandshake: the client names the SASL mechanism it will use. A mechanism this
//! listener does not offer is refused with the list of those it does, and the
//! connection is closed after the answer, as Kafka does.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use super::kstr;
use crate::broker::Broker;
use crate::kafka::session::Session;

/// Handles one SaslHandshake.
pub fn handle(
    broker: &Broker,
    session: &mut Session,
    request: SaslHandshakeRequest,
    _version: i16,
) -> SaslHandshakeResponse {
    let mut response = SaslHandshakeResponse::default();
    let Some(sasl) = session.sasl.as_mut() else {
        // Not a SASL listener, or already authenticated.
        response.error_code = ResponseError::IllegalSaslState.code();
        session.close_after_response = Some(format!(
            "SaslHandshake on listener {} where no SASL exchange is pending",
            session.listener.name
        ));
        return response;
    };
    response.mechanisms = sasl.enabled_names().into_iter().map(kstr).collect();
    if let Err(e) = sasl.handshake(request.mechanism.as_str()) {
        broker.security().logins.failed(e.reason());
        tracing::warn!(peer = %session.peer, listener = %session.listener.name, reason = %e, "authentication failed");
        response.error_code = match e {
            crate::tenancy::sasl::SaslError::UnsupportedMechanism { .. } => {
                ResponseError::UnsupportedSaslMechanism.code()
            }
            _ => ResponseError::IllegalSaslState.code(),
        };
        session.close_after_response = Some(e.to_string());
    }
    response
}
