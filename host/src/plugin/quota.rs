//! Running `quota-policy` components: one instance per serving version, called by the
//! tenancy room's policy runner (never on the request path: once per connection, once
//! per new key, once per window), and the checks on what comes back.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{Component, Linker};
use wasmtime::Store;

use super::bindings::quota_policy::exports::quiver::plugin::lifecycle::PluginError as WitError;
use super::bindings::quota_policy::exports::quiver::plugin::policy;
use super::bindings::quota_policy::{QuotaPolicy, QuotaPolicyPre};
use super::engine::PluginEngine;
use super::metrics::Outcome;
use super::partitioner::trap_reason;
use super::sandbox::HostState;
use super::{CallError, Deployment, PluginError};

/// Who is asking, as the policy sees it.
pub use policy::Client as PolicyClient;
/// Limits for one key, as the policy gives them.
pub use policy::Limits as PolicyLimits;
/// One key's usage over a window.
pub use policy::Usage as PolicyUsage;

/// Most assignments one `rebalance` may return: far more keys than a broker meters,
/// and a bound on what a hostile policy can make the host hold.
const MAX_ASSIGNMENTS: usize = 100_000;
/// Longest quota key a policy may return.
const MAX_KEY_BYTES: usize = 256;

/// The linked component of one quota-policy deployment.
pub struct WasmQuotaPolicy {
    pre: QuotaPolicyPre<HostState>,
}

impl std::fmt::Debug for WasmQuotaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmQuotaPolicy").finish_non_exhaustive()
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: QuotaPolicy,
}

impl WasmQuotaPolicy {
    /// Links `component` against the sandbox: fails if it imports anything the host does
    /// not provide or lacks the quota-policy world's exports.
    pub fn new(component: &Component, linker: &Linker<HostState>) -> Result<Self, PluginError> {
        let pre =
            super::bindings::link_world(component, linker, "quota-policy", QuotaPolicyPre::new)?;
        Ok(Self { pre })
    }

    fn instantiate(
        &self,
        engine: &PluginEngine,
        deployment: &Deployment,
    ) -> Result<Instance, CallError> {
        let mut store = deployment.new_store(engine);
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            CallError::Trap(format!("instantiating: {}", trap_reason(&e, deployment)))
        })?;
        bindings
            .quiver_plugin_lifecycle()
            .call_init(&mut store, &deployment.config)
            .map_err(|e| CallError::Trap(format!("init: {}", trap_reason(&e, deployment))))?
            .map_err(|e| CallError::Init(e.text()))?;
        Ok(Instance { store, bindings })
    }

    /// What a deploy checks: an instance is created and `init` accepts the config.
    pub fn warm_up(&self, engine: &PluginEngine, deployment: &Deployment) -> Result<(), CallError> {
        self.instantiate(engine, deployment).map(drop)
    }
}

/// The instance of one serving version of a quota policy.
pub struct QuotaPolicySession {
    deployment: Arc<Deployment>,
    instance: Option<Instance>,
}

impl std::fmt::Debug for QuotaPolicySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaPolicySession")
            .field("plugin", &self.deployment.name)
            .field("version", &self.deployment.version)
            .finish()
    }
}

impl QuotaPolicySession {
    /// A session of `deployment`; `init` runs now.
    pub(super) fn open(
        engine: &PluginEngine,
        deployment: Arc<Deployment>,
    ) -> Result<Self, CallError> {
        let super::Runner::WasmQuotaPolicy(runner) = &deployment.runner else {
            return Err(CallError::WrongKind(format!(
                "plugin '{}' is a {}, not a quota-policy",
                deployment.name, deployment.kind
            )));
        };
        let instance = runner.instantiate(engine, &deployment)?;
        Ok(Self {
            deployment,
            instance: Some(instance),
        })
    }

    /// The plugin version this session runs.
    pub fn version(&self) -> u32 {
        self.deployment.version
    }

    /// The deployment this session runs.
    pub fn deployment(&self) -> &Arc<Deployment> {
        &self.deployment
    }

    /// Runs one call on the instance (made afresh after a trap), with the deadline set
    /// and the outcome recorded; traps count toward marking the version failed.
    fn with_instance<T>(
        &mut self,
        engine: &PluginEngine,
        max_traps: u32,
        what: &str,
        call: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, CallError> {
        let deployment = self.deployment.clone();
        if let super::Status::Failed { reason, .. } = deployment.status() {
            return Err(CallError::Failed(reason));
        }
        let super::Runner::WasmQuotaPolicy(runner) = &deployment.runner else {
            return Err(CallError::WrongKind("not a quota-policy".into()));
        };
        let started = Instant::now();
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => runner.instantiate(engine, &deployment)?,
        };
        instance
            .store
            .set_epoch_deadline(PluginEngine::ticks(deployment.limits.call_timeout()));
        let result = match call(&mut instance) {
            Err(trap) => Err(CallError::Trap(trap_reason(&trap, &deployment))),
            Ok(result) => {
                self.instance = Some(instance);
                result.map_err(|e| CallError::Plugin(e.text()))
            }
        };
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(CallError::Trap(_)) => Outcome::Trap,
            Err(_) => Outcome::Error,
        };
        deployment.metrics.record(0, started.elapsed(), outcome);
        deployment.judge(&result, max_traps, what);
        result
    }

    /// The quota key of `client`.
    pub(super) fn quota_key(
        &mut self,
        engine: &PluginEngine,
        max_traps: u32,
        client: &PolicyClient,
    ) -> Result<String, CallError> {
        let key = self.with_instance(engine, max_traps, "quota-key", |i| {
            i.bindings
                .quiver_plugin_policy()
                .call_quota_key(&mut i.store, client)
        })?;
        check_key(&key).map_err(CallError::Output)?;
        Ok(key)
    }

    /// The limits of a new key.
    pub(super) fn initial_limits(
        &mut self,
        engine: &PluginEngine,
        max_traps: u32,
        key: &str,
    ) -> Result<PolicyLimits, CallError> {
        let limits = self.with_instance(engine, max_traps, "initial-limits", |i| {
            i.bindings
                .quiver_plugin_policy()
                .call_initial_limits(&mut i.store, key)
        })?;
        check_limits(&limits).map_err(|e| CallError::Output(format!("key {key:?}: {e}")))?;
        Ok(limits)
    }

    /// The limits that change after a window with `usage`.
    pub(super) fn rebalance(
        &mut self,
        engine: &PluginEngine,
        max_traps: u32,
        window_ms: u32,
        usage: &[PolicyUsage],
    ) -> Result<Vec<(String, PolicyLimits)>, CallError> {
        let changes = self.with_instance(engine, max_traps, "rebalance", |i| {
            i.bindings
                .quiver_plugin_policy()
                .call_rebalance(&mut i.store, window_ms, usage)
        })?;
        if changes.len() > MAX_ASSIGNMENTS {
            return Err(CallError::Output(format!(
                "returned {} assignments, more than the {MAX_ASSIGNMENTS} allowed",
                changes.len()
            )));
        }
        changes
            .into_iter()
            .map(|a| {
                check_key(&a.key).map_err(CallError::Output)?;
                check_limits(&a.limits)
                    .map_err(|e| CallError::Output(format!("key {:?}: {e}", a.key)))?;
                Ok((a.key, a.limits))
            })
            .collect()
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "returned a quota key of {} bytes; keys are 1 to {MAX_KEY_BYTES} bytes",
            key.len()
        ));
    }
    Ok(())
}

/// Rates are positive: a zero or negative (or NaN) limit would throttle for ever.
fn check_limits(limits: &PolicyLimits) -> Result<(), String> {
    let floats = [
        ("request-percentage", limits.request_percentage),
        (
            "controller-mutations-per-second",
            limits.controller_mutations_per_second,
        ),
    ];
    for (name, value) in floats {
        if let Some(v) = value {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number, not {v}"));
            }
        }
    }
    let ints = [
        ("produce-bytes-per-second", limits.produce_bytes_per_second),
        ("fetch-bytes-per-second", limits.fetch_bytes_per_second),
    ];
    for (name, value) in ints {
        if value == Some(0) {
            return Err(format!("{name} must be positive, not 0"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_keys_that_would_break_enforcement_are_refused() {
        let none = PolicyLimits {
            produce_bytes_per_second: None,
            fetch_bytes_per_second: None,
            request_percentage: None,
            controller_mutations_per_second: None,
        };
        assert!(check_limits(&none).is_ok());
        for bad in [
            PolicyLimits {
                produce_bytes_per_second: Some(0),
                ..none
            },
            PolicyLimits {
                request_percentage: Some(f64::NAN),
                ..none
            },
            PolicyLimits {
                controller_mutations_per_second: Some(-1.0),
                ..none
            },
        ] {
            assert!(check_limits(&bad).is_err(), "{bad:?}");
        }
        assert!(check_key("tenant:acme").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
