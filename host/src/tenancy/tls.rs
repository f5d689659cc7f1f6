//! TLS on the Kafka listeners (rustls): the server configuration from PEM files, client
//! certificate verification for mTLS, the principal a client certificate proves, and
//! `quiver tls certs` for development certificates.
//!
//! A client certificate's principal is `User:` followed by its subject distinguished
//! name in RFC 2253 form (`User:CN=alice,OU=eng,O=acme`), as Kafka's default principal
//! builder makes it, so ACLs written for a Kafka cluster carry over unchanged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::Principal;
use crate::config::{ClientAuth, TlsConfig};
use crate::net::certs::{self, LeafUse};
use crate::net::NetError;

/// Why the listeners' TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {key} {}: {source}", path.display())]
    ReadFile {
        /// The setting naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file's contents are not usable.
    #[error("{key} {}: {reason}", path.display())]
    Material {
        /// The setting naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting is missing.
    #[error("{0}")]
    Missing(String),
}

/// The rustls server configuration for TLS listeners. `client_auth` false ignores
/// `security.tls.client_auth`: as in Kafka, client certificates are asked for on SSL
/// listeners only; SASL_SSL clients prove who they are with SASL.
pub fn server_config(config: &TlsConfig, client_auth: bool) -> Result<Arc<ServerConfig>, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsError::Missing(
            "a TLS listener needs security.tls.cert_file and security.tls.key_file".into(),
        ));
    };
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::ReadFile {
            key,
            path: path.to_path_buf(),
            source,
        })
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("security.tls.cert_file", cert_file)?)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Material {
                key: "security.tls.cert_file",
                path: cert_file.clone(),
                reason: format!("not PEM certificates: {e}"),
            })?;
    if chain.is_empty() {
        return Err(TlsError::Material {
            key: "security.tls.cert_file",
            path: cert_file.clone(),
            reason: "holds no CERTIFICATE block".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(&read("security.tls.key_file", key_file)?).map_err(|e| {
            TlsError::Material {
                key: "security.tls.key_file",
                path: key_file.clone(),
                reason: format!("no usable PEM private key: {e}"),
            }
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Missing(format!("TLS protocol versions: {e}")))?;
    let wanted = if client_auth {
        config.client_auth
    } else {
        ClientAuth::None
    };
    let builder = match wanted {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let Some(ca_file) = &config.client_ca_file else {
                return Err(TlsError::Missing(format!(
                    "security.tls.client_auth = {:?} needs security.tls.client_ca_file (the CA that signs client certificates)",
                    config.client_auth
                )));
            };
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_slice_iter(&read("security.tls.client_ca_file", ca_file)?)
            {
                let cert = cert.map_err(|e| TlsError::Material {
                    key: "security.tls.client_ca_file",
                    path: ca_file.clone(),
                    reason: format!("not PEM certificates: {e}"),
                })?;
                roots.add(cert).map_err(|e| TlsError::Material {
                    key: "security.tls.client_ca_file",
                    path: ca_file.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            if roots.is_empty() {
                return Err(TlsError::Material {
                    key: "security.tls.client_ca_file",
                    path: ca_file.clone(),
                    reason: "holds no CERTIFICATE block".into(),
                });
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if config.client_auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| TlsError::Material {
                key: "security.tls.client_ca_file",
                path: ca_file.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Material {
            key: "security.tls.key_file",
            path: key_file.clone(),
            reason: format!("does not go with security.tls.cert_file: {e}"),
        })?;
    Ok(Arc::new(server))
}

/// The principal a verified client certificate proves: `User:<subject DN, RFC 2253>`.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<Principal> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    // RFC 2253 writes the most specific name first: the reverse of the encoded order.
    for rdn in parsed
        .subject()
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let mut attributes = Vec::new();
        for attribute in rdn.iter() {
            let kind = x509_parser::objects::oid2abbrev(attribute.attr_type(), registry)
                .map(str::to_string)
                .unwrap_or_else(|_| attribute.attr_type().to_id_string());
            let value = attribute.as_str().ok()?;
            attributes.push(format!("{kind}={}", escape_dn_value(value)));
        }
        parts.push(attributes.join("+"));
    }
    if parts.is_empty() {
        return None;
    }
    Principal::parse(&format!("User:{}", parts.join(",")))
}

/// RFC 2253 escaping of an attribute value.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What `quiver tls certs` wrote.
#[derive(Debug)]
pub struct ListenerCerts {
    /// Every file written.
    pub written: Vec<PathBuf>,
}

/// `quiver tls certs`: a CA, a server certificate for `hosts`, and a client
/// certificate `CN=<name>` for each of `clients`, in `dir`. An existing CA is reused
/// (so more clients can be added later) unless `force`.
pub fn create_listener_certs(
    dir: &Path,
    hosts: &[String],
    clients: &[String],
    force: bool,
) -> Result<ListenerCerts, NetError> {
    let ca_cert = dir.join(certs::CA_CERT_FILE);
    let ca_key = dir.join(certs::CA_KEY_FILE);
    let mut written = Vec::new();
    let ca = if !force && ca_cert.exists() && ca_key.exists() {
        certs::CaMaterial::load(dir)?
    } else {
        let ca = certs::generate_named_ca("Quiver Kafka listener CA")?;
        written.push(certs::write_pem(&ca_cert, &ca.cert_pem, false)?);
        written.push(certs::write_pem(&ca_key, &ca.key_pem, true)?);
        ca
    };
    let server_cert = dir.join("server.pem");
    if force || !server_cert.exists() || !written.is_empty() {
        let (cert, key) = certs::issue_leaf(&ca, "Quiver Kafka listener", hosts, LeafUse::Server)?;
        written.push(certs::write_pem(&server_cert, &cert, false)?);
        written.push(certs::write_pem(&dir.join("server.key"), &key, true)?);
    }
    for client in clients.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        if client.contains(['/', '\\']) || client.starts_with('.') {
            return Err(NetError::Invalid {
                what: "client name",
                value: client.to_string(),
                reason: "becomes a file name: no '/', '\\' or leading '.'".into(),
            });
        }
        let (cert, key) = certs::issue_leaf(&ca, client, &[], LeafUse::Client)?;
        written.push(certs::write_pem(
            &dir.join(format!("client-{client}.pem")),
            &cert,
            false,
        )?);
        written.push(certs::write_pem(
            &dir.join(format!("client-{client}.key")),
            &key,
            true,
        )?);
    }
    Ok(ListenerCerts { written })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_proves_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        create_listener_certs(dir.path(), &["127.0.0.1".into()], &["alice".into()], false).unwrap();
        let pem = std::fs::read(dir.path().join("client-alice.pem")).unwrap();
        let cert = CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(principal_of(&cert).unwrap().as_str(), "User:CN=alice");
        let pem = std::fs::read(dir.path().join("server.pem")).unwrap();
        let cert = CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            principal_of(&cert).unwrap().as_str(),
            "User:CN=Quiver Kafka listener,O=Quiver"
        );
    }

    #[test]
    fn server_config_loads_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        create_listener_certs(dir.path(), &["localhost".into()], &[], false).unwrap();
        let mut config = TlsConfig {
            cert_file: Some(dir.path().join("server.pem")),
            key_file: Some(dir.path().join("server.key")),
            client_ca_file: None,
            client_auth: ClientAuth::None,
        };
        server_config(&config, true).unwrap();
        config.client_auth = ClientAuth::Required;
        server_config(&config, false).unwrap();
        let err = server_config(&config, true).unwrap_err().to_string();
        assert!(err.contains("security.tls.client_ca_file"), "{err}");
        config.client_ca_file = Some(dir.path().join("ca.pem"));
        server_config(&config, true).unwrap();
        config.key_file = Some(dir.path().join("ca.key"));
        let err = server_config(&config, true).unwrap_err().to_string();
        assert!(err.contains("does not go with"), "{err}");
        config.cert_file = Some(dir.path().join("missing.pem"));
        let err = server_config(&config, true).unwrap_err().to_string();
        assert!(err.contains("security.tls.cert_file"), "{err}");
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_dn_value(" x "), "\\ x\\ ");
    }
}
