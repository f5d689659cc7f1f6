use quiver_plugin_sdk::prelude::*;

#[partitioner]
fn partition(record: &Record) -> Result<u32> {
    let _ = record;
    Ok(0)
}

fn main() {}
