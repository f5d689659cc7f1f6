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
    use quiver_plugin_sdk::testing::TransformHarness;

    #[test]
    fn passes_records_through_unplaced() {
        let h = TransformHarness::<Repartition>::with_topics("ingest", &["placed"], &[]).unwrap();
        let (records, failed) = h
            .transform_records(&[(Some(b"k"), None, &[("h", Some(b"v"))])])
            .unwrap();
        assert!(failed.is_none());
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.target, r.partition, r.timestamp), (0, -1, 1000));
        assert_eq!(
            (r.key.as_deref(), r.value.as_deref()),
            (Some(&b"k"[..]), None)
        );
        assert_eq!(r.headers, [("h".to_string(), Some(b"v".to_vec()))]);
    }

    #[test]
    fn takes_no_configuration() {
        assert!(TransformHarness::<Repartition>::init(&[("x", "1")]).is_err());
    }
}
