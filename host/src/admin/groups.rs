//! `/v1/groups`: the consumer groups this broker coordinates, with members, committed
//! offsets and lag.
//!
//! A group lives on the broker leading its `__consumer_offsets` partition, so each
//! broker answers for its own groups; asked about another's, it names the broker that
//! coordinates it. Lag is the partition's high watermark minus the committed offset,
//! for partitions with a replica on this broker (`null` for the others).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kafka_protocol::error::ResponseError;
use serde_json::{json, Value};

use super::{AdminState, ApiError};
use crate::group::{records, OFFSETS_TOPIC};

/// Why this broker cannot describe `group`: it is not its coordinator (naming the one
/// that is), or it is still loading.
fn not_here(state: &AdminState, group: &str, error: ResponseError) -> ApiError {
    if error == ResponseError::CoordinatorLoadInProgress {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "coordinator_loading",
            "this broker is still loading its consumer groups; try again shortly",
        );
    }
    let metadata = state.broker.metadata();
    let coordinator = metadata.topics.get(OFFSETS_TOPIC).and_then(|t| {
        let index = records::partition_for(group, t.partitions);
        let leader = t.assignments.get(usize::try_from(index).ok()?)?.leader;
        metadata.brokers.get(&leader)
    });
    let message = match coordinator {
        Some(b) => format!(
            "group '{group}' is coordinated by broker {} ({}:{}); ask its admin API",
            b.id, b.kafka_host, b.kafka_port
        ),
        None => format!("group '{group}' has no coordinator right now"),
    };
    ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_coordinator", message)
}

fn unknown(group: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_group",
        format!("group '{group}' does not exist; `quiver group list` shows the groups"),
    )
}

/// `GET /v1/groups`
pub(super) async fn list(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let coordinator = state.broker.groups();
    let listed = coordinator.list().map_err(|e| not_here(&state, "", e))?;
    let groups: Vec<Value> = listed
        .into_iter()
        .map(|(group, protocol_type, group_state)| {
            let members = coordinator
                .describe(&group)
                .ok()
                .flatten()
                .map_or(0, |d| d.members.len());
            let lag = offsets(&state, &group)
                .iter()
                .filter_map(|o| o["lag"].as_i64())
                .sum::<i64>();
            json!({
                "group": group,
                "protocol_type": protocol_type,
                "state": group_state.name(),
                "members": members,
                "lag": lag,
            })
        })
        .collect();
    Ok(Json(json!({
        "coordinator": state.broker.config().broker.node_id,
        "groups": groups,
    })))
}

/// A group's committed offsets with the lag behind each partition's high watermark.
pub(super) fn offsets(state: &AdminState, group: &str) -> Vec<Value> {
    let Ok(committed) = state.broker.groups().offsets(group) else {
        return Vec::new();
    };
    committed
        .into_iter()
        .map(|((topic, partition), value)| {
            let hw = state
                .broker
                .partition(&topic, partition)
                .map(|p| p.high_watermark());
            json!({
                "topic": topic,
                "partition": partition,
                "committed_offset": value.offset,
                "metadata": value.metadata,
                "high_watermark": hw,
                "lag": hw.map(|hw| (hw - value.offset).max(0)),
            })
        })
        .collect()
}

/// `GET /v1/groups/{group}`
pub(super) async fn describe(
    State(state): State<AdminState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let description = state
        .broker
        .groups()
        .describe(&group)
        .map_err(|e| not_here(&state, &group, e))?
        .ok_or_else(|| unknown(&group))?;
    let members: Vec<Value> = description
        .members
        .iter()
        .map(|m| {
            let assigned: Vec<Value> = crate::cli::group::assigned_partitions(&m.assignment)
                .into_iter()
                .map(|(topic, partition)| json!({"topic": topic, "partition": partition}))
                .collect();
            json!({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "assignment": assigned,
            })
        })
        .collect();
    let offsets = offsets(&state, &group);
    let lag = offsets
        .iter()
        .filter_map(|o| o["lag"].as_i64())
        .sum::<i64>();
    Ok(Json(json!({
        "group": group,
        "coordinator": state.broker.config().broker.node_id,
        "state": description.state.name(),
        "protocol_type": description.protocol_type,
        "protocol": description.protocol,
        "members": members,
        "offsets": offsets,
        "lag": lag,
    })))
}
