//! Who may use the admin API. With `admin.authentication = "basic"` every request but
//! `/health` carries HTTP Basic credentials of a SCRAM user (the users Kafka clients
//! log in as), and, when `security.authorizer` is on, the same ACLs as the Kafka
//! listeners decide what that user may do:
//!
//! | request | needs |
//! |---|---|
//! | any read (`GET`) | DESCRIBE on the cluster |
//! | `POST /v1/topics/{topic}/records` | WRITE on the topic |
//! | `POST /v1/topics` | CREATE on the cluster |
//! | `DELETE /v1/topics/{topic}` | DELETE on the topic |
//! | any other change | ALTER on the cluster |
//!
//! Super users may do everything, as on the Kafka listeners.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::{AdminState, ApiError};
use crate::config::AdminAuthentication;
use crate::tenancy::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::tenancy::Principal;

/// The guard in front of every route.
pub(super) async fn guard(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if state.broker.config().admin.authentication == AdminAuthentication::None
        || request.uri().path() == "/health"
    {
        return next.run(request).await;
    }
    let principal = match authenticate(&state, &request) {
        Ok(principal) => principal,
        Err(message) => {
            let mut answer =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).into_response();
            answer.headers_mut().insert(
                WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"quiver\", charset=\"UTF-8\""),
            );
            return answer;
        }
    };
    let (operation, resource_type, name) = needs(request.method(), request.uri().path());
    let allowed = state.broker.security().authorize(
        &state.broker.metadata(),
        &principal,
        peer.ip(),
        operation,
        resource_type,
        &name,
    );
    if !allowed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{principal} may not {} on {}:{name}; an ACL allowing it (`quiver acl create`), or being a super user, is needed",
                operation.name().to_uppercase(),
                resource_type.name(),
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The SCRAM user whose name and password the request carries.
fn authenticate(state: &AdminState, request: &Request) -> Result<Principal, String> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .ok_or("the admin API needs a user's name and password (HTTP Basic; the CLI reads QUIVER_ADMIN_USER and QUIVER_ADMIN_PASSWORD)")?;
    let encoded = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Basic "))
        .ok_or("the Authorization header is not HTTP Basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or("the Basic credentials are not base64 of user:password")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("the Basic credentials are not user:password")?;
    let metadata = state.broker.metadata();
    let verified = metadata.users.get(user).is_some_and(|credentials| {
        credentials
            .iter()
            .any(|(mechanism, credential)| credential.verify_password(*mechanism, password))
    });
    if !verified {
        state
            .broker
            .security()
            .logins
            .failed("admin API: wrong user or password");
        return Err("unknown user or wrong password".into());
    }
    Ok(Principal::user(user))
}

/// What a request needs to be allowed (see the module's table).
fn needs(method: &Method, path: &str) -> (Operation, ResourceType, String) {
    let cluster = |operation| (operation, ResourceType::Cluster, CLUSTER_NAME.to_string());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == Method::GET || method == Method::HEAD {
        return cluster(Operation::Describe);
    }
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "topics", topic, "records"]) => {
            (Operation::Write, ResourceType::Topic, topic.to_string())
        }
        ("POST", ["v1", "topics"]) => cluster(Operation::Create),
        ("DELETE", ["v1", "topics", topic]) => {
            (Operation::Delete, ResourceType::Topic, topic.to_string())
        }
        _ => cluster(Operation::Alter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_need_what_the_table_says() {
        let topic = |op, name: &str| (op, ResourceType::Topic, name.to_string());
        let cluster = |op| (op, ResourceType::Cluster, CLUSTER_NAME.to_string());
        assert_eq!(
            needs(&Method::GET, "/v1/topics/orders"),
            cluster(Operation::Describe)
        );
        assert_eq!(
            needs(&Method::GET, "/metrics"),
            cluster(Operation::Describe)
        );
        assert_eq!(
            needs(&Method::POST, "/v1/topics/orders/records"),
            topic(Operation::Write, "orders")
        );
        assert_eq!(
            needs(&Method::POST, "/v1/topics"),
            cluster(Operation::Create)
        );
        assert_eq!(
            needs(&Method::DELETE, "/v1/topics/orders"),
            topic(Operation::Delete, "orders")
        );
        assert_eq!(
            needs(&Method::PUT, "/v1/plugins/p"),
            cluster(Operation::Alter)
        );
        assert_eq!(
            needs(&Method::DELETE, "/v1/acls"),
            cluster(Operation::Alter)
        );
    }
}
