//! `/v1/users`, `/v1/acls` and `/v1/security/logins`: SCRAM users, ACLs and login
//! counters. Users and ACLs go through the controller like their Kafka-API
//! counterparts, so both ways of changing them agree.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{JsonBody, QueryParams};
use super::{AdminState, ApiError};
use crate::controller::ControllerError;
use crate::tenancy::acl::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
    CLUSTER_NAME, WILDCARD,
};
use crate::tenancy::scram::{Credential, Mechanism, DEFAULT_ITERATIONS};

fn unavailable(e: ControllerError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "controller_unavailable",
        e.to_string(),
    )
}

/// `GET /v1/security/logins`.
pub(crate) async fn logins(State(state): State<AdminState>) -> Json<Value> {
    Json(json!(state.broker.security().logins.counts()))
}

/// `GET /v1/users`: names and mechanisms, never keys.
pub(crate) async fn list_users(State(state): State<AdminState>) -> Json<Value> {
    let metadata = state.broker.metadata();
    let users: Vec<Value> = metadata
        .users
        .iter()
        .map(|(name, creds)| {
            json!({
                "name": name,
                "mechanisms": creds.iter().map(|(m, c)| json!({
                    "mechanism": m.name(),
                    "iterations": c.iterations,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "users": users }))
}

/// The body of `PUT /v1/users/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserBody {
    password: String,
    #[serde(default)]
    mechanisms: Option<Vec<String>>,
    #[serde(default)]
    iterations: Option<u32>,
}

/// `PUT /v1/users/{name}`: creates the user or replaces its credentials.
pub(crate) async fn put_user(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UserBody>,
) -> Result<Json<Value>, ApiError> {
    if name.is_empty() || name.contains([',', '=', '\0']) || name.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "user name `{name}` must be 1..=255 bytes without ',', '=' or NUL"
        )));
    }
    if body.password.is_empty() {
        return Err(ApiError::bad_request("the password is empty"));
    }
    let mechanisms = match &body.mechanisms {
        None => Mechanism::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                Mechanism::parse(n).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "mechanism `{n}` is not SCRAM-SHA-256 or SCRAM-SHA-512"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let iterations = body.iterations.unwrap_or(DEFAULT_ITERATIONS);
    let password = body.password;
    let chosen = mechanisms.clone();
    // PBKDF2 takes milliseconds per mechanism: off the async threads.
    let credentials = tokio::task::spawn_blocking(move || {
        chosen
            .into_iter()
            .map(|m| Credential::from_password(m, &password, iterations).map(|c| (m, c)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Mechanisms not asked for are removed, so the user has exactly these.
    let existing = state.broker.metadata().users.get(&name).cloned();
    let delete = existing
        .map(|creds| {
            creds
                .into_keys()
                .filter(|m| !mechanisms.contains(m))
                .map(|m| (name.clone(), m))
                .collect()
        })
        .unwrap_or_default();
    let upsert = credentials
        .into_iter()
        .map(|(m, c)| (name.clone(), m, c))
        .collect();
    state
        .broker
        .alter_credentials(upsert, delete)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "name": name,
        "mechanisms": mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "iterations": iterations,
    })))
}

/// `DELETE /v1/users/{name}`.
pub(crate) async fn delete_user(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(creds) = state.broker.metadata().users.get(&name).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_user",
            format!("user '{name}' does not exist"),
        ));
    };
    let delete = creds.into_keys().map(|m| (name.clone(), m)).collect();
    state
        .broker
        .alter_credentials(Vec::new(), delete)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "deleted": name })))
}

/// An ACL or ACL filter as JSON: names in CLI form (`topic`, `prefixed`, `read`,
/// `allow`). For a new ACL, `name` defaults to `kafka-cluster` for the cluster,
/// `pattern` to literal, `host` to `*` and `permission` to allow.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclJson {
    resource_type: Option<String>,
    name: Option<String>,
    pattern: Option<String>,
    principal: Option<String>,
    host: Option<String>,
    operation: Option<String>,
    permission: Option<String>,
}

fn resource_type(text: &str) -> Result<ResourceType, ApiError> {
    let wanted = text.to_ascii_lowercase().replace('-', "_");
    ResourceType::ALL
        .into_iter()
        .find(|t| t.name() == wanted)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "resource type `{text}` is not topic, group, cluster or transactional_id"
            ))
        })
}

fn operation(text: &str) -> Result<Operation, ApiError> {
    Operation::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "operation `{text}` is not one of {}",
            Operation::ALL.map(|o| o.name()).join(", ")
        ))
    })
}

fn permission(text: &str) -> Result<Permission, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "allow" => Ok(Permission::Allow),
        "deny" => Ok(Permission::Deny),
        _ => Err(ApiError::bad_request(format!(
            "permission `{text}` is not allow or deny"
        ))),
    }
}

impl AclJson {
    fn binding(self) -> Result<AclBinding, ApiError> {
        let missing = |what: &str| ApiError::bad_request(format!("an ACL needs `{what}`"));
        let resource_type =
            resource_type(&self.resource_type.ok_or_else(|| missing("resource_type"))?)?;
        let name = match (self.name, resource_type) {
            (Some(name), _) => name,
            (None, ResourceType::Cluster) => CLUSTER_NAME.to_string(),
            (None, _) => return Err(missing("name")),
        };
        let pattern = match self
            .pattern
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("literal") => PatternType::Literal,
            Some("prefixed") => PatternType::Prefixed,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "pattern `{other}` is not literal or prefixed"
                )))
            }
        };
        let acl = AclBinding {
            resource_type,
            name,
            pattern,
            principal: self.principal.ok_or_else(|| missing("principal"))?,
            host: self.host.unwrap_or_else(|| WILDCARD.to_string()),
            operation: operation(&self.operation.ok_or_else(|| missing("operation"))?)?,
            permission: self
                .permission
                .as_deref()
                .map(permission)
                .transpose()?
                .unwrap_or(Permission::Allow),
        };
        acl.validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(acl)
    }

    fn filter(self) -> Result<AclFilter, ApiError> {
        Ok(AclFilter {
            resource_type: self
                .resource_type
                .as_deref()
                .map(resource_type)
                .transpose()?,
            pattern: match self
                .pattern
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("any") => PatternFilter::Any,
                Some("match") => PatternFilter::Match,
                Some("literal") => PatternFilter::Literal,
                Some("prefixed") => PatternFilter::Prefixed,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "pattern filter `{other}` is not any, match, literal or prefixed"
                    )))
                }
            },
            name: self.name,
            principal: self.principal,
            host: self.host,
            operation: self.operation.as_deref().map(operation).transpose()?,
            permission: self.permission.as_deref().map(permission).transpose()?,
        })
    }
}

fn acl_json(acl: &AclBinding) -> Value {
    json!({
        "resource_type": acl.resource_type.name(),
        "name": acl.name,
        "pattern": match acl.pattern { PatternType::Literal => "literal", PatternType::Prefixed => "prefixed" },
        "principal": acl.principal,
        "host": acl.host,
        "operation": acl.operation.name(),
        "permission": match acl.permission { Permission::Allow => "allow", Permission::Deny => "deny" },
    })
}

/// `GET /v1/acls`, filtered by the query (the fields of an ACL; all optional).
pub(crate) async fn list_acls(
    State(state): State<AdminState>,
    QueryParams(query): QueryParams<AclJson>,
) -> Result<Json<Value>, ApiError> {
    let filter = query.filter()?;
    let metadata = state.broker.metadata();
    let acls: Vec<Value> = metadata.acls.select(&filter).map(acl_json).collect();
    Ok(Json(
        json!({ "authorizer": state.broker.security().authorizer_enabled(), "acls": acls }),
    ))
}

/// `POST /v1/acls`: one ACL or a list of them; all are checked before any is stored.
pub(crate) async fn create_acls(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let items = match body {
        Value::Array(items) => items,
        one => vec![one],
    };
    let acls = items
        .into_iter()
        .map(|item| {
            serde_json::from_value::<AclJson>(item)
                .map_err(|e| ApiError::bad_request(format!("not an ACL: {e}")))
                .and_then(AclJson::binding)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let created: Vec<Value> = acls.iter().map(acl_json).collect();
    state.broker.create_acls(acls).await.map_err(unavailable)?;
    Ok(Json(json!({ "created": created })))
}

/// `DELETE /v1/acls`, with the filter as the query; an empty filter is refused, so a
/// typo never deletes every ACL (ask with `?all=true` for that).
pub(crate) async fn delete_acls(
    State(state): State<AdminState>,
    QueryParams(mut query): QueryParams<std::collections::BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let all = query.remove("all").as_deref() == Some("true");
    if query.is_empty() && !all {
        return Err(ApiError::bad_request(
            "deleting ACLs needs a filter (resource_type, name, pattern, principal, host, operation, permission), or all=true",
        ));
    }
    let parsed: AclJson = serde_json::from_value(json!(query))
        .map_err(|e| ApiError::bad_request(format!("not an ACL filter: {e}")))?;
    let filter = parsed.filter()?;
    let removed = state
        .broker
        .delete_acls(vec![filter])
        .await
        .map_err(unavailable)?;
    let deleted: Vec<Value> = removed.iter().flatten().map(acl_json).collect();
    Ok(Json(json!({ "deleted": deleted })))
}
