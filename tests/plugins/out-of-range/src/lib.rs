//! Hostile test plugin: answers every batch with partitions at and beyond the topic's
//! count. It implements the generated bindings by hand because the SDK's glue would
//! catch the mistake inside the plugin; the host must catch it itself.
//!
//! Record `i` gets partition `partitions + i` (so the first is exactly `partitions`,
//! the off-by-one case).

#[cfg(target_arch = "wasm32")]
mod component {
    quiver_plugin_sdk::bindings!(partitioner);
    quiver_plugin_sdk::api_version_section!();

    use exports::quiver::plugin::{lifecycle, partition};
    use quiver::plugin::types::{PluginError, RecordBatch};

    struct OutOfRange;

    impl lifecycle::Guest for OutOfRange {
        fn init(_config: Vec<(String, String)>) -> Result<(), PluginError> {
            Ok(())
        }
    }

    impl partition::Guest for OutOfRange {
        fn partition(batch: RecordBatch, partitions: u32) -> Result<Vec<u32>, PluginError> {
            Ok((0..batch.offsets.len() as u32)
                .map(|i| partitions.saturating_add(i))
                .collect())
        }
    }

    export!(OutOfRange);
}
