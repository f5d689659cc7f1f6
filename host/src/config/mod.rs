//! Broker configuration: one typed [`Config`], layered defaults < `quiver.toml` <
//! `QUIVER_<SECTION>__<KEY>` environment variables < command-line flags.
//!
//! Everything is validated before the broker opens a port or touches its data
//! directory, so a typo stops startup with a message naming the key, the value and why,
//! instead of surfacing later as odd behaviour. Topic-level settings (the Kafka topic
//! configs such as `retention.ms`) live in [`topic`]; their broker-wide defaults are the
//! `[log]` section here.

pub mod cluster;
pub mod topic;

pub use cluster::{ClusterConfig, CongestionControl, Seed};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value had the wrong type or an unknown key.
    #[error(transparent)]
    Load(#[from] Box<figment::Error>),
    /// A `--set` override was not of the form `section.key=value`.
    #[error("invalid override `{0}`: expected section.key=value")]
    BadOverride(String),
    /// A value was read but is outside what the broker accepts.
    #[error("invalid value {value:?} for `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `log.segment_bytes`.
        key: String,
        /// The offending value as written.
        value: String,
        /// What would be accepted.
        reason: String,
    },
}

/// The whole broker configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity and storage location of this broker.
    pub broker: BrokerConfig,
    /// The Kafka wire-protocol listener.
    pub kafka: KafkaConfig,
    /// Defaults for every partition log; topics may override most of them.
    pub log: LogDefaults,
    /// The HTTP admin API.
    pub admin: AdminConfig,
    /// Plugin sandbox limits (defaults, and the most a deploy may ask for) and native
    /// plugins.
    pub plugins: PluginsConfig,
    /// The consumer group coordinator.
    pub group: GroupConfig,
    /// Peers, controller voters, leases and replication.
    pub cluster: ClusterConfig,
    /// TLS, SASL and the ACL authorizer for the Kafka listeners.
    pub security: SecurityConfig,
}

/// How a Kafka listener secures its connections (Kafka's `security.protocol`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
pub enum SecurityProtocol {
    /// No TLS, no authentication: every client is `User:ANONYMOUS`.
    #[default]
    #[serde(rename = "PLAINTEXT", alias = "plaintext")]
    Plaintext,
    /// TLS; a client certificate, when verified, is the principal.
    #[serde(rename = "SSL", alias = "ssl")]
    Ssl,
    /// SASL without TLS.
    #[serde(rename = "SASL_PLAINTEXT", alias = "sasl_plaintext")]
    SaslPlaintext,
    /// SASL inside TLS.
    #[serde(rename = "SASL_SSL", alias = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name (`SASL_SSL`).
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `[kafka.listeners.<name>]`: a Kafka listener besides the main one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address it binds (ip:port).
    pub listen: SocketAddr,
    /// How it secures connections.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// Host clients are told to connect to; defaults to the listen address.
    #[serde(default)]
    pub advertised_host: Option<String>,
    /// Port clients are told to connect to; defaults to the listen port.
    #[serde(default)]
    pub advertised_port: Option<u16>,
}

impl ListenerConfig {
    /// The host and port clients should use to reach this listener.
    pub fn advertised(&self) -> (String, u16) {
        let host = self
            .advertised_host
            .clone()
            .unwrap_or_else(|| self.listen.ip().to_string());
        (host, self.advertised_port.unwrap_or(self.listen.port()))
    }
}

/// Whether TLS listeners ask clients for certificates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificates.
    #[default]
    None,
    /// Asked for; a client without one is anonymous, one with an untrusted one is refused.
    Requested,
    /// Every client must present a certificate signed by `client_ca_file`.
    Required,
}

/// `[security.tls]`: certificates of the TLS listeners (PEM files).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The listeners' certificate chain (PEM); SSL and SASL_SSL listeners need it.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// CA certificates trusted to sign client certificates (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
}

/// `[security.sasl]`: SASL on SASL_PLAINTEXT and SASL_SSL listeners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// Mechanisms offered: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (a list, or one string
    /// separated by commas, as Kafka's `sasl.enabled.mechanisms`).
    #[serde(deserialize_with = "string_list")]
    pub mechanisms: Vec<String>,
    /// Offer PLAIN on SASL_PLAINTEXT listeners too, where the password crosses the
    /// network in the clear. Off by default.
    pub plain_without_tls: bool,
}

impl Default for SaslConfig {
    fn default() -> Self {
        Self {
            mechanisms: vec![
                "PLAIN".into(),
                "SCRAM-SHA-256".into(),
                "SCRAM-SHA-512".into(),
            ],
            plain_without_tls: false,
        }
    }
}

/// `[security]`: TLS, SASL and authorization of Kafka clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// TLS listeners' certificates.
    pub tls: TlsConfig,
    /// SASL mechanisms.
    pub sasl: SaslConfig,
    /// Enforce ACLs (Kafka's `authorizer.class.name`): every request is checked, and
    /// what no ACL allows is denied.
    pub authorizer: bool,
    /// Principals allowed everything (`User:admin`; a list or a comma-separated string).
    #[serde(deserialize_with = "string_list")]
    pub super_users: Vec<String>,
}

/// A list of strings written either as a list or as one comma-separated string (the
/// form an environment variable or `--set` gives).
fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Form::deserialize(d)? {
        Form::One(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Form::Many(v) => v,
    })
}

/// `[admin]`: the HTTP admin API (plugin deploys, HTTP produce, health).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether the admin API runs (the `quiver` commands other than topic, produce,
    /// consume and group need it).
    pub enabled: bool,
    /// Address the admin API binds (ip:port).
    pub listen: SocketAddr,
    /// Largest request body (plugin uploads, HTTP produce), bytes.
    pub max_body_bytes: usize,
    /// Who may use the admin API: `none` (anyone who reaches the address) or `basic`
    /// (HTTP Basic with a SCRAM user's name and password, then the same ACLs as the
    /// Kafka listeners when `security.authorizer` is on; `/health` stays open).
    pub authentication: AdminAuthentication,
    /// Serve the admin API over HTTPS, with the Kafka TLS listeners' certificate
    /// (`security.tls.cert_file` and `key_file`), so Basic credentials never cross the
    /// network in the clear. The CLI then takes `--admin https://HOST:PORT` and the CA
    /// that signed the certificate in `QUIVER_ADMIN_CA`.
    pub tls: bool,
}

/// How the admin API identifies its callers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdminAuthentication {
    /// No check: for a listener only operators reach.
    #[default]
    None,
    /// HTTP Basic against the SCRAM users.
    Basic,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9644)),
            max_body_bytes: 64 * 1024 * 1024,
            authentication: AdminAuthentication::None,
            tls: false,
        }
    }
}

/// `[group]`: the consumer group coordinator (Kafka's `group.*` and `offsets.*`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// Partitions of `__consumer_offsets` when it is created; a group's coordinator
    /// partition depends on it, so it is fixed once the topic exists.
    pub offsets_topic_partitions: i32,
    /// How long the first rebalance of an empty group waits for more members (ms).
    pub initial_rebalance_delay_ms: i32,
    /// Smallest session timeout a consumer may ask for (ms).
    pub min_session_timeout_ms: i32,
    /// Largest session timeout a consumer may ask for (ms).
    pub max_session_timeout_ms: i32,
    /// Largest metadata string a committed offset may carry (bytes).
    pub max_offset_metadata_bytes: u32,
    /// Largest protocol metadata one member may send in a JoinGroup (bytes).
    pub max_member_metadata_bytes: u32,
    /// How long an OffsetCommit waits for its records to reach every in-sync replica
    /// of the offsets partition before it is answered REQUEST_TIMED_OUT, and a
    /// rebalance's responses for the group's stored metadata (ms; Kafka's
    /// `offsets.commit.timeout.ms`).
    pub offsets_commit_timeout_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_topic_partitions: 50,
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_offset_metadata_bytes: 4096,
            max_member_metadata_bytes: 1024 * 1024,
            offsets_commit_timeout_ms: 5_000,
        }
    }
}

/// `[plugins]`: every plugin's sandbox. The three limits are both the defaults and the
/// most a plugin or transform deploy may ask for: a deploy may lower them, and one asking
/// for more is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Memory cap of one plugin instance, bytes (also the most a deploy may ask for).
    pub max_memory_bytes: u64,
    /// Deadline of one call, ms (also the longest a deploy may ask for).
    pub call_timeout_ms: u64,
    /// Largest output of one call, bytes (also the most a deploy may ask for).
    pub max_output_bytes: u64,
    /// Consecutive traps after which a plugin is marked failed.
    pub max_traps: u32,
    /// Plugin instances the broker can hold at once (pooling allocator slots).
    pub max_instances: u32,
    /// Initialised instances kept per plugin for reuse, so a call rarely pays for
    /// instantiation.
    pub idle_instances: usize,
    /// Trusted native plugins.
    pub native: NativePluginsConfig,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 * 1024 * 1024,
            call_timeout_ms: 500,
            max_output_bytes: 16 * 1024 * 1024,
            max_traps: 3,
            max_instances: 64,
            idle_instances: 4,
            native: NativePluginsConfig::default(),
        }
    }
}

/// `[plugins.native]`: shared libraries loaded into the broker, without a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NativePluginsConfig {
    /// Off unless set: native code runs with the broker's privileges.
    pub enabled: bool,
    /// The only directories native plugins are loaded from; required when `enabled`.
    pub dirs: Vec<PathBuf>,
}

impl GroupConfig {
    /// The limits the group protocol enforces.
    pub fn limits(&self) -> crate::group::state::Limits {
        crate::group::state::Limits {
            min_session_timeout_ms: self.min_session_timeout_ms,
            max_session_timeout_ms: self.max_session_timeout_ms,
            initial_rebalance_delay_ms: self.initial_rebalance_delay_ms,
            max_member_metadata_bytes: self.max_member_metadata_bytes as usize,
            max_offset_metadata_bytes: self.max_offset_metadata_bytes as usize,
        }
    }
}

/// `[broker]`: who this broker is and where it keeps data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// This broker's id, as Kafka clients see it in Metadata.
    pub node_id: i32,
    /// Directory holding partition logs and metadata.
    pub data_dir: PathBuf,
    /// Failure domain (rack, zone) of this broker; replica placement spreads a
    /// partition's replicas over racks first.
    pub rack: Option<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            data_dir: PathBuf::from("./quiver-data"),
            rack: None,
        }
    }
}

/// `[kafka]`: the Kafka protocol listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Address the Kafka listener binds (ip:port).
    pub listen: SocketAddr,
    /// Host clients are told to connect to; defaults to the listen address.
    pub advertised_host: Option<String>,
    /// Port clients are told to connect to; defaults to the listen port.
    pub advertised_port: Option<u16>,
    /// Create a topic when a Metadata request names one that does not exist.
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics asking for the default.
    pub default_partitions: i32,
    /// Largest request frame accepted; a larger length prefix closes the connection
    /// before any of the frame is read or allocated.
    pub max_frame_bytes: u32,
    /// Most client connections one listener holds at once (Kafka's `max.connections`,
    /// counted per listener); a connection over it is closed as soon as it is accepted.
    /// Each open connection costs a file descriptor and up to 128 KiB of buffers, plus
    /// the request it is reading (at most `max_frame_bytes`).
    pub max_connections: u32,
    /// Most client connections from one IP address over all listeners at once (Kafka's
    /// `max.connections.per.ip`); a connection over it is closed as soon as it is
    /// accepted. 0: no limit per address.
    pub max_connections_per_ip: u32,
    /// A connection with no request for this long is closed, as is one whose response
    /// has waited this long to be written (a client that does not read); ms, Kafka's
    /// `connections.max.idle.ms`. A request being handled, a long-polling fetch
    /// included, is not idleness.
    pub connections_max_idle_ms: u64,
    /// Once the first byte of a request has arrived, the rest of the frame must arrive
    /// within this long or the connection is closed (ms), so a client trickling bytes
    /// cannot hold a connection and its buffer indefinitely.
    pub request_timeout_ms: u64,
    /// How the main listener (`listen`) secures connections; it is named after it
    /// (`PLAINTEXT`, `SASL_SSL`…).
    pub security_protocol: SecurityProtocol,
    /// More listeners, by name, e.g. `[kafka.listeners.secure]`.
    pub listeners: std::collections::BTreeMap<String, ListenerConfig>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: None,
            advertised_port: None,
            auto_create_topics: true,
            default_partitions: 1,
            max_frame_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            connections_max_idle_ms: 600_000,
            request_timeout_ms: 30_000,
            security_protocol: SecurityProtocol::Plaintext,
            listeners: Default::default(),
        }
    }
}

impl KafkaConfig {
    /// The host and port clients should use to reach this listener.
    pub fn advertised(&self) -> (String, u16) {
        let host = self
            .advertised_host
            .clone()
            .unwrap_or_else(|| self.listen.ip().to_string());
        (host, self.advertised_port.unwrap_or(self.listen.port()))
    }

    /// Every listener: the main one (named after its protocol) first, then the others
    /// by name.
    pub fn all_listeners(&self) -> Vec<(String, ListenerConfig)> {
        let main = ListenerConfig {
            listen: self.listen,
            security_protocol: self.security_protocol,
            advertised_host: self.advertised_host.clone(),
            advertised_port: self.advertised_port,
        };
        std::iter::once((self.security_protocol.name().to_string(), main))
            .chain(self.listeners.clone())
            .collect()
    }
}

/// `[log]`: broker-wide defaults for partition logs (Kafka's `log.*` settings).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogDefaults {
    /// Roll the active segment once it would grow past this many bytes.
    pub segment_bytes: u64,
    /// Roll the active segment once it is this old (ms).
    pub segment_ms: i64,
    /// Delete segments whose newest record is older than this (ms); -1 keeps forever.
    pub retention_ms: i64,
    /// Delete oldest segments while a partition is larger than this; -1 is unlimited.
    pub retention_bytes: i64,
    /// How often retention and time-based rolling are checked (ms).
    pub retention_check_interval_ms: u64,
    /// fsync a partition when this much time passed since its last fsync (ms); -1 never.
    pub flush_interval_ms: i64,
    /// fsync a partition after this many appended records; the default (Kafka's) never
    /// fsyncs by count.
    pub flush_interval_messages: u64,
    /// Bytes between sparse offset-index entries.
    pub index_interval_bytes: u32,
    /// Largest record batch a producer may send (Kafka's `message.max.bytes`).
    pub max_message_bytes: i32,
    /// `CreateTime` keeps the producer's timestamps, `LogAppendTime` stamps the broker's.
    pub message_timestamp_type: String,
    /// `producer` keeps batches as sent; `uncompressed`, `gzip`, `snappy`, `lz4` or
    /// `zstd` recompresses them on the broker.
    pub compression_type: String,
    /// `delete` (retention) or `compact`.
    pub cleanup_policy: String,
}

impl Default for LogDefaults {
    fn default() -> Self {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        Self {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * DAY_MS,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            retention_check_interval_ms: 300_000,
            flush_interval_ms: 1000,
            // Kafka's default (Long.MAX_VALUE): never fsync by count.
            flush_interval_messages: i64::MAX as u64,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            message_timestamp_type: "CreateTime".into(),
            compression_type: "producer".into(),
            cleanup_policy: "delete".into(),
        }
    }
}

impl Config {
    /// Loads the configuration: defaults, then `file` (or `./quiver.toml` if it exists),
    /// then `QUIVER_*` environment variables, then `overrides` (`section.key=value`).
    /// The result is validated.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("quiver.toml")),
        }
        // Only QUIVER_<SECTION>__<KEY> variables are settings; other QUIVER_* variables
        // (the CLI's QUIVER_BOOTSTRAP, say) are not the broker's business.
        figment = figment.merge(
            Env::prefixed("QUIVER_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .filter(|(k, _)| k.contains('.'))
                .ok_or_else(|| ConfigError::BadOverride(item.clone()))?;
            let value: figment::value::Value = value
                .parse()
                .map_err(|_| ConfigError::BadOverride(item.clone()))?;
            figment = figment.merge(Serialized::global(key.trim(), value));
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Listener names and addresses are distinct; TLS listeners have certificates;
    /// SASL mechanisms and super users are well formed.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        fn invalid(key: &str, value: &dyn std::fmt::Display, reason: String) -> ConfigError {
            ConfigError::Invalid {
                key: key.into(),
                value: value.to_string(),
                reason,
            }
        }
        let listeners = self.kafka.all_listeners();
        let main_name = self.kafka.security_protocol.name();
        for (name, listener) in &listeners[1..] {
            let key = format!("kafka.listeners.{name}");
            if name == main_name {
                return Err(invalid(
                    &key,
                    name,
                    format!("the main listener (kafka.listen) is already named {main_name}, after its security protocol"),
                ));
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    &key,
                    name,
                    "a listener name is ASCII letters, digits, '_' or '-'".into(),
                ));
            }
            if let Some(host) = &listener.advertised_host {
                if host.trim().is_empty() {
                    return Err(invalid(
                        &format!("{key}.advertised_host"),
                        host,
                        "must not be empty".into(),
                    ));
                }
            }
        }
        for (i, (name, listener)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..i]
                .iter()
                .find(|(_, l)| l.listen == listener.listen)
            {
                return Err(invalid(
                    &format!("kafka.listeners.{name}.listen"),
                    &listener.listen,
                    format!("listener {other} already binds this address"),
                ));
            }
        }
        let security = &self.security;
        if listeners.iter().any(|(_, l)| l.security_protocol.tls())
            && (security.tls.cert_file.is_none() || security.tls.key_file.is_none())
        {
            return Err(invalid(
                "security.tls.cert_file",
                &"(unset)",
                "an SSL or SASL_SSL listener needs security.tls.cert_file and security.tls.key_file".into(),
            ));
        }
        if self.admin.tls && (security.tls.cert_file.is_none() || security.tls.key_file.is_none()) {
            return Err(invalid(
                "security.tls.cert_file",
                &"(unset)",
                "admin.tls = true needs security.tls.cert_file and security.tls.key_file".into(),
            ));
        }
        if security.tls.client_auth != ClientAuth::None && security.tls.client_ca_file.is_none() {
            return Err(invalid(
                "security.tls.client_ca_file",
                &"(unset)",
                format!(
                    "security.tls.client_auth = {:?} needs the CA that signs client certificates",
                    security.tls.client_auth
                )
                .to_lowercase(),
            ));
        }
        for mechanism in &security.sasl.mechanisms {
            if crate::tenancy::sasl::SaslMechanism::parse(mechanism).is_none() {
                return Err(invalid(
                    "security.sasl.mechanisms",
                    mechanism,
                    "supported: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512".into(),
                ));
            }
        }
        if security.sasl.mechanisms.is_empty()
            && listeners.iter().any(|(_, l)| l.security_protocol.sasl())
        {
            return Err(invalid(
                "security.sasl.mechanisms",
                &"(empty)",
                "a SASL listener needs at least one mechanism".into(),
            ));
        }
        for user in &security.super_users {
            if crate::tenancy::Principal::parse(user).is_none() {
                return Err(invalid(
                    "security.super_users",
                    user,
                    "a principal is written Type:name, e.g. User:admin".into(),
                ));
            }
        }
        Ok(())
    }

    /// Checks every value against what the broker accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &str, value: impl ToString, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                key: key.into(),
                value: value.to_string(),
                reason: reason.into(),
            }
        }
        if self.broker.node_id < 0 {
            return Err(invalid(
                "broker.node_id",
                self.broker.node_id,
                "must be >= 0",
            ));
        }
        self.cluster.validate(self.broker.node_id)?;
        if self.broker.data_dir.as_os_str().is_empty() {
            return Err(invalid("broker.data_dir", "", "must not be empty"));
        }
        if !(1..=100_000).contains(&self.kafka.default_partitions) {
            return Err(invalid(
                "kafka.default_partitions",
                self.kafka.default_partitions,
                "must be between 1 and 100000",
            ));
        }
        if self.kafka.max_frame_bytes < 1024 || self.kafka.max_frame_bytes > i32::MAX as u32 {
            return Err(invalid(
                "kafka.max_frame_bytes",
                self.kafka.max_frame_bytes,
                "must be between 1024 and 2147483647",
            ));
        }
        let kafka = &self.kafka;
        if !(1..=1_000_000).contains(&kafka.max_connections) {
            return Err(invalid(
                "kafka.max_connections",
                kafka.max_connections,
                "must be between 1 and 1000000",
            ));
        }
        if kafka.max_connections_per_ip > kafka.max_connections {
            return Err(invalid(
                "kafka.max_connections_per_ip",
                kafka.max_connections_per_ip,
                "must be 0 (no limit per address) or at most kafka.max_connections",
            ));
        }
        if !(100..=7 * 24 * 3_600_000).contains(&kafka.connections_max_idle_ms) {
            return Err(invalid(
                "kafka.connections_max_idle_ms",
                kafka.connections_max_idle_ms,
                "must be between 100 (0.1 s) and 604800000 (7 days)",
            ));
        }
        if !(100..=3_600_000).contains(&kafka.request_timeout_ms) {
            return Err(invalid(
                "kafka.request_timeout_ms",
                kafka.request_timeout_ms,
                "must be between 100 (0.1 s) and 3600000 (1 hour)",
            ));
        }
        if let Some(host) = &self.kafka.advertised_host {
            if host.trim().is_empty() {
                return Err(invalid("kafka.advertised_host", host, "must not be empty"));
            }
        }
        self.validate_listeners()?;
        // The log defaults are exactly the topic configs' defaults, so they are checked
        // by the same rules a CreateTopics request is.
        for (key, value) in self.log.as_topic_configs() {
            if let Err(reason) = topic::validate(key, &value) {
                let broker_key = format!("log.{}", key.replace('.', "_"));
                return Err(invalid(&broker_key, value, &reason));
            }
        }
        let p = &self.plugins;
        if !(1024 * 1024..=4 * 1024 * 1024 * 1024).contains(&p.max_memory_bytes) {
            return Err(invalid(
                "plugins.max_memory_bytes",
                p.max_memory_bytes,
                "must be between 1 MiB and 4 GiB",
            ));
        }
        if !(1..=600_000).contains(&p.call_timeout_ms) {
            return Err(invalid(
                "plugins.call_timeout_ms",
                p.call_timeout_ms,
                "must be between 1 and 600000",
            ));
        }
        if p.max_output_bytes == 0 {
            return Err(invalid("plugins.max_output_bytes", 0, "must be >= 1"));
        }
        if p.max_traps == 0 {
            return Err(invalid("plugins.max_traps", 0, "must be >= 1"));
        }
        if !(1..=10_000).contains(&p.max_instances) {
            return Err(invalid(
                "plugins.max_instances",
                p.max_instances,
                "must be between 1 and 10000",
            ));
        }
        if p.native.enabled && p.native.dirs.is_empty() {
            return Err(invalid(
                "plugins.native.dirs",
                "[]",
                "must name at least one directory when plugins.native.enabled is true",
            ));
        }
        if self.log.retention_check_interval_ms == 0 {
            return Err(invalid(
                "log.retention_check_interval_ms",
                0,
                "must be >= 1",
            ));
        }
        if self.log.index_interval_bytes == 0 {
            return Err(invalid("log.index_interval_bytes", 0, "must be >= 1"));
        }
        let group = &self.group;
        if !(1..=1000).contains(&group.offsets_topic_partitions) {
            return Err(invalid(
                "group.offsets_topic_partitions",
                group.offsets_topic_partitions,
                "must be between 1 and 1000",
            ));
        }
        if !(1..=300_000).contains(&group.offsets_commit_timeout_ms) {
            return Err(invalid(
                "group.offsets_commit_timeout_ms",
                group.offsets_commit_timeout_ms,
                "must be between 1 and 300000",
            ));
        }
        if group.initial_rebalance_delay_ms < 0 {
            return Err(invalid(
                "group.initial_rebalance_delay_ms",
                group.initial_rebalance_delay_ms,
                "must be >= 0",
            ));
        }
        if group.min_session_timeout_ms < 1 {
            return Err(invalid(
                "group.min_session_timeout_ms",
                group.min_session_timeout_ms,
                "must be >= 1",
            ));
        }
        if group.max_session_timeout_ms < group.min_session_timeout_ms {
            return Err(invalid(
                "group.max_session_timeout_ms",
                group.max_session_timeout_ms,
                "must be >= group.min_session_timeout_ms",
            ));
        }
        if self.log.flush_interval_messages == 0 {
            return Err(invalid("log.flush_interval_messages", 0, "must be >= 1"));
        }
        Ok(())
    }
}

impl LogDefaults {
    /// These defaults as Kafka topic config pairs, the form [`topic`] validates and
    /// DescribeConfigs reports.
    pub fn as_topic_configs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("flush.ms", self.flush_interval_ms.to_string()),
            ("flush.messages", self.flush_interval_messages.to_string()),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            (
                "message.timestamp.type",
                self.message_timestamp_type.clone(),
            ),
            ("compression.type", self.compression_type.clone()),
            ("cleanup.policy", self.cleanup_policy.clone()),
        ]
    }
}

#[cfg(test)]
// figment's Jail hands back figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// Runs `f` while no other test has `QUIVER_*` variables set: `Config::load` reads
    /// the environment, which the `figment::Jail` tests change for the whole process.
    fn without_test_env(f: impl FnOnce()) {
        figment::Jail::expect_with(|_| {
            f();
            Ok(())
        });
    }

    #[test]
    fn the_readme_configuration_loads_as_written() {
        without_test_env(|| {
            let readme = include_str!("../../../README.md");
            let section = &readme[readme.find("## Configuration").unwrap()..];
            let start = section.find("```toml\n").unwrap() + "```toml\n".len();
            let toml = &section[start..start + section[start..].find("```").unwrap()];
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("quiver.toml");
            std::fs::write(&file, toml).unwrap();
            let config = Config::load(Some(&file), &[]).unwrap();
            assert!(!config.security.authorizer);
        });
    }

    #[test]
    fn listeners_and_security_are_checked_before_startup() {
        without_test_env(|| {
            let dir = tempfile::tempdir().unwrap();
            let empty = dir.path().join("quiver.toml");
            std::fs::write(&empty, "").unwrap();
            let load = |sets: &[&str]| {
                Config::load(
                    Some(&empty),
                    &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                )
            };
            let err = |sets: &[&str]| load(sets).unwrap_err().to_string();
            let secure = [
                "kafka.listeners.secure.listen=127.0.0.1:9094",
                "kafka.listeners.secure.security_protocol=SASL_SSL",
            ];
            assert!(err(&secure).contains("security.tls.cert_file"));
            let mut with_tls = secure.to_vec();
            with_tls.extend([
                "security.tls.cert_file=c.pem",
                "security.tls.key_file=k.pem",
            ]);
            let config = load(&with_tls).unwrap();
            let names: Vec<String> = config
                .kafka
                .all_listeners()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(names, ["PLAINTEXT", "secure"]);
            assert!(err(&["kafka.listeners.PLAINTEXT.listen=127.0.0.1:9094"])
                .contains("already named PLAINTEXT"));
            assert!(err(&["kafka.listeners.x.listen=127.0.0.1:9092"]).contains("already binds"));
            assert!(err(&["security.sasl.mechanisms=PLAIN,GSSAPI"]).contains("GSSAPI"));
            assert!(err(&["security.super_users=admin"]).contains("User:admin"));
            assert!(err(&["security.tls.client_auth=required"]).contains("client_ca_file"));
            assert!(err(&["admin.tls=true"]).contains(
                "admin.tls = true needs security.tls.cert_file and security.tls.key_file"
            ));
            let listed = load(&["security.super_users=User:a, User:b"]).unwrap();
            assert_eq!(listed.security.super_users, ["User:a", "User:b"]);
        });
    }

    #[test]
    fn defaults_are_valid_and_single_node() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.kafka.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.broker.data_dir, PathBuf::from("./quiver-data"));
        assert_eq!(config.kafka.advertised(), ("127.0.0.1".to_string(), 9092));
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "q.toml",
                "[log]\nsegment_bytes = 2048\nretention_ms = 5\n[kafka]\nlisten = \"127.0.0.1:1\"",
            )?;
            jail.set_env("QUIVER_LOG__RETENTION_MS", "6");
            jail.set_env("QUIVER_KAFKA__LISTEN", "127.0.0.1:2");
            jail.set_env("QUIVER_BOOTSTRAP", "not-a-setting");
            jail.set_env("QUIVER_LOG", "debug");
            let config = Config::load(
                Some(Path::new("q.toml")),
                &["kafka.listen=127.0.0.1:3".to_string()],
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(config.log.segment_bytes, 2048);
            assert_eq!(config.log.retention_ms, 6);
            assert_eq!(config.kafka.listen.port(), 3);
            Ok(())
        });
    }

    #[test]
    fn errors_name_key_value_and_reason() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("QUIVER_LOG__SEGMENT_BYTES", "3");
            let err = Config::load(None, &[]).unwrap_err().to_string();
            assert!(err.contains("log.segment_bytes"), "{err}");
            assert!(err.contains("\"3\""), "{err}");
            assert!(err.contains("at least 14"), "{err}");

            let err = Config::load(None, &["kafka.default_partitions=0".into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("kafka.default_partitions"), "{err}");

            let err = Config::load(None, &["log.nonsense=1".into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("nonsense"), "{err}");

            let err = Config::load(None, &["kafka.listen=not-an-address".into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn connection_limits_are_checked() {
        without_test_env(|| {
            let config = Config::default();
            assert_eq!(config.kafka.max_connections, 10_000);
            assert_eq!(config.kafka.max_connections_per_ip, 0);
            assert_eq!(config.kafka.connections_max_idle_ms, 600_000);
            let dir = tempfile::tempdir().unwrap();
            let empty = dir.path().join("quiver.toml");
            std::fs::write(&empty, "").unwrap();
            let load = |sets: &[&str]| {
                Config::load(
                    Some(&empty),
                    &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                )
            };
            let err = |set: &str| load(&[set]).unwrap_err().to_string();
            assert_eq!(
                err("kafka.max_connections=0"),
                "invalid value \"0\" for `kafka.max_connections`: must be between 1 and 1000000"
            );
            assert_eq!(
                err("kafka.max_connections_per_ip=20000"),
                "invalid value \"20000\" for `kafka.max_connections_per_ip`: must be 0 (no limit per address) or at most kafka.max_connections"
            );
            assert!(err("kafka.connections_max_idle_ms=10").contains("between 100 (0.1 s)"));
            assert!(err("kafka.request_timeout_ms=0").contains("`kafka.request_timeout_ms`"));
            let small = load(&[
                "kafka.max_connections=200",
                "kafka.max_connections_per_ip=50",
                "kafka.connections_max_idle_ms=2000",
                "kafka.request_timeout_ms=1500",
            ])
            .unwrap();
            assert_eq!(small.kafka.max_connections_per_ip, 50);
            assert_eq!(small.kafka.request_timeout_ms, 1500);
        });
    }

    #[test]
    fn group_settings_are_checked() {
        let mut config = Config::default();
        assert_eq!(config.group.offsets_topic_partitions, 50);
        assert_eq!(config.group.initial_rebalance_delay_ms, 3000);
        config.group.max_session_timeout_ms = 5;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("group.max_session_timeout_ms"), "{err}");
        config.group = GroupConfig {
            offsets_topic_partitions: 0,
            ..GroupConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("group.offsets_topic_partitions"), "{err}");
    }
}
