use quiver_plugin_sdk::prelude::*;

#[init]
fn configure(config: &Config) -> Result<()> {
    config.require("needed")?;
    Ok(())
}

#[partitioner]
fn route(_record: &Record, _partitions: u32) -> Result<u32> {
    Ok(0)
}

fn main() {
    use quiver_plugin_sdk::testing::PartitionerHarness;
    assert!(PartitionerHarness::<Plugin>::init(&[]).is_err(), "the #[init] hook runs");
    assert!(PartitionerHarness::<Plugin>::init(&[("needed", "1")]).is_ok());
}
