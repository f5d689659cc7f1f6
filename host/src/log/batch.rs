//! Kafka RecordBatch v2 framing: the byte layout the log stores and serves unchanged.
//!
//! This room owns everything the broker needs to know about a batch without decoding its
//! records: the fixed 61-byte header, CRC-32C verification, the in-place rewrites the
//! leader performs on append (base offset, partition leader epoch, LogAppendTime), walking
//! a buffer of concatenated batches, walking the records a batch really holds (to count
//! them, or to find null keys a compacted topic must refuse), and building the smaller
//! batches the log cleaner writes. It does no I/O so the produce path, the log's recovery
//! scan, the cleaner and tests can all share it.
//!
//! Every length read from the wire is checked against the bytes actually left before it
//! is used to slice or allocate, so a hostile or torn buffer yields an error rather than a
//! panic or an oversized allocation.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use kafka_protocol::records::Compression;

/// Size of the fixed RecordBatch v2 header, from `baseOffset` through `recordsCount`.
pub const HEADER_LEN: usize = 61;

/// Bytes before and including the `batchLength` field, which `batchLength` does not count.
const LENGTH_PREFIX: usize = 12;
/// Smallest legal `batchLength`: a header with no records.
const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LENGTH_PREFIX) as i32;
const MAGIC_V2: i8 = 2;

const OFFSET_BASE_OFFSET: usize = 0;
const OFFSET_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORDS_COUNT: usize = 57;

const CODEC_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;
/// Set by the log cleaner (KIP-534) once a batch's tombstones have a removal time; the
/// base timestamp then holds that time and record timestamp deltas are relative to it.
const DELETE_HORIZON_BIT: i16 = 1 << 6;

/// Why a batch (or a buffer of batches) could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: needed {needed} bytes but only {available} are available")]
    Truncated { needed: usize, available: usize },
    #[error("record batch has magic {0}, only magic 2 (RecordBatch v2) is supported")]
    BadMagic(i8),
    #[error("record batch length {0} is invalid (must be at least {MIN_BATCH_LENGTH})")]
    BadLength(i32),
    #[error("record batch CRC-32C mismatch: header says {expected:#010x}, content hashes to {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch uses unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("record batch is corrupt: {0}")]
    Corrupt(String),
    #[error("record batch could not be compressed with {codec:?}: {reason}")]
    Compress { codec: Compression, reason: String },
}

/// The fixed header of a RecordBatch v2, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf`, which must hold at least [`HEADER_LEN`]
    /// bytes. Rejects anything but magic 2, a length too short to hold the header, and
    /// compression codecs Kafka does not define, so every accessor below is infallible.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let header = BatchHeader {
            base_offset: read_i64(buf, OFFSET_BASE_OFFSET),
            batch_length: read_i32(buf, OFFSET_LENGTH),
            partition_leader_epoch: read_i32(buf, OFFSET_LEADER_EPOCH),
            magic: buf[OFFSET_MAGIC] as i8,
            crc: read_u32(buf, OFFSET_CRC),
            attributes: read_i16(buf, OFFSET_ATTRIBUTES),
            last_offset_delta: read_i32(buf, OFFSET_LAST_OFFSET_DELTA),
            base_timestamp: read_i64(buf, OFFSET_BASE_TIMESTAMP),
            max_timestamp: read_i64(buf, OFFSET_MAX_TIMESTAMP),
            producer_id: read_i64(buf, OFFSET_PRODUCER_ID),
            producer_epoch: read_i16(buf, OFFSET_PRODUCER_EPOCH),
            base_sequence: read_i32(buf, OFFSET_BASE_SEQUENCE),
            records_count: read_i32(buf, OFFSET_RECORDS_COUNT),
        };
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::BadLength(header.batch_length));
        }
        if header.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(header.magic));
        }
        let codec = (header.attributes & CODEC_MASK) as u8;
        if codec > Compression::Zstd as u8 {
            return Err(BatchError::UnknownCodec(codec));
        }
        Ok(header)
    }

    /// Size of the whole batch in bytes, header included.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LENGTH_PREFIX
    }

    /// Offset of the last record of the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The codec the records section is compressed with. Headers produced by
    /// [`BatchHeader::parse`] never carry an undefined codec; a hand-built header with one
    /// reads as uncompressed.
    pub fn compression(&self) -> Compression {
        match self.attributes & CODEC_MASK {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// Whether the broker stamped `max_timestamp` at append time rather than the producer.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// When the log cleaner may drop this batch's tombstones, if it has set that time.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }
}

/// Checks the CRC-32C of the batch at the start of `batch` against its header.
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let body = whole_batch(batch, &header)?;
    let actual = crc32c::crc32c(&body[OFFSET_ATTRIBUTES..]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}

/// Rewrites the base offset. The CRC does not cover it, so it stays valid.
///
/// # Panics
/// If `batch` is shorter than the offset and length fields; callers pass slices yielded
/// by [`Batches`].
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Length of the batch prefix the leader's log owns: base offset, batch length and
/// partition leader epoch. The CRC starts after it, so a producer's batch is written
/// as sent with only this prefix replaced (see [`leader_prefix`]).
pub const LEADER_PREFIX_LEN: usize = OFFSET_MAGIC;

/// The first [`LEADER_PREFIX_LEN`] bytes of `batch` as the leader writes them: with
/// `base_offset`, and `epoch` when given (else the batch's own).
///
/// # Panics
/// If `batch` is shorter than [`HEADER_LEN`]; callers pass slices yielded by [`Batches`].
pub fn leader_prefix(
    batch: &[u8],
    base_offset: i64,
    epoch: Option<i32>,
) -> [u8; LEADER_PREFIX_LEN] {
    let mut prefix = [0u8; LEADER_PREFIX_LEN];
    prefix.copy_from_slice(&batch[..LEADER_PREFIX_LEN]);
    set_base_offset(&mut prefix, base_offset);
    if let Some(epoch) = epoch {
        set_partition_leader_epoch(&mut prefix, epoch);
    }
    prefix
}

/// Rewrites the partition leader epoch. The CRC does not cover it, so it stays valid.
///
/// # Panics
/// If `batch` is shorter than [`HEADER_LEN`].
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `timestamp_ms` as its max timestamp and
/// recomputes the CRC. The base timestamp and record deltas are left alone: consumers
/// ignore per-record timestamps of LogAppendTime batches and use the max timestamp.
///
/// # Panics
/// If `batch` is shorter than the length its header declares; callers pass slices yielded
/// by [`Batches`].
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let attributes = read_i16(batch, OFFSET_ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    batch[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8]
        .copy_from_slice(&timestamp_ms.to_be_bytes());
    let end = read_i32(batch, OFFSET_LENGTH) as usize + LENGTH_PREFIX;
    let crc = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..end]);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over a buffer of concatenated batches, yielding each header and the byte range
/// of its batch within the buffer. Stops after the first error: a trailing partial batch
/// yields [`BatchError::Truncated`], which recovery uses to locate a torn tail.
#[derive(Debug)]
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Batches {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Byte position of the next batch to be yielded, or of the batch that failed.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(BatchHeader, Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let result = BatchHeader::parse(rest).and_then(|header| {
            let len = header.total_len();
            if len > rest.len() {
                return Err(BatchError::Truncated {
                    needed: len,
                    available: rest.len(),
                });
            }
            Ok((header, self.pos..self.pos + len))
        });
        match &result {
            Ok((_, range)) => self.pos = range.end,
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

/// Counts the records actually present in the batch at the start of `batch`, decompressing
/// the records section if needed and checking every record's framing. The caller compares
/// the result with `records_count` to reject a batch whose header lies.
pub fn count_records(batch: &[u8]) -> Result<i32, BatchError> {
    let (_, plain) = records_section(batch)?;
    let mut count: i32 = 0;
    for record in Records::new(&plain) {
        record?;
        count = count
            .checked_add(1)
            .ok_or_else(|| corrupt("more than i32::MAX records".to_string()))?;
    }
    Ok(count)
}

/// Whether any record of the batch at the start of `batch` has a null key. Compacted
/// topics keep the latest record per key, so Kafka refuses keyless records for them
/// (INVALID_RECORD) rather than letting the cleaner silently discard them later.
pub fn has_null_key(batch: &[u8]) -> Result<bool, BatchError> {
    let (_, plain) = records_section(batch)?;
    for record in Records::new(&plain) {
        if record?.key.is_none() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The header and the records section of the batch at the start of `batch`, decompressed
/// (within [`MAX_DECOMPRESSED_BYTES`]) if the batch is compressed.
pub fn records_section(batch: &[u8]) -> Result<(BatchHeader, Cow<'_, [u8]>), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let records = &whole_batch(batch, &header)?[HEADER_LEN..];
    let plain = match header.compression() {
        Compression::None => Cow::Borrowed(records),
        codec => Cow::Owned(decompress(records, codec, MAX_DECOMPRESSED_BYTES)?),
    };
    Ok((header, plain))
}

fn whole_batch<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<&'a [u8], BatchError> {
    let len = header.total_len();
    batch.get(..len).ok_or(BatchError::Truncated {
        needed: len,
        available: batch.len(),
    })
}

/// Most bytes one batch may decompress to. A producer's batch is capped by
/// `max.message.bytes` compressed, but a few KiB of zstd can expand to gigabytes; the
/// cap keeps a hostile batch from exhausting memory while leaving real batches (even
/// highly compressible ones) far below it.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

/// Decompresses a batch's records section, refusing to produce more than `limit` bytes.
pub fn decompress(records: &[u8], codec: Compression, limit: usize) -> Result<Vec<u8>, BatchError> {
    use std::io::Read;

    let corrupt = |e: std::io::Error| {
        BatchError::Corrupt(format!("{codec:?} records do not decompress: {e}"))
    };
    let mut out = Vec::new();
    let bounded = |reader: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), BatchError> {
        reader
            .take(limit as u64 + 1)
            .read_to_end(out)
            .map_err(corrupt)?;
        Ok(())
    };
    match codec {
        Compression::None => out.extend_from_slice(records),
        Compression::Gzip => bounded(&mut flate2::read::GzDecoder::new(records), &mut out)?,
        Compression::Lz4 => bounded(&mut lz4::Decoder::new(records).map_err(corrupt)?, &mut out)?,
        Compression::Zstd => bounded(
            &mut zstd::stream::read::Decoder::new(records).map_err(corrupt)?,
            &mut out,
        )?,
        Compression::Snappy => snappy(records, limit, &mut out)?,
    }
    if out.len() > limit {
        return Err(BatchError::Corrupt(format!(
            "{codec:?} records decompress to more than {limit} bytes"
        )));
    }
    Ok(out)
}

/// Kafka's snappy: either one raw block, or the xerial framing Java clients write (a
/// magic header, then length-prefixed raw blocks). Each block states its decompressed
/// length up front, which is checked against the limit before anything is allocated.
fn snappy(input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), BatchError> {
    const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
    const XERIAL_HEADER: usize = 16;
    let corrupt = |e: String| BatchError::Corrupt(format!("Snappy records do not decompress: {e}"));
    let block = |raw: &[u8], out: &mut Vec<u8>| -> Result<(), BatchError> {
        let len = snap::raw::decompress_len(raw).map_err(|e| corrupt(e.to_string()))?;
        if out.len().saturating_add(len) > limit {
            return Err(BatchError::Corrupt(format!(
                "Snappy records decompress to more than {limit} bytes"
            )));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(raw, &mut out[start..])
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(())
    };
    if !input.starts_with(XERIAL_MAGIC) {
        return block(input, out);
    }
    let mut rest = input
        .get(XERIAL_HEADER..)
        .ok_or_else(|| corrupt("truncated xerial header".into()))?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("truncated block length".into()))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let raw = rest
            .get(4..4 + len)
            .ok_or_else(|| corrupt(format!("block of {len} bytes overruns the batch")))?;
        block(raw, out)?;
        rest = &rest[4 + len..];
    }
    Ok(())
}

/// One record of a decompressed records section, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Added to the batch's base timestamp to give the record's timestamp.
    pub timestamp_delta: i64,
    /// Added to the batch's base offset to give the record's offset.
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    attributes: u8,
    /// Key, value and headers exactly as stored.
    tail: &'a [u8],
    /// The whole record, length prefix included.
    framed: &'a [u8],
}

impl RawRecord<'_> {
    /// Appends the record to `out` as stored, or with another timestamp delta when the
    /// batch it goes into has a different base timestamp.
    pub fn write(&self, out: &mut Vec<u8>, timestamp_delta: i64) {
        if timestamp_delta == self.timestamp_delta {
            out.extend_from_slice(self.framed);
            return;
        }
        let mut body = Vec::with_capacity(self.framed.len() + 8);
        body.push(self.attributes);
        put_varlong(&mut body, timestamp_delta);
        put_varint(&mut body, i64::from(self.offset_delta));
        body.extend_from_slice(self.tail);
        put_varint(out, body.len() as i64);
        out.extend_from_slice(&body);
    }
}

impl<'a> RawRecord<'a> {
    /// The record's headers in order, repeated names included (Kafka allows them, and
    /// a map would keep only one of each).
    pub fn headers(&self) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
        self.header_iter().collect()
    }

    /// Its headers in order, repeats kept, without collecting them.
    pub fn header_iter(&self) -> RawHeaders<'a> {
        let mut cursor = Cursor {
            buf: self.tail,
            pos: 0,
        };
        // The record was checked field by field when it was parsed, so these walks
        // cannot fail; a failure would only end the list early.
        let count = (|| -> Result<i32, BatchError> {
            cursor.nullable_bytes("key")?;
            cursor.nullable_bytes("value")?;
            cursor.varint("header count")
        })();
        debug_assert!(count.is_ok(), "a parsed record's headers re-parse");
        RawHeaders {
            cursor,
            left: count.map_or(0, |n| usize::try_from(n).unwrap_or_default()),
        }
    }
}

/// The headers of a [`RawRecord`], borrowed from it.
#[derive(Debug, Clone)]
pub struct RawHeaders<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for RawHeaders<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let c = &mut self.cursor;
        let header = (|| -> Result<Self::Item, BatchError> {
            let len = c.varint("header key length")?;
            let key = c.take(usize::try_from(len).unwrap_or_default())?;
            Ok((key, c.nullable_bytes("header value")?))
        })();
        debug_assert!(header.is_ok(), "a parsed record's headers re-parse");
        match header {
            Ok(h) => Some(h),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }
}

/// Walks a decompressed records section record by record. Each record's fields must end
/// exactly where its length prefix says, as Kafka's own decoder demands; the first
/// malformed record yields an error and ends the walk.
#[derive(Debug)]
pub struct Records<'a> {
    cursor: Cursor<'a>,
    index: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    pub fn new(plain: &'a [u8]) -> Self {
        Records {
            cursor: Cursor { buf: plain, pos: 0 },
            index: 0,
            failed: false,
        }
    }

    fn read(&mut self) -> Result<RawRecord<'a>, BatchError> {
        let index = self.index;
        let start = self.cursor.pos;
        let length = self.cursor.varint("record length")?;
        let length = usize::try_from(length)
            .map_err(|_| corrupt(format!("record {index} has negative length {length}")))?;
        let left = self.cursor.buf.len() - self.cursor.pos;
        let body = self.cursor.take(length).map_err(|_| {
            corrupt(format!(
                "record {index} declares {length} bytes but only {left} remain"
            ))
        })?;
        let framed = &self.cursor.buf[start..self.cursor.pos];
        parse_record_body(body, framed).map_err(|e| corrupt(format!("record {index}: {e}")))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RawRecord<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.cursor.pos >= self.cursor.buf.len() {
            return None;
        }
        let result = self.read();
        self.failed = result.is_err();
        self.index += 1;
        Some(result)
    }
}

fn parse_record_body<'a>(body: &'a [u8], framed: &'a [u8]) -> Result<RawRecord<'a>, String> {
    let mut c = Cursor { buf: body, pos: 0 };
    let to_string = |e: BatchError| match e {
        BatchError::Corrupt(reason) => reason,
        other => other.to_string(),
    };
    let attributes = c.take(1).map_err(|_| "missing attributes".to_string())?[0];
    let timestamp_delta = c.varlong("timestamp delta").map_err(to_string)?;
    let offset_delta = c.varint("offset delta").map_err(to_string)?;
    let tail_start = c.pos;
    let key = c.nullable_bytes("key").map_err(to_string)?;
    let value = c.nullable_bytes("value").map_err(to_string)?;
    let headers = c.varint("header count").map_err(to_string)?;
    if headers < 0 {
        return Err(format!("negative header count {headers}"));
    }
    for _ in 0..headers {
        let key_len = c.varint("header key length").map_err(to_string)?;
        let key_len =
            usize::try_from(key_len).map_err(|_| format!("header key length {key_len}"))?;
        c.take(key_len)
            .map_err(|_| "header key overruns the record".to_string())?;
        c.nullable_bytes("header value").map_err(to_string)?;
    }
    if c.pos != body.len() {
        return Err(format!(
            "fields end after {} bytes but the record length is {}",
            c.pos,
            body.len()
        ));
    }
    Ok(RawRecord {
        timestamp_delta,
        offset_delta,
        key,
        value,
        attributes,
        tail: &body[tail_start..],
        framed,
    })
}

fn corrupt(reason: String) -> BatchError {
    BatchError::Corrupt(reason)
}

/// Zigzag LEB128, the varint encoding of Kafka's record fields.
pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, value: i64) {
    put_varlong(out, value)
}

/// Builds one batch from `header` and an uncompressed records section holding `count`
/// records, compressing it with the header's codec and computing length and CRC-32C.
/// Every other header field is written as given, so the caller decides what survives of
/// the original batch (Kafka's cleaner keeps base offset, last offset delta, producer id,
/// epoch and base sequence, so the producer's sequence bookkeeping still adds up).
pub fn build_batch(
    header: &BatchHeader,
    plain: &[u8],
    count: i32,
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    use kafka_protocol::compression::{self as codecs, Compressor};

    let codec = header.compression();
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let fill = |buf: &mut bytes::BytesMut| -> anyhow::Result<()> {
        bytes::BufMut::put_slice(buf, plain);
        Ok(())
    };
    let compressed = match codec {
        Compression::None => {
            out.extend_from_slice(plain);
            Ok(())
        }
        Compression::Gzip => <codecs::Gzip as Compressor<Vec<u8>>>::compress(out, fill),
        Compression::Snappy => <codecs::Snappy as Compressor<Vec<u8>>>::compress(out, fill),
        Compression::Lz4 => <codecs::Lz4 as Compressor<Vec<u8>>>::compress(out, fill),
        Compression::Zstd => <codecs::Zstd as Compressor<Vec<u8>>>::compress(out, fill),
    };
    compressed.map_err(|e| BatchError::Compress {
        codec,
        reason: format!("{e:#}"),
    })?;
    let total = out.len() - start;
    let batch_length = i32::try_from(total - LENGTH_PREFIX).map_err(|_| {
        BatchError::Corrupt(format!(
            "a batch of {total} bytes does not fit its length field"
        ))
    })?;
    let b = &mut out[start..];
    b[OFFSET_BASE_OFFSET..][..8].copy_from_slice(&header.base_offset.to_be_bytes());
    b[OFFSET_LENGTH..][..4].copy_from_slice(&batch_length.to_be_bytes());
    b[OFFSET_LEADER_EPOCH..][..4].copy_from_slice(&header.partition_leader_epoch.to_be_bytes());
    b[OFFSET_MAGIC] = MAGIC_V2 as u8;
    b[OFFSET_ATTRIBUTES..][..2].copy_from_slice(&header.attributes.to_be_bytes());
    b[OFFSET_LAST_OFFSET_DELTA..][..4].copy_from_slice(&header.last_offset_delta.to_be_bytes());
    b[OFFSET_BASE_TIMESTAMP..][..8].copy_from_slice(&header.base_timestamp.to_be_bytes());
    b[OFFSET_MAX_TIMESTAMP..][..8].copy_from_slice(&header.max_timestamp.to_be_bytes());
    b[OFFSET_PRODUCER_ID..][..8].copy_from_slice(&header.producer_id.to_be_bytes());
    b[OFFSET_PRODUCER_EPOCH..][..2].copy_from_slice(&header.producer_epoch.to_be_bytes());
    b[OFFSET_BASE_SEQUENCE..][..4].copy_from_slice(&header.base_sequence.to_be_bytes());
    b[OFFSET_RECORDS_COUNT..][..4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
    b[OFFSET_CRC..][..4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Attribute bits with the codec replaced.
pub fn with_codec(attributes: i16, codec: Compression) -> i16 {
    (attributes & !CODEC_MASK) | codec as i16
}

/// Attribute bits with the delete-horizon flag set.
pub fn with_delete_horizon(attributes: i16) -> i16 {
    attributes | DELETE_HORIZON_BIT
}

/// A bounds-checked reader over the records section.
#[derive(Debug, Clone)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], BatchError> {
        let available = self.buf.len() - self.pos;
        if len > available {
            return Err(BatchError::Truncated {
                needed: len,
                available,
            });
        }
        let slice = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    /// Reads an unsigned LEB128 value of at most `max_bytes` bytes.
    fn unsigned(&mut self, max_bytes: usize, what: &str) -> Result<u64, BatchError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| corrupt(format!("{what} varint runs past the end")))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt(format!(
            "{what} varint is longer than {max_bytes} bytes"
        )))
    }

    /// Zigzag-encoded 32-bit varint, as Kafka's record format uses.
    fn varint(&mut self, what: &str) -> Result<i32, BatchError> {
        let raw = self.unsigned(5, what)?;
        let raw = u32::try_from(raw).map_err(|_| corrupt(format!("{what} overflows 32 bits")))?;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }

    /// Zigzag-encoded 64-bit varint.
    fn varlong(&mut self, what: &str) -> Result<i64, BatchError> {
        let raw = self.unsigned(10, what)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A varint length followed by that many bytes; -1 means null.
    fn nullable_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| corrupt(format!("{what} length {len}")))?;
        self.take(len)
            .map(Some)
            .map_err(|_| corrupt(format!("{what} overruns the record")))
    }
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

/// A record decoded from a batch, with its offset and timestamp resolved.
#[derive(Debug, Clone)]
pub struct DecodedRecord {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (the batch's append time for a LogAppendTime batch).
    pub timestamp: i64,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its value.
    pub value: Option<Bytes>,
    /// Its headers, in order, repeats kept.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The records of `bytes` (whole batches as read from the log) in `start..hw`, with
/// the offset after the last one seen (control records are passed over but counted).
/// Decoded here rather than with kafka-protocol, whose records keep headers in a map:
/// a record's repeated header names must reach the plugin, and the output, intact.
pub fn decode_records(
    bytes: &Bytes,
    start: i64,
    hw: i64,
) -> Result<(i64, Vec<DecodedRecord>), BatchError> {
    let mut out = Vec::new();
    let next = visit_records(bytes, start, hw, |offset, timestamp, raw| {
        out.push(DecodedRecord {
            offset,
            timestamp,
            key: raw.key.map(Bytes::copy_from_slice),
            value: raw.value.map(Bytes::copy_from_slice),
            headers: owned_headers(raw.header_iter()),
        });
    })?;
    Ok((next, out))
}

/// Borrowed headers as owned ones (a name that is not UTF-8 is shown lossily).
pub fn owned_headers<'a>(
    headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Vec<(String, Option<Bytes>)> {
    headers
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                v.map(Bytes::copy_from_slice),
            )
        })
        .collect()
}

/// Calls `visit` with each record of `bytes` (whole batches as read from the log) in
/// `start..hw`, its offset and timestamp (the batch's append time for a LogAppendTime
/// batch) resolved, borrowing the record from the batch; returns the offset after the
/// last one seen (control records are passed over but counted). What copies the
/// records, and where to, is the caller's: a mirror puts them straight into a plugin's
/// columns.
pub fn visit_records(
    bytes: &[u8],
    start: i64,
    hw: i64,
    mut visit: impl FnMut(i64, i64, &RawRecord<'_>),
) -> Result<i64, BatchError> {
    let mut next = start;
    for batch in Batches::new(bytes) {
        let (header, range) = batch?;
        if header.last_offset() < start {
            continue;
        }
        if header.base_offset >= hw {
            break;
        }
        if header.is_control() {
            next = next.max((header.last_offset() + 1).min(hw));
            continue;
        }
        let (_, plain) = records_section(&bytes[range])?;
        for raw in Records::new(&plain) {
            let raw = raw?;
            let offset = header.base_offset + i64::from(raw.offset_delta);
            if offset < start || offset >= hw {
                continue;
            }
            next = next.max(offset + 1);
            let timestamp = if header.is_log_append_time() {
                header.max_timestamp
            } else {
                header.base_timestamp + raw.timestamp_delta
            };
            visit(offset, timestamp, &raw);
        }
    }
    Ok(next)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Encodes one batch of `count` records with offsets from 0 and timestamps from `ts`.
    pub(crate) fn make_batch(count: usize, ts: i64, compression: Compression) -> Vec<u8> {
        let timestamps: Vec<i64> = (0..count as i64).map(|i| ts + i).collect();
        make_batch_with_timestamps(&timestamps, compression)
    }

    pub(crate) fn make_batch_with_timestamps(
        timestamps: &[i64],
        compression: Compression,
    ) -> Vec<u8> {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &timestamp)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // Constant offset-minus-sequence keeps the encoder from splitting the
                // records into one batch each; the base sequence comes out as -1.
                sequence: i as i32 - 1,
                timestamp,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}-{}", "x".repeat(i % 7)))),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode test batch");
        buf.to_vec()
    }

    const ALL_CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn header_round_trips_encoder_output() {
        let batch = make_batch(3, 1_000, Compression::Gzip);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.base_offset, 0);
        assert_eq!(header.total_len(), batch.len());
        assert_eq!(header.magic, 2);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.last_offset(), 2);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_002);
        assert_eq!(header.producer_id, -1);
        assert_eq!(header.records_count, 3);
        assert_eq!(header.compression(), Compression::Gzip);
        assert!(!header.is_log_append_time());
        assert!(!header.is_transactional());
        assert!(!header.is_control());
        verify_crc(&batch).unwrap();
    }

    #[test]
    fn rewrites_keep_crc_valid_and_round_trip() {
        let mut batch = make_batch(2, 50, Compression::None);
        set_base_offset(&mut batch, 1234);
        set_partition_leader_epoch(&mut batch, 7);
        verify_crc(&batch).unwrap();
        set_log_append_time(&mut batch, 99_999);
        verify_crc(&batch).unwrap();
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.base_offset, 1234);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.max_timestamp, 99_999);
        assert_eq!(header.base_timestamp, 50);
        assert!(header.is_log_append_time());
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(batch)).unwrap();
        assert_eq!(decoded.records.len(), 2);
        assert_eq!(decoded.records[1].offset, 1235);
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let batch = make_batch(4, 10, Compression::None);
        for at in [OFFSET_ATTRIBUTES, HEADER_LEN + 3, batch.len() - 1] {
            let mut damaged = batch.clone();
            damaged[at] ^= 0x40;
            match verify_crc(&damaged) {
                Err(BatchError::CrcMismatch { expected, actual }) => assert_ne!(expected, actual),
                other => panic!("byte {at}: expected a CRC mismatch, got {other:?}"),
            }
        }
    }

    #[test]
    fn parse_rejects_bad_headers() {
        let batch = make_batch(1, 0, Compression::None);
        assert!(matches!(
            BatchHeader::parse(&batch[..HEADER_LEN - 1]),
            Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: 60
            })
        ));
        let mut bad = batch.clone();
        bad[OFFSET_MAGIC] = 1;
        assert!(matches!(
            BatchHeader::parse(&bad),
            Err(BatchError::BadMagic(1))
        ));
        let mut bad = batch.clone();
        bad[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&48i32.to_be_bytes());
        assert!(matches!(
            BatchHeader::parse(&bad),
            Err(BatchError::BadLength(48))
        ));
        bad[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            BatchHeader::parse(&bad),
            Err(BatchError::BadLength(-5))
        ));
        let mut bad = batch.clone();
        bad[OFFSET_ATTRIBUTES + 1] |= 0x06;
        assert!(matches!(
            BatchHeader::parse(&bad),
            Err(BatchError::UnknownCodec(6))
        ));
    }

    #[test]
    fn batches_splits_and_reports_torn_tail() {
        let mut buf = make_batch(2, 0, Compression::None);
        let first_len = buf.len();
        buf.extend(make_batch(5, 0, Compression::Lz4));
        let total = buf.len();
        let items: Vec<_> = Batches::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].1, 0..first_len);
        assert_eq!(items[1].1, first_len..total);
        assert_eq!(items[1].0.records_count, 5);

        let torn = &buf[..total - 3];
        let mut iter = Batches::new(torn);
        assert!(iter.next().unwrap().is_ok());
        match iter.next().unwrap() {
            Err(BatchError::Truncated { needed, available }) => {
                assert_eq!(needed, total - first_len);
                assert_eq!(available, total - first_len - 3);
            }
            other => panic!("expected truncation, got {other:?}"),
        }
        assert!(iter.next().is_none());
        assert_eq!(iter.position(), first_len);
    }

    #[test]
    fn batches_rejects_huge_length_without_allocating() {
        let mut buf = make_batch(1, 0, Compression::None);
        buf[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut iter = Batches::new(&buf);
        assert!(matches!(
            iter.next(),
            Some(Err(BatchError::Truncated { needed, .. })) if needed == i32::MAX as usize + 12
        ));
    }

    #[test]
    fn count_records_every_codec() {
        for codec in ALL_CODECS {
            for count in [1, 3, 40] {
                let batch = make_batch(count, 5, codec);
                assert_eq!(count_records(&batch).unwrap(), count as i32, "{codec:?}");
            }
        }
    }

    #[test]
    fn null_keys_are_found_in_every_codec() {
        for codec in ALL_CODECS {
            let keyed = make_batch(3, 0, codec);
            assert!(!has_null_key(&keyed).unwrap(), "{codec:?}");
            let mut buf = BytesMut::new();
            let mut record = RecordBatchDecoder::decode(&mut Bytes::from(keyed))
                .unwrap()
                .records;
            record[1].key = None;
            RecordBatchEncoder::encode(
                &mut buf,
                record.iter(),
                &RecordEncodeOptions {
                    version: 2,
                    compression: codec,
                },
            )
            .unwrap();
            assert!(has_null_key(&buf).unwrap(), "{codec:?}");
        }
        let mut garbage = make_batch(3, 5, Compression::Gzip);
        for b in &mut garbage[HEADER_LEN..] {
            *b = 0xaa;
        }
        assert!(matches!(
            has_null_key(&garbage),
            Err(BatchError::Corrupt(_))
        ));
    }

    #[test]
    fn rebuilt_batches_round_trip() {
        let original = make_batch(6, 1_000, Compression::Zstd);
        let (header, plain) = records_section(&original).unwrap();
        let kept: Vec<RawRecord> = Records::new(&plain)
            .map(Result::unwrap)
            .filter(|r| r.offset_delta % 2 == 1)
            .collect();
        let mut section = Vec::new();
        let mut rebuilt = header;
        rebuilt.base_timestamp = 5_000;
        rebuilt.attributes = with_delete_horizon(header.attributes);
        for r in &kept {
            r.write(
                &mut section,
                r.timestamp_delta + header.base_timestamp - 5_000,
            );
        }
        let mut out = Vec::new();
        build_batch(&rebuilt, &section, kept.len() as i32, &mut out).unwrap();
        verify_crc(&out).unwrap();
        let parsed = BatchHeader::parse(&out).unwrap();
        assert_eq!(parsed.compression(), Compression::Zstd);
        assert_eq!(parsed.delete_horizon(), Some(5_000));
        assert_eq!(count_records(&out).unwrap(), 3);
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(out)).unwrap();
        let got: Vec<(i64, i64)> = decoded
            .records
            .iter()
            .map(|r| (r.offset, r.timestamp))
            .collect();
        assert_eq!(got, vec![(1, 1_001), (3, 1_003), (5, 1_005)]);
    }

    #[test]
    fn count_records_detects_lying_count_and_overrun() {
        let mut batch = make_batch(3, 5, Compression::None);
        batch[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4].copy_from_slice(&7i32.to_be_bytes());
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.records_count, 7);
        assert_eq!(count_records(&batch).unwrap(), 3);

        // A first record whose length prefix claims far more bytes than the batch holds.
        let mut overrun = make_batch(3, 5, Compression::None);
        overrun[HEADER_LEN] = 0x7e;
        assert!(matches!(
            count_records(&overrun),
            Err(BatchError::Corrupt(_))
        ));

        // Compressed bytes that are not a valid stream.
        let mut garbage = make_batch(3, 5, Compression::Zstd);
        for b in &mut garbage[HEADER_LEN..] {
            *b = 0xaa;
        }
        assert!(matches!(
            count_records(&garbage),
            Err(BatchError::Corrupt(_))
        ));
    }

    #[test]
    fn error_messages_name_the_problem() {
        let msg = BatchError::CrcMismatch {
            expected: 1,
            actual: 2,
        }
        .to_string();
        assert!(msg.contains("CRC"), "{msg}");
        assert!(BatchError::UnknownCodec(6).to_string().contains("codec 6"));
    }

    #[test]
    fn decompression_is_bounded() {
        let zeros = vec![0u8; 64 * 1024];
        let packed = zstd::encode_all(&zeros[..], 3).unwrap();
        assert_eq!(
            decompress(&packed, Compression::Zstd, zeros.len()).unwrap(),
            zeros
        );
        let err = decompress(&packed, Compression::Zstd, 1024).unwrap_err();
        assert!(err.to_string().contains("more than 1024 bytes"), "{err}");

        let raw = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert_eq!(
            decompress(&raw, Compression::Snappy, zeros.len()).unwrap(),
            zeros
        );
        assert!(decompress(&raw, Compression::Snappy, 1024).is_err());
    }
}
