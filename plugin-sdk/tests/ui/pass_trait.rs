use quiver_plugin_sdk::prelude::*;

#[derive(Default)]
struct Zero;

impl Partitioner for Zero {
    fn partition_batch(&mut self, batch: &Batch, _partitions: u32, out: &mut Vec<u32>) -> Result<()> {
        out.resize(batch.len(), 0);
        Ok(())
    }
}

register_partitioner!(Zero);

fn main() {}
