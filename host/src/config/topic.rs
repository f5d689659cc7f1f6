//! Kafka topic configs (`retention.ms`, `segment.bytes`, …): their names, accepted
//! values, and how a topic's overrides combine with the broker's `[log]` defaults.
//!
//! One table ([`DEFS`]) drives validation for CreateTopics, AlterConfigs,
//! IncrementalAlterConfigs and the broker's own config file, and DescribeConfigs'
//! answer, so the rules cannot drift apart.

use std::collections::BTreeMap;

use kafka_protocol::records::Compression;

use super::LogDefaults;
use crate::log::LogConfig;

/// What values a topic config accepts.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A signed integer in an inclusive range.
    Long { min: i64, max: i64 },
    /// One of a fixed list of words.
    Choice(&'static [&'static str]),
    /// A comma-separated list, each element one of the words.
    List(&'static [&'static str]),
    /// A name: empty, or up to 64 of a-z, 0-9, '-' and '_'.
    Name,
    /// A decimal number in an inclusive range.
    Double { min: f64, max: f64 },
}

/// One topic config: its name, accepted values and meaning.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    /// The Kafka name, e.g. `retention.ms`.
    pub name: &'static str,
    kind: Kind,
    /// One line for DescribeConfigs' documentation field.
    pub doc: &'static str,
}

impl ConfigDef {
    /// Kafka's DescribeConfigs type code (LONG=5, STRING=2, LIST=7, INT=3, DOUBLE=6).
    pub fn type_code(&self) -> i8 {
        match self.kind {
            Kind::Long { max, .. } if max <= i32::MAX as i64 => 3,
            Kind::Long { .. } => 5,
            Kind::Choice(_) => 2,
            Kind::List(_) => 7,
            Kind::Name => 2,
            Kind::Double { .. } => 6,
        }
    }
}

const CODECS: &[&str] = &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"];

/// Every topic config Quiver knows. Unknown names are refused, as Kafka does.
pub const DEFS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        kind: Kind::List(&["delete", "compact"]),
        doc: "delete: drop old segments by retention; compact: keep the latest record per key",
    },
    ConfigDef {
        name: "compression.type",
        kind: Kind::Choice(CODECS),
        doc: "producer keeps batches as sent; a codec name recompresses batches on the broker",
    },
    ConfigDef {
        name: "delete.retention.ms",
        kind: Kind::Long {
            min: 0,
            max: i64::MAX,
        },
        doc: "compacted topics keep a tombstone readable this long after it is first compacted",
    },
    ConfigDef {
        name: "flush.messages",
        kind: Kind::Long {
            min: 1,
            max: i64::MAX,
        },
        doc: "fsync the partition after this many records",
    },
    ConfigDef {
        name: "flush.ms",
        kind: Kind::Long {
            min: -1,
            max: i64::MAX,
        },
        doc: "fsync the partition when this much time passed since the last fsync; -1 never",
    },
    ConfigDef {
        name: "index.interval.bytes",
        kind: Kind::Long {
            min: 1,
            max: i32::MAX as i64,
        },
        doc: "bytes between sparse offset-index entries",
    },
    ConfigDef {
        name: "max.message.bytes",
        kind: Kind::Long {
            min: 0,
            max: i32::MAX as i64,
        },
        doc: "largest record batch a producer may append",
    },
    ConfigDef {
        name: "message.timestamp.type",
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
        doc: "CreateTime keeps the producer's timestamp; LogAppendTime stamps the broker's clock",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        kind: Kind::Double { min: 0.0, max: 1.0 },
        doc: "compact once uncompacted bytes are at least this share of the compactable log",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        kind: Kind::Long {
            min: 0,
            max: i64::MAX,
        },
        doc: "leave records uncompacted until their segment's newest record is this old",
    },
    ConfigDef {
        name: "min.insync.replicas",
        kind: Kind::Long {
            min: 1,
            max: i32::MAX as i64,
        },
        doc: "replicas that must have a batch before acks=all completes",
    },
    ConfigDef {
        name: "partitioner",
        kind: Kind::Name,
        doc: "partitioner plugin for records that arrive without a partition; empty: built-in murmur2",
    },
    ConfigDef {
        name: "partitioner.fallback",
        kind: Kind::Choice(&["fail", "murmur2"]),
        doc: "when the partitioner plugin fails: fail the produce, or use the built-in murmur2",
    },
    ConfigDef {
        name: "retention.bytes",
        kind: Kind::Long {
            min: -1,
            max: i64::MAX,
        },
        doc: "delete oldest segments while the partition is larger than this; -1 unlimited",
    },
    ConfigDef {
        name: "retention.ms",
        kind: Kind::Long {
            min: -1,
            max: i64::MAX,
        },
        doc: "delete segments whose newest record is older than this; -1 keeps forever",
    },
    ConfigDef {
        name: "segment.bytes",
        kind: Kind::Long {
            min: 14,
            max: i32::MAX as i64,
        },
        doc: "roll the active segment once it would grow past this size",
    },
    ConfigDef {
        name: "segment.ms",
        kind: Kind::Long {
            min: 1,
            max: i64::MAX,
        },
        doc: "roll the active segment once it is this old",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        kind: Kind::Choice(&["false", "true"]),
        doc: "let an out-of-sync replica lead when no in-sync one is alive (loses acknowledged records)",
    },
];

/// Looks up a topic config by name.
pub fn def(name: &str) -> Option<&'static ConfigDef> {
    DEFS.iter().find(|d| d.name == name)
}

/// Checks one `name=value` pair; the error says what would be accepted.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let def = def(name).ok_or_else(|| format!("unknown topic config `{name}`"))?;
    match def.kind {
        Kind::Long { min, max } => {
            let parsed: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{name}` must be an integer"))?;
            if parsed < min {
                return Err(format!("`{name}` must be at least {min}"));
            }
            if parsed > max {
                return Err(format!("`{name}` must be at most {max}"));
            }
        }
        Kind::Double { min, max } => {
            let parsed: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{name}` must be a number"))?;
            if !(min..=max).contains(&parsed) {
                return Err(format!("`{name}` must be between {min} and {max}"));
            }
        }
        Kind::Choice(words) => {
            if !words.contains(&value.trim()) {
                return Err(format!("`{name}` must be one of {}", words.join(", ")));
            }
        }
        Kind::Name => {
            let ok = value.len() <= 64
                && value.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(format!(
                    "`{name}` must be empty or a plugin name (a-z, 0-9, '-', '_'; at most 64)"
                ));
            }
        }
        Kind::List(words) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if items.is_empty() || items.iter().any(|i| !words.contains(i)) {
                return Err(format!(
                    "`{name}` must be a comma-separated list of {}",
                    words.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// How a topic's batches are stored relative to how producers sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionPolicy {
    /// Keep each batch exactly as the producer compressed it.
    Producer,
    /// Recompress batches that use another codec.
    Codec(Compression),
}

/// A topic's effective settings: its overrides applied over the broker defaults.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    /// What the partition logs are given.
    pub log: LogConfig,
    /// Largest batch accepted from producers.
    pub max_message_bytes: i32,
    /// Whether the broker stamps append time.
    pub log_append_time: bool,
    /// Broker-side compression.
    pub compression: CompressionPolicy,
    /// Whether retention deletes segments (`delete` in cleanup.policy).
    pub delete_retention: bool,
    /// Whether the topic is compacted (`compact` in cleanup.policy).
    pub compact: bool,
    /// The partitioner plugin for records without a partition; `None`: built-in murmur2.
    pub partitioner: Option<String>,
    /// Whether a failing partitioner plugin falls back to murmur2 instead of failing.
    pub partitioner_fallback: bool,
    /// In-sync replicas an acks=all produce needs (`min.insync.replicas`).
    pub min_insync_replicas: i32,
}

/// Where a reported value came from, with Kafka's DescribeConfigs source codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Set on the topic (DYNAMIC_TOPIC_CONFIG = 1).
    Topic = 1,
    /// The broker-wide default from `[log]` (DEFAULT_CONFIG = 5).
    Default = 5,
}

/// Combines the broker defaults with a topic's (already validated) overrides.
pub fn resolve(defaults: &LogDefaults, overrides: &BTreeMap<String, String>) -> TopicSettings {
    let effective = effective(defaults, overrides);
    let get = |name: &str| -> &str {
        effective
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| v.as_str())
            .expect("every topic config has a default")
    };
    let long = |name: &str| -> i64 { get(name).trim().parse().unwrap_or(i64::MAX) };
    let compression = match get("compression.type").trim() {
        "uncompressed" => CompressionPolicy::Codec(Compression::None),
        "gzip" => CompressionPolicy::Codec(Compression::Gzip),
        "snappy" => CompressionPolicy::Codec(Compression::Snappy),
        "lz4" => CompressionPolicy::Codec(Compression::Lz4),
        "zstd" => CompressionPolicy::Codec(Compression::Zstd),
        _ => CompressionPolicy::Producer,
    };
    let policy = get("cleanup.policy");
    TopicSettings {
        log: LogConfig {
            segment_bytes: long("segment.bytes") as u64,
            segment_ms: long("segment.ms"),
            retention_bytes: long("retention.bytes"),
            retention_ms: long("retention.ms"),
            index_interval_bytes: long("index.interval.bytes") as u32,
            flush_interval_messages: get("flush.messages").trim().parse().unwrap_or(u64::MAX),
            flush_interval_ms: long("flush.ms"),
            delete_retention_ms: long("delete.retention.ms"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .unwrap_or(0.5),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
        },
        max_message_bytes: long("max.message.bytes") as i32,
        log_append_time: get("message.timestamp.type").trim() == "LogAppendTime",
        compression,
        delete_retention: policy.split(',').any(|p| p.trim() == "delete"),
        compact: policy.split(',').any(|p| p.trim() == "compact"),
        partitioner: Some(get("partitioner").trim().to_string()).filter(|p| !p.is_empty()),
        partitioner_fallback: get("partitioner.fallback").trim() == "murmur2",
        min_insync_replicas: long("min.insync.replicas").clamp(1, i32::MAX as i64) as i32,
    }
}

/// Every topic config with its effective value and where that value came from.
pub fn effective(
    defaults: &LogDefaults,
    overrides: &BTreeMap<String, String>,
) -> Vec<(&'static str, String, Source)> {
    let mut base: BTreeMap<&'static str, String> =
        defaults.as_topic_configs().into_iter().collect();
    base.insert("min.insync.replicas", "1".into());
    base.insert("partitioner", String::new());
    base.insert("partitioner.fallback", "fail".into());
    // Kafka's defaults; the broker has no `[log]` setting for these yet.
    base.insert("delete.retention.ms", "86400000".into());
    base.insert("min.cleanable.dirty.ratio", "0.5".into());
    base.insert("min.compaction.lag.ms", "0".into());
    base.insert("unclean.leader.election.enable", "false".into());
    DEFS.iter()
        .map(|d| match overrides.get(d.name) {
            Some(v) => (d.name, v.clone(), Source::Topic),
            None => (
                d.name,
                base.get(d.name).cloned().unwrap_or_default(),
                Source::Default,
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_rule() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert_eq!(
            validate("retention.ms", "-2").unwrap_err(),
            "`retention.ms` must be at least -1"
        );
        assert_eq!(
            validate("segment.bytes", "abc").unwrap_err(),
            "`segment.bytes` must be an integer"
        );
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "compact,nope").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "0.01").is_ok());
        assert_eq!(
            validate("min.cleanable.dirty.ratio", "1.5").unwrap_err(),
            "`min.cleanable.dirty.ratio` must be between 0 and 1"
        );
        assert_eq!(
            validate("min.cleanable.dirty.ratio", "half").unwrap_err(),
            "`min.cleanable.dirty.ratio` must be a number"
        );
        assert!(validate("delete.retention.ms", "-1").is_err());
        assert!(validate("min.compaction.lag.ms", "0").is_ok());
        assert!(validate("compression.type", "zstd").is_ok());
        assert!(validate("compression.type", "brotli").is_err());
        assert_eq!(
            validate("no.such", "1").unwrap_err(),
            "unknown topic config `no.such`"
        );
    }

    #[test]
    fn overrides_win_over_defaults() {
        let defaults = LogDefaults::default();
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.bytes".to_string(), "1000".to_string());
        overrides.insert("compression.type".to_string(), "zstd".to_string());
        overrides.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let s = resolve(&defaults, &overrides);
        assert_eq!(s.log.retention_bytes, 1000);
        assert_eq!(s.log.segment_bytes, defaults.segment_bytes);
        assert_eq!(s.compression, CompressionPolicy::Codec(Compression::Zstd));
        assert!(s.log_append_time);
        assert!(s.delete_retention && !s.compact);
        assert_eq!(s.log.delete_retention_ms, 86_400_000);
        assert_eq!(s.log.min_cleanable_dirty_ratio, 0.5);
        assert_eq!(s.log.min_compaction_lag_ms, 0);
        overrides.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        overrides.insert("min.cleanable.dirty.ratio".to_string(), "0.01".to_string());
        overrides.insert("delete.retention.ms".to_string(), "500".to_string());
        let s = resolve(&defaults, &overrides);
        assert!(s.compact && s.delete_retention);
        assert_eq!(s.log.min_cleanable_dirty_ratio, 0.01);
        assert_eq!(s.log.delete_retention_ms, 500);
        let described = effective(&defaults, &overrides);
        assert_eq!(described.len(), DEFS.len());
        assert!(described
            .iter()
            .any(|(n, v, s)| *n == "retention.bytes" && v == "1000" && *s == Source::Topic));
    }
}
