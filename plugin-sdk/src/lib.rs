#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(unused_must_use)]

// The generated bindings and the macros name the SDK by its crate name, which must
// also resolve inside the SDK itself (its bindings, unit tests and doctests).
extern crate self as quiver_plugin_sdk;

pub mod abi;
pub mod columns;
pub mod config;
pub mod connector;
pub mod error;
#[doc(hidden)]
pub mod glue;
pub mod hash;
mod macros;
#[doc(hidden)]
pub mod native;
pub mod partitioner;
pub mod quota;
#[cfg(feature = "json")]
pub mod select;
mod slot;
pub mod testing;
pub mod transform;

pub use crate::columns::{Batch, Columns, ColumnsBuilder, ColumnsError, Record};
pub use crate::config::{Config, ConfigError};
pub use crate::connector::Connector;
pub use crate::error::{PluginError, Result};
pub use crate::partitioner::Partitioner;
pub use crate::quota::{Client, Limits, QuotaPolicy, Usage};
pub use crate::transform::{Outputs, Transform, TransformOutput};
#[cfg(feature = "guest")]
pub use quiver_plugin_sdk_macros::{init, partitioner};

/// The plugin API version this SDK implements: the version of the WIT package
/// `quiver:plugin` it was generated from. WASM plugins carry it in their
/// [`API_VERSION_SECTION`] custom section; native plugins return it, encoded, from
/// `quiver_plugin_api_version` ([`abi::QUIVER_API_VERSION`]).
pub const API_VERSION: &str = "0.1.0";

/// Name of the custom section holding [`API_VERSION`] as UTF-8 in every WASM plugin.
/// The host reads it (from the component's nested core module) before instantiating.
pub const API_VERSION_SECTION: &str = "quiver:api-version";

/// Everything a plugin's source needs: `use quiver_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::columns::{Batch, Columns, ColumnsBuilder, Record};
    pub use crate::config::{Config, ConfigError};
    pub use crate::connector::Connector;
    pub use crate::error::{PluginError, Result};
    pub use crate::partitioner::Partitioner;
    pub use crate::quota::{Client, Limits, QuotaPolicy, Usage};
    pub use crate::transform::{Outputs, Transform, TransformOutput};
    pub use crate::{
        register_connector, register_partitioner, register_quota_policy, register_transform,
    };
    #[cfg(feature = "guest")]
    pub use quiver_plugin_sdk_macros::{init, partitioner};
}

/// Items the generated code uses; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::connector::assert_connector;
    pub use crate::glue;
    pub use crate::native;
    pub use crate::partitioner::assert_partitioner;
    pub use crate::quota::assert_quota_policy;
    pub use crate::slot::Slot;
    pub use crate::transform::{assert_transform, TransformInstance};
    #[cfg(all(target_arch = "wasm32", feature = "guest"))]
    pub use wit_bindgen;

    /// [`crate::API_VERSION`] as the bytes of the custom section.
    pub const API_VERSION_BYTES: [u8; 5] = *b"0.1.0";

    /// What `#[partitioner]` resolves `__quiver_init` to when the module has no
    /// `#[init]` function: an explicit item shadows this glob-imported one.
    pub mod no_init {
        /// Accepts any configuration.
        pub fn __quiver_init(config: &crate::Config) -> crate::Result<()> {
            let _ = config;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_version_matches_the_wit_package_and_the_abi() {
        assert_eq!(
            super::API_VERSION.as_bytes(),
            super::__private::API_VERSION_BYTES
        );
        let wit = include_str!("../../wit/types.wit");
        assert!(
            wit.contains(&format!("package quiver:plugin@{};", super::API_VERSION)),
            "wit/types.wit declares a different package version"
        );
        let mut parts = super::API_VERSION
            .split('.')
            .map(|p| p.parse::<u32>().unwrap());
        let (major, minor, patch) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert_eq!(
            super::abi::QUIVER_API_VERSION,
            (major << 16) | (minor << 8) | patch
        );
    }
}
