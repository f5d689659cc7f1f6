//! SaslAuthenticate: one token of the chosen mechanism's exchange. A refused login is
//! answered SASL_AUTHENTICATION_FAILED with the reason, counted, logged, and the
//! connection is closed after the answer.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};

use super::kstr;
use crate::broker::Broker;
use crate::kafka::session::Session;
use crate::tenancy::sasl::{SaslError, SaslStep};

/// Handles one SaslAuthenticate.
pub async fn handle(
    broker: &Broker,
    session: &mut Session,
    request: SaslAuthenticateRequest,
    _version: i16,
) -> SaslAuthenticateResponse {
    let mut response = SaslAuthenticateResponse::default();
    let Some(sasl) = session.sasl.as_mut() else {
        response.error_code = ResponseError::IllegalSaslState.code();
        response.error_message = Some(kstr("no SASL exchange is pending on this connection"));
        session.close_after_response = Some("SaslAuthenticate with no exchange pending".into());
        return response;
    };
    let metadata = broker.metadata();
    let outcome = match sasl.step(&request.auth_bytes, &metadata.users) {
        Ok(SaslStep::CheckPassword(login)) => {
            // PBKDF2 takes milliseconds: keep it off the threads serving requests.
            match tokio::task::spawn_blocking(move || login.verify()).await {
                Ok(Ok(principal)) => Ok((principal, Vec::new())),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(SaslError::Failed {
                    reason: "internal",
                    message: format!("the password check failed: {e}"),
                }),
            }
        }
        Ok(SaslStep::Challenge(challenge)) => {
            response.auth_bytes = Bytes::from(challenge);
            return response;
        }
        Ok(SaslStep::Authenticated { principal, token }) => Ok((principal, token)),
        Err(e) => Err(e),
    };
    let outcome = outcome.and_then(|(principal, token)| {
        session
            .authenticated(principal.clone(), broker)
            .map(|()| (principal, token))
            .map_err(|message| SaslError::Failed {
                reason: "tenant_connections",
                message,
            })
    });
    match outcome {
        Ok((principal, token)) => {
            broker.security().logins.succeeded();
            tracing::debug!(peer = %session.peer, listener = %session.listener.name, %principal, "authenticated");
            response.auth_bytes = Bytes::from(token);
        }
        Err(e) => {
            broker.security().logins.failed(e.reason());
            tracing::warn!(peer = %session.peer, listener = %session.listener.name, reason = %e, "authentication failed");
            response.error_code = match e {
                SaslError::IllegalState(_) => ResponseError::IllegalSaslState.code(),
                _ => ResponseError::SaslAuthenticationFailed.code(),
            };
            response.error_message = Some(kstr(e.to_string()));
            session.close_after_response = Some(e.to_string());
        }
    }
    response
}
