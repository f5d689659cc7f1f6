//! The mirror's side of the cluster transport: a client-only QUIC endpoint on the
//! target cluster that dials brokers of a source Quiver cluster, presenting this
//! broker's own certificate and trusting only the source's CA.
//!
//! It is separate from the broker's [`Endpoint`](super::Endpoint) because everything
//! about it is another cluster's: the CA it trusts, the broker ids it meets (which may
//! equal this cluster's), the addresses it dials. Connections are cached per source
//! address and every request gets a fresh stream on one, so requests to one source
//! broker are multiplexed: a fetch that waits for data holds up none of the others.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use quinn::crypto::rustls::QuicClientConfig;

use super::endpoint::{exchange, transport_config, udp_socket, Failure};
use super::frame;
use super::stall::{unless_stalled, Counted};
use super::{tls, Channel, NetError};
use crate::config::CongestionControl;

/// The peer id errors name when a source broker's id is not known; the address is.
const UNKNOWN_PEER: i32 = -1;

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// Connections to one source cluster. Cheap to share behind an `Arc`.
pub struct MirrorClient {
    quic: quinn::Endpoint,
    client: quinn::ClientConfig,
    max_frame: u32,
    conns: Mutex<HashMap<SocketAddr, Slot>>,
}

impl fmt::Debug for MirrorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorClient")
            .field("local_addr", &self.quic.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Drop for MirrorClient {
    fn drop(&mut self) {
        self.quic
            .close(quinn::VarInt::from_u32(0), b"mirror stopped");
    }
}

impl MirrorClient {
    /// A client presenting `cert_pem`/`key_pem` (this broker's cluster certificate)
    /// and trusting brokers signed by `source_ca_pem`, on an ephemeral UDP port of the
    /// family of `family` (the first source address). Must be called within a tokio
    /// runtime.
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        source_ca_pem: &[u8],
        family: SocketAddr,
        max_frame: u32,
    ) -> Result<MirrorClient, NetError> {
        tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime)?;
        let crypto = tls::mirror_client_config(cert_pem, key_pem, source_ca_pem)?;
        let crypto = QuicClientConfig::try_from(crypto)
            .map_err(|e| NetError::Tls(format!("client configuration unfit for QUIC: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        // A mirror sends only requests; the source's setting paces the answers.
        client.transport_config(Arc::new(transport_config(CongestionControl::default())));
        let local: SocketAddr = if family.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = udp_socket(local)?;
        let quic = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| NetError::Bind {
            addr: local,
            source,
        })?;
        Ok(MirrorClient {
            quic,
            client,
            max_frame,
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// One request on [`Channel::Mirror`] to the source broker at `addr`, on a fresh
    /// stream of the cached connection (made on first use, remade after a loss).
    ///
    /// `stall` bounds how long the answer may stop arriving, not how long it may take:
    /// the call fails when not one byte of it has come for a whole `stall`. On a lossy
    /// long link a multi-megabyte fetch answer can take longer than any fixed deadline
    /// sized for a healthy one; failing it there would only ask for the same bytes
    /// again, and again, copying nothing.
    pub async fn call(
        &self,
        addr: SocketAddr,
        request: Bytes,
        stall: Duration,
    ) -> Result<Bytes, NetError> {
        self.call_on(Channel::Mirror, addr, request, stall).await
    }

    /// [`MirrorClient::call`] on any channel: tests play a mirror client that tries
    /// the others.
    pub(super) async fn call_on(
        &self,
        channel: Channel,
        addr: SocketAddr,
        request: Bytes,
        stall: Duration,
    ) -> Result<Bytes, NetError> {
        if let Err((size, max)) = frame::check_size(request.len(), self.max_frame) {
            return Err(NetError::FrameTooLarge { size, max });
        }
        let received = AtomicU64::new(0);
        let call = self.call_inner(channel, addr, request, &received);
        unless_stalled(call, &received, stall)
            .await
            .unwrap_or(Err(NetError::Stalled {
                peer: UNKNOWN_PEER,
                addr,
                after: stall,
            }))
    }

    async fn call_inner(
        &self,
        channel: Channel,
        addr: SocketAddr,
        request: Bytes,
        received: &AtomicU64,
    ) -> Result<Bytes, NetError> {
        let conn = self.connection(addr).await?;
        let result = match conn.open_bi().await {
            Ok((mut send, mut recv)) => {
                let mut recv = Counted {
                    recv: &mut recv,
                    received,
                };
                exchange(&mut send, &mut recv, channel, request, self.max_frame, true).await
            }
            Err(error) => Err(Failure::Connection {
                error,
                before_request: true,
            }),
        };
        if matches!(result, Err(Failure::Connection { .. })) {
            self.forget(addr, &conn);
        }
        result.map_err(|failure| failure.into_error(UNKNOWN_PEER, addr))
    }

    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, NetError> {
        let slot = self.conns.lock().entry(addr).or_default().clone();
        let mut cached = slot.lock().await;
        if let Some(conn) = cached.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        *cached = None;
        let connect_error = |reason: String| NetError::Connect {
            peer: UNKNOWN_PEER,
            addr,
            reason,
        };
        // The name is not checked (see tls::mirror_client_config); it must only parse.
        let connecting = self
            .quic
            .connect_with(self.client.clone(), addr, "source.quiver")
            .map_err(|e| connect_error(e.to_string()))?;
        let conn = connecting
            .await
            .map_err(|e| connect_error(tls::tidy(e.to_string())))?;
        tracing::debug!(%addr, "connected to a source broker");
        *cached = Some(conn.clone());
        Ok(conn)
    }

    fn forget(&self, addr: SocketAddr, conn: &quinn::Connection) {
        let slot = self.conns.lock().get(&addr).cloned();
        if let Some(slot) = slot {
            if let Ok(mut cached) = slot.try_lock() {
                if cached.as_ref().map(|c| c.stable_id()) == Some(conn.stable_id()) {
                    *cached = None;
                }
            }
        }
    }
}
