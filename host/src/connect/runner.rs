//! One mirror: pull committed records from the source cluster, let the connector
//! plugin decide, write them to the same partition of the target topic here, and
//! record the position; now and then look for new topics and partitions, and translate
//! the mirrored groups' committed offsets.
//!
//! Fetching runs ahead of writing: one task per source broker keeps a fetch in flight
//! for the partitions that broker leads and hands decoded records over a short queue,
//! so a long round trip to the source is paid once per queue slot rather than once per
//! write. Writing, position records and checkpoints happen in order on the mirror's
//! own task. Anything unexpected (a source or target partition that moved, a plugin
//! that failed, a write that was refused) drops the fetchers and starts again from the
//! recorded positions after a backoff; with exactly-once on, what the target already
//! holds of a replay is skipped by its producer sequence.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::records::Compression;
use parking_lot::Mutex;
use quiver_plugin_sdk::columns::{Columns, ColumnsBuilder, Record};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::offsets::{self, Checkpoint, GroupOffset, Position, MIRRORS_TOPIC};
use super::source::{Source, SourceMetadata};
use super::spec::{MirrorSpec, Via};
use super::Stored;
use crate::broker::writer::{ClusterWriter, Sequence};
use crate::broker::{now_ms, Broker, TopicError};
use crate::log::batch::{visit_records, BatchError};
use crate::metrics::latency::LatencyWindow;
use crate::net::MirrorClient;
use crate::partition::encode::OutRecord;
use crate::partition::keyed;
use crate::plugin::connector::ConnectorSession;
use crate::plugin::Plugins;

/// The header carrying the ids of the clusters a record has passed through, oldest
/// first, comma separated.
pub const PROVENANCE_HEADER: &str = "quiver.provenance";

/// Bytes asked per partition and per fetch: a fetch must carry enough to cover a
/// long round trip (16 MiB per 80 ms is 200 MB/s per source broker).
const PARTITION_FETCH_BYTES: i32 = 4 * 1024 * 1024;
const FETCH_BYTES: i32 = 16 * 1024 * 1024;
/// How long a fetch may wait at the source for new records.
const FETCH_WAIT_MS: i32 = 500;
/// Fetch sessions (connections, each with a fetch in flight) per mirror, spread over
/// the source brokers (at least one each, at most one per partition). Over an 80 ms
/// round trip one session moves ~16 MiB per round; eight fill the link here
/// (docs/perf.md, "Mirroring"). Memory: at most sessions + QUEUE fetches' bytes.
const FETCH_SESSIONS: usize = 8;
/// Fetches waiting to be written, per mirror: bounds memory (each holds at most one
/// fetch's bytes, decoded) while the next fetch is in flight.
const QUEUE: usize = 2;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the operator sees of one mirrored partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionReport {
    /// The partition (the same at both ends).
    pub partition: i32,
    /// The next source offset to copy.
    pub position: i64,
    /// The source's high watermark when last fetched.
    pub high_watermark: i64,
    /// Records behind the source.
    pub behind: i64,
}

/// What the operator sees of one mirrored topic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicReport {
    /// The topic it is copied to here.
    pub target: String,
    /// Its partitions.
    pub partitions: Vec<PartitionReport>,
}

/// What the operator sees of one mirror on the broker running it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MirrorReport {
    /// starting, running, retrying or stopped.
    pub state: String,
    /// Why it is retrying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The source's cluster id.
    pub source_cluster_id: String,
    /// The plugin version running.
    pub plugin_version: u32,
    /// Mirrored topics by source name.
    pub topics: BTreeMap<String, TopicReport>,
    /// Records written to the target.
    pub records: u64,
    /// Their bytes (keys and values).
    pub bytes: u64,
    /// Records the plugin dropped.
    pub filtered: u64,
    /// Records not copied because they came from this cluster (loop prevention).
    pub loops_prevented: u64,
    /// Records per second and bytes per second over the last second or so.
    pub records_per_sec: f64,
    /// See `records_per_sec`.
    pub bytes_per_sec: f64,
    /// Replication latency (record timestamp at the source to append here), ms.
    pub latency_p50_ms: i64,
    /// See `latency_p50_ms`.
    pub latency_p99_ms: i64,
    /// The last time the source answered, ms since the epoch (the mirror's heartbeat).
    pub last_contact_ms: i64,
    /// The last time the group offsets were translated.
    pub last_checkpoint_ms: i64,
    /// Restarts after a failure.
    pub restarts: u64,
    #[serde(skip)]
    latencies: LatencyWindow,
    #[serde(skip)]
    window: (i64, u64, u64),
}

impl MirrorReport {
    /// The report as of `now`, for the operator: latency percentiles from the samples
    /// (worked out here, when asked, not on every write), and rates that drop to zero
    /// once nothing was copied for a while.
    pub fn as_of(mut self, now: i64) -> Self {
        if let Some((p50, p99)) = self.latencies.p50_p99() {
            self.latency_p50_ms = p50;
            self.latency_p99_ms = p99;
        }
        if self.window.0 > 0 && now - self.window.0 > 3000 {
            self.records_per_sec = 0.0;
            self.bytes_per_sec = 0.0;
        }
        self
    }

    fn count(&mut self, records: u64, bytes: u64, now: i64) {
        self.records += records;
        self.bytes += bytes;
        let (start, r, b) = &mut self.window;
        if *start == 0 {
            *start = now;
        }
        *r += records;
        *b += bytes;
        let elapsed = now - *start;
        if elapsed >= 1000 {
            self.records_per_sec = *r as f64 * 1000.0 / elapsed as f64;
            self.bytes_per_sec = *b as f64 * 1000.0 / elapsed as f64;
            self.window = (now, 0, 0);
        }
    }
}

/// A report shared between a runner and the operator's view of it.
pub type SharedReport = Arc<Mutex<MirrorReport>>;

/// A source topic and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    target: String,
    partitions: i32,
}

/// Records fetched from one source partition, decoded straight into the columns the
/// plugin is given, less those that passed through the target cluster before.
struct Chunk {
    topic: String,
    partition: i32,
    from: i64,
    next: i64,
    high_watermark: i64,
    records: Columns,
    /// Records left out because their provenance names the target cluster.
    loops: u64,
}

/// How a run ended.
enum Ended {
    /// Told to stop, or the spec changed.
    Stopped,
    /// The source's topics changed: plan again.
    Replan,
}

/// One mirror on the broker that runs it.
#[derive(Clone)]
pub(super) struct Runner {
    pub broker: Arc<Broker>,
    pub plugins: Arc<Plugins>,
    pub spec: MirrorSpec,
    pub report: SharedReport,
    pub stored: Arc<Mutex<Stored>>,
}

impl Runner {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if *stop.borrow() {
                return;
            }
            self.set_state("starting", None);
            match self.run_once(&mut stop).await {
                Ok(Ended::Stopped) => {
                    self.set_state("stopped", None);
                    return;
                }
                Ok(Ended::Replan) => backoff = FIRST_BACKOFF,
                Err(reason) => {
                    tracing::warn!(mirror = %self.spec.name, %reason, "mirror: retrying after a failure");
                    self.set_state("retrying", Some(reason));
                    self.report.lock().restarts += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn set_state(&self, state: &str, reason: Option<String>) {
        let mut report = self.report.lock();
        report.state = state.to_string();
        report.reason = reason;
    }

    fn still_current(&self) -> bool {
        self.broker.metadata().mirrors.get(&self.spec.name) == Some(&self.spec)
    }

    /// The QUIC client of a `--via quic` mirror (one per run, shared by its sources);
    /// `None` over the Kafka protocol.
    async fn link(&self) -> Result<Option<Arc<MirrorClient>>, String> {
        let spec = &self.spec;
        match spec.via {
            Via::Kafka => Ok(None),
            Via::Quic => {
                let ca = spec.source_ca.as_deref().unwrap_or_default();
                let link = super::quic::link(&self.broker, &spec.source, ca)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                Ok(Some(Arc::new(link)))
            }
        }
    }

    /// A new connection set to the source, over the spec's transport.
    fn source(&self, link: &Option<Arc<MirrorClient>>) -> Source {
        let spec = &self.spec;
        match link {
            None => Source::new(&spec.source, &spec.alias),
            Some(link) => Source::over_quic(&spec.source, &spec.alias, link.clone()),
        }
    }

    async fn run_once(&self, stop: &mut watch::Receiver<bool>) -> Result<Ended, String> {
        let spec = &self.spec;
        let link = self.link().await?;
        let mut source = self.source(&link);
        let meta = source.metadata().await.map_err(|e| e.to_string())?;
        if meta.cluster_id == self.broker.cluster_id() {
            return Err(format!(
                "the source reports cluster id '{}', the same as this cluster's: loop prevention tells clusters apart by id; give each cluster its own cluster.id",
                meta.cluster_id
            ));
        }
        self.report.lock().last_contact_ms = now_ms();
        self.report.lock().source_cluster_id = meta.cluster_id.clone();
        let (plugins, plugin, config) = (
            self.plugins.clone(),
            spec.plugin.clone(),
            spec.config.clone(),
        );
        let mut session =
            tokio::task::spawn_blocking(move || plugins.open_connector(&plugin, config))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("plugin '{}' {e}", spec.plugin))?;
        self.report.lock().plugin_version = session.version();
        let routes = self.plan(&meta, &mut session, &mut source).await?;
        let mut positions = self.positions(&meta, &routes, &mut source).await?;
        {
            let mut report = self.report.lock();
            report.topics = routes
                .iter()
                .map(|(topic, route)| {
                    let partitions = (0..route.partitions)
                        .map(|p| PartitionReport {
                            partition: p,
                            position: positions[&(topic.clone(), p)].next_offset,
                            high_watermark: -1,
                            behind: 0,
                        })
                        .collect();
                    (
                        topic.clone(),
                        TopicReport {
                            target: route.target.clone(),
                            partitions,
                        },
                    )
                })
                .collect();
        }
        // One fetcher per source broker, for the partitions it leads.
        let (tx, mut rx) = mpsc::channel::<Result<Vec<Chunk>, String>>(QUEUE);
        let mut by_leader: BTreeMap<i32, Vec<(String, i32, i64)>> = BTreeMap::new();
        for (topic, route) in &routes {
            let leaders = &meta.topics[topic];
            for p in 0..route.partitions {
                let leader = leaders.get(p as usize).copied().unwrap_or(-1);
                if leader < 0 {
                    return Err(format!("source partition {topic}-{p} has no leader"));
                }
                by_leader.entry(leader).or_default().push((
                    topic.clone(),
                    p,
                    positions[&(topic.clone(), p)].next_offset,
                ));
            }
        }
        let mut fetchers = Vec::new();
        let per_broker = (FETCH_SESSIONS / by_leader.len().max(1)).max(1);
        for (leader, partitions) in by_leader {
            // Several sessions per source broker, each its own connection with a fetch in
            // flight: over a long round trip one fetch at a time cannot fill the link.
            let sessions = per_broker.min(partitions.len());
            let mut groups = vec![Vec::new(); sessions];
            for (i, partition) in partitions.into_iter().enumerate() {
                groups[i % sessions].push(partition);
            }
            for group in groups {
                let mut src = self.source(&link);
                src.use_brokers(&meta);
                fetchers.push(AbortOnDrop(tokio::spawn(fetch_loop(
                    src,
                    leader,
                    group,
                    self.broker.cluster_id().to_string(),
                    tx.clone(),
                ))));
            }
        }
        drop(tx);
        self.set_state("running", None);
        // Discovery, config sync and checkpoints each cost round trips to the source:
        // they run beside the copying, never in its way.
        let (control_tx, mut control_rx) = mpsc::channel::<Result<Ended, String>>(1);
        let _control = AbortOnDrop(tokio::spawn(self.clone().control(
            link.clone(),
            meta.clone(),
            routes.clone(),
            control_tx,
        )));
        drop(source);
        let mut writer = ClusterWriter::new(self.broker.clone());
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(Ended::Stopped),
                chunks = rx.recv() => {
                    let chunks = chunks.ok_or("the fetchers ended")??;
                    self.report.lock().last_contact_ms = now_ms();
                    if !self.still_current() {
                        return Ok(Ended::Stopped);
                    }
                    self.copy(chunks, &routes, &mut positions, &mut session, &mut writer, &meta.cluster_id).await?;
                }
                ended = control_rx.recv() => {
                    return ended.unwrap_or_else(|| Err("the control task ended".into()));
                }
            }
        }
    }

    /// Runs discovery (new topics and partitions, config changes) and checkpoints
    /// until the source's topics change (`Replan`), the spec changes (`Stopped`) or the
    /// source cannot be asked; reports how it ended on `ended`. Has its own connection
    /// and plugin instance.
    async fn control(
        self,
        link: Option<Arc<MirrorClient>>,
        meta: SourceMetadata,
        routes: BTreeMap<String, Route>,
        ended: mpsc::Sender<Result<Ended, String>>,
    ) {
        let result = self.control_loop(link, meta, routes).await;
        let _ = ended.send(result).await;
    }

    async fn control_loop(
        &self,
        link: Option<Arc<MirrorClient>>,
        meta: SourceMetadata,
        routes: BTreeMap<String, Route>,
    ) -> Result<Ended, String> {
        let spec = &self.spec;
        let mut source = self.source(&link);
        source.use_brokers(&meta);
        let (plugins, plugin, config) = (
            self.plugins.clone(),
            spec.plugin.clone(),
            spec.config.clone(),
        );
        let mut session =
            tokio::task::spawn_blocking(move || plugins.open_connector(&plugin, config))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("plugin '{}' {e}", spec.plugin))?;
        let mut writer = ClusterWriter::new(self.broker.clone());
        let mut discovery =
            tokio::time::interval(Duration::from_millis(spec.discovery_interval_ms));
        let mut checkpoints =
            tokio::time::interval(Duration::from_millis(spec.checkpoint_interval_ms));
        discovery.tick().await;
        loop {
            tokio::select! {
                _ = discovery.tick() => {
                    if !self.still_current() {
                        return Ok(Ended::Stopped);
                    }
                    let now = source.metadata().await.map_err(|e| e.to_string())?;
                    self.report.lock().last_contact_ms = now_ms();
                    if self.changed(&meta, &now, &routes, &mut session)? {
                        tracing::info!(mirror = %spec.name, "mirror: the source's topics changed; planning again");
                        return Ok(Ended::Replan);
                    }
                    if let Err(e) = self.sync_configs(&mut source, &routes).await {
                        tracing::warn!(mirror = %spec.name, error = %e, "mirror: could not sync topic configs");
                        source.reset();
                    }
                }
                _ = checkpoints.tick() => {
                    if let Err(e) = self.checkpoint(&mut source, &mut session, &routes, &mut writer).await {
                        tracing::warn!(mirror = %spec.name, error = %e, "mirror: could not translate group offsets");
                        source.reset();
                    }
                }
            }
        }
    }

    /// The source topics the plugin mirrors and their targets; creates the target
    /// topics (same partition count, the source's configs but the excluded ones) and
    /// adds partitions a source topic gained.
    async fn plan(
        &self,
        meta: &SourceMetadata,
        session: &mut ConnectorSession,
        source: &mut Source,
    ) -> Result<BTreeMap<String, Route>, String> {
        let mut routes = BTreeMap::new();
        for (topic, leaders) in &meta.topics {
            let Some(target) = self.target_of(session, topic)? else {
                continue;
            };
            let partitions = leaders.len() as i32;
            self.ensure_target(source, topic, &target, partitions)
                .await?;
            routes.insert(topic.clone(), Route { target, partitions });
        }
        Ok(routes)
    }

    fn target_of(
        &self,
        session: &mut ConnectorSession,
        topic: &str,
    ) -> Result<Option<String>, String> {
        // Internal topics are the source cluster's own business.
        if topic.starts_with("__") {
            return Ok(None);
        }
        let target = tokio::task::block_in_place(|| {
            self.plugins.target_topic(session, &self.spec.alias, topic)
        })
        .map_err(|e| format!("plugin '{}' target-topic: {e}", self.spec.plugin))?;
        match target {
            Some(t) if t.starts_with("__") || crate::broker::validate_topic_name(&t).is_err() => {
                Err(format!(
                    "plugin '{}' named '{t}' as the target of '{topic}', which is not a topic name a mirror may write",
                    self.spec.plugin
                ))
            }
            other => Ok(other),
        }
    }

    async fn ensure_target(
        &self,
        source: &mut Source,
        topic: &str,
        target: &str,
        partitions: i32,
    ) -> Result<(), String> {
        if let Some(existing) = self.broker.metadata().topics.get(target) {
            let have = existing.assignments.len() as i32;
            if have < partitions {
                match self
                    .broker
                    .create_partitions(target, partitions, None, false)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(mirror = %self.spec.name, topic = target, partitions, "mirror: added partitions to the target")
                    }
                    Err(e) => return Err(format!("adding partitions to '{target}': {e}")),
                }
            }
            return Ok(());
        }
        let configs = self.target_configs(
            source
                .topic_configs(topic)
                .await
                .map_err(|e| e.to_string())?,
            &BTreeMap::new(),
        );
        let live = self.broker.metadata().live_brokers().count().max(1) as i16;
        let factor = match self.spec.replication_factor {
            0 => live.min(3),
            n => n,
        };
        match self
            .broker
            .create_topic(target, partitions, factor, configs, false)
            .await
        {
            Ok(_) => {
                tracing::info!(mirror = %self.spec.name, source = topic, target, partitions, "mirror: created the target topic");
                Ok(())
            }
            Err(TopicError::Exists(_)) => Ok(()),
            Err(e) => Err(format!("creating the target topic '{target}': {e}")),
        }
    }

    /// The configs a target topic should have: its own overrides of what is not
    /// copied, and the source's overrides of what is.
    fn target_configs(
        &self,
        source: Vec<(String, String)>,
        current: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        current
            .iter()
            .filter(|(k, _)| !self.spec.copies_config(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(source.into_iter().filter(|(k, _)| {
                self.spec.copies_config(k) && crate::config::topic::def(k).is_some()
            }))
            .collect()
    }

    /// Follows config changes of the mirrored source topics.
    async fn sync_configs(
        &self,
        source: &mut Source,
        routes: &BTreeMap<String, Route>,
    ) -> Result<(), String> {
        for (topic, route) in routes {
            let Some(current) = self
                .broker
                .metadata()
                .topics
                .get(&route.target)
                .map(|t| t.configs.clone())
            else {
                continue;
            };
            let wanted = self.target_configs(
                source
                    .topic_configs(topic)
                    .await
                    .map_err(|e| e.to_string())?,
                &current,
            );
            if wanted != current {
                self.broker
                    .set_topic_configs(&route.target, wanted, false)
                    .await
                    .map_err(|e| format!("setting the configs of '{}': {e}", route.target))?;
                tracing::info!(mirror = %self.spec.name, topic = %route.target, "mirror: followed a config change at the source");
            }
        }
        Ok(())
    }

    /// Whether the source gained topics the plugin mirrors, or partitions.
    fn changed(
        &self,
        before: &SourceMetadata,
        now: &SourceMetadata,
        routes: &BTreeMap<String, Route>,
        session: &mut ConnectorSession,
    ) -> Result<bool, String> {
        for (topic, leaders) in &now.topics {
            match routes.get(topic) {
                Some(route) if leaders.len() as i32 != route.partitions => return Ok(true),
                Some(_) if before.topics.get(topic) != Some(leaders) => return Ok(true),
                Some(_) => {}
                None if before.topics.contains_key(topic) => {}
                None => {
                    if self.target_of(session, topic)?.is_some() {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Each routed partition's recorded position, or a fresh one at the source's log
    /// start (with a producer id when exactly-once).
    async fn positions(
        &self,
        meta: &SourceMetadata,
        routes: &BTreeMap<String, Route>,
        source: &mut Source,
    ) -> Result<BTreeMap<(String, i32), Position>, String> {
        let spec = &self.spec;
        let mut out = BTreeMap::new();
        let mut fresh: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        {
            let stored = self.stored.lock();
            for (topic, route) in routes {
                for p in 0..route.partitions {
                    let key = offsets::position_key(&spec.name, &spec.id, topic, p);
                    match stored.positions.get(&key) {
                        Some(pos) => {
                            let mut pos = pos.clone();
                            pos.target = route.target.clone();
                            out.insert((topic.clone(), p), pos);
                        }
                        None => {
                            let leader = meta.topics[topic].get(p as usize).copied().unwrap_or(-1);
                            fresh.entry(leader).or_default().push((topic.clone(), p));
                        }
                    }
                }
            }
        }
        for (leader, partitions) in fresh {
            if leader < 0 {
                return Err(format!("source partitions {partitions:?} have no leader"));
            }
            let earliest = source
                .list_offsets(leader, &partitions, -2)
                .await
                .map_err(|e| e.to_string())?;
            for (topic, p) in partitions {
                let start = earliest
                    .get(&(topic.clone(), p))
                    .copied()
                    .unwrap_or(0)
                    .max(0);
                out.insert(
                    (topic.clone(), p),
                    Position {
                        next_offset: start,
                        target: routes[&topic].target.clone(),
                        producer_id: -1,
                        ..Default::default()
                    },
                );
            }
        }
        if spec.exactly_once {
            for pos in out.values_mut().filter(|p| p.producer_id < 0) {
                pos.producer_id = self
                    .broker
                    .allocate_producer_id()
                    .await
                    .map_err(|e| format!("could not allocate a producer id: {e}"))?;
                pos.next_sequence = 0;
            }
        }
        // Fresh positions are recorded before anything is written under them: a mirror
        // that dies before its first position record must come back with the same
        // producer id, or its replay could not be told from new records.
        let fresh: Vec<(String, Position)> = out
            .iter()
            .map(|((topic, p), pos)| {
                (
                    offsets::position_key(&spec.name, &spec.id, topic, *p),
                    pos.clone(),
                )
            })
            .filter(|(key, _)| !self.stored.lock().positions.contains_key(key))
            .collect();
        if !fresh.is_empty() {
            let mut writer = ClusterWriter::new(self.broker.clone());
            record(&mut writer, &fresh, "the first positions").await?;
            self.stored.lock().positions.extend(fresh);
        }
        Ok(out)
    }

    /// Writes fetched records to their targets and records the new positions.
    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        chunks: Vec<Chunk>,
        routes: &BTreeMap<String, Route>,
        positions: &mut BTreeMap<(String, i32), Position>,
        session: &mut ConnectorSession,
        writer: &mut ClusterWriter,
        source_cluster: &str,
    ) -> Result<(), String> {
        let spec = &self.spec;
        let mut moved: Vec<(String, Position)> = Vec::new();
        for chunk in chunks {
            let key = (chunk.topic.clone(), chunk.partition);
            let (Some(route), Some(pos)) = (routes.get(&chunk.topic), positions.get_mut(&key))
            else {
                continue;
            };
            self.note_high_watermark(&chunk, pos.next_offset);
            if chunk.from != pos.next_offset || chunk.next <= pos.next_offset {
                continue;
            }
            let loops = chunk.loops;
            let given = chunk.records.len();
            let mapped = if chunk.records.is_empty() {
                None
            } else {
                let columns = chunk.records;
                Some(
                    tokio::task::block_in_place(|| {
                        self.plugins.map_records(session, &spec.alias, columns)
                    })
                    .map_err(|e| {
                        format!(
                            "plugin '{}' map-records on {}-{}: {e}",
                            spec.plugin, chunk.topic, chunk.partition
                        )
                    })?,
                )
            };
            let out = match &mapped {
                Some(m) => with_provenance(&m.output, &m.input, source_cluster)?,
                None => Vec::new(),
            };
            let filtered = (given - out.len()) as u64;
            let sequence = spec.exactly_once.then_some(Sequence {
                producer_id: pos.producer_id,
                epoch: 0,
                next: &mut pos.next_sequence,
            });
            let appended = writer
                .append(
                    &route.target,
                    chunk.partition,
                    &out,
                    Compression::None,
                    sequence,
                )
                .await
                .map_err(|e| e.to_string())?;
            let now = now_ms();
            if let Some(m) = &mapped {
                for (i, (first, base)) in appended.batches.iter().enumerate() {
                    let end = appended.batches.get(i + 1).map_or(out.len(), |b| b.0);
                    pos.record(&m.output.offsets[*first..end], *base);
                }
            }
            pos.next_offset = chunk.next;
            pos.written_ms = now;
            moved.push((
                offsets::position_key(&spec.name, &spec.id, &chunk.topic, chunk.partition),
                pos.clone(),
            ));
            let bytes: u64 = out
                .iter()
                .map(|r| (r.key().map_or(0, <[u8]>::len) + r.value().map_or(0, <[u8]>::len)) as u64)
                .sum();
            let mut report = self.report.lock();
            report.count(appended.written, bytes, now);
            report.filtered += filtered;
            report.loops_prevented += loops;
            if let (Some(first), Some(last)) = (out.first(), out.last()) {
                report
                    .latencies
                    .record_batch(now, first.timestamp(), last.timestamp());
            }
            set_position(
                &mut report,
                &chunk.topic,
                chunk.partition,
                chunk.next,
                chunk.high_watermark,
            );
        }
        if moved.is_empty() {
            return Ok(());
        }
        record(writer, &moved, "positions").await?;
        self.stored.lock().positions.extend(moved);
        Ok(())
    }

    fn note_high_watermark(&self, chunk: &Chunk, position: i64) {
        let mut report = self.report.lock();
        set_position(
            &mut report,
            &chunk.topic,
            chunk.partition,
            position,
            chunk.high_watermark,
        );
    }

    /// Translates the committed offsets of the mirrored groups and records them.
    async fn checkpoint(
        &self,
        source: &mut Source,
        session: &mut ConnectorSession,
        routes: &BTreeMap<String, Route>,
        writer: &mut ClusterWriter,
    ) -> Result<(), String> {
        let spec = &self.spec;
        let groups = source.groups().await.map_err(|e| e.to_string())?;
        let mut records = Vec::new();
        for group in groups {
            let mirrored = tokio::task::block_in_place(|| {
                self.plugins.mirror_group(session, &spec.alias, &group)
            })
            .map_err(|e| format!("plugin '{}' mirror-group: {e}", spec.plugin))?;
            if !mirrored {
                continue;
            }
            let time_ms = now_ms();
            let committed = source.committed(&group).await.map_err(|e| e.to_string())?;
            let mut checkpoint = Checkpoint {
                time_ms,
                offsets: Vec::new(),
            };
            for ((topic, p), offset) in committed {
                let Some(route) = routes.get(&topic) else {
                    continue;
                };
                // The position as recorded: what the target surely holds.
                let Some(stored) = self
                    .stored
                    .lock()
                    .positions
                    .get(&offsets::position_key(&spec.name, &spec.id, &topic, p))
                    .cloned()
                else {
                    continue;
                };
                if let Some(target_offset) = stored.translate(offset) {
                    checkpoint.offsets.push(GroupOffset {
                        source_topic: topic.clone(),
                        target_topic: route.target.clone(),
                        partition: p,
                        source_offset: offset,
                        target_offset,
                    });
                }
            }
            let key = offsets::checkpoint_key(&spec.name, &spec.id, &group);
            let unchanged = self
                .stored
                .lock()
                .checkpoints
                .get(&key)
                .is_some_and(|c| c.offsets == checkpoint.offsets);
            if !unchanged && !checkpoint.offsets.is_empty() {
                records.push((key, checkpoint));
            }
        }
        self.report.lock().last_checkpoint_ms = now_ms();
        if records.is_empty() {
            return Ok(());
        }
        record(writer, &records, "checkpoints").await?;
        self.stored.lock().checkpoints.extend(records);
        Ok(())
    }
}

/// Appends records to `__quiver_mirrors`, acknowledged by its in-sync replicas.
async fn record<T: Serialize>(
    writer: &mut ClusterWriter,
    records: &[(String, T)],
    what: &str,
) -> Result<(), String> {
    let refs: Vec<(String, Option<&T>)> = records
        .iter()
        .map(|(key, value)| (key.clone(), Some(value)))
        .collect();
    let batch = keyed::encode(&refs, now_ms()).map_err(|e| e.to_string())?;
    writer
        .send(MIRRORS_TOPIC, 0, batch)
        .await
        .map(drop)
        .map_err(|e| format!("recording {what}: {e}"))
}

fn set_position(report: &mut MirrorReport, topic: &str, partition: i32, position: i64, hw: i64) {
    if let Some(p) = report
        .topics
        .get_mut(topic)
        .and_then(|t| t.partitions.get_mut(partition as usize))
    {
        p.position = position;
        if hw >= 0 {
            p.high_watermark = hw;
        }
        p.behind = (p.high_watermark - position).max(0);
    }
}

/// Whether a record's provenance (among `headers`) names cluster `id`.
fn came_from<'a>(headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>, id: &str) -> bool {
    headers
        .filter(|(k, _)| *k == PROVENANCE_HEADER.as_bytes())
        .filter_map(|(_, v)| v)
        .any(|v| v.split(|b| *b == b',').any(|c| c == id.as_bytes()))
}

/// The provenance chain among `headers` (the last such header), as it arrived.
fn chain_of<'a>(headers: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> Option<&'a [u8]> {
    headers
        .filter(|(k, _)| *k == PROVENANCE_HEADER.as_bytes())
        .last()
        .and_then(|(_, v)| v)
}

/// One record as the target gets it: the plugin's record, borrowed from its output
/// columns, its provenance replaced by the chain of the input record it stands for.
#[derive(Debug)]
struct Outgoing<'a> {
    record: Record<'a>,
    chain: Cow<'a, [u8]>,
}

impl OutRecord for Outgoing<'_> {
    fn key(&self) -> Option<&[u8]> {
        self.record.key()
    }

    fn value(&self) -> Option<&[u8]> {
        self.record.value()
    }

    fn timestamp(&self) -> i64 {
        self.record.timestamp()
    }

    fn headers(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.record
            .headers()
            .filter(|(k, _)| *k != PROVENANCE_HEADER.as_bytes())
            .chain(std::iter::once((
                PROVENANCE_HEADER.as_bytes(),
                Some(&*self.chain),
            )))
    }
}

/// The plugin's records as target records, their provenance that of the input record
/// each stands for (whatever the plugin did to the header) with the source cluster's id
/// appended. `inputs` are the records the plugin was given, in offset order; the
/// plugin's offsets were checked to be a subsequence of theirs. Nothing is copied but
/// the chains that grow: a record new to mirroring shares one.
fn with_provenance<'a>(
    mapped: &'a Columns,
    inputs: &'a Columns,
    source_cluster: &'a str,
) -> Result<Vec<Outgoing<'a>>, String> {
    if mapped.offsets.is_empty() {
        return Ok(Vec::new());
    }
    let batch = mapped.batch().map_err(|e| e.to_string())?;
    let given = inputs.batch().map_err(|e| e.to_string())?;
    let mut inputs = given.iter();
    let mut out = Vec::with_capacity(mapped.offsets.len());
    for record in batch.iter() {
        let input = inputs
            .by_ref()
            .find(|r| r.offset() == record.offset())
            .ok_or_else(|| format!("mapped offset {} is not an input record", record.offset()))?;
        let chain = match chain_of(input.headers()) {
            Some(before) if !before.is_empty() => {
                let mut chain = Vec::with_capacity(before.len() + 1 + source_cluster.len());
                chain.extend_from_slice(before);
                chain.push(b',');
                chain.extend_from_slice(source_cluster.as_bytes());
                Cow::Owned(chain)
            }
            _ => Cow::Borrowed(source_cluster.as_bytes()),
        };
        out.push(Outgoing { record, chain });
    }
    Ok(out)
}

/// Aborts a task when dropped: a mirror that restarts leaves no fetcher behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches from one source broker until the queue closes or a fetch fails.
async fn fetch_loop(
    mut source: Source,
    leader: i32,
    mut partitions: Vec<(String, i32, i64)>,
    here: String,
    tx: mpsc::Sender<Result<Vec<Chunk>, String>>,
) {
    loop {
        let fetched = match source
            .fetch(
                leader,
                &partitions,
                FETCH_WAIT_MS,
                PARTITION_FETCH_BYTES,
                FETCH_BYTES,
            )
            .await
        {
            Ok(f) => f,
            Err(e) => {
                let address = source.address(leader).unwrap_or("?").to_string();
                let _ = tx
                    .send(Err(format!(
                        "fetching from source broker {leader} ({address}): {e}"
                    )))
                    .await;
                return;
            }
        };
        let mut chunks = Vec::with_capacity(fetched.len());
        for f in fetched {
            if let Some(error) = f.error {
                let _ = tx
                    .send(Err(format!(
                        "source partition {}-{}: {error:?}",
                        f.topic, f.partition
                    )))
                    .await;
                return;
            }
            let Some(slot) = partitions
                .iter_mut()
                .find(|(t, p, _)| *t == f.topic && *p == f.partition)
            else {
                continue;
            };
            if f.offset < f.log_start && f.records.is_empty() {
                // Retention removed what the position points at: what is gone is gone
                // at the source too; go on from its log start.
                tracing::warn!(topic = %f.topic, partition = f.partition, from = f.offset, to = f.log_start, "mirror: source records were deleted before they were copied");
                slot.2 = f.log_start;
                chunks.push(Chunk {
                    topic: f.topic,
                    partition: f.partition,
                    from: f.offset,
                    next: f.log_start,
                    high_watermark: f.high_watermark,
                    records: Columns::default(),
                    loops: 0,
                });
                continue;
            }
            let decoded = decode_columns(
                &f.records,
                &f.topic,
                f.partition,
                f.offset,
                f.high_watermark,
                &here,
            );
            let (next, records, loops) = match decoded {
                Ok(decoded) => decoded,
                Err(e) => {
                    let _ = tx
                        .send(Err(format!(
                            "source partition {}-{} sent a bad batch: {e}",
                            f.topic, f.partition
                        )))
                        .await;
                    return;
                }
            };
            slot.2 = next.max(f.offset);
            chunks.push(Chunk {
                topic: f.topic,
                partition: f.partition,
                from: f.offset,
                next: next.max(f.offset),
                high_watermark: f.high_watermark,
                records,
                loops,
            });
        }
        if tx.send(Ok(chunks)).await.is_err() {
            return;
        }
    }
}

/// The records of `bytes` (whole batches from the source) in `start..hw` as a plugin's
/// columns, copied once; records whose provenance names cluster `here` are left out
/// (and counted), since a record never returns to a cluster it passed through.
fn decode_columns(
    bytes: &[u8],
    topic: &str,
    partition: i32,
    start: i64,
    hw: i64,
    here: &str,
) -> Result<(i64, Columns, u64), BatchError> {
    let mut columns = ColumnsBuilder::new(topic, partition);
    // Record and header counts are not known before the walk; the bytes bound the data.
    columns.reserve(0, 0, bytes.len());
    let mut loops = 0;
    let next = visit_records(bytes, start, hw, |offset, timestamp, raw| {
        if came_from(raw.header_iter(), here) {
            loops += 1;
            return;
        }
        columns.push_with(raw.key, raw.value, raw.header_iter(), timestamp, offset);
    })?;
    Ok((next, columns.build(), loops))
}

/// Positions and checkpoints of every mirror, as `__quiver_mirrors` holds them.
pub(super) fn split_stored(all: BTreeMap<String, serde_json::Value>) -> Stored {
    let mut stored = Stored::default();
    for (key, value) in all {
        match offsets::parse_key(&key) {
            Some(offsets::Key::Position(..)) => {
                if let Ok(p) = serde_json::from_value(value) {
                    stored.positions.insert(key, p);
                }
            }
            Some(offsets::Key::Checkpoint(..)) => {
                if let Ok(c) = serde_json::from_value(value) {
                    stored.checkpoints.insert(key, c);
                }
            }
            None => {}
        }
    }
    stored
}

/// Keys of `stored` that belong to no mirror in `mirrors` (by name and id).
pub(super) fn orphans(stored: &Stored, mirrors: &BTreeMap<String, MirrorSpec>) -> BTreeSet<String> {
    let belongs = |name: &str, id: &str| mirrors.get(name).is_some_and(|m| m.id == id);
    stored
        .positions
        .keys()
        .chain(stored.checkpoints.keys())
        .filter(|key| match offsets::parse_key(key) {
            Some(offsets::Key::Position(n, id, ..)) | Some(offsets::Key::Checkpoint(n, id, _)) => {
                !belongs(n, id)
            }
            None => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::log::batch::{decode_records, DecodedRecord};
    use crate::partition::encode::{encode_batch, RecordData};
    use bytes::Bytes;

    fn record(timestamp: i64, headers: &[(&str, Option<&str>)]) -> RecordData {
        RecordData {
            key: Some(Bytes::from(format!("k{timestamp}"))),
            value: Some(Bytes::from(format!("v{timestamp}"))),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(|v| Bytes::from(v.to_string()))))
                .collect(),
            timestamp,
        }
    }

    /// `records` as the source's log holds them: one batch from offset `base`.
    fn source_batch(base: i64, records: &[RecordData]) -> Bytes {
        let mut batch = encode_batch(records, Compression::None).unwrap().to_vec();
        batch[..8].copy_from_slice(&base.to_be_bytes());
        Bytes::from(batch)
    }

    fn headers(r: &DecodedRecord) -> Vec<(&str, Option<&str>)> {
        r.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    v.as_deref().map(|v| std::str::from_utf8(v).unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn a_record_that_passed_through_a_cluster_is_known_by_its_id() {
        let chain = [(PROVENANCE_HEADER.as_bytes(), Some(&b"us-east,eu-west"[..]))];
        assert!(came_from(chain.into_iter(), "us-east"));
        assert!(came_from(chain.into_iter(), "eu-west"));
        assert!(!came_from(chain.into_iter(), "eu"));
        let other = [(&b"other"[..], Some(&b"eu-west"[..]))];
        assert!(!came_from(other.into_iter(), "eu-west"));
    }

    #[test]
    fn fetched_records_become_columns_less_those_that_were_here_before() {
        let records = [
            record(1000, &[("h", Some("1")), ("h", Some("2"))]),
            record(1001, &[(PROVENANCE_HEADER, Some("us-east,here"))]),
            record(1002, &[(PROVENANCE_HEADER, Some("us-east"))]),
            record(1003, &[("x", None)]),
        ];
        let bytes = source_batch(40, &records);
        // From offset 40 up to (not including) the high watermark 43.
        let (next, columns, loops) = decode_columns(&bytes, "orders", 2, 40, 43, "here").unwrap();
        assert_eq!((next, loops), (43, 1));
        assert_eq!((columns.topic.as_str(), columns.partition), ("orders", 2));
        let batch = columns.batch().unwrap();
        type Seen<'a> = (
            i64,
            i64,
            Option<&'a [u8]>,
            Vec<(&'a [u8], Option<&'a [u8]>)>,
        );
        let seen: Vec<Seen> = batch
            .iter()
            .map(|r| (r.offset(), r.timestamp(), r.key(), r.headers().collect()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    40,
                    1000,
                    Some(&b"k1000"[..]),
                    vec![(&b"h"[..], Some(&b"1"[..])), (&b"h"[..], Some(&b"2"[..]))]
                ),
                (
                    42,
                    1002,
                    Some(&b"k1002"[..]),
                    vec![(PROVENANCE_HEADER.as_bytes(), Some(&b"us-east"[..]))]
                ),
            ]
        );
    }

    #[test]
    fn provenance_extends_the_input_chain_whatever_the_plugin_wrote() {
        let inputs = [
            record(
                1005,
                &[("a", Some("1")), (PROVENANCE_HEADER, Some("ap-south"))],
            ),
            record(1006, &[]),
            record(1007, &[("b", None)]),
        ];
        let (_, inputs, _) =
            decode_columns(&source_batch(5, &inputs), "orders", 0, 0, 100, "here").unwrap();
        // The plugin dropped 6, rewrote 5's provenance and 7's value.
        let mut mapped = ColumnsBuilder::new("orders", 0);
        mapped.push::<&str>(
            Some(b"k5"),
            Some(b"v5"),
            &[("a", Some(b"1")), (PROVENANCE_HEADER, Some(b"forged"))],
            1005,
            5,
        );
        mapped.push::<&str>(Some(b"k7"), Some(b"new"), &[("b", None)], 1007, 7);
        let mapped = mapped.build();
        let out = with_provenance(&mapped, &inputs, "us-east").unwrap();
        // What the target's log gets.
        let written = encode_batch(&out, Compression::None).unwrap();
        let (_, written) = decode_records(&written, 0, i64::MAX).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            headers(&written[0]),
            vec![
                ("a", Some("1")),
                (PROVENANCE_HEADER, Some("ap-south,us-east"))
            ]
        );
        assert_eq!(written[0].value.as_deref(), Some(&b"v5"[..]));
        assert_eq!(
            headers(&written[1]),
            vec![("b", None), (PROVENANCE_HEADER, Some("us-east"))]
        );
        assert_eq!(written[1].value.as_deref(), Some(&b"new"[..]));
        assert_eq!(written[1].timestamp, 1007);
    }

    #[test]
    fn a_mapped_record_that_was_not_given_is_refused() {
        let (_, inputs, _) =
            decode_columns(&source_batch(5, &[record(1, &[])]), "t", 0, 0, 100, "here").unwrap();
        let mut mapped = ColumnsBuilder::new("t", 0);
        mapped.push::<&str>(None, None, &[], 1, 9);
        let e = with_provenance(&mapped.build(), &inputs, "us-east").unwrap_err();
        assert_eq!(e, "mapped offset 9 is not an input record");
    }

    #[test]
    fn latency_percentiles_and_rates_follow_the_samples() {
        let mut report = MirrorReport::default();
        for ms in 1..=100 {
            report.latencies.record(ms);
        }
        let seen = report.clone().as_of(10_000);
        assert_eq!((seen.latency_p50_ms, seen.latency_p99_ms), (51, 99));
        report.count(100, 1000, 10_000);
        report.count(100, 1000, 11_000);
        assert_eq!((report.records, report.bytes), (200, 2000));
        assert_eq!(report.records_per_sec, 200.0);
    }
}
