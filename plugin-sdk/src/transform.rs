//! The `transform` kind: turn each record of an input topic into zero or more records
//! for the transform's output topics.
//!
//! Authors implement [`Transform`] — one call per input record — and register it with
//! `register_transform!`. Output records go through [`Outputs`], which builds the
//! columns the host reads, remembers which input record each came from, and drops the
//! partial output of a record that fails. [`run_transform`] walks a batch and stops at
//! the first record the plugin fails on, reporting it so the host can apply the
//! transform's error policy (a dead-letter topic, or stopping there) and carry on after
//! it. `TransformInstance` is what the generated glue and the test harness hold: the
//! plugin plus the number of outputs it was configured with, so an output index past
//! them is caught before the answer leaves the plugin. Both go through it, so a
//! transform that passes its unit tests answers the broker the same way.

use crate::columns::{Batch, Columns, ColumnsBuilder, Mark, Record};
use crate::config::Config;
use crate::error::{PluginError, Result};

/// A record transform.
///
/// `transform` is called once per input record, in offset order. Write output records
/// to [`Outputs`] by output index: output `i` is the `i`th topic the operator gave with
/// `--output` (see [`Config::outputs`] and [`Config::output_index`]). Returning an error
/// discards what was written for that record and hands the record to the error policy;
/// the output of the records before it is kept. Writing to an index past the outputs
/// fails the whole call instead: that is a bug in the plugin, not a bad record.
///
/// Deployed as deterministic (the default), a transform gets exactly-once output: keep
/// clocks, randomness and state that survives a restart out of `transform`, so the same
/// input gives the same output when the host replays it.
///
/// ```
/// use quiver_plugin_sdk::prelude::*;
///
/// /// Copies records that have a key to the first output.
/// #[derive(Default)]
/// struct KeyedOnly;
///
/// impl Transform for KeyedOnly {
///     fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
///         if record.key().is_some() {
///             out.forward(0, record);
///         }
///         Ok(())
///     }
/// }
///
/// register_transform!(KeyedOnly);
/// # fn main() {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Quiver transform",
    label = "registered as a transform here",
    note = "implement `quiver_plugin_sdk::Transform` (and `Default`) for it"
)]
pub trait Transform {
    /// Configures the plugin; see [`Partitioner::init`](crate::Partitioner::init). The
    /// configuration also holds `quiver.input` and `quiver.outputs`, set by the host.
    fn init(&mut self, config: &Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// Transforms one input record, writing its output records to `out`.
    fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()>;
}

/// What one call produced (the WIT `output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformOutput {
    /// The output records; `offsets` holds the input offset each came from.
    pub records: Columns,
    /// Per output record: its output index.
    pub targets: Vec<u32>,
    /// Per output record: its partition, or -1 for the output topic's partitioner.
    pub partitions: Vec<i32>,
    /// The input record the call stopped at, and why.
    pub failed: Option<(i64, PluginError)>,
}

/// Output records of one call, in columns.
///
/// Each write appends one record to the columns and its output index and partition to
/// two parallel lists; the offset column gets the offset of the input record being
/// transformed, which is how the host numbers output for exactly-once delivery.
#[derive(Debug)]
pub struct Outputs {
    records: ColumnsBuilder,
    targets: Vec<u32>,
    partitions: Vec<i32>,
    /// The input record being transformed.
    offset: i64,
}

impl Default for Outputs {
    fn default() -> Self {
        Self::new()
    }
}

impl Outputs {
    /// No output yet.
    pub fn new() -> Self {
        Outputs {
            records: ColumnsBuilder::new("", -1),
            targets: Vec::new(),
            partitions: Vec::new(),
            offset: -1,
        }
    }

    /// Writes a record to output `target`, placed by the output topic's partitioner.
    pub fn write<'h>(
        &mut self,
        target: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
        timestamp: i64,
    ) -> &mut Self {
        self.write_to_partition(target, -1, key, value, headers, timestamp)
    }

    /// Writes a record to a chosen partition of output `target` (-1: the output
    /// topic's partitioner decides). The host checks the partition against the output
    /// topic when it writes: one the topic does not have fails the call, and the
    /// transform's partition reports why.
    pub fn write_to_partition<'h>(
        &mut self,
        target: u32,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
        timestamp: i64,
    ) -> &mut Self {
        self.records
            .push_with(key, value, headers, timestamp, self.offset);
        self.targets.push(target);
        self.partitions.push(partition);
        self
    }

    /// Writes `record` unchanged (key, value, headers, timestamp) to output `target`,
    /// placed by the output topic's partitioner.
    pub fn forward(&mut self, target: u32, record: &Record<'_>) -> &mut Self {
        self.forward_to_partition(target, -1, record)
    }

    /// Writes `record` unchanged to a chosen partition of output `target`; see
    /// [`Outputs::write_to_partition`].
    pub fn forward_to_partition(
        &mut self,
        target: u32,
        partition: i32,
        record: &Record<'_>,
    ) -> &mut Self {
        self.write_to_partition(
            target,
            partition,
            record.key(),
            record.value(),
            record.headers(),
            record.timestamp(),
        )
    }

    /// Output records written so far.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    fn mark(&self) -> (Mark, usize) {
        (self.records.mark(), self.targets.len())
    }

    fn rollback(&mut self, (mark, len): (Mark, usize)) {
        self.records.rollback(mark);
        self.targets.truncate(len);
        self.partitions.truncate(len);
    }

    fn finish(self, failed: Option<(i64, PluginError)>) -> TransformOutput {
        TransformOutput {
            records: self.records.build(),
            targets: self.targets,
            partitions: self.partitions,
            failed,
        }
    }
}

/// Runs one `transform` call: validates the input, calls the plugin per record, and
/// stops at the first record it fails on.
///
/// Output indices are not checked here, since that needs the configured outputs: the
/// generated glue and the test harness check them after this returns.
pub fn run_transform<T: Transform + ?Sized>(
    plugin: &mut T,
    batch: &Batch<'_>,
) -> Result<TransformOutput> {
    batch.validate()?;
    let mut out = Outputs::new();
    // Most transforms write about one record per input record (mask, repartition,
    // split), so room for the input's size saves the regrowth of every column.
    out.records
        .reserve(batch.len(), batch.header_total(), batch.data.len());
    out.targets.reserve(batch.len());
    out.partitions.reserve(batch.len());
    for record in batch.iter() {
        let mark = out.mark();
        out.offset = record.offset();
        if let Err(error) = plugin.transform(&record, &mut out) {
            out.rollback(mark);
            return Ok(out.finish(Some((record.offset(), error))));
        }
    }
    Ok(out.finish(None))
}

/// Compile-time check used by `register_transform!`.
#[doc(hidden)]
pub const fn assert_transform<T: Transform + Default + Send + 'static>() {}

/// One configured transform, as the generated glue and the test harness hold it.
///
/// Besides the plugin it keeps the number of output topics from `quiver.outputs`, so
/// every answer is checked against them before it leaves the plugin: an output index
/// past the outputs is a bug in the plugin, reported as such here rather than as a
/// rejected answer in the broker. A configuration without `quiver.outputs` (a unit test
/// that does not name topics) leaves indices unchecked.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct TransformInstance<T> {
    plugin: T,
    outputs: Option<usize>,
}

impl<T: Transform> TransformInstance<T> {
    /// Runs the plugin's `init` and remembers the number of outputs.
    pub(crate) fn init(&mut self, config: &Config) -> Result<()> {
        self.outputs = config.get("quiver.outputs").map(|_| config.outputs().len());
        self.plugin.init(config)
    }

    /// Runs one `transform` call and checks the output indices.
    pub(crate) fn transform(&mut self, batch: &Batch<'_>) -> Result<TransformOutput> {
        let output = run_transform(&mut self.plugin, batch)?;
        if let Some(outputs) = self.outputs {
            check_targets(&output, outputs)?;
        }
        Ok(output)
    }
}

/// Fails the call when an output record names an output index the transform does not
/// have, naming the input record that wrote it.
fn check_targets(output: &TransformOutput, outputs: usize) -> Result<()> {
    let bad = output
        .targets
        .iter()
        .position(|&target| target as usize >= outputs);
    match bad {
        None => Ok(()),
        Some(i) => Err(PluginError::failed(format!(
            "the record at offset {} was written to output {}, but the transform has {} \
             output(s)",
            output.records.offsets[i], output.targets[i], outputs
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Split;

    impl Transform for Split {
        fn transform(&mut self, record: &Record<'_>, out: &mut Outputs) -> Result<()> {
            if record.value() == Some(b"bad") {
                out.forward(0, record);
                return Err(PluginError::invalid_input("bad value"));
            }
            let target = u32::from(record.key().is_none());
            out.forward(target, record);
            Ok(())
        }
    }

    fn batch(values: &[(&[u8], Option<&[u8]>)]) -> Columns {
        let mut b = ColumnsBuilder::new("in", 0);
        for (i, (value, key)) in values.iter().enumerate() {
            b.push(
                *key,
                Some(*value),
                &[("h", Some(b"x" as &[u8]))],
                100 + i as i64,
                10 + i as i64,
            );
        }
        b.build()
    }

    #[test]
    fn outputs_carry_target_and_source_offset() {
        let input = batch(&[(b"1", Some(b"k")), (b"2", None)]);
        let out = run_transform(&mut Split, &input.batch().unwrap()).unwrap();
        assert_eq!(out.targets, [0, 1]);
        assert_eq!(out.partitions, [-1, -1]);
        assert_eq!(out.records.offsets, [10, 11]);
        assert_eq!(out.records.timestamps, [100, 101]);
        let records: Vec<_> = out.records.batch().unwrap().iter().collect();
        assert_eq!(records[0].key(), Some(&b"k"[..]));
        assert_eq!(records[1].header("h"), Some(Some(&b"x"[..])));
        assert!(out.failed.is_none());
    }

    #[test]
    fn a_failing_record_keeps_the_output_before_it_and_nothing_of_its_own() {
        let input = batch(&[(b"1", None), (b"bad", None), (b"3", None)]);
        let out = run_transform(&mut Split, &input.batch().unwrap()).unwrap();
        assert_eq!(out.records.offsets, [10]);
        assert_eq!(out.records.data, b"1hx");
        let (offset, error) = out.failed.unwrap();
        assert_eq!(offset, 11);
        assert_eq!(error, PluginError::invalid_input("bad value"));
    }

    #[test]
    fn targets_past_the_outputs_are_caught() {
        let input = batch(&[(b"1", Some(b"k")), (b"2", None)]);
        let out = run_transform(&mut Split, &input.batch().unwrap()).unwrap();
        assert!(check_targets(&out, 2).is_ok());
        assert_eq!(
            check_targets(&out, 1).unwrap_err(),
            PluginError::failed(
                "the record at offset 11 was written to output 1, but the transform has 1 output(s)"
            )
        );
    }

    #[test]
    fn an_instance_checks_targets_against_the_configured_outputs() {
        let input = batch(&[(b"1", None)]);
        let mut instance = TransformInstance {
            plugin: Split,
            outputs: None,
        };
        // Without `quiver.outputs` nothing is known to check against.
        instance.init(&Config::default()).unwrap();
        assert!(instance.transform(&input.batch().unwrap()).is_ok());
        instance
            .init(&Config::from_pairs([("quiver.outputs", "a")]))
            .unwrap();
        assert!(instance.transform(&input.batch().unwrap()).is_err());
        instance
            .init(&Config::from_pairs([("quiver.outputs", "a,b")]))
            .unwrap();
        assert_eq!(
            instance.transform(&input.batch().unwrap()).unwrap().targets,
            [1]
        );
    }

    #[test]
    fn malformed_input_fails_the_call() {
        let mut input = batch(&[(b"1", None)]);
        input.ends[1] = 99;
        let error = run_transform(&mut Split, &input.view()).unwrap_err();
        assert!(
            matches!(&error, PluginError::InvalidInput(m) if m.starts_with("malformed record batch")),
            "{error}"
        );
    }
}
