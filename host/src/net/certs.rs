//! The cluster's certificates: a CA per cluster, and per broker a leaf certificate
//! whose identity is the SAN URI `quiver://<cluster-id>/broker/<id>`.
//!
//! The identity lives in the certificate, not in a host name, because brokers reach
//! each other by broker id at whatever address the seeds name; the DNS/IP names from
//! `--hosts` are there only for tools that insist on them. The cluster id is part of
//! the identity so that one CA may serve several clusters without a broker of one
//! being accepted by another.
//!
//! A directory made by `quiver cluster certs` (the layout [`ClusterTls::load`] reads):
//!
//! ```text
//! ca.pem            the cluster CA certificate (every broker trusts it)
//! ca.key            the CA's private key (keep it off the brokers when you can)
//! broker-<id>.pem   broker <id>'s certificate
//! broker-<id>.key   its private key, PKCS#8 PEM, mode 0600
//! ```
//!
//! A single-node cluster without `cluster.tls_dir` gets the same layout under
//! `<data_dir>/cluster-tls`, made on first start by [`ensure_dev_certs`].
//!
//! [`ClusterTls::load`]: super::ClusterTls::load

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

use super::{BrokerId, NetError};

/// The CA certificate file in a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key file in a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Where a single-node cluster keeps its development certificates, under `data_dir`.
pub const DEV_CERTS_DIR: &str = "cluster-tls";
/// Host names put into certificates when none are given.
pub const DEFAULT_HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

/// The scheme of identity URIs.
const SCHEME: &str = "quiver://";
/// How long certificates are valid. Long, because an expired cluster certificate stops
/// the cluster; rotate by issuing new ones with `quiver cluster certs --force`.
const VALIDITY_DAYS: i64 = 3650;

/// Broker `id`'s certificate file name.
pub fn broker_cert_file(id: BrokerId) -> String {
    format!("broker-{id}.pem")
}

/// Broker `id`'s private key file name.
pub fn broker_key_file(id: BrokerId) -> String {
    format!("broker-{id}.key")
}

/// Who a broker certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The cluster the broker belongs to.
    pub cluster_id: String,
    /// The broker's id.
    pub broker_id: BrokerId,
}

impl Identity {
    /// The identity of broker `broker_id` of cluster `cluster_id`.
    pub fn new(cluster_id: impl Into<String>, broker_id: BrokerId) -> Identity {
        Identity {
            cluster_id: cluster_id.into(),
            broker_id,
        }
    }

    /// The SAN URI carrying this identity: `quiver://<cluster-id>/broker/<id>`.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/broker/{}", self.cluster_id, self.broker_id)
    }

    /// Parses an identity URI. `Ok(None)` for a URI of another scheme (a certificate
    /// may carry other URIs), an error for a `quiver://` URI that is malformed.
    pub fn parse_uri(uri: &str) -> Result<Option<Identity>, IdentityError> {
        let Some(rest) = uri.strip_prefix(SCHEME) else {
            return Ok(None);
        };
        let malformed = || IdentityError::Malformed(uri.to_string());
        let (cluster_id, id) = rest.split_once("/broker/").ok_or_else(malformed)?;
        if check_cluster_id(cluster_id).is_err() {
            return Err(malformed());
        }
        // Digits only: `parse` would also take "+1", and two spellings of one identity
        // would make comparisons of URIs lie.
        if id.is_empty() || id.len() > 10 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let broker_id = id.parse().map_err(|_| malformed())?;
        Ok(Some(Identity::new(cluster_id, broker_id)))
    }

    /// The identity a DER certificate carries: exactly one `quiver://` SAN URI.
    pub fn of_certificate(der: &CertificateDer<'_>) -> Result<Identity, IdentityError> {
        let cert = webpki::EndEntityCert::try_from(der)
            .map_err(|e| IdentityError::Unparsable(format!("{e:?}")))?;
        let mut found: Option<Identity> = None;
        for uri in cert.valid_uri_names() {
            if let Some(identity) = Identity::parse_uri(uri)? {
                match &found {
                    Some(first) if *first != identity => {
                        return Err(IdentityError::Ambiguous(first.uri(), identity.uri()));
                    }
                    _ => found = Some(identity),
                }
            }
        }
        found.ok_or(IdentityError::Missing)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "broker {} of cluster `{}`",
            self.broker_id, self.cluster_id
        )
    }
}

/// Why a certificate carries no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate is not valid X.509.
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// No `quiver://` URI in the subject alternative names.
    #[error(
        "the certificate carries no quiver://<cluster-id>/broker/<id> identity (was it made by `quiver cluster certs`?)"
    )]
    Missing,
    /// A `quiver://` URI that does not follow the pattern.
    #[error("malformed identity URI `{0}`: expected quiver://<cluster-id>/broker/<id>")]
    Malformed(String),
    /// Two different identities in one certificate.
    #[error("the certificate carries two identities, {0} and {1}")]
    Ambiguous(String, String),
}

/// Checks that `id` can be a cluster id: the rule of `cluster.id`, which also keeps it
/// valid inside an identity URI.
pub fn check_cluster_id(id: &str) -> Result<(), NetError> {
    let ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(NetError::Invalid {
            what: "cluster id",
            value: id.to_string(),
            reason: "must be non-empty ASCII letters, digits, '-', '_' or '.'".into(),
        })
    }
}

/// A cluster CA: its PEM files and what signing with it needs.
pub struct CaMaterial {
    /// The CA certificate, PEM (`ca.pem`).
    pub cert_pem: String,
    /// The CA private key, PKCS#8 PEM (`ca.key`).
    pub key_pem: String,
    /// The CA as rcgen's issuer: rcgen signs with the issuer's name and key.
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CaMaterial {
    /// An existing CA from its certificate and key (PEM), e.g. to add a broker later.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CaMaterial, NetError> {
        Self::from_pem_named(
            cert_pem,
            key_pem,
            Path::new(CA_CERT_FILE),
            Path::new(CA_KEY_FILE),
        )
    }

    /// Reads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<CaMaterial, NetError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_string(&cert_path)?;
        let key_pem = read_string(&key_path)?;
        Self::from_pem_named(&cert_pem, &key_pem, &cert_path, &key_path)
    }

    fn from_pem_named(
        cert_pem: &str,
        key_pem: &str,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<CaMaterial, NetError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| NetError::Certificate {
            path: key_path.to_path_buf(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        let params =
            CertificateParams::from_ca_cert_pem(cert_pem).map_err(|e| NetError::Certificate {
                path: cert_path.to_path_buf(),
                reason: format!("not a PEM CA certificate: {e}"),
            })?;
        // rcgen keeps only what signing needs (name, key id method, key usages); the
        // re-signed copy is never written, `cert_pem` stays the original.
        let issuer = params
            .self_signed(&key)
            .map_err(|e| NetError::Certificate {
                path: key_path.to_path_buf(),
                reason: format!("cannot sign with this key: {e}"),
            })?;
        let original = first_certificate(cert_pem).ok_or_else(|| NetError::Certificate {
            path: cert_path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        })?;
        if spki_of(&original) != spki_of(issuer.der()) {
            return Err(NetError::Certificate {
                path: key_path.to_path_buf(),
                reason: format!("is not the key of {}", cert_path.display()),
            });
        }
        Ok(CaMaterial {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
            key,
        })
    }
}

/// One broker's certificate and key.
pub struct BrokerMaterial {
    /// The broker the certificate is for.
    pub broker_id: BrokerId,
    /// The certificate chain, PEM (the leaf; the CA is distributed as `ca.pem`).
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for BrokerMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerMaterial")
            .field("broker_id", &self.broker_id)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Makes a new CA for cluster `cluster_id`.
pub fn generate_ca(cluster_id: &str) -> Result<CaMaterial, NetError> {
    check_cluster_id(cluster_id)?;
    generate_named_ca(&format!("Quiver cluster CA {cluster_id}"))
}

/// Makes a new CA named `common_name` (plus a fingerprint of its key).
pub fn generate_named_ca(common_name: &str) -> Result<CaMaterial, NetError> {
    let generate = |e: rcgen::Error| NetError::Generate {
        what: format!("the CA `{common_name}`"),
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    // The name carries a fingerprint of the key, so two CAs never share a name: a
    // certificate from another CA is then refused as "unknown issuer" rather than
    // matched by name to ours and refused for its signature.
    let fingerprint: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(key.public_key_der())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    params.distinguished_name = name(&format!("{common_name} {fingerprint}"));
    // Path length 0: the CA signs broker certificates only, no intermediate CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    let issuer = params.self_signed(&key).map_err(generate)?;
    Ok(CaMaterial {
        cert_pem: issuer.pem(),
        key_pem: key.serialize_pem(),
        issuer,
        key,
    })
}

/// Issues broker `broker_id`'s certificate for cluster `cluster_id`, signed by `ca`,
/// with the identity URI plus a DNS or IP name for each of `hosts`.
pub fn issue_broker(
    ca: &CaMaterial,
    cluster_id: &str,
    broker_id: BrokerId,
    hosts: &[String],
) -> Result<BrokerMaterial, NetError> {
    check_cluster_id(cluster_id)?;
    if broker_id < 0 {
        return Err(NetError::Invalid {
            what: "broker id",
            value: broker_id.to_string(),
            reason: "must be >= 0".into(),
        });
    }
    let identity = Identity::new(cluster_id, broker_id);
    let mut sans = vec![SanType::URI(ia5(&identity.uri(), "identity URI")?)];
    for host in hosts {
        let host = host.trim();
        if host.is_empty() {
            continue;
        }
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(dns_name(host)?),
        });
    }
    let generate = |e: rcgen::Error| NetError::Generate {
        what: format!("the certificate of {identity}"),
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("Quiver broker {broker_id} ({cluster_id})"));
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every broker is both a server (peers dial it) and a client (it dials peers).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    let cert = params
        .signed_by(&key, &ca.issuer, &ca.key)
        .map_err(generate)?;
    Ok(BrokerMaterial {
        broker_id,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Who a leaf certificate from [`issue_leaf`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUse {
    /// A TLS server (a Kafka listener): the hosts go into its names.
    Server,
    /// A TLS client: its subject is just `CN=<name>`, the principal Kafka derives.
    Client,
}

/// Issues a certificate signed by `ca` with the subject `CN=<common_name>` (clients)
/// or `O=Quiver, CN=<common_name>` (servers), and a DNS or IP name for each of
/// `hosts`. Returns (certificate PEM, private key PEM).
pub fn issue_leaf(
    ca: &CaMaterial,
    common_name: &str,
    hosts: &[String],
    usage: LeafUse,
) -> Result<(String, String), NetError> {
    let mut sans = Vec::new();
    for host in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(dns_name(host)?),
        });
    }
    let generate = |e: rcgen::Error| NetError::Generate {
        what: format!("the certificate of `{common_name}`"),
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = match usage {
        LeafUse::Server => name(common_name),
        LeafUse::Client => {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, common_name);
            dn
        }
    };
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match usage {
        LeafUse::Server => ExtendedKeyUsagePurpose::ServerAuth,
        LeafUse::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    let cert = params
        .signed_by(&key, &ca.issuer, &ca.key)
        .map_err(generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes one PEM file the way [`write_dir`] does (temporary name, then rename; keys
/// 0600), creating `path`'s directory if needed.
pub fn write_pem(path: &Path, contents: &str, secret: bool) -> Result<PathBuf, NetError> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    write_file(path, contents, secret)
}

/// Writes `ca` (when given) and `brokers` into `dir`, creating it (mode 0700) if
/// needed. Key files are created with mode 0600. Each file is written to a temporary
/// name and renamed, so a crash never leaves half a key. Returns the files written.
pub fn write_dir(
    dir: &Path,
    ca: Option<&CaMaterial>,
    brokers: &[BrokerMaterial],
) -> Result<Vec<PathBuf>, NetError> {
    create_dir(dir)?;
    let mut written = Vec::new();
    if let Some(ca) = ca {
        written.push(write_file(&dir.join(CA_CERT_FILE), &ca.cert_pem, false)?);
        written.push(write_file(&dir.join(CA_KEY_FILE), &ca.key_pem, true)?);
    }
    for broker in brokers {
        let cert = dir.join(broker_cert_file(broker.broker_id));
        let key = dir.join(broker_key_file(broker.broker_id));
        written.push(write_file(&cert, &broker.cert_pem, false)?);
        written.push(write_file(&key, &broker.key_pem, true)?);
    }
    Ok(written)
}

/// What [`create_cluster_certs`] did.
#[derive(Debug, Default)]
pub struct CertsReport {
    /// Whether an existing CA signed the new broker certificates.
    pub reused_ca: bool,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Broker certificates that already existed and were left alone.
    pub kept: Vec<PathBuf>,
}

/// `quiver cluster certs`: makes the CA and the certificates of `brokers` in `dir`.
///
/// Without `force` an existing CA is never replaced: its presence means brokers are
/// being added, so it signs the certificates of the brokers that have none yet and
/// leaves existing ones alone. With `force` a new CA and new certificates for every
/// listed broker replace what is there.
pub fn create_cluster_certs(
    dir: &Path,
    cluster_id: &str,
    brokers: &[BrokerId],
    hosts: &[String],
    force: bool,
) -> Result<CertsReport, NetError> {
    check_cluster_id(cluster_id)?;
    let ca_cert = dir.join(CA_CERT_FILE);
    let ca_key = dir.join(CA_KEY_FILE);
    let mut report = CertsReport::default();
    let (ca, new_ca) = match (force, ca_cert.exists(), ca_key.exists()) {
        (false, true, true) => {
            report.reused_ca = true;
            (CaMaterial::load(dir)?, false)
        }
        (false, true, false) | (false, false, true) => {
            let (present, missing) = if ca_cert.exists() {
                (&ca_cert, CA_KEY_FILE)
            } else {
                (&ca_key, CA_CERT_FILE)
            };
            return Err(NetError::Exists {
                path: present.clone(),
                reason: format!(
                    "exists, but {missing} does not, so no broker can be signed with this CA; pass --force to make a new CA"
                ),
            });
        }
        _ => (generate_ca(cluster_id)?, true),
    };
    let mut issued = Vec::new();
    for &id in brokers {
        let cert = dir.join(broker_cert_file(id));
        let key = dir.join(broker_key_file(id));
        if !force && (cert.exists() || key.exists()) {
            if new_ca {
                // Certificates without their CA are useless, but they are not ours to
                // delete unasked.
                return Err(NetError::Exists {
                    path: if cert.exists() { cert } else { key },
                    reason: "exists, but there is no CA beside it; pass --force to replace it"
                        .into(),
                });
            }
            report.kept.push(cert);
            continue;
        }
        issued.push(issue_broker(&ca, cluster_id, id, hosts)?);
    }
    report.written = write_dir(dir, new_ca.then_some(&ca), &issued)?;
    Ok(report)
}

/// For a single-node cluster without `cluster.tls_dir`: makes a CA and this broker's
/// certificate under `<data_dir>/cluster-tls` on first start and reuses them
/// afterwards. A broker certificate that no longer fits (another cluster id or broker
/// id, or not signed by the CA beside it) is replaced. Returns the directory to give
/// [`ClusterTls::load`](super::ClusterTls::load).
pub fn ensure_dev_certs(
    data_dir: &Path,
    cluster_id: &str,
    broker_id: BrokerId,
) -> Result<PathBuf, NetError> {
    let dir = data_dir.join(DEV_CERTS_DIR);
    if super::ClusterTls::load(&dir, cluster_id, broker_id).is_ok() {
        return Ok(dir);
    }
    let (ca, new_ca) = match CaMaterial::load(&dir) {
        Ok(ca) => (ca, false),
        Err(_) => (generate_ca(cluster_id)?, true),
    };
    let hosts: Vec<String> = DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect();
    let broker = issue_broker(&ca, cluster_id, broker_id, &hosts)?;
    write_dir(&dir, new_ca.then_some(&ca), &[broker])?;
    tracing::info!(dir = %dir.display(), broker_id, cluster_id, "made development certificates for the cluster transport");
    Ok(dir)
}

/// Test hook: a leaf signed by `ca` with exactly `sans`, to play a peer whose
/// certificate carries no identity (or a forged one).
#[cfg(test)]
pub(crate) fn issue_leaf_with_sans(ca: &CaMaterial, sans: Vec<SanType>) -> BrokerMaterial {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = name("test leaf");
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params);
    let cert = params.signed_by(&key, &ca.issuer, &ca.key).unwrap();
    BrokerMaterial {
        broker_id: -1,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Quiver");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back, so a peer whose clock is a little behind accepts a fresh cert.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
}

fn ia5(value: &str, what: &'static str) -> Result<Ia5String, NetError> {
    Ia5String::try_from(value.to_string()).map_err(|e| NetError::Invalid {
        what,
        value: value.to_string(),
        reason: e.to_string(),
    })
}

fn dns_name(host: &str) -> Result<Ia5String, NetError> {
    let valid = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(NetError::Invalid {
            what: "host",
            value: host.to_string(),
            reason: "not an IP address or DNS name".into(),
        });
    }
    ia5(host, "host")
}

fn first_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes()).find_map(Result::ok)
}

fn spki_of(der: &CertificateDer<'_>) -> Option<Vec<u8>> {
    webpki::EndEntityCert::try_from(der)
        .ok()
        .map(|c| c.subject_public_key_info().as_ref().to_vec())
}

fn read_string(path: &Path) -> Result<String, NetError> {
    std::fs::read_to_string(path).map_err(|source| NetError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), NetError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| NetError::WriteFile {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<PathBuf, NetError> {
    let err = |source| NetError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if secret { 0o600 } else { 0o644 });
    let mut file = options.open(&tmp).map_err(err)?;
    // A temporary file left by an earlier crash keeps its old mode; set it again.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    file.write_all(contents.as_bytes()).map_err(err)?;
    crate::durability::sync_file(&file, &tmp).map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect()
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        first_certificate(pem).unwrap()
    }

    #[test]
    fn identity_uris_round_trip() {
        let id = Identity::new("prod-eu.1", 42);
        assert_eq!(id.uri(), "quiver://prod-eu.1/broker/42");
        assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), Some(id));
        assert_eq!(Identity::parse_uri("spiffe://x/y").unwrap(), None);
        for bad in [
            "quiver://",
            "quiver://c/broker/",
            "quiver://c/broker/+1",
            "quiver://c/broker/-1",
            "quiver://c/broker/1/x",
            "quiver:///broker/1",
            "quiver://c d/broker/1",
            "quiver://c/brokers/1",
            "quiver://c/broker/99999999999",
        ] {
            let err = Identity::parse_uri(bad).unwrap_err();
            assert!(matches!(err, IdentityError::Malformed(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn broker_certificates_carry_their_identity() {
        let ca = generate_ca("c1").unwrap();
        let broker = issue_broker(&ca, "c1", 7, &hosts()).unwrap();
        let identity = Identity::of_certificate(&der(&broker.cert_pem)).unwrap();
        assert_eq!(identity, Identity::new("c1", 7));
        // The CA itself is no broker.
        let err = Identity::of_certificate(&der(&ca.cert_pem)).unwrap_err();
        assert_eq!(err, IdentityError::Missing);
    }

    #[test]
    fn bad_inputs_are_named() {
        let err = generate_ca("a b").unwrap_err().to_string();
        assert!(err.contains("cluster id `a b`"), "{err}");
        let ca = generate_ca("c").unwrap();
        let err = issue_broker(&ca, "c", 1, &["bad host!".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad host!"), "{err}");
        let err = issue_broker(&ca, "c", -1, &[]).unwrap_err().to_string();
        assert!(err.contains("broker id `-1`"), "{err}");
    }

    #[test]
    fn an_existing_ca_signs_new_brokers() {
        let dir = tempfile::tempdir().unwrap();
        let report = create_cluster_certs(dir.path(), "c", &[1, 2], &hosts(), false).unwrap();
        assert!(!report.reused_ca);
        assert_eq!(report.written.len(), 6);
        let ca_before = std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap();
        let key1_before = std::fs::read(dir.path().join("broker-1.key")).unwrap();

        let report = create_cluster_certs(dir.path(), "c", &[1, 3], &hosts(), false).unwrap();
        assert!(report.reused_ca);
        assert_eq!(report.kept, vec![dir.path().join("broker-1.pem")]);
        assert_eq!(
            report.written,
            vec![
                dir.path().join("broker-3.pem"),
                dir.path().join("broker-3.key")
            ]
        );
        assert_eq!(
            std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap(),
            ca_before
        );
        assert_eq!(
            std::fs::read(dir.path().join("broker-1.key")).unwrap(),
            key1_before
        );
        // The newcomer is trusted by the old brokers: it chains to the same CA.
        crate::net::ClusterTls::load(dir.path(), "c", 3).unwrap();
        crate::net::ClusterTls::load(dir.path(), "c", 1).unwrap();

        let report = create_cluster_certs(dir.path(), "c", &[1], &hosts(), true).unwrap();
        assert!(!report.reused_ca);
        assert_ne!(
            std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap(),
            ca_before
        );
    }

    #[test]
    fn a_half_ca_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_CERT_FILE), "x").unwrap();
        let err = create_cluster_certs(dir.path(), "c", &[1], &hosts(), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem: exists, but ca.key does not"), "{err}");
        assert!(err.contains("--force"), "{err}");
        assert_eq!(std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap(), b"x");
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        create_cluster_certs(dir.path(), "c", &[1], &hosts(), false).unwrap();
        for (file, mode) in [
            ("ca.key", 0o600),
            ("broker-1.key", 0o600),
            ("ca.pem", 0o644),
            ("broker-1.pem", 0o644),
        ] {
            let meta = std::fs::metadata(dir.path().join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
    }

    #[test]
    fn the_ca_key_must_match_the_ca() {
        let a = generate_ca("c").unwrap();
        let b = generate_ca("c").unwrap();
        let err = CaMaterial::from_pem(&a.cert_pem, &b.key_pem)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the key of ca.pem"), "{err}");
    }

    #[test]
    fn dev_certs_are_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = ensure_dev_certs(dir.path(), "dev", 0).unwrap();
        assert_eq!(tls_dir, dir.path().join(DEV_CERTS_DIR));
        let read = |f: &str| std::fs::read(tls_dir.join(f)).unwrap();
        let (ca, cert, key) = (read("ca.pem"), read("broker-0.pem"), read("broker-0.key"));
        assert_eq!(ensure_dev_certs(dir.path(), "dev", 0).unwrap(), tls_dir);
        assert_eq!(read("ca.pem"), ca);
        assert_eq!(read("broker-0.pem"), cert);
        assert_eq!(read("broker-0.key"), key);
        crate::net::ClusterTls::load(&tls_dir, "dev", 0).unwrap();

        // The cluster was renamed: same CA, a new certificate with the new identity.
        ensure_dev_certs(dir.path(), "renamed", 0).unwrap();
        assert_eq!(read("ca.pem"), ca);
        assert_ne!(read("broker-0.pem"), cert);
        crate::net::ClusterTls::load(&tls_dir, "renamed", 0).unwrap();
    }
}
