//! The error every plugin hook returns.
//!
//! [`PluginError`] mirrors the WIT `plugin-error` variant so the glue converts it without
//! loss, and the host shows its message to the operator (`quiver plugin describe`, the
//! plugin log). Which case a plugin returns matters: `InvalidConfig` from `init` refuses
//! a deploy, the others apply the kind's failure policy.

use crate::columns::ColumnsError;
use crate::config::ConfigError;
use std::fmt::Display;

/// The result type of plugin hooks.
pub type Result<T, E = PluginError> = std::result::Result<T, E>;

/// Why a plugin call failed; the WIT `plugin-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// `init` rejected the configuration; the deploy is refused with this message.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The input cannot be handled (e.g. a record lacks a field the plugin needs).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl PluginError {
    /// An [`PluginError::InvalidConfig`] with `message`.
    pub fn invalid_config(message: impl Display) -> Self {
        PluginError::InvalidConfig(message.to_string())
    }

    /// An [`PluginError::InvalidInput`] with `message`.
    pub fn invalid_input(message: impl Display) -> Self {
        PluginError::InvalidInput(message.to_string())
    }

    /// A [`PluginError::Failed`] with `message`.
    pub fn failed(message: impl Display) -> Self {
        PluginError::Failed(message.to_string())
    }

    /// The message without the case prefix.
    pub fn message(&self) -> &str {
        match self {
            PluginError::InvalidConfig(m)
            | PluginError::InvalidInput(m)
            | PluginError::Failed(m) => m,
        }
    }
}

impl From<ConfigError> for PluginError {
    fn from(error: ConfigError) -> Self {
        PluginError::InvalidConfig(error.to_string())
    }
}

impl From<ColumnsError> for PluginError {
    fn from(error: ColumnsError) -> Self {
        PluginError::InvalidInput(format!("malformed record batch: {error}"))
    }
}
