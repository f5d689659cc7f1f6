//! What an operator deploys as a transform, as the cluster metadata keeps it: the
//! plugin, the input topic, the output topics (in the order the plugin's output indices
//! refer to), where to start, the delivery and error policies, and whether it is
//! paused. Pure data and its validation; running it is `runner`'s business.

use serde::{Deserialize, Serialize};

use crate::config::PluginsConfig;
use crate::plugin::{LimitError, LimitOverrides};

/// Where a transform starts reading an input partition it has no progress for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "kebab-case")]
pub enum StartFrom {
    /// The partition's log start.
    Earliest,
    /// The partition's high watermark when the transform first runs there.
    Latest,
    /// A fixed offset (clamped into the partition's log).
    Offset {
        /// The offset.
        offset: i64,
    },
    /// The first record with a timestamp at or after this one.
    Timestamp {
        /// Milliseconds since the Unix epoch.
        ms: i64,
    },
}

impl std::str::FromStr for StartFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |v: &str, what: &str| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("'{s}': {what} must be a non-negative integer"))
        };
        match s.split_once(':') {
            None if s == "earliest" => Ok(StartFrom::Earliest),
            None if s == "latest" => Ok(StartFrom::Latest),
            Some(("offset", v)) => Ok(StartFrom::Offset {
                offset: number(v, "the offset")?,
            }),
            Some(("timestamp", v)) => Ok(StartFrom::Timestamp {
                ms: number(v, "the timestamp (ms since the epoch)")?,
            }),
            _ => Err(format!(
                "'{s}' is not a start position: expected earliest, latest, offset:N or timestamp:MS"
            )),
        }
    }
}

impl std::fmt::Display for StartFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFrom::Earliest => f.write_str("earliest"),
            StartFrom::Latest => f.write_str("latest"),
            StartFrom::Offset { offset } => write!(f, "offset:{offset}"),
            StartFrom::Timestamp { ms } => write!(f, "timestamp:{ms}"),
        }
    }
}

/// What happens to an input record the plugin fails on (an error it reports for the
/// record, or a trap that keeps recurring on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum OnError {
    /// Write the input record to this topic, with the error and its coordinates in
    /// headers, and go on.
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
    },
    /// Stop the partition at the record; its position stays there until resumed.
    Stop,
}

/// Output records one input record may yield by default before the call counts as
/// failed (a runaway plugin cannot flood its outputs).
pub const DEFAULT_MAX_AMPLIFICATION: u32 = 100;

/// A deployed transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformSpec {
    /// Its name.
    pub name: String,
    /// Unique per creation: a transform removed and created again under the same name
    /// is another transform, with its own progress.
    #[serde(default)]
    pub id: String,
    /// The transform plugin it runs (its serving version).
    pub plugin: String,
    /// The input topic.
    pub input: String,
    /// The output topics, in index order.
    pub outputs: Vec<String>,
    /// Where partitions without progress start.
    pub from: StartFrom,
    /// Configuration for the plugin's `init`, after the plugin's own.
    pub config: Vec<(String, String)>,
    /// Exactly-once output (the plugin promises determinism), else at-least-once.
    pub deterministic: bool,
    /// The error policy.
    pub on_error: OnError,
    /// Most output records per input record.
    pub max_amplification: u32,
    /// Paused transforms keep their position and run nothing.
    pub paused: bool,
    /// When it was created, ms since the epoch.
    pub created_ms: i64,
    /// Bumped by each resume, so partitions that stopped at a failing record start
    /// again even when the transform was not paused.
    #[serde(default)]
    pub restarts: u32,
    /// Limits of this transform's plugin instances; unset fields take the plugin
    /// deployment's (see [`crate::plugin::TransformLimits`]). Specs kept before
    /// transforms had limits of their own load with none set.
    #[serde(default)]
    pub limits: LimitOverrides,
}

/// Why a transform spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Bad name.
    #[error("invalid transform name '{0}': use 1-100 characters from [a-zA-Z0-9._-]")]
    InvalidName(String),
    /// No outputs.
    #[error("a transform needs at least one output topic")]
    NoOutputs,
    /// An output repeats or is the input.
    #[error("output topic '{0}' {1}")]
    BadOutput(String, &'static str),
    /// A config entry the host reserves.
    #[error("config key '{0}' is reserved for the host (quiver.*)")]
    ReservedConfig(String),
    /// Zero amplification.
    #[error("max_amplification must be at least 1")]
    Amplification,
    /// A limit out of its range, or past the broker's.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Checks per-transform limits against their ranges and the broker's `[plugins]`
/// values: a transform may lower its plugin's limits or raise them up to what the
/// broker allows, never past it.
pub fn validate_limits(limits: &LimitOverrides, broker: &PluginsConfig) -> Result<(), SpecError> {
    Ok(limits.check(broker)?)
}

impl TransformSpec {
    /// Checks what can be checked without the cluster: the name, the outputs, the
    /// config keys.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 100
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(SpecError::InvalidName(self.name.clone()));
        }
        if self.outputs.is_empty() {
            return Err(SpecError::NoOutputs);
        }
        for (i, output) in self.outputs.iter().enumerate() {
            if *output == self.input {
                return Err(SpecError::BadOutput(
                    output.clone(),
                    "is the input topic; a transform cannot feed itself",
                ));
            }
            if self.outputs[..i].contains(output) {
                return Err(SpecError::BadOutput(output.clone(), "is listed twice"));
            }
        }
        if let OnError::DeadLetter { topic } = &self.on_error {
            if *topic == self.input {
                return Err(SpecError::BadOutput(
                    topic.clone(),
                    "is the input topic and cannot be the dead-letter topic",
                ));
            }
            if self.outputs.contains(topic) {
                return Err(SpecError::BadOutput(
                    topic.clone(),
                    "is also the dead-letter topic; dead letters need a topic of their own",
                ));
            }
        }
        if let Some((key, _)) = self.config.iter().find(|(k, _)| k.starts_with("quiver.")) {
            return Err(SpecError::ReservedConfig(key.clone()));
        }
        if self.max_amplification == 0 {
            return Err(SpecError::Amplification);
        }
        Ok(self.limits.check_ranges()?)
    }

    /// Every topic the transform writes: its outputs, then the dead-letter topic.
    pub fn written_topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self.outputs.iter().map(String::as_str).collect();
        if let OnError::DeadLetter { topic } = &self.on_error {
            topics.push(topic);
        }
        topics
    }

    /// The configuration `init` gets: the transform's entries and the host's.
    pub fn init_config(&self) -> Vec<(String, String)> {
        let mut config = self.config.clone();
        config.push(("quiver.input".into(), self.input.clone()));
        config.push(("quiver.outputs".into(), self.outputs.join(",")));
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TransformSpec {
        TransformSpec {
            name: "redact".into(),
            id: "1".into(),
            plugin: "json-redact".into(),
            input: "in".into(),
            outputs: vec!["out".into()],
            from: StartFrom::Earliest,
            config: vec![],
            deterministic: true,
            on_error: OnError::Stop,
            max_amplification: DEFAULT_MAX_AMPLIFICATION,
            paused: false,
            created_ms: 0,
            restarts: 0,
            limits: LimitOverrides::default(),
        }
    }

    #[test]
    fn start_positions_parse_and_print() {
        for s in ["earliest", "latest", "offset:42", "timestamp:1700000000000"] {
            assert_eq!(s.parse::<StartFrom>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "first",
            "offset:",
            "offset:-1",
            "timestamp:x",
            "offset:1:2",
        ] {
            assert!(bad.parse::<StartFrom>().is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.outputs = vec!["in".into()];
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cannot feed itself"));
        let mut s = spec();
        s.outputs = vec!["a".into(), "a".into()];
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let mut s = spec();
        s.config = vec![("quiver.outputs".into(), "x".into())];
        assert_eq!(
            s.validate(),
            Err(SpecError::ReservedConfig("quiver.outputs".into()))
        );
        let mut s = spec();
        s.name = "a b".into();
        assert!(matches!(s.validate(), Err(SpecError::InvalidName(_))));
        let mut s = spec();
        s.outputs.clear();
        assert_eq!(s.validate(), Err(SpecError::NoOutputs));
    }

    #[test]
    fn limits_out_of_range_are_refused_naming_the_field() {
        let mut s = spec();
        s.limits = LimitOverrides {
            max_memory_bytes: Some(16 << 20),
            call_timeout_ms: Some(100),
            max_output_bytes: Some(4096),
        };
        assert_eq!(s.validate(), Ok(()));
        // The defaults: 64 MiB, 500 ms, 16 MiB.
        let broker = PluginsConfig::default();
        assert_eq!(validate_limits(&s.limits, &broker), Ok(()));
        let refused =
            |limits: LimitOverrides| validate_limits(&limits, &broker).unwrap_err().to_string();
        let only = |field: &str, v: u64| {
            let mut l = LimitOverrides::default();
            match field {
                "max_memory_bytes" => l.max_memory_bytes = Some(v),
                "call_timeout_ms" => l.call_timeout_ms = Some(v),
                _ => l.max_output_bytes = Some(v),
            }
            l
        };
        assert_eq!(
            refused(only("max_memory_bytes", 0)),
            "max_memory_bytes 0 is out of range: must be between 1048576 and 4294967296"
        );
        assert_eq!(
            refused(only("call_timeout_ms", 0)),
            "call_timeout_ms 0 is out of range: must be between 1 and 600000"
        );
        assert_eq!(
            refused(only("call_timeout_ms", 600_001)),
            "call_timeout_ms 600001 is out of range: must be between 1 and 600000"
        );
        assert_eq!(
            refused(only("max_output_bytes", 0)),
            "max_output_bytes 0 is out of range: must be between 1 and 1073741824"
        );
        // Each of the broker's values is the most a transform may ask for.
        assert_eq!(
            refused(only("max_memory_bytes", 128 << 20)),
            "max_memory_bytes 134217728 is out of range: more than this broker's plugins.max_memory_bytes (67108864)"
        );
        assert_eq!(
            refused(only("call_timeout_ms", 501)),
            "call_timeout_ms 501 is out of range: more than this broker's plugins.call_timeout_ms (500)"
        );
        assert_eq!(
            refused(only("max_output_bytes", (16 << 20) + 1)),
            "max_output_bytes 16777217 is out of range: more than this broker's plugins.max_output_bytes (16777216)"
        );
        let at_the_ceilings = LimitOverrides {
            max_memory_bytes: Some(64 << 20),
            call_timeout_ms: Some(500),
            max_output_bytes: Some(16 << 20),
        };
        assert_eq!(validate_limits(&at_the_ceilings, &broker), Ok(()));
        // The spec's own check knows no broker: only the ranges.
        s.limits = only("call_timeout_ms", 600_000);
        assert_eq!(s.validate(), Ok(()));
        s.limits = only("max_output_bytes", 0);
        assert!(matches!(
            s.validate(),
            Err(SpecError::Limit(LimitError {
                field: "max_output_bytes",
                ..
            }))
        ));
    }

    #[test]
    fn specs_kept_before_limits_existed_still_load() {
        let mut value = serde_json::to_value(spec()).unwrap();
        value.as_object_mut().unwrap().remove("limits");
        let old: TransformSpec = serde_json::from_value(value).unwrap();
        assert_eq!(old, spec());
        assert_eq!(old.limits, LimitOverrides::default());
    }

    #[test]
    fn init_config_appends_the_host_entries() {
        let mut s = spec();
        s.outputs = vec!["a".into(), "b".into()];
        s.config = vec![("paths".into(), "x".into())];
        assert_eq!(
            s.init_config(),
            vec![
                ("paths".to_string(), "x".to_string()),
                ("quiver.input".into(), "in".into()),
                ("quiver.outputs".into(), "a,b".into()),
            ]
        );
    }
}
