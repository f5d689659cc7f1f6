//! `murmur2`: the Java Kafka client's partitioner, as a plugin.
//!
//! A keyed record goes to `(murmur2(key) & 0x7fffffff) % partitions`, bit for bit what
//! the Java producer (and librdkafka's `murmur2`/`murmur2_random`) chooses, so records
//! routed by the broker land where a Kafka client would have put them. Records with a
//! null key are spread round-robin, per topic, across the calls of one instance (the
//! Java client's sticky batching has no meaning broker-side).
//!
//! Takes no configuration.

use quiver_plugin_sdk::hash::murmur2_partition;
use quiver_plugin_sdk::partitioner::RoundRobin;
use quiver_plugin_sdk::prelude::*;

/// The partitioner: stateless for keyed records, a round-robin cursor per topic for
/// null keys.
#[derive(Debug, Default)]
pub struct Murmur2 {
    unkeyed: RoundRobin,
}

impl Partitioner for Murmur2 {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&[])?;
        Ok(())
    }

    fn partition_batch(
        &mut self,
        batch: &Batch,
        partitions: u32,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let unkeyed = self.unkeyed.cursor(batch.topic());
        out.extend(batch.iter().map(|record| match record.key() {
            Some(key) => murmur2_partition(key, partitions),
            None => unkeyed.next(partitions),
        }));
        Ok(())
    }
}

register_partitioner!(Murmur2);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::hash::murmur2;
    use quiver_plugin_sdk::testing::{keyed_batch, PartitionerHarness};

    fn harness() -> PartitionerHarness<Murmur2> {
        PartitionerHarness::init(&[]).unwrap()
    }

    #[test]
    fn keyed_records_match_the_java_client() {
        // Kafka's UtilsTest murmur2 vectors; the Java client partitions with
        // `toPositive(murmur2(key)) % n`.
        let vectors: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        let h = harness();
        for partitions in [1u32, 3, 10, 12, 100] {
            for (key, hash) in vectors {
                assert_eq!(murmur2(key.as_bytes()), hash);
                let expected = (hash & 0x7fff_ffff) as u32 % partitions;
                assert_eq!(
                    h.partition_key(Some(key.as_bytes()), partitions).unwrap(),
                    expected,
                    "key {key:?} over {partitions} partitions"
                );
            }
        }
    }

    #[test]
    fn null_keys_round_robin_per_topic_across_batches() {
        let h = harness();
        assert_eq!(h.partition_keys(&[None, None, None], 3).unwrap(), [0, 1, 2]);
        assert_eq!(
            h.partition_keys(&[None, Some(b"abc"), None], 3).unwrap(),
            [0, 479470107 % 3, 1]
        );
        let other = h
            .partition(&keyed_batch("other", &[None, None]), 3)
            .unwrap();
        assert_eq!(other, [0, 1], "each topic has its own cursor");
    }

    #[test]
    fn refuses_configuration() {
        let err = PartitionerHarness::<Murmur2>::init(&[("seed", "1")]).unwrap_err();
        assert!(matches!(err, PluginError::InvalidConfig(m) if m.contains("`seed`")));
    }
}
