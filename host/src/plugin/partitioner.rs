//! Running `partitioner` components: a small pool of initialised instances per
//! deployment, one call per batch, and the checks on what comes back.
//!
//! An instance is used by one call at a time and returned to the pool afterwards, so
//! `init` runs once per instance, not per call. An instance that traps is dropped, never
//! reused: its memory may be in any state.

use std::time::Instant;

use parking_lot::Mutex;
use quiver_plugin_sdk::columns::Columns;
use wasmtime::component::{Component, Linker};
use wasmtime::Store;

use super::bindings::partitioner::quiver::plugin::types::RecordBatch;
use super::bindings::partitioner::{Partitioner, PartitionerPre};
use super::engine::PluginEngine;
use super::sandbox::HostState;
use super::{CallError, Deployment, PluginError};

/// Instances of one partitioner deployment.
pub struct WasmPartitioner {
    pre: PartitionerPre<HostState>,
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for WasmPartitioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPartitioner")
            .field("idle", &self.idle.lock().len())
            .finish()
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: Partitioner,
}

impl WasmPartitioner {
    /// Links `component` against the sandbox: fails if it imports anything the host does
    /// not provide or lacks the partitioner world's exports.
    pub fn new(component: &Component, linker: &Linker<HostState>) -> Result<Self, PluginError> {
        let pre =
            super::bindings::link_world(component, linker, "partitioner", PartitionerPre::new)?;
        Ok(Self {
            pre,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Creates and initialises a fresh instance (what deploy validation runs too).
    fn instantiate(
        &self,
        engine: &PluginEngine,
        deployment: &Deployment,
    ) -> Result<Instance, CallError> {
        let started = Instant::now();
        let mut store = deployment.new_store(engine);
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            CallError::Trap(format!("instantiating: {}", trap_reason(&e, deployment)))
        })?;
        let instantiated = started.elapsed();
        store.set_epoch_deadline(PluginEngine::ticks(deployment.limits.call_timeout()));
        bindings
            .quiver_plugin_lifecycle()
            .call_init(&mut store, &deployment.config)
            .map_err(|e| CallError::Trap(format!("init: {}", trap_reason(&e, deployment))))?
            .map_err(|e| CallError::Init(e.text()))?;
        deployment.instantiate_us.store(
            instantiated.as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Instance { store, bindings })
    }

    /// Validates a deployment by creating its first instance, kept for later calls.
    pub fn warm_up(&self, engine: &PluginEngine, deployment: &Deployment) -> Result<(), CallError> {
        let instance = self.instantiate(engine, deployment)?;
        self.idle.lock().push(instance);
        Ok(())
    }

    /// Chooses a partition for every record of `batch`.
    pub fn partition(
        &self,
        engine: &PluginEngine,
        deployment: &Deployment,
        batch: Columns,
        partitions: u32,
    ) -> Result<Vec<u32>, CallError> {
        let records = batch.offsets.len();
        let mut instance = match self.idle.lock().pop() {
            Some(instance) => instance,
            None => self.instantiate(engine, deployment)?,
        };
        instance
            .store
            .set_epoch_deadline(PluginEngine::ticks(deployment.limits.call_timeout()));
        let input = RecordBatch {
            topic: batch.topic,
            partition: batch.partition,
            offsets: batch.offsets,
            timestamps: batch.timestamps,
            ends: batch.ends,
            header_ends: batch.header_ends,
            data: batch.data,
        };
        let result = instance.bindings.quiver_plugin_partition().call_partition(
            &mut instance.store,
            &input,
            partitions,
        );
        let chosen = match result {
            // A trapped instance is dropped here, never returned to the pool.
            Err(trap) => {
                // The full wasm backtrace goes to the plugin's log; callers get the cause.
                deployment
                    .log
                    .push("host", &format!("trap backtrace: {trap:?}"));
                return Err(CallError::Trap(trap_reason(&trap, deployment)));
            }
            Ok(Err(e)) => Err(CallError::Plugin(e.text())),
            Ok(Ok(chosen)) => Ok(chosen),
        };
        let mut idle = self.idle.lock();
        if idle.len() < deployment.limits.idle_instances {
            idle.push(instance);
        }
        drop(idle);
        let chosen = chosen?;
        check_output(
            &chosen,
            records,
            partitions,
            deployment.limits.max_output_bytes,
        )?;
        Ok(chosen)
    }
}

/// The cause of a trap in one line: what an operator needs to act on.
pub(crate) fn trap_reason(error: &wasmtime::Error, deployment: &Deployment) -> String {
    trap_reason_within(error, deployment.limits.call_timeout_ms)
}

/// [`trap_reason`] for an instance whose call deadline is `call_timeout_ms` (a
/// transform's own rather than its deployment's).
pub(crate) fn trap_reason_within(error: &wasmtime::Error, call_timeout_ms: u64) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            format!("exceeded its {call_timeout_ms} ms call deadline")
        }
        Some(wasmtime::Trap::UnreachableCodeReached) => {
            "hit an unreachable instruction (a panic in Rust guests)".to_string()
        }
        Some(trap) => format!("wasm trap: {trap}"),
        None => error.root_cause().to_string(),
    }
}

/// A partitioner must return one partition per record, each in range.
pub(crate) fn check_output(
    chosen: &[u32],
    records: usize,
    partitions: u32,
    max_output_bytes: u64,
) -> Result<(), CallError> {
    if (chosen.len() as u64) * 4 > max_output_bytes {
        return Err(CallError::Output(format!(
            "returned {} bytes of output, more than the {max_output_bytes} allowed",
            chosen.len() * 4
        )));
    }
    if chosen.len() != records {
        return Err(CallError::Output(format!(
            "returned {} partitions for {records} records",
            chosen.len()
        )));
    }
    if let Some((i, p)) = chosen.iter().enumerate().find(|(_, &p)| p >= partitions) {
        return Err(CallError::Output(format!(
            "chose partition {p} for record {i}, but the topic has {partitions} partitions"
        )));
    }
    Ok(())
}
