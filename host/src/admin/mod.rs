//! The HTTP admin API (default 127.0.0.1:9644), as JSON: health, cluster status,
//! topics, consumer groups, plugin lifecycle, HTTP produce, transforms, mirrors, users,
//! ACLs, tenants and quotas; `/metrics` for Prometheus; `/v1/openapi.json` describing
//! it all. Errors are JSON too: `{"error": "<code>", "message": "…"}` with a status
//! that says whose fault it was (4xx: the request; 5xx: the broker).
//!
//! Handlers that touch logs or call plugins run on the blocking pool, so a slow plugin
//! or a disk stall never holds up the Kafka listener's async threads.

mod auth;
mod body;
mod cluster;
mod console;
mod groups;
pub mod history;
mod metrics;
mod mirrors;
pub mod peers;
mod plugins;
mod produce;
mod quotas;
mod security;
mod tenants;
mod tls;
mod topics;
mod transforms;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::controller::state::{Command, StateError};
use crate::controller::ControllerError;
use crate::plugin::{CallError, Kind, Plugins};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Its plugins.
    pub plugins: Arc<Plugins>,
    /// Its transform tasks.
    pub transforms: Arc<crate::transform::Transforms>,
    /// Its mirrors.
    pub mirrors: Arc<crate::connect::Mirrors>,
    /// The console's charts: recent samples of lag, rates and latencies.
    pub history: Arc<history::History>,
    /// The other brokers, for what only they hold.
    pub peers: peers::Peers,
}

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with an HTTP status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    let limit = state.broker.config().admin.max_body_bytes;
    Router::new()
        .route("/", get(console::index))
        .route("/console/{asset}", get(console::asset))
        .route("/health", get(health))
        .route("/v1/history", get(history::get))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/plugins", get(plugins::list))
        .route(
            "/v1/plugins/{name}",
            get(plugins::describe)
                .put(plugins::deploy)
                .delete(plugins::remove),
        )
        .route("/v1/plugins/{name}/logs", get(plugins::logs))
        .route("/v1/plugins/{name}/rollback", post(plugins::rollback))
        .route("/v1/topics", get(topics::list).post(topics::create))
        .route(
            "/v1/topics/{topic}",
            get(topics::describe).delete(topics::remove),
        )
        .route("/v1/topics/{topic}/records", post(produce::produce))
        .route("/v1/groups", get(groups::list))
        .route("/v1/groups/{group}", get(groups::describe))
        .route(
            "/v1/transforms",
            get(transforms::list).post(transforms::deploy),
        )
        .route(
            "/v1/transforms/{name}",
            get(transforms::describe).delete(transforms::remove),
        )
        .route("/v1/transforms/{name}/pause", post(transforms::pause))
        .route("/v1/transforms/{name}/resume", post(transforms::resume))
        .route("/v1/mirrors", get(mirrors::list).post(mirrors::create))
        .route(
            "/v1/mirrors/{name}",
            get(mirrors::describe).delete(mirrors::remove),
        )
        .route("/v1/mirrors/{name}/pause", post(mirrors::pause))
        .route("/v1/mirrors/{name}/resume", post(mirrors::resume))
        .route("/v1/mirrors/{name}/checkpoints", get(mirrors::checkpoints))
        .route("/v1/mirrors/{name}/failover", post(mirrors::failover))
        .route("/v1/users", get(security::list_users))
        .route(
            "/v1/users/{name}",
            axum::routing::put(security::put_user).delete(security::delete_user),
        )
        .route(
            "/v1/acls",
            get(security::list_acls)
                .post(security::create_acls)
                .delete(security::delete_acls),
        )
        .route("/v1/security/logins", get(security::logins))
        .route("/v1/quotas", get(quotas::list).post(quotas::change))
        .route("/v1/quotas/policy", put(quotas::bind))
        .route("/v1/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/v1/tenants/{name}",
            get(tenants::get)
                .put(tenants::update)
                .delete(tenants::remove),
        )
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .with_state(state)
}

async fn health(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "node_id": state.broker.config().broker.node_id,
        "topics": state.broker.topics().len(),
    }))
}

/// The OpenAPI 3.1 document describing every route above.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) {
    let sampler = history::spawn(state.clone(), state.history.clone(), shutdown.clone());
    let app = router(state);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(acceptor) => match tls::TlsListener::new(listener, acceptor) {
            // tap_io: axum knows the peer address of a listener's connections through
            // its TapIo wrapper (or a plain TcpListener), not of any listener.
            Ok(listener) => {
                use axum::serve::ListenerExt as _;
                axum::serve(listener.tap_io(|_| {}), app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "admin API stopped");
    }
    sampler.abort();
}

/// How long a metadata change made through the admin API may take to commit.
const CONTROLLER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Commits `command` through the controller. A refusal `refused` knows (a handler's own
/// errors: a name taken, a name unknown) becomes its answer; anything else means the
/// controller could not be reached in time.
pub(crate) async fn commit(
    state: &AdminState,
    command: Command,
    refused: fn(&StateError) -> Option<ApiError>,
) -> Result<(), ApiError> {
    state
        .broker
        .controller()
        .submit(command, CONTROLLER_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| controller_error(e, refused))
}

/// The answer for a change the controller did not commit (see [`commit`]).
pub(crate) fn controller_error(
    e: ControllerError,
    refused: fn(&StateError) -> Option<ApiError>,
) -> ApiError {
    if let ControllerError::Rejected(state) = &e {
        if let Some(answer) = refused(state) {
            return answer;
        }
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "controller_unavailable",
        e.to_string(),
    )
}

/// Refuses a plugin that is not deployed in the cluster, or not of `kind`, saying how
/// to deploy one.
pub(crate) fn expect_plugin(
    metadata: &crate::controller::state::State,
    name: &str,
    kind: Kind,
) -> Result<(), ApiError> {
    let plugin = metadata.plugins.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_plugin",
            format!(
                "plugin '{name}' is not deployed; deploy it with `quiver plugin deploy {name} --kind {kind} --file …`"
            ),
        )
    })?;
    if plugin.record.kind != kind {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_kind",
            format!("plugin '{name}' is a {}, not a {kind}", plugin.record.kind),
        ));
    }
    Ok(())
}

/// Runs `open` (the plugin's `init` with a runner's configuration) once on this broker
/// before anything is recorded, so a bad configuration is refused now rather than
/// failing wherever the runner lands. The plugin may have been deployed through another
/// broker a moment ago: the cluster's plugins are applied here first if so, as the
/// reconciler is about to.
pub(crate) async fn try_init(
    state: &AdminState,
    name: &str,
    open: impl FnOnce(&Plugins) -> Result<(), CallError> + Send + 'static,
) -> Result<(), ApiError> {
    let (plugins, metadata, plugin) = (
        state.plugins.clone(),
        state.broker.metadata(),
        name.to_string(),
    );
    let opened = blocking(move || {
        if plugins.get(&plugin).is_none() {
            plugins.sync(&metadata.plugins);
        }
        open(&plugins)
    })
    .await?;
    opened.map_err(|e| {
        let code = match e {
            CallError::Init(_) => "init_failed",
            CallError::WrongKind(_) => "wrong_kind",
            _ => "plugin_unusable",
        };
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            format!("plugin '{name}' {e}"),
        )
    })
}

/// Runs blocking work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("worker failed: {e}"),
        )
    })
}
