//! `/v1/plugins`: deploy, list, describe, logs, rollback, remove.
//!
//! A deploy is `PUT /v1/plugins/{name}?kind=partitioner&config=k%3Dv&…` with the
//! component as the body (or `native=<file>` and an empty body for a native library).
//!
//! Deploys, rollbacks and removals go through the controller, so every broker serves
//! the same versions: the broker asked validates a new version itself (it compiles,
//! links and initialises), proposes the plugin's new record with the component, and
//! answers once the change is applied and serving here; the others follow from the
//! metadata. Two deploys of one plugin racing each other: the later gets 409
//! `plugin_changed` and may retry.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use std::collections::BTreeMap;

use super::body::RawBody;
use super::{blocking, AdminState, ApiError};
use crate::controller::state::{Command, Component, PluginMeta, StateError};
use crate::plugin::{Code, DeployRequest, Kind, LimitOverrides, PluginError, PluginRecord};

/// Versions the cluster keeps per plugin (with their components); older ones go.
const KEPT_VERSIONS: usize = 10;

fn refused(e: &StateError) -> Option<ApiError> {
    let (status, code) = match e {
        StateError::PluginChanged { .. } => (StatusCode::CONFLICT, "plugin_changed"),
        StateError::UnknownPlugin(_) => (StatusCode::NOT_FOUND, "unknown_plugin"),
        StateError::PluginUsedByTopics { .. }
        | StateError::PluginRunByTransforms { .. }
        | StateError::PluginRunByMirrors { .. } => (StatusCode::CONFLICT, "plugin_in_use"),
        StateError::PluginDecidesQuotas { name, scopes } => {
            return Some(ApiError::new(
                StatusCode::CONFLICT,
                "plugin_in_use",
                decides_quotas(name, scopes),
            ))
        }
        _ => return None,
    };
    Some(ApiError::new(status, code, e.to_string()))
}

/// Why a plugin bound as a quota policy cannot go, and the commands that unbind it.
/// `scopes` is the controller's list: `the cluster` and/or `tenant <name>`, comma
/// separated (tenant names have neither commas nor spaces).
fn decides_quotas(name: &str, scopes: &str) -> String {
    let clear: Vec<String> = scopes
        .split(", ")
        .map(|scope| match scope.strip_prefix("tenant ") {
            Some(tenant) => format!("`quiver quota policy clear --tenant {tenant}`"),
            None => "`quiver quota policy clear`".to_string(),
        })
        .collect();
    format!(
        "plugin '{name}' is the quota policy of {scopes}; clear it first with {}, then remove the plugin",
        clear.join(" and ")
    )
}

/// Commits a plugin change, then applies the cluster's plugins here before answering.
async fn commit(state: &AdminState, command: Command) -> Result<(), ApiError> {
    super::commit(state, command, refused).await?;
    let (plugins, metadata) = (state.plugins.clone(), state.broker.metadata());
    blocking(move || plugins.sync(&metadata.plugins)).await
}

fn current(state: &AdminState, name: &str) -> Option<PluginMeta> {
    state.broker.metadata().plugins.get(name).cloned()
}

fn plugin_error(e: PluginError) -> ApiError {
    let (status, code) = match &e {
        PluginError::Unknown(_) => (StatusCode::NOT_FOUND, "unknown_plugin"),
        PluginError::InUse { .. } => (StatusCode::CONFLICT, "plugin_in_use"),
        PluginError::NoPreviousVersion(_) => (StatusCode::CONFLICT, "no_previous_version"),
        PluginError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
        PluginError::Limit(_) => (StatusCode::BAD_REQUEST, "invalid_limit"),
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
    RawBody(body): RawBody,
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
    let existing = current(&state, &name);
    let newest = existing.as_ref().map_or(0, PluginMeta::newest);
    let plugins = state.plugins.clone();
    let request = DeployRequest {
        name: name.clone(),
        kind,
        code,
        config,
        limits,
    };
    let existing_kind = existing.as_ref().map(|p| p.record.kind);
    let prepared = blocking(move || plugins.prepare(request, newest + 1, existing_kind))
        .await?
        .map_err(plugin_error)?;
    let mut record = existing.map(|p| p.record).unwrap_or(PluginRecord {
        kind,
        active: 0,
        versions: Vec::new(),
        failed: None,
    });
    record.versions.push(prepared.record.clone());
    record.active = prepared.record.version;
    let excess = record.versions.len().saturating_sub(KEPT_VERSIONS);
    record.versions.drain(..excess);
    let code: BTreeMap<String, Component> = prepared
        .component
        .into_iter()
        .map(|(sha256, bytes)| (sha256, Component(bytes)))
        .collect();
    commit(
        &state,
        Command::SetPlugin {
            name: name.clone(),
            record,
            code,
            expect: newest,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(prepared.outcome).expect("serialisable")),
    ))
}

/// `POST /v1/plugins/{name}/rollback`
pub(super) async fn rollback(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let existing =
        current(&state, &name).ok_or_else(|| plugin_error(PluginError::Unknown(name.clone())))?;
    let mut record = existing.record.clone();
    let previous = record
        .versions
        .iter()
        .filter(|v| v.version < record.active)
        .map(|v| v.version)
        .max()
        .ok_or_else(|| plugin_error(PluginError::NoPreviousVersion(name.clone())))?;
    record.active = previous;
    commit(
        &state,
        Command::SetPlugin {
            name,
            record,
            code: BTreeMap::new(),
            expect: existing.newest(),
        },
    )
    .await?;
    Ok(Json(json!({ "active_version": previous })))
}

/// `DELETE /v1/plugins/{name}`
pub(super) async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if current(&state, &name).is_none() {
        return Err(plugin_error(PluginError::Unknown(name)));
    }
    // Topics that name the plugin, and transforms that run it, are judged by the
    // controller as it applies the removal (this broker's view may be a moment old).
    // What only this broker knows is its own default: topics without a `partitioner`
    // config that it would route through the plugin.
    let metadata = state.broker.metadata();
    let log = &state.broker.config().log;
    let by_default: Vec<String> = metadata
        .topics
        .values()
        .filter(|t| !t.configs.contains_key("partitioner"))
        .filter(|t| {
            crate::config::topic::resolve(log, &t.configs)
                .partitioner
                .as_deref()
                == Some(name.as_str())
        })
        .map(|t| t.name.clone())
        .collect();
    if !by_default.is_empty() {
        return Err(plugin_error(PluginError::InUse {
            name,
            topics: by_default.join(", "),
        }));
    }
    commit(&state, Command::RemovePlugin { name }).await?;
    Ok(StatusCode::NO_CONTENT)
}
