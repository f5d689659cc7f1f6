//! A starter partitioner: keys of the form `<region><separator><id>` are routed by
//! region, so all of a region's orders share a partition and stay in order; keys
//! without the separator are hashed whole, and records without a key rotate over the
//! partitions. Copy this crate, change `partition_batch`, build, deploy.
//!
//! Configuration: `separator` (optional, one byte, default `:`).

use quiver_plugin_sdk::hash::murmur2_partition;
use quiver_plugin_sdk::partitioner::RoundRobin;
use quiver_plugin_sdk::prelude::*;

/// One value per plugin instance: created with `Default`, configured by `init`, then
/// called for every batch.
#[derive(Debug)]
pub struct RegionPartitioner {
    separator: u8,
    unkeyed: RoundRobin,
}

impl Default for RegionPartitioner {
    fn default() -> Self {
        RegionPartitioner {
            separator: b':',
            unkeyed: RoundRobin::default(),
        }
    }
}

impl Partitioner for RegionPartitioner {
    /// Runs when the plugin is deployed (and for every fresh instance); an error refuses
    /// the deploy with its message.
    fn init(&mut self, config: &Config) -> Result<()> {
        // Refusing unknown keys turns a typo into a refused deploy, not a silent default.
        config.check_known(&["separator"])?;
        if let Some(separator) = config.get("separator") {
            match separator.as_bytes() {
                [byte] => self.separator = *byte,
                _ => {
                    return Err(ConfigError::invalid(
                        "separator",
                        separator,
                        "must be a single byte",
                    )
                    .into())
                }
            }
        }
        Ok(())
    }

    /// Pushes one partition per record, in order.
    fn partition_batch(
        &mut self,
        batch: &Batch,
        partitions: u32,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let unkeyed = self.unkeyed.cursor(batch.topic());
        for record in batch {
            let partition = match record.key() {
                Some(key) => {
                    let region = key.split(|&b| b == self.separator).next().unwrap_or(key);
                    murmur2_partition(region, partitions)
                }
                None => unkeyed.next(partitions),
            };
            out.push(partition);
        }
        Ok(())
    }
}

register_partitioner!(RegionPartitioner);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::PartitionerHarness;

    #[test]
    fn orders_of_a_region_share_a_partition() {
        let harness = PartitionerHarness::<RegionPartitioner>::init(&[]).unwrap();
        let chosen = harness
            .partition_keys(
                &[Some(b"eu:1"), Some(b"eu:2"), Some(b"us:1"), None, None],
                12,
            )
            .unwrap();
        assert_eq!(chosen[0], chosen[1]);
        assert_eq!(chosen[0], murmur2_partition(b"eu", 12));
        assert_eq!(chosen[2], murmur2_partition(b"us", 12));
        assert_eq!(&chosen[3..], [0, 1]);
    }

    #[test]
    fn the_separator_is_configurable() {
        let harness = PartitionerHarness::<RegionPartitioner>::init(&[("separator", "/")]).unwrap();
        assert_eq!(
            harness.partition_key(Some(b"eu/1"), 12).unwrap(),
            murmur2_partition(b"eu", 12)
        );
    }

    #[test]
    fn bad_configuration_is_refused_with_the_key() {
        let err =
            PartitionerHarness::<RegionPartitioner>::init(&[("separator", "::")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: config key `separator` has invalid value \"::\": must be a single byte"
        );
    }
}
