//! The `quota-policy` kind: map clients to quota keys and decide each key's limits.
//!
//! The host meters and enforces (Kafka's `throttle_time_ms` and muting); the policy only
//! decides. Its failure policy is to fail closed, so a policy should return errors only
//! for genuinely undecidable clients.

use crate::config::Config;
use crate::error::Result;

/// Who is asking (the WIT `client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Authenticated principal, e.g. `User:alice`; `User:ANONYMOUS` without auth.
    pub principal: String,
    /// The tenant the principal belongs to, if any.
    pub tenant: Option<String>,
    /// The Kafka `client.id`.
    pub client_id: String,
    /// The client's address.
    pub host: String,
}

/// Limits for one quota key (the WIT `limits`); `None` is unlimited, and the default is
/// unlimited everywhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Produce throughput.
    pub produce_bytes_per_second: Option<u64>,
    /// Fetch throughput.
    pub fetch_bytes_per_second: Option<u64>,
    /// Request rate.
    pub requests_per_second: Option<u32>,
}

/// Usage of one key over the last window (the WIT `usage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The quota key.
    pub key: String,
    /// Bytes produced in the window.
    pub produce_bytes: u64,
    /// Bytes fetched in the window.
    pub fetch_bytes: u64,
    /// Requests in the window.
    pub requests: u32,
    /// Window length.
    pub window_ms: u32,
}

/// A quota policy.
///
/// ```
/// use quiver_plugin_sdk::prelude::*;
///
/// /// One shared budget per tenant, 10 MB/s produce each.
/// #[derive(Default)]
/// struct PerTenant;
///
/// impl QuotaPolicy for PerTenant {
///     fn quota_key(&mut self, client: &Client) -> Result<String> {
///         Ok(client.tenant.clone().unwrap_or_else(|| client.principal.clone()))
///     }
///
///     fn limits(&mut self, _key: &str, _recent: Option<&Usage>) -> Result<Limits> {
///         Ok(Limits { produce_bytes_per_second: Some(10_000_000), ..Limits::default() })
///     }
/// }
///
/// register_quota_policy!(PerTenant);
/// # fn main() {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Quiver quota policy",
    label = "registered as a quota policy here",
    note = "implement `quiver_plugin_sdk::QuotaPolicy` (and `Default`) for it"
)]
pub trait QuotaPolicy {
    /// Configures the plugin; see [`Partitioner::init`](crate::Partitioner::init).
    fn init(&mut self, config: &Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// The key a client is metered under; clients with the same key share a budget.
    /// Defaults to the principal, like Kafka's user quotas.
    fn quota_key(&mut self, client: &Client) -> Result<String> {
        Ok(client.principal.clone())
    }

    /// The limits of `key`: called when the key is first seen (`recent` is `None`) and
    /// after each window with that window's usage.
    fn limits(&mut self, key: &str, recent: Option<&Usage>) -> Result<Limits>;
}

/// Compile-time check used by `register_quota_policy!`.
#[doc(hidden)]
pub const fn assert_quota_policy<T: QuotaPolicy + Default + Send + 'static>() {}
