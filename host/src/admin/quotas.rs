//! `/v1/quotas`: client and tenant quotas (the same records AlterClientQuotas changes)
//! and what this broker currently meters against them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AdminState, ApiError};
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
    let usage: Vec<Value> = state
        .broker
        .security()
        .meters
        .rates(std::time::Instant::now())
        .into_iter()
        .map(|(key, rate)| json!({ "key": key.key, "type": key.kind.key(), "rate": rate }))
        .collect();
    Json(json!({ "quotas": quotas, "usage_here": usage }))
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
    Json(body): Json<QuotaChange>,
) -> Result<Json<Value>, ApiError> {
    let entity = QuotaEntity(body.entity);
    entity
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut changes = Vec::new();
    for (key, value) in &body.set {
        let kind =
            quota::validate_value(key, *value).map_err(|e| ApiError::bad_request(e.to_string()))?;
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
