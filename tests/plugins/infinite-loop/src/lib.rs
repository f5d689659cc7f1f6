//! Hostile test plugin: `partition` never returns. The host must stop it at the call
//! deadline (epoch interruption), discard the instance, and keep serving.

use quiver_plugin_sdk::prelude::*;

#[partitioner]
fn partition(_record: &Record, _partitions: u32) -> Result<u32> {
    loop {
        // A side-effect-free loop may be optimised out; spin_loop keeps it a real loop.
        std::hint::spin_loop();
    }
}
