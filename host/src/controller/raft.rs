//! openraft wiring: the type configuration, the messages controllers exchange, and the
//! network client that carries Raft RPCs over the cluster [`Transport`].
//!
//! Messages are JSON: the metadata log is small and its RPCs are rare next to replica
//! fetches, so readability of a captured message wins over bytes.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::{Deserialize, Serialize};

use super::state::{Applied, Command, StateError};
use super::{RpcKind, Transport};

/// Raft node ids are broker ids.
pub type NodeId = u64;

/// The result of applying one command, as returned to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub Result<Applied, StateError>);

openraft::declare_raft_types!(
    /// The metadata log's Raft types.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The metadata Raft.
pub type MetaRaft = openraft::Raft<TypeConfig>;

/// A Raft RPC from one controller to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Log replication and heartbeats.
    Append(AppendEntriesRequest<TypeConfig>),
    /// Leader election.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// Answer to [`RaftRequest::Append`].
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to [`RaftRequest::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to [`RaftRequest::Snapshot`].
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

/// Serves Raft RPCs arriving from peers.
pub async fn serve(raft: &MetaRaft, request: &[u8]) -> Result<Bytes, String> {
    let request: RaftRequest =
        serde_json::from_slice(request).map_err(|e| format!("malformed raft request: {e}"))?;
    let reply = match request {
        RaftRequest::Append(rpc) => RaftReply::Append(raft.append_entries(rpc).await),
        RaftRequest::Vote(rpc) => RaftReply::Vote(raft.vote(rpc).await),
        RaftRequest::Snapshot(rpc) => RaftReply::Snapshot(raft.install_snapshot(rpc).await),
    };
    Ok(Bytes::from(
        serde_json::to_vec(&reply).expect("raft replies serialise"),
    ))
}

/// Makes [`Network`] clients for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    pub(super) transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            transport: self.transport.clone(),
            target,
            addr: node.addr.parse().ok(),
            node: node.clone(),
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct Network {
    transport: Arc<dyn Transport>,
    target: NodeId,
    addr: Option<SocketAddr>,
    node: BasicNode,
}

impl std::fmt::Debug for NetworkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkFactory").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("target", &self.target)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl Network {
    async fn send<E: std::error::Error>(
        &self,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<RaftReply, RPCError<NodeId, BasicNode, E>> {
        let addr = self.addr.ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&TransportError(format!(
                "controller {} has no valid address '{}'",
                self.target, self.node.addr
            ))))
        })?;
        let bytes = Bytes::from(serde_json::to_vec(&request).expect("raft requests serialise"));
        let reply = self
            .transport
            .call(self.target as i32, addr, RpcKind::Raft, bytes, timeout)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))?;
        serde_json::from_slice(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Network(NetworkError::new(&TransportError(format!(
            "controller {} answered a different RPC",
            self.target
        ))))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .send(RaftRequest::Append(rpc), option.hard_ttl())
            .await?
        {
            RaftReply::Append(Ok(reply)) => Ok(reply),
            RaftReply::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .send(RaftRequest::Snapshot(rpc), option.hard_ttl())
            .await?
        {
            RaftReply::Snapshot(Ok(reply)) => Ok(reply),
            RaftReply::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(RaftRequest::Vote(rpc), option.hard_ttl()).await? {
            RaftReply::Vote(Ok(reply)) => Ok(reply),
            RaftReply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(self.unexpected()),
        }
    }
}
