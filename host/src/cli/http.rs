//! A minimal HTTP/1.1 client for the admin API: one request per connection, JSON or
//! raw bodies, responses read to the end, over TLS (rustls, the broker's own stack)
//! when the address is `https://`. Enough for the CLI.

use anyhow::{bail, Context as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The path asked for, to point a "not found" at the command that lists what is.
    path: String,
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
            let text = format!("{message} ({code}, HTTP {})", self.status);
            return Err(match not_found_hint(self.status, &self.path) {
                Some(hint) => super::hinted(text, hint),
                None => anyhow::anyhow!(text),
            });
        }
        Ok(value)
    }
}

/// Sends one request to `address`: `host:port` or `http://host:port` for plain HTTP,
/// `https://host:port` for a broker with `admin.tls = true`, whose certificate must be
/// signed by the CA in `QUIVER_ADMIN_CA`.
pub(crate) async fn request(
    address: &str,
    method: &str,
    path_and_query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<Response> {
    let (https, authority) = match address.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, address.strip_prefix("http://").unwrap_or(address)),
    };
    let authority = authority.trim_end_matches('/');
    let stream = TcpStream::connect(authority).await.map_err(|e| {
        super::hinted(
            format!("cannot reach the admin API at {address}: {e}"),
            "is a broker running there with its admin API on? `quiver serve` starts one (admin on 127.0.0.1:9644); point the CLI at it with --admin HOST:PORT (https://HOST:PORT when it has admin.tls on) or QUIVER_ADMIN",
        )
    })?;
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    // A broker with admin.authentication = "basic" wants a SCRAM user's credentials.
    if let Ok(user) = std::env::var("QUIVER_ADMIN_USER") {
        use base64::Engine as _;
        let password = std::env::var("QUIVER_ADMIN_PASSWORD").unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        head.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    head.push_str("\r\n");
    let raw = if https {
        let mut tls = tls_connect(address, authority, stream).await?;
        exchange(&mut tls, head.as_bytes(), body).await?
    } else {
        let mut plain = stream;
        exchange(&mut plain, head.as_bytes(), body).await?
    };
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        super::hinted(
            format!("{address} did not answer as the admin API (no HTTP response)"),
            "is that the admin API? It is the broker's admin.listen (127.0.0.1:9644 by default), not its Kafka port; point the CLI at it with --admin HOST:PORT or QUIVER_ADMIN (https://HOST:PORT when it has admin.tls on)",
        )
    })?;
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
    Ok(Response {
        status,
        body,
        path: path_and_query.to_string(),
    })
}

/// Writes the request and reads the whole response (the server closes the connection).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    head: &[u8],
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw).await {
        Ok(_) => Ok(raw),
        // A TLS peer that closes without close_notify: what arrived is the response
        // (its framing is checked by the caller).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e.into()),
    }
}

/// The TLS session to an `https://` admin API, trusting only the CA in
/// `QUIVER_ADMIN_CA` and checking the certificate names the host dialled.
async fn tls_connect(
    address: &str,
    authority: &str,
    stream: TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};

    let ca = std::env::var_os("QUIVER_ADMIN_CA").ok_or_else(|| {
        super::hinted(
            format!("{address} is HTTPS, and no CA to check its certificate against"),
            "set QUIVER_ADMIN_CA to the CA file that signed the broker's certificate (the ca.pem of `quiver tls certs`)",
        )
    })?;
    let pem = std::fs::read(&ca)
        .with_context(|| format!("reading QUIVER_ADMIN_CA {}", ca.to_string_lossy()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| {
            format!(
                "QUIVER_ADMIN_CA {} is not PEM certificates",
                ca.to_string_lossy()
            )
        })?;
        roots.add(cert).with_context(|| {
            format!(
                "QUIVER_ADMIN_CA {}: a certificate is not usable",
                ca.to_string_lossy()
            )
        })?;
    }
    if roots.is_empty() {
        bail!(
            "QUIVER_ADMIN_CA {} holds no certificate",
            ca.to_string_lossy()
        );
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match authority.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("{host} is not a host name or an IP address"))?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| {
            super::hinted(
                format!("TLS with the admin API at {address} failed: {e}"),
                "is QUIVER_ADMIN_CA the CA that signed the broker's certificate, and does the certificate name the host in --admin?",
            )
        })
}

/// For a 404 on one named thing (`/v1/plugins/NAME…`), the command that lists what
/// there is.
fn not_found_hint(status: u16, path: &str) -> Option<String> {
    if status != 404 {
        return None;
    }
    let path = path.split('?').next().unwrap_or(path);
    let mut segments = path.trim_start_matches('/').split('/');
    let (Some("v1"), Some(collection), Some(_name)) =
        (segments.next(), segments.next(), segments.next())
    else {
        return None;
    };
    let command = match collection {
        "plugins" => "plugin",
        "transforms" => "transform",
        "mirrors" => "mirror",
        "tenants" => "tenant",
        "users" => "user",
        "topics" => "topic",
        _ => return None,
    };
    Some(format!(
        "`quiver {command} list` shows the {collection} there are"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_thing_points_at_its_list_command() {
        let response = Response {
            status: 404,
            body: br#"{"error":"not_found","message":"no plugin 'vip'"}"#.to_vec(),
            path: "/v1/plugins/vip?lines=5".into(),
        };
        let err = response.json().unwrap_err();
        assert_eq!(
            crate::cli::error_report(&err),
            "error: no plugin 'vip' (not_found, HTTP 404)\n\
             hint: `quiver plugin list` shows the plugins there are"
        );
        assert_eq!(not_found_hint(404, "/v1/plugins"), None);
        assert_eq!(not_found_hint(400, "/v1/mirrors/x"), None);
        assert_eq!(
            not_found_hint(404, "/v1/mirrors/east/checkpoints").as_deref(),
            Some("`quiver mirror list` shows the mirrors there are")
        );
    }
}
