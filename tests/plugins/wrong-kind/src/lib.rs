//! Hostile test plugin: a valid `transform` component. Deployed with `--kind
//! partitioner`, the host must refuse it because it does not export the partitioner
//! world.

use quiver_plugin_sdk::prelude::*;

/// Forwards every record to `<topic>.copy`.
#[derive(Debug, Default)]
pub struct Copy;

impl Transform for Copy {
    fn transform(&mut self, batch: &Batch, out: &mut Outputs) -> Result<()> {
        let target = format!("{}.copy", batch.topic());
        for record in batch {
            out.topic(&target).push_record(&record);
        }
        Ok(())
    }
}

register_transform!(Copy);
