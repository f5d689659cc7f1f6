//! The `transform` kind: turn records of an input topic into records for output topics.
//!
//! Authors implement [`Transform`] and register it with `register_transform!`. The
//! plugin writes output records through [`Outputs`], which keeps one columnar builder per
//! output topic, so a transform never deals with the column layout either.
//! [`run_transform`] is the one path between the host and the plugin.

use crate::columns::{Batch, Columns, ColumnsBuilder};
use crate::config::Config;
use crate::error::{PluginError, Result};

/// A record transform.
///
/// Deterministic transforms (same input, same output) get exactly-once output: the host
/// keys output by input offset. Keep clocks and randomness out of `transform` to keep
/// that guarantee.
///
/// ```
/// use quiver_plugin_sdk::prelude::*;
///
/// /// Copies records that have a key to `<topic>.keyed`.
/// #[derive(Default)]
/// struct KeyedOnly;
///
/// impl Transform for KeyedOnly {
///     fn transform(&mut self, batch: &Batch, out: &mut Outputs) -> Result<()> {
///         let target = format!("{}.keyed", batch.topic());
///         for record in batch.iter().filter(|r| r.key().is_some()) {
///             out.topic(&target).push_record(&record);
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
    /// Configures the plugin; see [`Partitioner::init`](crate::Partitioner::init).
    fn init(&mut self, config: &Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// Transforms one input batch, writing output records to `out`. Writing nothing
    /// drops the batch.
    fn transform(&mut self, batch: &Batch<'_>, out: &mut Outputs) -> Result<()>;
}

/// Records produced for one output topic (the WIT `output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The output topic.
    pub topic: String,
    /// Its records; the batch partition is -1 unless the transform chose one.
    pub records: Columns,
}

/// Output builders, one per topic, in first-use order.
#[derive(Debug, Default)]
pub struct Outputs {
    builders: Vec<ColumnsBuilder>,
    topics: Vec<String>,
}

impl Outputs {
    /// No output yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The builder for `topic`, created on first use with partition -1 (the output
    /// topic's partitioner decides; call
    /// [`ColumnsBuilder::set_partition`] to choose one).
    pub fn topic(&mut self, topic: &str) -> &mut ColumnsBuilder {
        // Transforms write to a handful of topics, so a linear scan beats hashing.
        let index = match self.topics.iter().position(|t| t == topic) {
            Some(index) => index,
            None => {
                self.topics.push(topic.to_owned());
                self.builders.push(ColumnsBuilder::new(topic, -1));
                self.builders.len() - 1
            }
        };
        &mut self.builders[index]
    }

    /// Number of output topics written to.
    pub fn len(&self) -> usize {
        self.builders.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.builders.is_empty()
    }

    /// The finished outputs.
    pub fn into_outputs(self) -> Vec<Output> {
        self.topics
            .into_iter()
            .zip(self.builders)
            .map(|(topic, builder)| Output {
                topic,
                records: builder.build(),
            })
            .collect()
    }
}

/// Runs one `transform` call: validates the input, calls the plugin, and validates every
/// output batch before it leaves the plugin.
pub fn run_transform<T: Transform + ?Sized>(
    plugin: &mut T,
    batch: &Batch<'_>,
) -> Result<Vec<Output>> {
    batch.validate()?;
    let mut out = Outputs::new();
    plugin.transform(batch, &mut out)?;
    let outputs = out.into_outputs();
    for output in &outputs {
        if output.topic.is_empty() {
            return Err(PluginError::failed(
                "transform wrote to an empty topic name",
            ));
        }
        output.records.validate().map_err(|e| {
            PluginError::failed(format!(
                "output for topic `{}` is malformed: {e}",
                output.topic
            ))
        })?;
    }
    Ok(outputs)
}

/// Compile-time check used by `register_transform!`.
#[doc(hidden)]
pub const fn assert_transform<T: Transform + Default + Send + 'static>() {}

#[cfg(test)]
mod tests {
    use super::*;

    struct Split;

    impl Transform for Split {
        fn transform(&mut self, batch: &Batch<'_>, out: &mut Outputs) -> Result<()> {
            for record in batch {
                let topic = if record.key().is_some() {
                    "keyed"
                } else {
                    "unkeyed"
                };
                out.topic(topic).push_record(&record);
            }
            Ok(())
        }
    }

    #[test]
    fn outputs_group_by_topic_in_first_use_order() {
        let mut b = ColumnsBuilder::new("in", 0);
        b.push(None, Some(b"1"), &[] as &[(&str, Option<&[u8]>)], 1, 10);
        b.push(
            Some(b"k"),
            Some(b"2"),
            &[] as &[(&str, Option<&[u8]>)],
            2,
            11,
        );
        b.push(None, Some(b"3"), &[] as &[(&str, Option<&[u8]>)], 3, 12);
        let columns = b.build();
        let outputs = run_transform(&mut Split, &columns.batch().unwrap()).unwrap();
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[0].topic, "unkeyed");
        assert_eq!(outputs[0].records.data, b"13");
        assert_eq!(outputs[0].records.partition, -1);
        assert_eq!(outputs[1].topic, "keyed");
        assert_eq!(outputs[1].records.offsets, [11]);
    }
}
