//! The replica fetch on the wire: one request from a follower naming every partition it
//! follows from one leader, one response with each partition's news.
//!
//! Binary, big-endian, versioned. Every message starts with a kind byte and a `u16`
//! version; a decoder refuses kinds and versions it does not know, checks every length
//! against the bytes left before slicing or allocating, and refuses trailing bytes, so a
//! malformed message is an error and never a panic or a large allocation.
//!
//! ```text
//! request  (kind 1, version 1)
//!   u8 kind | u16 version | i32 follower_id | u64 incarnation | u32 max_wait_ms
//!   u32 max_bytes | u32 count | count × partition:
//!     u16 topic_len | topic (UTF-8) | i32 partition | i32 current_leader_epoch
//!     i64 fetch_offset | i32 last_fetched_epoch (-1: none) | i64 log_start_offset
//!     i64 high_watermark (the follower's) | u32 partition_max_bytes
//!
//! response (kind 1, version 1)
//!   u8 kind | u16 version | u8 codec (0 none, 1 zstd) | [u32 plain_len if zstd] | body
//!   body (zstd-compressed as one frame when codec is 1; see crate::net::compress):
//!   u32 count | count × partition:
//!     u16 topic_len | topic | i32 partition | i16 error (Kafka error codes)
//!     i64 high_watermark | i64 log_start_offset | i64 log_end_offset
//!     i32 diverging_epoch | i64 diverging_end_offset (-1, -1: none; KIP-320)
//!     u32 records_len | records (RecordBatch v2 bytes as stored)
//! ```
//!
//! Partitions are named by topic and index rather than by position in the request, so a
//! response can be checked against what was asked without trusting its order.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The one message kind so far: a replica fetch.
const KIND_FETCH: u8 = 1;
const VERSION: u16 = 1;
/// Longest topic name Kafka allows.
const MAX_TOPIC_LEN: usize = 249;
/// Most bytes a compressed response may expand to.
pub use crate::net::compress::MAX_PLAIN_BYTES;

/// Fixed bytes of one request partition, besides its topic name.
const REQUEST_PARTITION_FIXED: usize = 2 + 4 + 4 + 8 + 4 + 8 + 8 + 4;
/// Fixed bytes of one response partition, besides its topic name and records.
const RESPONSE_PARTITION_FIXED: usize = 2 + 4 + 2 + 8 + 8 + 8 + 4 + 8 + 4;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than a field or a declared length needs.
    #[error("replica fetch message truncated: {what} needs {needed} bytes, {left} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// A message kind this broker does not know.
    #[error("unknown replication message kind {0}")]
    UnknownKind(u8),
    /// A version this broker does not speak.
    #[error("unsupported replication message version {0}")]
    UnsupportedVersion(u16),
    /// A value that is out of range or not what its field allows.
    #[error("invalid replica fetch message: {0}")]
    Invalid(String),
}

/// Kafka error codes a replica fetch partition can carry (written out: they are wire
/// values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchError {
    /// No error.
    None,
    /// The fetch offset is outside the leader's log, or the leader cannot tell where the
    /// follower's last epoch ended.
    OffsetOutOfRange,
    /// The leader does not host the partition.
    UnknownTopicOrPartition,
    /// The receiver does not lead the partition.
    NotLeaderOrFollower,
    /// The follower is not a replica of the partition.
    ReplicaNotAvailable,
    /// The leader's log failed.
    KafkaStorageError,
    /// The follower's leader epoch is older than the leader's.
    FencedLeaderEpoch,
    /// The follower's leader epoch is newer than the leader's.
    UnknownLeaderEpoch,
    /// The follower's incarnation is older than the leader knows.
    StaleBrokerEpoch,
    /// Any other code.
    Other(i16),
}

impl FetchError {
    /// The Kafka error code.
    pub fn code(self) -> i16 {
        match self {
            FetchError::None => 0,
            FetchError::OffsetOutOfRange => 1,
            FetchError::UnknownTopicOrPartition => 3,
            FetchError::NotLeaderOrFollower => 6,
            FetchError::ReplicaNotAvailable => 9,
            FetchError::KafkaStorageError => 56,
            FetchError::FencedLeaderEpoch => 74,
            FetchError::UnknownLeaderEpoch => 75,
            FetchError::StaleBrokerEpoch => 77,
            FetchError::Other(code) => code,
        }
    }

    /// The error for a Kafka error code.
    pub fn from_code(code: i16) -> FetchError {
        match code {
            0 => FetchError::None,
            1 => FetchError::OffsetOutOfRange,
            3 => FetchError::UnknownTopicOrPartition,
            6 => FetchError::NotLeaderOrFollower,
            9 => FetchError::ReplicaNotAvailable,
            56 => FetchError::KafkaStorageError,
            74 => FetchError::FencedLeaderEpoch,
            75 => FetchError::UnknownLeaderEpoch,
            77 => FetchError::StaleBrokerEpoch,
            other => FetchError::Other(other),
        }
    }
}

/// One partition of a fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader epoch the follower believes in.
    pub current_leader_epoch: i32,
    /// The follower's log end offset: where to read from.
    pub fetch_offset: i64,
    /// Epoch of the follower's last batch (-1 for an empty log), checked against the
    /// leader's epoch cache.
    pub last_fetched_epoch: i32,
    /// The follower's log start offset.
    pub log_start_offset: i64,
    /// The high watermark the follower knows; the leader answers at once if its own
    /// differs, so followers learn commits without waiting for new data.
    pub high_watermark: i64,
    /// Most record bytes to return for this partition.
    pub max_bytes: u32,
}

/// A fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The follower's broker id.
    pub follower_id: i32,
    /// The follower process's incarnation (from its registration).
    pub incarnation: u64,
    /// Longest the leader may wait for news.
    pub max_wait_ms: u32,
    /// Most record bytes in the whole response (the first batch may exceed it).
    pub max_bytes: u32,
    /// The partitions.
    pub partitions: Vec<PartitionFetch>,
}

/// One partition of a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionData {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// What went wrong, if anything.
    pub error: FetchError,
    /// The leader's high watermark.
    pub high_watermark: i64,
    /// The leader's log start offset.
    pub log_start_offset: i64,
    /// The leader's log end offset.
    pub log_end_offset: i64,
    /// Where the follower's log diverges: the largest epoch at most its last fetched
    /// epoch and where that epoch ends in the leader's log.
    pub diverging: Option<(i32, i64)>,
    /// Record batches from the fetch offset.
    pub records: Bytes,
}

impl PartitionData {
    /// An answer carrying only an error.
    pub fn error(topic: &str, partition: i32, error: FetchError) -> PartitionData {
        PartitionData {
            topic: topic.to_string(),
            partition,
            error,
            high_watermark: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            diverging: None,
            records: Bytes::new(),
        }
    }
}

/// A fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// The partitions.
    pub partitions: Vec<PartitionData>,
}

fn put_topic(out: &mut BytesMut, topic: &str) {
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
}

impl FetchRequest {
    /// Encodes the request.
    pub fn encode(&self) -> Bytes {
        let names: usize = self.partitions.iter().map(|p| p.topic.len()).sum();
        let mut out =
            BytesMut::with_capacity(27 + names + self.partitions.len() * REQUEST_PARTITION_FIXED);
        out.put_u8(KIND_FETCH);
        out.put_u16(VERSION);
        out.put_i32(self.follower_id);
        out.put_u64(self.incarnation);
        out.put_u32(self.max_wait_ms);
        out.put_u32(self.max_bytes);
        out.put_u32(self.partitions.len() as u32);
        for p in &self.partitions {
            put_topic(&mut out, &p.topic);
            out.put_i32(p.partition);
            out.put_i32(p.current_leader_epoch);
            out.put_i64(p.fetch_offset);
            out.put_i32(p.last_fetched_epoch);
            out.put_i64(p.log_start_offset);
            out.put_i64(p.high_watermark);
            out.put_u32(p.max_bytes);
        }
        out.freeze()
    }

    /// Decodes a request.
    pub fn decode(bytes: Bytes) -> Result<FetchRequest, WireError> {
        let mut r = Reader(bytes);
        r.header()?;
        let follower_id = r.i32("follower id")?;
        let incarnation = r.u64("incarnation")?;
        let max_wait_ms = r.u32("max wait")?;
        let max_bytes = r.u32("max bytes")?;
        let count = r.count("partition count", REQUEST_PARTITION_FIXED)?;
        let mut partitions = Vec::with_capacity(count);
        for _ in 0..count {
            let topic = r.topic()?;
            let partition = r.i32("partition")?;
            let current_leader_epoch = r.i32("current leader epoch")?;
            let fetch_offset = r.i64("fetch offset")?;
            let last_fetched_epoch = r.i32("last fetched epoch")?;
            let log_start_offset = r.i64("log start offset")?;
            let high_watermark = r.i64("high watermark")?;
            let max_bytes = r.u32("partition max bytes")?;
            if partition < 0 || fetch_offset < 0 || last_fetched_epoch < -1 {
                return Err(WireError::Invalid(format!(
                    "{topic}-{partition}: fetch offset {fetch_offset}, last fetched epoch {last_fetched_epoch}"
                )));
            }
            partitions.push(PartitionFetch {
                topic,
                partition,
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
                log_start_offset,
                high_watermark,
                max_bytes,
            });
        }
        r.end()?;
        Ok(FetchRequest {
            follower_id,
            incarnation,
            max_wait_ms,
            max_bytes,
            partitions,
        })
    }
}

impl FetchResponse {
    /// Encodes the response, compressing the body with zstd when asked and worth it.
    pub fn encode(&self, zstd: bool) -> Bytes {
        let size: usize = self
            .partitions
            .iter()
            .map(|p| RESPONSE_PARTITION_FIXED + p.topic.len() + p.records.len())
            .sum();
        // The records are copied once, into the message; compressing (when asked) is
        // done in place after.
        let mut out = BytesMut::with_capacity(8 + 4 + size);
        out.put_u8(KIND_FETCH);
        out.put_u16(VERSION);
        let body = crate::net::compress::begin(&mut out);
        out.put_u32(self.partitions.len() as u32);
        for p in &self.partitions {
            put_topic(&mut out, &p.topic);
            out.put_i32(p.partition);
            out.put_i16(p.error.code());
            out.put_i64(p.high_watermark);
            out.put_i64(p.log_start_offset);
            out.put_i64(p.log_end_offset);
            let (epoch, end) = p.diverging.unwrap_or((-1, -1));
            out.put_i32(epoch);
            out.put_i64(end);
            out.put_u32(p.records.len() as u32);
            out.put_slice(&p.records);
        }
        crate::net::compress::finish(&mut out, body, zstd);
        out.freeze()
    }

    /// Decodes a response.
    pub fn decode(bytes: Bytes) -> Result<FetchResponse, WireError> {
        let mut r = Reader(bytes);
        r.header()?;
        let body = crate::net::compress::unpack(r.0.split_off(0)).map_err(WireError::Invalid)?;
        let mut r = Reader(body);
        let count = r.count("partition count", RESPONSE_PARTITION_FIXED)?;
        let mut partitions = Vec::with_capacity(count);
        for _ in 0..count {
            let topic = r.topic()?;
            let partition = r.i32("partition")?;
            let error = FetchError::from_code(r.i16("error")?);
            let high_watermark = r.i64("high watermark")?;
            let log_start_offset = r.i64("log start offset")?;
            let log_end_offset = r.i64("log end offset")?;
            let epoch = r.i32("diverging epoch")?;
            let end = r.i64("diverging end offset")?;
            let len = r.u32("records length")? as usize;
            let records = r.take(len, "records")?;
            partitions.push(PartitionData {
                topic,
                partition,
                error,
                high_watermark,
                log_start_offset,
                log_end_offset,
                diverging: (epoch >= 0 || end >= 0).then_some((epoch, end)),
                records,
            });
        }
        r.end()?;
        Ok(FetchResponse { partitions })
    }
}

/// A bounds-checked reader.
struct Reader(Bytes);

impl Reader {
    fn need(&self, what: &'static str, needed: usize) -> Result<(), WireError> {
        if self.0.remaining() < needed {
            return Err(WireError::Truncated {
                what,
                needed,
                left: self.0.remaining(),
            });
        }
        Ok(())
    }

    fn header(&mut self) -> Result<(), WireError> {
        let kind = self.u8("kind")?;
        if kind != KIND_FETCH {
            return Err(WireError::UnknownKind(kind));
        }
        let version = self.u16("version")?;
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        Ok(())
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.need(what, 1)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.need(what, 2)?;
        Ok(self.0.get_u16())
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        self.need(what, 2)?;
        Ok(self.0.get_i16())
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        self.need(what, 4)?;
        Ok(self.0.get_i32())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.need(what, 4)?;
        Ok(self.0.get_u32())
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        self.need(what, 8)?;
        Ok(self.0.get_i64())
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.need(what, 8)?;
        Ok(self.0.get_u64())
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<Bytes, WireError> {
        self.need(what, len)?;
        Ok(self.0.split_to(len))
    }

    /// An element count, checked against the bytes left at `min_size` per element so
    /// that a hostile count cannot make the decoder reserve memory.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, WireError> {
        let count = self.u32(what)? as usize;
        self.need(what, count.saturating_mul(min_size))?;
        Ok(count)
    }

    fn topic(&mut self) -> Result<String, WireError> {
        let len = self.u16("topic length")? as usize;
        if len == 0 || len > MAX_TOPIC_LEN {
            return Err(WireError::Invalid(format!("topic name of {len} bytes")));
        }
        let bytes = self.take(len, "topic")?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| WireError::Invalid("topic name is not UTF-8".into()))
    }

    fn end(&self) -> Result<(), WireError> {
        if self.0.has_remaining() {
            return Err(WireError::Invalid(format!(
                "{} trailing bytes",
                self.0.remaining()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::compress::CODEC_NONE;

    fn request() -> FetchRequest {
        FetchRequest {
            follower_id: 2,
            incarnation: 77,
            max_wait_ms: 500,
            max_bytes: 1 << 20,
            partitions: vec![
                PartitionFetch {
                    topic: "orders".into(),
                    partition: 3,
                    current_leader_epoch: 5,
                    fetch_offset: 1234,
                    last_fetched_epoch: 4,
                    log_start_offset: 10,
                    high_watermark: 1200,
                    max_bytes: 65536,
                },
                PartitionFetch {
                    topic: "t".into(),
                    partition: 0,
                    current_leader_epoch: 0,
                    fetch_offset: 0,
                    last_fetched_epoch: -1,
                    log_start_offset: 0,
                    high_watermark: 0,
                    max_bytes: 1,
                },
            ],
        }
    }

    fn response(records: Bytes) -> FetchResponse {
        FetchResponse {
            partitions: vec![
                PartitionData {
                    topic: "orders".into(),
                    partition: 3,
                    error: FetchError::None,
                    high_watermark: 1234,
                    log_start_offset: 10,
                    log_end_offset: 2000,
                    diverging: None,
                    records,
                },
                PartitionData {
                    diverging: Some((3, 900)),
                    ..PartitionData::error("t", 0, FetchError::None)
                },
                PartitionData::error("t", 1, FetchError::FencedLeaderEpoch),
            ],
        }
    }

    #[test]
    fn messages_round_trip() {
        let req = request();
        assert_eq!(FetchRequest::decode(req.encode()).unwrap(), req);
        let records = Bytes::from(vec![7u8; 5000]);
        for zstd in [false, true] {
            let resp = response(records.clone());
            let bytes = resp.encode(zstd);
            assert_eq!(bytes[3], u8::from(zstd), "codec byte");
            assert_eq!(FetchResponse::decode(bytes).unwrap(), resp);
        }
        // Small bodies stay uncompressed even when zstd is on.
        let small = response(Bytes::new());
        assert_eq!(small.encode(true)[3], CODEC_NONE);
        let codes = [0, 1, 3, 6, 9, 56, 74, 75, 77, 12345];
        for code in codes {
            assert_eq!(FetchError::from_code(code).code(), code);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = request().encode();
        for len in 0..bytes.len() {
            assert!(FetchRequest::decode(bytes.slice(..len)).is_err(), "{len}");
        }
        let bytes = response(Bytes::from_static(b"abc")).encode(false);
        for len in 0..bytes.len() {
            assert!(FetchResponse::decode(bytes.slice(..len)).is_err(), "{len}");
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = request().encode().to_vec();
        let decode = |bytes: Vec<u8>| FetchRequest::decode(Bytes::from(bytes));
        let mut bad = good.clone();
        bad[0] = 9;
        assert_eq!(decode(bad), Err(WireError::UnknownKind(9)));
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(decode(bad), Err(WireError::UnsupportedVersion(2)));
        // A huge partition count: refused before anything is reserved.
        let mut bad = good.clone();
        bad[23..27].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(bad), Err(WireError::Truncated { .. })));
        // An empty or overlong topic name, or one that is not UTF-8.
        let mut bad = good.clone();
        bad[27..29].copy_from_slice(&0u16.to_be_bytes());
        assert!(matches!(decode(bad), Err(WireError::Invalid(_))));
        let mut bad = good.clone();
        bad[27..29].copy_from_slice(&300u16.to_be_bytes());
        assert!(matches!(decode(bad), Err(WireError::Invalid(_))));
        let mut bad = good.clone();
        bad[29] = 0xff;
        assert!(matches!(decode(bad), Err(WireError::Invalid(_))));
        // A negative fetch offset.
        let mut bad = good.clone();
        bad[43..51].copy_from_slice(&(-5i64).to_be_bytes());
        assert!(matches!(decode(bad), Err(WireError::Invalid(_))));
        // Trailing bytes.
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(decode(bad), Err(WireError::Invalid(_))));

        // A response whose records length overruns, or whose zstd body lies.
        let mut resp = response(Bytes::from_static(b"abcdef"))
            .encode(false)
            .to_vec();
        // The last partition's records length, its last field.
        let at = resp.len() - 4;
        resp[at..at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert!(FetchResponse::decode(Bytes::from(resp)).is_err());
        let mut packed = response(Bytes::from(vec![1u8; 4096])).encode(true).to_vec();
        packed[4..8].copy_from_slice(&(MAX_PLAIN_BYTES as u32 + 1).to_be_bytes());
        assert!(matches!(
            FetchResponse::decode(Bytes::from(packed.clone())),
            Err(WireError::Invalid(_))
        ));
        packed[4..8].copy_from_slice(&10u32.to_be_bytes());
        assert!(FetchResponse::decode(Bytes::from(packed)).is_err());
    }
}
