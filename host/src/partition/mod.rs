//! One replica of one partition: its log, its role (leader or follower) with the high
//! watermark and in-sync replicas that go with it, its idempotent producer state, and the
//! validation every produced batch passes before it is appended.
//!
//! The broker sets the role from the metadata ([`Partition::set_role`]); until it does, a
//! partition leads alone at epoch 0 and its high watermark is its log end offset — what a
//! single-node broker needs, unchanged. A leader stamps its epoch into every batch it
//! appends; a follower appends what its leader sent ([`Partition::append_as_follower`]),
//! feeding the same producer state so that it deduplicates idempotent retries once it
//! leads. Consumers read below the high watermark only. The ISR arithmetic lives in
//! [`replicas`]; the replication protocol around it in [`crate::replication`].
//!
//! What Kafka's LogValidator does lives here: a batch is checked (framing, CRC-32C,
//! declared against actual record count, size against `max.message.bytes`) before a
//! single byte is written, so a bad batch is refused with the Kafka error a client
//! understands and never reaches the log. Batches are stored as produced unless the
//! topic asks for broker-side compression or log-append time.

pub mod encode;
pub mod keyed;
pub mod producer_state;
pub mod replicas;
mod role;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::config::topic::{CompressionPolicy, TopicSettings};
use crate::log::batch::{self, BatchError, BatchHeader, Batches};
use crate::log::{AppendInfo, Log, LogError, ReadResult};
use producer_state::{ProducerStates, SequenceError, Snapshot, Verdict};
use replicas::ReplicaState;
pub use role::{CommitError, LeaderError, Role, RoleChange};

/// File in the partition directory holding the last checkpointed high watermark.
const HIGH_WATERMARK_FILE: &str = "high-watermark";

/// File in the partition directory holding the producer-state snapshot.
const PRODUCER_SNAPSHOT: &str = "producer-state.json";
/// Kafka's `producer.id.expiration.ms` default: producers silent this long are forgotten.
const PRODUCER_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;
/// How much log a replay reads at a time.
const REPLAY_CHUNK: usize = 4 * 1024 * 1024;

/// Why a produce to this partition was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The request carried no record batch.
    #[error("the produce request carried no records")]
    Empty,
    /// A batch is malformed or its CRC does not match.
    #[error("batch {index}: {source}")]
    Corrupt {
        /// Position of the batch in the request.
        index: usize,
        /// What was wrong.
        source: BatchError,
    },
    /// A batch declares a record count its body does not hold.
    #[error("batch {index} declares {declared} records (last offset delta {last_offset_delta}) but holds {actual}")]
    CountMismatch {
        /// Position of the batch in the request.
        index: usize,
        /// The header's recordsCount.
        declared: i32,
        /// The header's lastOffsetDelta.
        last_offset_delta: i32,
        /// Records actually present.
        actual: i32,
    },
    /// A batch is larger than the topic's `max.message.bytes`.
    #[error("batch {index} is {size} bytes, larger than max.message.bytes {max}")]
    TooLarge {
        /// Position of the batch in the request.
        index: usize,
        /// Its size in bytes.
        size: usize,
        /// The topic's limit.
        max: i32,
    },
    /// A batch has flags producers may not set.
    #[error("batch {index}: {reason}")]
    InvalidRecord {
        /// Position of the batch in the request.
        index: usize,
        /// What is not allowed.
        reason: &'static str,
    },
    /// Re-encoding for broker-side compression failed.
    #[error("recompressing batch {index}: {reason}")]
    Recompress {
        /// Position of the batch in the request.
        index: usize,
        /// The codec's error.
        reason: String,
    },
    /// An idempotent producer's batch is out of sequence or from a fenced epoch.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// This replica does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    #[error("this broker is not the partition's leader")]
    NotLeader,
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`; nothing was
    /// appended (NOT_ENOUGH_REPLICAS).
    #[error("{isr} in-sync replicas, min.insync.replicas is {min}")]
    NotEnoughReplicas {
        /// Size of the ISR.
        isr: usize,
        /// The topic's minimum.
        min: i32,
    },
    /// A replicated append or truncation for a role this replica no longer has (the
    /// metadata moved on while the fetch was in flight).
    #[error("this replica no longer follows that leader epoch")]
    NotFollower,
    /// The log could not store the batch.
    #[error(transparent)]
    Storage(#[from] LogError),
}

/// One partition replica hosted by this broker.
#[derive(Debug)]
pub struct Partition {
    topic: Arc<str>,
    index: i32,
    log: Log,
    settings: RwLock<Arc<TopicSettings>>,
    /// Read-held across every append and truncation, so none lands after a role change.
    role: RwLock<Role>,
    /// High watermark, ISR and follower progress; taken after `role`, before the log.
    replicas: Mutex<ReplicaState>,
    /// The high watermark last written to [`HIGH_WATERMARK_FILE`].
    checkpointed_hw: Mutex<Option<i64>>,
    /// Held across check, append and record so that a producer's retries and its next
    /// batches are judged against exactly the batches before them.
    producers: Mutex<ProducerStates>,
    /// Woken on every append, high watermark move, truncation and role or ISR change:
    /// long-polling fetches and acks=all waiters wait on it.
    changed: Notify,
}

impl Partition {
    /// Wraps an opened log and rebuilds its idempotent producer state: from the snapshot
    /// if one is usable, then by replaying the batch headers after it. The partition
    /// leads alone at epoch 0 until [`Partition::set_role`]; the high watermark it will
    /// have then starts from the checkpointed one (the log end offset if there is none).
    pub fn open(
        topic: Arc<str>,
        index: i32,
        log: Log,
        settings: Arc<TopicSettings>,
    ) -> Result<Self, LogError> {
        let producers = rebuild_producer_state(&log)?;
        let path = log.dir().join(HIGH_WATERMARK_FILE);
        let checkpointed = match crate::log::checkpoint::read(&path) {
            Ok(hw) => hw,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring the high-watermark checkpoint");
                None
            }
        };
        let end = log.log_end_offset();
        let hw = checkpointed
            .unwrap_or(end)
            .clamp(log.log_start_offset(), end);
        Ok(Self {
            topic,
            index,
            log,
            settings: RwLock::new(settings),
            role: RwLock::new(Role::Leader { epoch: 0 }),
            replicas: Mutex::new(ReplicaState::unmanaged(hw)),
            checkpointed_hw: Mutex::new(checkpointed),
            producers: Mutex::new(producers),
            changed: Notify::new(),
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's name, shared (metrics label it without copying).
    pub fn topic_name(&self) -> &Arc<str> {
        &self.topic
    }

    /// The partition index.
    pub fn index(&self) -> i32 {
        self.index
    }

    /// The leader epoch this replica knows (0 until a role is set).
    pub fn leader_epoch(&self) -> i32 {
        self.replicas.lock().leader_epoch
    }

    /// The log underneath.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<TopicSettings> {
        self.settings.read().clone()
    }

    /// Applies changed topic settings.
    pub fn set_settings(&self, settings: Arc<TopicSettings>) {
        self.log.set_config(settings.log.clone());
        *self.settings.write() = settings;
    }

    /// The offset below which records are committed and visible to consumers: on a
    /// leader the smallest log end offset over the ISR, on a follower what its leader
    /// last reported (within its own log). Before a role is set, the log end offset.
    pub fn high_watermark(&self) -> i64 {
        let replicas = self.replicas.lock();
        if replicas.managed {
            replicas.high_watermark
        } else {
            self.log.log_end_offset()
        }
    }

    /// Resolves after the next append, high watermark move, truncation or role change
    /// (call `enable` on the pinned future before checking the condition it waits for).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Validates `records` (one or more batches as produced) and appends them, as a
    /// leader, for acks=0 or 1. Returns the offsets assigned and the append time if the
    /// broker stamped one. A retry of a batch an idempotent producer already wrote
    /// returns the original offsets and appends nothing.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<(AppendInfo, i64), AppendError> {
        self.append_with_acks(records, now_ms, 1)
    }

    /// [`Partition::append`] for the given `acks`: with -1 the append is refused
    /// (NOT_ENOUGH_REPLICAS) while the committed ISR is smaller than
    /// `min.insync.replicas`. The caller then waits for the commit with
    /// [`Partition::wait_for_commit`].
    pub fn append_with_acks(
        &self,
        records: &Bytes,
        now_ms: i64,
        acks: i16,
    ) -> Result<(AppendInfo, i64), AppendError> {
        let role = self.role.read();
        let Role::Leader { epoch } = *role else {
            return Err(AppendError::NotLeader);
        };
        let settings = self.settings();
        if acks == -1 {
            // Followers that stopped fetching count as gone even before the controller
            // confirms the shrink: when it cannot (no quorum) the client still learns
            // at once that its write cannot be acknowledged.
            let isr = {
                let replicas = self.replicas.lock();
                replicas
                    .isr_len()
                    .min(replicas.in_sync_now(self.log.log_end_offset(), now_ms))
            };
            if isr < settings.min_insync_replicas.max(1) as usize {
                return Err(AppendError::NotEnoughReplicas {
                    isr,
                    min: settings.min_insync_replicas,
                });
            }
        }
        let mut out = validate(records, &settings)?;
        let mut append_time = -1;
        let ranges = batch_ranges(&out)?;
        if settings.log_append_time {
            // The timestamp is under the CRC, so these batches are rewritten; the others
            // reach the log as the producer sent them (the log sets offsets and epoch).
            let mut rewritten = out.to_vec();
            for range in &ranges {
                batch::set_log_append_time(&mut rewritten[range.clone()], now_ms);
            }
            out = Bytes::from(rewritten);
            append_time = now_ms;
        }
        let mut producers = self.producers.lock();
        // Later batches of one request are judged as if the earlier ones were appended.
        let mut pending = ProducerStates::default();
        for range in &ranges {
            let header = BatchHeader::parse(&out[range.clone()])
                .map_err(|source| AppendError::Corrupt { index: 0, source })?;
            if header.producer_id < 0 {
                continue;
            }
            pending.adopt(header.producer_id, &producers);
            match pending.check(&header)? {
                Verdict::Duplicate(original) => {
                    return Ok((
                        AppendInfo {
                            base_offset: original.base_offset,
                            last_offset: original.last_offset,
                            log_start_offset: self.log.log_start_offset(),
                            max_timestamp: header.max_timestamp,
                        },
                        -1,
                    ));
                }
                Verdict::Append => pending.record(&header),
            }
        }
        let segments_before = self.log.segment_count();
        let info = self
            .log
            .append_as_leader(&out, epoch, now_ms)
            .inspect_err(|e| self.storage_failed(e))?;
        // The batches were written one after another from the returned base offset.
        let mut next = info.base_offset;
        for range in ranges {
            if let Ok(mut header) = BatchHeader::parse(&out[range]) {
                header.base_offset = next;
                header.partition_leader_epoch = epoch;
                next = header.last_offset() + 1;
                producers.record(&header);
            }
        }
        if self.log.segment_count() != segments_before {
            // A roll bounds how much log a crash recovery replays.
            self.write_producer_snapshot(&mut producers, now_ms);
        }
        drop(producers);
        self.replicas
            .lock()
            .advance_high_watermark(self.log.log_end_offset());
        drop(role);
        self.changed.notify_waiters();
        Ok((info, append_time))
    }

    /// Reports a failed append and, when it took the log offline, wakes acks=all
    /// waiters so they answer KAFKA_STORAGE_ERROR at once rather than time out.
    fn storage_failed(&self, error: &LogError) {
        if matches!(error, LogError::Offline { .. }) {
            // Reported once, by the log, when it went offline.
            return;
        }
        tracing::error!(
            topic = %self.topic,
            partition = self.index,
            dir = %self.log.dir().display(),
            %error,
            "append failed"
        );
        if self.log.storage_failure().is_some() {
            self.changed.notify_waiters();
        }
    }

    /// Fsyncs the log if `flush_interval_ms` says it is due (see [`Log::flush_if_due`]);
    /// a failure takes the log offline and wakes acks=all waiters.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), LogError> {
        self.log.flush_if_due(now_ms).inspect_err(|_| {
            if self.log.storage_failure().is_some() {
                self.changed.notify_waiters();
            }
        })
    }

    /// Why this replica's log is offline, if a storage failure took it offline.
    pub fn storage_failure(&self) -> Option<std::sync::Arc<str>> {
        self.log.storage_failure()
    }

    /// Writes the producer-state snapshot and the high watermark and closes the log
    /// (clean shutdown).
    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        let mut producers = self.producers.lock();
        self.log.flush()?;
        self.write_producer_snapshot(&mut producers, now_ms);
        self.checkpoint_high_watermark()?;
        self.log.close()
    }

    /// Writes the high watermark to its checkpoint if it moved since the last write, so
    /// a restarted replica does not start from zero (or, worse, from its log end, which
    /// may hold records that were never committed). Unmanaged partitions write nothing:
    /// their high watermark is their log end offset.
    pub fn checkpoint_high_watermark(&self) -> Result<(), LogError> {
        let hw = {
            let replicas = self.replicas.lock();
            if !replicas.managed {
                return Ok(());
            }
            replicas.high_watermark
        };
        let mut written = self.checkpointed_hw.lock();
        if *written != Some(hw) {
            crate::log::checkpoint::write(&self.log.dir().join(HIGH_WATERMARK_FILE), hw)?;
            *written = Some(hw);
        }
        Ok(())
    }

    fn write_producer_snapshot(&self, producers: &mut ProducerStates, now_ms: i64) {
        producers.expire(now_ms, PRODUCER_EXPIRATION_MS);
        let snapshot = Snapshot {
            version: 1,
            offset: self.log.log_end_offset(),
            producers: producers.clone(),
        };
        let path = self.log.dir().join(PRODUCER_SNAPSHOT);
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&bytes)?;
                crate::durability::sync_file(&file, &tmp)?;
                std::fs::rename(&tmp, &path)
            });
        // A missing snapshot only makes the next recovery replay more of the log.
        if let Err(e) = written {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "could not write the producer-state snapshot");
        }
    }

    /// The epoch and last sequence number appended for `producer_id`, if tracked.
    pub fn producer_last_sequence(&self, producer_id: i64) -> Option<(i16, i32)> {
        let producers = self.producers.lock();
        let entry = producers.get(producer_id)?;
        Some((entry.epoch, entry.batches.back()?.last_seq))
    }

    /// Every idempotent producer this partition tracks, by producer id.
    pub fn producers(&self) -> Vec<ProducerSummary> {
        let producers = self.producers.lock();
        let mut out: Vec<ProducerSummary> = producers
            .iter()
            .map(|(&producer_id, entry)| ProducerSummary {
                producer_id,
                epoch: entry.epoch,
                last_sequence: entry.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: entry.last_timestamp,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// How many idempotent producers this partition tracks.
    pub fn producer_count(&self) -> usize {
        self.producers.lock().len()
    }

    /// Reads committed batches starting at the one holding `offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, LogError> {
        self.log
            .read(offset, max_bytes, self.high_watermark(), min_one)
    }
}

/// One idempotent producer as a partition knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    /// The producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub epoch: i16,
    /// The last sequence number appended (-1 for none).
    pub last_sequence: i32,
    /// The largest timestamp of its batches.
    pub last_timestamp: i64,
}

/// Waits for a change (see [`Partition::changed`]) on any of several partitions: a
/// long-polling fetch registers before it reads, then waits on this.
pub struct Changes<'a> {
    waits: Vec<std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>>,
}

impl std::fmt::Debug for Changes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("partitions", &self.waits.len())
            .finish()
    }
}

impl<'a> Changes<'a> {
    /// Registers for the next change of each partition; changes from now on count.
    pub fn register(partitions: impl IntoIterator<Item = &'a Partition>) -> Changes<'a> {
        let waits = partitions
            .into_iter()
            .map(|p| {
                let mut wait = Box::pin(p.changed());
                wait.as_mut().enable();
                wait
            })
            .collect();
        Changes { waits }
    }

    /// Resolves once any registered partition changed (never, for none).
    pub async fn wait(&mut self) {
        std::future::poll_fn(|cx| {
            for wait in &mut self.waits {
                if std::future::Future::poll(wait.as_mut(), cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Loads the producer-state snapshot (if it is readable and not beyond the log's end)
/// and replays the batch headers after it.
fn rebuild_producer_state(log: &Log) -> Result<ProducerStates, LogError> {
    let path = log.dir().join(PRODUCER_SNAPSHOT);
    let end = log.log_end_offset();
    let (mut state, mut next) = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) if s.version == 1 && s.offset <= end => (s.producers, s.offset),
            Ok(s) => {
                tracing::warn!(file = %path.display(), offset = s.offset, log_end_offset = end, "ignoring a producer-state snapshot that does not match the log");
                (ProducerStates::default(), 0)
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable producer-state snapshot");
                (ProducerStates::default(), 0)
            }
        },
        Err(_) => (ProducerStates::default(), 0),
    };
    if next < log.log_start_offset() {
        // Batches between what the snapshot covers (or the log's beginning) and the
        // log start are gone: producers that wrote only there are unknown here.
        state.forget_everything();
        next = log.log_start_offset();
    }
    while next < end {
        let read = log.read(next, REPLAY_CHUNK, end, true)?;
        if read.records.is_empty() {
            break;
        }
        let before = next;
        for item in Batches::new(&read.records) {
            let (header, _) = item?;
            state.record(&header);
            next = next.max(header.last_offset() + 1);
        }
        if next == before {
            break;
        }
    }
    Ok(state)
}

fn batch_ranges(buf: &[u8]) -> Result<Vec<std::ops::Range<usize>>, AppendError> {
    Batches::new(buf)
        .enumerate()
        .map(|(index, item)| {
            item.map(|(_, range)| range)
                .map_err(|source| AppendError::Corrupt { index, source })
        })
        .collect()
}

/// Checks every batch of a produce request's record set and returns the bytes to append
/// (recompressed if the topic says so). Nothing is allocated from a length before it is
/// checked against what is there.
pub fn validate(records: &Bytes, settings: &TopicSettings) -> Result<Bytes, AppendError> {
    if records.is_empty() {
        return Err(AppendError::Empty);
    }
    // Only a recompression changes the bytes: otherwise what passed is what was sent,
    // handed on without a copy.
    let mut out: Option<Vec<u8>> = None;
    for (index, item) in Batches::new(records).enumerate() {
        let (header, range) = item.map_err(|source| AppendError::Corrupt { index, source })?;
        let bytes = &records[range.clone()];
        if bytes.len() > settings.max_message_bytes.max(0) as usize {
            return Err(AppendError::TooLarge {
                index,
                size: bytes.len(),
                max: settings.max_message_bytes,
            });
        }
        batch::verify_crc(bytes).map_err(|source| AppendError::Corrupt { index, source })?;
        if header.is_control() {
            return Err(AppendError::InvalidRecord {
                index,
                reason: "producers may not write control batches",
            });
        }
        if header.is_transactional() {
            return Err(AppendError::InvalidRecord {
                index,
                reason: "transactional batches are not supported by this broker yet",
            });
        }
        // One walk over the (decompressed) records serves both checks.
        let (_, plain) = batch::records_section(bytes)
            .map_err(|source| AppendError::Corrupt { index, source })?;
        let mut actual: i32 = 0;
        let mut null_key = false;
        for record in batch::Records::new(&plain) {
            let record = record.map_err(|source| AppendError::Corrupt { index, source })?;
            null_key |= record.key.is_none();
            actual = actual.saturating_add(1);
        }
        if settings.compact && null_key {
            return Err(AppendError::InvalidRecord {
                index,
                reason: "compacted topics require a key on every record",
            });
        }
        if header.records_count <= 0
            || actual != header.records_count
            || header.last_offset_delta != header.records_count - 1
        {
            return Err(AppendError::CountMismatch {
                index,
                declared: header.records_count,
                last_offset_delta: header.last_offset_delta,
                actual,
            });
        }
        match settings.compression {
            CompressionPolicy::Codec(codec) if codec != header.compression() => {
                let out = out.get_or_insert_with(|| {
                    let mut out = Vec::with_capacity(records.len());
                    out.extend_from_slice(&records[..range.start]);
                    out
                });
                recompress(records.slice(range), codec, out)
                    .map_err(|reason| AppendError::Recompress { index, reason })?;
            }
            _ => {
                if let Some(out) = out.as_mut() {
                    out.extend_from_slice(bytes);
                }
            }
        }
    }
    Ok(out.map_or_else(|| records.clone(), Bytes::from))
}

/// Re-encodes one batch with another codec, keeping producer id, epoch, sequences and
/// timestamps, so broker-side compression is invisible to consumers except in size.
fn recompress(batch: Bytes, codec: Compression, out: &mut Vec<u8>) -> Result<(), String> {
    let mut input = batch;
    let set = RecordBatchDecoder::decode(&mut input).map_err(|e| e.to_string())?;
    let mut encoded = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut encoded,
        set.records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .map_err(|e| e.to_string())?;
    out.extend_from_slice(&encoded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::topic::resolve;
    use crate::config::LogDefaults;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{Record, TimestampType};
    use std::collections::BTreeMap;

    fn record(i: i64) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            // The encoder keeps records in one batch while offset - sequence is constant;
            // this yields baseSequence -1, as a non-idempotent producer sends.
            sequence: (i - 1) as i32,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{i}"))),
            headers: IndexMap::new(),
        }
    }

    fn batch(n: i64, compression: Compression) -> Bytes {
        let records: Vec<Record> = (0..n).map(record).collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn partition(dir: &std::path::Path, overrides: &[(&str, &str)]) -> Partition {
        let overrides: BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = Arc::new(resolve(&LogDefaults::default(), &overrides));
        let log = Log::open(dir, settings.log.clone(), 0).unwrap();
        Partition::open("t".into(), 0, log, settings).unwrap()
    }

    fn read_all(p: &Partition) -> Vec<Record> {
        let result = p.read(0, usize::MAX, true).unwrap();
        let mut bytes = result.records;
        RecordBatchDecoder::decode_all(&mut bytes)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.records)
            .collect()
    }

    #[test]
    fn appends_assign_consecutive_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), &[]);
        let (a, t) = p.append(&batch(3, Compression::None), 5).unwrap();
        assert_eq!((a.base_offset, a.last_offset, t), (0, 2, -1));
        let (b, _) = p.append(&batch(2, Compression::Lz4), 6).unwrap();
        assert_eq!((b.base_offset, b.last_offset), (3, 4));
        let offsets: Vec<i64> = read_all(&p).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.high_watermark(), 5);
    }

    #[test]
    fn corrupt_and_lying_batches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), &[]);
        let mut bad = batch(3, Compression::None).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            p.append(&Bytes::from(bad), 0),
            Err(AppendError::Corrupt { .. })
        ));

        // Claim 4 records where 3 are present, and fix the CRC so only the count lies.
        let mut lying = batch(3, Compression::None).to_vec();
        lying[57..61].copy_from_slice(&4i32.to_be_bytes());
        let crc = crc32c::crc32c(&lying[21..]);
        lying[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            p.append(&Bytes::from(lying), 0),
            Err(AppendError::CountMismatch {
                declared: 4,
                actual: 3,
                ..
            })
        ));
        assert!(matches!(
            p.append(&Bytes::new(), 0),
            Err(AppendError::Empty)
        ));
        assert_eq!(p.log().log_end_offset(), 0);
    }

    #[test]
    fn max_message_bytes_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), &[("max.message.bytes", "100")]);
        assert!(matches!(
            p.append(&batch(20, Compression::None), 0),
            Err(AppendError::TooLarge { max: 100, .. })
        ));
    }

    #[test]
    fn broker_side_compression_and_append_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(
            dir.path(),
            &[
                ("compression.type", "zstd"),
                ("message.timestamp.type", "LogAppendTime"),
            ],
        );
        let (_, t) = p.append(&batch(10, Compression::None), 42_000).unwrap();
        assert_eq!(t, 42_000);
        let stored = p.read(0, usize::MAX, true).unwrap().records;
        let header = BatchHeader::parse(&stored).unwrap();
        assert_eq!(
            header.total_len(),
            stored.len(),
            "one batch in, one batch out"
        );
        assert_eq!(header.compression(), Compression::Zstd);
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 42_000);
        assert_eq!(header.base_sequence, -1);
        batch::verify_crc(&stored).unwrap();
        let records = read_all(&p);
        assert_eq!(records.len(), 10);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_bytes()));
        }
    }

    fn idempotent_batch(pid: i64, epoch: i16, first_seq: i32, n: i64) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                producer_id: pid,
                producer_epoch: epoch,
                sequence: first_seq + i as i32,
                ..record(i)
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn idempotent_retries_get_their_original_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), &[]);
        let first = idempotent_batch(9, 0, 0, 3);
        let (a, _) = p.append(&first, 0).unwrap();
        let (b, _) = p.append(&idempotent_batch(9, 0, 3, 2), 0).unwrap();
        assert_eq!((a.base_offset, b.base_offset), (0, 3));
        let (retry, _) = p.append(&first, 0).unwrap();
        assert_eq!((retry.base_offset, retry.last_offset), (0, 2));
        assert_eq!(p.log().log_end_offset(), 5, "a retry appends nothing");
        assert!(matches!(
            p.append(&idempotent_batch(9, 0, 9, 1), 0),
            Err(AppendError::Sequence(SequenceError::OutOfOrder {
                expected: 5,
                got: 9,
                ..
            }))
        ));
        assert!(p.append(&idempotent_batch(9, 1, 0, 1), 0).is_ok());
        assert!(matches!(
            p.append(&idempotent_batch(9, 0, 5, 1), 0),
            Err(AppendError::Sequence(SequenceError::InvalidEpoch { .. }))
        ));
    }

    #[test]
    fn an_internal_producer_fenced_by_a_bumped_epoch_keeps_its_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let pid = producer_state::INTERNAL_PRODUCER_IDS + 3;
        {
            let p = partition(dir.path(), &[]);
            // The first runner (epoch 1) writes sequences 0..5.
            p.append(&idempotent_batch(pid, 1, 0, 3), 0).unwrap();
            p.append(&idempotent_batch(pid, 1, 3, 2), 0).unwrap();
            // The runner that took over (epoch 2) replays them: nothing is appended and
            // each batch gets the offsets it had.
            let (a, _) = p.append(&idempotent_batch(pid, 2, 0, 3), 0).unwrap();
            let (b, _) = p.append(&idempotent_batch(pid, 2, 3, 2), 0).unwrap();
            assert_eq!(
                (a.base_offset, a.last_offset, b.base_offset, b.last_offset),
                (0, 2, 3, 4)
            );
            assert_eq!(p.log().log_end_offset(), 5, "a replay appends nothing");
            let (c, _) = p.append(&idempotent_batch(pid, 2, 5, 1), 0).unwrap();
            assert_eq!(c.base_offset, 5);
            assert_eq!(p.producer_last_sequence(pid), Some((2, 5)));
            // Unclean restart below: the state is rebuilt from the log.
        }
        let p = partition(dir.path(), &[]);
        assert_eq!(p.producer_last_sequence(pid), Some((2, 5)));
        // The old runner is refused, whatever it sends.
        for batch in [
            idempotent_batch(pid, 1, 6, 1),
            idempotent_batch(pid, 1, 0, 3),
        ] {
            let e = p.append(&batch, 0).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("producer {pid} epoch 1 is older than the current epoch 2")
            );
            assert!(matches!(
                e,
                AppendError::Sequence(SequenceError::InvalidEpoch {
                    epoch: 1,
                    current: 2,
                    ..
                })
            ));
        }
        let (replay, _) = p.append(&idempotent_batch(pid, 2, 3, 2), 0).unwrap();
        assert_eq!(
            replay.base_offset, 3,
            "replays are still recognised after recovery"
        );
        assert_eq!(p.log().log_end_offset(), 6);
    }

    #[test]
    fn producer_state_survives_clean_and_unclean_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = idempotent_batch(4, 0, 0, 2);
        {
            let p = partition(dir.path(), &[]);
            p.append(&first, 0).unwrap();
            p.close(0).unwrap();
        }
        {
            // Clean restart: from the snapshot.
            let p = partition(dir.path(), &[]);
            assert_eq!(p.producer_count(), 1);
            let (retry, _) = p.append(&first, 0).unwrap();
            assert_eq!(retry.base_offset, 0);
            p.append(&idempotent_batch(4, 0, 2, 2), 0).unwrap();
            // Dropped without close: the next open replays the log after the snapshot.
        }
        let p = partition(dir.path(), &[]);
        let (retry, _) = p.append(&idempotent_batch(4, 0, 2, 2), 0).unwrap();
        assert_eq!((retry.base_offset, retry.last_offset), (2, 3));
        assert_eq!(p.log().log_end_offset(), 4);
        std::fs::write(dir.path().join(PRODUCER_SNAPSHOT), b"garbage").unwrap();
        drop(p);
        let p = partition(dir.path(), &[]);
        assert!(matches!(
            p.append(&idempotent_batch(4, 0, 9, 1), 0),
            Err(AppendError::Sequence(_))
        ));
    }

    #[test]
    fn compacted_topics_refuse_keyless_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path(), &[("cleanup.policy", "compact")]);
        let keyless: Vec<Record> = (0..3)
            .map(|i| Record {
                key: None,
                ..record(i)
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            keyless.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::Snappy,
            },
        )
        .unwrap();
        assert!(matches!(
            p.append(&buf.freeze(), 0),
            Err(AppendError::InvalidRecord { .. })
        ));
        assert!(p.append(&batch(3, Compression::Snappy), 0).is_ok());
    }
}
