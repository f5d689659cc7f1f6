//! `/v1/transforms`: deploy, list, describe, pause, resume, remove.
//!
//! A deploy is checked here before it reaches the controller: the spec itself, the
//! plugin (deployed, and a transform), every topic it reads or writes (they must
//! exist: a transform never creates topics behind the operator's back), and the
//! plugin's `init` with the transform's configuration, run once on this broker. The
//! transform then lives in the cluster metadata; each broker runs the partitions it
//! leads.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::JsonBody;
use super::{AdminState, ApiError};
use crate::broker::now_ms;
use crate::config::PluginsConfig;
use crate::controller::state::{Command, StateError};
use crate::plugin::{Kind, LimitOverrides};
use crate::transform::spec::{
    validate_limits, OnError, StartFrom, TransformSpec, DEFAULT_MAX_AMPLIFICATION,
};

/// How long a pause or removal waits for this broker's tasks to finish their step.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a deploy or resume waits for this broker's tasks to get past starting, so
/// its answer shows them running (or why not) rather than as they were before.
const START_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `POST /v1/transforms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployBody {
    name: String,
    plugin: String,
    input: String,
    outputs: Vec<String>,
    /// earliest (default), latest, offset:N or timestamp:MS.
    #[serde(default)]
    from: Option<String>,
    /// Plugin configuration: an object of strings, kept in the order given.
    #[serde(default)]
    config: serde_json::Map<String, Value>,
    /// Exactly-once (default) or at-least-once.
    #[serde(default)]
    deterministic: Option<bool>,
    /// stop (default without a dead-letter topic) or dead-letter.
    #[serde(default)]
    on_error: Option<String>,
    /// The dead-letter topic (implies on_error dead-letter).
    #[serde(default)]
    dead_letter: Option<String>,
    #[serde(default)]
    max_amplification: Option<u32>,
    /// Memory cap of this transform's plugin instances, bytes (over the plugin's).
    #[serde(default)]
    max_memory_bytes: Option<u64>,
    /// Deadline of one plugin call, ms (over the plugin's).
    #[serde(default)]
    call_timeout_ms: Option<u64>,
    /// Largest output of one plugin call, bytes (over the plugin's).
    #[serde(default)]
    max_output_bytes: Option<u64>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_transform", message)
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_transform",
        format!("transform '{name}' does not exist"),
    )
}

fn refused(e: &StateError) -> Option<ApiError> {
    match e {
        StateError::TransformExists(name) => Some(ApiError::new(
            StatusCode::CONFLICT,
            "transform_exists",
            format!("transform '{name}' already exists; remove it first or pick another name"),
        )),
        StateError::UnknownTransform(name) => Some(unknown(name)),
        _ => None,
    }
}

async fn commit(state: &AdminState, command: Command) -> Result<(), ApiError> {
    super::commit(state, command, refused).await
}

/// The spec of a deploy request, checked against itself and against this broker's
/// `[plugins]` limits, the most a transform may ask for.
fn spec_of(body: DeployBody, broker: &PluginsConfig) -> Result<TransformSpec, ApiError> {
    let from = match body.from.as_deref() {
        None => StartFrom::Earliest,
        Some(s) => s.parse::<StartFrom>().map_err(invalid)?,
    };
    let mut config = Vec::with_capacity(body.config.len());
    for (k, v) in body.config {
        let Value::String(v) = v else {
            return Err(invalid(format!("config '{k}' must be a string, not {v}")));
        };
        config.push((k, v));
    }
    let on_error = match (body.on_error.as_deref(), body.dead_letter) {
        (None | Some("dead-letter"), Some(topic)) => OnError::DeadLetter { topic },
        (Some("dead-letter"), None) => {
            return Err(invalid(
                "on_error dead-letter needs a dead-letter topic (dead_letter)",
            ))
        }
        (None | Some("stop"), None) => OnError::Stop,
        (Some("stop"), Some(_)) => {
            return Err(invalid(
                "on_error stop and a dead-letter topic contradict each other",
            ))
        }
        (Some(other), _) => {
            return Err(invalid(format!(
                "on_error '{other}' is not a policy: expected stop or dead-letter"
            )))
        }
    };
    let spec = TransformSpec {
        name: body.name,
        id: uuid::Uuid::new_v4().simple().to_string(),
        plugin: body.plugin,
        input: body.input,
        outputs: body.outputs,
        from,
        config,
        deterministic: body.deterministic.unwrap_or(true),
        on_error,
        max_amplification: body.max_amplification.unwrap_or(DEFAULT_MAX_AMPLIFICATION),
        paused: false,
        created_ms: now_ms(),
        restarts: 0,
        limits: LimitOverrides {
            max_memory_bytes: body.max_memory_bytes,
            call_timeout_ms: body.call_timeout_ms,
            max_output_bytes: body.max_output_bytes,
        },
    };
    spec.validate().map_err(|e| invalid(e.to_string()))?;
    validate_limits(&spec.limits, broker).map_err(|e| invalid(e.to_string()))?;
    Ok(spec)
}

/// `POST /v1/transforms`
pub(super) async fn deploy(
    State(state): State<AdminState>,
    body: Result<JsonBody<DeployBody>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // A body that is not a deploy request is an invalid transform like any other bad
    // spec (the code clients already know); a body too large or not JSON is answered
    // as everywhere else.
    let JsonBody(body) = body.map_err(|e| match e.status {
        StatusCode::BAD_REQUEST => invalid(format!("the request body: {}", e.message)),
        _ => e,
    })?;
    let spec = spec_of(body, &state.broker.config().plugins)?;
    let metadata = state.broker.metadata();
    if metadata.transforms.contains_key(&spec.name) {
        return Err(refused(&StateError::TransformExists(spec.name)).expect("answered"));
    }
    super::expect_plugin(&metadata, &spec.plugin, Kind::Transform)?;
    let missing = std::iter::once(spec.input.as_str())
        .chain(spec.written_topics())
        .find(|t| !metadata.topics.contains_key(*t));
    if let Some(topic) = missing {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_topic",
            format!("topic '{topic}' does not exist; create it before deploying the transform"),
        ));
    }
    // Init runs within the transform's own limits: a transform whose plugin cannot
    // even start within them is refused now, not failed later.
    let (config, spec_plugin, limits) =
        (spec.init_config(), spec.plugin.clone(), spec.limits.clone());
    super::try_init(&state, &spec.plugin, move |plugins| {
        plugins
            .open_transform(&spec_plugin, config, &limits)
            .map(drop)
    })
    .await?;
    let name = spec.name.clone();
    commit(
        &state,
        Command::SetTransform {
            spec: Box::new(spec),
            create: true,
        },
    )
    .await?;
    tracing::info!(transform = %name, "transform deployed");
    start(&state, &name).await;
    Ok((StatusCode::CREATED, Json(describe_one(&state, &name)?)))
}

/// Stops this broker's tasks of a paused or removed transform before the answer (the
/// other brokers' tasks check the metadata before every write).
async fn settle(state: &AdminState) {
    if let Err(e) = state.transforms.settle(SETTLE_TIMEOUT).await {
        tracing::warn!(error = %e, "transforms: could not settle after a change");
    }
}

/// Starts this broker's tasks of a deployed or resumed transform now rather than at the
/// next reconcile, and waits (up to [`START_TIMEOUT`]) for them to get past starting.
async fn start(state: &AdminState, name: &str) {
    settle(state).await;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while state
        .transforms
        .reports(name)
        .iter()
        .any(|p| p.state == "paused" || p.state == "starting")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `describe` shows: the spec and, for the partitions this broker leads, their
/// state.
fn describe_one(state: &AdminState, name: &str) -> Result<Value, ApiError> {
    let metadata = state.broker.metadata();
    let spec = metadata.transforms.get(name).ok_or_else(|| unknown(name))?;
    let mut partitions = state.transforms.reports(name);
    if !spec.paused {
        // Resumed a moment ago: the task of such a partition is started (or is about
        // to be, at the next reconcile) but has not said so yet.
        for p in partitions.iter_mut().filter(|p| p.state == "paused") {
            p.state = "starting".into();
        }
    }
    let sum = |f: fn(&crate::transform::runner::PartitionReport) -> u64| -> u64 {
        partitions.iter().map(f).sum()
    };
    let any = |s: &str| partitions.iter().any(|p| p.state == s);
    let status = if spec.paused {
        "paused"
    } else if partitions.is_empty() {
        // It leads none of the input's partitions (or has not picked the transform up
        // yet): their leaders' brokers run them.
        "not_running_here"
    } else if any("failed") {
        "failed"
    } else if any("fenced") {
        "fenced"
    } else if any("stopped") {
        "stopped"
    } else if any("waiting") {
        "waiting"
    } else if any("starting") {
        "starting"
    } else {
        "running"
    };
    let (on_error, dead_letter) = match &spec.on_error {
        OnError::Stop => ("stop", None),
        OnError::DeadLetter { topic } => ("dead-letter", Some(topic.clone())),
    };
    let config: BTreeMap<&str, &str> = spec
        .config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(json!({
        "name": spec.name,
        "plugin": spec.plugin,
        "input": spec.input,
        "outputs": spec.outputs,
        "from": spec.from.to_string(),
        "config": config,
        "deterministic": spec.deterministic,
        "delivery": if spec.deterministic { "exactly-once" } else { "at-least-once" },
        "on_error": on_error,
        "dead_letter": dead_letter,
        "max_amplification": spec.max_amplification,
        // What this broker's instances of the transform run within, and whose setting
        // each limit is (the transform's, its plugin's, or the broker's default).
        "limits": state.plugins.transform_limits(&spec.plugin, &spec.limits),
        "paused": spec.paused,
        "created_ms": spec.created_ms,
        "status": status,
        "broker": state.broker.config().broker.node_id,
        "records_in": sum(|p| p.records_in),
        "records_out": sum(|p| p.records_out),
        "dead_letters": sum(|p| p.dead_letters),
        "errors": sum(|p| p.errors),
        "lag": partitions.iter().map(|p| p.lag).sum::<i64>(),
        // The worst partition's: percentiles of different partitions do not add up,
        // and the slowest partition is the one an operator has to look at.
        "latency_p50_ms": partitions.iter().map(|p| p.latency_p50_ms).max().unwrap_or(0),
        "latency_p99_ms": partitions.iter().map(|p| p.latency_p99_ms).max().unwrap_or(0),
        "partitions": partitions,
    }))
}

/// `GET /v1/transforms`
pub(super) async fn list(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let names: Vec<String> = state.broker.metadata().transforms.keys().cloned().collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match describe_one(&state, &name) {
            Ok(v) => out.push(v),
            // Removed between the two looks.
            Err(_) => continue,
        }
    }
    Ok(Json(json!({ "transforms": out })))
}

/// `GET /v1/transforms/{name}`
pub(super) async fn describe(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    describe_one(&state, &name).map(Json)
}

async fn set_paused(state: &AdminState, name: &str, paused: bool) -> Result<Value, ApiError> {
    let mut spec = state
        .broker
        .metadata()
        .transforms
        .get(name)
        .cloned()
        .ok_or_else(|| unknown(name))?;
    spec.paused = paused;
    if !paused {
        spec.restarts = spec.restarts.wrapping_add(1);
    }
    commit(
        state,
        Command::SetTransform {
            spec: Box::new(spec),
            create: false,
        },
    )
    .await?;
    if paused {
        settle(state).await;
    } else {
        start(state, name).await;
    }
    describe_one(state, name)
}

/// `POST /v1/transforms/{name}/pause`
pub(super) async fn pause(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &name, true).await.map(Json)
}

/// `POST /v1/transforms/{name}/resume`: also restarts partitions that stopped at a
/// failing record or failed.
pub(super) async fn resume(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &name, false).await.map(Json)
}

/// `DELETE /v1/transforms/{name}`
pub(super) async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.broker.metadata().transforms.contains_key(&name) {
        return Err(unknown(&name));
    }
    commit(&state, Command::RemoveTransform { name: name.clone() }).await?;
    settle(&state).await;
    tracing::info!(transform = %name, "transform removed");
    Ok(StatusCode::NO_CONTENT)
}
