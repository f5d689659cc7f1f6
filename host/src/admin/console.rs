//! The web console at `/`: a page and its script and style, embedded in the binary
//! (no CDN, nothing to install), that draws everything from the admin API's own JSON —
//! the same answers `quiver` and scripts get — and its charts from `/v1/history`.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiError;

const INDEX: &str = include_str!("console/index.html");
const APP: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/style.css");

/// `GET /`: the console's page.
pub(super) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /console/{asset}`: its script and style.
pub(super) async fn asset(Path(asset): Path<String>) -> Result<Response, ApiError> {
    match asset.as_str() {
        "app.js" => Ok(page("text/javascript; charset=utf-8", APP)),
        "style.css" => Ok(page("text/css; charset=utf-8", STYLE)),
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the console has no asset '{other}'"),
        )),
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            // The assets change only with the binary; a restart may bring new ones.
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
