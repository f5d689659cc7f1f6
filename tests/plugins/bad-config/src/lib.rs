//! Test plugin: `init` fails unless `required.key` is configured, with a message naming
//! the key. The host must refuse the deploy with that message and keep the previous
//! version serving. With the key it partitions everything to 0.

use quiver_plugin_sdk::prelude::*;

#[init]
fn init(config: &Config) -> Result<()> {
    config.require("required.key")?;
    Ok(())
}

#[partitioner]
fn partition(_record: &Record, _partitions: u32) -> Result<u32> {
    Ok(0)
}
