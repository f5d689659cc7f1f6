//! `hash`: partition keyed records with the hash a particular Kafka client uses, so
//! broker-routed records land where that client would have put them.
//!
//! Configuration: `hash.algorithm` (default `murmur2`):
//!
//! | value | matches | keyed formula |
//! |---|---|---|
//! | `murmur2` | the Java client's default; librdkafka `murmur2`, `murmur2_random` | `(murmur2(key) & 0x7fffffff) % n` (seed `0x9747b28c`) |
//! | `fnv1a` | Sarama's default `NewHashPartitioner`; librdkafka `fnv1a`, `fnv1a_random` | FNV-1a 32-bit of the key, read as `int32`, absolute value, `% n` |
//! | `crc32` | librdkafka's default `consistent_random`, and `consistent` | CRC-32 (IEEE, as zlib) of the key, unsigned, `% n` |
//!
//! Sarama's `NewReferenceHashPartitioner` (`(int32(h) & 0x7fffffff) % n`) is not offered:
//! it differs from `fnv1a` only for hashes with the top bit set.
//!
//! Null keys go round-robin per topic in every mode. (The clients differ here: Sarama
//! and the `*_random` librdkafka modes pick randomly, librdkafka `consistent` and
//! `fnv1a` hash the empty key; none of these can be reproduced broker-side, and a
//! rotating choice spreads load the same way.) Empty, non-null keys are hashed like any
//! other key, as all three clients' keyed paths do.

use quiver_plugin_sdk::hash::{crc32_partition, fnv1a_partition, murmur2_partition};
use quiver_plugin_sdk::partitioner::RoundRobin;
use quiver_plugin_sdk::prelude::*;

/// Which client's keyed hashing to reproduce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Java client / librdkafka `murmur2`.
    #[default]
    Murmur2,
    /// Sarama `NewHashPartitioner` / librdkafka `fnv1a`.
    Fnv1a,
    /// librdkafka `consistent`.
    Crc32,
}

impl Algorithm {
    fn partition(self, key: &[u8], partitions: u32) -> u32 {
        match self {
            Algorithm::Murmur2 => murmur2_partition(key, partitions),
            Algorithm::Fnv1a => fnv1a_partition(key, partitions),
            Algorithm::Crc32 => crc32_partition(key, partitions),
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "murmur2" => Ok(Algorithm::Murmur2),
            "fnv1a" => Ok(Algorithm::Fnv1a),
            "crc32" => Ok(Algorithm::Crc32),
            _ => Err("expected one of murmur2, fnv1a, crc32".to_owned()),
        }
    }
}

/// The partitioner.
#[derive(Debug, Default)]
pub struct Hash {
    algorithm: Algorithm,
    unkeyed: RoundRobin,
}

impl Partitioner for Hash {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&["hash.algorithm"])?;
        self.algorithm = config.parse_or("hash.algorithm", Algorithm::Murmur2)?;
        Ok(())
    }

    fn partition_batch(
        &mut self,
        batch: &Batch,
        partitions: u32,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let algorithm = self.algorithm;
        let unkeyed = self.unkeyed.cursor(batch.topic());
        out.extend(batch.iter().map(|record| match record.key() {
            Some(key) => algorithm.partition(key, partitions),
            None => unkeyed.next(partitions),
        }));
        Ok(())
    }
}

register_partitioner!(Hash);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::PartitionerHarness;

    fn with(algorithm: &str) -> PartitionerHarness<Hash> {
        PartitionerHarness::init(&[("hash.algorithm", algorithm)]).unwrap()
    }

    #[test]
    fn murmur2_is_the_default_and_matches_kafka_vectors() {
        let h = PartitionerHarness::<Hash>::init(&[]).unwrap();
        // murmur2("21") = -973932308; & 0x7fffffff = 1173551340.
        assert_eq!(
            h.partition_key(Some(b"21"), 1000).unwrap(),
            1_173_551_340 % 1000
        );
        assert_eq!(
            with("murmur2").partition_key(Some(b"abc"), 7).unwrap(),
            479_470_107 % 7
        );
    }

    #[test]
    fn fnv1a_matches_sarama() {
        // Go hash/fnv New32a: "kafka" -> 0x0d33c4e1 (positive as int32);
        // "1234" -> 0xfdc422fd, int32 -37477635, |.| = 0x023bdd03.
        let h = with("fnv1a");
        assert_eq!(
            h.partition_key(Some(b"kafka"), 10).unwrap(),
            0x0d33_c4e1 % 10
        );
        assert_eq!(
            h.partition_key(Some(b"1234"), 10).unwrap(),
            0x023b_dd03 % 10
        );
        assert_eq!(h.partition_key(Some(b""), 10).unwrap(), 0x7ee3_623b % 10);
    }

    #[test]
    fn crc32_matches_librdkafka_consistent() {
        // CRC-32 check value: crc32("123456789") = 0xcbf43926.
        let h = with("crc32");
        assert_eq!(
            h.partition_key(Some(b"123456789"), 10).unwrap(),
            0xcbf4_3926 % 10
        );
        assert_eq!(h.partition_key(Some(b""), 10).unwrap(), 0);
    }

    #[test]
    fn null_keys_round_robin() {
        assert_eq!(
            with("crc32")
                .partition_keys(&[None, None, None], 2)
                .unwrap(),
            [0, 1, 0]
        );
    }

    #[test]
    fn unknown_algorithms_are_refused_by_name() {
        let err = PartitionerHarness::<Hash>::init(&[("hash.algorithm", "md5")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: config key `hash.algorithm` has invalid value \"md5\": expected one of murmur2, fnv1a, crc32"
        );
    }
}
