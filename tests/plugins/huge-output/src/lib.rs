//! Hostile test plugin: answers every batch with a list far longer than the batch
//! (16 MiB of partition numbers). It implements the generated bindings by hand because
//! the SDK's glue would reject the answer inside the plugin; the host's output-size cap
//! and count check must reject it instead.

#[cfg(target_arch = "wasm32")]
mod component {
    quiver_plugin_sdk::bindings!(partitioner);
    quiver_plugin_sdk::api_version_section!();

    use exports::quiver::plugin::{lifecycle, partition};
    use quiver::plugin::types::{PluginError, RecordBatch};

    /// Entries returned whatever the batch size: 4 Mi `u32`s, 16 MiB.
    const ENTRIES: usize = 4 << 20;

    struct HugeOutput;

    impl lifecycle::Guest for HugeOutput {
        fn init(_config: Vec<(String, String)>) -> Result<(), PluginError> {
            Ok(())
        }
    }

    impl partition::Guest for HugeOutput {
        fn partition(batch: RecordBatch, _partitions: u32) -> Result<Vec<u32>, PluginError> {
            Ok(vec![0; ENTRIES.max(batch.offsets.len() * 1024)])
        }
    }

    export!(HugeOutput);
}
