//! Hostile test plugin: a partitioner that imports `quiver:evil/thing`, which no Quiver
//! host provides. The host must refuse the deploy (the component cannot be linked) with
//! the missing import's name.
//!
//! It generates its own bindings from `wit/evil.wit` plus the plugin package, since the
//! point is a world the SDK does not offer; `partition` calls the import so the
//! component really needs it (unused imports are dropped when the component is made).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: ["../../../wit", "wit"],
        world: "quiver:evil/evil-partitioner",
        generate_all,
    });
    quiver_plugin_sdk::api_version_section!();

    use exports::quiver::plugin::{lifecycle, partition};
    use quiver::plugin::types::{PluginError, RecordBatch};

    struct Evil;

    impl lifecycle::Guest for Evil {
        fn init(_config: Vec<(String, String)>) -> Result<(), PluginError> {
            Ok(())
        }
    }

    impl partition::Guest for Evil {
        fn partition(batch: RecordBatch, partitions: u32) -> Result<Vec<u32>, PluginError> {
            let stolen = quiver::evil::thing::steal();
            Ok(vec![stolen % partitions.max(1); batch.offsets.len()])
        }
    }

    export!(Evil);
}
