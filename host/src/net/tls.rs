//! Mutual TLS between brokers: TLS 1.3 only, ALPN `quiver-cluster/1`, the cluster CA
//! as the only root, and the peer's identity read from its certificate.
//!
//! - As a server, a broker requires a client certificate, verifies its chain against
//!   the cluster CA ([`WebPkiClientVerifier`]) and then that its identity URI names this
//!   cluster. The peer's broker id is read from the same URI once the handshake is done.
//! - As a client, a broker verifies the server's chain against the cluster CA and then
//!   that its identity is exactly the broker it dialled. The broker id to expect travels
//!   in the TLS server name (`broker-<id>.quiver`), so one client configuration serves
//!   every peer. No host name is checked: brokers are addressed by id, and the id is
//!   in the certificate.
//!
//! Session resumption is off on both sides: it would let a connection skip the
//! certificate checks, and cluster connections live long enough not to need it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use super::certs::{self, Identity};
use super::{BrokerId, NetError};

/// The ALPN protocol of the cluster transport; a peer speaking anything else is refused.
pub const ALPN: &[u8] = b"quiver-cluster/1";

/// A broker's TLS material for the cluster transport: its certificate and key, the
/// cluster CA, and the identity checks, as client and server configurations.
#[derive(Clone)]
pub struct ClusterTls {
    cluster_id: String,
    broker_id: BrokerId,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// Derives the QUIC stateless-reset key, so it survives restarts (see
    /// [`ClusterTls::reset_secret`]).
    reset_secret: [u8; 32],
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("cluster_id", &self.cluster_id)
            .field("broker_id", &self.broker_id)
            .finish_non_exhaustive()
    }
}

/// Where the material came from, for error messages.
struct Sources {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl ClusterTls {
    /// Loads broker `broker_id`'s material from `tls_dir` (`ca.pem`,
    /// `broker-<id>.pem`, `broker-<id>.key`) and checks that the certificate carries
    /// this broker's identity and is signed by the CA beside it.
    pub fn load(tls_dir: &Path, cluster_id: &str, broker_id: BrokerId) -> Result<Self, NetError> {
        Self::load_accepting_mirrors(tls_dir, cluster_id, broker_id, None)
    }

    /// Like [`ClusterTls::load`]; brokers of other clusters whose certificates chain to
    /// a CA in the PEM file `mirror_clients_ca` are accepted too, as mirror clients
    /// (the endpoint lets them use only [`Channel::Mirror`](super::Channel::Mirror)).
    pub fn load_accepting_mirrors(
        tls_dir: &Path,
        cluster_id: &str,
        broker_id: BrokerId,
        mirror_clients_ca: Option<&Path>,
    ) -> Result<Self, NetError> {
        let sources = Sources {
            ca: tls_dir.join(certs::CA_CERT_FILE),
            cert: tls_dir.join(certs::broker_cert_file(broker_id)),
            key: tls_dir.join(certs::broker_key_file(broker_id)),
        };
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| NetError::ReadFile {
                path: path.to_path_buf(),
                source,
            })
        };
        let (ca, cert, key) = (
            read(&sources.ca)?,
            read(&sources.cert)?,
            read(&sources.key)?,
        );
        let mirror = match mirror_clients_ca {
            Some(path) => Some((read(path)?, path.to_path_buf())),
            None => None,
        };
        let mirror = mirror.as_ref().map(|(pem, path)| (pem.as_slice(), path));
        Self::from_pem_with(
            &ca, &cert, &key, cluster_id, broker_id, &sources, true, mirror,
        )
    }

    /// Like [`ClusterTls::load`], from PEM text already in memory.
    pub fn from_pem(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        cluster_id: &str,
        broker_id: BrokerId,
    ) -> Result<Self, NetError> {
        let sources = Sources {
            ca: PathBuf::from("the CA certificate"),
            cert: PathBuf::from("the broker certificate"),
            key: PathBuf::from("the broker key"),
        };
        Self::from_pem_with(
            ca_pem.as_bytes(),
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            cluster_id,
            broker_id,
            &sources,
            true,
            None,
        )
    }

    /// Test hook: material whose own certificate is not checked, so a test can play a
    /// rogue peer that presents someone else's identity but accepts ours.
    #[cfg(test)]
    pub(crate) fn unchecked(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        cluster_id: &str,
        broker_id: BrokerId,
    ) -> Result<Self, NetError> {
        let sources = Sources {
            ca: "ca".into(),
            cert: "cert".into(),
            key: "key".into(),
        };
        Self::from_pem_with(
            ca_pem.as_bytes(),
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            cluster_id,
            broker_id,
            &sources,
            false,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn from_pem_with(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        cluster_id: &str,
        broker_id: BrokerId,
        sources: &Sources,
        check_own: bool,
        mirror_clients_ca: Option<(&[u8], &PathBuf)>,
    ) -> Result<Self, NetError> {
        certs::check_cluster_id(cluster_id)?;
        let bad = |path: &PathBuf, reason: String| NetError::Certificate {
            path: path.clone(),
            reason,
        };
        let ca = certificates(ca_pem).map_err(|reason| bad(&sources.ca, reason))?;
        let chain = certificates(cert_pem).map_err(|reason| bad(&sources.cert, reason))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| bad(&sources.key, format!("no usable PEM private key: {e}")))?;

        let mut roots = RootCertStore::empty();
        for cert in &ca {
            roots
                .add(cert.clone())
                .map_err(|e| bad(&sources.ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        if check_own {
            // Refuse to start with a certificate our peers would refuse: better a clear
            // error naming the file now than handshake failures on every peer later.
            let identity = Identity::of_certificate(&chain[0])
                .map_err(|e| bad(&sources.cert, e.to_string()))?;
            let expected = Identity::new(cluster_id, broker_id);
            if identity != expected {
                return Err(bad(
                    &sources.cert,
                    format!(
                        "carries the identity {} ({identity}), but this is {expected} ({})",
                        identity.uri(),
                        expected.uri()
                    ),
                ));
            }
            let parsed = ParsedCertificate::try_from(&chain[0])
                .map_err(|e| bad(&sources.cert, format!("cannot be parsed: {e}")))?;
            verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots,
                &chain[1..],
                UnixTime::now(),
                provider.signature_verification_algorithms.all,
            )
            .map_err(|e| {
                bad(
                    &sources.cert,
                    format!(
                        "is not valid under {}: {}",
                        sources.ca.display(),
                        explain(&e)
                    ),
                )
            })?;
        }

        let reset_secret = reset_secret(&key);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| NetError::Tls(format!("client certificate verifier: {e}")))?;
        let mirror_verifier = match mirror_clients_ca {
            Some((pem, path)) => {
                let mut mirror_roots = RootCertStore::empty();
                for cert in certificates(pem).map_err(|reason| bad(path, reason))? {
                    mirror_roots
                        .add(cert)
                        .map_err(|e| bad(path, format!("not a usable CA certificate: {e}")))?;
                }
                Some(
                    WebPkiClientVerifier::builder_with_provider(
                        Arc::new(mirror_roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| NetError::Tls(format!("mirror client verifier: {e}")))?,
                )
            }
            None => None,
        };
        let client_verifier = Arc::new(PeerClientVerifier {
            inner: client_verifier,
            mirror: mirror_verifier,
            cluster_id: cluster_id.to_string(),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                bad(
                    &sources.key,
                    format!("does not fit {}: {e}", sources.cert.display()),
                )
            })?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let server_verifier = Arc::new(BrokerServerVerifier {
            roots,
            algorithms: provider.signature_verification_algorithms,
            expect: Expect::Dialled {
                cluster_id: cluster_id.to_string(),
            },
        });
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                bad(
                    &sources.key,
                    format!("does not fit {}: {e}", sources.cert.display()),
                )
            })?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        // The server name only carries the broker id to expect; no need to send it.
        client.enable_sni = false;

        Ok(ClusterTls {
            cluster_id: cluster_id.to_string(),
            broker_id,
            server: Arc::new(server),
            client: Arc::new(client),
            reset_secret,
        })
    }

    /// The cluster this material belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The broker this material belongs to.
    pub fn broker_id(&self) -> BrokerId {
        self.broker_id
    }

    /// The TLS server side of the cluster transport: mutual TLS with the cluster's
    /// verifier, ALPN `quiver-cluster/1`. Public so a benchmark can carry the same
    /// handshake and record encryption over another transport (`transport_bench`).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The TLS client side of the cluster transport; the server name it expects is
    /// `broker-<id>.quiver` (see [`Endpoint`](super::Endpoint)).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// A secret stable across restarts of this broker (derived from its private key),
    /// for the QUIC stateless-reset key: a restarted broker can then reset the
    /// connections its previous run had, and peers notice at once.
    pub(crate) fn reset_secret(&self) -> &[u8; 32] {
        &self.reset_secret
    }
}

/// The TLS server name that tells our verifier which broker a connection must reach.
pub(crate) fn server_name(broker: BrokerId) -> String {
    format!("broker-{broker}.quiver")
}

fn broker_of_server_name(name: &ServerName<'_>) -> Option<BrokerId> {
    let ServerName::DnsName(dns) = name else {
        return None;
    };
    dns.as_ref()
        .strip_prefix("broker-")?
        .strip_suffix(".quiver")?
        .parse()
        .ok()
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("contains no CERTIFICATE block".into());
    }
    Ok(certs)
}

fn reset_secret(key: &PrivateKeyDer<'_>) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(b"quiver cluster stateless reset key v1\0");
    hash.update(key.secret_der());
    hash.finalize().into()
}

/// A verifier's refusal, with a message the peer's error will show. Debug prints the
/// message, because rustls formats `CertificateError::Other` with `{:?}`.
struct Refusal(String);

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// The text of an error that may hold a [`Refusal`], without the
/// `Other(OtherError(…))` rustls wraps around it.
pub(crate) fn tidy(text: String) -> String {
    const WRAPPER: &str = "Other(OtherError(";
    match text.find(WRAPPER) {
        Some(start) if text.ends_with("))") => {
            format!(
                "{}{}",
                &text[..start],
                &text[start + WRAPPER.len()..text.len() - 2]
            )
        }
        _ => text,
    }
}

/// A refusal's message without rustls' prefix, to be wrapped in another.
fn reason_of(error: &rustls::Error) -> String {
    tidy(error.to_string())
        .trim_start_matches("invalid peer certificate: ")
        .to_string()
}

fn refuse(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(
        message,
    )))))
}

/// Says what a chain-verification failure means for a cluster peer.
fn explain(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the certificate is not signed by this cluster's CA (UnknownIssuer)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            "the certificate is not signed by this cluster's CA (BadSignature: its issuer has the CA's name but not its key)"
                .into()
        }
        other => other.to_string(),
    }
}

/// Replaces webpki's terse refusals with ones that say what they mean for the cluster.
fn explained(error: rustls::Error) -> rustls::Error {
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => refuse(explain(&error)),
        other => other,
    }
}

/// Server side: the CA's chain check, then "is this peer of our cluster?"; failing
/// that, when mirror clients are accepted, "is this a broker of a cluster whose CA may
/// mirror from us?".
#[derive(Debug)]
struct PeerClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// Verifies against `cluster.mirror_clients_ca`, when set.
    mirror: Option<Arc<dyn ClientCertVerifier>>,
    cluster_id: String,
}

impl PeerClientVerifier {
    /// A client of another cluster, checked against the mirror clients' CAs.
    fn verify_mirror_client(
        &self,
        mirror: &dyn ClientCertVerifier,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        mirror
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| e.to_string())?;
        let identity = Identity::of_certificate(end_entity).map_err(|e| e.to_string())?;
        if identity.cluster_id == self.cluster_id {
            // Only this cluster's CA speaks for its members.
            return Err(format!(
                "the client certificate claims this cluster (`{}`) but is signed by a mirror clients' CA",
                self.cluster_id
            ));
        }
        Ok(())
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let as_member = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(explained)
            .and_then(|_| {
                let identity =
                    Identity::of_certificate(end_entity).map_err(|e| refuse(e.to_string()))?;
                if identity.cluster_id != self.cluster_id {
                    return Err(refuse(format!(
                        "the client certificate is {identity}, but this is cluster `{}`",
                        self.cluster_id
                    )));
                }
                Ok(())
            });
        let refusal = match as_member {
            Ok(()) => return Ok(ClientCertVerified::assertion()),
            Err(refusal) => refusal,
        };
        let Some(mirror) = &self.mirror else {
            let foreign = Identity::of_certificate(end_entity)
                .is_ok_and(|identity| identity.cluster_id != self.cluster_id);
            if foreign {
                return Err(refuse(format!(
                    "{}; a broker of another cluster may connect to cluster `{}` only to mirror from it, once its cluster's CA is in cluster.mirror_clients_ca there",
                    reason_of(&refusal),
                    self.cluster_id
                )));
            }
            return Err(refusal);
        };
        match self.verify_mirror_client(mirror.as_ref(), end_entity, intermediates, now) {
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(as_mirror) => Err(refuse(format!(
                "{} (as a member); as a mirror client: {} (cluster.mirror_clients_ca)",
                reason_of(&refusal),
                tidy(as_mirror).trim_start_matches("invalid peer certificate: ")
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Which broker a client expects at the other end of a connection.
#[derive(Debug)]
enum Expect {
    /// The broker named by the server name we dialled, of our own cluster.
    Dialled { cluster_id: String },
    /// Any broker the source CA signed: a mirror reaches whichever source broker leads a
    /// partition, and the CA given for the source is what names the source.
    SourceBroker,
}

/// Client side: the CA's chain check without the host-name check, then the identity
/// check of [`Expect`].
#[derive(Debug)]
struct BrokerServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    expect: Expect,
}

impl BrokerServerVerifier {
    fn chain_refusal(&self, error: rustls::Error) -> rustls::Error {
        match (&self.expect, error) {
            (
                Expect::SourceBroker,
                rustls::Error::InvalidCertificate(
                    reason @ (CertificateError::UnknownIssuer | CertificateError::BadSignature),
                ),
            ) => refuse(format!(
                "the source broker's certificate is not signed by the source CA given to the mirror (--source-ca; {reason:?})"
            )),
            (Expect::SourceBroker, other) => other,
            (Expect::Dialled { .. }, other) => explained(other),
        }
    }
}

impl ServerCertVerifier for BrokerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let dialled = match &self.expect {
            Expect::Dialled { .. } => {
                Some(broker_of_server_name(server_name).ok_or_else(|| {
                    refuse(format!(
                    "the server name {server_name:?} names no broker (expected broker-<id>.quiver)"
                ))
                })?)
            }
            Expect::SourceBroker => None,
        };
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )
        .map_err(|e| self.chain_refusal(e))?;
        let identity = Identity::of_certificate(end_entity).map_err(|e| refuse(e.to_string()))?;
        if let (Expect::Dialled { cluster_id }, Some(expected)) = (&self.expect, dialled) {
            if identity.cluster_id != *cluster_id {
                return Err(refuse(format!(
                    "the server certificate is {identity}, but this is cluster `{cluster_id}`"
                )));
            }
            if identity.broker_id != expected {
                return Err(refuse(format!(
                    "dialled broker {expected}, but the server certificate is {identity}"
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS of a mirror's connections to a source Quiver cluster: this broker's own
/// certificate as the client's (the source accepts it when this cluster's CA is in its
/// `cluster.mirror_clients_ca`), and the source's CA as the only root. Any broker
/// certificate that CA signed is accepted: the mirror reaches whichever source broker
/// leads a partition, and the CA given for the source is what names the source.
pub(crate) fn mirror_client_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    source_ca_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, NetError> {
    let bad = |what: &str, reason: String| NetError::Certificate {
        path: PathBuf::from(what),
        reason,
    };
    let chain = certificates(cert_pem).map_err(|r| bad("the broker certificate", r))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| bad("the broker key", format!("no usable PEM private key: {e}")))?;
    let mut roots = RootCertStore::empty();
    for cert in certificates(source_ca_pem).map_err(|r| bad("the source CA", r))? {
        roots
            .add(cert)
            .map_err(|e| bad("the source CA", format!("not a usable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(BrokerServerVerifier {
        roots: Arc::new(roots),
        algorithms: provider.signature_verification_algorithms,
        expect: Expect::SourceBroker,
    });
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            bad(
                "the broker key",
                format!("does not fit its certificate: {e}"),
            )
        })?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();
    client.enable_sni = false;
    Ok(Arc::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::certs::{generate_ca, issue_broker, write_dir};

    fn hosts() -> Vec<String> {
        vec!["127.0.0.1".into()]
    }

    #[test]
    fn load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca("c").unwrap();
        let b1 = issue_broker(&ca, "c", 1, &hosts()).unwrap();
        write_dir(dir.path(), Some(&ca), &[b1]).unwrap();
        let tls = ClusterTls::load(dir.path(), "c", 1).unwrap();
        assert_eq!((tls.cluster_id(), tls.broker_id()), ("c", 1));
        assert_eq!(tls.server_config().alpn_protocols, vec![ALPN.to_vec()]);
        // Stable across loads, so it survives a restart.
        let again = ClusterTls::load(dir.path(), "c", 1).unwrap();
        assert_eq!(tls.reset_secret(), again.reset_secret());
    }

    #[test]
    fn load_names_the_file_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca("c").unwrap();
        let b1 = issue_broker(&ca, "c", 1, &hosts()).unwrap();
        write_dir(dir.path(), Some(&ca), &[b1]).unwrap();

        // Missing files.
        let err = ClusterTls::load(dir.path(), "c", 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker-2.pem"), "{err}");

        // Our certificate, but the config says another cluster.
        let err = ClusterTls::load(dir.path(), "other", 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker-1.pem"), "{err}");
        assert!(err.contains("quiver://c/broker/1"), "{err}");
        assert!(err.contains("cluster `other`"), "{err}");

        // Broker 1's files copied to broker 2's names.
        std::fs::copy(
            dir.path().join("broker-1.pem"),
            dir.path().join("broker-2.pem"),
        )
        .unwrap();
        std::fs::copy(
            dir.path().join("broker-1.key"),
            dir.path().join("broker-2.key"),
        )
        .unwrap();
        let err = ClusterTls::load(dir.path(), "c", 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker-2.pem"), "{err}");
        assert!(err.contains("broker 1 of cluster `c`"), "{err}");

        // Signed by another CA than the ca.pem beside it.
        let other_ca = generate_ca("c").unwrap();
        let b3 = issue_broker(&other_ca, "c", 3, &hosts()).unwrap();
        write_dir(dir.path(), None, &[b3]).unwrap();
        let err = ClusterTls::load(dir.path(), "c", 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker-3.pem"), "{err}");
        assert!(err.contains("not signed by this cluster's CA"), "{err}");

        // A key that is not the certificate's.
        std::fs::copy(
            dir.path().join("broker-1.key"),
            dir.path().join("broker-4.key"),
        )
        .unwrap();
        let b4 = issue_broker(&ca, "c", 4, &hosts()).unwrap();
        std::fs::write(dir.path().join("broker-4.pem"), b4.cert_pem).unwrap();
        let err = ClusterTls::load(dir.path(), "c", 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker-4.key"), "{err}");
    }

    #[test]
    fn refusals_read_plainly() {
        let text = refuse("the certificate is broker 1 of cluster `x`".into()).to_string();
        assert_eq!(
            tidy(format!("aborted by peer: {text}")),
            "aborted by peer: invalid peer certificate: the certificate is broker 1 of cluster `x`"
        );
        assert_eq!(tidy("timed out".into()), "timed out");
    }

    #[test]
    fn server_names_carry_the_broker_id() {
        for id in [0, 1, 42, i32::MAX] {
            let name = ServerName::try_from(server_name(id)).unwrap();
            assert_eq!(broker_of_server_name(&name), Some(id));
        }
        let name = ServerName::try_from("example.com").unwrap();
        assert_eq!(broker_of_server_name(&name), None);
    }
}
