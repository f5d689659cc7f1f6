//! `vip`: reserve a share of a topic's partitions for VIP keys.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `vip.partitions` | required: how many partitions (the first ones, `0..n`) are reserved for VIP keys |
//! | `vip.keys` | comma-separated keys that are VIP |
//! | `vip.prefixes` | comma-separated key prefixes that make a key VIP |
//!
//! At least one of `vip.keys` and `vip.prefixes` is required. With `vip.partitions=8` on
//! a 10-partition topic, VIP keys spread over partitions 0..8 by murmur2 and every other
//! record over 8..10, so VIP traffic never queues behind everyone else's. Null keys are
//! never VIP; they go round-robin over the non-reserved partitions. The reservation is
//! checked against the topic at call time (topics differ and grow): reserving as many
//! partitions as the topic has, or more, fails the call with both numbers.

use quiver_plugin_sdk::hash::murmur2_partition;
use quiver_plugin_sdk::partitioner::RoundRobin;
use quiver_plugin_sdk::prelude::*;
use std::collections::HashSet;

/// The partitioner and its parsed configuration.
#[derive(Debug, Default)]
pub struct Vip {
    reserved: u32,
    keys: HashSet<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
    unkeyed: RoundRobin,
}

impl Vip {
    fn is_vip(&self, key: &[u8]) -> bool {
        self.keys.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p))
    }
}

impl Partitioner for Vip {
    fn init(&mut self, config: &Config) -> Result<()> {
        config.check_known(&["vip.partitions", "vip.keys", "vip.prefixes"])?;
        let reserved: u32 = config.parse("vip.partitions")?;
        if reserved == 0 {
            return Err(ConfigError::invalid(
                "vip.partitions",
                "0",
                "reserve at least one partition",
            )
            .into());
        }
        self.reserved = reserved;
        self.keys = config
            .list("vip.keys")
            .into_iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        self.prefixes = config
            .list("vip.prefixes")
            .into_iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        if self.keys.is_empty() && self.prefixes.is_empty() {
            return Err(PluginError::invalid_config(
                "set `vip.keys` or `vip.prefixes` (or both): no key would be VIP",
            ));
        }
        Ok(())
    }

    fn partition_batch(
        &mut self,
        batch: &Batch,
        partitions: u32,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if self.reserved >= partitions {
            return Err(PluginError::invalid_input(format!(
                "vip.partitions reserves {} partitions but topic `{}` has {partitions}; at least one must remain for other keys",
                self.reserved,
                batch.topic()
            )));
        }
        let reserved = self.reserved;
        let others = partitions - reserved;
        for record in batch {
            let partition = match record.key() {
                Some(key) if self.is_vip(key) => murmur2_partition(key, reserved),
                Some(key) => reserved + murmur2_partition(key, others),
                None => reserved + self.unkeyed.cursor(batch.topic()).next(others),
            };
            out.push(partition);
        }
        Ok(())
    }
}

register_partitioner!(Vip);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::PartitionerHarness;

    fn vip(pairs: &[(&str, &str)]) -> PartitionerHarness<Vip> {
        PartitionerHarness::init(pairs).unwrap()
    }

    #[test]
    fn vip_keys_stay_in_the_reserved_partitions() {
        let h = vip(&[
            ("vip.partitions", "8"),
            ("vip.keys", "acme,globex"),
            ("vip.prefixes", "gold-"),
        ]);
        for key in ["acme", "globex", "gold-1", "gold-xyz"] {
            let p = h.partition_key(Some(key.as_bytes()), 10).unwrap();
            assert_eq!(p, murmur2_partition(key.as_bytes(), 8), "{key}");
        }
        for key in ["initech", "acme2", "silver-1", "", "gold"] {
            let p = h.partition_key(Some(key.as_bytes()), 10).unwrap();
            assert_eq!(p, 8 + murmur2_partition(key.as_bytes(), 2), "{key}");
        }
    }

    #[test]
    fn null_keys_rotate_over_the_other_partitions() {
        let h = vip(&[("vip.partitions", "8"), ("vip.keys", "acme")]);
        assert_eq!(
            h.partition_keys(&[None, None, None], 10).unwrap(),
            [8, 9, 8]
        );
    }

    #[test]
    fn many_keys_cover_both_sets_evenly() {
        let h = vip(&[("vip.partitions", "2"), ("vip.prefixes", "v")]);
        let keys: Vec<String> = (0..1000)
            .map(|i| format!("{}{i}", if i % 2 == 0 { "v" } else { "n" }))
            .collect();
        let refs: Vec<Option<&[u8]>> = keys.iter().map(|k| Some(k.as_bytes())).collect();
        let chosen = h.partition_keys(&refs, 4).unwrap();
        let mut counts = [0usize; 4];
        for (key, p) in keys.iter().zip(&chosen) {
            assert_eq!(key.starts_with('v'), *p < 2, "{key} -> {p}");
            counts[*p as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
    }

    #[test]
    fn reserving_the_whole_topic_names_both_numbers() {
        let h = vip(&[("vip.partitions", "8"), ("vip.keys", "acme")]);
        let err = h.partition_key(Some(b"acme"), 8).unwrap_err();
        assert_eq!(
            err,
            PluginError::InvalidInput(
                "vip.partitions reserves 8 partitions but topic `test` has 8; at least one must remain for other keys".into()
            )
        );
    }

    #[test]
    fn init_errors_name_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            PartitionerHarness::<Vip>::init(pairs)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&[("vip.keys", "a")]),
            "invalid config: missing required config key `vip.partitions`"
        );
        assert!(err(&[("vip.partitions", "x"), ("vip.keys", "a")])
            .contains("`vip.partitions` has invalid value \"x\""));
        assert!(err(&[("vip.partitions", "0"), ("vip.keys", "a")])
            .contains("reserve at least one partition"));
        assert!(err(&[("vip.partitions", "2")]).contains("`vip.keys` or `vip.prefixes`"));
        assert!(err(&[("vip.partitions", "2"), ("vip.key", "a")])
            .contains("unknown config key `vip.key`"));
    }
}
