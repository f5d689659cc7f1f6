//! One transform on one input partition: read committed input from the position in
//! `__quiver_transforms`, run it through the plugin, write the outputs through the
//! normal append path, then record the new position.
//!
//! Each read is processed as a unit on a blocking thread (the plugin and the appends
//! are synchronous); the task itself only waits: for input past its position, for a
//! backoff, or for the manager to stop it. Nothing here touches the produce or fetch
//! paths of the input, which go on at their own pace.
//!
//! A failing call is narrowed down by splitting the records in halves until one record
//! fails alone; that record is retried with backoff and then handed to the error
//! policy (dead-letter topic or stop). Exactly-once: outputs carry the transform
//! partition's producer id and sequence numbers that continue from those recorded with
//! the position, so outputs regenerated after a crash get the numbers they had, and
//! what an output partition already holds (its last sequence for that producer) is
//! skipped instead of written twice.
//!
//! Fencing: the producer id is an internal one (see
//! [`crate::partition::producer_state`]) and its epoch is the input partition's leader
//! epoch, which the controller bumps on every leadership change. A runner left on a
//! former leader (cut off from the cluster, still believing it leads) writes with an
//! older epoch than the runner of the new leader, so once the new one has written to an
//! output partition that partition refuses the old one (INVALID_PRODUCER_EPOCH); the
//! old one ends as `fenced` rather than retrying. The sequence numbers do not restart
//! with the epoch, so the new runner's replay of what the old one wrote is still
//! recognised and skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use parking_lot::Mutex;
use quiver_plugin_sdk::columns::ColumnsBuilder;
use serde::Serialize;
use tokio::sync::watch;

use super::progress::{self, Progress, PROGRESS_TOPIC};
use super::spec::{OnError, StartFrom, TransformSpec};
use crate::broker::produce::{choose_partitions, NewRecord};
use crate::broker::writer::{ClusterWriter, Sequence, WriteError};
use crate::broker::{now_ms, Broker};
use crate::log::batch::{decode_records, owned_headers, DecodedRecord};
use crate::metrics::latency::LatencyWindow;
use crate::partition::encode::RecordData;
use crate::partition::producer_state::{continues_across_epochs, INTERNAL_PRODUCER_IDS};
use crate::partition::Partition;
use crate::plugin::transform::{TransformOutput, TransformSession};
use crate::plugin::Plugins;

/// Input read per step.
const READ_BYTES: usize = 1024 * 1024;
/// Attempts at a record that fails alone before the error policy takes it.
const RECORD_ATTEMPTS: u32 = 3;
/// Records in a row lost to traps (with no success between) after which the partition
/// is marked failed rather than burning CPU on every record.
const TRAPPED_RECORDS_TO_FAIL: u32 = 10;
/// Wait before retrying a step that could not complete (an output partition without a
/// leader, a plugin that would not start).
const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// What the operator sees of one transform partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionReport {
    /// The input partition.
    pub partition: i32,
    /// starting, running, paused, stopped, failed, fenced or waiting.
    pub state: String,
    /// Why it is stopped, failed or waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The next input offset to process.
    pub position: i64,
    /// The input's high watermark when last looked at.
    pub high_watermark: i64,
    /// Records behind: high watermark minus position.
    pub lag: i64,
    /// Input records processed.
    pub records_in: u64,
    /// Output records written (not counting replays skipped as already written).
    pub records_out: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Failed plugin calls.
    pub errors: u64,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The plugin version running.
    pub plugin_version: u32,
    /// The epoch its outputs are written with (the input partition's leader epoch
    /// when the runner started); -1 for an at-least-once transform, which has no
    /// producer identity.
    pub producer_epoch: i16,
    /// Latency from an input record's timestamp to its outputs being acknowledged by
    /// their in-sync replicas, median over recent steps, ms (0 before the first).
    pub latency_p50_ms: i64,
    /// See `latency_p50_ms`: the 99th percentile.
    pub latency_p99_ms: i64,
    #[serde(skip)]
    pub(super) latencies: LatencyWindow,
}

impl PartitionReport {
    /// The report for the operator, with the latency percentiles worked out now
    /// rather than on every step.
    pub fn snapshot(&self) -> Self {
        let mut out = self.clone();
        if let Some((p50, p99)) = self.latencies.p50_p99() {
            out.latency_p50_ms = p50;
            out.latency_p99_ms = p99;
        }
        out
    }
}

/// A report shared between a runner and the operator's view of it.
pub type SharedReport = Arc<Mutex<PartitionReport>>;

/// The progress records this broker knows: loaded once from `__quiver_transforms`,
/// then kept current by every commit made here.
pub type ProgressMap = Arc<Mutex<BTreeMap<String, Progress>>>;

/// An output record on its way to a topic.
#[derive(Debug, Clone)]
struct OutRecord {
    /// Index into the spec's written topics (outputs, then the dead-letter topic).
    target: usize,
    /// The chosen partition, or -1.
    partition: i32,
    data: RecordData,
}

/// Why a step ended early.
#[derive(Debug)]
enum Halt {
    /// Stop at this input offset (error policy `stop`), with the error.
    Stop(i64, String),
    /// The plugin is unusable here; stop the partition with the reason.
    Fail(String),
    /// Like `Fail`, found at this input record: the output of the records before it
    /// (dead letters included) is written and the position moves to it first.
    FailAt(i64, String),
    /// The transform was paused, changed or removed while the step ran: nothing of it
    /// is written, and the task ends.
    Cancelled,
    /// Something outside the plugin (an output partition not led here, a write that
    /// failed): retry the step from the committed position after a backoff.
    Retry(String),
    /// A newer runner of this input partition (a higher producer epoch) writes: this
    /// one ends without retrying.
    Fenced(String),
}

/// Everything one transform partition needs between steps.
pub(super) struct Runner {
    pub broker: Arc<Broker>,
    pub plugins: Arc<Plugins>,
    pub spec: TransformSpec,
    pub partition: i32,
    pub report: SharedReport,
    pub progress: ProgressMap,
    /// The input partition's leader epoch this runner was started for.
    pub leader_epoch: i32,
}

/// The producer epoch of a runner started at `leader_epoch`: the leader epoch itself
/// for an internal producer id (held at the largest epoch a batch can carry: past it
/// the outputs are still deduplicated, no longer fenced), 0 for an id from before
/// epochs were bumped, whose sequences a bumped epoch would restart.
pub(super) fn producer_epoch(producer_id: i64, leader_epoch: i32) -> i16 {
    if continues_across_epochs(producer_id) {
        leader_epoch.clamp(0, i32::from(i16::MAX)) as i16
    } else {
        0
    }
}

/// A step's working state, moved onto a blocking thread and back.
struct Work {
    broker: Arc<Broker>,
    plugins: Arc<Plugins>,
    spec: TransformSpec,
    partition: i32,
    input: Arc<Partition>,
    session: Option<TransformSession>,
    /// The last committed progress.
    committed: Progress,
    /// Progress as this step advances it (sequences move as outputs are encoded).
    position: Progress,
    report: SharedReport,
    trapped_in_a_row: u32,
    pending: Vec<OutRecord>,
    records_in: u64,
    progress: ProgressMap,
    writer: ClusterWriter,
}

/// Output records bound for one partition (topic, partition), in order.
type Group = ((String, i32), Vec<RecordData>);

/// The outputs of one step, placed: per output partition, its records in order.
struct Placed {
    /// Where the input position moves once they are written.
    position: i64,
    groups: Vec<Group>,
    /// Why the step ended before the end of its input (`Stop` or `Fail`), to report
    /// once what came before is written.
    halt: Option<Halt>,
    /// Timestamps of the first and last input records processed, for the latency.
    timestamps: Option<(i64, i64)>,
}

impl Runner {
    /// Runs until `stop` turns true, or the partition stops or fails.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let key = progress::key(&self.spec, self.partition);
        self.set_state("starting", None);
        let Some(input) = self.broker.partition(&self.spec.input, self.partition) else {
            self.set_state(
                "waiting",
                Some("the input partition is not hosted here".into()),
            );
            return;
        };
        let mut known = self.progress.lock().get(&key).cloned();
        if let Some(replica) = self.broker.partition(PROGRESS_TOPIC, 0) {
            // After a leadership move the freshest position is in this broker's replica
            // of the progress topic, not in what this broker committed itself.
            let loaded = tokio::task::spawn_blocking(move || progress::load(&replica)).await;
            match loaded {
                Ok(Ok(mut all)) => {
                    if let Some(p) = all.remove(&key) {
                        if known.as_ref().is_none_or(|k| k.next_offset < p.next_offset) {
                            known = Some(p);
                        }
                    }
                }
                Ok(Err(e)) => {
                    self.set_state("waiting", Some(e.to_string()));
                    return;
                }
                Err(e) => {
                    self.set_state("waiting", Some(format!("loading progress: {e}")));
                    return;
                }
            }
        }
        let mut position = match known {
            Some(p) => p,
            None => match self.start_position(&input).await {
                Ok(p) => p,
                Err(reason) => {
                    self.set_state("waiting", Some(reason));
                    return;
                }
            },
        };
        let allocate = self.spec.deterministic && position.producer_id < 0;
        if allocate {
            match self.broker.allocate_producer_id().await {
                // Internal ids are the allocated ones moved into their own range, so
                // they stay unique and never meet a client's.
                Ok(id) if id < INTERNAL_PRODUCER_IDS => {
                    position.producer_id = INTERNAL_PRODUCER_IDS + id
                }
                Ok(id) => {
                    self.set_state(
                        "failed",
                        Some(format!("producer id {id} is past the ids the host can use")),
                    );
                    return;
                }
                Err(e) => {
                    self.set_state(
                        "waiting",
                        Some(format!("could not allocate a producer id: {e}")),
                    );
                    return;
                }
            }
        }
        let epoch = producer_epoch(position.producer_id, self.leader_epoch);
        if position.producer_epoch > epoch {
            // Progress committed by a runner of a later leadership: this broker's view
            // of who leads is behind.
            self.set_state(
                "fenced",
                Some(format!(
                    "progress was committed with producer epoch {}, newer than this runner's {epoch}",
                    position.producer_epoch
                )),
            );
            return;
        }
        position.producer_epoch = epoch;
        self.report.lock().producer_epoch = if self.spec.deterministic { epoch } else { -1 };
        if allocate {
            // Recorded before any output carries it: a runner that dies before its
            // first progress record must come back with the same producer id, or its
            // replayed outputs could not be told from new ones.
            let recorded = match progress::encode(&[(key.clone(), Some(&position))], now_ms()) {
                Ok(batch) => ClusterWriter::new(self.broker.clone())
                    .send(PROGRESS_TOPIC, 0, batch)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = recorded {
                self.set_state("waiting", Some(format!("recording the producer id: {e}")));
                return;
            }
            self.progress.lock().insert(key.clone(), position.clone());
        }
        let mut work = Some(Work {
            broker: self.broker.clone(),
            plugins: self.plugins.clone(),
            spec: self.spec.clone(),
            partition: self.partition,
            input: input.clone(),
            session: None,
            committed: position.clone(),
            position,
            report: self.report.clone(),
            trapped_in_a_row: 0,
            pending: Vec::new(),
            records_in: 0,
            progress: self.progress.clone(),
            writer: ClusterWriter::new(self.broker.clone()),
        });
        self.set_state("running", None);
        loop {
            if *stop.borrow() {
                return;
            }
            // Registered before looking, so an append between the look and the wait
            // still wakes this task.
            let changed = input.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let hw = input.high_watermark();
            let current = work.as_ref().expect("work is back").position.next_offset;
            {
                let mut report = self.report.lock();
                report.position = current;
                report.high_watermark = hw;
                report.lag = (hw - current).max(0);
            }
            if current >= hw {
                tokio::select! {
                    _ = &mut changed => {}
                    _ = stop.changed() => {}
                    // A truncation or a role change may not notify; look again now and then.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let mut taken = work.take().expect("work is back");
            let (back, result) = match tokio::task::spawn_blocking(move || {
                let result = taken.step(hw);
                (taken, result)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    self.set_state("failed", Some(format!("the step panicked: {e}")));
                    return;
                }
            };
            let mut current = back;
            let result = match result {
                Ok(None) => Ok(()),
                Ok(Some(placed)) => current.write(placed).await,
                Err(halt) => Err(halt),
            };
            if result.is_err() {
                current.rewind();
            }
            work = Some(current);
            match result {
                Ok(()) => self.set_state("running", None),
                Err(Halt::Cancelled) => return,
                Err(Halt::Stop(offset, error)) => {
                    self.set_state(
                        "stopped",
                        Some(format!("input record at offset {offset} failed: {error}")),
                    );
                    return;
                }
                Err(Halt::Fail(reason) | Halt::FailAt(_, reason)) => {
                    tracing::error!(transform = %self.spec.name, partition = self.partition, %reason, "transform partition failed");
                    self.set_state("failed", Some(reason));
                    return;
                }
                Err(Halt::Fenced(reason)) => {
                    tracing::warn!(transform = %self.spec.name, partition = self.partition, %reason, "transform partition fenced by a newer runner");
                    // Told to stop already: the runner of a new leadership here shares
                    // the report, and the state is its to show.
                    if !*stop.borrow() {
                        self.set_state("fenced", Some(reason));
                    }
                    return;
                }
                Err(Halt::Retry(reason)) => {
                    tracing::warn!(transform = %self.spec.name, partition = self.partition, %reason, "transform step will be retried");
                    self.set_state("waiting", Some(reason));
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    fn set_state(&self, state: &str, reason: Option<String>) {
        let mut report = self.report.lock();
        if report.state != state || report.reason != reason {
            report.state = state.to_string();
            report.reason = reason;
        }
    }

    /// Where a partition without progress starts, per the spec.
    async fn start_position(&self, input: &Partition) -> Result<Progress, String> {
        let log = input.log();
        let offset = match self.spec.from {
            StartFrom::Earliest => log.log_start_offset(),
            StartFrom::Latest => input.high_watermark(),
            StartFrom::Offset { offset } => {
                offset.clamp(log.log_start_offset(), input.high_watermark())
            }
            StartFrom::Timestamp { ms } => match log.offset_for_timestamp(ms) {
                Ok(Some((offset, _))) => offset,
                Ok(None) => input.high_watermark(),
                Err(e) => return Err(format!("looking up timestamp {ms}: {e}")),
            },
        };
        Ok(Progress {
            next_offset: offset,
            producer_id: -1,
            sequences: BTreeMap::new(),
            written_ms: 0,
            producer_epoch: 0,
        })
    }
}

impl Work {
    /// Processes committed input from the position up to `hw` (one read's worth) and
    /// places the outputs; `None` when there was nothing to process.
    fn step(&mut self, hw: i64) -> Result<Option<Placed>, Halt> {
        let start = self
            .position
            .next_offset
            .max(self.input.log().log_start_offset());
        let read = self
            .input
            .read(start, READ_BYTES, true)
            .map_err(|e| Halt::Retry(format!("reading input at offset {start}: {e}")))?;
        let (next, records) = decode_records(&read.records, start, hw)
            .map_err(|e| Halt::Fail(format!("input at offset {start} does not decode: {e}")))?;
        if next == start {
            return Ok(None);
        }
        self.ensure_session()?;
        self.pending.clear();
        self.records_in = 0;
        let (position, halt) = match self.process(&records) {
            Ok(()) => (next, None),
            Err(Halt::Stop(offset, error)) => (offset, Some(Halt::Stop(offset, error))),
            Err(Halt::FailAt(offset, reason)) => (offset, Some(Halt::Fail(reason))),
            Err(other) => return Err(other),
        };
        let groups = self.place()?;
        let mut done = records.iter().filter(|r| r.offset < position);
        let timestamps = done.next().map(|first| {
            let last = done.last().unwrap_or(first);
            (first.timestamp, last.timestamp)
        });
        Ok(Some(Placed {
            position,
            groups,
            halt,
            timestamps,
        }))
    }

    /// Back to the committed position after a step that did not complete: its outputs
    /// will be regenerated with the same sequence numbers, and the partitions they went
    /// to are asked again what they already hold.
    fn rewind(&mut self) {
        self.position = self.committed.clone();
        self.pending.clear();
        self.writer.recheck();
    }

    fn ensure_session(&mut self) -> Result<(), Halt> {
        let serving = self.plugins.get(&self.spec.plugin).map(|d| d.version);
        if let (Some(session), Some(version)) = (&self.session, serving) {
            if session.version() == version {
                return Ok(());
            }
        }
        match self.plugins.open_transform(
            &self.spec.plugin,
            self.spec.init_config(),
            &self.spec.limits,
        ) {
            Ok(session) => {
                self.report.lock().plugin_version = session.version();
                self.session = Some(session);
                Ok(())
            }
            Err(e) => Err(Halt::Retry(format!(
                "transform plugin '{}' {e}",
                self.spec.plugin
            ))),
        }
    }

    /// Runs `records` through the plugin, narrowing failures down to single records.
    fn process(&mut self, mut records: &[DecodedRecord]) -> Result<(), Halt> {
        // A loop, not recursion, past each record the plugin reports: a run of
        // thousands of rejected records must not grow the stack. Splitting a failed
        // call in halves recurses, but only as deep as the halvings.
        'records: while !records.is_empty() {
            let mut attempt = 0;
            loop {
                match self.call(records) {
                    Ok(output) => {
                        self.trapped_in_a_row = 0;
                        match self.accept(records, output)? {
                            Some(rest) => {
                                records = &records[rest..];
                                continue 'records;
                            }
                            None => return Ok(()),
                        }
                    }
                    Err(_) if records.len() > 1 => {
                        let (left, right) = records.split_at(records.len() / 2);
                        self.process(left)?;
                        records = right;
                        continue 'records;
                    }
                    Err(error) => {
                        attempt += 1;
                        if attempt < RECORD_ATTEMPTS {
                            std::thread::sleep(Duration::from_millis(50 << attempt));
                            continue;
                        }
                        self.trapped_in_a_row += 1;
                        if self.trapped_in_a_row >= TRAPPED_RECORDS_TO_FAIL {
                            return Err(Halt::FailAt(
                                records[0].offset,
                                format!(
                                    "{} input records in a row failed with no success between; last: {error}",
                                    self.trapped_in_a_row
                                ),
                            ));
                        }
                        return self.reject(&records[0], error);
                    }
                }
            }
        }
        Ok(())
    }

    /// One plugin call over `records`, with its output checked against the spec.
    fn call(&mut self, records: &[DecodedRecord]) -> Result<TransformOutput, String> {
        let mut builder = ColumnsBuilder::new(self.spec.input.clone(), self.partition);
        for r in records {
            builder.push_with(
                r.key.as_deref(),
                r.value.as_deref(),
                r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_deref())),
                r.timestamp,
                r.offset,
            );
        }
        let session = self.session.as_mut().expect("a session is open");
        let result = self.plugins.transform(session, builder.build());
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                let message = format!("plugin '{}' {e}", self.spec.plugin);
                let mut report = self.report.lock();
                report.errors += 1;
                report.last_error = Some(message.clone());
                return Err(message);
            }
        };
        let covered = match output.failed {
            Some((offset, _)) => records.iter().take_while(|r| r.offset < offset).count(),
            None => records.len(),
        };
        let problem = if let Some((offset, _)) = &output.failed {
            records.iter().all(|r| r.offset != *offset).then(|| {
                format!("reported a failure at offset {offset}, which was not in its input")
            })
        } else {
            None
        };
        let outputs = self.spec.outputs.len();
        let problem = problem
            .or_else(|| {
                let cap = covered.max(1) as u64 * u64::from(self.spec.max_amplification);
                (output.records.len() as u64 > cap).then(|| {
                    format!(
                        "wrote {} records for {covered} input records, more than max_amplification {}x",
                        output.records.len(),
                        self.spec.max_amplification
                    )
                })
            })
            .or_else(|| {
                output.targets.iter().find(|&&t| t as usize >= outputs).map(|t| {
                    format!("wrote to output {t}, but the transform has {outputs} outputs")
                })
            })
            .or_else(|| {
                let first = records.first().map_or(0, |r| r.offset);
                let limit = records.get(covered).map_or(i64::MAX, |r| r.offset);
                output
                    .records
                    .offsets
                    .iter()
                    .find(|&&o| o < first || o >= limit)
                    .map(|o| format!("attributed an output record to input offset {o}, outside the records it was given"))
            });
        if let Some(problem) = problem {
            let message = format!("plugin '{}' {problem}", self.spec.plugin);
            let mut report = self.report.lock();
            report.errors += 1;
            report.last_error = Some(message.clone());
            return Err(message);
        }
        Ok(output)
    }

    /// Queues a successful call's outputs and applies the error policy to the record
    /// it stopped at, if any; returns where the records after it start.
    fn accept(
        &mut self,
        records: &[DecodedRecord],
        output: TransformOutput,
    ) -> Result<Option<usize>, Halt> {
        let batch = match output.records.batch() {
            Ok(batch) => batch,
            Err(e) => return Err(Halt::Fail(format!("output columns: {e}"))),
        };
        for (i, record) in batch.iter().enumerate() {
            self.pending.push(OutRecord {
                target: output.targets[i] as usize,
                partition: output.partitions[i],
                data: RecordData {
                    key: record.key().map(Bytes::copy_from_slice),
                    value: record.value().map(Bytes::copy_from_slice),
                    headers: owned_headers(record.headers()),
                    timestamp: record.timestamp(),
                },
            });
        }
        match output.failed {
            None => {
                self.records_in += records.len() as u64;
                Ok(None)
            }
            Some((offset, error)) => {
                let at = records
                    .iter()
                    .position(|r| r.offset == offset)
                    .expect("checked in call");
                self.records_in += at as u64;
                {
                    let mut report = self.report.lock();
                    report.errors += 1;
                    report.last_error = Some(format!("offset {offset}: {error}"));
                }
                self.reject(&records[at], error)?;
                Ok(Some(at + 1))
            }
        }
    }

    /// The error policy for one input record.
    fn reject(&mut self, record: &DecodedRecord, error: String) -> Result<(), Halt> {
        match &self.spec.on_error {
            OnError::Stop => Err(Halt::Stop(record.offset, error)),
            OnError::DeadLetter { .. } => {
                let mut headers = record.headers.clone();
                let coordinate = |v: String| Some(Bytes::from(v));
                headers.push((
                    "quiver.transform".into(),
                    coordinate(self.spec.name.clone()),
                ));
                headers.push(("quiver.error".into(), coordinate(error)));
                headers.push((
                    "quiver.input.topic".into(),
                    coordinate(self.spec.input.clone()),
                ));
                headers.push((
                    "quiver.input.partition".into(),
                    coordinate(self.partition.to_string()),
                ));
                headers.push((
                    "quiver.input.offset".into(),
                    coordinate(record.offset.to_string()),
                ));
                self.pending.push(OutRecord {
                    target: self.spec.outputs.len(),
                    partition: -1,
                    data: RecordData {
                        key: record.key.clone(),
                        value: record.value.clone(),
                        headers,
                        timestamp: record.timestamp,
                    },
                });
                self.records_in += 1;
                self.report.lock().dead_letters += 1;
                Ok(())
            }
        }
    }

    /// Places the queued outputs: the plugin's partition where it chose one, otherwise
    /// the output topic's partitioner; grouped per output partition, in order.
    fn place(&mut self) -> Result<Vec<Group>, Halt> {
        let topics: Vec<String> = self
            .spec
            .written_topics()
            .into_iter()
            .map(String::from)
            .collect();
        let now = now_ms();
        // Records move from the plugin's output into the partitioner's input and on
        // into their partition's group: nothing is copied on the way.
        let mut by_target: Vec<Vec<NewRecord>> = topics.iter().map(|_| Vec::new()).collect();
        for r in std::mem::take(&mut self.pending) {
            by_target[r.target].push(NewRecord {
                key: r.data.key,
                value: r.data.value,
                headers: r.data.headers,
                partition: (r.partition >= 0).then_some(r.partition),
                timestamp: Some(r.data.timestamp),
            });
        }
        let mut groups: BTreeMap<(usize, i32), Vec<RecordData>> = BTreeMap::new();
        for (target, (name, new)) in topics.iter().zip(by_target).enumerate() {
            if new.is_empty() {
                continue;
            }
            let topic = self
                .broker
                .topic(name)
                .ok_or_else(|| Halt::Retry(format!("output topic '{name}' does not exist")))?;
            let count = topic.meta.partitions;
            if let Some(bad) = new.iter().filter_map(|r| r.partition).find(|&p| p >= count) {
                return Err(Halt::Fail(format!(
                    "plugin '{}' chose partition {bad} of '{name}', which has {count}",
                    self.spec.plugin
                )));
            }
            let chosen = choose_partitions(
                &self.plugins,
                name,
                &topic.settings,
                &new,
                count as u32,
                now,
            )
            .map_err(|e| Halt::Retry(format!("placing records in '{name}': {e}")))?;
            for (record, partition) in new.into_iter().zip(chosen) {
                groups
                    .entry((target, partition))
                    .or_default()
                    .push(RecordData {
                        key: record.key,
                        value: record.value,
                        headers: record.headers,
                        timestamp: record.timestamp.unwrap_or(now),
                    });
            }
        }
        Ok(groups
            .into_iter()
            .map(|((target, partition), records)| ((topics[target].clone(), partition), records))
            .collect())
    }

    /// Writes a step's outputs (each acknowledged by its partition's in-sync replicas),
    /// then commits the new position the same way.
    async fn write(&mut self, placed: Placed) -> Result<(), Halt> {
        // A pause or removal acknowledged while the plugin ran must not be followed by
        // output: the spec is checked against the metadata once more before writing.
        let current = self
            .broker
            .metadata()
            .transforms
            .get(&self.spec.name)
            .cloned();
        if current.as_ref() != Some(&self.spec) {
            return Err(Halt::Cancelled);
        }
        let mut written = 0u64;
        for ((topic, index), records) in &placed.groups {
            let appended = self.append(topic, *index, records).await?;
            // Dead letters are counted when they are chosen, not as output.
            if self.spec.outputs.contains(topic) {
                written += appended;
            }
        }
        self.position.next_offset = placed.position;
        let now = now_ms();
        self.position.written_ms = now;
        let key = progress::key(&self.spec, self.partition);
        let batch = progress::encode(&[(key.clone(), Some(&self.position))], now)
            .map_err(|e| Halt::Retry(e.to_string()))?;
        self.writer
            .send(PROGRESS_TOPIC, 0, batch)
            .await
            .map_err(halt)?;
        self.committed = self.position.clone();
        self.progress.lock().insert(key, self.position.clone());
        self.broker.notify_appended();
        {
            let mut report = self.report.lock();
            report.records_in += self.records_in;
            report.records_out += written;
            report.position = placed.position;
            report.lag = (report.high_watermark - placed.position).max(0);
            if let Some((first, last)) = placed.timestamps {
                report.latencies.record_batch(now_ms(), first, last);
            }
        }
        match placed.halt {
            Some(halt) => Err(halt),
            None => Ok(()),
        }
    }

    /// Appends `records` to one output partition (with the transform partition's
    /// producer id when it is exactly-once); returns how many were written.
    async fn append(
        &mut self,
        topic: &str,
        index: i32,
        records: &[RecordData],
    ) -> Result<u64, Halt> {
        let okey = progress::output_key(topic, index);
        let mut next = self.position.sequences.get(&okey).copied().unwrap_or(0);
        let sequence = self.spec.deterministic.then_some(Sequence {
            producer_id: self.position.producer_id,
            epoch: self.position.producer_epoch,
            next: &mut next,
        });
        let exactly_once = sequence.is_some();
        let appended = self
            .writer
            .append(topic, index, records, Compression::None, sequence)
            .await
            .map_err(halt)?;
        if exactly_once {
            self.position.sequences.insert(okey, next);
        }
        Ok(appended.written)
    }
}

/// A failed write: retried, unless the output cannot be encoded at all.
fn halt(e: WriteError) -> Halt {
    match e {
        WriteError::Unavailable(m) => Halt::Retry(m),
        e @ WriteError::Fenced(_) => Halt::Fenced(e.to_string()),
        e @ WriteError::Encode { .. } => Halt::Fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_epoch_follows_the_leader_epoch_for_internal_ids_only() {
        let internal = INTERNAL_PRODUCER_IDS + 1000;
        assert_eq!(producer_epoch(internal, 0), 0);
        assert_eq!(producer_epoch(internal, 7), 7);
        // Past the largest epoch a batch carries it stays there: deduplicated, no
        // longer fenced.
        assert_eq!(producer_epoch(internal, 40_000), i16::MAX);
        // An id from before epochs were bumped keeps epoch 0: a bump would restart
        // its sequences under Kafka's rules.
        assert_eq!(producer_epoch(1000, 7), 0);
        assert_eq!(producer_epoch(-1, 7), 0);
    }

    #[test]
    fn a_fenced_write_ends_the_runner_and_other_failures_are_retried() {
        assert!(matches!(
            halt(WriteError::Fenced("newer epoch".into())),
            Halt::Fenced(m) if m == "fenced: newer epoch"
        ));
        assert!(matches!(
            halt(WriteError::Unavailable("no leader".into())),
            Halt::Retry(_)
        ));
    }
}
