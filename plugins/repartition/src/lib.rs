//! `repartition`: pass every record through unchanged to output 0, with no partition,
//! so the output topic's partitioner places it.
//!
//! This is how Kafka-protocol producers get a central partitioner: they write to an
//! ingest topic however their client partitions, and a `repartition` transform writes
//! each record to a topic configured with `partitioner=<plugin>`, which decides the
//! final placement. It takes no configuration.

use quiver_plugin_sdk::prelude::*;

/// The transform.
#[derive(Debug, Default)]
pub struct Repartition;

impl Transform for Repartition {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&[])?;
        Ok(())
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
        out.forward(0, record);
        Ok(())
    }
}

register_transform!(Repartition);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::{TestRecord, TransformHarness};

    #[test]
    fn passes_records_through_unplaced() {
        let h = TransformHarness::<Repartition>::with_topics("ingest", &["placed"], &[]).unwrap();
        let result = h
            .run([
                TestRecord::new().key("k").header("h", "v").timestamp(1000),
                TestRecord::new().value("x").null_header("n"),
            ])
            .unwrap();
        assert!(result.failed.is_none());
        assert_eq!(result.source_offsets(), [0, 1]);
        let r = &result.records[0];
        assert_eq!((r.target, r.partition, r.timestamp), (0, -1, 1000));
        assert_eq!(
            (r.key.as_deref(), r.value.as_deref()),
            (Some(&b"k"[..]), None)
        );
        assert_eq!(r.headers, [("h".to_string(), Some(b"v".to_vec()))]);
        let r = &result.records[1];
        assert_eq!((r.key.as_deref(), r.value_str()), (None, Some("x")));
        assert_eq!(r.headers, [("n".to_string(), None)]);
    }

    #[test]
    fn takes_no_configuration() {
        let e = TransformHarness::<Repartition>::with_topics("ingest", &["placed"], &[("x", "1")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config: unknown config key `x` (known keys: none)"
        );
    }
}
