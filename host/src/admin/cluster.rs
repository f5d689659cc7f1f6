//! `GET /v1/cluster`: the controller, Raft term and commit index, every broker, and the
//! partitions that are under-replicated (ISR smaller than the replica set) or offline
//! (no leader), as this broker's metadata replica sees them.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AdminState;

/// Answers `GET /v1/cluster`.
pub(super) async fn status(State(state): State<AdminState>) -> Json<Value> {
    let broker = &state.broker;
    let controller = broker.controller();
    let raft = controller.raft_status();
    let metadata = broker.metadata();
    let brokers: Vec<Value> = metadata
        .brokers
        .values()
        .map(|b| {
            json!({
                "id": b.id,
                "kafka": format!("{}:{}", b.kafka_host, b.kafka_port),
                "cluster": b.cluster_addr.to_string(),
                "rack": b.rack,
                "fenced": b.fenced,
            })
        })
        .collect();
    let mut under_replicated = Vec::new();
    let mut offline = Vec::new();
    for topic in metadata.topics.values() {
        for (index, p) in topic.assignments.iter().enumerate() {
            let entry = json!({"topic": topic.name, "partition": index});
            if p.is_offline() {
                offline.push(entry);
            } else if p.is_under_replicated() {
                under_replicated.push(entry);
            }
        }
    }
    Json(json!({
        "cluster_id": broker.cluster_id(),
        "broker": controller.id(),
        "controller": raft.leader,
        "raft": {
            "term": raft.term,
            "commit_index": raft.commit_index,
            "voters": raft.voters,
            "learners": raft.learners,
        },
        "brokers": brokers,
        "under_replicated": under_replicated,
        "offline": offline,
    }))
}
