//! The columnar record batch, owned and borrowed.
//!
//! This module owns the one Rust representation of the WIT `record-batch`, shared by the
//! guest SDK and the host: [`Columns`] mirrors the WIT record field for field, so the
//! generated bindings convert into it by moving vectors, never by copying bytes.
//! [`Columns::validate`] is the single definition of a well-formed batch; the host runs
//! it on everything a plugin returns, and the SDK runs it on everything the host sends.
//!
//! # Design
//!
//! Records cross the sandbox boundary as a handful of flat buffers because a list of
//! records with nested lists costs a guest allocation per element. Plugin code never sees
//! that layout: [`Batch`] is a borrowed view over the columns and [`Batch::iter`] yields
//! [`Record`] views. The iterator keeps running cursors into the key, value and header
//! buffers, so walking a batch allocates nothing and each record costs a few additions.
//!
//! ```text
//!  key_lengths:  [  3,  -1,   2 ]          -1 = null
//!  keys:         [ a b c | d e ]           record 0 owns "abc", record 1 none, record 2 "de"
//!  header_counts:[  1,   0,   2 ]          record 0 owns header 0, record 2 headers 1..3
//! ```
//!
//! This module has no dependencies beyond `std` and compiles on every target, so the host
//! uses it with the SDK's default features off.
//!
//! # Examples
//!
//! ```
//! use quiver_plugin_sdk::columns::ColumnsBuilder;
//!
//! let mut builder = ColumnsBuilder::new("orders", -1);
//! builder.push(Some(b"alice"), Some(b"{\"total\":3}"), &[("tier", Some(b"gold"))], 1_700_000_000_000, -1);
//! builder.push(None, None, &[] as &[(&str, Option<&[u8]>)], 1_700_000_000_001, -1);
//! let columns = builder.build();
//! columns.validate().unwrap();
//!
//! let batch = columns.batch().unwrap();
//! let keys: Vec<_> = batch.iter().map(|record| record.key()).collect();
//! assert_eq!(keys, [Some(&b"alice"[..]), None]);
//! assert_eq!(batch.iter().next().unwrap().header("tier"), Some(Some(&b"gold"[..])));
//! ```

use std::fmt;

/// Why a batch's columns do not describe a well-formed batch.
///
/// Every variant names the column at fault so a plugin author (or the operator reading
/// `quiver plugin describe`) can tell which part of a returned batch was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnsError {
    /// A per-record (or per-header) column has a different number of entries than the
    /// batch has records (or headers).
    #[error("column `{column}` has {actual} entries, expected {expected}")]
    LengthMismatch {
        /// The column with the wrong number of entries.
        column: &'static str,
        /// Entries implied by the other columns.
        expected: usize,
        /// Entries present.
        actual: usize,
    },
    /// A length column holds a negative value other than -1 (null).
    #[error("column `{column}` entry {index} is {length}; lengths are -1 (null) or non-negative")]
    InvalidLength {
        /// The length column.
        column: &'static str,
        /// The entry's index.
        index: usize,
        /// The offending value.
        length: i64,
    },
    /// The lengths of a column do not add up to the size of its byte buffer.
    #[error("lengths in `{column}` add up to {sum} bytes but the buffer holds {buffer} bytes")]
    BufferSizeMismatch {
        /// The length column.
        column: &'static str,
        /// The sum of its non-null lengths.
        sum: u64,
        /// The size of the matching byte buffer.
        buffer: usize,
    },
    /// The batch-level partition is below -1.
    #[error("partition {0} is invalid; it is -1 (unassigned) or a partition number")]
    InvalidPartition(i32),
}

/// An owned record batch, field for field the WIT `record-batch`.
///
/// A length of -1 means null. Record `i`'s key is the `key_lengths[i]` bytes of `keys`
/// that follow the keys of records `0..i`; values likewise. Record `i` owns
/// `header_counts[i]` consecutive headers of the flattened header columns.
/// Build one with [`ColumnsBuilder`]; read one through [`Columns::batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    /// Topic the records belong to (or are produced to).
    pub topic: String,
    /// Partition of the records, or -1 when no partition is chosen yet.
    pub partition: i32,
    /// Offset of each record, or -1 for records not yet appended.
    pub offsets: Vec<i64>,
    /// Timestamp of each record, milliseconds since the Unix epoch.
    pub timestamps: Vec<i64>,
    /// Length of each record's key, -1 for a null key.
    pub key_lengths: Vec<i32>,
    /// Every non-null key, back to back.
    pub keys: Vec<u8>,
    /// Length of each record's value, -1 for a null value (a tombstone).
    pub value_lengths: Vec<i32>,
    /// Every non-null value, back to back.
    pub values: Vec<u8>,
    /// Number of headers each record owns.
    pub header_counts: Vec<u32>,
    /// Length of each header's key (header keys are never null).
    pub header_key_lengths: Vec<u32>,
    /// Every header key, back to back.
    pub header_keys: Vec<u8>,
    /// Length of each header's value, -1 for a null value.
    pub header_value_lengths: Vec<i32>,
    /// Every non-null header value, back to back.
    pub header_values: Vec<u8>,
}

impl Columns {
    /// An empty batch for `topic`.
    pub fn empty(topic: impl Into<String>, partition: i32) -> Self {
        Columns {
            topic: topic.into(),
            partition,
            ..Columns::default()
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Checks that the columns describe a well-formed batch: every per-record column has
    /// one entry per record, every per-header column one per header, lengths are -1 or
    /// non-negative, and the lengths of each buffer add up to its size.
    pub fn validate(&self) -> Result<(), ColumnsError> {
        self.view().validate()
    }

    /// A borrowed, validated view of the batch.
    pub fn batch(&self) -> Result<Batch<'_>, ColumnsError> {
        let batch = self.view();
        batch.validate()?;
        Ok(batch)
    }

    /// The view without validation: only used where the caller validates next.
    pub(crate) fn view(&self) -> Batch<'_> {
        Batch {
            topic: self.topic.as_bytes(),
            partition: self.partition,
            offsets: &self.offsets,
            timestamps: &self.timestamps,
            key_lengths: &self.key_lengths,
            keys: &self.keys,
            value_lengths: &self.value_lengths,
            values: &self.values,
            header_counts: &self.header_counts,
            header_key_lengths: &self.header_key_lengths,
            header_keys: &self.header_keys,
            header_value_lengths: &self.header_value_lengths,
            header_values: &self.header_values,
        }
    }
}

/// Builds [`Columns`] one record at a time.
///
/// ```
/// use quiver_plugin_sdk::columns::ColumnsBuilder;
///
/// let mut builder = ColumnsBuilder::new("clicks", -1);
/// builder.push(Some(b"user-1"), Some(b"/home"), &[("trace", None)], 10, -1);
/// let columns = builder.build();
/// assert_eq!(columns.len(), 1);
/// assert_eq!(columns.header_value_lengths, [-1]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ColumnsBuilder {
    columns: Columns,
}

impl ColumnsBuilder {
    /// A builder for records of `topic`, with the batch-level `partition` (-1 for none).
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        ColumnsBuilder {
            columns: Columns::empty(topic, partition),
        }
    }

    /// Like [`ColumnsBuilder::new`], with room for `records` records.
    pub fn with_capacity(topic: impl Into<String>, partition: i32, records: usize) -> Self {
        let mut builder = Self::new(topic, partition);
        let c = &mut builder.columns;
        c.offsets.reserve(records);
        c.timestamps.reserve(records);
        c.key_lengths.reserve(records);
        c.value_lengths.reserve(records);
        c.header_counts.reserve(records);
        builder
    }

    /// Sets the batch-level partition.
    pub fn set_partition(&mut self, partition: i32) -> &mut Self {
        self.columns.partition = partition;
        self
    }

    /// Appends one record.
    ///
    /// # Panics
    ///
    /// If a key, value or header is longer than `i32::MAX` bytes, or a record has more
    /// than `u32::MAX` headers; the wire format cannot describe them (Kafka itself caps
    /// records far below that).
    pub fn push<H: AsRef<[u8]>>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(H, Option<&[u8]>)],
        timestamp: i64,
        offset: i64,
    ) -> &mut Self {
        let c = &mut self.columns;
        c.offsets.push(offset);
        c.timestamps.push(timestamp);
        c.key_lengths.push(push_nullable(&mut c.keys, key, "key"));
        c.value_lengths
            .push(push_nullable(&mut c.values, value, "value"));
        c.header_counts
            .push(u32::try_from(headers.len()).expect("a record has at most u32::MAX headers"));
        for (name, value) in headers {
            let name = name.as_ref();
            c.header_key_lengths
                .push(u32::try_from(name.len()).expect("a header key is at most u32::MAX bytes"));
            c.header_keys.extend_from_slice(name);
            c.header_value_lengths.push(push_nullable(
                &mut c.header_values,
                *value,
                "header value",
            ));
        }
        self
    }

    /// Appends a copy of `record` (its key, value, headers, timestamp and offset), e.g.
    /// to forward a record unchanged from a transform.
    pub fn push_record(&mut self, record: &Record<'_>) -> &mut Self {
        let c = &mut self.columns;
        c.offsets.push(record.offset());
        c.timestamps.push(record.timestamp());
        c.key_lengths.push(record.key_length);
        if let Some(key) = record.key() {
            c.keys.extend_from_slice(key);
        }
        c.value_lengths.push(record.value_length);
        if let Some(value) = record.value() {
            c.values.extend_from_slice(value);
        }
        c.header_counts.push(record.header_key_lengths.len() as u32);
        c.header_key_lengths
            .extend_from_slice(record.header_key_lengths);
        c.header_keys.extend_from_slice(record.header_keys);
        c.header_value_lengths
            .extend_from_slice(record.header_value_lengths);
        c.header_values.extend_from_slice(record.header_values);
        self
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The finished columns.
    pub fn build(self) -> Columns {
        self.columns
    }
}

fn push_nullable(buffer: &mut Vec<u8>, bytes: Option<&[u8]>, what: &str) -> i32 {
    match bytes {
        None => -1,
        Some(bytes) => {
            let len = i32::try_from(bytes.len())
                .unwrap_or_else(|_| panic!("a record {what} is at most i32::MAX bytes"));
            buffer.extend_from_slice(bytes);
            len
        }
    }
}

/// A borrowed view of a batch's columns.
///
/// Obtained from [`Columns::batch`] (validated) or, across the native plugin ABI, from
/// [`crate::abi::QuiverBatch::as_batch`]. Iterating yields [`Record`] views without
/// allocating.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub(crate) topic: &'a [u8],
    pub(crate) partition: i32,
    pub(crate) offsets: &'a [i64],
    pub(crate) timestamps: &'a [i64],
    pub(crate) key_lengths: &'a [i32],
    pub(crate) keys: &'a [u8],
    pub(crate) value_lengths: &'a [i32],
    pub(crate) values: &'a [u8],
    pub(crate) header_counts: &'a [u32],
    pub(crate) header_key_lengths: &'a [u32],
    pub(crate) header_keys: &'a [u8],
    pub(crate) header_value_lengths: &'a [i32],
    pub(crate) header_values: &'a [u8],
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("topic", &String::from_utf8_lossy(self.topic))
            .field("partition", &self.partition)
            .field("records", &self.len())
            .field("headers", &self.header_total())
            .finish()
    }
}

impl<'a> Batch<'a> {
    /// The topic the records belong to (or are produced to). Topic names are ASCII; a
    /// name that is not UTF-8 (only possible through a misbehaving native host) reads as
    /// the empty string.
    pub fn topic(&self) -> &'a str {
        std::str::from_utf8(self.topic).unwrap_or("")
    }

    /// The batch-level partition, -1 when none is chosen yet.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Number of headers over all records.
    pub fn header_total(&self) -> usize {
        self.header_key_lengths.len()
    }

    /// The records, in order.
    pub fn iter(&self) -> Records<'a> {
        Records {
            batch: *self,
            index: 0,
            key_at: 0,
            value_at: 0,
            header_at: 0,
            header_key_at: 0,
            header_value_at: 0,
        }
    }

    /// An owned copy of the columns.
    pub fn to_columns(&self) -> Columns {
        Columns {
            topic: self.topic().to_owned(),
            partition: self.partition,
            offsets: self.offsets.to_vec(),
            timestamps: self.timestamps.to_vec(),
            key_lengths: self.key_lengths.to_vec(),
            keys: self.keys.to_vec(),
            value_lengths: self.value_lengths.to_vec(),
            values: self.values.to_vec(),
            header_counts: self.header_counts.to_vec(),
            header_key_lengths: self.header_key_lengths.to_vec(),
            header_keys: self.header_keys.to_vec(),
            header_value_lengths: self.header_value_lengths.to_vec(),
            header_values: self.header_values.to_vec(),
        }
    }

    /// Checks the same invariants as [`Columns::validate`].
    pub fn validate(&self) -> Result<(), ColumnsError> {
        if self.partition < -1 {
            return Err(ColumnsError::InvalidPartition(self.partition));
        }
        let records = self.offsets.len();
        expect_len("timestamps", records, self.timestamps.len())?;
        expect_len("key_lengths", records, self.key_lengths.len())?;
        expect_len("value_lengths", records, self.value_lengths.len())?;
        expect_len("header_counts", records, self.header_counts.len())?;
        check_nullable_lengths("key_lengths", self.key_lengths, self.keys.len())?;
        check_nullable_lengths("value_lengths", self.value_lengths, self.values.len())?;
        let headers: u64 = self.header_counts.iter().map(|&n| u64::from(n)).sum();
        // A count that does not fit in usize cannot match any column length.
        let headers = usize::try_from(headers).unwrap_or(usize::MAX);
        expect_len("header_key_lengths", headers, self.header_key_lengths.len())?;
        expect_len(
            "header_value_lengths",
            headers,
            self.header_value_lengths.len(),
        )?;
        let key_bytes: u64 = self.header_key_lengths.iter().map(|&n| u64::from(n)).sum();
        if key_bytes != self.header_keys.len() as u64 {
            return Err(ColumnsError::BufferSizeMismatch {
                column: "header_key_lengths",
                sum: key_bytes,
                buffer: self.header_keys.len(),
            });
        }
        check_nullable_lengths(
            "header_value_lengths",
            self.header_value_lengths,
            self.header_values.len(),
        )
    }
}

fn expect_len(column: &'static str, expected: usize, actual: usize) -> Result<(), ColumnsError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ColumnsError::LengthMismatch {
            column,
            expected,
            actual,
        })
    }
}

fn check_nullable_lengths(
    column: &'static str,
    lengths: &[i32],
    buffer: usize,
) -> Result<(), ColumnsError> {
    let mut sum: u64 = 0;
    for (index, &length) in lengths.iter().enumerate() {
        match length {
            -1 => {}
            0.. => sum += length as u64,
            _ => {
                return Err(ColumnsError::InvalidLength {
                    column,
                    index,
                    length: i64::from(length),
                })
            }
        }
    }
    if sum == buffer as u64 {
        Ok(())
    } else {
        Err(ColumnsError::BufferSizeMismatch {
            column,
            sum,
            buffer,
        })
    }
}

impl<'a> IntoIterator for &Batch<'a> {
    type Item = Record<'a>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for Batch<'a> {
    type Item = Record<'a>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

/// Iterator over the records of a [`Batch`].
///
/// Keeps one cursor per buffer, so each step is a few additions and slice splits. On a
/// batch that fails [`Batch::validate`] (only reachable through the unsafe native ABI)
/// out-of-range slices read as empty rather than panicking.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    batch: Batch<'a>,
    index: usize,
    key_at: usize,
    value_at: usize,
    header_at: usize,
    header_key_at: usize,
    header_value_at: usize,
}

/// Splits `len` bytes (or none, for -1) off `buffer` at `*at`, advancing the cursor.
#[inline]
fn take_nullable<'a>(buffer: &'a [u8], at: &mut usize, len: i32) -> Option<&'a [u8]> {
    if len < 0 {
        return None;
    }
    let start = *at;
    let end = start.saturating_add(len as usize);
    *at = end;
    Some(buffer.get(start..end).unwrap_or_default())
}

#[inline]
fn sub<T>(slice: &[T], start: usize, end: usize) -> &[T] {
    slice.get(start..end).unwrap_or_default()
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    #[inline]
    fn next(&mut self) -> Option<Record<'a>> {
        let b = &self.batch;
        let i = self.index;
        let offset = *b.offsets.get(i)?;
        self.index += 1;
        let timestamp = b.timestamps.get(i).copied().unwrap_or(-1);
        let key_length = b.key_lengths.get(i).copied().unwrap_or(-1);
        let value_length = b.value_lengths.get(i).copied().unwrap_or(-1);
        let key = take_nullable(b.keys, &mut self.key_at, key_length);
        let value = take_nullable(b.values, &mut self.value_at, value_length);

        let count = b.header_counts.get(i).copied().unwrap_or(0) as usize;
        let first = self.header_at;
        let end = first.saturating_add(count);
        self.header_at = end;
        let header_key_lengths = sub(b.header_key_lengths, first, end);
        let header_value_lengths = sub(b.header_value_lengths, first, end);
        // Saturating: on a batch that failed validation the sums may be nonsense.
        let key_bytes = header_key_lengths
            .iter()
            .fold(0usize, |sum, &n| sum.saturating_add(n as usize));
        let value_bytes = header_value_lengths
            .iter()
            .fold(0usize, |sum, &n| sum.saturating_add(n.max(0) as usize));
        let header_keys = sub(
            b.header_keys,
            self.header_key_at,
            self.header_key_at.saturating_add(key_bytes),
        );
        let header_values = sub(
            b.header_values,
            self.header_value_at,
            self.header_value_at.saturating_add(value_bytes),
        );
        self.header_key_at = self.header_key_at.saturating_add(key_bytes);
        self.header_value_at = self.header_value_at.saturating_add(value_bytes);

        Some(Record {
            offset,
            timestamp,
            key_length,
            value_length,
            key,
            value,
            header_key_lengths,
            header_value_lengths,
            header_keys,
            header_values,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batch.len() - self.index;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Records<'_> {}

impl std::iter::FusedIterator for Records<'_> {}

/// A borrowed view of one record of a [`Batch`].
#[derive(Clone, Copy)]
pub struct Record<'a> {
    offset: i64,
    timestamp: i64,
    key_length: i32,
    value_length: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    header_key_lengths: &'a [u32],
    header_value_lengths: &'a [i32],
    header_keys: &'a [u8],
    header_values: &'a [u8],
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn lossy(bytes: Option<&[u8]>) -> Option<std::borrow::Cow<'_, str>> {
            bytes.map(String::from_utf8_lossy)
        }
        f.debug_struct("Record")
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &lossy(self.key))
            .field("value", &lossy(self.value))
            .field(
                "headers",
                &self
                    .headers()
                    .map(|(k, v)| (String::from_utf8_lossy(k), lossy(v)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<'a> Record<'a> {
    /// The key, `None` for a null key.
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value, `None` for a null value (a tombstone).
    #[inline]
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// Milliseconds since the Unix epoch.
    #[inline]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The record's offset, -1 for a record not yet appended.
    #[inline]
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Number of headers.
    pub fn header_count(&self) -> usize {
        self.header_key_lengths.len()
    }

    /// The headers in order, each a key and a value (`None` for a null value).
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            key_lengths: self.header_key_lengths,
            value_lengths: self.header_value_lengths,
            keys: self.header_keys,
            values: self.header_values,
        }
    }

    /// The value of the header named `name`: `None` when the record has no such header,
    /// `Some(None)` when its value is null. Kafka allows repeated header keys; like the
    /// Java client's `Headers.lastHeader`, the last one wins.
    pub fn header(&self, name: impl AsRef<[u8]>) -> Option<Option<&'a [u8]>> {
        let name = name.as_ref();
        self.headers()
            .filter(|(key, _)| *key == name)
            .last()
            .map(|(_, value)| value)
    }
}

/// Iterator over a record's headers; see [`Record::headers`].
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    key_lengths: &'a [u32],
    value_lengths: &'a [i32],
    keys: &'a [u8],
    values: &'a [u8],
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let (&key_len, key_lengths) = self.key_lengths.split_first()?;
        let (&value_len, value_lengths) = self.value_lengths.split_first().unwrap_or((&-1, &[]));
        self.key_lengths = key_lengths;
        self.value_lengths = value_lengths;
        let (key, keys) = self
            .keys
            .split_at_checked(key_len as usize)
            .unwrap_or((self.keys, &[]));
        self.keys = keys;
        let value = if value_len < 0 {
            None
        } else {
            let (value, values) = self
                .values
                .split_at_checked(value_len as usize)
                .unwrap_or((self.values, &[]));
            self.values = values;
            Some(value)
        };
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.key_lengths.len(), Some(self.key_lengths.len()))
    }
}

impl ExactSizeIterator for Headers<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Columns {
        let mut b = ColumnsBuilder::new("t", -1);
        b.push(
            Some(b"k0"),
            Some(b"v0"),
            &[("a", Some(&b"1"[..])), ("b", None)],
            100,
            7,
        );
        b.push(None, None, &[] as &[(&str, Option<&[u8]>)], 101, 8);
        b.push(
            Some(b""),
            Some(b"v2"),
            &[("a", Some(&b"x"[..])), ("a", Some(&b"y"[..]))],
            102,
            9,
        );
        b.build()
    }

    #[test]
    fn builder_lays_out_columns_as_the_wit_record_describes() {
        let c = sample();
        assert_eq!(c.key_lengths, [2, -1, 0]);
        assert_eq!(c.keys, b"k0");
        assert_eq!(c.value_lengths, [2, -1, 2]);
        assert_eq!(c.values, b"v0v2");
        assert_eq!(c.header_counts, [2, 0, 2]);
        assert_eq!(c.header_key_lengths, [1, 1, 1, 1]);
        assert_eq!(c.header_keys, b"abaa");
        assert_eq!(c.header_value_lengths, [1, -1, 1, 1]);
        assert_eq!(c.header_values, b"1xy");
        c.validate().unwrap();
    }

    #[test]
    fn views_read_back_every_field() {
        let c = sample();
        let batch = c.batch().unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.topic(), "t");
        assert_eq!(batch.header_total(), 4);
        let records: Vec<_> = batch.iter().collect();
        assert_eq!(records[0].key(), Some(&b"k0"[..]));
        assert_eq!(records[0].header("b"), Some(None));
        assert_eq!(records[0].header("zz"), None);
        assert_eq!(records[1].key(), None);
        assert_eq!(records[1].value(), None);
        assert_eq!(records[1].headers().count(), 0);
        assert_eq!(records[2].key(), Some(&b""[..]));
        assert_eq!(
            records[2].header("a"),
            Some(Some(&b"y"[..])),
            "last header wins"
        );
        assert_eq!(records[2].timestamp(), 102);
        assert_eq!(records[2].offset(), 9);
        assert_eq!(batch.to_columns(), c);
    }

    #[test]
    fn validate_names_the_faulty_column() {
        let mut c = sample();
        c.timestamps.pop();
        assert_eq!(
            c.validate(),
            Err(ColumnsError::LengthMismatch {
                column: "timestamps",
                expected: 3,
                actual: 2
            })
        );

        let mut c = sample();
        c.keys.push(0);
        assert_eq!(
            c.validate(),
            Err(ColumnsError::BufferSizeMismatch {
                column: "key_lengths",
                sum: 2,
                buffer: 3
            })
        );

        let mut c = sample();
        c.value_lengths[1] = -2;
        assert_eq!(
            c.validate(),
            Err(ColumnsError::InvalidLength {
                column: "value_lengths",
                index: 1,
                length: -2
            })
        );

        let mut c = sample();
        c.header_counts[1] = 1;
        assert!(matches!(
            c.validate(),
            Err(ColumnsError::LengthMismatch {
                column: "header_key_lengths",
                ..
            })
        ));

        let mut c = sample();
        c.header_keys.pop();
        assert!(matches!(
            c.validate(),
            Err(ColumnsError::BufferSizeMismatch {
                column: "header_key_lengths",
                ..
            })
        ));

        let mut c = sample();
        c.header_values.push(1);
        assert!(matches!(
            c.validate(),
            Err(ColumnsError::BufferSizeMismatch {
                column: "header_value_lengths",
                ..
            })
        ));

        let mut c = sample();
        c.partition = -2;
        assert_eq!(c.validate(), Err(ColumnsError::InvalidPartition(-2)));
        assert!(c.batch().is_err());
    }

    #[test]
    fn inconsistent_views_never_panic() {
        let mut c = sample();
        c.keys.clear();
        c.header_values.clear();
        c.header_value_lengths.pop();
        let batch = c.view();
        assert!(batch.validate().is_err());
        for record in batch.iter() {
            let _ = record.key();
            let _ = record.headers().count();
            let _ = record.header("a");
        }
    }

    #[test]
    fn push_record_copies_a_view() {
        let c = sample();
        let batch = c.batch().unwrap();
        let mut b = ColumnsBuilder::new("t", -1);
        for record in &batch {
            b.push_record(&record);
        }
        assert_eq!(b.build(), c);
    }
}
