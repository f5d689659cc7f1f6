//! Who a Kafka client is and what it may do: principals, TLS and SASL authentication on
//! the listeners, SCRAM credentials, Kafka's ACL authorizer, and tenants (namespaces
//! with limits, [`tenant`]).
//!
//! Authentication happens per connection ([`sasl`], [`tls`]); its outcome is a
//! [`Principal`] carried by the connection's session. Authorization is a pure question
//! to the cluster metadata ([`Security::authorize`]): the ACLs and credentials live in
//! the controller's replicated state, so every broker decides the same way and a change
//! takes effect on the next request, without reconnecting. Quotas ([`quota`]) are
//! configured Kafka's way or decided by quota-policy plugins ([`policy`]).

pub mod acl;
pub mod policy;
pub mod quota;
pub mod sasl;
pub mod scram;
pub mod tenant;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::SecurityConfig;
use crate::controller::state::State;
use acl::{Operation, ResourceType};
use tenant::Tenant;

/// An authenticated identity, as Kafka writes it: `User:alice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Principal(String);

impl Principal {
    /// The principal of a connection that proved nothing (a PLAINTEXT listener, or TLS
    /// without a client certificate).
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    /// `User:<name>`.
    pub fn user(name: &str) -> Principal {
        Principal(format!("User:{name}"))
    }

    /// The principal written as `Type:name`, if it is of that form.
    pub fn parse(text: &str) -> Option<Principal> {
        match text.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                Some(Principal(text.to_string()))
            }
            _ => None,
        }
    }

    /// `User:alice`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `User`.
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map(|(k, _)| k).unwrap_or("")
    }

    /// `alice`.
    pub fn name(&self) -> &str {
        self.0.split_once(':').map(|(_, n)| n).unwrap_or("")
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The user names and their SCRAM credentials, kept in the cluster metadata.
pub type Users = BTreeMap<String, BTreeMap<scram::Mechanism, scram::Credential>>;

/// Counts of logins, for operators (`/v1/security/logins`).
#[derive(Debug, Default)]
pub struct Logins {
    succeeded: AtomicU64,
    failed: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
}

/// A snapshot of [`Logins`].
#[derive(Debug, Clone, Serialize)]
pub struct LoginCounts {
    /// Successful authentications (SASL or TLS client certificate).
    pub succeeded: u64,
    /// Refused ones.
    pub failed: u64,
    /// Refusals by reason (`invalid_credentials`, `unknown_user`,
    /// `unsupported_mechanism`, `tls_handshake`, `malformed`…).
    pub failures: BTreeMap<String, u64>,
}

impl Logins {
    /// Records a successful login.
    pub fn succeeded(&self) {
        self.succeeded.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a refused login and why (a short, stable reason).
    pub fn failed(&self, reason: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.reasons.lock().entry(reason.to_string()).or_default() += 1;
    }

    /// The counts so far.
    pub fn counts(&self) -> LoginCounts {
        LoginCounts {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failures: self.reasons.lock().clone(),
        }
    }
}

/// The broker's security settings in force, its login counters, and what it counts
/// per tenant (connections, stored bytes).
#[derive(Debug)]
pub struct Security {
    authorizer: bool,
    super_users: Vec<Principal>,
    /// Login counters.
    pub logins: Logins,
    connections: Mutex<BTreeMap<String, Arc<AtomicU32>>>,
    stored: Mutex<BTreeMap<String, (Instant, u64)>>,
    /// Quota meters, one sliding rate per quota key.
    pub meters: quota::Meters,
    /// Quota-policy plugins in force.
    pub policies: Arc<policy::QuotaPolicies>,
    /// The cluster's usage of tenant quotas, from the controller.
    pub cluster_usage: quota::ClusterUsage,
}

/// One authenticated connection of a tenant; the count goes down when it is dropped.
#[derive(Debug)]
pub struct TenantConnection(Arc<AtomicU32>);

impl Drop for TenantConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a tenant's stored-bytes figure is reused before it is summed again.
const STORED_BYTES_TTL: Duration = Duration::from_secs(1);

impl Security {
    /// From the validated configuration.
    pub fn new(config: &SecurityConfig) -> Security {
        Security {
            authorizer: config.authorizer,
            super_users: config
                .super_users
                .iter()
                .filter_map(|p| Principal::parse(p))
                .collect(),
            logins: Logins::default(),
            connections: Mutex::new(BTreeMap::new()),
            stored: Mutex::new(BTreeMap::new()),
            meters: quota::Meters::default(),
            policies: Arc::new(policy::QuotaPolicies::default()),
            cluster_usage: quota::ClusterUsage::default(),
        }
    }

    /// Records `value` of `kind` for `client` (`record` false: only looks) and returns
    /// the throttle its quotas call for: the larger of the client's own quota and its
    /// tenant's. The client's own quota comes from its tenant's quota policy, else the
    /// cluster's, else the configured quotas.
    pub fn throttle<'a>(
        &self,
        metadata: &State,
        client: &quota::Client<'_>,
        asker: impl FnOnce() -> (policy::Asker<'a>, &'a policy::ConnectionKey),
        kind: quota::QuotaType,
        value: f64,
        record: bool,
    ) -> Duration {
        if metadata.quotas.is_empty() && metadata.quota_policies.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let bound = client
            .tenant
            .and_then(|t| metadata.quota_policies.get(t))
            .or_else(|| metadata.quota_policies.get(""));
        let own = match bound {
            Some(plugin) => {
                let (asker, cache) = asker();
                self.policies
                    .resolve(plugin, &asker, cache, kind, value, record)
            }
            None => quota::resolve(&metadata.quotas, client, kind),
        };
        // A tenant's quota is cluster-wide: this broker enforces its share.
        let tenant = client
            .tenant
            .and_then(|t| quota::resolve_tenant(&metadata.quotas, t, kind))
            .map(|(key, limit)| {
                let share = self.cluster_usage.share(&key, now);
                (key, limit * share)
            });
        own.into_iter()
            .chain(tenant)
            .map(|(key, limit)| {
                if record {
                    self.meters.record(&key, limit, value, now)
                } else {
                    self.meters.current(&key, limit, now)
                }
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Counts a new connection from `ip` against its `connection_creation_rate` quota
    /// and returns how long to hold it before serving it (KIP-612).
    pub fn connection_throttle(&self, metadata: &State, ip: IpAddr) -> Duration {
        match quota::resolve_ip(&metadata.quotas, ip) {
            Some((key, limit)) => self.meters.record(&key, limit, 1.0, Instant::now()),
            None => Duration::ZERO,
        }
    }

    /// This broker's recent rate of every tenant quota key, for the controller.
    pub fn tenant_usage_report(&self) -> BTreeMap<String, f64> {
        let report = self
            .meters
            .recent_rates(Instant::now(), quota::SHARE_SPAN, |k| {
                k.key.starts_with("tenant=")
            })
            .into_iter()
            .map(|(k, rate)| (k.wire(), rate))
            .collect();
        self.cluster_usage.set_reported(&report);
        report
    }

    /// Admits one more authenticated connection of `tenant` on this broker, or says
    /// which limit refuses it.
    pub fn admit_connection(&self, tenant: &Tenant) -> Result<TenantConnection, String> {
        let counter = self
            .connections
            .lock()
            .entry(tenant.name.clone())
            .or_default()
            .clone();
        let max = tenant.limits.max_connections.unwrap_or(u32::MAX);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map(|_| TenantConnection(counter.clone()))
            .map_err(|n| {
                format!(
                    "tenant {} has {n} connections on this broker, its limit (max_connections {max})",
                    tenant.name
                )
            })
    }

    /// The authenticated connections of `tenant` on this broker.
    pub fn tenant_connections(&self, tenant: &str) -> u32 {
        self.connections
            .lock()
            .get(tenant)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The bytes `tenant` stores here, summed by `sum` at most once a second: produce
    /// asks on every request, and summing walks every segment of the tenant's logs.
    pub fn stored_bytes(&self, tenant: &str, sum: impl FnOnce() -> u64) -> u64 {
        let now = Instant::now();
        if let Some((at, bytes)) = self.stored.lock().get(tenant) {
            if now.duration_since(*at) < STORED_BYTES_TTL {
                return *bytes;
            }
        }
        let bytes = sum();
        self.stored.lock().insert(tenant.to_string(), (now, bytes));
        bytes
    }

    /// Whether ACLs are enforced.
    pub fn authorizer_enabled(&self) -> bool {
        self.authorizer
    }

    /// Whether `principal` is a super user.
    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.super_users.iter().any(|s| s == principal)
    }

    /// Whether `principal`, connected from `host`, may do `operation` on
    /// (`resource_type`, `name`) by the ACLs in `metadata`. Everything is allowed when
    /// the authorizer is off.
    pub fn authorize(
        &self,
        metadata: &State,
        principal: &Principal,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.authorizer || self.is_super_user(principal) {
            return true;
        }
        metadata
            .acls
            .allows(principal, Some(host), operation, resource_type, name)
    }

    /// Whether `principal` may do `operation` on any resource of `resource_type`.
    pub fn authorize_any(
        &self,
        metadata: &State,
        principal: &Principal,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.authorizer || self.is_super_user(principal) {
            return true;
        }
        metadata
            .acls
            .allows_any(principal, Some(host), operation, resource_type)
    }
}
