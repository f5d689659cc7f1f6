//! Quota policies in force: the quota-policy plugins bound to the cluster or to tenants
//! (`State.quota_policies`), the keys and limits they gave, and the usage they see each
//! window.
//!
//! The plugin is never called on the request path's common case. A connection asks
//! `quota-key` once and keeps the answer (until the policy is redeployed); a key's
//! limits come from `initial-limits` once and then live in a table every request reads;
//! `rebalance` runs on a background task once per [`POLICY_WINDOW`] with the window's
//! usage. The same task notices a redeploy: it opens the new version, asks it for the
//! limits of every key in use, and only then makes it the version connections key by,
//! so a swap takes effect within one window and no request waits on it.
//!
//! Failure is closed: when a call traps or errs, the limits already in force stay; a
//! connection whose key cannot be decided keeps its previous key, or, if it never had
//! one, is metered under [`UNRESOLVED`] with the strictest limit of each type the
//! policy has given.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use super::quota::{QuotaKey, QuotaType};
use crate::plugin::quota::{PolicyClient, PolicyLimits, PolicyUsage, QuotaPolicySession};
use crate::plugin::{CallError, Plugins};

/// How often each policy sees usage and may move limits (Kafka's quota window).
pub const POLICY_WINDOW: Duration = Duration::from_secs(1);
/// The key of clients a failed policy could not key.
pub const UNRESOLVED: &str = "<unresolved>";

/// Who a request comes from, as a policy sees it.
#[derive(Debug, Clone)]
pub struct Asker<'a> {
    /// `User:alice`.
    pub principal: String,
    /// The principal's tenant.
    pub tenant: Option<&'a str>,
    /// The Kafka client.id.
    pub client_id: &'a str,
    /// The listener's name.
    pub listener: &'a str,
    /// The client's IP address.
    pub host: String,
}

/// A key's limits, per quota type.
pub type KeyLimits = BTreeMap<QuotaType, f64>;

fn from_plugin(limits: &PolicyLimits) -> KeyLimits {
    let mut out = KeyLimits::new();
    if let Some(v) = limits.produce_bytes_per_second {
        out.insert(QuotaType::ProduceBytes, v as f64);
    }
    if let Some(v) = limits.fetch_bytes_per_second {
        out.insert(QuotaType::FetchBytes, v as f64);
    }
    if let Some(v) = limits.request_percentage {
        out.insert(QuotaType::RequestPercentage, v);
    }
    if let Some(v) = limits.controller_mutations_per_second {
        out.insert(QuotaType::ControllerMutations, v);
    }
    out
}

/// What one key did in the current window.
#[derive(Debug, Default, Clone)]
struct WindowUsage {
    produce_bytes: f64,
    fetch_bytes: f64,
    requests: u32,
    request_time_us: f64,
}

/// One bound plugin's state on this broker.
pub struct Policy {
    plugin: String,
    /// The instance of the version keys and limits come from.
    session: Mutex<Option<QuotaPolicySession>>,
    /// That version (0 before one opened): connections keyed by another re-key.
    version: AtomicU32,
    limits: RwLock<HashMap<String, KeyLimits>>,
    usage: Mutex<HashMap<String, WindowUsage>>,
    connections: Mutex<HashMap<String, u32>>,
    /// Why the last call failed, until one succeeds.
    failure: Mutex<Option<String>>,
    /// Held while a new version is opened, so it is opened once.
    following: Mutex<()>,
    /// The window each key was last active or connected in: keys idle for
    /// [`FORGET_AFTER_WINDOWS`] lose their limits (asked again if they return).
    seen: Mutex<HashMap<String, u64>>,
    windows: std::sync::atomic::AtomicU64,
}

/// Windows a key may be idle, with no connection, before the policy's answer for it is
/// forgotten.
const FORGET_AFTER_WINDOWS: u64 = 60;

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("plugin", &self.plugin)
            .field("version", &self.version.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Policy {
    fn new(plugin: &str) -> Policy {
        Policy {
            plugin: plugin.to_string(),
            session: Mutex::new(None),
            version: AtomicU32::new(0),
            limits: RwLock::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            following: Mutex::new(()),
            seen: Mutex::new(HashMap::new()),
            windows: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn note<T>(&self, what: &str, result: &Result<T, CallError>) {
        match result {
            Ok(_) => *self.failure.lock() = None,
            Err(e) => {
                let reason = format!("{what}: {e}");
                tracing::warn!(plugin = %self.plugin, %reason, "quota policy call failed; the limits in force stay");
                *self.failure.lock() = Some(reason);
            }
        }
    }

    /// The strictest limit of each type this policy has given (fail-closed limits).
    fn strictest(&self) -> KeyLimits {
        let mut out = KeyLimits::new();
        for limits in self.limits.read().values() {
            for (kind, v) in limits {
                let slot = out.entry(*kind).or_insert(*v);
                *slot = slot.min(*v);
            }
        }
        out
    }

    /// Opens the serving version when it is not the one in force, and asks it for the
    /// limits of every key in use; then connections re-key by it.
    fn follow_deployment(&self, plugins: &Plugins) {
        let _following = self.following.lock();
        let Some(deployment) = plugins.get(&self.plugin) else {
            return;
        };
        if deployment.version == self.version.load(Ordering::Acquire) {
            return;
        }
        let opened = plugins.open_quota_policy(&self.plugin);
        self.note("opening the new version", &opened);
        let Ok(mut session) = opened else {
            // The version number still moves on, so the failure is reported once, not
            // every window; the old session and limits stay in force.
            self.version.store(deployment.version, Ordering::Release);
            return;
        };
        let keys: Vec<String> = self.limits.read().keys().cloned().collect();
        let mut fresh = HashMap::new();
        for key in keys.iter().filter(|k| k.as_str() != UNRESOLVED) {
            let result = plugins.initial_limits(&mut session, key);
            self.note("initial-limits", &result);
            match result {
                Ok(limits) => {
                    fresh.insert(key.clone(), from_plugin(&limits));
                }
                Err(_) => break,
            }
        }
        {
            let mut limits = self.limits.write();
            for (key, value) in fresh {
                limits.insert(key, value);
            }
        }
        tracing::info!(plugin = %self.plugin, version = deployment.version, "quota policy version in force");
        *self.session.lock() = Some(session);
        self.version.store(deployment.version, Ordering::Release);
    }

    /// One window: hands the window's usage to `rebalance` and applies what changes.
    fn end_window(&self, plugins: &Plugins, window: Duration) {
        let usage = std::mem::take(&mut *self.usage.lock());
        let connections = self.connections.lock().clone();
        let mut keys: Vec<&String> = usage.keys().chain(connections.keys()).collect();
        keys.sort();
        keys.dedup();
        let report: Vec<PolicyUsage> = keys
            .into_iter()
            .filter(|k| k.as_str() != UNRESOLVED)
            .map(|key| {
                let u = usage.get(key).cloned().unwrap_or_default();
                PolicyUsage {
                    key: key.clone(),
                    produce_bytes: u.produce_bytes as u64,
                    fetch_bytes: u.fetch_bytes as u64,
                    requests: u.requests,
                    request_time_us: u.request_time_us as u64,
                    connections: connections.get(key).copied().unwrap_or(0),
                }
            })
            .collect();
        self.forget_idle(&report);
        let mut session = self.session.lock();
        let Some(session) = session.as_mut() else {
            return;
        };
        let result = plugins.rebalance(session, window.as_millis() as u32, &report);
        self.note("rebalance", &result);
        if let Ok(changes) = result {
            let mut limits = self.limits.write();
            for (key, value) in changes {
                limits.insert(key, from_plugin(&value));
            }
        }
    }

    /// Forgets the limits of keys idle (no traffic, no connection) for
    /// [`FORGET_AFTER_WINDOWS`] windows, so the table holds the keys in use, not every
    /// key ever seen.
    fn forget_idle(&self, report: &[PolicyUsage]) {
        let window = self.windows.fetch_add(1, Ordering::Relaxed) + 1;
        let mut seen = self.seen.lock();
        for usage in report {
            seen.insert(usage.key.clone(), window);
        }
        let limits = self.limits.read();
        let stale: Vec<String> = limits
            .keys()
            .filter(|k| {
                let last = *seen.entry((*k).clone()).or_insert(window);
                window - last > FORGET_AFTER_WINDOWS
            })
            .cloned()
            .collect();
        drop(limits);
        if stale.is_empty() {
            return;
        }
        let mut limits = self.limits.write();
        for key in &stale {
            limits.remove(key);
            seen.remove(key);
        }
    }

    /// A connection's key while the version that gave it is in force.
    fn cached_key(self: &Arc<Self>, cache: &Option<CachedKey>) -> Option<String> {
        let cached = cache.as_ref()?;
        let current = Arc::ptr_eq(&cached.policy, self)
            && cached.version == self.version.load(Ordering::Acquire);
        current.then(|| cached.key.clone())
    }

    /// Asks the policy for a connection's key (keeping the previous one if it cannot
    /// say) and makes sure the key has limits.
    fn key_for(
        self: &Arc<Self>,
        plugins: &Plugins,
        asker: &Asker<'_>,
        cache: &mut Option<CachedKey>,
    ) -> String {
        let version = self.version.load(Ordering::Acquire);
        if let Some(key) = self.cached_key(cache) {
            return key;
        }
        let asked = {
            let mut session = self.session.lock();
            match session.as_mut() {
                Some(session) => {
                    let client = PolicyClient {
                        principal: asker.principal.clone(),
                        tenant: asker.tenant.map(String::from),
                        client_id: asker.client_id.to_string(),
                        listener: asker.listener.to_string(),
                        host: asker.host.clone(),
                    };
                    let result = plugins.quota_key(session, &client);
                    self.note("quota-key", &result);
                    result.ok()
                }
                None => None,
            }
        };
        let previous = cache
            .as_ref()
            .filter(|c| Arc::ptr_eq(&c.policy, self))
            .map(|c| c.key.clone());
        let key = asked.or(previous).unwrap_or_else(|| UNRESOLVED.to_string());
        self.ensure_limits(plugins, &key);
        *cache = Some(CachedKey::new(self.clone(), version, key.clone()));
        key
    }

    /// Asks for the limits of a key not seen before.
    fn ensure_limits(&self, plugins: &Plugins, key: &str) {
        if self.limits.read().contains_key(key) {
            return;
        }
        let limits = if key == UNRESOLVED {
            self.strictest()
        } else {
            let mut session = self.session.lock();
            let result = match session.as_mut() {
                Some(session) => plugins.initial_limits(session, key),
                None => Err(CallError::NotDeployed),
            };
            self.note("initial-limits", &result);
            match result {
                Ok(limits) => from_plugin(&limits),
                Err(_) => self.strictest(),
            }
        };
        self.limits.write().entry(key.to_string()).or_insert(limits);
    }

    fn record(&self, key: &str, kind: QuotaType, value: f64) {
        let mut usage = self.usage.lock();
        let u = usage.entry(key.to_string()).or_default();
        match kind {
            QuotaType::ProduceBytes => u.produce_bytes += value,
            QuotaType::FetchBytes => u.fetch_bytes += value,
            QuotaType::RequestPercentage => {
                u.requests += 1;
                // percent-seconds of one thread → microseconds
                u.request_time_us += value * 1e4;
            }
            QuotaType::ControllerMutations | QuotaType::ConnectionCreations => {}
        }
    }
}

/// Runs `f`, which calls into a plugin, where blocking is allowed.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A connection's key under one policy; counts the connection for `rebalance` while it
/// lives.
pub struct CachedKey {
    policy: Arc<Policy>,
    version: u32,
    key: String,
}

impl std::fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKey")
            .field("plugin", &self.policy.plugin)
            .field("version", &self.version)
            .field("key", &self.key)
            .finish()
    }
}

impl CachedKey {
    fn new(policy: Arc<Policy>, version: u32, key: String) -> CachedKey {
        *policy.connections.lock().entry(key.clone()).or_default() += 1;
        CachedKey {
            policy,
            version,
            key,
        }
    }
}

impl Drop for CachedKey {
    fn drop(&mut self) {
        let mut connections = self.policy.connections.lock();
        if let Some(n) = connections.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                connections.remove(&self.key);
            }
        }
    }
}

/// A connection's cached policy key.
pub type ConnectionKey = Mutex<Option<CachedKey>>;

/// One policy as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// The plugin.
    pub plugin: String,
    /// The version in force (0: none opened yet).
    pub version: u32,
    /// Why the last call failed, if it did.
    pub failed: Option<String>,
    /// Keys with their limits and open connections here.
    pub keys: Vec<KeyView>,
}

/// One key of a policy.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    /// The key.
    pub key: String,
    /// Its limits by Kafka quota name.
    pub limits: BTreeMap<QuotaType, f64>,
    /// Its connections on this broker.
    pub connections: u32,
}

/// Every policy this broker runs.
#[derive(Debug, Default)]
pub struct QuotaPolicies {
    plugins: OnceLock<Arc<Plugins>>,
    policies: RwLock<HashMap<String, Arc<Policy>>>,
}

impl QuotaPolicies {
    /// Gives the policies the broker's plugins (once, at startup).
    pub fn attach(&self, plugins: Arc<Plugins>) {
        let _ = self.plugins.set(plugins);
    }

    fn policy(&self, plugin: &str) -> Arc<Policy> {
        if let Some(policy) = self.policies.read().get(plugin) {
            return policy.clone();
        }
        self.policies
            .write()
            .entry(plugin.to_string())
            .or_insert_with(|| Arc::new(Policy::new(plugin)))
            .clone()
    }

    /// The metering key and limit of `kind` that `plugin` gives the connection of
    /// `asker` (recording `value` to the window's usage when `record`); `None` when the
    /// policy sets no limit of that kind.
    pub fn resolve(
        &self,
        plugin: &str,
        asker: &Asker<'_>,
        cache: &ConnectionKey,
        kind: QuotaType,
        value: f64,
        record: bool,
    ) -> Option<(QuotaKey, f64)> {
        let plugins = self.plugins.get()?;
        let policy = self.policy(plugin);
        let mut cache = cache.lock();
        let key = match policy.cached_key(&cache) {
            Some(key) => key,
            // A plugin call: off the async workers, since a guest writing to its
            // stderr makes the sandbox block on the runtime.
            None => off_runtime(|| {
                if policy.version.load(Ordering::Acquire) == 0 {
                    // First use on this broker: open the serving version now rather
                    // than wait a window with no limits.
                    policy.follow_deployment(plugins);
                }
                policy.key_for(plugins, asker, &mut cache)
            }),
        };
        drop(cache);
        if record {
            policy.record(&key, kind, value);
        }
        let limit = *policy.limits.read().get(&key)?.get(&kind)?;
        Some((
            QuotaKey {
                kind,
                key: format!("policy={plugin},key={key}"),
            },
            limit,
        ))
    }

    /// One window for every bound policy: follow redeploys, then rebalance. Policies no
    /// longer bound are dropped.
    pub fn tick(&self, bound: &BTreeMap<String, String>) {
        let Some(plugins) = self.plugins.get() else {
            return;
        };
        self.policies
            .write()
            .retain(|plugin, _| bound.values().any(|p| p == plugin));
        let policies: Vec<Arc<Policy>> = self.policies.read().values().cloned().collect();
        for policy in policies {
            policy.follow_deployment(plugins);
            policy.end_window(plugins, POLICY_WINDOW);
        }
    }

    /// Every running policy, for the admin API.
    pub fn views(&self) -> BTreeMap<String, PolicyView> {
        self.policies
            .read()
            .values()
            .map(|p| {
                let connections = p.connections.lock().clone();
                let mut keys: Vec<KeyView> = p
                    .limits
                    .read()
                    .iter()
                    .map(|(key, limits)| KeyView {
                        key: key.clone(),
                        limits: limits.clone(),
                        connections: connections.get(key).copied().unwrap_or(0),
                    })
                    .collect();
                keys.sort_by(|a, b| a.key.cmp(&b.key));
                (
                    p.plugin.clone(),
                    PolicyView {
                        plugin: p.plugin.clone(),
                        version: p.version.load(Ordering::Acquire),
                        failed: p.failure.lock().clone(),
                        keys,
                    },
                )
            })
            .collect()
    }

    /// Runs [`QuotaPolicies::tick`] every window on a blocking thread (plugin calls are
    /// synchronous), reading the bindings from `bindings` each time.
    pub fn spawn_windows(
        self: &Arc<Self>,
        bindings: impl Fn() -> Option<BTreeMap<String, String>> + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let bindings = Arc::new(bindings);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(POLICY_WINDOW);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(policies) = weak.upgrade() else {
                    return;
                };
                let Some(bound) = bindings() else { return };
                let _ = tokio::task::spawn_blocking(move || policies.tick(&bound)).await;
            }
        })
    }
}
