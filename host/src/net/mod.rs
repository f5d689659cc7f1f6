//! The cluster transport: one QUIC endpoint per broker, authenticated both ways with
//! the cluster's own certificates, carrying request/response exchanges for the rooms
//! that talk between brokers (the Raft log of the controller, controller RPC, replica
//! fetch, and the admin API's questions about what another broker holds).
//!
//! # What this room owns and why
//!
//! - **Who the peer is.** Every broker holds a certificate signed by the cluster CA whose
//!   subject-alternative-name URI is `quiver://<cluster-id>/broker/<id>` ([`certs`]).
//!   Both sides present one (mutual TLS 1.3, ALPN `quiver-cluster/1`, [`tls`]). A
//!   server accepts only clients whose chain ends at the cluster CA and whose URI names
//!   its cluster; a client accepts only the broker id it meant to reach. Brokers are
//!   addressed by id, never by DNS name, so no hostname is checked — the identity is.
//!   The [`Service`] is told the verified broker id of every request's sender.
//! - **Mirror clients.** A cluster may also accept brokers of other clusters whose CA
//!   is in `cluster.mirror_clients_ca`: their mirrors read from this cluster over
//!   [`Channel::Mirror`], the only channel such a peer may use. A mirror dials with a
//!   [`MirrorClient`], which trusts the source cluster's CA.
//! - **Connections.** One QUIC connection per peer id, opened on first use and cached;
//!   a call that finds it closed reconnects. Keep-alives every second and a five-second
//!   idle timeout notice a dead peer quickly; the stateless-reset key is derived from
//!   the broker's private key, so a restarted peer resets our stale connection on the
//!   first packet instead of letting it idle out.
//! - **Dead peers.** A peer killed outright goes quiet rather than closing; [`probe`]
//!   asks its host whether any socket still holds its port, so the controller can fence
//!   a broker whose process is gone without waiting out its lease.
//! - **Framing.** Each bidirectional stream carries frames (see [`frame`]):
//!
//!   ```text
//!   u32 length (big endian, of what follows) | u8 version (1) | u8 channel | u8 kind | payload
//!   kind: 0 request, 1 response ok, 2 response error (payload = UTF-8 message)
//!   ```
//!
//!   Requests on one stream are answered in order. [`Endpoint::call`] is one request on
//!   a fresh stream (streams are cheap in QUIC and independent, so calls do not wait on
//!   each other); a [`Session`] keeps one stream for a long exchange such as a
//!   follower's fetch loop. A malformed frame closes that one stream, never the
//!   connection or the endpoint.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(tls: quiver::net::ClusterTls, service: std::sync::Arc<dyn quiver::net::Service>)
//! # -> Result<(), quiver::net::NetError> {
//! use std::time::Duration;
//! use quiver::net::{Channel, Endpoint};
//!
//! let endpoint = Endpoint::bind("127.0.0.1:9093".parse().unwrap(), tls, service, 16 << 20, Default::default())?;
//! let answer = endpoint
//!     .call(2, "127.0.0.1:9094".parse().unwrap(), Channel::Raft, "vote".into(), Duration::from_secs(1))
//!     .await?;
//! # let _ = answer; Ok(()) }
//! ```

pub mod certs;
pub mod compress;
mod endpoint;
pub mod frame;
mod mirror;
pub mod probe;
mod stall;
pub mod tls;

#[cfg(test)]
mod endpoint_test;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

pub use endpoint::{Endpoint, Session};
pub use mirror::MirrorClient;
pub use tls::ClusterTls;

/// A broker's id (`broker.node_id`).
pub type BrokerId = i32;

/// Which room a message belongs to; the handler dispatches on it.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The controller's Raft log (votes, append entries, snapshots).
    Raft = 1,
    /// Requests to the controller (registration, heartbeats, metadata changes).
    Controller = 2,
    /// Partition replication (follower fetch).
    Replica = 3,
    /// Read-only questions one broker's admin API asks another about what only that
    /// broker holds (the consumer groups it coordinates), so any broker can answer for
    /// the cluster.
    Admin = 4,
    /// Kafka requests of a mirror on another cluster reading from this one: the only
    /// channel a broker of another cluster (accepted through
    /// `cluster.mirror_clients_ca`) may use.
    Mirror = 5,
    /// Kafka Produce and DescribeProducers of this cluster's own writers (transform and
    /// mirror runners) to partitions led by another broker: the one way to write with
    /// the producer ids the brokers keep for themselves, which the Kafka listener
    /// refuses to clients.
    Writes = 6,
}

impl Channel {
    /// The channel a frame's channel byte names, if any.
    pub fn from_u8(byte: u8) -> Option<Channel> {
        match byte {
            1 => Some(Channel::Raft),
            2 => Some(Channel::Controller),
            3 => Some(Channel::Replica),
            4 => Some(Channel::Admin),
            5 => Some(Channel::Mirror),
            6 => Some(Channel::Writes),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Raft => "raft",
            Channel::Controller => "controller",
            Channel::Replica => "replica",
            Channel::Admin => "admin",
            Channel::Mirror => "mirror",
            Channel::Writes => "writes",
        })
    }
}

/// Handles requests from authenticated peers. Implemented by the broker.
pub trait Service: Send + Sync + 'static {
    /// One request from broker `peer` on `channel`; Ok bytes are sent back as the
    /// response, Err(message) is sent back as an error frame the caller sees as
    /// NetError::Remote(message).
    fn handle(
        &self,
        peer: BrokerId,
        channel: Channel,
        request: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>>;

    /// One request on [`Channel::Mirror`] from broker `peer` of cluster `cluster_id`
    /// (this cluster's own, or a mirror client's). By default answered as any other
    /// channel, without the cluster.
    fn handle_mirror(
        &self,
        cluster_id: &str,
        peer: BrokerId,
        request: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>> {
        let _ = cluster_id;
        self.handle(peer, Channel::Mirror, request)
    }
}

/// Why a cluster-transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// [`Endpoint::bind`] was called outside a tokio runtime.
    #[error("the cluster endpoint needs a tokio runtime: call Endpoint::bind from within one")]
    NoRuntime,
    /// The UDP socket could not be created or bound.
    #[error("cannot bind the cluster endpoint on udp {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A certificate or key file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file (or directory).
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A certificate or key file is unusable: unparsable, for another broker or cluster,
    /// not signed by the CA, or not matching its key.
    #[error("{}: {reason}", path.display())]
    Certificate {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An existing file would be overwritten.
    #[error("{}: {reason}", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
        /// Why it is in the way, and what to do about it.
        reason: String,
    },
    /// A cluster id or host name cannot go into a certificate.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        /// What was given (cluster id, host, broker id).
        what: &'static str,
        /// The value as given.
        value: String,
        /// What would be accepted.
        reason: String,
    },
    /// Making a key or certificate failed.
    #[error("cannot generate {what}: {reason}")]
    Generate {
        /// Which key or certificate.
        what: String,
        /// The generator's error.
        reason: String,
    },
    /// The TLS configuration could not be assembled from the loaded material.
    #[error("cannot set up cluster TLS: {0}")]
    Tls(String),
    /// No connection to the peer could be established (unreachable, or the handshake
    /// was refused by either side; the reason says which).
    #[error("cannot connect to broker {peer} at {addr}: {reason}")]
    Connect {
        /// The broker dialled.
        peer: BrokerId,
        /// Its address.
        addr: SocketAddr,
        /// Why, including a TLS refusal's reason.
        reason: String,
    },
    /// The connection failed while a call was in flight.
    #[error("connection to broker {peer} at {addr} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: BrokerId,
        /// Its address.
        addr: SocketAddr,
        /// QUIC's reason (timed out, reset, closed by peer …).
        reason: String,
    },
    /// The peer reset or stopped the stream of this call.
    #[error("stream to broker {peer} at {addr} failed: {reason}")]
    Stream {
        /// The peer.
        peer: BrokerId,
        /// Its address.
        addr: SocketAddr,
        /// What happened to the stream.
        reason: String,
    },
    /// The peer's answer did not arrive in time.
    #[error("call to broker {peer} at {addr} timed out after {after:?}")]
    Timeout {
        /// The peer.
        peer: BrokerId,
        /// Its address.
        addr: SocketAddr,
        /// The timeout given.
        after: Duration,
    },
    /// The peer's answer stopped arriving: not one byte of it for `after`. A slow
    /// answer that keeps coming is not this.
    #[error("call to broker {peer} at {addr} stalled: no byte of the answer for {after:?}")]
    Stalled {
        /// The peer.
        peer: BrokerId,
        /// Its address.
        addr: SocketAddr,
        /// How long nothing arrived.
        after: Duration,
    },
    /// The peer's [`Service`] (or its frame checks) answered with an error frame.
    #[error("the peer answered with an error: {0}")]
    Remote(String),
    /// A frame would exceed `max_frame`; nothing was sent (or the received frame was
    /// refused before its payload was read).
    #[error("a frame of {size} bytes (3 header bytes + payload) exceeds max_frame ({max} bytes)")]
    FrameTooLarge {
        /// Length of the frame after its length prefix.
        size: u64,
        /// The limit.
        max: u32,
    },
    /// The peer sent something that is not a valid response frame.
    #[error("broker {peer} at {addr} sent a malformed frame: {reason}")]
    Protocol {
        /// The peer.
        peer: BrokerId,
        /// Its address.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// An earlier failure left a [`Session`]'s stream out of step.
    #[error("the session with broker {peer} is unusable after an earlier failure ({reason}); open a new one")]
    SessionBroken {
        /// The peer.
        peer: BrokerId,
        /// The failure that broke it.
        reason: String,
    },
    /// [`Endpoint::close`] was called.
    #[error("the cluster endpoint is closed")]
    Closed,
}
