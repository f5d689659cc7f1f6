//! The broker as a producer into its own cluster: what transform and mirror runners
//! write goes through here, to any partition of the cluster.
//!
//! A write is acknowledged by the partition's in-sync replicas (acks=all) whether this
//! broker leads the partition (appended here, then waited on) or another broker does
//! (a Kafka Produce to it, see [`remote`](super::remote)). An idempotent writer gives its
//! batches a producer id and sequence numbers; before its first write to a partition
//! (and after any failed write) it asks where that producer's sequence stands there,
//! and skips what the partition already holds, so a runner that replays records after a
//! crash or a failover never writes them twice.
//!
//! Writers with an internal producer id (a transform partition's) also carry an epoch,
//! the runner's: a partition that has seen a higher one refuses the batch
//! (INVALID_PRODUCER_EPOCH), and so does this writer when it asks where its sequence
//! stands and finds a higher epoch there. That is [`WriteError::Fenced`], never retried:
//! a newer runner of the same input partition writes now.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::remote::{Leaders, RemoteError};
use super::{now_ms, Broker};
use crate::partition::encode::{encode_batch, encode_sequenced_batch, OutRecord};
use crate::partition::producer_state::{continues_across_epochs, SequenceError};
use crate::partition::{AppendError, Partition, Role};
use kafka_protocol::error::ResponseError;

/// Bytes per appended batch (well under the default `max.message.bytes`).
const BATCH_BYTES: usize = 512 * 1024;
/// How long a local write may wait for its in-sync replicas.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The partition is not writable now (no leader, not open yet, a leader that
    /// refused or did not answer): worth retrying after a backoff.
    #[error("{0}")]
    Unavailable(String),
    /// A newer writer with the same producer id and a higher epoch writes to the
    /// partition: this one must stop (retrying cannot help).
    #[error("fenced: {0}")]
    Fenced(String),
    /// The records cannot be encoded as a batch.
    #[error("encoding records for '{topic}': {reason}")]
    Encode {
        /// The topic written to.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// What an [`ClusterWriter::append`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records written (records a replay found already there are not counted).
    pub written: u64,
    /// Per batch written: the index (into the records given) of its first record and
    /// the offset the partition gave it. Contiguous within a batch.
    pub batches: Vec<(usize, i64)>,
}

/// An idempotent writer's identity and where its sequence stands in one partition.
#[derive(Debug)]
pub struct Sequence<'a> {
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub epoch: i16,
    /// The next sequence number in the partition written to; advanced by the append.
    pub next: &'a mut i32,
}

/// Where a partition's leader is.
enum Leader {
    Local(Arc<Partition>),
    Remote(i32),
}

/// One runner's writer: its connections to the leaders it writes to, and which
/// partitions it has checked its sequence against.
pub struct ClusterWriter {
    broker: Arc<Broker>,
    leaders: Leaders,
    checked: BTreeSet<(String, i32)>,
}

impl std::fmt::Debug for ClusterWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterWriter")
            .field("checked", &self.checked.len())
            .finish_non_exhaustive()
    }
}

impl ClusterWriter {
    /// A writer that has checked nothing yet.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            broker,
            leaders: Leaders::default(),
            checked: BTreeSet::new(),
        }
    }

    /// Forgets every sequence check: the next write to each partition asks again what
    /// it holds (after a step that did not complete and will be replayed).
    pub fn recheck(&mut self) {
        self.checked.clear();
    }

    fn leader(&self, topic: &str, index: i32) -> Result<Leader, WriteError> {
        let me = self.broker.config().broker.node_id;
        let leader = self
            .broker
            .metadata()
            .topics
            .get(topic)
            .and_then(|t| t.assignments.get(index as usize).map(|a| a.leader))
            .ok_or_else(|| {
                WriteError::Unavailable(format!("partition {index} of '{topic}' does not exist"))
            })?;
        if leader == me {
            let local = self
                .broker
                .partition(topic, index)
                .filter(|p| matches!(p.role(), Role::Leader { .. }))
                .ok_or_else(|| {
                    WriteError::Unavailable(format!(
                        "partition {index} of '{topic}' is to be led here but is not open as leader yet"
                    ))
                })?;
            return Ok(Leader::Local(local));
        }
        if leader < 0 {
            return Err(WriteError::Unavailable(format!(
                "partition {index} of '{topic}' has no leader"
            )));
        }
        Ok(Leader::Remote(leader))
    }

    /// Appends `batch` to a partition, acknowledged by its in-sync replicas; returns the
    /// offset of its first record (none for a batch a remote leader already had).
    pub async fn send(
        &mut self,
        topic: &str,
        index: i32,
        batch: Bytes,
    ) -> Result<Option<i64>, WriteError> {
        let failed = |e: String| {
            WriteError::Unavailable(format!("writing partition {index} of '{topic}': {e}"))
        };
        let fenced = |e: String| {
            WriteError::Fenced(format!(
                "partition {index} of '{topic}' refused the write: {e}"
            ))
        };
        match self.leader(topic, index)? {
            Leader::Local(partition) => {
                let (info, _) = partition
                    .append_with_acks(&batch, now_ms(), -1)
                    .map_err(|e| match e {
                        AppendError::Sequence(SequenceError::InvalidEpoch { .. }) => {
                            fenced(e.to_string())
                        }
                        e => failed(e.to_string()),
                    })?;
                self.broker.metrics().produced(
                    partition.topic_name(),
                    batch.len(),
                    (info.last_offset - info.base_offset + 1).max(0) as u64,
                );
                partition
                    .wait_for_commit(info.last_offset + 1, COMMIT_TIMEOUT)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                Ok(Some(info.base_offset))
            }
            Leader::Remote(leader) => self
                .leaders
                .produce(&self.broker, leader, topic, index, batch)
                .await
                .map_err(|e| match e {
                    RemoteError::Refused {
                        error: ResponseError::InvalidProducerEpoch,
                        ..
                    } => fenced(e.to_string()),
                    e => failed(e.to_string()),
                }),
        }
    }

    /// Where `producer_id`'s sequence stands in a partition.
    async fn last_sequence(
        &mut self,
        topic: &str,
        index: i32,
        pid: i64,
    ) -> Result<Option<(i16, i32)>, WriteError> {
        match self.leader(topic, index)? {
            Leader::Local(partition) => Ok(partition.producer_last_sequence(pid)),
            Leader::Remote(leader) => self
                .leaders
                .last_sequence(&self.broker, leader, topic, index, pid)
                .await
                .map_err(|e| {
                    WriteError::Unavailable(format!(
                        "asking where partition {index} of '{topic}' stands: {e}"
                    ))
                }),
        }
    }

    /// Appends `records` to one partition in order, in batches. With `sequence`, the
    /// batches carry the producer id and sequence numbers from `sequence.next` on, and
    /// what the partition already holds of them is skipped.
    pub async fn append<R: OutRecord>(
        &mut self,
        topic: &str,
        index: i32,
        records: &[R],
        compression: Compression,
        sequence: Option<Sequence<'_>>,
    ) -> Result<Appended, WriteError> {
        let mut from = 0usize;
        let (producer, mut next_seq) = match &sequence {
            Some(s) => (Some((s.producer_id, s.epoch)), *s.next),
            None => (None, 0),
        };
        let key = (topic.to_string(), index);
        if let Some((pid, epoch)) = producer {
            if !self.checked.contains(&key) {
                // A replay: what the partition already holds from this producer is
                // skipped. Asked once per writer (and after a failed write): from then
                // on this writer is the producer's only one.
                let held = match self.last_sequence(topic, index, pid).await? {
                    Some((theirs, _)) if theirs > epoch => {
                        return Err(WriteError::Fenced(format!(
                            "partition {index} of '{topic}' holds producer {pid}'s epoch {theirs}, newer than this writer's {epoch}"
                        )))
                    }
                    // An internal producer's sequence continues across epochs: what an
                    // older epoch wrote is this writer's to skip too.
                    Some((theirs, last))
                        if theirs == epoch || continues_across_epochs(pid) =>
                    {
                        Some(last)
                    }
                    _ => None,
                };
                if let Some(last) = held {
                    let already = i64::from(last) - i64::from(next_seq) + 1;
                    if already > 0 {
                        from = (already as usize).min(records.len());
                        next_seq = advance(next_seq, from);
                        if from < already as usize {
                            // The partition is ahead of all of these: ask again next time.
                            if let Some(s) = sequence {
                                *s.next = next_seq;
                            }
                            return Ok(Appended::default());
                        }
                    }
                }
                self.checked.insert(key.clone());
            }
        }
        let mut appended = Appended::default();
        let result = self
            .append_from(
                topic,
                index,
                records,
                from,
                compression,
                producer,
                &mut next_seq,
                &mut appended,
            )
            .await;
        if result.is_err() {
            self.checked.remove(&key);
        }
        if let Some(s) = sequence {
            *s.next = next_seq;
        }
        result.map(|()| appended)
    }

    #[allow(clippy::too_many_arguments)]
    async fn append_from<R: OutRecord>(
        &mut self,
        topic: &str,
        index: i32,
        records: &[R],
        mut from: usize,
        compression: Compression,
        producer: Option<(i64, i16)>,
        next_seq: &mut i32,
        appended: &mut Appended,
    ) -> Result<(), WriteError> {
        while from < records.len() {
            let mut size = 0;
            let take = records[from..]
                .iter()
                .take_while(|r| {
                    size += r.size_hint();
                    size <= BATCH_BYTES
                })
                .count()
                .max(1);
            let chunk = &records[from..from + take];
            let batch = match producer {
                Some((pid, epoch)) => {
                    encode_sequenced_batch(chunk, compression, (pid, epoch, *next_seq))
                }
                None => encode_batch(chunk, compression),
            }
            .map_err(|e| WriteError::Encode {
                topic: topic.to_string(),
                reason: e.to_string(),
            })?;
            if let Some(base) = self.send(topic, index, batch).await? {
                appended.batches.push((from, base));
            }
            *next_seq = advance(*next_seq, take);
            appended.written += take as u64;
            from += take;
        }
        Ok(())
    }
}

/// Sequence numbers wrap from i32::MAX to 0, as Kafka's do.
fn advance(seq: i32, by: usize) -> i32 {
    ((i64::from(seq) + by as i64) % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::advance;

    #[test]
    fn sequences_wrap_like_kafkas() {
        assert_eq!(advance(5, 3), 8);
        assert_eq!(advance(i32::MAX, 1), 0);
        assert_eq!(advance(i32::MAX - 1, 4), 2);
    }
}
