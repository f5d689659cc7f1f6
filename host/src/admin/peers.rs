//! Questions one broker's admin API asks another over the cluster endpoint, so that any
//! broker answers for the whole cluster about what only one broker holds: a consumer
//! group lives on its coordinator alone.
//!
//! The question travels on the cluster transport's `admin` channel, between brokers
//! that proved their identity to each other with the cluster's certificates; the
//! operator's own credentials and ACLs were checked by the broker asked over HTTP, so
//! the peer answers any question it is sent (they are all reads). Questions and answers
//! are JSON: an answer is the value the peer's own route would have sent, or the error
//! (status, code, message) it would have sent, passed on unchanged.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{groups, AdminState, ApiError};
use crate::net::{BrokerId, Channel, Endpoint};

/// How long a peer may take to answer. Its answer is built from memory, so this is
/// mostly the time to notice that the peer is gone.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A question for a peer's admin room.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub(super) enum Question {
    /// The groups it coordinates (`GET /v1/groups`, its own part).
    Groups,
    /// One group it coordinates (`GET /v1/groups/{group}`).
    Group {
        /// The group id.
        group: String,
    },
}

/// What crosses the wire back: the route's value, or its error.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(Value),
    Error {
        status: u16,
        code: String,
        message: String,
    },
}

/// This broker's way to its peers: the cluster endpoint.
#[derive(Clone)]
pub struct Peers(pub Endpoint);

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peers")
    }
}

/// Why a peer gave no answer of its own.
#[derive(Debug, thiserror::Error)]
pub(super) enum PeerError {
    /// The metadata has no live broker of that id.
    #[error("broker {0} is not registered, or is fenced")]
    Unknown(BrokerId),
    /// The call failed: unreachable, timed out, or an answer that does not parse.
    #[error("broker {broker} did not answer: {reason}")]
    Unreachable {
        /// The broker.
        broker: BrokerId,
        /// What happened.
        reason: String,
    },
    /// The peer answered with an error, as its own route would have.
    #[error("{}", .0.message)]
    Refused(ApiError),
}

impl From<PeerError> for ApiError {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::Refused(api) => api,
            other => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                other.to_string(),
            ),
        }
    }
}

impl Peers {
    /// Asks broker `peer` `question`.
    pub(super) async fn ask(
        &self,
        state: &AdminState,
        peer: BrokerId,
        question: &Question,
    ) -> Result<Value, PeerError> {
        let addr = state
            .broker
            .metadata()
            .brokers
            .get(&peer)
            .filter(|b| !b.fenced)
            .map(|b| b.cluster_addr)
            .ok_or(PeerError::Unknown(peer))?;
        let unreachable = |reason: String| PeerError::Unreachable {
            broker: peer,
            reason,
        };
        let request = serde_json::to_vec(question).expect("a question serializes");
        let bytes = self
            .0
            .call(peer, addr, Channel::Admin, request.into(), ASK_TIMEOUT)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        match serde_json::from_slice(&bytes).map_err(|e| unreachable(e.to_string()))? {
            Answer::Ok(value) => Ok(value),
            Answer::Error {
                status,
                code,
                message,
            } => Err(PeerError::Refused(ApiError {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                code: known_code(&code),
                message,
            })),
        }
    }
}

/// The codes a peer's group routes can answer with, as the static strings
/// [`ApiError`] carries; anything else (a newer peer's) is passed on as a generic one.
fn known_code(code: &str) -> &'static str {
    [
        "unknown_group",
        "not_coordinator",
        "coordinator_loading",
        "bad_request",
    ]
    .into_iter()
    .find(|known| *known == code)
    .unwrap_or("peer_error")
}

/// Answers a question from broker `peer` (called by the cluster endpoint's service).
pub async fn answer(state: AdminState, peer: BrokerId, request: Bytes) -> Result<Bytes, String> {
    let question: Question = serde_json::from_slice(&request)
        .map_err(|e| format!("an admin question from broker {peer} does not parse: {e}"))?;
    let answer = match question {
        Question::Groups => groups::local_list(&state),
        Question::Group { group } => groups::local_describe(&state, &group),
    };
    let answer = match answer {
        Ok(value) => Answer::Ok(value),
        Err(e) => Answer::Error {
            status: e.status.as_u16(),
            code: e.code.to_string(),
            message: e.message,
        },
    };
    Ok(serde_json::to_vec(&answer)
        .expect("an answer serializes")
        .into())
}
