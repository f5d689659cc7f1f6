//! Running `connector` components: one instance per running mirror, initialised with
//! that mirror's configuration, and the checks on what comes back.
//!
//! Like a transform, a connector is configured per mirror (the plugin's deploy-time
//! config, then the mirror's entries), so each mirror owns a [`ConnectorSession`]. The
//! policy calls (`target-topic`, `mirror-group`) are made once per topic or group per
//! discovery round; `map-records` once per fetched batch of a partition.

use std::sync::Arc;
use std::time::Instant;

use quiver_plugin_sdk::columns::Columns;
use wasmtime::component::{Component, Linker};
use wasmtime::Store;

use super::bindings::connector::exports::quiver::plugin::lifecycle::PluginError as WitError;
use super::bindings::connector::quiver::plugin::types::RecordBatch;
use super::bindings::connector::{Connector, ConnectorPre};
use super::engine::PluginEngine;
use super::metrics::Outcome;
use super::partitioner::trap_reason;
use super::sandbox::HostState;
use super::{CallError, Deployment, PluginError};

/// The linked component of one connector deployment.
pub struct WasmConnector {
    pre: ConnectorPre<HostState>,
}

impl std::fmt::Debug for WasmConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmConnector").finish_non_exhaustive()
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: Connector,
}

impl WasmConnector {
    /// Links `component` against the sandbox: fails if it imports anything the host does
    /// not provide or lacks the connector world's exports.
    pub fn new(component: &Component, linker: &Linker<HostState>) -> Result<Self, PluginError> {
        let pre = super::bindings::link_world(component, linker, "connector", ConnectorPre::new)?;
        Ok(Self { pre })
    }

    fn instantiate(
        &self,
        engine: &PluginEngine,
        deployment: &Deployment,
        config: Option<&[(String, String)]>,
    ) -> Result<Instance, CallError> {
        let mut store = deployment.new_store(engine);
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            CallError::Trap(format!("instantiating: {}", trap_reason(&e, deployment)))
        })?;
        if let Some(config) = config {
            bindings
                .quiver_plugin_lifecycle()
                .call_init(&mut store, &config.to_vec())
                .map_err(|e| CallError::Trap(format!("init: {}", trap_reason(&e, deployment))))?
                .map_err(|e| CallError::Init(e.text()))?;
        }
        Ok(Instance { store, bindings })
    }

    /// What a deploy checks: that an instance can be created (init waits for a mirror
    /// that gives it its configuration).
    pub fn warm_up(&self, engine: &PluginEngine, deployment: &Deployment) -> Result<(), CallError> {
        self.instantiate(engine, deployment, None).map(drop)
    }
}

/// One running mirror's instance of its plugin.
pub struct ConnectorSession {
    deployment: Arc<Deployment>,
    config: Vec<(String, String)>,
    instance: Option<Instance>,
}

impl std::fmt::Debug for ConnectorSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorSession")
            .field("plugin", &self.deployment.name)
            .field("version", &self.deployment.version)
            .finish()
    }
}

impl ConnectorSession {
    /// A session of `deployment` with `config` appended to the plugin's own; `init`
    /// runs now, so a bad configuration fails here.
    pub(super) fn open(
        engine: &PluginEngine,
        deployment: Arc<Deployment>,
        config: Vec<(String, String)>,
    ) -> Result<Self, CallError> {
        let super::Runner::WasmConnector(runner) = &deployment.runner else {
            return Err(CallError::WrongKind(format!(
                "plugin '{}' is a {}, not a connector",
                deployment.name, deployment.kind
            )));
        };
        let mut merged = deployment.config.clone();
        merged.extend(config);
        let instance = runner.instantiate(engine, &deployment, Some(&merged))?;
        Ok(Self {
            deployment,
            config: merged,
            instance: Some(instance),
        })
    }

    /// The plugin version this session runs.
    pub fn version(&self) -> u32 {
        self.deployment.version
    }

    /// Runs one call on the instance (made afresh after a trap), with the deadline set
    /// and the outcome recorded.
    fn with_instance<T>(
        &mut self,
        engine: &PluginEngine,
        records: usize,
        what: &str,
        call: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, CallError> {
        let deployment = self.deployment.clone();
        let super::Runner::WasmConnector(runner) = &deployment.runner else {
            return Err(CallError::WrongKind("not a connector".into()));
        };
        let started = Instant::now();
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => runner.instantiate(engine, &deployment, Some(&self.config))?,
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
        deployment
            .metrics
            .record(records, started.elapsed(), outcome);
        if let Err(e) = &result {
            deployment.log.push("host", &format!("{what}: {e}"));
        }
        result
    }

    /// The target topic for `topic` of the source cluster `alias`, or `None`.
    pub(super) fn target_topic(
        &mut self,
        engine: &PluginEngine,
        alias: &str,
        topic: &str,
    ) -> Result<Option<String>, CallError> {
        self.with_instance(engine, 0, "target-topic", |i| {
            i.bindings
                .quiver_plugin_mirror()
                .call_target_topic(&mut i.store, alias, topic)
                .map(Ok)
        })
    }

    /// Whether group `group`'s offsets are translated.
    pub(super) fn mirror_group(
        &mut self,
        engine: &PluginEngine,
        alias: &str,
        group: &str,
    ) -> Result<bool, CallError> {
        self.with_instance(engine, 0, "mirror-group", |i| {
            i.bindings
                .quiver_plugin_mirror()
                .call_mirror_group(&mut i.store, alias, group)
                .map(Ok)
        })
    }

    /// The records of `batch` to write to the target. Checked: well-formed columns
    /// within the output cap, whose offsets are input offsets in increasing order (a
    /// record may be dropped or changed, never invented or reordered), so the host
    /// knows which source record each written record stands for.
    pub(super) fn map_records(
        &mut self,
        engine: &PluginEngine,
        alias: &str,
        batch: Columns,
    ) -> Result<Mapped, CallError> {
        let input = RecordBatch {
            topic: batch.topic,
            partition: batch.partition,
            offsets: batch.offsets,
            timestamps: batch.timestamps,
            ends: batch.ends,
            header_ends: batch.header_ends,
            data: batch.data,
        };
        let max_output = self.deployment.limits.max_output_bytes;
        let output = self.with_instance(engine, input.offsets.len(), "map-records", |i| {
            i.bindings
                .quiver_plugin_mirror()
                .call_map_records(&mut i.store, alias, &input)
        })?;
        let records = Columns {
            topic: input.topic.clone(),
            partition: input.partition,
            offsets: output.offsets,
            timestamps: output.timestamps,
            ends: output.ends,
            header_ends: output.header_ends,
            data: output.data,
        };
        let size = records.data.len() as u64
            + 4 * (records.ends.len() + records.header_ends.len()) as u64
            + 16 * records.offsets.len() as u64;
        if size > max_output {
            return Err(CallError::Output(format!(
                "returned {size} bytes of records, more than the {max_output} allowed"
            )));
        }
        records
            .validate()
            .map_err(|e| CallError::Output(format!("malformed records: {e}")))?;
        check_subsequence(&input.offsets, &records.offsets).map_err(CallError::Output)?;
        let input = Columns {
            topic: input.topic,
            partition: input.partition,
            offsets: input.offsets,
            timestamps: input.timestamps,
            ends: input.ends,
            header_ends: input.header_ends,
            data: input.data,
        };
        Ok(Mapped {
            input,
            output: records,
        })
    }
}

/// What `map-records` made of a batch: the records to write, checked, and the batch
/// the plugin was given, handed back so the host can read the input record each
/// output record stands for (its provenance) without having kept a copy.
#[derive(Debug)]
pub struct Mapped {
    /// The batch as given to the plugin.
    pub input: Columns,
    /// The plugin's records, offsets a subsequence of the input's.
    pub output: Columns,
}

/// Whether `output` is `input` with some offsets left out, order kept.
fn check_subsequence(input: &[i64], output: &[i64]) -> Result<(), String> {
    let mut rest = input.iter();
    for offset in output {
        if !rest.by_ref().any(|o| o == offset) {
            return Err(format!(
                "returned a record with offset {offset}, which is not an input record after the one before it (records may be dropped or changed, not added or reordered)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_subsequence;

    #[test]
    fn output_offsets_must_be_input_offsets_in_order() {
        assert!(check_subsequence(&[1, 2, 3, 5], &[1, 3, 5]).is_ok());
        assert!(check_subsequence(&[1, 2, 3], &[]).is_ok());
        assert!(check_subsequence(&[1, 2, 3], &[3, 1]).is_err());
        assert!(check_subsequence(&[1, 2, 3], &[4]).is_err());
        assert!(check_subsequence(&[1, 2, 3], &[2, 2]).is_err());
    }
}
