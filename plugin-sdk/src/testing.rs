//! A harness to unit-test plugins natively, with plain `cargo test`.
//!
//! Each harness holds one plugin instance in the same [`Slot`] the generated glue uses and
//! calls the same [`crate::glue`] functions the WASM exports call, so what a test observes
//! — including the SDK's checks on the plugin's answers — is what the broker will see.
//!
//! # Examples
//!
//! ```
//! use quiver_plugin_sdk::prelude::*;
//! use quiver_plugin_sdk::testing::PartitionerHarness;
//!
//! #[partitioner]
//! fn partition(record: &Record, partitions: u32) -> Result<u32> {
//!     Ok(record.key().map_or(0, |k| k.len() as u32) % partitions)
//! }
//!
//! # fn main() {
//! let harness = PartitionerHarness::<Plugin>::init(&[]).unwrap();
//! let chosen = harness.partition_keys(&[Some(b"abc"), None], 2).unwrap();
//! assert_eq!(chosen, [1, 0]);
//! # }
//! ```

use crate::columns::{Columns, ColumnsBuilder};
use crate::config::Config;
use crate::connector::Connector;
use crate::error::Result;
use crate::glue;
use crate::partitioner::Partitioner;
use crate::quota::{Client, Limits, QuotaPolicy, Usage};
use crate::slot::Slot;
use crate::transform::{check_targets, Transform, TransformOutput};

/// A batch of `topic` with one record per key (no value, no headers, timestamp 0, offset
/// -1), as records arrive at a partitioner.
pub fn keyed_batch(topic: &str, keys: &[Option<&[u8]>]) -> Columns {
    let mut builder = ColumnsBuilder::with_capacity(topic, -1, keys.len());
    for key in keys {
        builder.push(*key, None, &[] as &[(&str, Option<&[u8]>)], 0, -1);
    }
    builder.build()
}

fn config(pairs: &[(&str, &str)]) -> Config {
    Config::from_pairs(pairs.iter().copied())
}

/// Drives one partitioner instance.
pub struct PartitionerHarness<T> {
    slot: Slot<T>,
}

// Manual, so a harness is `Debug` (and `unwrap_err` works) for any plugin type.
impl<T> std::fmt::Debug for PartitionerHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionerHarness").finish_non_exhaustive()
    }
}

impl<T: Partitioner + Default> PartitionerHarness<T> {
    /// A fresh instance configured with `pairs`; the error is what a deploy would show.
    pub fn init(pairs: &[(&str, &str)]) -> Result<Self> {
        let harness = PartitionerHarness { slot: Slot::new() };
        harness.reinit(pairs)?;
        Ok(harness)
    }

    /// Calls `init` again on this instance with `pairs`.
    pub fn reinit(&self, pairs: &[(&str, &str)]) -> Result<()> {
        glue::partitioner_init(&self.slot, config(pairs))
    }

    /// Partitions `batch` over `partitions` partitions.
    pub fn partition(&self, batch: &Columns, partitions: u32) -> Result<Vec<u32>> {
        glue::partitioner_partition(&self.slot, batch, partitions)
    }

    /// Partitions one keyed record per key (see [`keyed_batch`]), for topic `test`.
    pub fn partition_keys(&self, keys: &[Option<&[u8]>], partitions: u32) -> Result<Vec<u32>> {
        self.partition(&keyed_batch("test", keys), partitions)
    }

    /// The partition of a single record with `key`.
    pub fn partition_key(&self, key: Option<&[u8]>, partitions: u32) -> Result<u32> {
        Ok(self.partition_keys(&[key], partitions)?[0])
    }
}

/// Drives one transform instance.
pub struct TransformHarness<T> {
    slot: Slot<T>,
    outputs: Option<usize>,
}

// Manual, so a harness is `Debug` (and `unwrap_err` works) for any plugin type.
impl<T> std::fmt::Debug for TransformHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformHarness").finish_non_exhaustive()
    }
}

impl<T: Transform + Default> TransformHarness<T> {
    /// A fresh instance configured with `pairs` (no `quiver.*` entries: for plugins
    /// that do not look at their outputs).
    pub fn init(pairs: &[(&str, &str)]) -> Result<Self> {
        let harness = TransformHarness {
            slot: Slot::new(),
            outputs: None,
        };
        glue::transform_init(&harness.slot, config(pairs))?;
        Ok(harness)
    }

    /// A fresh instance of a transform reading `input` and writing `outputs`,
    /// configured with `pairs` plus the `quiver.input` and `quiver.outputs` entries the
    /// host adds.
    pub fn with_topics(input: &str, outputs: &[&str], pairs: &[(&str, &str)]) -> Result<Self> {
        let joined = outputs.join(",");
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        all.push(("quiver.input", input));
        all.push(("quiver.outputs", &joined));
        let harness = TransformHarness {
            slot: Slot::new(),
            outputs: Some(outputs.len()),
        };
        glue::transform_init(&harness.slot, config(&all))?;
        Ok(harness)
    }

    /// Transforms `batch`; an output index past the configured outputs is an error, as
    /// it is in the broker.
    pub fn transform(&self, batch: &Columns) -> Result<TransformOutput> {
        let output = glue::transform_transform(&self.slot, batch)?;
        if let Some(outputs) = self.outputs {
            check_targets(&output, outputs)?;
        }
        Ok(output)
    }

    /// Transforms records given as (key, value, headers), at offsets 0.. and timestamp
    /// 1000 + offset; returns, per output record, (target, partition, key, value,
    /// headers) and the failure, if any.
    #[allow(clippy::type_complexity)]
    pub fn transform_records(
        &self,
        records: &[(Option<&[u8]>, Option<&[u8]>, &[(&str, Option<&[u8]>)])],
    ) -> Result<(Vec<OutputRecord>, Option<(i64, crate::PluginError)>)> {
        let mut b = ColumnsBuilder::new("test", 0);
        for (i, (key, value, headers)) in records.iter().enumerate() {
            b.push(*key, *value, headers, 1000 + i as i64, i as i64);
        }
        let output = self.transform(&b.build())?;
        let batch = output
            .records
            .batch()
            .map_err(|e| crate::PluginError::failed(format!("malformed output: {e}")))?;
        let records = batch
            .iter()
            .enumerate()
            .map(|(i, r)| OutputRecord {
                target: output.targets[i],
                partition: output.partitions[i],
                source_offset: r.offset(),
                key: r.key().map(<[u8]>::to_vec),
                value: r.value().map(<[u8]>::to_vec),
                headers: r
                    .headers()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            v.map(<[u8]>::to_vec),
                        )
                    })
                    .collect(),
                timestamp: r.timestamp(),
            })
            .collect();
        Ok((records, output.failed))
    }
}

/// One output record as [`TransformHarness::transform_records`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// Output index.
    pub target: u32,
    /// Chosen partition, or -1.
    pub partition: i32,
    /// Offset of the input record it came from.
    pub source_offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Timestamp.
    pub timestamp: i64,
}

/// Drives one quota-policy instance.
pub struct QuotaPolicyHarness<T> {
    slot: Slot<T>,
}

// Manual, so a harness is `Debug` (and `unwrap_err` works) for any plugin type.
impl<T> std::fmt::Debug for QuotaPolicyHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaPolicyHarness").finish_non_exhaustive()
    }
}

impl<T: QuotaPolicy + Default> QuotaPolicyHarness<T> {
    /// A fresh instance configured with `pairs`.
    pub fn init(pairs: &[(&str, &str)]) -> Result<Self> {
        let harness = QuotaPolicyHarness { slot: Slot::new() };
        glue::quota_init(&harness.slot, config(pairs))?;
        Ok(harness)
    }

    /// The quota key of `client`.
    pub fn quota_key(&self, client: &Client) -> Result<String> {
        glue::quota_key(&self.slot, client)
    }

    /// The limits of `key`.
    pub fn limits(&self, key: &str, recent: Option<&Usage>) -> Result<Limits> {
        glue::quota_limits(&self.slot, key, recent)
    }
}

/// Drives one connector instance.
pub struct ConnectorHarness<T> {
    slot: Slot<T>,
}

// Manual, so a harness is `Debug` (and `unwrap_err` works) for any plugin type.
impl<T> std::fmt::Debug for ConnectorHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorHarness").finish_non_exhaustive()
    }
}

impl<T: Connector + Default> ConnectorHarness<T> {
    /// A fresh instance configured with `pairs`.
    pub fn init(pairs: &[(&str, &str)]) -> Result<Self> {
        let harness = ConnectorHarness { slot: Slot::new() };
        glue::connector_init(&harness.slot, config(pairs))?;
        Ok(harness)
    }

    /// The target topic of `topic`.
    pub fn target_topic(&self, source_cluster: &str, topic: &str) -> Option<String> {
        glue::connector_target_topic(&self.slot, source_cluster, topic)
    }

    /// Whether `group` is mirrored.
    pub fn mirror_group(&self, source_cluster: &str, group: &str) -> bool {
        glue::connector_mirror_group(&self.slot, source_cluster, group)
    }

    /// The records written for `batch`.
    pub fn map_records(&self, source_cluster: &str, batch: &Columns) -> Result<Columns> {
        glue::connector_map_records(&self.slot, source_cluster, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::Batch;
    use crate::error::PluginError;

    #[derive(Default)]
    struct Counting {
        modulo: u32,
    }

    impl Partitioner for Counting {
        fn init(&mut self, config: &Config) -> Result<()> {
            self.modulo = config.parse("modulo")?;
            Ok(())
        }

        fn partition_batch(&mut self, batch: &Batch<'_>, n: u32, out: &mut Vec<u32>) -> Result<()> {
            out.extend((0..batch.len() as u32).map(|i| (i % self.modulo) % n));
            Ok(())
        }
    }

    #[test]
    fn partitioner_harness_runs_init_then_partition() {
        let err = PartitionerHarness::<Counting>::init(&[]).unwrap_err();
        assert_eq!(
            err,
            PluginError::InvalidConfig("missing required config key `modulo`".into())
        );
        let h = PartitionerHarness::<Counting>::init(&[("modulo", "2")]).unwrap();
        assert_eq!(
            h.partition_keys(&[None, None, None], 10).unwrap(),
            [0, 1, 0]
        );
        assert_eq!(h.partition_key(Some(b"x"), 10).unwrap(), 0);
        assert!(h.reinit(&[("modulo", "x")]).is_err());
        assert!(
            h.partition_keys(&[None], 10).is_err(),
            "failed re-init leaves no plugin"
        );
    }

    #[derive(Default)]
    struct Tenants;

    impl QuotaPolicy for Tenants {
        fn limits(&mut self, key: &str, recent: Option<&Usage>) -> Result<Limits> {
            Ok(Limits {
                requests_per_second: Some(if key == "gold" { 1000 } else { 10 }),
                fetch_bytes_per_second: recent.map(|u| u.fetch_bytes),
                ..Limits::default()
            })
        }
    }

    #[test]
    fn quota_harness_uses_the_default_key() {
        let h = QuotaPolicyHarness::<Tenants>::init(&[]).unwrap();
        let client = Client {
            principal: "User:alice".into(),
            tenant: None,
            client_id: "c".into(),
            host: "127.0.0.1".into(),
        };
        assert_eq!(h.quota_key(&client).unwrap(), "User:alice");
        assert_eq!(
            h.limits("gold", None).unwrap().requests_per_second,
            Some(1000)
        );
        let usage = Usage {
            key: "x".into(),
            produce_bytes: 0,
            fetch_bytes: 5,
            requests: 1,
            window_ms: 1000,
        };
        assert_eq!(
            h.limits("x", Some(&usage)).unwrap().fetch_bytes_per_second,
            Some(5)
        );
    }

    #[derive(Default)]
    struct Upper;

    impl Transform for Upper {
        fn transform(
            &mut self,
            record: &crate::columns::Record<'_>,
            out: &mut crate::transform::Outputs,
        ) -> Result<()> {
            let value = record.value().map(|v| v.to_ascii_uppercase());
            out.write(
                1,
                record.key(),
                value.as_deref(),
                record.headers(),
                record.timestamp(),
            );
            Ok(())
        }
    }

    #[test]
    fn transform_and_connector_harnesses() {
        let mut b = ColumnsBuilder::new("in", 0);
        b.push(None, Some(b"abc"), &[] as &[(&str, Option<&[u8]>)], 1, 2);
        let input = b.build();
        let h = TransformHarness::<Upper>::with_topics("in", &["a", "b"], &[]).unwrap();
        let output = h.transform(&input).unwrap();
        assert_eq!(output.targets, [1]);
        assert_eq!(output.records.data, b"ABC");
        assert_eq!(output.records.offsets, [2]);
        let (records, failed) = h
            .transform_records(&[(Some(b"k"), Some(b"x"), &[("h", None)])])
            .unwrap();
        assert!(failed.is_none());
        assert_eq!(records[0].value.as_deref(), Some(&b"X"[..]));
        assert_eq!(records[0].headers, [("h".to_string(), None)]);
        let narrow = TransformHarness::<Upper>::with_topics("in", &["a"], &[]).unwrap();
        assert!(narrow.transform(&input).is_err());

        #[derive(Default)]
        struct Mirror;
        impl Connector for Mirror {}
        let c = ConnectorHarness::<Mirror>::init(&[]).unwrap();
        assert_eq!(c.target_topic("west", "in").as_deref(), Some("west.in"));
        assert!(c.mirror_group("west", "g"));
        assert_eq!(c.map_records("west", &input).unwrap(), input);
    }
}
