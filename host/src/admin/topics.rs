//! `/v1/topics`: list, create, describe and delete topics.
//!
//! A topic's replicas, leader and ISR come from this broker's replica of the metadata,
//! so any broker answers for every topic. Offsets and sizes are a replica's own: they
//! are given for partitions with a replica on this broker and are `null` elsewhere (ask
//! the leader's admin API, or `quiver topic describe`, which asks each leader).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kafka_protocol::error::ResponseError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::JsonBody;
use super::{AdminState, ApiError};
use crate::broker::TopicError;

/// The body of `POST /v1/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTopic {
    name: String,
    /// Default: the broker's `kafka.default_partitions`.
    #[serde(default)]
    partitions: Option<i32>,
    /// Default: the cluster's `cluster.default_replication_factor`.
    #[serde(default)]
    replication_factor: Option<i16>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// A topic error as the answer a client of the admin API gets.
fn topic_error(e: TopicError) -> ApiError {
    let (status, code) = match e.code() {
        ResponseError::UnknownTopicOrPartition => (StatusCode::NOT_FOUND, "unknown_topic"),
        ResponseError::TopicAlreadyExists => (StatusCode::CONFLICT, "topic_exists"),
        ResponseError::PolicyViolation => (StatusCode::FORBIDDEN, "tenant_limit"),
        ResponseError::RequestTimedOut | ResponseError::UnknownServerError => {
            (StatusCode::SERVICE_UNAVAILABLE, "controller_unavailable")
        }
        ResponseError::KafkaStorageError => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_topic"),
    };
    ApiError::new(status, code, e.to_string())
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_topic",
        format!("topic '{name}' does not exist; `quiver topic list` shows the topics"),
    )
}

/// One topic's summary, as listed.
fn summary(state: &AdminState, meta: &crate::controller::state::TopicMeta) -> Value {
    let under = meta
        .assignments
        .iter()
        .filter(|p| p.is_under_replicated())
        .count();
    let offline = meta.assignments.iter().filter(|p| p.is_offline()).count();
    let local = state.broker.topic(&meta.name);
    json!({
        "name": meta.name,
        "id": meta.id.to_string(),
        "internal": meta.internal,
        "partitions": meta.partitions,
        "replication_factor": meta.assignments.first().map_or(0, |p| p.replicas.len()),
        "configs": meta.configs,
        "under_replicated_partitions": under,
        "offline_partitions": offline,
        "local_size_bytes": local.map_or(0, |t| {
            t.partitions.iter().map(|p| p.log().size_bytes()).sum::<u64>()
        }),
    })
}

/// `GET /v1/topics`
pub(super) async fn list(State(state): State<AdminState>) -> Json<Value> {
    let metadata = state.broker.metadata();
    let topics: Vec<Value> = metadata
        .topics
        .values()
        .map(|t| summary(&state, t))
        .collect();
    Json(json!({ "topics": topics }))
}

/// `GET /v1/topics/{topic}`
pub(super) async fn describe(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    describe_one(&state, &name).map(Json)
}

fn describe_one(state: &AdminState, name: &str) -> Result<Value, ApiError> {
    let metadata = state.broker.metadata();
    let meta = metadata.topics.get(name).ok_or_else(|| unknown(name))?;
    let local = state.broker.topic(name);
    let partitions: Vec<Value> = meta
        .assignments
        .iter()
        .enumerate()
        .map(|(index, assignment)| {
            let replica = local.as_ref().and_then(|t| t.partition(index as i32));
            let leader = (!assignment.is_offline()).then_some(assignment.leader);
            json!({
                "partition": index,
                "leader": leader,
                "leader_epoch": assignment.leader_epoch,
                "replicas": assignment.replicas,
                "isr": assignment.isr,
                "under_replicated": assignment.is_under_replicated(),
                "log_start_offset": replica.map(|p| p.log().log_start_offset()),
                "high_watermark": replica.map(|p| p.high_watermark()),
                "log_end_offset": replica.map(|p| p.log().log_end_offset()),
                "size_bytes": replica.map(|p| p.log().size_bytes()),
                "storage_error": replica.and_then(|p| p.storage_failure()).map(|e| e.to_string()),
            })
        })
        .collect();
    let mut out = summary(state, meta);
    out["partition_details"] = Value::Array(partitions);
    Ok(out)
}

/// `POST /v1/topics`
pub(super) async fn create(
    State(state): State<AdminState>,
    JsonBody(request): JsonBody<CreateTopic>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state
        .broker
        .create_topic(
            &request.name,
            request.partitions.unwrap_or(-1),
            request.replication_factor.unwrap_or(-1),
            request.configs,
            false,
        )
        .await
        .map_err(topic_error)?;
    Ok((
        StatusCode::CREATED,
        Json(describe_one(&state, &request.name)?),
    ))
}

/// `DELETE /v1/topics/{topic}`
pub(super) async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state.broker.metadata().topics.get(&name) {
        None => return Err(unknown(&name)),
        Some(meta) if meta.internal => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "internal_topic",
                format!("topic '{name}' is internal to the broker and cannot be deleted"),
            ))
        }
        Some(_) => {}
    }
    state
        .broker
        .delete_topic(&name)
        .await
        .map_err(topic_error)?;
    Ok(StatusCode::NO_CONTENT)
}
