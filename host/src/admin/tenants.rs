//! `/v1/tenants`: create, list, describe (with usage), change and delete tenants. A
//! tenant's SCRAM users can be created in the same request, so one call sets a tenant up.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::JsonBody;
use super::{commit, AdminState, ApiError};
use crate::controller::state::{Command, StateError};
use crate::tenancy::scram::{Credential, Mechanism, DEFAULT_ITERATIONS};
use crate::tenancy::tenant::{Tenant, TenantLimits};

/// A user to create with the tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    name: String,
    password: String,
}

/// The body of `POST /v1/tenants` and `PUT /v1/tenants/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantBody {
    #[serde(default)]
    name: Option<String>,
    prefix: String,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    users: Vec<NewUser>,
    #[serde(default)]
    limits: TenantLimits,
}

fn refused(e: &StateError) -> Option<ApiError> {
    match e {
        StateError::TenantExists(_) => Some(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_exists",
            e.to_string(),
        )),
        StateError::UnknownTenant(_) => Some(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            e.to_string(),
        )),
        StateError::InvalidTenant(_) => Some(ApiError::bad_request(e.to_string())),
        _ => None,
    }
}

/// What a tenant uses: partitions cluster-wide, stored bytes and connections here.
fn describe(state: &AdminState, tenant: &Tenant) -> Value {
    let metadata = state.broker.metadata();
    let topics: Vec<&str> = metadata
        .topics
        .keys()
        .filter(|t| tenant.owns(t))
        .map(String::as_str)
        .collect();
    let partitions: i64 = topics
        .iter()
        .filter_map(|t| metadata.topics.get(*t))
        .map(|t| i64::from(t.partitions))
        .sum();
    json!({
        "name": tenant.name,
        "prefix": tenant.prefix,
        "principals": tenant.principals,
        "limits": tenant.limits,
        "usage": {
            "topics": topics,
            "partitions": partitions,
            "stored_bytes_here": state.broker.tenant_stored_bytes(tenant),
            "connections_here": state.broker.security().tenant_connections(&tenant.name),
        },
    })
}

/// `GET /v1/tenants`.
pub(crate) async fn list(State(state): State<AdminState>) -> Json<Value> {
    let tenants: Vec<Value> = state
        .broker
        .metadata()
        .tenants
        .values()
        .map(|t| describe(&state, t))
        .collect();
    Json(json!({ "tenants": tenants }))
}

/// `GET /v1/tenants/{name}`.
pub(crate) async fn get(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let metadata = state.broker.metadata();
    let tenant = metadata.tenants.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("tenant '{name}' does not exist"),
        )
    })?;
    Ok(Json(describe(&state, tenant)))
}

async fn set(
    state: AdminState,
    name: String,
    body: TenantBody,
    create: bool,
) -> Result<Json<Value>, ApiError> {
    let mut principals = body.principals;
    for user in &body.users {
        let principal = format!("User:{}", user.name);
        if !principals.contains(&principal) {
            principals.push(principal);
        }
    }
    let tenant = Tenant {
        name: name.clone(),
        prefix: body.prefix,
        principals,
        limits: body.limits,
    };
    // Refused before any user is made, so a refused request leaves nothing behind (nor
    // changes an existing user's password). The controller judges existence again as it
    // commits; this broker's view is at most a moment old.
    {
        let metadata = state.broker.metadata();
        let tenants = &metadata.tenants;
        match (create, tenants.contains_key(&name)) {
            (true, true) => return Err(refused(&StateError::TenantExists(name)).expect("answered")),
            (false, false) => {
                return Err(refused(&StateError::UnknownTenant(name)).expect("answered"))
            }
            _ => {}
        }
        tenant
            .validate()
            .and_then(|()| tenant.check_against(tenants))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if !body.users.is_empty() {
        let users: Vec<(String, String)> = body
            .users
            .into_iter()
            .map(|u| (u.name, u.password))
            .collect();
        if let Some((bad, _)) = users.iter().find(|(n, p)| n.is_empty() || p.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "user `{bad}` needs a name and a password"
            )));
        }
        let upsert = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (name, password) in users {
                for m in Mechanism::ALL {
                    let c = Credential::from_password(m, &password, DEFAULT_ITERATIONS)
                        .map_err(|e| e.to_string())?;
                    out.push((name.clone(), m, c));
                }
            }
            Ok::<_, String>(out)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::bad_request)?;
        state
            .broker
            .alter_credentials(upsert, Vec::new())
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "controller_unavailable",
                    e.to_string(),
                )
            })?;
    }
    commit(
        &state,
        Command::SetTenant {
            tenant: tenant.clone(),
            create,
        },
        refused,
    )
    .await?;
    Ok(Json(describe(&state, &tenant)))
}

/// `POST /v1/tenants`: creates a tenant (and its users).
pub(crate) async fn create(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<TenantBody>,
) -> Result<Json<Value>, ApiError> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("a tenant needs a `name`"))?;
    set(state, name, body, true).await
}

/// `PUT /v1/tenants/{name}`: replaces a tenant's prefix, principals and limits.
pub(crate) async fn update(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<TenantBody>,
) -> Result<Json<Value>, ApiError> {
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::bad_request("a tenant cannot be renamed"));
    }
    set(state, name, body, false).await
}

/// `DELETE /v1/tenants/{name}`: removes the tenant and the ACLs it granted; its topics
/// and users stay.
pub(crate) async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    commit(
        &state,
        Command::RemoveTenant { name: name.clone() },
        refused,
    )
    .await?;
    Ok(Json(json!({ "deleted": name })))
}
