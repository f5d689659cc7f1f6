//! `[cluster]`: how this broker finds its peers, which brokers vote for the controller,
//! and the timing of leases and replication.
//!
//! With no seeds the broker is a single-node cluster: its own controller, with its own
//! development certificates generated into the data directory on first start. A
//! multi-node cluster names every seed as `id@host:port` (the cluster QUIC address), the
//! same list on every broker, and points `tls_dir` at certificates made with
//! `quiver cluster certs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[cluster]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Names the cluster; every broker certificate carries it, so a broker of another
    /// cluster is refused even when signed by the same CA.
    pub id: String,
    /// UDP address of the QUIC endpoint (controller RPC and replica fetch).
    pub listen: SocketAddr,
    /// Address peers use to reach this broker (ip:port); defaults to `listen`.
    pub advertised: Option<SocketAddr>,
    /// Every broker of the cluster as `id@host:port` (its QUIC address). Empty means a
    /// single-node cluster made of this broker alone.
    pub seeds: Vec<String>,
    /// Broker ids that vote for the controller; empty means the first three seeds.
    pub controllers: Vec<i32>,
    /// Directory holding `ca.pem`, `broker-<id>.pem` and `broker-<id>.key`. Unset on a
    /// single-node cluster means development certificates in `<data_dir>/cluster-tls`.
    pub tls_dir: Option<PathBuf>,
    /// PEM file of the CAs of other clusters whose brokers may mirror from this one
    /// over QUIC (`quiver mirror create --via quic` on those clusters). Their brokers
    /// may use the cluster transport's mirror channel only, which answers a mirror's
    /// reads (Metadata, DescribeConfigs, ListOffsets, Fetch, ListGroups,
    /// FindCoordinator, OffsetFetch) as `User:mirror@<their cluster id>`. Unset: no
    /// other cluster's broker is accepted.
    pub mirror_clients_ca: Option<PathBuf>,
    /// How often a broker renews its lease with the controller (ms).
    pub heartbeat_interval_ms: u64,
    /// A broker whose lease is this old (ms) is fenced and loses its leaderships; must
    /// be greater than `heartbeat_interval_ms`.
    pub session_timeout_ms: u64,
    /// A follower that has not caught up for this long (ms) leaves the ISR (Kafka's
    /// `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Longest a follower's fetch waits at the leader for new data (ms).
    pub replica_fetch_wait_max_ms: u64,
    /// Most bytes one replica fetch returns per partition (at least 1024).
    pub replica_fetch_max_bytes: u32,
    /// Compression of the replication stream: `none` or `zstd`.
    pub replication_compression: String,
    /// Replication factor of topics created without one (Kafka's
    /// `default.replication.factor`).
    pub default_replication_factor: i16,
    /// Replication factor of `__consumer_offsets`, capped by the brokers alive when it
    /// is created.
    pub offsets_topic_replication_factor: i16,
    /// How often the controller moves leadership back to preferred replicas (ms); 0
    /// turns the rebalance off.
    pub leader_rebalance_interval_ms: u64,
    /// Raft election timeout, lower bound (ms; the upper bound is twice this).
    pub election_timeout_ms: u64,
    /// Congestion control of the QUIC connections this broker sends on: `cubic`,
    /// `bbr` or `new_reno`. It governs what this broker sends, so it matters on the
    /// side the data leaves: leaders for replication, a mirror's source cluster for
    /// `--via quic`.
    pub congestion_control: CongestionControl,
    /// When a broker has missed two heartbeats, the controller sends one datagram to
    /// its cluster port; if the broker's host answers that nothing listens there (ICMP
    /// port unreachable: the process is gone, e.g. killed or crashed), the broker is
    /// fenced at once instead of when its lease runs out; a controller voter that gets
    /// that answer about the controller itself calls a Raft election at once. A live
    /// broker never gets that answer, even paused or cut off; turn this off only where a
    /// firewall rejects UDP to live brokers with port-unreachable instead of dropping it.
    pub fence_when_port_closed: bool,
}

/// How a QUIC connection paces what it sends (`cluster.congestion_control`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CongestionControl {
    /// Loss-based (RFC 9438), as Linux TCP by default: backs off on every loss, so
    /// one connection over a long lossy link gets little (about 0.2 MB/s at 1 % loss
    /// and 80 ms).
    Cubic,
    /// Model-based: paces at the measured bottleneck bandwidth and does not read a
    /// random loss as congestion, so a long lossy link (a mirror between regions)
    /// keeps its bandwidth; on a datacenter network it does as well as `cubic`.
    #[default]
    Bbr,
    /// Loss-based (RFC 9002's reference controller).
    NewReno,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            id: "quiver-dev".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9093)),
            advertised: None,
            seeds: Vec::new(),
            controllers: Vec::new(),
            tls_dir: None,
            mirror_clients_ca: None,
            heartbeat_interval_ms: 250,
            session_timeout_ms: 1500,
            replica_lag_time_max_ms: 10_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1024 * 1024,
            replication_compression: "none".into(),
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            leader_rebalance_interval_ms: 300_000,
            election_timeout_ms: 500,
            congestion_control: CongestionControl::default(),
            fence_when_port_closed: true,
        }
    }
}

/// One entry of `cluster.seeds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    /// The broker's id.
    pub id: i32,
    /// Its QUIC address.
    pub addr: SocketAddr,
}

impl ClusterConfig {
    /// The address peers reach this broker at.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised.unwrap_or(self.listen)
    }

    /// The parsed seeds, or for a single-node cluster this broker alone.
    pub fn seeds(&self, own_id: i32) -> Result<Vec<Seed>, ConfigError> {
        if self.seeds.is_empty() {
            return Ok(vec![Seed {
                id: own_id,
                addr: self.advertised(),
            }]);
        }
        let mut seeds = Vec::with_capacity(self.seeds.len());
        for entry in &self.seeds {
            let seed = parse_seed(entry).map_err(|reason| ConfigError::Invalid {
                key: "cluster.seeds".into(),
                value: entry.clone(),
                reason,
            })?;
            if seeds.iter().any(|s: &Seed| s.id == seed.id) {
                return Err(ConfigError::Invalid {
                    key: "cluster.seeds".into(),
                    value: entry.clone(),
                    reason: format!("broker id {} is listed twice", seed.id),
                });
            }
            seeds.push(seed);
        }
        Ok(seeds)
    }

    /// The controller voters: `cluster.controllers`, or the first three seeds.
    pub fn controllers(&self, own_id: i32) -> Result<Vec<i32>, ConfigError> {
        let seeds = self.seeds(own_id)?;
        if self.controllers.is_empty() {
            return Ok(seeds.iter().take(3).map(|s| s.id).collect());
        }
        for id in &self.controllers {
            if !seeds.iter().any(|s| s.id == *id) {
                return Err(ConfigError::Invalid {
                    key: "cluster.controllers".into(),
                    value: id.to_string(),
                    reason: "every controller must be one of cluster.seeds".into(),
                });
            }
        }
        Ok(self.controllers.clone())
    }

    /// Checks values that figment's typing cannot.
    pub(super) fn validate(&self, own_id: i32) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(
                "cluster.id",
                self.id.clone(),
                "must be non-empty ASCII letters, digits, '-', '_' or '.'",
            ));
        }
        let seeds = self.seeds(own_id)?;
        if !seeds.iter().any(|s| s.id == own_id) {
            return Err(invalid(
                "cluster.seeds",
                self.seeds.join(","),
                &format!("must include this broker (broker.node_id = {own_id})"),
            ));
        }
        self.controllers(own_id)?;
        if !self.seeds.is_empty() && self.tls_dir.is_none() {
            return Err(invalid(
                "cluster.tls_dir",
                String::new(),
                "a multi-node cluster needs certificates: create them with `quiver cluster certs` and set cluster.tls_dir",
            ));
        }
        let positive = [
            ("cluster.heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("cluster.session_timeout_ms", self.session_timeout_ms),
            (
                "cluster.replica_lag_time_max_ms",
                self.replica_lag_time_max_ms,
            ),
            ("cluster.election_timeout_ms", self.election_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "0".into(), "must be >= 1"));
            }
        }
        if self.session_timeout_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "cluster.session_timeout_ms",
                self.session_timeout_ms.to_string(),
                "must be greater than cluster.heartbeat_interval_ms",
            ));
        }
        if self.replica_fetch_max_bytes < 1024 {
            return Err(invalid(
                "cluster.replica_fetch_max_bytes",
                self.replica_fetch_max_bytes.to_string(),
                "must be >= 1024",
            ));
        }
        if !matches!(self.replication_compression.as_str(), "none" | "zstd") {
            return Err(invalid(
                "cluster.replication_compression",
                self.replication_compression.clone(),
                "must be none or zstd",
            ));
        }
        for (key, value) in [
            (
                "cluster.default_replication_factor",
                self.default_replication_factor,
            ),
            (
                "cluster.offsets_topic_replication_factor",
                self.offsets_topic_replication_factor,
            ),
        ] {
            if value < 1 {
                return Err(invalid(key, value.to_string(), "must be >= 1"));
            }
        }
        Ok(())
    }
}

fn parse_seed(entry: &str) -> Result<Seed, String> {
    let (id, addr) = entry
        .split_once('@')
        .ok_or_else(|| "expected id@host:port, e.g. 1@127.0.0.1:9093".to_string())?;
    let id: i32 = id
        .trim()
        .parse()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| format!("broker id '{id}' is not a non-negative integer"))?;
    let addr: SocketAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("'{addr}' is not an ip:port address"))?;
    Ok(Seed { id, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_seeds_make_a_single_node_cluster() {
        let config = ClusterConfig::default();
        let seeds = config.seeds(7).unwrap();
        assert_eq!(seeds.len(), 1);
        assert_eq!(seeds[0].id, 7);
        assert_eq!(config.controllers(7).unwrap(), vec![7]);
        config.validate(7).unwrap();
    }

    #[test]
    fn controllers_default_to_the_first_three_seeds() {
        let config = ClusterConfig {
            seeds: (1..=5)
                .map(|i| format!("{i}@127.0.0.1:{}", 9000 + i))
                .collect(),
            tls_dir: Some("/tmp/certs".into()),
            ..Default::default()
        };
        assert_eq!(config.controllers(4).unwrap(), vec![1, 2, 3]);
        config.validate(4).unwrap();
    }

    #[test]
    fn bad_seeds_name_the_entry() {
        let config = ClusterConfig {
            seeds: vec!["1@127.0.0.1:9093".into(), "two@127.0.0.1:9094".into()],
            tls_dir: Some("/tmp".into()),
            ..Default::default()
        };
        let err = config.validate(1).unwrap_err().to_string();
        assert!(err.contains("two@127.0.0.1:9094"), "{err}");
        assert!(err.contains("not a non-negative integer"), "{err}");
    }

    #[test]
    fn seeds_must_include_this_broker() {
        let config = ClusterConfig {
            seeds: vec!["1@127.0.0.1:9093".into()],
            tls_dir: Some("/tmp".into()),
            ..Default::default()
        };
        let err = config.validate(2).unwrap_err().to_string();
        assert!(err.contains("must include this broker"), "{err}");
    }

    #[test]
    fn multi_node_needs_certificates() {
        let config = ClusterConfig {
            seeds: vec!["1@127.0.0.1:9093".into(), "2@127.0.0.1:9094".into()],
            ..Default::default()
        };
        let err = config.validate(1).unwrap_err().to_string();
        assert!(err.contains("quiver cluster certs"), "{err}");
    }
}
