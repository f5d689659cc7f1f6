//! A small Kafka client on the broker's own codecs, used by the CLI. It speaks to any
//! Kafka-compatible broker: it negotiates with ApiVersions and uses request versions
//! that Kafka has supported since 2.x.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context as _};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response the CLI accepts.
const MAX_RESPONSE: i32 = 256 * 1024 * 1024;

/// A peer that accepted the connection but did not answer ApiVersions as a Kafka
/// broker does.
#[derive(Debug)]
struct NotKafka(String);

impl std::fmt::Display for NotKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it answered, but not as a Kafka broker ({})", self.0)
    }
}

impl std::error::Error for NotKafka {}

/// One connection to a broker.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
    address: String,
}

impl Client {
    /// Connects to the first broker of `bootstrap` (`host:port[,host:port…]`, as Kafka
    /// tools take it) that answers, and learns its API versions.
    pub async fn connect(bootstrap: &str) -> anyhow::Result<Client> {
        let addresses: Vec<&str> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if addresses.is_empty() {
            bail!("no broker address given (--bootstrap host:port[,host:port…])");
        }
        let mut failures = Vec::new();
        // Something answered, but not the Kafka protocol: likely another port.
        let mut not_kafka = false;
        for address in &addresses {
            match Self::connect_one(address).await {
                Ok(client) => return Ok(client),
                Err(e) => {
                    not_kafka |= e.is::<NotKafka>();
                    failures.push(if addresses.len() == 1 {
                        format!("{e:#}")
                    } else {
                        format!("{address}: {e:#}")
                    });
                }
            }
        }
        let hint = if not_kafka {
            "is that the Kafka listener? The broker's Kafka API is kafka.listen (127.0.0.1:9092 by default), its admin API another port; point the CLI at the Kafka one with --bootstrap HOST:PORT or QUIVER_BOOTSTRAP"
        } else {
            "is a broker running there? `quiver serve` starts one; point the CLI at yours with --bootstrap HOST:PORT or QUIVER_BOOTSTRAP"
        };
        Err(super::hinted(
            format!(
                "cannot reach a Kafka broker at {}: {}",
                addresses.join(","),
                failures.join("; ")
            ),
            hint,
        ))
    }

    async fn connect_one(address: &str) -> anyhow::Result<Client> {
        // The caller names the address.
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            correlation_id: 0,
            versions: HashMap::new(),
            address: address.to_string(),
        };
        let response: ApiVersionsResponse = client
            .request(ApiVersionsRequest::default(), 0)
            .await
            .map_err(|e| anyhow::Error::new(NotKafka(format!("{e:#}"))))?;
        if response.error_code != 0 {
            bail!(
                "{address} refused ApiVersions with error {}",
                response.error_code
            );
        }
        client.versions = offered(&response);
        Ok(client)
    }

    /// The highest version of `api` both this CLI (`ours`) and the broker speak.
    pub fn version(&self, api: ApiKey, ours: i16) -> anyhow::Result<i16> {
        negotiate(&self.versions, &self.address, api, ours)
    }

    /// The broker address this client is connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn request<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let api = self.send_only(request, version).await?;
        let length = self.stream.read_i32().await.context("reading a response")?;
        if !(4..=MAX_RESPONSE).contains(&length) {
            bail!("{} sent a response frame of {length} bytes", self.address);
        }
        let mut body = vec![0u8; length as usize];
        self.stream.read_exact(&mut body).await?;
        decode_response::<R>(Bytes::from(body), api, version, self.correlation_id)
    }

    /// Sends `request` at `version` without waiting for a response (Produce with acks=0).
    pub async fn send_only<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> anyhow::Result<ApiKey> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        if api != ApiKey::ApiVersions {
            match self.versions.get(&R::KEY) {
                Some(&(min, max)) if (min..=max).contains(&version) => {}
                Some(&(min, max)) => bail!(
                    "{} supports {api:?} v{min}..=v{max}, not the v{version} this CLI uses",
                    self.address
                ),
                None => bail!("{} does not support {api:?}", self.address),
            }
        }
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        encode_request(&mut frame, request, version, self.correlation_id)?;
        let length = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        self.stream.write_all(&frame).await?;
        Ok(api)
    }
}

/// Appends `request` at `version` with its request header to `out` (no length prefix).
pub(crate) fn encode_request<R: Request>(
    out: &mut BytesMut,
    request: R,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<()> {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("quiver-cli"));
    header.encode(out, R::header_version(version))?;
    request.encode(out, version)?;
    Ok(())
}

/// Decodes a response frame (no length prefix) to a request of `api` at `version`
/// sent with `correlation_id`.
pub(crate) fn decode_response<R: Request>(
    mut body: Bytes,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<R::Response> {
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    let response_header = ResponseHeader::decode(&mut body, header_version)?;
    if response_header.correlation_id != correlation_id {
        bail!(
            "response correlation id {} does not match request {}",
            response_header.correlation_id,
            correlation_id
        );
    }
    R::Response::decode(&mut body, version)
        .with_context(|| format!("decoding the {api:?} v{version} response"))
}

/// The API versions a broker's ApiVersions answer offers, by API key.
pub(crate) fn offered(response: &ApiVersionsResponse) -> HashMap<i16, (i16, i16)> {
    response
        .api_keys
        .iter()
        .map(|k| (k.api_key, (k.min_version, k.max_version)))
        .collect()
}

/// The highest version of `api` both we (`ours`) and the broker at `address` speak.
pub(crate) fn negotiate(
    versions: &HashMap<i16, (i16, i16)>,
    address: &str,
    api: ApiKey,
    ours: i16,
) -> anyhow::Result<i16> {
    match versions.get(&(api as i16)) {
        Some(&(min, max)) if min <= ours => Ok(max.min(ours)),
        Some(&(min, _)) => {
            bail!("{address} requires {api:?} v{min} or newer; this CLI speaks up to v{ours}")
        }
        None => bail!("{address} does not support {api:?}"),
    }
}
