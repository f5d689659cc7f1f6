//! The `connector` kind: the policy of a mirror connector.
//!
//! The host does all the I/O of mirroring (the remote cluster client, local writes,
//! checkpoints, offset translation) and prevents loops (the `quiver.provenance` header it
//! adds); the plugin decides what is mirrored, under which names, and which records. The
//! defaults follow MirrorMaker 2's `DefaultReplicationPolicy`, so an empty
//! implementation is a working mirror.

use crate::columns::{Batch, Columns};
use crate::config::Config;
use crate::error::{PluginError, Result};

/// A mirror connector's policy.
///
/// ```
/// use quiver_plugin_sdk::prelude::*;
///
/// /// Mirrors only `orders*` topics, under the default `<source>.<topic>` names.
/// #[derive(Default)]
/// struct OrdersOnly;
///
/// impl Connector for OrdersOnly {
///     fn target_topic(&mut self, source_cluster: &str, topic: &str) -> Option<String> {
///         topic.starts_with("orders").then(|| format!("{source_cluster}.{topic}"))
///     }
/// }
///
/// register_connector!(OrdersOnly);
/// # fn main() {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Quiver connector",
    label = "registered as a connector here",
    note = "implement `quiver_plugin_sdk::Connector` (and `Default`) for it"
)]
pub trait Connector {
    /// Configures the plugin; see [`Partitioner::init`](crate::Partitioner::init).
    fn init(&mut self, config: &Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// The target topic for `topic` of `source_cluster`, or `None` to leave it
    /// unmirrored. Default: `<source_cluster>.<topic>`, MirrorMaker 2's naming, which
    /// lets the reverse link see where a topic came from; internal topics (`__` prefix)
    /// are skipped.
    fn target_topic(&mut self, source_cluster: &str, topic: &str) -> Option<String> {
        if topic.starts_with("__") || topic.is_empty() {
            return None;
        }
        Some(format!("{source_cluster}.{topic}"))
    }

    /// Whether a consumer group's offsets are mirrored (and translated). Default: every
    /// group except internal ones (`__` prefix).
    fn mirror_group(&mut self, source_cluster: &str, group: &str) -> bool {
        let _ = source_cluster;
        !group.starts_with("__")
    }

    /// The records to write to the target for `batch` (one source partition), in the
    /// same layout. Records may be dropped or changed but not added or reordered: each
    /// keeps the offset of the record it stands for, so the host can translate consumer
    /// offsets (see [`ColumnsBuilder::push_record`](crate::ColumnsBuilder::push_record)).
    /// Default: every record unchanged.
    fn map_records(&mut self, source_cluster: &str, batch: &Batch<'_>) -> Result<Columns> {
        let _ = source_cluster;
        Ok(batch.to_columns())
    }
}

/// Runs one `map-records` call: validates the input and the plugin's output.
pub fn run_map_records<T: Connector + ?Sized>(
    plugin: &mut T,
    source_cluster: &str,
    batch: &Batch<'_>,
) -> Result<Columns> {
    batch.validate()?;
    let columns = plugin.map_records(source_cluster, batch)?;
    columns
        .validate()
        .map_err(|e| PluginError::failed(format!("mapped records are malformed: {e}")))?;
    Ok(columns)
}

/// Compile-time check used by `register_connector!`.
#[doc(hidden)]
pub const fn assert_connector<T: Connector + Default + Send + 'static>() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::ColumnsBuilder;

    #[derive(Default)]
    struct Defaults;
    impl Connector for Defaults {}

    #[test]
    fn defaults_follow_the_replication_policy() {
        let mut c = Defaults;
        assert_eq!(
            c.target_topic("east", "orders").as_deref(),
            Some("east.orders")
        );
        assert_eq!(c.target_topic("east", "__consumer_offsets"), None);
        assert!(c.mirror_group("east", "billing"));
        assert!(!c.mirror_group("east", "__internal"));
        let mut b = ColumnsBuilder::new("orders", 1);
        b.push(Some(b"k"), Some(b"v"), &[("h", None)], 1, 2);
        let columns = b.build();
        let mapped = run_map_records(&mut c, "east", &columns.batch().unwrap()).unwrap();
        assert_eq!(mapped, columns);
    }
}
