use quiver_plugin_sdk::prelude::*;

#[partitioner]
fn partition(record: &Record, partitions: u64) -> Result<u32> {
    let _ = (record, partitions);
    Ok(0)
}

fn main() {}
