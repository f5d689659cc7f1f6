//! Typed access to a plugin's configuration.
//!
//! The host passes the deploy-time `--config key=value` pairs to `init` in order. Every
//! accessor's error names the key (and the offending value), because the operator reads
//! that message as the reason their deploy was refused.
//!
//! # Examples
//!
//! ```
//! use quiver_plugin_sdk::Config;
//!
//! let config = Config::from_pairs([("vip.partitions", "8"), ("vip.keys", "acme, globex")]);
//! config.check_known(&["vip.partitions", "vip.keys", "vip.prefixes"]).unwrap();
//! let reserved: u32 = config.parse("vip.partitions").unwrap();
//! assert_eq!(reserved, 8);
//! assert_eq!(config.list("vip.keys"), ["acme", "globex"]);
//! assert_eq!(config.get("vip.prefixes"), None);
//! assert_eq!(
//!     config.require("vip.prefixes").unwrap_err().to_string(),
//!     "missing required config key `vip.prefixes`"
//! );
//! ```

use std::fmt::Display;
use std::str::FromStr;

/// A configuration problem, naming the key; converts into
/// [`PluginError::InvalidConfig`](crate::PluginError::InvalidConfig).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required key is absent.
    #[error("missing required config key `{key}`")]
    Missing {
        /// The key.
        key: String,
    },
    /// A value does not parse, or is out of the accepted range.
    #[error("config key `{key}` has invalid value {value:?}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A key the plugin does not know (usually a typo).
    #[error("unknown config key `{key}` (known keys: {known})")]
    Unknown {
        /// The key.
        key: String,
        /// The keys the plugin accepts, comma-separated.
        known: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `key`'s `value`.
    pub fn invalid(key: &str, value: &str, reason: impl Display) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A plugin's configuration: key/value pairs in deploy order. When a key repeats, the
/// last value wins, as with repeated command-line flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// The configuration the host passed.
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }

    /// A configuration from borrowed pairs, for tests.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Config {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Every pair, in order, duplicates included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key).ok_or_else(|| ConfigError::Missing {
            key: key.to_owned(),
        })
    }

    /// The value of a required `key`, parsed; the error names the key and the value.
    pub fn parse<T>(&self, key: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let value = self.require(key)?;
        value
            .trim()
            .parse()
            .map_err(|e| ConfigError::invalid(key, value, e))
    }

    /// The value of an optional `key`, parsed: `None` when absent.
    pub fn parse_opt<T>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.parse(key).map(Some),
        }
    }

    /// The value of `key` parsed, or `default` when absent.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse_opt(key)?.unwrap_or(default))
    }

    /// A comma-separated list: items trimmed, empty items dropped; empty when absent.
    pub fn list(&self, key: &str) -> Vec<&str> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The output topics of a transform, in index order (the host's `quiver.outputs`).
    pub fn outputs(&self) -> Vec<&str> {
        self.list("quiver.outputs")
    }

    /// The index of output topic `topic` (what [`Outputs`](crate::Outputs) takes).
    pub fn output_index(&self, topic: &str) -> Option<u32> {
        self.outputs()
            .iter()
            .position(|t| *t == topic)
            .map(|i| i as u32)
    }

    /// A transform's input topic (the host's `quiver.input`).
    pub fn input(&self) -> Option<&str> {
        self.get("quiver.input")
    }

    /// Refuses keys not in `known`, so a misspelt key fails the deploy instead of being
    /// silently ignored. Keys under `quiver.`, which the host sets, always pass.
    pub fn check_known(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self
            .entries
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()) && !k.starts_with("quiver."))
        {
            None => Ok(()),
            Some((key, _)) => Err(ConfigError::Unknown {
                key: key.clone(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            }),
        }
    }
}

impl From<Vec<(String, String)>> for Config {
    fn from(entries: Vec<(String, String)>) -> Self {
        Config::new(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_value_wins() {
        let c = Config::from_pairs([("a", "1"), ("a", "2")]);
        assert_eq!(c.get("a"), Some("2"));
        assert_eq!(c.iter().count(), 2);
    }

    #[test]
    fn parse_errors_name_key_and_value() {
        let c = Config::from_pairs([("n", "ten")]);
        let err = c.parse::<u32>("n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `n` has invalid value \"ten\": invalid digit found in string"
        );
        assert_eq!(
            c.parse::<u32>("m").unwrap_err(),
            ConfigError::Missing { key: "m".into() }
        );
        assert_eq!(c.parse_opt::<u32>("m").unwrap(), None);
        assert_eq!(c.parse_or::<u32>("m", 4).unwrap(), 4);
        assert!(c.parse_or::<u32>("n", 4).is_err());
        assert_eq!(
            Config::from_pairs([("n", " 7 ")])
                .parse::<u32>("n")
                .unwrap(),
            7
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let c = Config::from_pairs([("vip.key", "x")]);
        let err = c.check_known(&["vip.keys"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown config key `vip.key` (known keys: vip.keys)"
        );
        assert!(Config::default().check_known(&[]).is_ok());
        assert!(c.check_known(&[]).unwrap_err().to_string().contains("none"));
    }

    #[test]
    fn lists_are_trimmed() {
        let c = Config::from_pairs([("l", " a, ,b ,")]);
        assert_eq!(c.list("l"), ["a", "b"]);
        assert!(c.list("x").is_empty());
    }
}
