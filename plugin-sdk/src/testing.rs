//! A harness to unit-test plugins natively, with plain `cargo test`.
//!
//! Each harness holds one plugin instance in the same [`Slot`] the generated glue uses and
//! calls the same [`crate::glue`] functions the WASM exports call, so what a test observes
//! — including the SDK's checks on the plugin's answers — is what the broker will see.
//! There is one harness per plugin kind; [`TransformHarness`] also has owned record
//! types ([`TestRecord`] in, [`TransformResult`] out) so transform tests need no columns.
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
use crate::error::{PluginError, Result};
use crate::glue;
use crate::partitioner::Partitioner;
use crate::quota::{Client, Limits, QuotaPolicy, Usage};
use crate::slot::Slot;
use crate::transform::{Transform, TransformInstance, TransformOutput};

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
///
/// Configure it with [`TransformHarness::with_topics`], which adds the `quiver.input`
/// and `quiver.outputs` entries the broker adds, then feed it records with
/// [`TransformHarness::run`] (or whole batches with [`TransformHarness::transform`]).
/// As in the broker, an output index past the configured outputs fails the call.
///
/// ```
/// use quiver_plugin_sdk::prelude::*;
/// use quiver_plugin_sdk::testing::{TestRecord, TransformHarness};
///
/// /// Copies keyed records to the first output, fails on tombstones.
/// #[derive(Default)]
/// struct Keyed;
///
/// impl Transform for Keyed {
///     fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
///         if record.value().is_none() {
///             return Err(PluginError::invalid_input("tombstones are not expected"));
///         }
///         if record.key().is_some() {
///             out.forward(0, record);
///         }
///         Ok(())
///     }
/// }
///
/// # fn main() {
/// let harness = TransformHarness::<Keyed>::with_topics("in", &["out"], &[]).unwrap();
/// let result = harness
///     .run([
///         TestRecord::new().key("a").value("1").header("trace", "x"),
///         TestRecord::new().value("2"),
///         TestRecord::new().key("c"),
///         TestRecord::new().key("d").value("4"),
///     ])
///     .unwrap();
/// // Records are numbered from offset 0; the run stops at the failing record.
/// assert_eq!(result.source_offsets(), [0]);
/// assert_eq!(result.records[0].value_str(), Some("1"));
/// assert_eq!(result.records[0].headers, [("trace".to_string(), Some(b"x".to_vec()))]);
/// let (offset, error) = result.failed.unwrap();
/// assert_eq!((offset, error.message()), (2, "tombstones are not expected"));
/// # }
/// ```
pub struct TransformHarness<T> {
    slot: Slot<TransformInstance<T>>,
}

// Manual, so a harness is `Debug` (and `unwrap_err` works) for any plugin type.
impl<T> std::fmt::Debug for TransformHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformHarness").finish_non_exhaustive()
    }
}

impl<T: Transform + Default> TransformHarness<T> {
    /// A fresh instance configured with exactly `pairs`. Without a `quiver.outputs`
    /// entry, output indices are not checked; prefer [`TransformHarness::with_topics`].
    pub fn init(pairs: &[(&str, &str)]) -> Result<Self> {
        let harness = TransformHarness { slot: Slot::new() };
        glue::transform_init(&harness.slot, config(pairs))?;
        Ok(harness)
    }

    /// A fresh instance of a transform reading `input` and writing `outputs` (output
    /// `i` is `outputs[i]`), configured with `pairs` plus the `quiver.input` and
    /// `quiver.outputs` entries the broker adds. The error is what a deploy would show.
    pub fn with_topics(input: &str, outputs: &[&str], pairs: &[(&str, &str)]) -> Result<Self> {
        let joined = outputs.join(",");
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        all.push(("quiver.input", input));
        all.push(("quiver.outputs", &joined));
        Self::init(&all)
    }

    /// Transforms `batch` as one broker call does.
    pub fn transform(&self, batch: &Columns) -> Result<TransformOutput> {
        glue::transform_transform(&self.slot, batch)
    }

    /// Transforms `records`, numbered from offset 0, in one call, and returns the
    /// output records with where each goes. `Err` is a failed call (as the broker
    /// would retry it); a failing record is [`TransformResult::failed`].
    pub fn run(&self, records: impl IntoIterator<Item = TestRecord>) -> Result<TransformResult> {
        let mut builder = ColumnsBuilder::new("test", 0);
        for (offset, record) in records.into_iter().enumerate() {
            builder.push_with(
                record.key.as_deref(),
                record.value.as_deref(),
                record
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_slice(), value.as_deref())),
                record.timestamp,
                offset as i64,
            );
        }
        let output = self.transform(&builder.build())?;
        // The SDK built these columns, so they are well-formed; the check keeps a
        // regression in the SDK from surfacing as a confusing panic below.
        let batch = output
            .records
            .batch()
            .map_err(|e| PluginError::failed(format!("malformed output columns: {e}")))?;
        let records = batch
            .iter()
            .zip(output.targets.iter().zip(&output.partitions))
            .map(|(r, (&target, &partition))| OutputRecord {
                target,
                partition,
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
        Ok(TransformResult {
            records,
            failed: output.failed,
        })
    }
}

/// An input record for [`TransformHarness::run`], built up from a null key and value,
/// no headers and timestamp 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    timestamp: i64,
}

impl TestRecord {
    /// A record with a null key and value (a tombstone), no headers, timestamp 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(key.as_ref().to_vec());
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: impl AsRef<[u8]>) -> Self {
        self.value = Some(value.as_ref().to_vec());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.as_ref().to_vec(), Some(value.as_ref().to_vec())));
        self
    }

    /// Adds a header with a null value.
    pub fn null_header(mut self, name: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.as_ref().to_vec(), None));
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }
}

/// What [`TransformHarness::run`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformResult {
    /// The output records, in the order they are written.
    pub records: Vec<OutputRecord>,
    /// The input record the call stopped at (its offset), and the plugin's error.
    pub failed: Option<(i64, PluginError)>,
}

impl TransformResult {
    /// Per output record, the offset of the input record it came from.
    pub fn source_offsets(&self) -> Vec<i64> {
        self.records.iter().map(|r| r.source_offset).collect()
    }

    /// Per output record, its output index.
    pub fn targets(&self) -> Vec<u32> {
        self.records.iter().map(|r| r.target).collect()
    }
}

/// One output record of [`TransformHarness::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// Output index: the position of its topic in `quiver.outputs`.
    pub target: u32,
    /// Chosen partition, or -1 for the output topic's partitioner.
    pub partition: i32,
    /// Offset of the input record it came from.
    pub source_offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers in order (names as UTF-8, lossily).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Timestamp.
    pub timestamp: i64,
}

impl OutputRecord {
    /// The value as text, `None` for a tombstone.
    ///
    /// # Panics
    ///
    /// If the value is not UTF-8: a test helper, where that is a failed assertion.
    pub fn value_str(&self) -> Option<&str> {
        self.value
            .as_deref()
            .map(|v| std::str::from_utf8(v).expect("the output value is not UTF-8"))
    }
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

    /// The limits of a new `key`.
    pub fn initial_limits(&self, key: &str) -> Result<Limits> {
        glue::quota_initial_limits(&self.slot, key)
    }

    /// The limits that change after a window with `usage`.
    pub fn rebalance(&self, window_ms: u32, usage: &[Usage]) -> Result<Vec<(String, Limits)>> {
        glue::quota_rebalance(&self.slot, window_ms, usage)
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
    use crate::columns::{Batch, Record};
    use crate::transform::Outputs;

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
        fn initial_limits(&mut self, key: &str) -> Result<Limits> {
            Ok(Limits {
                produce_bytes_per_second: Some(if key == "gold" { 1000 } else { 10 }),
                ..Limits::default()
            })
        }

        fn rebalance(&mut self, _window_ms: u32, usage: &[Usage]) -> Result<Vec<(String, Limits)>> {
            Ok(usage
                .iter()
                .map(|u| {
                    let limits = Limits {
                        fetch_bytes_per_second: Some(u.fetch_bytes),
                        ..Limits::default()
                    };
                    (u.key.clone(), limits)
                })
                .collect())
        }
    }

    #[test]
    fn quota_harness_uses_the_default_key() {
        let h = QuotaPolicyHarness::<Tenants>::init(&[]).unwrap();
        let client = Client {
            principal: "User:alice".into(),
            tenant: None,
            client_id: "c".into(),
            listener: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
        };
        assert_eq!(h.quota_key(&client).unwrap(), "User:alice");
        assert_eq!(
            h.initial_limits("gold").unwrap().produce_bytes_per_second,
            Some(1000)
        );
        let usage = Usage {
            key: "x".into(),
            produce_bytes: 0,
            fetch_bytes: 5,
            requests: 1,
            request_time_us: 40,
            connections: 1,
        };
        let changes = h.rebalance(1000, &[usage]).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1.fetch_bytes_per_second, Some(5));
    }

    #[derive(Default)]
    struct Upper;

    impl Transform for Upper {
        fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
            if record.value() == Some(b"fail") {
                out.forward(0, record);
                return Err(PluginError::invalid_input("told to fail"));
            }
            let value = record.value().map(|v| v.to_ascii_uppercase());
            out.write_to_partition(
                1,
                3,
                record.key(),
                value.as_deref(),
                record.headers(),
                record.timestamp(),
            );
            Ok(())
        }
    }

    #[test]
    fn transform_harness_runs_columns_and_test_records() {
        let mut b = ColumnsBuilder::new("in", 0);
        b.push(None, Some(b"abc"), &[] as &[(&str, Option<&[u8]>)], 1, 2);
        let input = b.build();
        let h = TransformHarness::<Upper>::with_topics("in", &["a", "b"], &[]).unwrap();
        let output = h.transform(&input).unwrap();
        assert_eq!(output.targets, [1]);
        assert_eq!(output.partitions, [3]);
        assert_eq!(output.records.data, b"ABC");
        assert_eq!(output.records.offsets, [2]);

        let result = h
            .run([
                TestRecord::new()
                    .key("k")
                    .value("x")
                    .null_header("h")
                    .timestamp(7),
                TestRecord::new().value("y"),
                TestRecord::new().value("fail"),
                TestRecord::new().value("z"),
            ])
            .unwrap();
        assert_eq!(
            result.records[0],
            OutputRecord {
                target: 1,
                partition: 3,
                source_offset: 0,
                key: Some(b"k".to_vec()),
                value: Some(b"X".to_vec()),
                headers: vec![("h".to_string(), None)],
                timestamp: 7,
            }
        );
        assert_eq!(result.records[1].value_str(), Some("Y"));
        assert_eq!(result.source_offsets(), [0, 1]);
        assert_eq!(result.targets(), [1, 1]);
        assert_eq!(
            result.failed,
            Some((2, PluginError::invalid_input("told to fail")))
        );
    }

    #[test]
    fn transform_harness_checks_output_indices_like_the_broker() {
        let narrow = TransformHarness::<Upper>::with_topics("in", &["a"], &[]).unwrap();
        let error = narrow.run([TestRecord::new().value("x")]).unwrap_err();
        assert!(error.to_string().contains("output 1"), "{error}");
        // Without `quiver.outputs` there is nothing to check against.
        let unchecked = TransformHarness::<Upper>::init(&[]).unwrap();
        assert!(unchecked.run([TestRecord::new().value("x")]).is_ok());
    }

    #[test]
    fn connector_harness() {
        #[derive(Default)]
        struct Mirror;
        impl Connector for Mirror {}
        let input = keyed_batch("in", &[Some(b"k")]);
        let c = ConnectorHarness::<Mirror>::init(&[]).unwrap();
        assert_eq!(c.target_topic("west", "in").as_deref(), Some("west.in"));
        assert!(c.mirror_group("west", "g"));
        assert_eq!(c.map_records("west", &input).unwrap(), input);
    }
}
