//! Running `transform` components: one instance per running transform partition,
//! initialised with that transform's configuration, and the checks on what comes back.
//!
//! Unlike a partitioner, a transform plugin is configured per transform (the plugin's
//! deploy-time config, then the transform's own entries, then the host's `quiver.*`
//! entries), so instances are not pooled per deployment: each runner owns a
//! [`TransformSession`]. A deploy only proves the component links and exports the
//! world; `init` runs, and is validated, when a transform is created.
//!
//! Since instances are per session, so are their limits: a session runs with its
//! transform's limits (resolved over the deployment's), so two transforms of one
//! plugin can have different memory caps, deadlines and output caps.
//!
//! A trusted native library (`plugins.native`) runs the same contract through the C
//! ABI: the session opens an instance of it with the same merged configuration, and
//! its answers get the same checks. It has no deadline or memory cap; a panic in it
//! is caught and handled as a trap.

use std::sync::Arc;
use std::time::Instant;

use quiver_plugin_sdk::columns::Columns;
use wasmtime::component::{Component, Linker};
use wasmtime::Store;

use super::bindings::transform::quiver::plugin::types::RecordBatch;
use super::bindings::transform::{Transform, TransformPre};
use super::engine::PluginEngine;
use super::metrics::Outcome;
use super::native::NativeTransformInstance;
use super::partitioner::trap_reason_within;
use super::sandbox::HostState;
use super::{CallError, Deployment, Limits, PluginError, Runner};

/// The linked component of one transform deployment.
pub struct WasmTransform {
    pre: TransformPre<HostState>,
}

impl std::fmt::Debug for WasmTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmTransform").finish_non_exhaustive()
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: Transform,
}

/// A session's live instance: a WASM one or, for a trusted native library, one the
/// library opened.
enum Live {
    Wasm(Instance),
    Native(NativeTransformInstance),
}

impl WasmTransform {
    /// Links `component` against the sandbox: fails if it imports anything the host does
    /// not provide or lacks the transform world's exports.
    pub fn new(component: &Component, linker: &Linker<HostState>) -> Result<Self, PluginError> {
        let pre = super::bindings::link_world(component, linker, "transform", TransformPre::new)?;
        Ok(Self { pre })
    }

    /// Creates an instance with `limits`; with `config`, also initialises it.
    fn instantiate(
        &self,
        engine: &PluginEngine,
        deployment: &Deployment,
        limits: &Limits,
        config: Option<&[(String, String)]>,
    ) -> Result<Instance, CallError> {
        let started = Instant::now();
        let mut store = deployment.new_store_with(engine, limits);
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            CallError::Trap(format!(
                "instantiating: {}",
                trap_reason_within(&e, limits.call_timeout_ms)
            ))
        })?;
        deployment.instantiate_us.store(
            started.elapsed().as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(config) = config {
            store.set_epoch_deadline(PluginEngine::ticks(limits.call_timeout()));
            let config = config.to_vec();
            bindings
                .quiver_plugin_lifecycle()
                .call_init(&mut store, &config)
                .map_err(|e| {
                    CallError::Trap(format!(
                        "init: {}",
                        trap_reason_within(&e, limits.call_timeout_ms)
                    ))
                })?
                .map_err(|e| CallError::Init(e.text()))?;
        }
        Ok(Instance { store, bindings })
    }

    /// What a deploy checks: that an instance can be created (init waits for a
    /// transform that gives it its configuration).
    pub fn warm_up(&self, engine: &PluginEngine, deployment: &Deployment) -> Result<(), CallError> {
        self.instantiate(engine, deployment, &deployment.limits, None)
            .map(drop)
    }
}

/// What one transform call produced, checked: columns that are well formed and, per
/// output record, a target and a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformOutput {
    /// The output records; `offsets` holds the input offset each came from.
    pub records: Columns,
    /// Per record: index into the transform's outputs.
    pub targets: Vec<u32>,
    /// Per record: its partition, or -1 for the output topic's partitioner.
    pub partitions: Vec<i32>,
    /// The input record the call stopped at, and why.
    pub failed: Option<(i64, String)>,
}

/// A transform call's answer as the plugin gave it, before the host's checks.
#[derive(Debug)]
pub(super) struct Unchecked {
    /// The output records.
    pub records: Columns,
    /// Per output record: its output index.
    pub targets: Vec<u32>,
    /// Per output record: its partition or -1.
    pub partitions: Vec<i32>,
    /// The input record the call stopped at, and why.
    pub failed: Option<(i64, String)>,
}

/// One running transform's instance of its plugin: the deployment it came from (a new
/// plugin version means a new session), the merged configuration `init` receives and
/// the transform's effective limits.
pub struct TransformSession {
    deployment: Arc<Deployment>,
    config: Vec<(String, String)>,
    limits: Limits,
    instance: Option<Live>,
}

impl std::fmt::Debug for TransformSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformSession")
            .field("plugin", &self.deployment.name)
            .field("version", &self.deployment.version)
            .field("instance", &self.instance.is_some())
            .finish()
    }
}

impl TransformSession {
    /// A session of `deployment` with `config` (the transform's entries, appended to
    /// the plugin's own) whose instances run within `limits`; creates and initialises
    /// the first instance, so a bad configuration (or one that cannot start within the
    /// limits) fails here.
    pub(super) fn open(
        engine: &PluginEngine,
        deployment: Arc<Deployment>,
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<Self, CallError> {
        let mut merged = deployment.config.clone();
        merged.extend(config);
        let instance = match &deployment.runner {
            Runner::WasmTransform(runner) => {
                Live::Wasm(runner.instantiate(engine, &deployment, &limits, Some(&merged))?)
            }
            Runner::NativeTransform(library) => Live::Native(library.open(&merged)?),
            _ => {
                return Err(CallError::WrongKind(format!(
                    "plugin '{}' is a {}, not a transform",
                    deployment.name, deployment.kind
                )))
            }
        };
        Ok(Self {
            deployment,
            config: merged,
            limits,
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

    /// The limits its instances run within.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Transforms `batch`. A trap discards the instance (the next call makes a fresh
    /// one); what the plugin returns is checked against the session's output cap and
    /// for well-formed columns.
    pub(super) fn transform(
        &mut self,
        engine: &PluginEngine,
        batch: Columns,
    ) -> Result<TransformOutput, CallError> {
        let deployment = self.deployment.clone();
        let records = batch.offsets.len();
        let started = Instant::now();
        let result = self.call(engine, &deployment, batch);
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(CallError::Trap(_)) => Outcome::Trap,
            Err(_) => Outcome::Error,
        };
        deployment
            .metrics
            .record(records, started.elapsed(), outcome);
        if let Err(e) = &result {
            deployment.log.push("host", &format!("transform call: {e}"));
        }
        result
    }

    fn call(
        &mut self,
        engine: &PluginEngine,
        deployment: &Deployment,
        batch: Columns,
    ) -> Result<TransformOutput, CallError> {
        let limits = self.limits.clone();
        let Unchecked {
            records,
            targets,
            partitions,
            failed,
        } = match &deployment.runner {
            Runner::WasmTransform(runner) => {
                let mut instance = match self.instance.take() {
                    Some(Live::Wasm(instance)) => instance,
                    _ => runner.instantiate(engine, deployment, &limits, Some(&self.config))?,
                };
                let output = Self::call_wasm(&mut instance, deployment, &limits, batch);
                // A trap leaves the instance unusable: the next call makes a fresh one.
                if !matches!(output, Err(CallError::Trap(_))) {
                    self.instance = Some(Live::Wasm(instance));
                }
                output?
            }
            Runner::NativeTransform(library) => {
                let mut instance = match self.instance.take() {
                    Some(Live::Native(instance)) => instance,
                    _ => library.open(&self.config)?,
                };
                let answer = instance.transform(&batch);
                // A caught panic poisons the instance: dropping it closes it.
                if !matches!(answer, Err(CallError::Trap(_))) {
                    self.instance = Some(Live::Native(instance));
                }
                answer?
            }
            _ => return Err(CallError::WrongKind("not a transform".into())),
        };
        let size = records.data.len() as u64
            + 4 * (records.ends.len() + records.header_ends.len()) as u64
            + 16 * records.offsets.len() as u64;
        if size > limits.max_output_bytes {
            return Err(CallError::Output(format!(
                "returned {size} bytes of output, more than the {} allowed",
                limits.max_output_bytes
            )));
        }
        records
            .validate()
            .map_err(|e| CallError::Output(format!("malformed output records: {e}")))?;
        let n = records.offsets.len();
        if targets.len() != n || partitions.len() != n {
            return Err(CallError::Output(format!(
                "returned {n} records with {} targets and {} partitions",
                targets.len(),
                partitions.len()
            )));
        }
        Ok(TransformOutput {
            records: Columns {
                topic: String::new(),
                partition: -1,
                ..records
            },
            targets,
            partitions,
            failed,
        })
    }

    /// One call into a WASM instance: the output as it came back, unchecked.
    fn call_wasm(
        instance: &mut Instance,
        deployment: &Deployment,
        limits: &Limits,
        batch: Columns,
    ) -> Result<Unchecked, CallError> {
        instance
            .store
            .set_epoch_deadline(PluginEngine::ticks(limits.call_timeout()));
        let input = RecordBatch {
            topic: batch.topic,
            partition: batch.partition,
            offsets: batch.offsets,
            timestamps: batch.timestamps,
            ends: batch.ends,
            header_ends: batch.header_ends,
            data: batch.data,
        };
        let result = instance
            .bindings
            .quiver_plugin_record_transform()
            .call_transform(&mut instance.store, &input);
        let output = match result {
            Err(trap) => {
                deployment
                    .log
                    .push("host", &format!("trap backtrace: {trap:?}"));
                return Err(CallError::Trap(trap_reason_within(
                    &trap,
                    limits.call_timeout_ms,
                )));
            }
            Ok(Err(e)) => return Err(CallError::Plugin(e.text())),
            Ok(Ok(output)) => output,
        };
        let records = Columns {
            topic: String::new(),
            partition: -1,
            offsets: output.records.offsets,
            timestamps: output.records.timestamps,
            ends: output.records.ends,
            header_ends: output.records.header_ends,
            data: output.records.data,
        };
        Ok(Unchecked {
            records,
            targets: output.targets,
            partitions: output.partitions,
            failed: output.failed.map(|f| (f.offset, f.error.text())),
        })
    }
}
