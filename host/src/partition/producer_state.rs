//! Idempotent producer state of one partition: for every producer id, its epoch and the
//! sequence ranges and offsets of its last five batches.
//!
//! This is what makes a retried batch harmless: a batch whose sequence range matches one
//! of the last five is a duplicate and is answered with the offsets it got the first
//! time, without appending; a batch that skips sequences is refused with
//! OUT_OF_ORDER_SEQUENCE_NUMBER, and one from an older epoch with INVALID_PRODUCER_EPOCH.
//! Five is the most batches a Kafka producer keeps in flight per partition.
//!
//! The state is derived from the log: it is rebuilt by replaying batch headers, starting
//! from a snapshot (written at clean shutdown and whenever the log rolls a segment) so
//! that recovery replays only the tail. Everything here is pure; the partition does I/O.
//!
//! A producer this partition has no state for may start only at sequence 0, unless the
//! partition may have forgotten it (its state expired, or the history that held it is
//! gone): a first batch at a later sequence from a producer that never wrote here means
//! its earlier batches went somewhere else -- typically to a former leader that
//! appended them and lost them to truncation -- and accepting it would let the client
//! take those for written (librdkafka acknowledges a failed request's records once a
//! later sequence succeeds). It is refused with OUT_OF_ORDER_SEQUENCE_NUMBER, which
//! makes the client bump its epoch and send everything unacknowledged again. Which
//! producers may have been forgotten is kept as the largest such id (ids are handed
//! out counting up); when it cannot be known (state rebuilt from a log whose start was
//! deleted), every unknown producer is accepted, as Kafka does.
//!
//! Producer ids from [`INTERNAL_PRODUCER_IDS`] on are the broker's own writers (a
//! transform partition's outputs): their epoch is bumped by every runner that takes
//! over, to fence the runner before it, but their sequence numbers are derived from
//! input positions and do not restart. For them a higher epoch continues the same
//! sequence space (a replay of sequences written under the older epoch is still a
//! duplicate) while a lower epoch is still refused. Kafka clients get their ids from
//! InitProducerId, far below that range, and keep Kafka's rules: a new epoch restarts
//! the sequence at 0.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::log::batch::BatchHeader;

/// Batches remembered per producer, as Kafka does (max.in.flight.requests ≤ 5).
pub const BATCHES_PER_PRODUCER: usize = 5;

/// The first producer id of the broker's own writers, whose sequence numbers continue
/// across epochs (see the module documentation). Ids handed to clients are counted up
/// from 0 and never get near it.
pub const INTERNAL_PRODUCER_IDS: i64 = 1 << 62;

/// Whether `producer_id` is one of the broker's own writers' (see the module
/// documentation). Kafka clients may not write with such ids: the Kafka listener
/// refuses them, so that no client can fence or duplicate a transform's output.
pub fn is_internal(producer_id: i64) -> bool {
    producer_id >= INTERNAL_PRODUCER_IDS
}

/// Whether `producer_id`'s sequence numbers continue across its epochs.
pub fn continues_across_epochs(producer_id: i64) -> bool {
    is_internal(producer_id)
}

/// Why a batch's producer metadata is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch comes from an epoch older than the producer's current one.
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch on record.
        current: i16,
    },
    /// The batch does not continue the producer's sequence.
    #[error("producer {producer_id} epoch {epoch}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The next sequence on record.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
}

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// First sequence number in the batch.
    pub first_seq: i32,
    /// Last sequence number in the batch.
    pub last_seq: i32,
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offset of the batch's last record.
    pub last_offset: i64,
}

/// One producer's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// The last batches, oldest first.
    pub batches: VecDeque<BatchRecord>,
    /// Largest batch timestamp seen, for expiry.
    pub last_timestamp: i64,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// It was appended before: answer with these offsets and append nothing.
    Duplicate(BatchRecord),
}

/// The idempotent producer state of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// The largest producer id this state may have forgotten (expired, or lost with
    /// history it was rebuilt without): unknown producers up to it may continue at any
    /// sequence. -1 when nothing was forgotten; a snapshot from before it was kept
    /// reads as "anything may have been".
    #[serde(default = "anything_forgotten")]
    forgotten_up_to: i64,
}

impl Default for ProducerStates {
    fn default() -> Self {
        ProducerStates {
            producers: HashMap::new(),
            forgotten_up_to: -1,
        }
    }
}

fn anything_forgotten() -> i64 {
    i64::MAX
}

/// Sequence numbers wrap from i32::MAX to 0.
fn seq_add(seq: i32, delta: i32) -> i32 {
    ((seq as i64 + delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerStates {
    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer's state.
    pub fn iter(&self) -> impl Iterator<Item = (&i64, &ProducerEntry)> {
        self.producers.iter()
    }

    /// One producer's state.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Copies one producer's state from `other` unless this state already has it (and
    /// what `other` may have forgotten); used to judge a request's batches without
    /// cloning every producer.
    pub fn adopt(&mut self, producer_id: i64, other: &ProducerStates) {
        self.forgotten_up_to = self.forgotten_up_to.max(other.forgotten_up_to);
        if let (std::collections::hash_map::Entry::Vacant(slot), Some(entry)) = (
            self.producers.entry(producer_id),
            other.producers.get(&producer_id),
        ) {
            slot.insert(entry.clone());
        }
    }

    /// Marks every producer as possibly forgotten: the state was rebuilt from a log
    /// whose beginning is gone, so producers that wrote only there are unknown here.
    pub fn forget_everything(&mut self) {
        self.forgotten_up_to = i64::MAX;
    }

    /// Decides whether a batch from an idempotent producer may be appended.
    /// Batches without a producer id (-1) or sequence (-1) are always appended.
    pub fn check(&self, header: &BatchHeader) -> Result<Verdict, SequenceError> {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return Ok(Verdict::Append);
        }
        let first = header.base_sequence;
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // No state: a new producer, which starts at 0, or one this partition
            // forgot, which may continue where it was (see the module documentation).
            if first != 0
                && header.producer_id > self.forgotten_up_to
                && !continues_across_epochs(header.producer_id)
            {
                return Err(SequenceError::OutOfOrder {
                    producer_id: header.producer_id,
                    epoch: header.producer_epoch,
                    expected: 0,
                    got: first,
                });
            }
            return Ok(Verdict::Append);
        };
        let last = seq_add(first, header.last_offset_delta);
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch && !continues_across_epochs(header.producer_id) {
            // A bumped epoch restarts the sequence.
            if first != 0 {
                return Err(SequenceError::OutOfOrder {
                    producer_id: header.producer_id,
                    epoch: header.producer_epoch,
                    expected: 0,
                    got: first,
                });
            }
            return Ok(Verdict::Append);
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(Verdict::Duplicate(*dup));
        }
        let expected = entry
            .batches
            .back()
            .map(|b| seq_add(b.last_seq, 1))
            .unwrap_or(0);
        if first != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                expected,
                got: first,
            });
        }
        Ok(Verdict::Append)
    }

    /// Records an appended batch; `header` carries its final base offset.
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            if !continues_across_epochs(header.producer_id) {
                entry.batches.clear();
            }
        }
        entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
        if header.base_sequence < 0 {
            return;
        }
        if entry.batches.len() == BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchRecord {
            first_seq: header.base_sequence,
            last_seq: seq_add(header.base_sequence, header.last_offset_delta),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
    }

    /// Forgets producers whose last batch is older than `now_ms - max_age_ms`, as Kafka's
    /// `producer.id.expiration.ms` does.
    pub fn expire(&mut self, now_ms: i64, max_age_ms: i64) {
        let mut forgotten = self.forgotten_up_to;
        self.producers.retain(|&id, e| {
            let keep = e.last_timestamp < 0 || e.last_timestamp >= now_ms - max_age_ms;
            if !keep {
                forgotten = forgotten.max(id);
            }
            keep
        });
        self.forgotten_up_to = forgotten;
    }
}

/// A snapshot: the state as of every batch below `offset`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version.
    pub version: u32,
    /// The state covers every batch below this offset.
    pub offset: i64,
    /// The state.
    pub producers: ProducerStates,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 1000,
            max_timestamp: 1000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn in_sequence_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        let a = header(7, 0, 0, 3, 10);
        assert_eq!(s.check(&a), Ok(Verdict::Append));
        s.record(&a);
        let b = header(7, 0, 3, 2, 13);
        assert_eq!(s.check(&b), Ok(Verdict::Append));
        s.record(&b);
        // The retry of `a` gets its original offsets.
        match s.check(&header(7, 0, 0, 3, -1)) {
            Ok(Verdict::Duplicate(r)) => assert_eq!((r.base_offset, r.last_offset), (10, 12)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gaps_and_stale_epochs_are_refused() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 2, 0, 3, 0));
        assert_eq!(
            s.check(&header(7, 2, 5, 1, -1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                epoch: 2,
                expected: 3,
                got: 5
            })
        );
        assert_eq!(
            s.check(&header(7, 1, 3, 1, -1)),
            Err(SequenceError::InvalidEpoch {
                producer_id: 7,
                epoch: 1,
                current: 2
            })
        );
        // A new epoch must start at 0.
        assert!(s.check(&header(7, 3, 4, 1, -1)).is_err());
        assert_eq!(s.check(&header(7, 3, 0, 1, -1)), Ok(Verdict::Append));
    }

    const INTERNAL: i64 = INTERNAL_PRODUCER_IDS + 7;

    #[test]
    fn an_internal_producers_bumped_epoch_continues_its_sequence() {
        let mut s = ProducerStates::default();
        let a = header(INTERNAL, 1, 0, 3, 0);
        s.record(&a);
        s.record(&header(INTERNAL, 1, 3, 2, 3));
        // The runner that took over (epoch 2) replays what the old one wrote: the same
        // sequences are duplicates, answered with their offsets, not a new sequence.
        match s.check(&header(INTERNAL, 2, 0, 3, -1)) {
            Ok(Verdict::Duplicate(r)) => assert_eq!((r.base_offset, r.last_offset), (0, 2)),
            other => panic!("{other:?}"),
        }
        // It does not restart at 0: the next new sequence is 5.
        assert_eq!(
            s.check(&header(INTERNAL, 2, 6, 1, -1)),
            Err(SequenceError::OutOfOrder {
                producer_id: INTERNAL,
                epoch: 2,
                expected: 5,
                got: 6
            })
        );
        let next = header(INTERNAL, 2, 5, 1, 5);
        assert_eq!(s.check(&next), Ok(Verdict::Append));
        s.record(&next);
        assert_eq!(s.get(INTERNAL).unwrap().epoch, 2);
        // Remembered across the bump: the old epoch's batches still answer replays.
        assert!(matches!(
            s.check(&header(INTERNAL, 2, 3, 2, -1)),
            Ok(Verdict::Duplicate(_))
        ));
        // The old runner is fenced, even with the next sequence or a duplicate of its own.
        for (seq, count) in [(6, 1), (0, 3)] {
            assert_eq!(
                s.check(&header(INTERNAL, 1, seq, count, -1)),
                Err(SequenceError::InvalidEpoch {
                    producer_id: INTERNAL,
                    epoch: 1,
                    current: 2
                })
            );
        }
    }

    #[test]
    fn a_clients_bumped_epoch_still_restarts_its_sequence() {
        // Ids below the internal range keep Kafka's rules, right up to its edge.
        for pid in [7, INTERNAL_PRODUCER_IDS - 1] {
            let mut s = ProducerStates::default();
            s.record(&header(pid, 1, 0, 3, 0));
            assert_eq!(
                s.check(&header(pid, 2, 3, 1, -1)),
                Err(SequenceError::OutOfOrder {
                    producer_id: pid,
                    epoch: 2,
                    expected: 0,
                    got: 3
                })
            );
            // A replay of the old epoch's batch under the new epoch is not a duplicate.
            let restart = header(pid, 2, 0, 3, 3);
            assert_eq!(s.check(&restart), Ok(Verdict::Append));
            s.record(&restart);
            assert_eq!(s.get(pid).unwrap().batches.len(), 1, "a new epoch forgets");
            assert_eq!(
                s.check(&header(pid, 1, 3, 1, -1)),
                Err(SequenceError::InvalidEpoch {
                    producer_id: pid,
                    epoch: 1,
                    current: 2
                })
            );
        }
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&header(1, 0, i, 1, i as i64));
        }
        assert_eq!(s.get(1).unwrap().batches.len(), BATCHES_PER_PRODUCER);
        assert!(matches!(
            s.check(&header(1, 0, 6, 1, -1)),
            Ok(Verdict::Duplicate(_))
        ));
        // Sequence 0 is no longer remembered and is not the next one either.
        assert!(s.check(&header(1, 0, 0, 1, -1)).is_err());
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.check(&header(1, 0, 0, 1, -1)), Ok(Verdict::Append));
    }

    #[test]
    fn non_idempotent_batches_are_not_tracked() {
        let mut s = ProducerStates::default();
        let h = header(-1, -1, -1, 5, 0);
        assert_eq!(s.check(&h), Ok(Verdict::Append));
        s.record(&h);
        assert!(s.is_empty());
    }

    #[test]
    fn old_producers_expire() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 1, 0));
        s.expire(1000 + 10, 100);
        assert_eq!(s.len(), 1);
        s.expire(1000 + 101, 100);
        assert!(s.is_empty());
    }

    #[test]
    fn an_unknown_producer_starts_at_sequence_zero() {
        let s = ProducerStates::default();
        assert_eq!(s.check(&header(7, 0, 0, 3, 0)), Ok(Verdict::Append));
        // Its first batch went elsewhere (a former leader that lost it): refused, so the
        // client sends it again instead of taking it for written.
        assert_eq!(
            s.check(&header(7, 0, 17, 3, 0)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                epoch: 0,
                expected: 0,
                got: 17
            })
        );
        // The broker's own writers continue their sequences wherever they write.
        let internal = INTERNAL_PRODUCER_IDS + 3;
        assert_eq!(s.check(&header(internal, 4, 17, 3, 0)), Ok(Verdict::Append));
    }

    #[test]
    fn a_forgotten_producer_continues_where_it_was() {
        let mut s = ProducerStates::default();
        let mut h = header(7, 0, 0, 3, 0);
        h.max_timestamp = 1_000;
        s.record(&h);
        let mut h = header(20, 0, 0, 1, 3);
        h.max_timestamp = 9_000;
        s.record(&h);
        s.expire(10_000, 5_000);
        assert!(s.get(7).is_none() && s.get(20).is_some());
        // Expired: it may continue at any sequence, and so may any id up to its own
        // (handed out before it, so possibly forgotten too)...
        assert_eq!(s.check(&header(7, 0, 3, 1, 4)), Ok(Verdict::Append));
        assert_eq!(s.check(&header(5, 0, 40, 1, 4)), Ok(Verdict::Append));
        // ...but not a later id, which this partition never knew.
        assert!(matches!(
            s.check(&header(8, 0, 40, 1, 4)),
            Err(SequenceError::OutOfOrder {
                expected: 0,
                got: 40,
                ..
            })
        ));
        // A request's batches are judged with what the partition may have forgotten.
        let mut pending = ProducerStates::default();
        pending.adopt(7, &s);
        assert_eq!(pending.check(&header(7, 0, 3, 1, 4)), Ok(Verdict::Append));
        // Rebuilt without the log's beginning: anyone may have been forgotten.
        s.forget_everything();
        assert_eq!(s.check(&header(8, 0, 40, 1, 4)), Ok(Verdict::Append));
    }

    #[test]
    fn a_snapshot_from_before_forgetting_was_kept_forgets_everything() {
        let old = r#"{"version":1,"offset":3,"producers":{"producers":{}}}"#;
        let snapshot: Snapshot = serde_json::from_str(old).unwrap();
        assert_eq!(
            snapshot.producers.check(&header(8, 0, 40, 1, 4)),
            Ok(Verdict::Append)
        );
        let fresh = serde_json::to_string(&Snapshot {
            version: 1,
            offset: 0,
            producers: ProducerStates::default(),
        })
        .unwrap();
        let back: Snapshot = serde_json::from_str(&fresh).unwrap();
        assert!(back.producers.check(&header(8, 0, 40, 1, 4)).is_err());
    }
}
