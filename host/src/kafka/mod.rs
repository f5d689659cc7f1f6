//! The Kafka wire-protocol listeners: accept TCP connections (TLS on SSL and SASL_SSL
//! listeners), read length-prefixed frames, authenticate SASL clients ([`session`]),
//! dispatch each request to its API handler (one file per API in [`api`]) and write
//! responses back in request order.
//!
//! Requests on one connection are handled one at a time, as Kafka does, which keeps
//! responses ordered without bookkeeping; clients pipeline, so reads and writes are
//! buffered and responses are flushed only when no further request is already waiting.
//! A frame that cannot be trusted — a length that is negative or over
//! `kafka.max_frame_bytes`, an unknown API key, an unsupported version, a body that
//! does not decode — closes that one connection with a logged reason; the broker and
//! every other connection carry on.
//!
//! What a client can hold is bounded by settings, so that no client, however it
//! behaves, takes the broker's memory or file descriptors from the others: connections
//! per listener and per address ([`limits`]), time without a request
//! (`kafka.connections_max_idle_ms`), and time for a request to arrive in full once it
//! has begun (`kafka.request_timeout_ms`), which stops a client trickling a frame a
//! byte at a time from holding its connection and buffer forever.

pub mod api;
pub mod frame;
pub mod limits;
pub mod session;
pub mod versions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;
use crate::tenancy::quota::QuotaType;
use frame::{ChunkedBuf, ResponseFrame};
use session::{ListenerInfo, Session};

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed or the peer went away mid-frame.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix is not acceptable.
    #[error("frame length {length} is outside 1..={max} bytes")]
    FrameLength {
        /// The length the client sent.
        length: i32,
        /// The configured maximum.
        max: u32,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed after {received} of {expected} frame bytes")]
    Truncated {
        /// The frame length announced.
        expected: usize,
        /// Bytes received before the end of the stream.
        received: usize,
    },
    /// The request header names an API key this broker does not know.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// The request's version of a known API is not supported.
    #[error("{api:?} v{version} is not supported (supported: v{min}..=v{max})")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version sent.
        version: i16,
        /// Lowest supported.
        min: i16,
        /// Highest supported.
        max: i16,
    },
    /// The frame's bytes do not decode as the request they claim to be.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which part failed to decode.
        what: String,
        /// The decoder's message.
        reason: String,
    },
    /// The TLS handshake failed (an untrusted or missing client certificate, a client
    /// that does not speak TLS).
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
    /// A request other than ApiVersions or SASL before the client authenticated.
    #[error("{0:?} before SASL authentication finished")]
    Unauthenticated(ApiKey),
    /// The client's login was refused (the answer saying why was sent first).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// No request arrived within `kafka.connections_max_idle_ms`.
    #[error("no request for {idle_ms} ms (kafka.connections_max_idle_ms)")]
    Idle {
        /// The idle timeout.
        idle_ms: u64,
    },
    /// A request began but did not arrive in full within `kafka.request_timeout_ms`.
    #[error("a request was not received in full within {timeout_ms} ms of its first byte ({received} of {expected} bytes; kafka.request_timeout_ms)")]
    SlowRequest {
        /// The deadline.
        timeout_ms: u64,
        /// Bytes of the frame received (the length prefix included).
        received: usize,
        /// Bytes the frame needs (the length prefix included; 4 while the prefix itself
        /// is incomplete).
        expected: usize,
    },
    /// A response could not be written for `kafka.connections_max_idle_ms`: the client
    /// sends requests but does not read the answers.
    #[error("a response could not be written for {idle_ms} ms: the client is not reading (kafka.connections_max_idle_ms)")]
    WriteStalled {
        /// The idle timeout.
        idle_ms: u64,
    },
    /// A response could not be encoded (a broker bug; logged with the request).
    #[error("encoding the {api:?} v{version} response: {reason}")]
    Encode {
        /// The API.
        api: ApiKey,
        /// The version.
        version: i16,
        /// The encoder's message.
        reason: String,
    },
}

/// A bound Kafka listener and how it secures its connections.
pub struct Listener {
    /// The socket.
    pub socket: TcpListener,
    /// Its name, protocol and SASL mechanisms.
    pub info: Arc<ListenerInfo>,
    /// The TLS acceptor of SSL and SASL_SSL listeners.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("info", &self.info)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Connections a listener accepts before it lets the worker thread's other tasks run.
const ACCEPTS_PER_TURN: u32 = 16;

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves Kafka clients on every listener until `shutdown` turns true, then stops
/// accepting, lets each connection finish the request it is handling, and returns once
/// all connections are closed (or `grace` has passed).
pub async fn serve(
    listeners: Vec<Listener>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut tasks = JoinSet::new();
    let kafka = &broker.config().kafka;
    let per_address = limits::PerAddress::new(kafka.max_connections_per_ip);
    for listener in listeners {
        let limits = limits::ConnectionLimits::new(kafka.max_connections, per_address.clone());
        tasks.spawn(serve_listener(
            listener,
            limits,
            broker.clone(),
            shutdown.clone(),
            grace,
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn serve_listener(
    listener: Listener,
    limits: Arc<limits::ConnectionLimits>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    let mut accepted_in_a_row = 0;
    loop {
        tokio::select! {
            accepted = listener.socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    // A flood of connects keeps the listen queue full, and this loop
                    // would accept, admit and spawn for as long as the runtime's budget
                    // lets a task run; the connections already served on this worker
                    // thread get their turn after every few.
                    accepted_in_a_row += 1;
                    if accepted_in_a_row == ACCEPTS_PER_TURN {
                        accepted_in_a_row = 0;
                        tokio::task::yield_now().await;
                    }
                    let admitted = match limits.admit(peer.ip()) {
                        Ok(admitted) => admitted,
                        Err(refused) => {
                            broker.metrics().connection_opened().closing("limit");
                            // Closed now, unread: a refused connection holds nothing.
                            drop(stream);
                            tracing::debug!(%peer, listener = %listener.info.name, reason = %refused, "refusing connection");
                            continue;
                        }
                    };
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    let info = listener.info.clone();
                    let tls = listener.tls.clone();
                    connections.spawn(async move {
                        let _admitted = admitted;
                        let name = info.name.clone();
                        let mut open = broker.metrics().connection_opened();
                        // connection_creation_rate: a connection over its address's
                        // quota is held that long before it is served; one so far over
                        // that even the longest hold would not pay for it is closed.
                        let metadata = broker.metadata();
                        if !metadata.quotas.is_empty() {
                            let hold = broker.security().connection_throttle(&metadata, peer.ip());
                            drop(metadata);
                            if hold >= crate::tenancy::quota::MAX_THROTTLE {
                                open.closing("quota");
                                tracing::debug!(%peer, listener = %name, "closing connection: over its connection_creation_rate quota");
                                return;
                            }
                            if !hold.is_zero() {
                                tokio::time::sleep(hold).await;
                            }
                        }
                        let stopping = shutdown.clone();
                        let ended = handle_connection(stream, peer, info, tls, broker, shutdown).await;
                        open.closing(closed_because(&ended, *stopping.borrow()));
                        match ended {
                            Ok(()) => tracing::debug!(%peer, listener = %name, "connection closed"),
                            Err(ConnectionError::Io(e)) => tracing::debug!(%peer, listener = %name, error = %e, "connection ended"),
                            // Routine, as in Kafka: not worth a warning each.
                            Err(e @ ConnectionError::Idle { .. }) => tracing::debug!(%peer, listener = %name, reason = %e, "closing connection"),
                            Err(e) => tracing::warn!(%peer, listener = %name, reason = %e, "closing connection"),
                        }
                    });
                }
                Err(e) => {
                    // Running out of file descriptors is transient; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections still busy after the grace period; closing them"
        );
        connections.abort_all();
    }
}

/// Why a connection ended, as the `kafka_connections_closed` metric labels it.
fn closed_because(ended: &Result<(), ConnectionError>, stopping: bool) -> &'static str {
    match ended {
        Ok(()) if stopping => "shutdown",
        Ok(()) => "client",
        Err(ConnectionError::Io(_)) => "io",
        Err(ConnectionError::Idle { .. } | ConnectionError::WriteStalled { .. }) => "idle",
        Err(ConnectionError::SlowRequest { .. }) => "slow",
        Err(
            ConnectionError::TlsHandshake(_)
            | ConnectionError::Authentication(_)
            | ConnectionError::Unauthenticated(_),
        ) => "authentication",
        Err(_) => "protocol",
    }
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    info: Arc<ListenerInfo>,
    tls: Option<TlsAcceptor>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    let mut session = Session::new(info, peer);
    let Some(acceptor) = tls else {
        let (read, write) = stream.into_split();
        return serve_connection(read, write, &mut session, broker, shutdown).await;
    };
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            broker.security().logins.failed("tls_handshake");
            return Err(ConnectionError::TlsHandshake(e.to_string()));
        }
        Err(_) => {
            broker.security().logins.failed("tls_handshake");
            return Err(ConnectionError::TlsHandshake(format!(
                "not finished within {TLS_HANDSHAKE_TIMEOUT:?}"
            )));
        }
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    if let Some(certificate) = certificate {
        // rustls verified the chain against security.tls.client_ca_file already.
        let principal = crate::tenancy::tls::principal_of(certificate).ok_or_else(|| {
            broker.security().logins.failed("tls_certificate");
            ConnectionError::TlsHandshake(
                "the client certificate's subject cannot be read as a principal".into(),
            )
        })?;
        if let Err(reason) = session.authenticated(principal.clone(), &broker) {
            broker.security().logins.failed("tenant_connections");
            return Err(ConnectionError::Authentication(reason));
        }
        broker.security().logins.succeeded();
        tracing::debug!(%peer, %principal, "client certificate verified");
    }
    let (read, write) = tokio::io::split(stream);
    serve_connection(read, write, &mut session, broker, shutdown).await
}

async fn serve_connection<R, W>(
    read: R,
    write: W,
    session: &mut Session,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    let kafka = &broker.config().kafka;
    let idle = Duration::from_millis(kafka.connections_max_idle_ms);
    let request_timeout = Duration::from_millis(kafka.request_timeout_ms);
    loop {
        // Idle until a request's first byte arrives; from then on the whole frame has
        // `request_timeout` to arrive.
        let waited = tokio::select! {
            waited = tokio::time::timeout(idle, reader.fill_buf()) => waited,
            _ = shutdown.changed() => return Ok(()),
        };
        match waited {
            Err(_) => {
                return Err(ConnectionError::Idle {
                    idle_ms: kafka.connections_max_idle_ms,
                })
            }
            Ok(Ok([])) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
        let mut received = 0;
        let mut expected = 4;
        let read = read_frame(
            &mut reader,
            session,
            kafka.max_frame_bytes,
            &mut received,
            &mut expected,
        );
        let outcome = tokio::time::timeout(request_timeout, read).await;
        let frame = match outcome {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ConnectionError::SlowRequest {
                    timeout_ms: kafka.request_timeout_ms,
                    received,
                    expected,
                })
            }
        };
        let response = handle_frame(&broker, frame, session).await?;
        if let Some(response) = response {
            for chunk in response.chunks() {
                stalled(idle, writer.write_all(chunk)).await?;
            }
        }
        if let Some(reason) = session.close_after_response.take() {
            stalled(idle, writer.flush()).await?;
            return Err(ConnectionError::Authentication(reason));
        }
        // A throttled client gets its answer now and is not read from until the
        // throttle has passed (KIP-219), so one that ignores throttle_time_ms is held
        // to its quota too.
        let (throttle, kind) = session.take_throttle();
        if !throttle.is_zero() {
            let metadata = broker.metadata();
            let tenant =
                crate::tenancy::tenant::of_principal(&metadata.tenants, &session.principal);
            broker
                .metrics()
                .throttled(tenant.map(|t| t.name.as_str()), kind.key(), throttle);
            stalled(idle, writer.flush()).await?;
            tokio::select! {
                _ = tokio::time::sleep(throttle) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
        // Flush once the client has no further request queued, so pipelined requests
        // share one write.
        if reader.buffer().is_empty() {
            stalled(idle, writer.flush()).await?;
        }
        if *shutdown.borrow() {
            stalled(idle, writer.flush()).await?;
            return Ok(());
        }
    }
}

/// Largest frame a client may send before it has authenticated (SASL tokens are small).
const MAX_UNAUTHENTICATED_FRAME: u32 = 64 * 1024;

/// A write to the client, which must finish within `idle`: a client that stops reading
/// its answers is as idle as one that stops sending requests, and would otherwise hold
/// its connection, and the response it was sent, for ever.
async fn stalled(
    idle: Duration,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), ConnectionError> {
    match tokio::time::timeout(idle, write).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(ConnectionError::WriteStalled {
            idle_ms: idle.as_millis() as u64,
        }),
    }
}

/// Reads one length-prefixed request frame; `None` if the client closed the connection
/// before the length prefix was complete. `received` and `expected` count the frame's
/// bytes (prefix included) as they arrive, so a deadline that cuts the read short can
/// say how far it got.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    session: &Session,
    max: u32,
    received: &mut usize,
    expected: &mut usize,
) -> Result<Option<Bytes>, ConnectionError> {
    let mut prefix = [0u8; 4];
    while *received < 4 {
        match reader.read(&mut prefix[*received..]).await? {
            0 => return Ok(None),
            n => *received += n,
        }
    }
    let length = i32::from_be_bytes(prefix);
    // Checked before allocating: a hostile length must not reserve memory.
    if length <= 0 || length as u32 > max {
        return Err(ConnectionError::FrameLength { length, max });
    }
    // Before authentication a client may send only small SASL frames; a large
    // length from an unauthenticated client is refused before it is read.
    if session.needs_authentication() && length as u32 > MAX_UNAUTHENTICATED_FRAME {
        return Err(ConnectionError::FrameLength {
            length,
            max: MAX_UNAUTHENTICATED_FRAME,
        });
    }
    let length = length as usize;
    *expected = 4 + length;
    // The buffer grows with the bytes that actually arrive, so a client announcing a
    // large frame and sending little holds little memory; reserving at most what has
    // arrived plus one read keeps it within twice the bytes received.
    let mut frame = Vec::with_capacity(length.min(64 * 1024));
    let mut since_yield = 0;
    while frame.len() < length {
        if frame.len() == frame.capacity() {
            frame.reserve_exact((length - frame.len()).min(frame.capacity().max(64 * 1024)));
        }
        let want = (frame.capacity() - frame.len()).min(READ_CHUNK);
        let got = (&mut *reader)
            .take(want as u64)
            .read_buf(&mut frame)
            .await?;
        if got == 0 {
            return Err(ConnectionError::Truncated {
                expected: length,
                received: frame.len(),
            });
        }
        *received += got;
        since_yield += got;
        // A client that can send faster than the broker copies would otherwise keep
        // its socket readable, and this task running, for the whole frame: 100 MiB is
        // tens of milliseconds of copying and page faults that every connection served
        // by this worker thread would wait behind.
        if since_yield >= YIELD_EVERY_BYTES {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
    Ok(Some(Bytes::from(frame)))
}

/// Most bytes of a frame read at once: a read is copied and its pages first touched
/// in one go, so this bounds how long one read keeps the thread.
const READ_CHUNK: usize = 256 * 1024;

/// Bytes of one frame read before its connection gives the worker thread to the
/// others: about a millisecond of copying and page faults.
const YIELD_EVERY_BYTES: usize = 1024 * 1024;

/// What the start of a request frame says, read before anything else of it is trusted.
#[derive(Debug)]
pub enum RequestHead {
    /// ApiVersions in a version this broker does not speak. It is answered in v0 with
    /// the supported ranges, so a newer client can retry with a version this broker
    /// speaks; its header layout may be unknown too, so only the correlation id is read.
    UnknownApiVersions {
        /// The client's correlation id.
        correlation_id: i32,
    },
    /// A request of an API and version this broker handles.
    Request {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// The decoded request header.
        header: RequestHeader,
        /// The rest of the frame: the request body, not yet decoded.
        body: Bytes,
    },
}

/// Reads the API key, version and request header at the start of `frame` (the bytes
/// after the length prefix), refusing unknown APIs and unsupported versions.
pub fn read_request_head(mut frame: Bytes) -> Result<RequestHead, ConnectionError> {
    if frame.len() < 8 {
        return Err(ConnectionError::Malformed {
            what: "request header".into(),
            reason: format!("{} bytes is shorter than any header", frame.len()),
        });
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| ConnectionError::UnknownApiKey(key))?;
    let supported = versions::supported(api);
    if api == ApiKey::ApiVersions && !supported.is_some_and(|r| r.contains(version)) {
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        return Ok(RequestHead::UnknownApiVersions { correlation_id });
    }
    let header_version = api.request_header_version(version.max(0));
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| {
        ConnectionError::Malformed {
            what: "request header".into(),
            reason: e.to_string(),
        }
    })?;
    match supported {
        Some(range) if range.contains(version) => Ok(RequestHead::Request {
            api,
            version,
            header,
            body: frame,
        }),
        Some(range) => Err(ConnectionError::UnsupportedVersion {
            api,
            version,
            min: range.min,
            max: range.max,
        }),
        None => Err(ConnectionError::UnknownApiKey(key)),
    }
}

/// Decodes one request frame, runs its handler and returns the encoded response frame
/// (length prefix included), or `None` when the request expects no response.
async fn handle_frame(
    broker: &Broker,
    frame: Bytes,
    session: &mut Session,
) -> Result<Option<ResponseFrame>, ConnectionError> {
    let (api, version, header, frame) = match read_request_head(frame)? {
        RequestHead::UnknownApiVersions { correlation_id } => {
            let mut header = RequestHeader::default();
            header.correlation_id = correlation_id;
            let response = api::api_versions::unsupported();
            return encode_response(&header, ApiKey::ApiVersions, 0, &response).map(Some);
        }
        RequestHead::Request {
            api,
            version,
            header,
            body,
        } => (api, version, header, body),
    };
    match api {
        ApiKey::ApiVersions => {}
        ApiKey::SaslHandshake => {
            let request = decode_request(api, version, frame)?;
            let response = api::sasl_handshake::handle(broker, session, request, version);
            return encode_response(&header, api, version, &response).map(Some);
        }
        ApiKey::SaslAuthenticate => {
            let request = decode_request(api, version, frame)?;
            let response = api::sasl_authenticate::handle(broker, session, request, version).await;
            return encode_response(&header, api, version, &response).map(Some);
        }
        _ if session.needs_authentication() => {
            return Err(ConnectionError::Unauthenticated(api));
        }
        _ => {}
    }
    let ctx = api::Context {
        broker,
        header: &header,
        peer: session.peer,
        session: &*session,
    };
    // request_percentage: a client already over it is throttled in this response; the
    // time this request takes counts towards the next.
    ctx.quota(QuotaType::RequestPercentage, 0.0, false);
    let started = std::time::Instant::now();
    let response = api::dispatch(ctx, api, version, frame).await;
    let elapsed = started.elapsed();
    broker.metrics().request(api, elapsed);
    ctx.quota(
        QuotaType::RequestPercentage,
        elapsed.as_secs_f64() * 100.0,
        true,
    );
    response
}

/// The APIs a mirror reading this cluster uses, the only ones answered on the
/// cluster transport's mirror channel: reads, never a write.
pub const MIRROR_APIS: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::DescribeConfigs,
    ApiKey::ListOffsets,
    ApiKey::Fetch,
    ApiKey::ListGroups,
    ApiKey::FindCoordinator,
    ApiKey::OffsetFetch,
];

/// Answers one Kafka request that arrived on the mirror channel (`frame`: the request
/// without its length prefix) with the response frame, also without it. The request
/// is handled as on a Kafka listener named `listener`, authenticated as `principal`
/// (ACLs and quotas apply to it as to any client); an API outside [`MIRROR_APIS`] is
/// refused, naming CLUSTER_AUTHORIZATION_FAILED, before anything of it is decoded.
pub async fn answer_mirror_request(
    broker: &Broker,
    frame: Bytes,
    listener: Arc<ListenerInfo>,
    principal: crate::tenancy::Principal,
) -> Result<Bytes, String> {
    let mut session = Session::new(listener, SocketAddr::from(([0, 0, 0, 0], 0)));
    session.principal = principal;
    answer_channel_request(
        broker,
        frame,
        session,
        MIRROR_APIS,
        "the mirror channel, which serves only a mirror's reads",
    )
    .await
}

/// The APIs a broker's own writers (transform and mirror runners) use on a partition
/// led by another broker of the cluster, the only ones answered on the writes channel.
pub const BROKER_WRITE_APIS: &[ApiKey] = &[ApiKey::Produce, ApiKey::DescribeProducers];

/// Answers one Kafka request of a writer on broker `peer` of this cluster, sent on the
/// cluster transport's writes channel (framed as [`answer_mirror_request`]'s). It is
/// handled as the same writer's request on a plaintext Kafka listener was (the
/// anonymous principal, its ACLs and quotas), except that its batches may carry the
/// producer ids the brokers keep for their own writers.
pub async fn answer_broker_write(
    broker: &Broker,
    peer: i32,
    frame: Bytes,
) -> Result<Bytes, String> {
    let mut session = Session::plaintext(SocketAddr::from(([0, 0, 0, 0], 0)));
    session.own_broker = Some(peer);
    answer_channel_request(
        broker,
        frame,
        session,
        BROKER_WRITE_APIS,
        "the writes channel, which serves only the brokers' own writers",
    )
    .await
}

/// Answers a request arriving on a cluster transport channel that serves `apis` only
/// (`what` names the channel in a refusal).
async fn answer_channel_request(
    broker: &Broker,
    frame: Bytes,
    mut session: Session,
    apis: &[ApiKey],
    what: &str,
) -> Result<Bytes, String> {
    if frame.len() >= 2 {
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let allowed = ApiKey::try_from(key).is_ok_and(|api| apis.contains(&api));
        if !allowed {
            let api = ApiKey::try_from(key)
                .map(|api| format!("{api:?}"))
                .unwrap_or_else(|_| format!("API key {key}"));
            return Err(format!(
                "CLUSTER_AUTHORIZATION_FAILED: {api} is not answered on {what} ({})",
                apis.iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let response = handle_frame(broker, frame, &mut session)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the request expects no response")?;
    let mut out = bytes::BytesMut::with_capacity(response.len());
    for chunk in response.chunks() {
        out.extend_from_slice(chunk);
    }
    // The length prefix belongs to TCP framing; the cluster transport frames its own.
    Ok(out.freeze().split_off(4))
}

/// Requests and responses at least this large are decoded and encoded on the blocking
/// pool, not on the runtime's worker threads. Decoding or encoding is one synchronous
/// call, with no point at which it could give the thread back: a Metadata request
/// naming 100,000 topics takes milliseconds each way, which every other connection on
/// that worker would wait. Below this size the hand-off costs more than it spares.
pub const OFFLOAD_BYTES: usize = 256 * 1024;

/// Decodes a request body of type `R`; a body of [`OFFLOAD_BYTES`] or more on the
/// blocking pool.
pub(crate) async fn decode<R: Decodable + Send + 'static>(
    api: ApiKey,
    version: i16,
    body: Bytes,
) -> Result<R, ConnectionError> {
    if body.len() < OFFLOAD_BYTES {
        return decode_request(api, version, body);
    }
    offload(move || decode_request(api, version, body)).await
}

/// Encodes a response frame as [`encode_response`] does; a response of
/// [`OFFLOAD_BYTES`] or more on the blocking pool. Its size is computed here first,
/// which walks the response without allocating.
pub(crate) async fn encode<R: Encodable + Send + 'static>(
    header: &RequestHeader,
    api: ApiKey,
    version: i16,
    response: R,
) -> Result<ResponseFrame, ConnectionError> {
    let large = response
        .compute_size(version)
        .is_ok_and(|size| size >= OFFLOAD_BYTES);
    if !large {
        return encode_response(header, api, version, &response);
    }
    let header = header.clone();
    // Dropped there too: freeing a large response is work of its size as well.
    offload(move || encode_response(&header, api, version, &response)).await
}

/// Runs `work` on the blocking pool. A panic there is the connection task's panic, as
/// it would have been had the work run inline.
async fn offload<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ConnectionError> + Send + 'static,
) -> Result<T, ConnectionError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ConnectionError::Io(std::io::Error::other(
            "the runtime is shutting down",
        ))),
    }
}

/// Decodes a request body of type `R`.
pub fn decode_request<R: Decodable>(
    api: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<R, ConnectionError> {
    let request = R::decode(&mut body, version).map_err(|e| ConnectionError::Malformed {
        what: format!("{api:?} v{version} request"),
        reason: e.to_string(),
    })?;
    Ok(request)
}

/// Encodes a response frame: length prefix, response header, body.
pub(crate) fn encode_response<R: Encodable>(
    header: &RequestHeader,
    api: ApiKey,
    version: i16,
    response: &R,
) -> Result<ResponseFrame, ConnectionError> {
    encode_response_sharing(header, api, version, response, &[])
}

/// Like [`encode_response`], keeping the record sets in `shared` by reference.
pub(crate) fn encode_response_sharing<R: Encodable>(
    header: &RequestHeader,
    api: ApiKey,
    version: i16,
    response: &R,
    shared: &[Bytes],
) -> Result<ResponseFrame, ConnectionError> {
    let encode_err = |e: anyhow::Error| ConnectionError::Encode {
        api,
        version,
        reason: e.to_string(),
    };
    let header_version = api.response_header_version(version);
    let mut response_header = ResponseHeader::default();
    response_header.correlation_id = header.correlation_id;
    // The length goes first, so it is computed before anything is written.
    let length = response_header
        .compute_size(header_version)
        .and_then(|h| Ok(h + response.compute_size(version)?))
        .map_err(encode_err)?;
    let shared_bytes: usize = shared.iter().map(Bytes::len).sum();
    let mut out = ChunkedBuf::new((length + 4).saturating_sub(shared_bytes).max(64), shared);
    out.put_i32(i32::try_from(length).map_err(|_| ConnectionError::Encode {
        api,
        version,
        reason: format!("a response of {length} bytes does not fit a frame"),
    })?);
    response_header
        .encode(&mut out, header_version)
        .map_err(encode_err)?;
    response.encode(&mut out, version).map_err(encode_err)?;
    let frame = out.finish();
    if frame.len() != length + 4 {
        return Err(ConnectionError::Encode {
            api,
            version,
            reason: format!("encoded {} bytes, computed {}", frame.len(), length + 4),
        });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    };

    use kafka_protocol::protocol::StrBytes;

    use super::*;

    /// Array counts in the billions in bodies of a few bytes: the decoder reserves
    /// memory for the count before reading, which once aborted the process (found by
    /// the `kafka_request` fuzz target; see `crate::alloc`). Each must come back as a
    /// malformed request naming the API.
    #[test]
    fn an_array_count_far_beyond_the_body_is_a_malformed_request_not_an_abort() {
        // The fuzzer's input: IncrementalAlterConfigs v1, a compact array whose varint
        // count is about 4 billion, in a 10-byte body.
        let fuzzed = Bytes::from_static(&[0xec; 10]);
        let e = decode_request::<IncrementalAlterConfigsRequest>(
            ApiKey::IncrementalAlterConfigs,
            1,
            fuzzed,
        )
        .unwrap_err();
        assert!(e.to_string().contains("IncrementalAlterConfigs"), "{e}");
        // i32::MAX elements in the classic (non-flexible) encoding.
        let classic = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(decode_request::<MetadataRequest>(ApiKey::Metadata, 1, classic.clone()).is_err());
        assert!(
            decode_request::<ListOffsetsRequest>(ApiKey::ListOffsets, 1, {
                let mut b = vec![0, 0, 0, 1];
                b.extend_from_slice(&classic);
                Bytes::from(b)
            })
            .is_err()
        );
        // A flexible Produce: transactional id null, acks, timeout, then the count.
        let mut produce = vec![0x00, 0xff, 0xff, 0, 0, 0x75, 0x30];
        produce.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(
            decode_request::<ProduceRequest>(ApiKey::Produce, 9, Bytes::from(produce)).is_err()
        );
    }

    /// A Metadata request naming 100,000 topics, as `tests/chaos/hostile.py` sends.
    fn many_topics(n: usize) -> MetadataRequest {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let mut request = MetadataRequest::default();
        request.topics = Some(
            (0..n)
                .map(|i| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(kafka_protocol::messages::TopicName(StrBytes::from_string(
                        format!("absent-{i:06}"),
                    )));
                    t
                })
                .collect(),
        );
        request
    }

    /// Bodies and answers over `OFFLOAD_BYTES` go to the blocking pool: what comes back
    /// must be what the inline path gives, errors included.
    #[tokio::test]
    async fn large_requests_and_responses_are_coded_off_the_worker_with_the_same_results() {
        let mut body = bytes::BytesMut::new();
        many_topics(100_000).encode(&mut body, 4).unwrap();
        let body = body.freeze();
        assert!(body.len() >= OFFLOAD_BYTES);
        let request: MetadataRequest = decode(ApiKey::Metadata, 4, body.clone()).await.unwrap();
        assert_eq!(request.topics.as_ref().map(Vec::len), Some(100_000));
        assert_eq!(request, many_topics(100_000));

        // Cut short: the same error as when decoded inline, naming the request.
        let cut = body.slice(..body.len() - 3);
        let offloaded = decode::<MetadataRequest>(ApiKey::Metadata, 4, cut.clone())
            .await
            .unwrap_err()
            .to_string();
        let inline = decode_request::<MetadataRequest>(ApiKey::Metadata, 4, cut)
            .unwrap_err()
            .to_string();
        assert_eq!(offloaded, inline);
        assert!(
            offloaded.starts_with("malformed Metadata v4 request"),
            "{offloaded}"
        );

        let mut response = kafka_protocol::messages::MetadataResponse::default();
        response.topics = (0..100_000)
            .map(|i| {
                let mut t =
                    kafka_protocol::messages::metadata_response::MetadataResponseTopic::default();
                t.error_code = 3;
                t.name = Some(kafka_protocol::messages::TopicName(StrBytes::from_string(
                    format!("absent-{i:06}"),
                )));
                t
            })
            .collect();
        let mut header = RequestHeader::default();
        header.correlation_id = 9;
        let inline = encode_response(&header, ApiKey::Metadata, 4, &response).unwrap();
        let offloaded = encode(&header, ApiKey::Metadata, 4, response)
            .await
            .unwrap();
        assert!(offloaded.len() >= OFFLOAD_BYTES);
        assert_eq!(offloaded.chunks().concat(), inline.chunks().concat());
    }
}
