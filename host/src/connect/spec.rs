//! What an operator creates as a mirror, as the cluster metadata keeps it: where the
//! source cluster is and what it is called here, the connector plugin and its
//! configuration, how target topics are made, and how often the mirror looks for new
//! topics and translates group offsets. Pure data and its validation; running it is
//! `runner`'s business.

use serde::{Deserialize, Serialize};

/// How the mirror reaches the source cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// The Kafka protocol, so the source can be any Kafka-API cluster.
    Kafka,
    /// The cluster transport of a Quiver source (QUIC, zstd, a stream per request).
    Quic,
}

impl std::str::FromStr for Via {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kafka" => Ok(Via::Kafka),
            "quic" => Ok(Via::Quic),
            other => Err(SpecError::Via(other.to_string())),
        }
    }
}

/// Configs never copied from a source topic to its target, as MirrorMaker 2's
/// `DefaultConfigPropertyFilter`: replication settings that belong to each cluster, and
/// the partitioner plugin (plugins are deployed per cluster).
pub const DEFAULT_EXCLUDED_CONFIGS: &[&str] = &[
    "partitioner",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "unclean.leader.election.enable",
    "min.insync.replicas",
];

/// A mirror: records and group offsets of a source cluster, copied into this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorSpec {
    /// Its name.
    pub name: String,
    /// Unique per creation: a mirror deleted and created again under the same name
    /// starts afresh.
    pub id: String,
    /// The source cluster's bootstrap servers (`host:port[,host:port…]`).
    pub source: String,
    /// What this cluster calls the source (`us-east`): the prefix of target topic names
    /// under the default naming, and what the plugin is told.
    pub alias: String,
    /// How the source is reached.
    pub via: Via,
    /// The source cluster's CA (PEM), which signs the source brokers' cluster
    /// certificates: what a mirror over QUIC trusts. Unset for `via: kafka`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ca: Option<String>,
    /// The connector plugin deciding topics, names, groups and records.
    pub plugin: String,
    /// Configuration for the plugin's `init`, after the plugin's own (`topics` and
    /// `groups` from the command line are entries here).
    pub config: Vec<(String, String)>,
    /// Idempotent target writes keyed by source coordinates: a replay after a crash
    /// or failover writes nothing twice.
    pub exactly_once: bool,
    /// Replication factor of the target topics it creates (0: min(3, brokers)).
    pub replication_factor: i16,
    /// Topic configs not copied from the source.
    pub excluded_configs: Vec<String>,
    /// How often the source is asked for new topics and partitions, ms.
    pub discovery_interval_ms: u64,
    /// How often mirrored groups' offsets are translated, ms.
    pub checkpoint_interval_ms: u64,
    /// Paused mirrors keep their positions and copy nothing.
    pub paused: bool,
    /// When it was created, ms since the epoch.
    pub created_ms: i64,
}

/// Why a mirror spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Bad name.
    #[error("invalid mirror name '{0}': use 1-100 characters from [a-zA-Z0-9._-]")]
    InvalidName(String),
    /// Bad alias.
    #[error("invalid source alias '{0}': use 1-100 characters from [a-zA-Z0-9._-]")]
    InvalidAlias(String),
    /// No source.
    #[error("no source cluster given (--source host:port[,host:port…])")]
    NoSource,
    /// A source address that is not host:port.
    #[error("source address '{0}' is not host:port")]
    BadSource(String),
    /// An unknown transport.
    #[error("'{0}' is not a mirror transport: expected kafka or quic")]
    Via(String),
    /// QUIC without the source's CA.
    #[error("mirroring over QUIC needs the source cluster's CA (--source-ca PATH to its ca.pem): it is what the mirror trusts the source brokers by")]
    NoSourceCa,
    /// A source CA for the Kafka transport, which would not use it.
    #[error("--source-ca is for --via quic; over the Kafka protocol the mirror does not use it")]
    SourceCaWithoutQuic,
    /// A source CA that holds no certificate.
    #[error("the source CA is not PEM: it holds no CERTIFICATE block")]
    SourceCaNotPem,
    /// A config entry the host reserves.
    #[error("config key '{0}' is reserved for the host (quiver.*)")]
    ReservedConfig(String),
    /// An interval out of range.
    #[error("{0} must be between 100 ms and 1 day")]
    Interval(&'static str),
    /// A replication factor out of range.
    #[error("replication factor {0} is out of range (0 for the default, else 1 and up)")]
    ReplicationFactor(i16),
}

fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl MirrorSpec {
    /// Checks what can be checked without either cluster.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_name(&self.name) {
            return Err(SpecError::InvalidName(self.name.clone()));
        }
        if !valid_name(&self.alias) {
            return Err(SpecError::InvalidAlias(self.alias.clone()));
        }
        let addresses: Vec<&str> = self
            .source
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if addresses.is_empty() {
            return Err(SpecError::NoSource);
        }
        for address in addresses {
            let port = address.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(p)) if p > 0) {
                return Err(SpecError::BadSource(address.to_string()));
            }
        }
        match (&self.via, &self.source_ca) {
            (Via::Quic, None) => return Err(SpecError::NoSourceCa),
            (Via::Kafka, Some(_)) => return Err(SpecError::SourceCaWithoutQuic),
            (Via::Quic, Some(pem)) if !pem.contains("-----BEGIN CERTIFICATE-----") => {
                return Err(SpecError::SourceCaNotPem)
            }
            _ => {}
        }
        if let Some((key, _)) = self.config.iter().find(|(k, _)| k.starts_with("quiver.")) {
            return Err(SpecError::ReservedConfig(key.clone()));
        }
        let range = 100..=86_400_000;
        if !range.contains(&self.discovery_interval_ms) {
            return Err(SpecError::Interval("the discovery interval"));
        }
        if !range.contains(&self.checkpoint_interval_ms) {
            return Err(SpecError::Interval("the checkpoint interval"));
        }
        if self.replication_factor < 0 {
            return Err(SpecError::ReplicationFactor(self.replication_factor));
        }
        Ok(())
    }

    /// Whether a source topic config is copied to the target.
    pub fn copies_config(&self, key: &str) -> bool {
        !DEFAULT_EXCLUDED_CONFIGS.contains(&key) && !self.excluded_configs.iter().any(|k| k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> MirrorSpec {
        MirrorSpec {
            name: "east".into(),
            id: "1".into(),
            source: "127.0.0.1:9092".into(),
            alias: "us-east".into(),
            via: Via::Kafka,
            source_ca: None,
            plugin: "mirror".into(),
            config: vec![("topics".into(), "orders.*".into())],
            exactly_once: false,
            replication_factor: 0,
            excluded_configs: vec!["retention.ms".into()],
            discovery_interval_ms: 5000,
            checkpoint_interval_ms: 5000,
            paused: false,
            created_ms: 0,
        }
    }

    #[test]
    fn a_good_spec_passes() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut s = spec();
        s.name = "a/b".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mirror name 'a/b'"));
        let mut s = spec();
        s.source = "localhost".into();
        assert_eq!(s.validate(), Err(SpecError::BadSource("localhost".into())));
        let mut s = spec();
        s.config.push(("quiver.x".into(), "1".into()));
        assert_eq!(
            s.validate(),
            Err(SpecError::ReservedConfig("quiver.x".into()))
        );
        let mut s = spec();
        s.checkpoint_interval_ms = 5;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("checkpoint interval"));
        assert_eq!("quic".parse::<Via>(), Ok(Via::Quic));
        let mut s = spec();
        s.via = Via::Quic;
        assert_eq!(s.validate(), Err(SpecError::NoSourceCa));
        s.source_ca = Some("not a certificate".into());
        assert_eq!(s.validate(), Err(SpecError::SourceCaNotPem));
        s.source_ca = Some("-----BEGIN CERTIFICATE-----\n".into());
        assert_eq!(s.validate(), Ok(()));
        s.via = Via::Kafka;
        assert_eq!(s.validate(), Err(SpecError::SourceCaWithoutQuic));
        assert_eq!("tcp".parse::<Via>(), Err(SpecError::Via("tcp".into())));
    }

    #[test]
    fn replication_configs_stay_behind() {
        let s = spec();
        assert!(s.copies_config("cleanup.policy"));
        assert!(!s.copies_config("min.insync.replicas"));
        assert!(!s.copies_config("retention.ms"));
    }
}
