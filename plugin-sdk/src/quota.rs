//! The `quota-policy` kind: map clients to quota keys and decide each key's limits.
//!
//! The host meters and enforces (Kafka's `throttle_time_ms` and muting); the policy only
//! decides. Its failure policy is to fail closed, so a policy should return errors only
//! for genuinely undecidable clients.

use crate::config::{Config, ConfigError};
use crate::error::Result;

/// Who is asking (the WIT `client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Authenticated principal, e.g. `User:alice`; `User:ANONYMOUS` without auth.
    pub principal: String,
    /// The tenant the principal belongs to, if any.
    pub tenant: Option<String>,
    /// The Kafka `client.id` (empty when the client sent none).
    pub client_id: String,
    /// The listener the client connected to.
    pub listener: String,
    /// The client's IP address.
    pub host: String,
}

impl Client {
    /// The usual quota key: `tenant:<TENANT>` for a tenant's client, so all of a
    /// tenant's clients share one budget, else `user:<USER>` (the principal without
    /// `User:`; `user:ANONYMOUS` without authentication).
    pub fn tenant_or_user_key(&self) -> String {
        match self.tenant.as_deref() {
            Some(tenant) if !tenant.is_empty() => format!("tenant:{tenant}"),
            _ => {
                let user = self
                    .principal
                    .strip_prefix("User:")
                    .unwrap_or(&self.principal);
                format!("user:{user}")
            }
        }
    }
}

/// A positive, finite number from config `key`'s `value`, or an error naming both.
pub fn positive(key: &str, value: &str) -> std::result::Result<f64, ConfigError> {
    match value.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(ConfigError::invalid(
            key,
            value,
            "expected a positive number",
        )),
    }
}

/// A byte rate from config `key`'s `value`: a positive number (`4e6` too) rounded to
/// whole bytes per second, at least one.
pub fn byte_rate(key: &str, value: &str) -> std::result::Result<u64, ConfigError> {
    let n = positive(key, value)?.round();
    if n < 1.0 {
        return Err(ConfigError::invalid(
            key,
            value,
            "a byte rate must be at least 1 byte per second",
        ));
    }
    if n >= u64::MAX as f64 {
        return Err(ConfigError::invalid(key, value, "too large"));
    }
    Ok(n as u64)
}

/// Limits for one quota key (the WIT `limits`); `None` is unlimited, and the default is
/// unlimited everywhere.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Bytes per second produced (`producer_byte_rate`).
    pub produce_bytes_per_second: Option<u64>,
    /// Bytes per second fetched (`consumer_byte_rate`).
    pub fetch_bytes_per_second: Option<u64>,
    /// Percent of one request thread's time (`request_percentage`).
    pub request_percentage: Option<f64>,
    /// Partitions created or deleted per second (`controller_mutation_rate`).
    pub controller_mutations_per_second: Option<f64>,
}

/// What one key used over the last window on this broker (the WIT `usage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The quota key.
    pub key: String,
    /// Bytes produced.
    pub produce_bytes: u64,
    /// Bytes fetched.
    pub fetch_bytes: u64,
    /// Requests handled.
    pub requests: u32,
    /// Time spent handling its requests, microseconds.
    pub request_time_us: u64,
    /// Its connections open at the end of the window.
    pub connections: u32,
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
///     fn initial_limits(&mut self, _key: &str) -> Result<Limits> {
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

    /// The limits of a key the host has not seen before (or sees again after the policy
    /// was redeployed).
    fn initial_limits(&mut self, key: &str) -> Result<Limits>;

    /// Called once per window of `window_ms` with the usage of every active key; returns
    /// new limits for the keys whose limits change (keys left out keep theirs). The
    /// default never adapts.
    fn rebalance(&mut self, window_ms: u32, usage: &[Usage]) -> Result<Vec<(String, Limits)>> {
        let _ = (window_ms, usage);
        Ok(Vec::new())
    }
}

/// Compile-time check used by `register_quota_policy!`.
#[doc(hidden)]
pub const fn assert_quota_policy<T: QuotaPolicy + Default + Send + 'static>() {}
