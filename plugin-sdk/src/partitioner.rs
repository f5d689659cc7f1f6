//! The `partitioner` kind: choose a partition for every record that arrives without one.
//!
//! Authors implement [`Partitioner`] (or write one `#[partitioner]` function, which the
//! macro turns into an implementation). [`run_partition`] is the one code path between
//! the host's call and the plugin: the WASM glue, the native C ABI glue and the test
//! harness all go through it, so a plugin that passes its unit tests behaves the same
//! inside the broker.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::columns::Batch;
use crate::config::Config;
use crate::error::{PluginError, Result};

/// A partitioner with batch-level control.
///
/// One value lives per plugin instance: it is created with `Default`, configured by
/// [`Partitioner::init`], then called for every batch, so it may keep state (counters,
/// parsed configuration) across batches.
///
/// ```
/// use quiver_plugin_sdk::prelude::*;
///
/// /// Sends every record to the partition named by its `p` header.
/// #[derive(Default)]
/// struct ByHeader;
///
/// impl Partitioner for ByHeader {
///     fn partition_batch(&mut self, batch: &Batch, partitions: u32, out: &mut Vec<u32>) -> Result<()> {
///         for record in batch {
///             let p = record
///                 .header("p")
///                 .flatten()
///                 .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
///                 .ok_or_else(|| PluginError::invalid_input("record has no numeric `p` header"))?;
///             out.push(p % partitions);
///         }
///         Ok(())
///     }
/// }
///
/// register_partitioner!(ByHeader);
/// # fn main() {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Quiver partitioner",
    label = "registered as a partitioner here",
    note = "implement `quiver_plugin_sdk::Partitioner` (and `Default`) for it, or annotate a function with `#[partitioner]`"
)]
pub trait Partitioner {
    /// Configures the plugin from its deploy-time configuration. An error refuses the
    /// deploy; return [`PluginError::InvalidConfig`] (the `?` on a
    /// [`ConfigError`](crate::ConfigError) does) with a message naming the key.
    fn init(&mut self, config: &Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// Pushes one partition below `partitions` onto `out` for every record of `batch`, in
    /// order. `out` arrives empty. `partitions` is at least 1.
    fn partition_batch(
        &mut self,
        batch: &Batch<'_>,
        partitions: u32,
        out: &mut Vec<u32>,
    ) -> Result<()>;
}

/// Round-robin cursors, one per topic, for records without a key.
///
/// Broker-side partitioners see null-keyed records from many producers at once, so they
/// spread them evenly rather than imitating a client's sticky batching. Fetch the
/// topic's cursor once per batch:
///
/// ```
/// use quiver_plugin_sdk::partitioner::RoundRobin;
///
/// let mut round_robin = RoundRobin::default();
/// let cursor = round_robin.cursor("orders");
/// assert_eq!([cursor.next(3), cursor.next(3), cursor.next(3), cursor.next(3)], [0, 1, 2, 0]);
/// assert_eq!(round_robin.cursor("orders").next(3), 1, "the cursor persists");
/// assert_eq!(round_robin.cursor("clicks").next(3), 0, "each topic has its own");
/// ```
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    /// Topic name -> index into `cursors`. Hashed with FNV-1a rather than SipHash: a
    /// batch looks its topic up once per call, and topic names are the broker's own.
    index: HashMap<String, usize, BuildHasherDefault<Fnv1a>>,
    cursors: Vec<Cursor>,
}

impl RoundRobin {
    /// The cursor of `topic` (allocates the topic name only on first use).
    pub fn cursor(&mut self, topic: &str) -> &mut Cursor {
        let i = match self.index.get(topic) {
            Some(&i) => i,
            None => {
                self.cursors.push(Cursor::default());
                self.index.insert(topic.to_owned(), self.cursors.len() - 1);
                self.cursors.len() - 1
            }
        };
        &mut self.cursors[i]
    }
}

/// 64-bit FNV-1a, for the short, trusted keys of [`RoundRobin`].
#[derive(Debug, Clone, Copy)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One topic's round-robin position; see [`RoundRobin`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor(u32);

impl Cursor {
    /// The next partition below `partitions`, advancing the cursor.
    ///
    /// # Panics
    ///
    /// If `partitions` is 0 (the SDK never passes 0 to a partitioner).
    pub fn next(&mut self, partitions: u32) -> u32 {
        let partition = self.0 % partitions;
        self.0 = self.0.wrapping_add(1);
        partition
    }
}

/// Runs one `partition` call on an initialised plugin: validates the input, calls the
/// plugin, and checks its answer (one partition per record, each in range) so a buggy
/// plugin fails with a precise message rather than misplacing records.
pub fn run_partition<T: Partitioner + ?Sized>(
    plugin: &mut T,
    batch: &Batch<'_>,
    partitions: u32,
    out: &mut Vec<u32>,
) -> Result<()> {
    if partitions == 0 {
        return Err(PluginError::invalid_input(
            "the topic has 0 partitions; there is nothing to choose from",
        ));
    }
    batch.validate()?;
    out.clear();
    // Exact: the WASM glue hands `out` to the host as a boxed slice, which would
    // reallocate a larger capacity away.
    out.reserve_exact(batch.len());
    plugin.partition_batch(batch, partitions, out)?;
    if out.len() != batch.len() {
        return Err(PluginError::failed(format!(
            "partitioner returned {} partitions for {} records",
            out.len(),
            batch.len()
        )));
    }
    if let Some((index, &p)) = out.iter().enumerate().find(|(_, &p)| p >= partitions) {
        return Err(PluginError::failed(format!(
            "partitioner chose partition {p} for record {index}, but the topic has {partitions} partitions"
        )));
    }
    Ok(())
}

/// Compile-time check used by `register_partitioner!`: fails to compile, with the
/// trait's diagnostic, when `T` is not a registrable partitioner.
#[doc(hidden)]
pub const fn assert_partitioner<T: Partitioner + Default + Send + 'static>() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::ColumnsBuilder;

    struct Fixed(Vec<u32>);

    impl Partitioner for Fixed {
        fn partition_batch(&mut self, _: &Batch<'_>, _: u32, out: &mut Vec<u32>) -> Result<()> {
            out.extend_from_slice(&self.0);
            Ok(())
        }
    }

    fn two_records() -> crate::columns::Columns {
        let mut b = ColumnsBuilder::new("t", -1);
        b.push(Some(b"a"), None, &[] as &[(&str, Option<&[u8]>)], 0, -1);
        b.push(Some(b"b"), None, &[] as &[(&str, Option<&[u8]>)], 0, -1);
        b.build()
    }

    #[test]
    fn checks_count_and_range() {
        let columns = two_records();
        let batch = columns.batch().unwrap();
        let mut out = vec![9, 9, 9];
        run_partition(&mut Fixed(vec![0, 1]), &batch, 2, &mut out).unwrap();
        assert_eq!(out, [0, 1], "out is cleared before the call");

        let err = run_partition(&mut Fixed(vec![0]), &batch, 2, &mut out).unwrap_err();
        assert_eq!(
            err,
            PluginError::failed("partitioner returned 1 partitions for 2 records")
        );
        let err = run_partition(&mut Fixed(vec![0, 2]), &batch, 2, &mut out).unwrap_err();
        assert_eq!(
            err.message(),
            "partitioner chose partition 2 for record 1, but the topic has 2 partitions"
        );
        let err = run_partition(&mut Fixed(vec![0, 0]), &batch, 0, &mut out).unwrap_err();
        assert!(matches!(err, PluginError::InvalidInput(_)));
    }

    #[test]
    fn malformed_input_is_invalid_input() {
        let mut columns = two_records();
        columns.data.push(b'x');
        let err =
            run_partition(&mut Fixed(vec![0, 0]), &columns.view(), 2, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.contains("`data` holds 3 bytes")),
            "{err}"
        );
    }
}
