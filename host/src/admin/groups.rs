//! `/v1/groups`: consumer groups with members, committed offsets and lag, for the
//! whole cluster from any broker.
//!
//! A group lives on the broker leading its `__consumer_offsets` partition (its
//! coordinator), so each broker knows only its own groups. Asked about the cluster's,
//! a broker answers for its own and asks every other live broker for theirs over the
//! cluster endpoint (`admin/peers.rs`), as Kafka's admin client asks every broker with
//! ListGroups; asked about one group, it answers itself or asks the coordinator. Lag
//! is computed by the coordinator: the partition's high watermark minus the committed
//! offset, for partitions with a replica there (`null` for the others).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kafka_protocol::error::ResponseError;
use serde_json::{json, Value};

use super::peers::Question;
use super::{AdminState, ApiError};
use crate::group::coordinator_of;

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
    let message = match coordinator_of(&metadata, group).and_then(|id| metadata.brokers.get(&id)) {
        Some(b) => format!(
            "group '{group}' is coordinated by broker {} ({}:{})",
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

/// `GET /v1/groups`: this broker's groups and every other live broker's. A broker that
/// does not answer is listed under `unavailable` with the reason, so a partial list is
/// never mistaken for the whole.
pub(super) async fn list(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let me = state.broker.config().broker.node_id;
    let mut asks = tokio::task::JoinSet::new();
    for peer in state
        .broker
        .metadata()
        .brokers
        .values()
        .filter(|b| !b.fenced && b.id != me)
        .map(|b| b.id)
    {
        let state = state.clone();
        asks.spawn(async move {
            let answer = state.peers.ask(&state, peer, &Question::Groups).await;
            (peer, answer.map_err(|e| e.to_string()))
        });
    }
    let mut answers = vec![(me, local_list(&state).map_err(|e| e.message))];
    while let Some(joined) = asks.join_next().await {
        match joined {
            Ok(answer) => answers.push(answer),
            Err(e) => tracing::warn!(error = %e, "asking a broker for its groups failed"),
        }
    }
    let mut groups = Vec::new();
    let mut unavailable = Vec::new();
    for (broker, answer) in answers {
        match answer {
            Ok(Value::Array(theirs)) => groups.extend(theirs),
            Ok(other) => unavailable.push(json!({
                "broker": broker,
                "reason": format!("answered with {other} rather than a list of groups"),
            })),
            Err(reason) => unavailable.push(json!({ "broker": broker, "reason": reason })),
        }
    }
    groups.sort_by(|a, b| a["group"].as_str().cmp(&b["group"].as_str()));
    unavailable.sort_by_key(|u| u["broker"].as_i64());
    Ok(Json(json!({
        "broker": me,
        "groups": groups,
        "unavailable": unavailable,
    })))
}

/// The groups this broker coordinates, each as `GET /v1/groups` lists it.
pub(super) fn local_list(state: &AdminState) -> Result<Value, ApiError> {
    let coordinator = state.broker.groups();
    let me = state.broker.config().broker.node_id;
    let listed = coordinator.list().map_err(|e| not_here(state, "", e))?;
    let groups: Vec<Value> = listed
        .into_iter()
        .map(|(group, protocol_type, group_state)| {
            let members = coordinator
                .describe(&group)
                .ok()
                .flatten()
                .map_or(0, |d| d.members.len());
            let lag = offsets(state, &group)
                .iter()
                .filter_map(|o| o["lag"].as_i64())
                .sum::<i64>();
            json!({
                "group": group,
                "coordinator": me,
                "protocol_type": protocol_type,
                "state": group_state.name(),
                "members": members,
                "lag": lag,
            })
        })
        .collect();
    Ok(Value::Array(groups))
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

/// `GET /v1/groups/{group}`: answered here when this broker coordinates the group,
/// else by its coordinator.
pub(super) async fn describe(
    State(state): State<AdminState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match local_describe(&state, &group) {
        Err(e) if e.code == "not_coordinator" => {
            let metadata = state.broker.metadata();
            let me = state.broker.config().broker.node_id;
            match coordinator_of(&metadata, &group) {
                Some(coordinator) if coordinator != me => {
                    let question = Question::Group { group };
                    Ok(Json(state.peers.ask(&state, coordinator, &question).await?))
                }
                // Leadership is moving (the metadata says here, the groups do not yet),
                // or there is no leader: a client retries, as Kafka clients do.
                _ => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "coordinator_unavailable",
                    format!("group '{group}' has no coordinator right now; try again shortly"),
                )),
            }
        }
        answered => answered.map(Json),
    }
}

/// A group this broker coordinates, as `GET /v1/groups/{group}` shows it.
pub(super) fn local_describe(state: &AdminState, group: &str) -> Result<Value, ApiError> {
    let description = state
        .broker
        .groups()
        .describe(group)
        .map_err(|e| not_here(state, group, e))?
        .ok_or_else(|| unknown(group))?;
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
    let offsets = offsets(state, group);
    let lag = offsets
        .iter()
        .filter_map(|o| o["lag"].as_i64())
        .sum::<i64>();
    Ok(json!({
        "group": group,
        "coordinator": state.broker.config().broker.node_id,
        "state": description.state.name(),
        "protocol_type": description.protocol_type,
        "protocol": description.protocol,
        "members": members,
        "offsets": offsets,
        "lag": lag,
    }))
}
