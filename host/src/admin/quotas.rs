//! `/v1/quotas`: client and tenant quotas (the same records AlterClientQuotas changes),
//! the quota-policy plugins bound to the cluster and to tenants, and what this broker
//! currently meters against them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::JsonBody;
use super::{AdminState, ApiError};
use crate::controller::state::{Command, StateError};
use crate::tenancy::quota::{self, QuotaEntity, QuotaType, QuotaValue};

/// `GET /v1/quotas`.
pub(crate) async fn list(State(state): State<AdminState>) -> Json<Value> {
    let metadata = state.broker.metadata();
    let quotas: Vec<Value> = metadata
        .quotas
        .iter()
        .map(|(entity, values)| {
            json!({
                "entity": entity.0,
                "values": values.iter().map(|(k, v)| (k.key().to_string(), json!(v.0))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let rates = state
        .broker
        .security()
        .meters
        .rates(std::time::Instant::now());
    let usage: Vec<Value> = rates
        .iter()
        .map(|(key, rate)| json!({ "key": key.key, "type": key.kind.key(), "rate": rate }))
        .collect();
    let views = state.broker.security().policies.views();
    let policies: Vec<Value> = metadata
        .quota_policies
        .iter()
        .map(|(scope, plugin)| {
            let view = views.get(plugin);
            let keys: Vec<Value> = view
                .map(|v| v.keys.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|k| {
                    let metered = format!("policy={plugin},key={}", k.key);
                    let usage: serde_json::Map<String, Value> = rates
                        .iter()
                        .filter(|(q, _)| q.key == metered)
                        .map(|(q, rate)| (q.kind.key().to_string(), json!(rate)))
                        .collect();
                    json!({
                        "key": k.key,
                        "limits": k.limits.iter().map(|(t, v)| (t.key().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                        "connections_here": k.connections,
                        "usage": usage,
                    })
                })
                .collect();
            json!({
                "tenant": (!scope.is_empty()).then_some(scope),
                "plugin": plugin,
                // null until a client of this broker first needed the policy
                "version": view.map(|v| v.version).filter(|v| *v > 0),
                "failed": view.and_then(|v| v.failed.clone()),
                "keys": keys,
            })
        })
        .collect();
    Json(json!({ "quotas": quotas, "policies": policies, "usage_here": usage }))
}

/// The body of `PUT /v1/quotas/policy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyBinding {
    /// The tenant whose clients the policy decides; absent: every other client.
    #[serde(default)]
    tenant: Option<String>,
    /// The quota-policy plugin; absent or null: unbind.
    #[serde(default)]
    plugin: Option<String>,
}

fn refused(e: &StateError) -> Option<ApiError> {
    match e {
        StateError::UnknownTenant(_) => Some(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            e.to_string(),
        )),
        StateError::UnknownPlugin(_) => Some(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_plugin",
            e.to_string(),
        )),
        StateError::NotAQuotaPolicy { .. } => Some(ApiError::bad_request(e.to_string())),
        _ => None,
    }
}

/// `PUT /v1/quotas/policy`: binds (or, without a plugin, unbinds) the quota policy of a
/// tenant or of the cluster.
pub(crate) async fn bind(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<PolicyBinding>,
) -> Result<Json<Value>, ApiError> {
    super::commit(
        &state,
        Command::SetQuotaPolicy {
            tenant: body.tenant.clone(),
            plugin: body.plugin.clone(),
        },
        refused,
    )
    .await?;
    Ok(Json(
        json!({ "tenant": body.tenant, "plugin": body.plugin }),
    ))
}

/// The body of `POST /v1/quotas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaChange {
    entity: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default)]
    set: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    remove: Vec<String>,
}

/// `POST /v1/quotas`: sets and removes quotas of one entity.
pub(crate) async fn change(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<QuotaChange>,
) -> Result<Json<Value>, ApiError> {
    let entity = QuotaEntity(body.entity);
    entity
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut changes = Vec::new();
    for (key, value) in &body.set {
        let kind = quota::validate_value(key, *value)
            .and_then(|kind| entity.check_kind(kind).map(|()| kind))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        changes.push((entity.clone(), kind, Some(QuotaValue(*value))));
    }
    for key in &body.remove {
        let kind = QuotaType::parse(key)
            .ok_or_else(|| ApiError::bad_request(format!("quota `{key}` is unknown")))?;
        changes.push((entity.clone(), kind, None));
    }
    if changes.is_empty() {
        return Err(ApiError::bad_request("nothing to set or remove"));
    }
    state.broker.alter_quotas(changes).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller_unavailable",
            e.to_string(),
        )
    })?;
    let values = state
        .broker
        .metadata()
        .quotas
        .get(&entity)
        .cloned()
        .unwrap_or_default();
    Ok(Json(json!({
        "entity": entity.0,
        "values": values.iter().map(|(k, v)| (k.key().to_string(), json!(v.0))).collect::<serde_json::Map<_, _>>(),
    })))
}
