//! Hostile test plugin: `partition` allocates (and touches) memory until the instance's
//! memory cap stops it. The host must trap it on the failed `memory.grow`, discard the
//! instance, and keep serving.

use quiver_plugin_sdk::prelude::*;

/// Each step claims this much more memory.
const STEP: usize = 1 << 20;

#[partitioner]
fn partition(_record: &Record, _partitions: u32) -> Result<u32> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled with a non-zero byte so every page is really written.
        hoard.push(vec![0xa5; STEP]);
        std::hint::black_box(&hoard);
    }
}
