//! Hostile test plugin: a valid `transform` component. Deployed with `--kind
//! partitioner`, the host must refuse it because it does not export the partitioner
//! world.

use quiver_plugin_sdk::prelude::*;

/// Forwards every record to the first output.
#[derive(Debug, Default)]
pub struct Copy;

impl Transform for Copy {
    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
        out.forward(0, record);
        Ok(())
    }
}

register_transform!(Copy);
