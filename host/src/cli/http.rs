//! A minimal HTTP/1.1 client for the admin API: one request per connection, JSON or
//! raw bodies, responses read to the end. Enough for the CLI, with no TLS stack.

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON, or an error that carries the API's message.
    pub(crate) fn json(&self) -> anyhow::Result<serde_json::Value> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the admin API answered {} with a body that is not JSON",
                self.status
            )
        })?;
        if self.status >= 400 {
            let message = value.get("message").and_then(|m| m.as_str()).unwrap_or("");
            let code = value
                .get("error")
                .and_then(|m| m.as_str())
                .unwrap_or("error");
            bail!("{message} ({code}, HTTP {})", self.status);
        }
        Ok(value)
    }
}

/// Sends one request to `address` (host:port).
pub(crate) async fn request(
    address: &str,
    method: &str,
    path_and_query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to the admin API at {address}"))?;
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the admin API sent no complete HTTP header")?;
    let header = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = header
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the admin API sent no status code")?;
    let mut body = raw[split + 4..].to_vec();
    if header.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    }) {
        body = dechunk(&body)?;
    }
    Ok(Response { status, body })
}

fn dechunk(mut input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = input
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunked body")?;
        let size_text = String::from_utf8_lossy(&input[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        input = &input[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if input.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&input[..size]);
        input = &input[size + 2..];
    }
}

/// One JSON call: `body` (if any) is sent as JSON, the answer read as JSON, and an
/// error status becomes an error carrying the API's message.
pub(crate) async fn call(
    address: &str,
    method: &str,
    path_and_query: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    match body {
        Some(body) => {
            let bytes = serde_json::to_vec(body).expect("JSON values serialise");
            request(
                address,
                method,
                path_and_query,
                Some("application/json"),
                &bytes,
            )
            .await
        }
        None => request(address, method, path_and_query, None, b"").await,
    }?
    .json()
}

/// Percent-encodes `s` for a path segment or query value.
pub(crate) fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
