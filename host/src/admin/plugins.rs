//! `/v1/plugins`: deploy, list, describe, logs, rollback, remove.
//!
//! A deploy is `PUT /v1/plugins/{name}?kind=partitioner&config=k%3Dv&…` with the
//! component as the body (or `native=<file>` and an empty body for a native library).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{blocking, AdminState, ApiError};
use crate::plugin::{Code, DeployRequest, Kind, LimitOverrides, PluginError};

fn plugin_error(e: PluginError) -> ApiError {
    let (status, code) = match &e {
        PluginError::Unknown(_) => (StatusCode::NOT_FOUND, "unknown_plugin"),
        PluginError::InUse { .. } => (StatusCode::CONFLICT, "plugin_in_use"),
        PluginError::NoPreviousVersion(_) => (StatusCode::CONFLICT, "no_previous_version"),
        PluginError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
        PluginError::UnsupportedKind(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_kind"),
        PluginError::NotAComponent(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_a_component"),
        PluginError::ApiVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_api_version"),
        PluginError::Link(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsatisfied_import"),
        PluginError::WrongKind(_) => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_kind"),
        PluginError::Init(_) => (StatusCode::UNPROCESSABLE_ENTITY, "init_failed"),
        PluginError::Native(_) => (StatusCode::UNPROCESSABLE_ENTITY, "native_load_failed"),
        PluginError::NativeNotAllowed(_) => (StatusCode::FORBIDDEN, "native_not_allowed"),
        PluginError::Engine(_) | PluginError::Io { .. } | PluginError::Corrupt { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    };
    ApiError::new(status, code, e.to_string())
}

/// `GET /v1/plugins`
pub(super) async fn list(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({ "plugins": state.plugins.list() }))
}

/// `GET /v1/plugins/{name}`
pub(super) async fn describe(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = state
        .plugins
        .describe(&name)
        .ok_or_else(|| plugin_error(PluginError::Unknown(name)))?;
    Ok(Json(serde_json::to_value(d).expect("serialisable")))
}

/// `GET /v1/plugins/{name}/logs?lines=N`
pub(super) async fn logs(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut lines = 100usize;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k == "lines" {
            lines = v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("lines must be a number, not '{v}'")))?;
        }
    }
    let logs = state
        .plugins
        .logs(&name, lines)
        .ok_or_else(|| plugin_error(PluginError::Unknown(name)))?;
    Ok(Json(json!({ "lines": logs })))
}

/// `PUT /v1/plugins/{name}?kind=…&config=k=v…&max_memory_bytes=…&call_timeout_ms=…&max_output_bytes=…&native=file`
pub(super) async fn deploy(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut kind = None;
    let mut config = Vec::new();
    let mut limits = LimitOverrides::default();
    let mut native = None;
    let number = |k: &str, v: &str| -> Result<u64, ApiError> {
        v.parse()
            .map_err(|_| ApiError::bad_request(format!("{k} must be a whole number, not '{v}'")))
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "kind" => kind = Some(v.parse::<Kind>().map_err(plugin_error)?),
            "config" => {
                let (ck, cv) = v.split_once('=').ok_or_else(|| {
                    ApiError::bad_request(format!("config '{v}' is not of the form key=value"))
                })?;
                config.push((ck.to_string(), cv.to_string()));
            }
            "max_memory_bytes" => limits.max_memory_bytes = Some(number(&k, &v)?),
            "call_timeout_ms" => limits.call_timeout_ms = Some(number(&k, &v)?),
            "max_output_bytes" => limits.max_output_bytes = Some(number(&k, &v)?),
            "native" => native = Some(v.to_string()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}'"
                )))
            }
        }
    }
    let kind = kind.ok_or_else(|| {
        ApiError::bad_request("kind is required (partitioner, transform, quota-policy, connector)")
    })?;
    let code = match native {
        Some(file) => Code::Native(file),
        None if body.is_empty() => {
            return Err(ApiError::bad_request(
                "the body must be the plugin's WebAssembly component",
            ))
        }
        None => Code::Wasm(body.to_vec()),
    };
    let plugins = state.plugins.clone();
    let outcome = blocking(move || {
        plugins.deploy(DeployRequest {
            name,
            kind,
            code,
            config,
            limits,
        })
    })
    .await?
    .map_err(plugin_error)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(outcome).expect("serialisable")),
    ))
}

/// `POST /v1/plugins/{name}/rollback`
pub(super) async fn rollback(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let plugins = state.plugins.clone();
    let version = blocking(move || plugins.rollback(&name))
        .await?
        .map_err(plugin_error)?;
    Ok(Json(json!({ "active_version": version })))
}

/// `DELETE /v1/plugins/{name}`
pub(super) async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let in_use: Vec<String> = state
        .broker
        .topics()
        .iter()
        .filter(|t| t.settings.partitioner.as_deref() == Some(name.as_str()))
        .map(|t| t.meta.name.clone())
        .collect();
    let plugins = state.plugins.clone();
    blocking(move || plugins.remove(&name, &in_use))
        .await?
        .map_err(plugin_error)?;
    Ok(StatusCode::NO_CONTENT)
}
