use quiver_plugin_sdk::prelude::*;

#[partitioner]
async fn partition(_record: &Record, _partitions: u32) -> Result<u32> {
    Ok(0)
}

fn main() {}
