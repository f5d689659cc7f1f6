//! ApiVersions (18): the API ranges this broker speaks.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::Context;
use crate::kafka::versions;

/// Answers with every advertised API range.
pub fn handle(
    _ctx: &Context<'_>,
    _request: ApiVersionsRequest,
    _version: i16,
) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = api_keys();
    response
}

/// The v0 answer to an ApiVersions version this broker does not know: the error plus
/// the ranges, so the client can retry with one it does.
pub fn unsupported() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = ResponseError::UnsupportedVersion.code();
    response.api_keys = api_keys();
    response
}

fn api_keys() -> Vec<ApiVersion> {
    versions::advertised()
        .map(|(api, range)| {
            let mut v = ApiVersion::default();
            v.api_key = api as i16;
            v.min_version = range.min;
            v.max_version = range.max;
            v
        })
        .collect()
}
