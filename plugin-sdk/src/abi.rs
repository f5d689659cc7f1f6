//! The C ABI of native (trusted, hot-path) plugins.
//!
//! This module owns the `#[repr(C)]` types both sides of the native boundary use: the
//! host passes them to a `libloading`-loaded `.so`, and the SDK-generated exports in the
//! plugin read them. Sharing one definition (and one conversion to and from
//! [`Columns`]/[`Batch`]) is what keeps the two sides from drifting apart.
//!
//! # The symbols a native partitioner exports
//!
//! ```c
//! uint32_t quiver_plugin_api_version(void);   // (major<<16)|(minor<<8)|patch: 0x000100 = 0.1.0
//! const char *quiver_plugin_kind(void);        // "partitioner", NUL-terminated, static
//! int32_t quiver_partitioner_init(const QuiverStr *keys, const QuiverStr *values, size_t n,
//!                                 QuiverBuf *err);
//! int32_t quiver_partitioner_partition(const QuiverBatch *batch, uint32_t partitions,
//!                                      uint32_t *out, QuiverBuf *err);
//! ```
//!
//! The two calls return [`QUIVER_OK`] (0) on success. On failure they return one of the
//! `QUIVER_ERR_*` codes, which mirror the WIT `plugin-error` cases (plus
//! [`QUIVER_ERR_PANIC`]), and write the message, truncated to `err.cap` bytes on a UTF-8
//! boundary, to `err.ptr`, setting `err.len`. `out` has room for `batch.count` entries
//! and is written only on success. A panic never unwinds into the host: it is caught and
//! reported as [`QUIVER_ERR_PANIC`], and the plugin's state is discarded so every later
//! call fails until `quiver_partitioner_init` succeeds again (the native counterpart of a
//! trapped WASM instance being replaced).
//!
//! The `#[partitioner]` and `register_partitioner!` macros generate these symbols when
//! the SDK's `native` feature is on and the target is not wasm32; see the crate docs.
//!
//! # The symbols a native transform exports
//!
//! ```c
//! uint32_t quiver_plugin_api_version(void);   // as above
//! const char *quiver_plugin_kind(void);        // "transform"
//! int32_t quiver_transform_open(const QuiverStr *keys, const QuiverStr *values, size_t n,
//!                               void **instance, QuiverBuf *err);
//! int32_t quiver_transform_transform(void *instance, const QuiverBatch *batch,
//!                                    QuiverTransformOutput *out, QuiverBuf *err);
//! void quiver_transform_close(void *instance);
//! ```
//!
//! Unlike a partitioner, whose one configuration is the deployment's, a transform is
//! configured per running transform, so the library hands out instances: `open` runs
//! the plugin's `init` with the configuration and, on success, stores the new instance
//! in `*instance`; `close` frees one. Codes and messages are as above. An instance is used by one thread at a time.
//! `transform` fills [`QuiverTransformOutput`] with pointers into memory the instance
//! owns, valid until the next call on that instance or its close; the host copies what
//! it keeps. After a panic ([`QUIVER_ERR_PANIC`]) every later call on that instance
//! fails: the host closes it and opens another, as it replaces a trapped WASM instance.
//!
//! This module has no dependencies and compiles on every target.

use crate::columns::{Batch, Columns};
use std::ptr::NonNull;

/// The API version of this SDK as the native ABI encodes it: `(major << 16) | (minor << 8)
/// | patch`, i.e. `0x000100` for 0.1.0.
pub const QUIVER_API_VERSION: u32 = 0x00_01_00;

/// Success.
pub const QUIVER_OK: i32 = 0;
/// `init` rejected the configuration (WIT `plugin-error::invalid-config`).
pub const QUIVER_ERR_INVALID_CONFIG: i32 = 1;
/// The input cannot be handled (WIT `plugin-error::invalid-input`).
pub const QUIVER_ERR_INVALID_INPUT: i32 = 2;
/// Any other failure (WIT `plugin-error::failed`).
pub const QUIVER_ERR_FAILED: i32 = 3;
/// The plugin panicked; its state was discarded.
pub const QUIVER_ERR_PANIC: i32 = 4;

/// A borrowed byte string (UTF-8 where the contract says "string"). Not NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QuiverStr {
    /// First byte; may be null or dangling when `len` is 0.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl QuiverStr {
    /// Borrows `s` (the caller keeps `s` alive while the `QuiverStr` is in use).
    pub fn new(s: &str) -> Self {
        QuiverStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    ///
    /// Unless `len` is 0, `ptr` must point to `len` initialised bytes that stay valid and
    /// unmodified for `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        // SAFETY: forwarded to the caller; a zero length never dereferences the pointer.
        unsafe { slice_or_empty(self.ptr, self.len) }
    }
}

/// A caller-owned output buffer, used for error messages.
#[repr(C)]
#[derive(Debug)]
pub struct QuiverBuf {
    /// Where to write; may be null when `cap` is 0.
    pub ptr: *mut u8,
    /// Room at `ptr`, in bytes.
    pub cap: usize,
    /// Bytes written.
    pub len: usize,
}

impl QuiverBuf {
    /// A buffer writing into `storage` (the caller keeps it alive while in use).
    pub fn new(storage: &mut [u8]) -> Self {
        QuiverBuf {
            ptr: storage.as_mut_ptr(),
            cap: storage.len(),
            len: 0,
        }
    }

    /// Writes `message`, truncated to `cap` bytes at a UTF-8 character boundary, and sets
    /// `len`.
    ///
    /// # Safety
    ///
    /// Unless `cap` is 0, `ptr` must be valid for writes of `cap` bytes.
    pub unsafe fn write(&mut self, message: &str) {
        let mut n = message.len().min(self.cap);
        while !message.is_char_boundary(n) {
            n -= 1;
        }
        if n > 0 && !self.ptr.is_null() {
            // SAFETY: `n <= cap` and the caller guarantees `ptr` is writable for `cap`.
            unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), self.ptr, n) };
            self.len = n;
        } else {
            self.len = 0;
        }
    }

    /// The bytes written so far.
    ///
    /// # Safety
    ///
    /// Unless `len` is 0, `ptr` must point to `len` initialised bytes valid for `'a`.
    pub unsafe fn written<'a>(&self) -> &'a [u8] {
        // SAFETY: forwarded to the caller.
        unsafe { slice_or_empty(self.ptr, self.len) }
    }
}

/// A record batch across the native ABI: a pointer and a length for every column of
/// [`Columns`], plus the record and header counts.
///
/// It borrows the columns it was made from without a lifetime (C has none): the
/// [`Columns`] given to [`QuiverBatch::from_columns`] must outlive every use.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QuiverBatch {
    /// Topic name bytes (UTF-8).
    pub topic: *const u8,
    /// Topic name length.
    pub topic_len: usize,
    /// Batch-level partition, -1 when none is chosen.
    pub partition: i32,
    /// Number of records: the length of `offsets` and `timestamps`.
    pub count: usize,
    /// Number of headers over all records: half the length of `header_ends`.
    pub header_total: usize,
    /// `offsets[count]`.
    pub offsets: *const i64,
    /// Entries at `offsets`.
    pub offsets_len: usize,
    /// `timestamps[count]`.
    pub timestamps: *const i64,
    /// Entries at `timestamps`.
    pub timestamps_len: usize,
    /// `ends[3 * count]`: per record, key end, value end ([`crate::columns::NULL`] for
    /// null) and headers so far.
    pub ends: *const u32,
    /// Entries at `ends`.
    pub ends_len: usize,
    /// `header_ends[2 * header_total]`: per header, key end and value end.
    pub header_ends: *const u32,
    /// Entries at `header_ends`.
    pub header_ends_len: usize,
    /// Every key, value and header, back to back.
    pub data: *const u8,
    /// Bytes at `data`.
    pub data_len: usize,
}

impl QuiverBatch {
    /// Describes `columns` for a native call. `columns` must outlive the returned value's
    /// use; validate `columns` first if it came from an untrusted source.
    pub fn from_columns(columns: &Columns) -> Self {
        QuiverBatch {
            topic: columns.topic.as_ptr(),
            topic_len: columns.topic.len(),
            partition: columns.partition,
            count: columns.offsets.len(),
            header_total: columns.header_ends.len() / 2,
            offsets: columns.offsets.as_ptr(),
            offsets_len: columns.offsets.len(),
            timestamps: columns.timestamps.as_ptr(),
            timestamps_len: columns.timestamps.len(),
            ends: columns.ends.as_ptr(),
            ends_len: columns.ends.len(),
            header_ends: columns.header_ends.as_ptr(),
            header_ends_len: columns.header_ends.len(),
            data: columns.data.as_ptr(),
            data_len: columns.data.len(),
        }
    }

    /// No records, no topic, partition -1: every pointer null.
    pub fn empty() -> Self {
        QuiverBatch {
            topic: std::ptr::null(),
            topic_len: 0,
            partition: -1,
            count: 0,
            header_total: 0,
            offsets: std::ptr::null(),
            offsets_len: 0,
            timestamps: std::ptr::null(),
            timestamps_len: 0,
            ends: std::ptr::null(),
            ends_len: 0,
            header_ends: std::ptr::null(),
            header_ends_len: 0,
            data: std::ptr::null(),
            data_len: 0,
        }
    }

    /// A borrowed view of the described columns. The view is not validated: call
    /// [`Batch::validate`] before trusting it (iterating an invalid view never panics
    /// or reads out of bounds, but yields meaningless records).
    ///
    /// # Safety
    ///
    /// For every column, unless its length field is 0, its pointer must point to that
    /// many initialised, properly aligned elements that stay valid and unmodified for the
    /// returned lifetime — as holds for a value made by [`QuiverBatch::from_columns`]
    /// while its [`Columns`] lives. The `count` and `header_total` fields are not
    /// trusted: the view uses the per-column lengths.
    pub unsafe fn as_batch(&self) -> Batch<'_> {
        // SAFETY (every call below): forwarded to the caller, column by column.
        unsafe {
            Batch {
                topic: slice_or_empty(self.topic, self.topic_len),
                partition: self.partition,
                offsets: slice_or_empty(self.offsets, self.offsets_len),
                timestamps: slice_or_empty(self.timestamps, self.timestamps_len),
                ends: slice_or_empty(self.ends, self.ends_len),
                header_ends: slice_or_empty(self.header_ends, self.header_ends_len),
                data: slice_or_empty(self.data, self.data_len),
            }
        }
    }
}

/// One native transform call's answer: the output records in columns (their `topic` is
/// empty and `partition` -1; `offsets` holds the input offset each came from), per
/// record an output index and a partition (-1: the output topic's partitioner), and
/// the input record the call stopped at, if any. Filled by the plugin; every pointer
/// points into the instance's memory (see the module docs for how long it is valid).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QuiverTransformOutput {
    /// The output records.
    pub records: QuiverBatch,
    /// `targets[targets_len]`: per output record, its output index.
    pub targets: *const u32,
    /// Entries at `targets`.
    pub targets_len: usize,
    /// `partitions[partitions_len]`: per output record, its partition or -1.
    pub partitions: *const i32,
    /// Entries at `partitions`.
    pub partitions_len: usize,
    /// [`QUIVER_OK`] when every input record was transformed; otherwise the error code
    /// of the record at `failed_offset`, whose output is not among `records`.
    pub failed_code: i32,
    /// The offset of the input record the call stopped at (when `failed_code` is set).
    pub failed_offset: i64,
    /// Why it failed (when `failed_code` is set).
    pub failed_message: QuiverStr,
}

impl QuiverTransformOutput {
    /// An answer with nothing in it, for the host to pass in.
    pub fn empty() -> Self {
        QuiverTransformOutput {
            records: QuiverBatch::empty(),
            targets: std::ptr::null(),
            targets_len: 0,
            partitions: std::ptr::null(),
            partitions_len: 0,
            failed_code: QUIVER_OK,
            failed_offset: -1,
            failed_message: QuiverStr {
                ptr: std::ptr::null(),
                len: 0,
            },
        }
    }

    /// The per-record output indices.
    ///
    /// # Safety
    ///
    /// Unless `targets_len` is 0, `targets` must point to that many `u32`s valid for `'a`.
    pub unsafe fn targets<'a>(&self) -> &'a [u32] {
        // SAFETY: forwarded to the caller.
        unsafe { slice_or_empty(self.targets, self.targets_len) }
    }

    /// The per-record partitions.
    ///
    /// # Safety
    ///
    /// Unless `partitions_len` is 0, `partitions` must point to that many `i32`s valid
    /// for `'a`.
    pub unsafe fn partitions<'a>(&self) -> &'a [i32] {
        // SAFETY: forwarded to the caller.
        unsafe { slice_or_empty(self.partitions, self.partitions_len) }
    }
}

/// `slice::from_raw_parts`, tolerating the null or dangling pointer C passes for an
/// empty column (Rust slices need a non-null, aligned pointer even when empty).
///
/// # Safety
///
/// Unless `len` is 0, `ptr` must point to `len` initialised, aligned `T`s valid for `'a`.
unsafe fn slice_or_empty<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 || ptr.is_null() {
        // SAFETY: a dangling, aligned, non-null pointer is valid for a zero-length slice.
        unsafe { std::slice::from_raw_parts(NonNull::<T>::dangling().as_ptr(), 0) }
    } else {
        // SAFETY: forwarded to the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::ColumnsBuilder;

    #[test]
    fn a_batch_round_trips_through_the_c_description() {
        let mut b = ColumnsBuilder::new("orders", 3);
        b.push(Some(b"k"), Some(b"v"), &[("h", Some(&b"x"[..]))], 5, 6);
        b.push(None, None, &[("n", None)], 7, 8);
        let columns = b.build();
        let raw = QuiverBatch::from_columns(&columns);
        assert_eq!(raw.count, 2);
        assert_eq!(raw.header_total, 2);
        // SAFETY: `raw` describes `columns`, which outlives `batch`.
        let batch = unsafe { raw.as_batch() };
        batch.validate().unwrap();
        assert_eq!(batch.to_columns(), columns);
    }

    #[test]
    fn null_pointers_read_as_empty_columns() {
        let raw = QuiverBatch::from_columns(&Columns::empty("t", -1));
        let raw = QuiverBatch {
            offsets: std::ptr::null(),
            data: std::ptr::null(),
            ..raw
        };
        // SAFETY: every length is zero.
        let batch = unsafe { raw.as_batch() };
        assert!(batch.is_empty());
        batch.validate().unwrap();
    }

    #[test]
    fn errors_are_truncated_on_a_character_boundary() {
        let mut storage = [0u8; 4];
        let mut buf = QuiverBuf::new(&mut storage);
        // SAFETY: `buf` writes into `storage`.
        unsafe { buf.write("ab\u{e9}cd") };
        // "é" is two bytes at 2..4, so four bytes fit exactly.
        // SAFETY: as above.
        assert_eq!(unsafe { buf.written() }, "ab\u{e9}".as_bytes());
        let mut storage = [0u8; 3];
        let mut buf = QuiverBuf::new(&mut storage);
        // SAFETY: as above.
        unsafe { buf.write("ab\u{e9}cd") };
        // SAFETY: as above.
        assert_eq!(unsafe { buf.written() }, b"ab");
        let mut empty = QuiverBuf {
            ptr: std::ptr::null_mut(),
            cap: 0,
            len: 9,
        };
        // SAFETY: a zero capacity never writes.
        unsafe { empty.write("lost") };
        assert_eq!(empty.len, 0);
    }
}
