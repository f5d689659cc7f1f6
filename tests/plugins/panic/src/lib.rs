//! Hostile test plugin: `partition` panics, which traps a WASM instance (and is caught
//! and reported by the native ABI). The host must discard the instance and report the
//! trap.

use quiver_plugin_sdk::prelude::*;

#[partitioner]
fn partition(_record: &Record, _partitions: u32) -> Result<u32> {
    panic!("hostile test plugin: panic in partition")
}
