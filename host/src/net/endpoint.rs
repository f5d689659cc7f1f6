//! The QUIC endpoint: one UDP socket serving inbound peers and dialling outbound ones.
//!
//! Outbound connections are cached per peer id and reused by every call; inbound
//! connections each get a task that accepts streams, and each stream gets a task that
//! answers its requests in order. Connections are not shared between directions: a
//! broker calls a peer on the connection it dialled, so who is the client of a
//! connection is never in doubt.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, VarInt};
use rustls::pki_types::CertificateDer;
use tracing::{debug, warn};

use super::certs::Identity;
use super::frame::{self, FrameError, Kind};
use super::stall::{unless_stalled, Counted};
use super::tls::{self, ClusterTls};
use super::{BrokerId, Channel, NetError, Service};
use crate::config::CongestionControl;

/// Keep-alives keep NATs and the idle timer fresh while a connection is quiet …
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// … so a connection that hears nothing for this long has a dead peer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-stream receive window: a replica fetch response of several MiB flows without
/// waiting for window updates.
const STREAM_WINDOW: u32 = 16 << 20;
/// Per-connection receive and send windows: several such streams at once.
const CONNECTION_WINDOW: u32 = 64 << 20;
/// Largest UDP payload path MTU discovery may probe for. In effect the bound is lower:
/// quinn never probes above the peer's `max_udp_payload_size` transport parameter,
/// which stays at quinn's 1,472 bytes, so packets are at most that size even on
/// loopback. Raising that parameter to 65,527 was tried with the transport benchmark
/// (host/examples/transport_bench.rs): it cost more CPU per GiB with 1 MiB answers
/// and stalled a call with 64 KiB ones, so it stays (docs/perf.md, "the price of
/// QUIC").
const MTU_UPPER_BOUND: u16 = 65_527;
/// Concurrent bidirectional streams a peer may open (calls in flight plus sessions).
const MAX_STREAMS: u32 = 1024;
/// UDP socket buffers; the kernel's defaults (~200 KiB) drop packets of a fast QUIC
/// flow even on loopback.
const SOCKET_BUFFER: usize = 8 << 20;
/// Below this the endpoint works but loses packets under load; worth a warning.
const SOCKET_BUFFER_MIN: usize = 4 << 20;

/// Connection close code of an orderly close.
const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
/// Connection close code when the peer's certificate carries no usable identity.
const CLOSE_IDENTITY: VarInt = VarInt::from_u32(1);
/// Stream error code when a malformed frame ends the stream.
const STREAM_MALFORMED: VarInt = VarInt::from_u32(1);
/// Stream error code when a request frame exceeded `max_frame`.
const STREAM_TOO_LARGE: VarInt = VarInt::from_u32(2);

/// This broker's cluster endpoint. Cheap to clone: clones share the socket and the
/// connections.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

/// One cached outbound connection (or none yet), locked while it is being dialled so
/// concurrent first calls to a peer share one handshake.
type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

struct Inner {
    quic: quinn::Endpoint,
    client: quinn::ClientConfig,
    local_addr: SocketAddr,
    max_frame: u32,
    cluster_id: String,
    broker_id: BrokerId,
    peers: Mutex<HashMap<BrokerId, Slot>>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: nobody can call `close` any more, so stop serving.
        self.quic.close(CLOSE_NORMAL, b"endpoint dropped");
        if let Some(task) = self.accept.lock().take() {
            task.abort();
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.inner.local_addr)
            .field("cluster_id", &self.inner.cluster_id)
            .field("broker_id", &self.inner.broker_id)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds the UDP socket (buffers raised), starts accepting. `max_frame` bounds any frame.
    ///
    /// `max_frame` bounds the length prefix of every frame sent or received (3 header
    /// bytes + payload). Must be called within a tokio runtime, which then runs the
    /// endpoint's tasks.
    pub fn bind(
        listen: SocketAddr,
        tls: ClusterTls,
        service: Arc<dyn Service>,
        max_frame: u32,
        congestion: CongestionControl,
    ) -> Result<Endpoint, NetError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime)?;
        let transport = Arc::new(transport_config(congestion));
        let server_crypto = QuicServerConfig::try_from(tls.server_config())
            .map_err(|e| NetError::Tls(format!("server configuration unfit for QUIC: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = QuicClientConfig::try_from(tls.client_config())
            .map_err(|e| NetError::Tls(format!("client configuration unfit for QUIC: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let config = endpoint_config(tls.reset_secret());

        let socket = udp_socket(listen)?;
        let quic =
            quinn::Endpoint::new(config, Some(server), socket, Arc::new(quinn::TokioRuntime))
                .map_err(|source| NetError::Bind {
                    addr: listen,
                    source,
                })?;
        let local_addr = quic.local_addr().map_err(|source| NetError::Bind {
            addr: listen,
            source,
        })?;
        let accept = runtime.spawn(accept_loop(
            quic.clone(),
            service,
            max_frame,
            Arc::from(tls.cluster_id()),
        ));
        debug!(%local_addr, broker_id = tls.broker_id(), "cluster endpoint listening");
        Ok(Endpoint {
            inner: Arc::new(Inner {
                quic,
                client,
                local_addr,
                max_frame,
                cluster_id: tls.cluster_id().to_string(),
                broker_id: tls.broker_id(),
                peers: Mutex::new(HashMap::new()),
                accept: Mutex::new(Some(accept)),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The bound UDP address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This broker's id, as its certificate says.
    pub fn broker_id(&self) -> BrokerId {
        self.inner.broker_id
    }

    /// One request/response on a fresh bidirectional stream of a cached connection to
    /// `peer` at `addr` (connects on first use, reconnects after loss). Fails with
    /// NetError::Timeout after `timeout`.
    ///
    /// A cached connection found closed is replaced before the call. A call that fails
    /// because the peer restarted (a stateless reset: its new process never saw the
    /// request) is retried once on a new connection; other failures are returned, and
    /// the next call reconnects.
    pub async fn call(
        &self,
        peer: BrokerId,
        addr: SocketAddr,
        channel: Channel,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        if let Err((size, max)) = frame::check_size(request.len(), self.inner.max_frame) {
            return Err(NetError::FrameTooLarge { size, max });
        }
        match tokio::time::timeout(timeout, self.call_inner(peer, addr, channel, request)).await {
            Ok(result) => result,
            Err(_) => Err(NetError::Timeout {
                peer,
                addr,
                after: timeout,
            }),
        }
    }

    async fn call_inner(
        &self,
        peer: BrokerId,
        addr: SocketAddr,
        channel: Channel,
        request: Bytes,
    ) -> Result<Bytes, NetError> {
        let mut retried = false;
        loop {
            let (conn, fresh) = self.connection(peer, addr).await?;
            let result = match conn.open_bi().await {
                Ok((mut send, mut recv)) => {
                    exchange(
                        &mut send,
                        &mut recv,
                        channel,
                        request.clone(),
                        self.inner.max_frame,
                        true,
                    )
                    .await
                }
                Err(error) => Err(Failure::Connection {
                    error,
                    before_request: true,
                }),
            };
            match result {
                Ok(response) => return Ok(response),
                Err(Failure::Connection {
                    error,
                    before_request,
                }) => {
                    self.forget(peer, &conn);
                    let peer_restarted = matches!(error, ConnectionError::Reset);
                    if !fresh && !retried && (before_request || peer_restarted) {
                        debug!(peer, %addr, reason = %error, "cluster connection lost; reconnecting");
                        retried = true;
                        continue;
                    }
                    return Err(Failure::Connection {
                        error,
                        before_request,
                    }
                    .into_error(peer, addr));
                }
                Err(failure) => return Err(failure.into_error(peer, addr)),
            }
        }
    }

    /// A persistent stream for a long-lived exchange (replica fetch): requests and
    /// responses alternate on one bidirectional stream, answered in order.
    ///
    /// Connecting is bounded by the idle timeout (5 s). Dropping the session finishes
    /// the stream, which ends the peer's side.
    pub async fn open_session(
        &self,
        peer: BrokerId,
        addr: SocketAddr,
        channel: Channel,
    ) -> Result<Session, NetError> {
        let mut retried = false;
        loop {
            let (conn, fresh) = self.connection(peer, addr).await?;
            match conn.open_bi().await {
                Ok((send, recv)) => {
                    return Ok(Session {
                        peer,
                        addr,
                        channel,
                        send,
                        recv,
                        max_frame: self.inner.max_frame,
                        broken: None,
                    });
                }
                Err(error) => {
                    self.forget(peer, &conn);
                    if !fresh && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(NetError::ConnectionLost {
                        peer,
                        addr,
                        reason: error.to_string(),
                    });
                }
            }
        }
    }

    /// Closes all connections and the endpoint.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.quic.close(CLOSE_NORMAL, b"broker shutting down");
        if let Some(task) = self.inner.accept.lock().take() {
            task.abort();
        }
        self.inner.peers.lock().clear();
        // Lets the close frames go out; bounded, because a peer that vanished never
        // acknowledges them.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.quic.wait_idle()).await;
    }

    /// The cached connection to `peer`, or a new one; `true` when new.
    async fn connection(
        &self,
        peer: BrokerId,
        addr: SocketAddr,
    ) -> Result<(quinn::Connection, bool), NetError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(NetError::Closed);
        }
        let slot = self.inner.peers.lock().entry(peer).or_default().clone();
        let mut cached = slot.lock().await;
        if let Some(conn) = cached.as_ref() {
            if conn.close_reason().is_none() && canonical(conn.remote_address()) == canonical(addr)
            {
                return Ok((conn.clone(), false));
            }
            // Closed, or the peer moved: a call to the new address must not go to the
            // old one.
            conn.close(CLOSE_NORMAL, b"peer address changed");
        }
        *cached = None;
        let conn = self.connect(peer, addr).await?;
        *cached = Some(conn.clone());
        Ok((conn, true))
    }

    async fn connect(
        &self,
        peer: BrokerId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, NetError> {
        let connecting = self
            .inner
            .quic
            .connect_with(self.inner.client.clone(), addr, &tls::server_name(peer))
            .map_err(|e| match e {
                quinn::ConnectError::EndpointStopping => NetError::Closed,
                e => NetError::Connect {
                    peer,
                    addr,
                    reason: e.to_string(),
                },
            })?;
        let conn = connecting.await.map_err(|e| NetError::Connect {
            peer,
            addr,
            reason: tls::tidy(e.to_string()),
        })?;
        debug!(peer, %addr, "connected to cluster peer");
        Ok(conn)
    }

    /// Drops `conn` from the cache unless another call already replaced it.
    fn forget(&self, peer: BrokerId, conn: &quinn::Connection) {
        let slot = self.inner.peers.lock().get(&peer).cloned();
        if let Some(slot) = slot {
            if let Ok(mut cached) = slot.try_lock() {
                if cached.as_ref().map(|c| c.stable_id()) == Some(conn.stable_id()) {
                    *cached = None;
                }
            }
        }
    }
}

/// A persistent stream to one peer; see [`Endpoint::open_session`].
///
/// After any failure other than an error answer from the peer (a timeout, a lost
/// connection, a malformed frame) the stream may be out of step — a late answer would
/// be read as the next one's — so the session refuses further calls with
/// [`NetError::SessionBroken`]; open a new one.
pub struct Session {
    peer: BrokerId,
    addr: SocketAddr,
    channel: Channel,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    max_frame: u32,
    broken: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("addr", &self.addr)
            .field("channel", &self.channel)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// One request on the session's stream. It fails with NetError::Stalled when no
    /// byte of the answer arrives for a whole `stall`, the first byte included: a peer
    /// that does not answer fails after `stall`, while an answer that keeps arriving is
    /// waited for however long it takes (several MiB of replica fetch over a lossy
    /// link, which a fixed deadline would cut and have asked for again and again).
    pub async fn call(&mut self, request: Bytes, stall: Duration) -> Result<Bytes, NetError> {
        if let Some(reason) = &self.broken {
            return Err(NetError::SessionBroken {
                peer: self.peer,
                reason: reason.clone(),
            });
        }
        if let Err((size, max)) = frame::check_size(request.len(), self.max_frame) {
            return Err(NetError::FrameTooLarge { size, max });
        }
        let received = AtomicU64::new(0);
        let mut recv = Counted {
            recv: &mut self.recv,
            received: &received,
        };
        let exchange = exchange(
            &mut self.send,
            &mut recv,
            self.channel,
            request,
            self.max_frame,
            false,
        );
        let error = match unless_stalled(exchange, &received, stall).await {
            Some(Ok(response)) => return Ok(response),
            Some(Err(Failure::Remote(message))) => return Err(NetError::Remote(message)),
            Some(Err(failure)) => failure.into_error(self.peer, self.addr),
            None => NetError::Stalled {
                peer: self.peer,
                addr: self.addr,
                after: stall,
            },
        };
        self.broken = Some(error.to_string());
        Err(error)
    }

    /// The peer this session talks to.
    pub fn peer(&self) -> BrokerId {
        self.peer
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Tells the peer's stream task to stop waiting for requests.
        let _ = self.send.finish();
    }
}

/// How one exchange failed, before it is given the peer's name.
pub(super) enum Failure {
    /// The connection died. `before_request`: nothing of the request was sent.
    Connection {
        error: ConnectionError,
        before_request: bool,
    },
    /// The peer reset or stopped the stream.
    Stream(String),
    /// The peer's answer is not a valid response.
    Protocol(String),
    /// The peer's answer exceeds `max_frame`.
    TooLarge { size: u32, max: u32 },
    /// The peer answered with an error frame.
    Remote(String),
}

impl Failure {
    pub(super) fn into_error(self, peer: BrokerId, addr: SocketAddr) -> NetError {
        match self {
            Failure::Connection { error, .. } => NetError::ConnectionLost {
                peer,
                addr,
                reason: tls::tidy(error.to_string()),
            },
            Failure::Stream(reason) => NetError::Stream { peer, addr, reason },
            Failure::Protocol(reason) => NetError::Protocol { peer, addr, reason },
            Failure::TooLarge { size, max } => NetError::FrameTooLarge {
                size: size.into(),
                max,
            },
            Failure::Remote(message) => NetError::Remote(message),
        }
    }
}

/// Sends one request and reads its answer. `finish`: this is the stream's only
/// request (a call), so the stream is finished after it.
pub(super) async fn exchange<R: frame::FrameSource + Send>(
    send: &mut quinn::SendStream,
    recv: &mut R,
    channel: Channel,
    request: Bytes,
    max_frame: u32,
    finish: bool,
) -> Result<Bytes, Failure> {
    match frame::write(send, channel as u8, Kind::Request, request).await {
        Ok(()) => {}
        Err(quinn::WriteError::ConnectionLost(error)) => {
            return Err(Failure::Connection {
                error,
                before_request: false,
            })
        }
        Err(quinn::WriteError::Stopped(code)) => {
            // The peer refused the request (e.g. too large) and says why in an error
            // frame; prefer its words to ours.
            return match read_response(recv, channel, max_frame).await {
                Err(Failure::Remote(message)) => Err(Failure::Remote(message)),
                _ => Err(Failure::Stream(format!(
                    "the peer stopped reading the request (code {code})"
                ))),
            };
        }
        Err(e) => return Err(Failure::Stream(e.to_string())),
    }
    if finish {
        let _ = send.finish();
    }
    read_response(recv, channel, max_frame).await
}

async fn read_response<R: frame::FrameSource + Send>(
    recv: &mut R,
    channel: Channel,
    max_frame: u32,
) -> Result<Bytes, Failure> {
    let frame = match frame::read(recv, max_frame).await {
        Ok(Some(frame)) => frame,
        Ok(None) => {
            return Err(Failure::Stream(
                "the peer finished the stream without answering".into(),
            ))
        }
        Err(FrameError::Read(quinn::ReadError::ConnectionLost(error))) => {
            return Err(Failure::Connection {
                error,
                before_request: false,
            })
        }
        Err(FrameError::Read(quinn::ReadError::Reset(code))) => {
            return Err(Failure::Stream(format!(
                "the peer reset the stream (code {code})"
            )))
        }
        Err(FrameError::TooLarge { size, max }) => return Err(Failure::TooLarge { size, max }),
        Err(e) => return Err(Failure::Protocol(e.to_string())),
    };
    if frame.version != frame::VERSION {
        return Err(Failure::Protocol(format!(
            "response of protocol version {} (this broker speaks {})",
            frame.version,
            frame::VERSION
        )));
    }
    match Kind::from_u8(frame.kind) {
        Some(Kind::Error) => Err(Failure::Remote(
            String::from_utf8_lossy(&frame.payload).into_owned(),
        )),
        Some(Kind::Ok) if frame.channel == channel as u8 => Ok(frame.payload),
        Some(Kind::Ok) => Err(Failure::Protocol(format!(
            "response on channel {} to a request on channel {}",
            frame.channel, channel as u8
        ))),
        _ => Err(Failure::Protocol(format!(
            "expected a response, got a frame of kind {}",
            frame.kind
        ))),
    }
}

async fn accept_loop(
    quic: quinn::Endpoint,
    service: Arc<dyn Service>,
    max_frame: u32,
    cluster_id: Arc<str>,
) {
    while let Some(incoming) = quic.accept().await {
        tokio::spawn(serve_connection(
            incoming,
            service.clone(),
            max_frame,
            cluster_id.clone(),
        ));
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    service: Arc<dyn Service>,
    max_frame: u32,
    cluster_id: Arc<str>,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            // A refused certificate ends here: the reason names it.
            let reason = tls::tidy(e.to_string());
            warn!(peer_addr = %remote, %reason, "cluster handshake failed; connection refused");
            return;
        }
    };
    let identity = match peer_identity(&conn) {
        Ok(identity) => identity,
        Err(reason) => {
            warn!(peer_addr = %remote, %reason, "cluster peer without identity; connection refused");
            conn.close(CLOSE_IDENTITY, reason.as_bytes());
            return;
        }
    };
    let peer = identity.broker_id;
    // The verifier let a broker of another cluster in only as a mirror client.
    let mirror_client = (identity.cluster_id != *cluster_id).then(|| Arc::new(identity));
    match &mirror_client {
        Some(identity) => {
            tracing::info!(peer = %identity, peer_addr = %remote, "mirror client connected")
        }
        None => debug!(peer, peer_addr = %remote, "cluster peer connected"),
    }
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(
                    peer,
                    mirror_client.clone(),
                    cluster_id.clone(),
                    send,
                    recv,
                    service.clone(),
                    max_frame,
                ));
            }
            Err(e) => {
                debug!(peer, peer_addr = %remote, reason = %e, "cluster peer disconnected");
                return;
            }
        }
    }
}

/// The verified identity of the connection's client (the verifier has already
/// checked the chain and the cluster id).
fn peer_identity(conn: &quinn::Connection) -> Result<Identity, String> {
    let chain = conn
        .peer_identity()
        .ok_or("no client certificate")?
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "the TLS session holds no certificate chain".to_string())?;
    let leaf = chain.first().ok_or("an empty certificate chain")?;
    Identity::of_certificate(leaf).map_err(|e| e.to_string())
}

/// Answers the requests of one stream in order until the peer finishes it.
/// `mirror_client`: the peer is a broker of another cluster, which may use
/// [`Channel::Mirror`] only.
async fn serve_stream(
    peer: BrokerId,
    mirror_client: Option<Arc<Identity>>,
    own_cluster: Arc<str>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: Arc<dyn Service>,
    max_frame: u32,
) {
    loop {
        let request = match frame::read(&mut recv, max_frame).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FrameError::TooLarge { size, max }) => {
                // The payload is still on its way and will not be read: answer why,
                // then stop the stream so the peer's write fails instead of blocking.
                warn!(
                    peer,
                    size, max, "cluster request exceeds max_frame; closing the stream"
                );
                let message =
                    format!("request frame of {size} bytes exceeds max_frame ({max} bytes)");
                let _ = frame::write(&mut send, 0, Kind::Error, message.into()).await;
                let _ = recv.stop(STREAM_TOO_LARGE);
                break;
            }
            Err(FrameError::Read(e)) => {
                debug!(peer, reason = %e, "cluster stream ended");
                return;
            }
            Err(e) => {
                warn!(peer, reason = %e, "malformed cluster frame; closing the stream");
                let _ = recv.stop(STREAM_MALFORMED);
                let _ = send.reset(STREAM_MALFORMED);
                return;
            }
        };
        let answer = if request.version != frame::VERSION {
            Err(format!(
                "unsupported cluster protocol version {} (this broker speaks {})",
                request.version,
                frame::VERSION
            ))
        } else if Kind::from_u8(request.kind) != Some(Kind::Request) {
            warn!(
                peer,
                kind = request.kind,
                "cluster frame is not a request; closing the stream"
            );
            let _ = recv.stop(STREAM_MALFORMED);
            let _ = send.reset(STREAM_MALFORMED);
            return;
        } else if let Some(channel) = Channel::from_u8(request.channel) {
            match &mirror_client {
                Some(identity) if channel != Channel::Mirror => {
                    warn!(peer = %identity, %channel, "a mirror client asked on another channel; refused");
                    Err(format!(
                        "{identity} is a mirror client of this cluster: only the mirror channel is open to it, not {channel}"
                    ))
                }
                Some(identity) => {
                    service
                        .handle_mirror(&identity.cluster_id, peer, request.payload)
                        .await
                }
                None if channel == Channel::Mirror => {
                    service
                        .handle_mirror(&own_cluster, peer, request.payload)
                        .await
                }
                None => service.handle(peer, channel, request.payload).await,
            }
        } else {
            Err(format!("unknown cluster channel {}", request.channel))
        };
        let (kind, payload) = match answer {
            Ok(response) if frame::check_size(response.len(), max_frame).is_err() => (
                Kind::Error,
                Bytes::from(format!(
                    "the response of {} bytes exceeds max_frame ({max_frame} bytes)",
                    response.len()
                )),
            ),
            Ok(response) => (Kind::Ok, response),
            Err(message) => (Kind::Error, Bytes::from(message)),
        };
        if let Err(e) = frame::write(&mut send, request.channel, kind, payload).await {
            debug!(peer, reason = %e, "cannot answer on a cluster stream");
            return;
        }
    }
    let _ = send.finish();
}

/// Keys stateless resets and connection ids from a secret that survives restarts.
///
/// When a broker restarts, peers still hold connections to its previous run. A packet
/// on one reaches the new process, which recognises the connection id as one of its
/// own (same id key) and answers with a stateless reset the peer accepts (same reset
/// key): the peer drops the connection and reconnects at once, instead of waiting out
/// the idle timeout with every call in between timing out.
fn endpoint_config(secret: &[u8; 32]) -> quinn::EndpointConfig {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    let cid_key = {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(b"quiver cluster connection id key v1\0")
            .chain_update(secret)
            .finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    };
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

pub(super) fn transport_config(congestion: CongestionControl) -> quinn::TransportConfig {
    use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    let mut transport = quinn::TransportConfig::default();
    match congestion {
        CongestionControl::Cubic => {
            transport.congestion_controller_factory(Arc::new(CubicConfig::default()))
        }
        CongestionControl::Bbr => {
            transport.congestion_controller_factory(Arc::new(BbrConfig::default()))
        }
        CongestionControl::NewReno => {
            transport.congestion_controller_factory(Arc::new(NewRenoConfig::default()))
        }
    };
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("5 s is a valid idle timeout"),
        ))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    transport.mtu_discovery_config(Some(mtu));
    transport
}

/// The UDP socket, made by hand so its buffers are raised before quinn takes it.
pub(super) fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, NetError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind_error = |source| NetError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(bind_error)?;
    if addr.is_ipv6() {
        // [::] serves IPv4 peers too.
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let recv = socket.recv_buffer_size().unwrap_or(0);
    let send = socket.send_buffer_size().unwrap_or(0);
    if recv < SOCKET_BUFFER_MIN || send < SOCKET_BUFFER_MIN {
        warn!(
            recv,
            send,
            wanted = SOCKET_BUFFER,
            "the kernel capped the cluster UDP socket buffers; raise net.core.rmem_max and net.core.wmem_max to avoid packet loss"
        );
    }
    socket.bind(&addr.into()).map_err(bind_error)?;
    Ok(socket.into())
}

/// An address with IPv4-mapped IPv6 written as IPv4, so a dual-stack socket's view
/// of a peer compares equal to the configured address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
