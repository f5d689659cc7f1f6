//! In-broker record transforms: a transform plugin run over every record of an input
//! topic, writing to one or more output topics.
//!
//! This room owns running them. Transforms are cluster metadata (`spec`, kept by the
//! controller like topics and plugins); each broker runs one task per input partition
//! it leads (`runner`), and keeps each task's position in the compacted internal topic
//! `__quiver_transforms` (`progress`). The [`Transforms`] manager reconciles the
//! running tasks with the metadata and with leadership: a new transform starts, a
//! paused or removed one stops, a partition whose leadership moved here starts from
//! its recorded position. Every leadership (every leader epoch) gets a runner of its
//! own, whose outputs carry that epoch, so a runner of an earlier leadership (here or
//! on a broker cut off from the cluster) is fenced by the output partitions (see
//! `runner`).
//!
//! Outputs go through the ordinary append path of the output partitions with the
//! output topic's partitioner placing records the plugin did not, so a transform never
//! writes anything a producer could not: directly when this broker leads the output
//! partition, over the Kafka protocol to its leader otherwise (`remote`), acknowledged
//! by the in-sync replicas either way before the position moves past the input
//! ([`crate::broker::writer`]).

pub mod progress;
pub mod runner;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::broker::{now_ms, Broker, TopicError};
use crate::partition::Role;
use crate::plugin::Plugins;
use progress::{Progress, PROGRESS_TOPIC};
use runner::{PartitionReport, ProgressMap, Runner, SharedReport};
use spec::TransformSpec;

/// Why the manager could not bring the running tasks in line.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// Creating `__quiver_transforms` failed.
    #[error("creating {PROGRESS_TOPIC}: {0}")]
    Topic(#[from] TopicError),
    /// Reading it failed.
    #[error(transparent)]
    Progress(#[from] progress::ProgressError),
    /// The loading task died.
    #[error("loading {PROGRESS_TOPIC}: {0}")]
    Load(String),
}

/// How often the manager compares what runs with what should.
const RECONCILE_EVERY: Duration = Duration::from_millis(250);

struct Running {
    spec: TransformSpec,
    /// The input partition's leader epoch the task was started for.
    leader_epoch: i32,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

/// Every transform task of this broker.
pub struct Transforms {
    broker: Arc<Broker>,
    plugins: Arc<Plugins>,
    progress: ProgressMap,
    /// Whether `progress` holds what `__quiver_transforms` holds.
    loaded: Mutex<bool>,
    running: Mutex<BTreeMap<(String, i32), Running>>,
    /// Tasks told to stop that may still be finishing a step.
    stopping: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    reports: Mutex<BTreeMap<(String, i32), SharedReport>>,
}

impl std::fmt::Debug for Transforms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transforms")
            .field("running", &self.running.lock().len())
            .finish()
    }
}

impl Transforms {
    /// A manager running nothing yet.
    pub fn new(broker: Arc<Broker>, plugins: Arc<Plugins>) -> Self {
        Self {
            broker,
            plugins,
            progress: Arc::new(Mutex::new(BTreeMap::new())),
            loaded: Mutex::new(false),
            running: Mutex::new(BTreeMap::new()),
            stopping: Mutex::new(Vec::new()),
            reports: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reconciles now and then until aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.reconcile().await {
                    tracing::warn!(error = %e, "transforms: could not reconcile");
                }
                tokio::time::sleep(RECONCILE_EVERY).await;
            }
        })
    }

    /// Stops every task (shutdown): each finishes the step it is in.
    pub async fn shutdown(&self) {
        let running = std::mem::take(&mut *self.running.lock());
        for (_, task) in running {
            let _ = task.stop.send(true);
            let _ = task.handle.await;
        }
    }

    async fn reconcile(&self) -> Result<(), TransformError> {
        let state = self.broker.metadata();
        if state.transforms.is_empty() && self.running.lock().is_empty() {
            return Ok(());
        }
        if !state.transforms.is_empty() && !self.load_progress().await? {
            return Ok(());
        }
        let me = self.broker.config().broker.node_id;
        let mut wanted: BTreeMap<(String, i32), (&TransformSpec, i32)> = BTreeMap::new();
        for spec in state.transforms.values() {
            let Some(topic) = self.broker.topic(&spec.input) else {
                continue;
            };
            for index in 0..topic.meta.partitions {
                if topic.assignment(index).is_none_or(|a| a.leader != me) {
                    continue;
                }
                if let Some(Role::Leader { epoch }) = topic.partition(index).map(|p| p.role()) {
                    wanted.insert((spec.name.clone(), index), (spec, epoch));
                }
            }
        }
        let mut running = self.running.lock();
        let mut reports = self.reports.lock();
        // Stop what should not run (or runs an older spec, or for an earlier
        // leadership: a new leader epoch is a new runner with a new producer epoch).
        let stale: Vec<(String, i32)> = running
            .iter()
            .filter(|(key, task)| {
                wanted.get(*key).is_none_or(|(spec, epoch)| {
                    **spec != task.spec || spec.paused || *epoch != task.leader_epoch
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut stopping = self.stopping.lock();
        stopping.retain(|h| !h.is_finished());
        for key in stale {
            if let Some(task) = running.remove(&key) {
                let _ = task.stop.send(true);
                stopping.push(task.handle);
            }
        }
        drop(stopping);
        for (key, (spec, leader_epoch)) in &wanted {
            let report = reports
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(PartitionReport {
                        partition: key.1,
                        state: "starting".into(),
                        ..Default::default()
                    }))
                })
                .clone();
            if spec.paused {
                let mut r = report.lock();
                r.state = "paused".into();
                r.reason = None;
                continue;
            }
            if let Some(task) = running.get(key) {
                // A task that ended stays ended (stopped or failed) until the spec
                // changes; one that ended waiting for something is tried again.
                let waiting = report.lock().state == "waiting";
                if !task.handle.is_finished() || !waiting {
                    continue;
                }
            }
            let (stop, stopped) = watch::channel(false);
            let runner = Runner {
                broker: self.broker.clone(),
                plugins: self.plugins.clone(),
                spec: (*spec).clone(),
                partition: key.1,
                report,
                progress: self.progress.clone(),
                leader_epoch: *leader_epoch,
            };
            let handle = tokio::spawn(runner.run(stopped));
            running.insert(
                key.clone(),
                Running {
                    spec: (*spec).clone(),
                    leader_epoch: *leader_epoch,
                    stop,
                    handle,
                },
            );
        }
        // Partitions no longer led here, and removed transforms, leave the view.
        reports.retain(|key, _| wanted.contains_key(key));
        drop(reports);
        drop(running);
        self.forget_removed(&state.transforms);
        Ok(())
    }

    /// Brings the tasks in line with the metadata now and waits (up to `timeout`) for
    /// the ones that must stop to finish the step they are in: what an admin request
    /// that pauses or removes a transform waits for before it answers, so no output
    /// follows its answer on this broker.
    pub async fn settle(&self, timeout: Duration) -> Result<(), TransformError> {
        self.reconcile().await?;
        let stopping = std::mem::take(&mut *self.stopping.lock());
        let all = futures_join(stopping);
        let _ = tokio::time::timeout(timeout, all).await;
        Ok(())
    }

    /// Makes sure `__quiver_transforms` exists and, once it is led here, loads it.
    /// Returns whether progress is loaded.
    async fn load_progress(&self) -> Result<bool, TransformError> {
        if *self.loaded.lock() {
            return Ok(true);
        }
        let state = self.broker.metadata();
        if !state.topics.contains_key(PROGRESS_TOPIC) {
            // A replica on every broker (it is one small compacted partition): a broker
            // that takes over an input partition reads the position from its own copy.
            let seeds = self.broker.config().cluster.seeds.len().max(1);
            let factor = seeds.min(state.live_brokers().count()).max(1) as i16;
            let configs = BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("segment.bytes".to_string(), (64 * 1024 * 1024).to_string()),
            ]);
            match self
                .broker
                .create_topic(PROGRESS_TOPIC, 1, factor, configs, false)
                .await
            {
                Ok(_) | Err(TopicError::Exists(_)) => {}
                // Another broker created it a moment ago.
                Err(e) if e.code() == kafka_protocol::error::ResponseError::TopicAlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(partition) = self.broker.partition(PROGRESS_TOPIC, 0) else {
            return Ok(false);
        };
        let loaded = tokio::task::spawn_blocking(move || progress::load(&partition))
            .await
            .map_err(|e| TransformError::Load(e.to_string()))??;
        tracing::info!(records = loaded.len(), "loaded transform progress");
        *self.progress.lock() = loaded;
        *self.loaded.lock() = true;
        Ok(true)
    }

    /// Deletes the progress of transforms that no longer exist, so one created later
    /// under the same name starts afresh.
    fn forget_removed(&self, transforms: &BTreeMap<String, TransformSpec>) {
        let Some(store) = self
            .broker
            .partition(PROGRESS_TOPIC, 0)
            .filter(|p| matches!(p.role(), Role::Leader { .. }))
        else {
            return;
        };
        let mut progress = self.progress.lock();
        let gone: Vec<String> = progress
            .keys()
            .filter(|key| {
                let name = key.split('/').next().unwrap_or_default();
                transforms
                    .get(name)
                    .is_none_or(|spec| !progress::belongs_to(key, spec))
            })
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        let tombstones: Vec<(String, Option<&Progress>)> =
            gone.iter().map(|key| (key.clone(), None)).collect();
        match progress::write(&store, &tombstones, now_ms()) {
            Ok(()) => {
                for key in gone {
                    progress.remove(&key);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not delete the progress of removed transforms")
            }
        }
    }

    /// The state of each input partition of `name` this broker runs, by partition.
    pub fn reports(&self, name: &str) -> Vec<PartitionReport> {
        let reports = self.reports.lock();
        let mut out: Vec<PartitionReport> = reports
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, r)| r.lock().snapshot())
            .collect();
        out.sort_by_key(|r| r.partition);
        out
    }

    /// Names of the transforms with a task here.
    pub fn running_names(&self) -> BTreeSet<String> {
        self.running.lock().keys().map(|(n, _)| n.clone()).collect()
    }
}

/// Waits for every handle (their results do not matter: a task that panicked is gone
/// either way).
async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}
