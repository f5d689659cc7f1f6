use quiver_plugin_sdk::prelude::*;

#[partitioner]
fn partition(record: &Record, partitions: u32) -> Result<u32> {
    Ok(record.key().map_or(0, |k| k.len() as u32) % partitions)
}

fn main() {
    let h = quiver_plugin_sdk::testing::PartitionerHarness::<Plugin>::init(&[("any", "thing")]).unwrap();
    assert_eq!(h.partition_key(Some(b"ab"), 3).unwrap(), 2);
}
