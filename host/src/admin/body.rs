//! The extractors every handler takes its request body and typed query through, so a
//! request axum cannot take apart is answered like every other mistake: a JSON
//! [`ApiError`], not axum's plain-text rejection.
//!
//! - a body over `admin.max_body_bytes`: 413 `payload_too_large`;
//! - a JSON body without `Content-Type: application/json`: 415 `unsupported_media_type`;
//! - anything else (not JSON, a field unknown, missing or of the wrong type, a query
//!   string that does not parse): 400 `bad_request`.
//!
//! The message is axum's own text for the rejection (it names the field and what was
//! wrong), except for a body over the limit, whose message names the limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use super::{AdminState, ApiError};

/// A JSON request body (`Content-Type: application/json`) deserialised into `T`.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

/// A query string deserialised into `T`.
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub(crate) T);

/// A request body as it came (a plugin's component, a raw record's value).
#[derive(Debug)]
pub(crate) struct RawBody(pub(crate) Bytes);

/// The answer for one of axum's rejections: its status says which kind it is.
fn rejected(state: &AdminState, status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            format!(
                "the request body is larger than this broker's admin.max_body_bytes ({} bytes)",
                state.broker.config().admin.max_body_bytes
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            format!("{text}; send the body with `Content-Type: application/json`"),
        ),
        _ => ApiError::bad_request(text),
    }
}

impl<T: DeserializeOwned> FromRequest<AdminState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AdminState) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(e) => Err(rejected(state, e.status(), e.body_text())),
        }
    }
}

impl<T: DeserializeOwned> FromRequestParts<AdminState> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(e) => Err(rejected(state, e.status(), e.body_text())),
        }
    }
}

impl FromRequest<AdminState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AdminState) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(e) => Err(rejected(state, e.status(), e.body_text())),
        }
    }
}
