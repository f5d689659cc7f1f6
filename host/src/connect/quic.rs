//! Mirroring over QUIC (`--via quic`): a mirror reading a source Quiver cluster
//! through the cluster transport instead of its Kafka listeners.
//!
//! The source answers on the transport's mirror channel with its own Kafka request
//! handler, so every request a mirror makes means what it means on a Kafka listener,
//! errors included; only a mirror's reads are answered ([`crate::kafka::MIRROR_APIS`]).
//! What QUIC adds: every request is a stream of its own on one connection per source
//! broker, so a fetch waiting for data or a partition whose records are slow to come
//! holds up no other request (no head-of-line blocking as on one TCP connection);
//! responses are zstd-compressed ([`crate::net::compress`]); loss recovery and
//! congestion control are QUIC's, per connection, with no TCP connection per fetch
//! session to slow-start again after a loss.
//!
//! Trust is the cluster transport's mutual TLS across two clusters: the mirror
//! presents its broker's own cluster certificate and trusts the source CA it was given
//! (`--source-ca`); the source accepts it when the target cluster's CA is in its
//! `cluster.mirror_clients_ca`, and lets it use the mirror channel alone. ACLs and
//! quotas see it as `User:mirror@<target cluster id>`.
//!
//! ```text
//! request  u8 op | body
//!   op 1 (kafka):   a Kafka request: header and body, no length prefix
//!   op 2 (brokers): empty; asks for every live broker's cluster (QUIC) address
//! response a packed body (crate::net::compress: u8 codec | [u32 plain_len] | body)
//!   op 1: the Kafka response: header and body, no length prefix
//!   op 2: UTF-8 lines `<broker id> <ip:port>`
//! ```
//!
//! The Metadata answer names brokers by their Kafka addresses, which a QUIC mirror
//! cannot use; `--source` names QUIC addresses, and op 2 maps the broker ids Metadata
//! names to theirs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use kafka_protocol::protocol::Request;

use crate::broker::Broker;
use crate::cli::client::{decode_response, encode_request, negotiate, offered};
use crate::config::SecurityProtocol;
use crate::kafka::session::ListenerInfo;
use crate::net::{compress, MirrorClient, NetError};
use crate::tenancy::Principal;

const OP_KAFKA: u8 = 1;
const OP_BROKERS: u8 = 2;

/// Largest message on the mirror channel (a fetch answer carries up to 16 MiB).
pub const MAX_FRAME: u32 = 256 * 1024 * 1024;

/// How long an answer may stop arriving before the request is given up: the source's
/// work and a fetch's long poll (half a second) come before its first byte. A slow
/// answer that keeps arriving is waited for (see [`MirrorClient::call`]).
const REQUEST_STALL: Duration = Duration::from_secs(30);

/// The principal a mirror of cluster `cluster_id` acts as on the source.
pub fn principal_of(cluster_id: &str) -> Principal {
    Principal::user(&format!("mirror@{cluster_id}"))
}

/// The source's side: answers one mirror-channel request from broker `peer` of cluster
/// `cluster_id`.
pub async fn answer(
    broker: Arc<Broker>,
    cluster_id: String,
    peer: i32,
    mut request: Bytes,
) -> Result<Bytes, String> {
    if request.is_empty() {
        return Err("an empty mirror request".into());
    }
    let op = request[0];
    let body = request.split_off(1);
    let plain = match op {
        OP_KAFKA => {
            let listener = Arc::new(ListenerInfo {
                name: broker.config().kafka.security_protocol.name().to_string(),
                // Authenticated by its certificate, as on an SSL listener.
                protocol: SecurityProtocol::Ssl,
                mechanisms: Vec::new(),
            });
            let principal = principal_of(&cluster_id);
            tracing::trace!(peer, %principal, "mirror request");
            crate::kafka::answer_mirror_request(&broker, body, listener, principal).await?
        }
        OP_BROKERS => {
            let mut lines = String::new();
            for b in broker.metadata().live_brokers() {
                lines.push_str(&format!("{} {}\n", b.id, b.cluster_addr));
            }
            Bytes::from(lines)
        }
        other => return Err(format!("unknown mirror request op {other}")),
    };
    let mut out = BytesMut::with_capacity(plain.len() / 2 + 8);
    compress::pack(&mut out, &plain, true);
    Ok(out.freeze())
}

/// Says what a transport failure means for the mirror, naming the source address.
fn explain(error: NetError, address: &str) -> anyhow::Error {
    match error {
        NetError::Connect { reason, .. } => {
            anyhow!("cannot connect over QUIC to the source broker at {address}: {reason}")
        }
        NetError::ConnectionLost { reason, .. } if reason.contains("aborted by peer") => anyhow!(
            "the source broker at {address} refused this broker's connection: {}",
            reason.trim_start_matches("aborted by peer: ")
        ),
        NetError::ConnectionLost { reason, .. } => {
            anyhow!("the QUIC connection to the source broker at {address} was lost: {reason}")
        }
        NetError::Stalled { after, .. } => {
            anyhow!("the source broker at {address} sent nothing of its answer for {after:?}")
        }
        NetError::Remote(message) => {
            anyhow!("the source broker at {address} refused: {message}")
        }
        other => anyhow!("source broker at {address}: {other}"),
    }
}

async fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .with_context(|| format!("resolving {address}"))?
        .next()
        .ok_or_else(|| anyhow!("{address} resolves to no address"))
}

/// The mirror's QUIC client for `spec`'s source, presenting this broker's cluster
/// certificate and trusting `source_ca` (PEM).
pub async fn link(broker: &Broker, source: &str, source_ca: &str) -> anyhow::Result<MirrorClient> {
    let config = broker.config();
    let id = config.broker.node_id;
    let dir = config.cluster.tls_dir.clone().unwrap_or_else(|| {
        config
            .broker
            .data_dir
            .join(crate::net::certs::DEV_CERTS_DIR)
    });
    let read = |name: String| {
        let path = dir.join(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let cert = read(crate::net::certs::broker_cert_file(id))?;
    let key = read(crate::net::certs::broker_key_file(id))?;
    let first = source
        .split(',')
        .map(str::trim)
        .find(|a| !a.is_empty())
        .ok_or_else(|| anyhow!("no source address"))?;
    let family = resolve(first).await?;
    MirrorClient::new(&cert, &key, source_ca.as_bytes(), family, MAX_FRAME)
        .context("setting up the QUIC client for the source")
}

/// Every live source broker's cluster address, asked of the broker at `address`.
pub async fn brokers(link: &MirrorClient, address: &str) -> anyhow::Result<BTreeMap<i32, String>> {
    let addr = resolve(address).await?;
    let answer = link
        .call(addr, Bytes::from_static(&[OP_BROKERS]), REQUEST_STALL)
        .await
        .map_err(|e| explain(e, address))?;
    let text = compress::unpack(answer).map_err(|e| anyhow!("{address} answered: {e}"))?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| anyhow!("{address} answered with broker addresses that are not UTF-8"))?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let parsed = line.split_once(' ').and_then(|(id, addr)| {
            Some((id.parse::<i32>().ok()?, addr.parse::<SocketAddr>().ok()?))
        });
        let Some((id, addr)) = parsed else {
            bail!("{address} answered with a malformed broker line `{line}`");
        };
        out.insert(id, addr.to_string());
    }
    Ok(out)
}

/// Kafka requests to one source broker over QUIC: as [`crate::cli::client::Client`],
/// each request on its own stream.
#[derive(Debug)]
pub struct QuicConn {
    link: Arc<MirrorClient>,
    addr: SocketAddr,
    address: String,
    correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl QuicConn {
    /// Reaches the first of `addresses` (`host:port[,host:port…]`, QUIC addresses)
    /// that answers ApiVersions.
    pub async fn connect(link: Arc<MirrorClient>, addresses: &str) -> anyhow::Result<QuicConn> {
        let mut failures = Vec::new();
        for address in addresses
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Self::connect_one(link.clone(), address).await {
                Ok(conn) => return Ok(conn),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        if failures.is_empty() {
            bail!("no source address given");
        }
        Err(anyhow!("{}", failures.join("; ")))
    }

    async fn connect_one(link: Arc<MirrorClient>, address: &str) -> anyhow::Result<QuicConn> {
        let addr = resolve(address).await?;
        let mut conn = QuicConn {
            link,
            addr,
            address: address.to_string(),
            correlation_id: 0,
            versions: HashMap::new(),
        };
        let response = conn.request(ApiVersionsRequest::default(), 0).await?;
        if response.error_code != 0 {
            bail!(
                "{address} refused ApiVersions with error {}",
                response.error_code
            );
        }
        conn.versions = offered(&response);
        Ok(conn)
    }

    /// The highest version of `api` both sides speak.
    pub fn version(&self, api: ApiKey, ours: i16) -> anyhow::Result<i16> {
        negotiate(&self.versions, &self.address, api, ours)
    }

    /// The source broker's QUIC address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn request<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        frame.put_u8(OP_KAFKA);
        encode_request(&mut frame, request, version, self.correlation_id)?;
        let answer = self
            .link
            .call(self.addr, frame.freeze(), REQUEST_STALL)
            .await
            .map_err(|e| explain(e, &self.address))?;
        let body = compress::unpack(answer)
            .map_err(|e| anyhow!("{} answered {api:?}: {e}", self.address))?;
        decode_response::<R>(body, api, version, self.correlation_id)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest};

    use super::*;

    async fn ask<R: Request>(
        broker: &Arc<Broker>,
        request: R,
        version: i16,
    ) -> Result<Bytes, String> {
        let mut frame = BytesMut::new();
        frame.put_u8(OP_KAFKA);
        encode_request(&mut frame, request, version, 7).unwrap();
        answer(broker.clone(), "other".into(), 1, frame.freeze()).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_are_answered_and_writes_refused() {
        let dir = tempfile::tempdir().unwrap();
        let broker = crate::broker::test_support::single_node(dir.path(), 1, |_| {}).await;

        let metadata = ask(&broker, MetadataRequest::default(), 9).await.unwrap();
        let body = compress::unpack(metadata).unwrap();
        let response = decode_response::<MetadataRequest>(body, ApiKey::Metadata, 9, 7).unwrap();
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.cluster_id.as_deref(), Some(broker.cluster_id()));

        let refused = ask(&broker, ProduceRequest::default(), 7)
            .await
            .unwrap_err();
        assert!(
            refused.starts_with("CLUSTER_AUTHORIZATION_FAILED: Produce is not answered"),
            "{refused}"
        );

        let brokers = answer(
            broker.clone(),
            "other".into(),
            1,
            Bytes::from_static(&[OP_BROKERS]),
        )
        .await
        .unwrap();
        let text = compress::unpack(brokers).unwrap();
        let expected = format!("0 {}\n", broker.config().cluster.advertised());
        assert_eq!(text, expected.as_bytes());

        let unknown = answer(broker, "other".into(), 1, Bytes::from_static(&[9]))
            .await
            .unwrap_err();
        assert_eq!(unknown, "unknown mirror request op 9");
    }

    #[test]
    fn a_mirror_acts_as_its_cluster() {
        assert_eq!(principal_of("eu-west").to_string(), "User:mirror@eu-west");
    }
}
