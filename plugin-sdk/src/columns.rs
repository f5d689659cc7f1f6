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
//! Records cross the sandbox boundary as five flat lists because every list costs a
//! guest allocation and a host-to-guest call to fill it: a batch pays that five times,
//! however many records it carries. Every key, value and header lives in one byte buffer,
//! `data`; per record, `ends` says where its key and value end and how many headers it
//! has, and per header `header_ends` says where its key and value end. Each field starts
//! where the one before it ended, so no start is stored. A null key or value has the end
//! [`NULL`] and occupies no bytes.
//!
//! Plugin code never sees that layout: [`Batch`] is a borrowed view over the columns and
//! [`Batch::iter`] yields [`Record`] views. The iterator keeps a running cursor into
//! `data`, so walking a batch allocates nothing and each record costs a few loads.
//!
//! ```text
//!  record 0: key "k1", value "v1", header "h" = "x"      record 1: null key, value "v2"
//!
//!  data:        k 1 v 1 h x v 2
//!  ends:        [ 2, 4, 1,   NULL, 8, 1 ]    key end, value end, headers so far
//!  header_ends: [ 5, 6 ]                      key end, value end of each header
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

/// The end that marks a null key or value (`0xffffffff`); a null field occupies no bytes
/// of `data`. Header keys are never null.
pub const NULL: u32 = u32::MAX;

/// Why a batch's columns do not describe a well-formed batch.
///
/// Every variant names the column (and entry) at fault so a plugin author (or the
/// operator reading `quiver plugin describe`) can tell which part of a returned batch was
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnsError {
    /// A column has a different number of entries than the batch's records (or headers)
    /// imply.
    #[error("column `{column}` has {actual} entries, expected {expected}")]
    LengthMismatch {
        /// The column with the wrong number of entries.
        column: &'static str,
        /// Entries implied by the other columns.
        expected: usize,
        /// Entries present.
        actual: usize,
    },
    /// A key or value end lies before the end of the field before it or past the end of
    /// `data`.
    #[error("column `{column}` entry {index} is {end}; this field ends within {start}..={limit}")]
    InvalidEnd {
        /// `ends` or `header_ends`.
        column: &'static str,
        /// The entry's index.
        index: usize,
        /// The offending end.
        end: u32,
        /// Where the field starts (the end of the field before it).
        start: usize,
        /// The size of `data`.
        limit: usize,
    },
    /// A record's headers end (every third entry of `ends`) is below the one before it or
    /// above the number of headers in `header_ends`.
    #[error("column `ends` entry {index} (headers so far) is {end}; expected {start}..={limit}")]
    InvalidHeadersEnd {
        /// The entry's index in `ends`.
        index: usize,
        /// The offending value.
        end: u32,
        /// The previous record's headers end.
        start: usize,
        /// The number of headers in `header_ends`.
        limit: usize,
    },
    /// A header key is marked null.
    #[error(
        "column `header_ends` entry {index} marks a header key null; header keys are never null"
    )]
    NullHeaderKey {
        /// The entry's index in `header_ends`.
        index: usize,
    },
    /// `data` holds bytes after the last field.
    #[error("the fields end at byte {used} but `data` holds {buffer} bytes")]
    TrailingData {
        /// Where the last field ends.
        used: usize,
        /// The size of `data`.
        buffer: usize,
    },
    /// The batch-level partition is below -1.
    #[error("partition {0} is invalid; it is -1 (unassigned) or a partition number")]
    InvalidPartition(i32),
}

/// An owned record batch, field for field the WIT `record-batch`.
///
/// For `n` records with `h` headers in all: `offsets` and `timestamps` have `n` entries;
/// `ends` has three per record (key end, value end, headers so far); `header_ends` has
/// two per header (key end, value end); `data` holds every field's bytes back to back
/// (see the [module docs](self)). Build one with [`ColumnsBuilder`]; read one through
/// [`Columns::batch`].
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
    /// Per record: where its key ends, where its value ends (positions in `data`, [`NULL`]
    /// for null), and how many headers it and the records before it carry.
    pub ends: Vec<u32>,
    /// Per header: where its key ends and where its value ends ([`NULL`] for null).
    pub header_ends: Vec<u32>,
    /// Every key, value and header, back to back.
    pub data: Vec<u8>,
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

    /// Checks that the columns describe a well-formed batch: every column has the number
    /// of entries the records and headers imply, every field ends at or after the end of
    /// the field before it and within `data`, the last one exactly at its end, and header
    /// counts never decrease.
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
            ends: &self.ends,
            header_ends: &self.header_ends,
            data: &self.data,
        }
    }
}

/// Builds [`Columns`] one record at a time.
///
/// ```
/// use quiver_plugin_sdk::columns::{ColumnsBuilder, NULL};
///
/// let mut builder = ColumnsBuilder::new("clicks", -1);
/// builder.push(Some(b"user-1"), Some(b"/home"), &[("trace", None)], 10, -1);
/// let columns = builder.build();
/// assert_eq!(columns.len(), 1);
/// assert_eq!(columns.data, b"user-1/hometrace");
/// assert_eq!(columns.ends, [6, 11, 1]);
/// assert_eq!(columns.header_ends, [16, NULL]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ColumnsBuilder {
    columns: Columns,
}

/// A position in a [`ColumnsBuilder`] (see [`ColumnsBuilder::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    records: usize,
    header_ends: usize,
    data: usize,
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
        builder.reserve(records, 0, 0);
        builder
    }

    /// Makes room for `records` more records carrying `headers` headers and `bytes` bytes
    /// of keys, values and headers in all, so pushing them does not reallocate.
    pub fn reserve(&mut self, records: usize, headers: usize, bytes: usize) -> &mut Self {
        let c = &mut self.columns;
        c.offsets.reserve(records);
        c.timestamps.reserve(records);
        c.ends.reserve(records.saturating_mul(3));
        c.header_ends.reserve(headers.saturating_mul(2));
        c.data.reserve(bytes);
        self
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
    /// If the batch's keys, values and headers together exceed 4 GiB - 2 bytes, or it
    /// carries more than `u32::MAX` headers; the layout cannot describe them (and a
    /// plugin instance's memory could not hold them).
    pub fn push<H: AsRef<[u8]>>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(H, Option<&[u8]>)],
        timestamp: i64,
        offset: i64,
    ) -> &mut Self {
        self.push_with(
            key,
            value,
            headers.iter().map(|(name, value)| (name.as_ref(), *value)),
            timestamp,
            offset,
        )
    }

    /// [`ColumnsBuilder::push`] with the headers from any iterator of (key, value)
    /// pairs, so records held in another type need no intermediate slice.
    ///
    /// # Panics
    ///
    /// As [`ColumnsBuilder::push`].
    pub fn push_with<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
        timestamp: i64,
        offset: i64,
    ) -> &mut Self {
        let c = &mut self.columns;
        c.offsets.push(offset);
        c.timestamps.push(timestamp);
        let key_end = append(&mut c.data, key);
        let value_end = append(&mut c.data, value);
        for (name, value) in headers {
            let name_end = append(&mut c.data, Some(name));
            let value_end = append(&mut c.data, value);
            c.header_ends.extend([name_end, value_end]);
        }
        let headers_end =
            u32::try_from(c.header_ends.len() / 2).expect("a batch has at most u32::MAX headers");
        c.ends.extend([key_end, value_end, headers_end]);
        self
    }

    /// Appends a copy of `record` (its key, value, headers, timestamp and offset), e.g.
    /// to forward a record unchanged from a transform.
    pub fn push_record(&mut self, record: &Record<'_>) -> &mut Self {
        self.push_with(
            record.key(),
            record.value(),
            record.headers(),
            record.timestamp(),
            record.offset(),
        )
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Where the builder stands, to [`rollback`](Self::rollback) to later.
    pub fn mark(&self) -> Mark {
        let c = &self.columns;
        Mark {
            records: c.offsets.len(),
            header_ends: c.header_ends.len(),
            data: c.data.len(),
        }
    }

    /// Drops every record pushed since `mark` was taken.
    pub fn rollback(&mut self, mark: Mark) {
        let c = &mut self.columns;
        c.offsets.truncate(mark.records);
        c.timestamps.truncate(mark.records);
        c.ends.truncate(mark.records * 3);
        c.header_ends.truncate(mark.header_ends);
        c.data.truncate(mark.data);
    }

    /// The finished columns.
    pub fn build(self) -> Columns {
        self.columns
    }
}

/// Appends `bytes` (if any) to `data` and returns the field's end, or [`NULL`].
#[inline]
fn append(data: &mut Vec<u8>, bytes: Option<&[u8]>) -> u32 {
    let Some(bytes) = bytes else {
        return NULL;
    };
    data.extend_from_slice(bytes);
    match u32::try_from(data.len()) {
        Ok(end) if end != NULL => end,
        _ => panic!(
            "a batch holds at most {} bytes of keys, values and headers",
            NULL - 1
        ),
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
    pub(crate) ends: &'a [u32],
    pub(crate) header_ends: &'a [u32],
    pub(crate) data: &'a [u8],
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
        self.header_ends.len() / 2
    }

    /// The records, in order.
    pub fn iter(&self) -> Records<'a> {
        Records {
            batch: *self,
            index: 0,
            cursor: 0,
            header_at: 0,
        }
    }

    /// An owned copy of the columns.
    pub fn to_columns(&self) -> Columns {
        Columns {
            topic: self.topic().to_owned(),
            partition: self.partition,
            offsets: self.offsets.to_vec(),
            timestamps: self.timestamps.to_vec(),
            ends: self.ends.to_vec(),
            header_ends: self.header_ends.to_vec(),
            data: self.data.to_vec(),
        }
    }

    /// Checks the same invariants as [`Columns::validate`].
    pub fn validate(&self) -> Result<(), ColumnsError> {
        if self.is_well_formed() {
            Ok(())
        } else {
            self.find_fault()
        }
    }

    /// The check every call pays: one pass with no data-dependent branches for records
    /// without headers. Whether the batch is well formed, without saying why not.
    #[inline]
    fn is_well_formed(&self) -> bool {
        let records = self.offsets.len();
        if self.partition < -1 || self.timestamps.len() != records || self.ends.len() != records * 3
        {
            return false;
        }
        let headers = self.ends.last().map_or(0, |&n| n as usize);
        if self.header_ends.len() != headers.saturating_mul(2) {
            return false;
        }
        // Every end must be at or after the cursor (null ends leave it in place); then the
        // last end is the largest, and it must be `data`'s length.
        let mut cursor = 0usize;
        let mut header_at = 0usize;
        let mut bad = false;
        for record in self.ends.chunks_exact(3) {
            for &end in &record[..2] {
                let at = if end == NULL { cursor } else { end as usize };
                bad |= at < cursor;
                cursor = at;
            }
            let headers_end = record[2] as usize;
            if headers_end != header_at {
                if headers_end < header_at || headers_end > headers {
                    return false;
                }
                for header in self.header_ends[2 * header_at..2 * headers_end].chunks_exact(2) {
                    bad |= header[0] == NULL || (header[0] as usize) < cursor;
                    cursor = header[0] as usize;
                    let at = if header[1] == NULL {
                        cursor
                    } else {
                        header[1] as usize
                    };
                    bad |= at < cursor;
                    cursor = at;
                }
                header_at = headers_end;
            }
        }
        !bad && cursor == self.data.len()
    }

    /// The detailed check behind [`Batch::validate`]: the first fault, by column and entry.
    #[cold]
    fn find_fault(&self) -> Result<(), ColumnsError> {
        if self.partition < -1 {
            return Err(ColumnsError::InvalidPartition(self.partition));
        }
        let records = self.offsets.len();
        expect_len("timestamps", records, self.timestamps.len())?;
        // `records` entries of 8 bytes exist, so three times as many cannot overflow.
        expect_len("ends", records * 3, self.ends.len())?;
        let headers = self.ends.last().map_or(0, |&n| n as usize);
        expect_len(
            "header_ends",
            headers.saturating_mul(2),
            self.header_ends.len(),
        )?;
        let limit = self.data.len();
        let mut cursor = 0usize;
        let mut header_at = 0usize;
        for (i, record) in self.ends.chunks_exact(3).enumerate() {
            cursor = check_end("ends", 3 * i, record[0], cursor, limit)?;
            cursor = check_end("ends", 3 * i + 1, record[1], cursor, limit)?;
            let headers_end = record[2] as usize;
            if headers_end < header_at || headers_end > headers {
                return Err(ColumnsError::InvalidHeadersEnd {
                    index: 3 * i + 2,
                    end: record[2],
                    start: header_at,
                    limit: headers,
                });
            }
            let owned = &self.header_ends[2 * header_at..2 * headers_end];
            for (j, header) in owned.chunks_exact(2).enumerate() {
                let index = 2 * (header_at + j);
                if header[0] == NULL {
                    return Err(ColumnsError::NullHeaderKey { index });
                }
                cursor = check_end("header_ends", index, header[0], cursor, limit)?;
                cursor = check_end("header_ends", index + 1, header[1], cursor, limit)?;
            }
            header_at = headers_end;
        }
        if cursor != limit {
            return Err(ColumnsError::TrailingData {
                used: cursor,
                buffer: limit,
            });
        }
        Ok(())
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

/// Checks one nullable end against the field's start and the size of `data`; returns
/// where the next field starts.
#[inline]
fn check_end(
    column: &'static str,
    index: usize,
    end: u32,
    start: usize,
    limit: usize,
) -> Result<usize, ColumnsError> {
    if end == NULL {
        return Ok(start);
    }
    let at = end as usize;
    if at < start || at > limit {
        return Err(ColumnsError::InvalidEnd {
            column,
            index,
            end,
            start,
            limit,
        });
    }
    Ok(at)
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
/// Keeps a cursor into `data` and one into the headers, so each step is a few loads and
/// slice splits. On a batch that fails [`Batch::validate`] (only reachable through the
/// unsafe native ABI) out-of-range fields read as empty rather than panicking.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    batch: Batch<'a>,
    index: usize,
    cursor: usize,
    header_at: usize,
}

/// The field ending at `end` (none for [`NULL`]), which starts at `*cursor`; advances the
/// cursor past it.
#[inline]
fn take<'a>(data: &'a [u8], cursor: &mut usize, end: u32) -> Option<&'a [u8]> {
    if end == NULL {
        return None;
    }
    let start = *cursor;
    *cursor = end as usize;
    Some(data.get(start..end as usize).unwrap_or_default())
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
        let (key_end, value_end, headers_end) = match b.ends.get(3 * i..3 * i + 3) {
            Some(&[key, value, headers]) => (key, value, headers as usize),
            _ => (NULL, NULL, self.header_at),
        };
        let key = take(b.data, &mut self.cursor, key_end);
        let value = take(b.data, &mut self.cursor, value_end);
        let headers_start = self.cursor;
        let header_ends = b
            .header_ends
            .get(self.header_at.saturating_mul(2)..headers_end.saturating_mul(2))
            .unwrap_or_default();
        self.header_at = headers_end;
        // The record's last header ends where its value does, or, null, where its key does.
        if let Some(&[key_end, value_end]) = header_ends.last_chunk::<2>() {
            self.cursor = if value_end == NULL {
                key_end
            } else {
                value_end
            } as usize;
        }
        Some(Record {
            offset,
            timestamp,
            key,
            value,
            data: b.data,
            headers_start,
            header_ends,
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
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// The batch's `data`, where the headers' bytes are.
    data: &'a [u8],
    /// Where the first header's key starts in `data`.
    headers_start: usize,
    /// The record's slice of `header_ends`.
    header_ends: &'a [u32],
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
        self.header_ends.len() / 2
    }

    /// The headers in order, each a key and a value (`None` for a null value).
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            data: self.data,
            cursor: self.headers_start,
            ends: self.header_ends,
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
    data: &'a [u8],
    cursor: usize,
    /// Two entries per header still to come: key end, value end.
    ends: &'a [u32],
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let (&[key_end, value_end], rest) = self.ends.split_first_chunk::<2>()?;
        self.ends = rest;
        // A null key end only occurs in a batch that failed validation: read it as empty.
        let key = take(self.data, &mut self.cursor, key_end).unwrap_or_default();
        let value = take(self.data, &mut self.cursor, value_end);
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ends.len() / 2, Some(self.ends.len() / 2))
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
        assert_eq!(c.data, b"k0v0a1bv2axay");
        assert_eq!(c.offsets, [7, 8, 9]);
        assert_eq!(c.timestamps, [100, 101, 102]);
        assert_eq!(c.ends, [2, 4, 2, NULL, NULL, 2, 7, 9, 4]);
        assert_eq!(c.header_ends, [5, 6, 7, NULL, 10, 11, 12, 13]);
        c.validate().unwrap();
    }

    #[test]
    fn the_wit_docs_example_is_what_the_builder_makes() {
        let mut b = ColumnsBuilder::new("t", -1);
        b.push(Some(b"k1"), Some(b"v1"), &[("h", Some(&b"x"[..]))], 0, -1);
        b.push(None, Some(b"v2"), &[] as &[(&str, Option<&[u8]>)], 0, -1);
        let c = b.build();
        assert_eq!(c.data, b"k1v1hxv2");
        assert_eq!(c.ends, [2, 4, 1, 4294967295, 8, 1]);
        assert_eq!(c.header_ends, [5, 6]);
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
        assert_eq!(records[0].value(), Some(&b"v0"[..]));
        assert_eq!(records[0].header_count(), 2);
        assert_eq!(records[0].header("a"), Some(Some(&b"1"[..])));
        assert_eq!(records[0].header("b"), Some(None));
        assert_eq!(records[0].header("zz"), None);
        assert_eq!(records[1].key(), None);
        assert_eq!(records[1].value(), None);
        assert_eq!(records[1].headers().count(), 0);
        assert_eq!(records[2].key(), Some(&b""[..]));
        assert_eq!(records[2].value(), Some(&b"v2"[..]));
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
        c.ends.pop();
        assert_eq!(
            c.validate(),
            Err(ColumnsError::LengthMismatch {
                column: "ends",
                expected: 9,
                actual: 8
            })
        );

        let mut c = sample();
        c.data.push(0);
        assert_eq!(
            c.validate(),
            Err(ColumnsError::TrailingData {
                used: 13,
                buffer: 14
            })
        );

        // A value ending before its key does.
        let mut c = sample();
        c.ends[1] = 1;
        assert_eq!(
            c.validate(),
            Err(ColumnsError::InvalidEnd {
                column: "ends",
                index: 1,
                end: 1,
                start: 2,
                limit: 13
            })
        );

        // A key running past the end of `data`.
        let mut c = sample();
        c.ends[6] = 14;
        assert!(matches!(
            c.validate(),
            Err(ColumnsError::InvalidEnd {
                column: "ends",
                index: 6,
                ..
            })
        ));

        // Record 1 claiming a header of record 2: that header's bytes (after record 2's
        // key and value) are read first, so record 2's key ends before its start.
        let mut c = sample();
        c.ends[5] = 3;
        assert_eq!(
            c.validate(),
            Err(ColumnsError::InvalidEnd {
                column: "ends",
                index: 6,
                end: 7,
                start: 11,
                limit: 13
            })
        );

        // Headers so far decreasing.
        let mut c = sample();
        c.ends[5] = 1;
        assert_eq!(
            c.validate(),
            Err(ColumnsError::InvalidHeadersEnd {
                index: 5,
                end: 1,
                start: 2,
                limit: 4
            })
        );

        // More headers claimed than `header_ends` holds.
        let mut c = sample();
        c.ends[8] = 5;
        assert_eq!(
            c.validate(),
            Err(ColumnsError::LengthMismatch {
                column: "header_ends",
                expected: 10,
                actual: 8
            })
        );

        let mut c = sample();
        c.header_ends[2] = NULL;
        assert_eq!(c.validate(), Err(ColumnsError::NullHeaderKey { index: 2 }));

        let mut c = sample();
        c.header_ends[1] = 4;
        assert!(matches!(
            c.validate(),
            Err(ColumnsError::InvalidEnd {
                column: "header_ends",
                index: 1,
                ..
            })
        ));

        let mut c = sample();
        c.partition = -2;
        assert_eq!(c.validate(), Err(ColumnsError::InvalidPartition(-2)));
        assert!(c.batch().is_err());
    }

    /// The fast check and the detailed one must agree on every batch: the fast one
    /// decides what is accepted, the detailed one only explains refusals.
    #[test]
    fn the_fast_check_agrees_with_the_detailed_one() {
        let mut state = 0x5eed_u64;
        let mut next = move |n: u64| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut c = sample();
            // One to three random edits of any column: small values, so that many
            // edits stay well formed.
            for _ in 0..=next(3) {
                let value = if next(4) == 0 { NULL } else { next(16) as u32 };
                match next(7) {
                    0 if !c.ends.is_empty() => {
                        let i = next(c.ends.len() as u64) as usize;
                        c.ends[i] = value;
                    }
                    1 if !c.header_ends.is_empty() => {
                        let i = next(c.header_ends.len() as u64) as usize;
                        c.header_ends[i] = value;
                    }
                    2 => c.data.truncate(next(16) as usize),
                    3 => c.data.push(0),
                    4 => c.ends.push(value),
                    5 => {
                        c.header_ends.pop();
                    }
                    _ => c.partition = next(3) as i32 - 2,
                }
            }
            let batch = c.view();
            let fast = batch.is_well_formed();
            assert_eq!(fast, batch.find_fault().is_ok(), "{c:?}");
            if fast {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
    }

    #[test]
    fn inconsistent_views_never_panic() {
        let mut c = sample();
        c.data.truncate(3);
        c.header_ends[2] = NULL;
        c.ends[5] = 9;
        c.ends.pop();
        let batch = c.view();
        assert!(batch.validate().is_err());
        for record in batch.iter() {
            let _ = record.key();
            let _ = record.value();
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
