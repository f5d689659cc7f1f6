//! The Kafka wire-protocol listener: accepts TCP connections, reads length-prefixed
//! frames, dispatches each request to its API handler (one file per API in [`api`]) and
//! writes responses back in request order.
//!
//! Requests on one connection are handled one at a time, as Kafka does, which keeps
//! responses ordered without bookkeeping; clients pipeline, so reads and writes are
//! buffered and responses are flushed only when no further request is already waiting.
//! A frame that cannot be trusted — a length that is negative or over
//! `kafka.max_frame_bytes`, an unknown API key, an unsupported version, a body that
//! does not decode — closes that one connection with a logged reason; the broker and
//! every other connection carry on.

pub mod api;
pub mod frame;
pub mod versions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;
use frame::{ChunkedBuf, ResponseFrame};

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

/// Serves Kafka clients on `listener` until `shutdown` turns true, then stops accepting,
/// lets each connection finish the request it is handling, and returns once all
/// connections are closed (or `grace` has passed).
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        match handle_connection(stream, peer, broker, shutdown).await {
                            Ok(()) => tracing::debug!(%peer, "connection closed"),
                            Err(ConnectionError::Io(e)) => tracing::debug!(%peer, error = %e, "connection ended"),
                            Err(e) => tracing::warn!(%peer, reason = %e, "closing connection"),
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

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    let max = broker.config().kafka.max_frame_bytes;
    loop {
        let length = tokio::select! {
            length = reader.read_i32() => match length {
                Ok(length) => length,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            },
            _ = shutdown.changed() => return Ok(()),
        };
        // Checked before allocating: a hostile length must not reserve memory.
        if length <= 0 || length as u32 > max {
            return Err(ConnectionError::FrameLength { length, max });
        }
        // The buffer grows with the bytes that actually arrive, so a client announcing a
        // large frame and sending little holds little memory.
        let mut frame = Vec::with_capacity((length as usize).min(64 * 1024));
        (&mut reader)
            .take(length as u64)
            .read_to_end(&mut frame)
            .await?;
        if frame.len() != length as usize {
            return Err(ConnectionError::Truncated {
                expected: length as usize,
                received: frame.len(),
            });
        }
        let response = handle_frame(&broker, Bytes::from(frame), peer).await?;
        if let Some(response) = response {
            for chunk in response.chunks() {
                writer.write_all(chunk).await?;
            }
        }
        // Flush once the client has no further request queued, so pipelined requests
        // share one write.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
        if *shutdown.borrow() {
            writer.flush().await?;
            return Ok(());
        }
    }
}

/// Decodes one request frame, runs its handler and returns the encoded response frame
/// (length prefix included), or `None` when the request expects no response.
async fn handle_frame(
    broker: &Broker,
    mut frame: Bytes,
    peer: SocketAddr,
) -> Result<Option<ResponseFrame>, ConnectionError> {
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
        // An unknown ApiVersions version is answered in v0 with the supported ranges, so
        // a newer client can retry with a version this broker speaks. Its header layout
        // may be unknown too; only the correlation id is needed.
        let mut header = RequestHeader::default();
        header.correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let response = api::api_versions::unsupported();
        return encode_response(&header, ApiKey::ApiVersions, 0, &response).map(Some);
    }
    let header_version = api.request_header_version(version.max(0));
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| {
        ConnectionError::Malformed {
            what: "request header".into(),
            reason: e.to_string(),
        }
    })?;
    let ctx = api::Context {
        broker,
        header: &header,
        peer,
    };
    match supported {
        Some(range) if range.contains(version) => {}
        Some(range) => {
            return Err(ConnectionError::UnsupportedVersion {
                api,
                version,
                min: range.min,
                max: range.max,
            })
        }
        None => return Err(ConnectionError::UnknownApiKey(key)),
    }
    api::dispatch(ctx, api, version, frame).await
}

/// Decodes a request body of type `R`.
pub(crate) fn decode_request<R: Decodable>(
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
