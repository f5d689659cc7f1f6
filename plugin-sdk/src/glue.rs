//! What the generated export glue calls, one function per WIT export.
//!
//! The macros generate only thin `Guest` implementations (and native `extern "C"`
//! functions) that convert types and call these functions; the test harness calls the
//! same functions. Keeping the logic here means it is compiled and unit-tested as part
//! of the SDK on every target, not only inside a wasm build.

use crate::columns::Columns;
use crate::config::Config;
use crate::connector::{run_map_records, Connector};
use crate::error::Result;
use crate::partitioner::{run_partition, Partitioner};
use crate::quota::{Client, Limits, QuotaPolicy, Usage};
use crate::slot::{init_into, Slot};
use crate::transform::{Transform, TransformInstance, TransformOutput};

/// `lifecycle.init` of a partitioner.
pub fn partitioner_init<T: Partitioner + Default>(slot: &Slot<T>, config: Config) -> Result<()> {
    init_into(slot, |plugin| plugin.init(&config))
}

/// `partition.partition`.
pub fn partitioner_partition<T: Partitioner>(
    slot: &Slot<T>,
    batch: &Columns,
    partitions: u32,
) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    slot.with(|plugin| run_partition(plugin, &batch.view(), partitions, &mut out))?;
    Ok(out)
}

/// `lifecycle.init` of a transform.
pub fn transform_init<T: Transform + Default>(
    slot: &Slot<TransformInstance<T>>,
    config: Config,
) -> Result<()> {
    init_into(slot, |instance| instance.init(&config))
}

/// `record-transform.transform`: the plugin's output for `batch`, its output indices
/// checked against the configured outputs.
pub fn transform_transform<T: Transform>(
    slot: &Slot<TransformInstance<T>>,
    batch: &Columns,
) -> Result<TransformOutput> {
    slot.with(|instance| instance.transform(&batch.view()))
}

/// `lifecycle.init` of a quota policy.
pub fn quota_init<T: QuotaPolicy + Default>(slot: &Slot<T>, config: Config) -> Result<()> {
    init_into(slot, |plugin| plugin.init(&config))
}

/// `policy.quota-key`.
pub fn quota_key<T: QuotaPolicy>(slot: &Slot<T>, client: &Client) -> Result<String> {
    slot.with(|plugin| plugin.quota_key(client))
}

/// `policy.initial-limits`.
pub fn quota_initial_limits<T: QuotaPolicy>(slot: &Slot<T>, key: &str) -> Result<Limits> {
    slot.with(|plugin| plugin.initial_limits(key))
}

/// `policy.rebalance`.
pub fn quota_rebalance<T: QuotaPolicy>(
    slot: &Slot<T>,
    window_ms: u32,
    usage: &[Usage],
) -> Result<Vec<(String, Limits)>> {
    slot.with(|plugin| plugin.rebalance(window_ms, usage))
}

/// `lifecycle.init` of a connector.
pub fn connector_init<T: Connector + Default>(slot: &Slot<T>, config: Config) -> Result<()> {
    init_into(slot, |plugin| plugin.init(&config))
}

/// `mirror.target-topic`. The WIT function cannot return an error, so a call before
/// `init` panics, which traps the instance: the host replaces it and reports the trap.
pub fn connector_target_topic<T: Connector>(
    slot: &Slot<T>,
    source_cluster: &str,
    topic: &str,
) -> Option<String> {
    slot.with(|plugin| Ok(plugin.target_topic(source_cluster, topic)))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `mirror.mirror-group`; a call before `init` traps, as for
/// [`connector_target_topic`].
pub fn connector_mirror_group<T: Connector>(
    slot: &Slot<T>,
    source_cluster: &str,
    group: &str,
) -> bool {
    slot.with(|plugin| Ok(plugin.mirror_group(source_cluster, group)))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `mirror.map-records`.
pub fn connector_map_records<T: Connector>(
    slot: &Slot<T>,
    source_cluster: &str,
    batch: &Columns,
) -> Result<Columns> {
    slot.with(|plugin| run_map_records(plugin, source_cluster, &batch.view()))
}
