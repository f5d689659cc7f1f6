//! `/v1/mirrors`: create, list, describe, pause, resume, delete, and fail a consumer
//! group over to this cluster with translated offsets.
//!
//! A create is checked here before it reaches the controller: the spec itself, the
//! plugin (deployed, and a connector) with the mirror's configuration run through its
//! `init` once on this broker. The source is not required to be reachable: a mirror
//! created during a source outage starts copying when the source returns, and its
//! describe says why it waits.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{ApiKey, GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AdminState, ApiError};
use crate::broker::now_ms;
use crate::cli::client::Client;
use crate::connect::spec::{MirrorSpec, Via};
use crate::controller::state::{Command, StateError};
use crate::plugin::Kind;

/// The body of `POST /v1/mirrors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    source: String,
    source_alias: String,
    #[serde(default)]
    plugin: Option<String>,
    /// Regular expression of source topics (passed to the plugin as `topics`).
    #[serde(default)]
    topics: Option<String>,
    /// Regular expression of groups (passed to the plugin as `groups`).
    #[serde(default)]
    groups: Option<String>,
    /// kafka (default) or quic.
    #[serde(default)]
    via: Option<String>,
    /// The source cluster's CA as PEM text (for quic).
    #[serde(default)]
    source_ca: Option<String>,
    /// Plugin configuration: an object of strings, kept in the order given.
    #[serde(default)]
    config: serde_json::Map<String, Value>,
    #[serde(default)]
    exactly_once: Option<bool>,
    #[serde(default)]
    replication_factor: Option<i16>,
    #[serde(default)]
    exclude_configs: Vec<String>,
    #[serde(default)]
    discovery_interval_ms: Option<u64>,
    #[serde(default)]
    checkpoint_interval_ms: Option<u64>,
}

/// The body of `POST /v1/mirrors/{name}/failover`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FailoverBody {
    group: String,
    /// Only show what would be committed.
    #[serde(default)]
    dry_run: bool,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_mirror", message)
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_mirror",
        format!("mirror '{name}' does not exist"),
    )
}

fn refused(e: &StateError) -> Option<ApiError> {
    match e {
        StateError::MirrorExists(name) => Some(ApiError::new(
            StatusCode::CONFLICT,
            "mirror_exists",
            format!("mirror '{name}' already exists; delete it first or pick another name"),
        )),
        StateError::UnknownMirror(name) => Some(unknown(name)),
        _ => None,
    }
}

async fn commit(state: &AdminState, command: Command) -> Result<(), ApiError> {
    super::commit(state, command, refused).await
}

fn spec_of(body: CreateBody) -> Result<MirrorSpec, ApiError> {
    let via = match body.via.as_deref() {
        None => Via::Kafka,
        Some(v) => v.parse::<Via>().map_err(|e| invalid(e.to_string()))?,
    };
    let mut config = Vec::with_capacity(body.config.len() + 2);
    for (key, value) in [("topics", body.topics), ("groups", body.groups)] {
        if let Some(value) = value {
            config.push((key.to_string(), value));
        }
    }
    for (k, v) in body.config {
        let Value::String(v) = v else {
            return Err(invalid(format!("config '{k}' must be a string, not {v}")));
        };
        config.push((k, v));
    }
    let spec = MirrorSpec {
        name: body.name,
        id: uuid::Uuid::new_v4().simple().to_string(),
        source: body.source,
        alias: body.source_alias,
        via,
        source_ca: body.source_ca,
        plugin: body.plugin.unwrap_or_else(|| "mirror".into()),
        config,
        exactly_once: body.exactly_once.unwrap_or(false),
        replication_factor: body.replication_factor.unwrap_or(0),
        excluded_configs: body.exclude_configs,
        discovery_interval_ms: body.discovery_interval_ms.unwrap_or(5_000),
        checkpoint_interval_ms: body.checkpoint_interval_ms.unwrap_or(5_000),
        paused: false,
        created_ms: now_ms(),
    };
    spec.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(spec)
}

/// `POST /v1/mirrors`
pub(super) async fn create(
    State(state): State<AdminState>,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| invalid(format!("the request body: {}", e.body_text())))?;
    let spec = spec_of(body)?;
    let metadata = state.broker.metadata();
    if metadata.mirrors.contains_key(&spec.name) {
        return Err(refused(&StateError::MirrorExists(spec.name)).expect("answered"));
    }
    super::expect_plugin(&metadata, &spec.plugin, Kind::Connector)?;
    let (config, plugin) = (spec.config.clone(), spec.plugin.clone());
    super::try_init(&state, &spec.plugin, move |plugins| {
        plugins.open_connector(&plugin, config).map(drop)
    })
    .await?;
    let name = spec.name.clone();
    commit(
        &state,
        Command::SetMirror {
            spec: Box::new(spec),
            create: true,
        },
    )
    .await?;
    tracing::info!(mirror = %name, "mirror created");
    Ok((StatusCode::CREATED, Json(describe_one(&state, &name)?)))
}

fn describe_one(state: &AdminState, name: &str) -> Result<Value, ApiError> {
    let metadata = state.broker.metadata();
    let spec = metadata.mirrors.get(name).ok_or_else(|| unknown(name))?;
    let runner = metadata
        .topics
        .get(crate::connect::offsets::MIRRORS_TOPIC)
        .and_then(|t| t.assignments.first())
        .map(|a| a.leader);
    let report = state.mirrors.report(name);
    let status = if spec.paused {
        "paused".to_string()
    } else {
        match &report {
            Some(r) if !r.state.is_empty() => r.state.clone(),
            Some(_) => "starting".into(),
            None => "elsewhere".into(),
        }
    };
    let config: BTreeMap<&str, &str> = spec
        .config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let behind: i64 = report
        .iter()
        .flat_map(|r| r.topics.values())
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.behind)
        .sum();
    Ok(json!({
        "name": spec.name,
        "source": spec.source,
        "source_alias": spec.alias,
        "via": spec.via,
        "plugin": spec.plugin,
        "config": config,
        "exactly_once": spec.exactly_once,
        "replication_factor": spec.replication_factor,
        "exclude_configs": spec.excluded_configs,
        "discovery_interval_ms": spec.discovery_interval_ms,
        "checkpoint_interval_ms": spec.checkpoint_interval_ms,
        "paused": spec.paused,
        "created_ms": spec.created_ms,
        "status": status,
        "runs_on": runner,
        "behind": behind,
        "report": report,
    }))
}

/// `GET /v1/mirrors`
pub(super) async fn list(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let names: Vec<String> = state.broker.metadata().mirrors.keys().cloned().collect();
    let out: Vec<Value> = names
        .iter()
        .filter_map(|name| describe_one(&state, name).ok())
        .collect();
    Ok(Json(json!({ "mirrors": out })))
}

/// `GET /v1/mirrors/{name}`
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
        .mirrors
        .get(name)
        .cloned()
        .ok_or_else(|| unknown(name))?;
    spec.paused = paused;
    commit(
        state,
        Command::SetMirror {
            spec: Box::new(spec),
            create: false,
        },
    )
    .await?;
    describe_one(state, name)
}

/// `POST /v1/mirrors/{name}/pause`
pub(super) async fn pause(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &name, true).await.map(Json)
}

/// `POST /v1/mirrors/{name}/resume`
pub(super) async fn resume(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &name, false).await.map(Json)
}

/// `DELETE /v1/mirrors/{name}`: target topics stay.
pub(super) async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.broker.metadata().mirrors.contains_key(&name) {
        return Err(unknown(&name));
    }
    commit(&state, Command::RemoveMirror { name: name.clone() }).await?;
    tracing::info!(mirror = %name, "mirror deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/mirrors/{name}/checkpoints`: every mirrored group's translated offsets.
pub(super) async fn checkpoints(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let spec = state
        .broker
        .metadata()
        .mirrors
        .get(&name)
        .cloned()
        .ok_or_else(|| unknown(&name))?;
    let checkpoints = state.mirrors.checkpoints(&spec).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "checkpoints_unavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(json!({ "mirror": name, "groups": checkpoints })))
}

fn kafka_error(e: anyhow::Error) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "group_coordinator_unavailable",
        format!("{e:#}"),
    )
}

/// `POST /v1/mirrors/{name}/failover`: commits the group's translated offsets to the
/// group here, so its consumers can move to this cluster. Refused while the group has
/// members here (they would overwrite the offsets).
pub(super) async fn failover(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<FailoverBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| invalid(format!("the request body: {}", e.body_text())))?;
    let group = body.group;
    let spec = state
        .broker
        .metadata()
        .mirrors
        .get(&name)
        .cloned()
        .ok_or_else(|| unknown(&name))?;
    let checkpoints = state.mirrors.checkpoints(&spec).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "checkpoints_unavailable",
            e.to_string(),
        )
    })?;
    let Some(checkpoint) = checkpoints.get(&group) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_checkpoint",
            format!(
                "mirror '{name}' has no checkpoint for group '{group}' yet: the group must have committed offsets at the source for mirrored topics, and the plugin must select it; checkpoints are taken every {} ms",
                spec.checkpoint_interval_ms
            ),
        ));
    };
    // Through the Kafka protocol, as any admin tool: the group's coordinator may be
    // another broker of this cluster.
    let listen = state.broker.config().kafka.listen.to_string();
    let mut client = Client::connect(&listen).await.map_err(kafka_error)?;
    let mut coordinator = crate::cli::group::coordinator(&mut client, &group)
        .await
        .map_err(kafka_error)?;
    let described = crate::cli::group::describe_group(&mut coordinator, &group)
        .await
        .map_err(kafka_error)?;
    if let Some(g) = described.groups.first() {
        if !g.members.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "group_active",
                format!(
                    "group '{group}' has {} active member(s) here (state {}); stop its consumers on this cluster before failing it over",
                    g.members.len(),
                    g.group_state.as_str()
                ),
            ));
        }
    }
    let applied: Vec<Value> = checkpoint
        .offsets
        .iter()
        .map(|o| {
            json!({
                "topic": o.target_topic,
                "partition": o.partition,
                "offset": o.target_offset,
                "source_topic": o.source_topic,
                "source_offset": o.source_offset,
            })
        })
        .collect();
    if !body.dry_run {
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for o in &checkpoint.offsets {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = o.partition;
            p.committed_offset = o.target_offset;
            by_topic.entry(&o.target_topic).or_default().push(p);
        }
        let mut request = OffsetCommitRequest::default();
        request.group_id = GroupId(StrBytes::from_string(group.clone()));
        request.generation_id_or_member_epoch = -1;
        request.topics = by_topic
            .into_iter()
            .map(|(t, partitions)| {
                let mut topic = OffsetCommitRequestTopic::default();
                topic.name = TopicName(StrBytes::from_string(t.to_string()));
                topic.partitions = partitions;
                topic
            })
            .collect();
        let version = coordinator
            .version(ApiKey::OffsetCommit, 8)
            .map_err(kafka_error)?;
        let response = coordinator
            .request(request, version)
            .await
            .map_err(kafka_error)?;
        for t in response.topics {
            for p in t.partitions {
                if let Some(e) = kafka_protocol::error::ResponseError::try_from_code(p.error_code) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "commit_refused",
                        format!(
                            "committing {}-{} for group '{group}': {e:?}",
                            t.name.0.as_str(),
                            p.partition_index
                        ),
                    ));
                }
            }
        }
        tracing::info!(mirror = %name, %group, partitions = applied.len(), "group failed over with translated offsets");
    }
    Ok(Json(json!({
        "mirror": name,
        "group": group,
        "checkpoint_ms": checkpoint.time_ms,
        "dry_run": body.dry_run,
        "offsets": applied,
    })))
}
