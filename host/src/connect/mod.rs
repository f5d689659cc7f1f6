//! Connectors: mirrors that copy topics and consumer-group offsets from another
//! Kafka-API cluster into this one, with a connector plugin deciding what is copied,
//! under which names.
//!
//! This room owns running them. Mirrors are cluster metadata (`spec`, kept by the
//! controller like topics and transforms). They run on the target cluster, on the
//! broker that leads the internal topic `__quiver_mirrors`, which also holds each
//! mirror's positions, offset syncs and group checkpoints (`offsets`): when that
//! leadership moves, the mirrors move with it and resume from what the topic holds.
//! Each mirror pulls from the source with the broker's own Kafka client (`source`)
//! and writes through the cluster writer, acknowledged by the in-sync replicas
//! before its position moves (`runner`).

pub mod offsets;
pub mod quic;
pub mod runner;
pub mod source;
pub mod spec;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::broker::{now_ms, Broker, TopicError};
use crate::partition::{keyed, Role};
use crate::plugin::Plugins;
use offsets::{Checkpoint, Position, MIRRORS_TOPIC};
use runner::{MirrorReport, Runner, SharedReport};
use spec::MirrorSpec;

/// Why the manager could not bring the running mirrors in line.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Creating `__quiver_mirrors` failed.
    #[error("creating {MIRRORS_TOPIC}: {0}")]
    Topic(#[from] TopicError),
    /// Reading it failed.
    #[error("reading {MIRRORS_TOPIC}: {0}")]
    Load(String),
}

/// How often the manager compares what runs with what should.
const RECONCILE_EVERY: Duration = Duration::from_millis(250);

/// What `__quiver_mirrors` holds, by key.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    /// Positions by key.
    pub positions: BTreeMap<String, Position>,
    /// Checkpoints by key.
    pub checkpoints: BTreeMap<String, Checkpoint>,
}

struct Running {
    spec: MirrorSpec,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

/// Every mirror this broker runs.
pub struct Mirrors {
    broker: Arc<Broker>,
    plugins: Arc<Plugins>,
    stored: Arc<Mutex<Stored>>,
    /// The leader epoch of `__quiver_mirrors` whose contents `stored` holds.
    loaded_epoch: Mutex<Option<i32>>,
    running: Mutex<BTreeMap<String, Running>>,
    reports: Mutex<BTreeMap<String, SharedReport>>,
}

impl std::fmt::Debug for Mirrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirrors")
            .field("running", &self.running.lock().len())
            .finish()
    }
}

impl Mirrors {
    /// A manager running nothing yet.
    pub fn new(broker: Arc<Broker>, plugins: Arc<Plugins>) -> Self {
        Self {
            broker,
            plugins,
            stored: Arc::new(Mutex::new(Stored::default())),
            loaded_epoch: Mutex::new(None),
            running: Mutex::new(BTreeMap::new()),
            reports: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reconciles now and then until aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.reconcile().await {
                    tracing::warn!(error = %e, "mirrors: could not reconcile");
                }
                tokio::time::sleep(RECONCILE_EVERY).await;
            }
        })
    }

    /// Stops every mirror (shutdown).
    pub async fn shutdown(&self) {
        let running = std::mem::take(&mut *self.running.lock());
        for (_, task) in running {
            let _ = task.stop.send(true);
            let _ = task.handle.await;
        }
    }

    /// The leader epoch of this broker's replica of `__quiver_mirrors`, when it leads.
    fn leads_store(&self) -> Option<i32> {
        let partition = self.broker.partition(MIRRORS_TOPIC, 0)?;
        match partition.role() {
            Role::Leader { epoch } => Some(epoch),
            _ => None,
        }
    }

    async fn reconcile(&self) -> Result<(), ConnectError> {
        let state = self.broker.metadata();
        if state.mirrors.is_empty() && self.running.lock().is_empty() {
            return Ok(());
        }
        if !state.mirrors.is_empty() && !state.topics.contains_key(MIRRORS_TOPIC) {
            self.create_store().await?;
        }
        let epoch = self.leads_store();
        if epoch.is_some() && *self.loaded_epoch.lock() != epoch {
            // Leadership (re)gained: what the topic holds is the truth now.
            self.stop_all();
            let partition = self.broker.partition(MIRRORS_TOPIC, 0).expect("leads it");
            let all = tokio::task::spawn_blocking(move || {
                keyed::load::<serde_json::Value>(&partition, "mirror")
            })
            .await
            .map_err(|e| ConnectError::Load(e.to_string()))?
            .map_err(|e| ConnectError::Load(e.to_string()))?;
            let stored = runner::split_stored(all);
            tracing::info!(
                positions = stored.positions.len(),
                checkpoints = stored.checkpoints.len(),
                "mirrors: loaded positions; running mirrors here"
            );
            *self.stored.lock() = stored;
            *self.loaded_epoch.lock() = epoch;
        }
        if epoch.is_none() {
            *self.loaded_epoch.lock() = None;
            self.stop_all();
            return Ok(());
        }
        let mut running = self.running.lock();
        let mut reports = self.reports.lock();
        running.retain(|name, task| {
            let keep = state.mirrors.get(name).is_some_and(|spec| {
                *spec == task.spec && !spec.paused && !task.handle.is_finished()
            });
            if !keep {
                let _ = task.stop.send(true);
            }
            keep
        });
        for (name, spec) in &state.mirrors {
            let report = reports
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Mutex::new(MirrorReport::default())))
                .clone();
            if spec.paused {
                report.lock().state = "paused".into();
                continue;
            }
            if running.contains_key(name) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let runner = Runner {
                broker: self.broker.clone(),
                plugins: self.plugins.clone(),
                spec: spec.clone(),
                report,
                stored: self.stored.clone(),
            };
            let handle = tokio::spawn(runner.run(stopped));
            running.insert(
                name.clone(),
                Running {
                    spec: spec.clone(),
                    stop,
                    handle,
                },
            );
        }
        reports.retain(|name, _| state.mirrors.contains_key(name));
        drop(reports);
        drop(running);
        self.forget_removed(&state.mirrors);
        Ok(())
    }

    fn stop_all(&self) {
        for (_, task) in std::mem::take(&mut *self.running.lock()) {
            let _ = task.stop.send(true);
        }
    }

    async fn create_store(&self) -> Result<(), ConnectError> {
        let state = self.broker.metadata();
        // A replica on every broker (up to three): whichever takes over finds the
        // positions in its own copy, and any broker can answer a failover.
        let seeds = self.broker.config().cluster.seeds.len().max(1);
        let factor = seeds.min(state.live_brokers().count()).clamp(1, 3) as i16;
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), (64 * 1024 * 1024).to_string()),
        ]);
        match self
            .broker
            .create_topic(MIRRORS_TOPIC, 1, factor, configs, false)
            .await
        {
            Ok(_) | Err(TopicError::Exists(_)) => Ok(()),
            Err(e) if e.code() == kafka_protocol::error::ResponseError::TopicAlreadyExists => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the records of mirrors that no longer exist.
    fn forget_removed(&self, mirrors: &BTreeMap<String, MirrorSpec>) {
        let Some(partition) = self.broker.partition(MIRRORS_TOPIC, 0) else {
            return;
        };
        let gone = runner::orphans(&self.stored.lock(), mirrors);
        if gone.is_empty() {
            return;
        }
        let tombstones: Vec<(String, Option<&Position>)> =
            gone.iter().map(|k| (k.clone(), None)).collect();
        match keyed::write(&partition, &tombstones, now_ms()) {
            Ok(()) => {
                let mut stored = self.stored.lock();
                for key in gone {
                    stored.positions.remove(&key);
                    stored.checkpoints.remove(&key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not delete the records of removed mirrors"),
        }
    }

    /// The state of mirror `name` on this broker, if it runs here.
    pub fn report(&self, name: &str) -> Option<MirrorReport> {
        self.leads_store()?;
        self.reports
            .lock()
            .get(name)
            .map(|r| r.lock().clone().as_of(now_ms()))
    }

    /// The checkpoints of mirror `spec`, by group, from this broker's replica of
    /// `__quiver_mirrors` (any broker holding one can answer).
    pub async fn checkpoints(
        &self,
        spec: &MirrorSpec,
    ) -> Result<BTreeMap<String, Checkpoint>, ConnectError> {
        let stored = if self.leads_store().is_some() && self.loaded_epoch.lock().is_some() {
            self.stored.lock().clone()
        } else {
            let partition = self.broker.partition(MIRRORS_TOPIC, 0).ok_or_else(|| {
                ConnectError::Load(format!("this broker holds no replica of {MIRRORS_TOPIC}"))
            })?;
            let all = tokio::task::spawn_blocking(move || {
                keyed::load::<serde_json::Value>(&partition, "mirror")
            })
            .await
            .map_err(|e| ConnectError::Load(e.to_string()))?
            .map_err(|e| ConnectError::Load(e.to_string()))?;
            runner::split_stored(all)
        };
        let mut out = BTreeMap::new();
        for (key, checkpoint) in stored.checkpoints {
            if let Some(offsets::Key::Checkpoint(name, id, group)) = offsets::parse_key(&key) {
                if name == spec.name && id == spec.id {
                    out.insert(group.to_string(), checkpoint);
                }
            }
        }
        Ok(out)
    }
}
