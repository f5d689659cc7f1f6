//! The partitions this broker hosts and the topic lifecycle on top of the metadata:
//! creating, growing, reconfiguring and deleting topics, and the background upkeep of
//! every log (retention, time-based rolling, periodic fsync).
//!
//! Topic changes are made durable in the [`controller`](crate::controller) first and
//! only then applied to the logs, so after a crash the logs can always be brought in
//! line with the metadata (missing partition directories are created on startup).

pub mod produce;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use parking_lot::RwLock;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::topic::{self, TopicSettings};
use crate::config::Config;
use crate::controller::{Command, Metadata, MetadataError, TopicMeta};
use crate::group::{GroupCoordinator, GroupError, OFFSETS_TOPIC};
use crate::log::{Log, LogError};
use crate::partition::Partition;

/// The longest topic name Kafka accepts.
const MAX_TOPIC_NAME: usize = 249;

/// Why a topic operation failed; [`TopicError::code`] maps it to a Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The topic does not exist.
    #[error("topic '{0}' does not exist")]
    Unknown(String),
    /// The topic exists already.
    #[error("topic '{0}' already exists")]
    Exists(String),
    /// The name breaks Kafka's naming rules.
    #[error("invalid topic name '{name}': {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The partition count is not acceptable.
    #[error("{0}")]
    InvalidPartitions(String),
    /// This broker cannot hold that many replicas.
    #[error("replication factor {0} is not possible: this cluster has 1 broker")]
    InvalidReplicationFactor(i16),
    /// A topic config is unknown or out of range.
    #[error("invalid config {key}={value}: {reason}")]
    InvalidConfig {
        /// The config name.
        key: String,
        /// The value given.
        value: String,
        /// What would be accepted.
        reason: String,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A partition log failed.
    #[error("partition {topic}-{partition}: {source}")]
    Storage {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What failed.
        source: LogError,
    },
}

impl TopicError {
    /// The Kafka error a client receives for this failure.
    pub fn code(&self) -> ResponseError {
        match self {
            TopicError::Unknown(_) | TopicError::Metadata(MetadataError::UnknownTopic(_)) => {
                ResponseError::UnknownTopicOrPartition
            }
            TopicError::Exists(_) | TopicError::Metadata(MetadataError::TopicExists(_)) => {
                ResponseError::TopicAlreadyExists
            }
            TopicError::InvalidName { .. } => ResponseError::InvalidTopicException,
            TopicError::InvalidPartitions(_)
            | TopicError::Metadata(MetadataError::PartitionsCannotShrink { .. }) => {
                ResponseError::InvalidPartitions
            }
            TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            TopicError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            TopicError::Storage { .. } => ResponseError::KafkaStorageError,
            TopicError::Metadata(_) => ResponseError::UnknownServerError,
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another quiver process")]
    Locked(PathBuf),
    /// The metadata could not be loaded.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A partition log could not be opened.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The consumer groups could not be loaded from `__consumer_offsets`.
    #[error(transparent)]
    Groups(#[from] GroupError),
}

/// A topic as hosted here: its metadata, effective settings and partitions.
#[derive(Debug)]
pub struct Topic {
    /// The topic's metadata.
    pub meta: TopicMeta,
    /// Its effective settings.
    pub settings: Arc<TopicSettings>,
    /// Its partitions, by index.
    pub partitions: Vec<Arc<Partition>>,
}

/// The broker's partitions and topic lifecycle.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    metadata: Metadata,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Woken whenever records are appended anywhere; long-polling fetches wait on it.
    appended: Notify,
    /// The consumer group coordinator, loaded from `__consumer_offsets` at startup.
    groups: Arc<GroupCoordinator>,
    /// Held for the broker's lifetime: one process per data directory.
    _lock: fs::File,
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Broker {
    /// Opens the data directory, loads the metadata and recovers every partition log.
    pub fn open(config: Config) -> Result<Broker, StartError> {
        let dir = config.broker.data_dir.clone();
        let io = |source| StartError::DataDir {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let lock = fs::File::create(dir.join(".lock")).map_err(io)?;
        if lock.try_lock().is_err() {
            return Err(StartError::Locked(dir));
        }
        remove_deleted_dirs(&dir);
        let metadata = Metadata::open(&dir)?;
        let broker = Broker {
            groups: Arc::new(GroupCoordinator::new(config.group.limits())),
            config,
            metadata,
            topics: RwLock::new(HashMap::new()),
            appended: Notify::new(),
            _lock: lock,
        };
        let now = now_ms();
        for meta in broker.metadata.topics() {
            let topic = broker.host_topic(meta, now)?;
            broker
                .topics
                .write()
                .insert(topic.meta.name.clone(), Arc::new(topic));
        }
        broker.load_groups()?;
        Ok(broker)
    }

    /// Creates `__consumer_offsets` if it is missing and rebuilds every group from it.
    fn load_groups(&self) -> Result<(), StartError> {
        let topic = match self.topic(OFFSETS_TOPIC) {
            Some(topic) => topic,
            None => {
                let configs = BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("segment.bytes".to_string(), (100 * 1024 * 1024).to_string()),
                ]);
                let partitions = self.config.group.offsets_topic_partitions;
                self.create_topic(OFFSETS_TOPIC, partitions, 1, configs, false)?;
                self.topic(OFFSETS_TOPIC)
                    .ok_or_else(|| TopicError::Unknown(OFFSETS_TOPIC.to_string()))?
            }
        };
        if topic.meta.partitions != self.config.group.offsets_topic_partitions {
            tracing::warn!(
                existing = topic.meta.partitions,
                configured = self.config.group.offsets_topic_partitions,
                "{OFFSETS_TOPIC} exists with another partition count; keeping it, since groups are placed by it"
            );
        }
        let started = std::time::Instant::now();
        let stats = self.groups.load(topic.partitions.clone())?;
        tracing::info!(
            groups = stats.groups,
            records = stats.records,
            skipped = stats.skipped,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded consumer groups"
        );
        Ok(())
    }

    /// The consumer group coordinator.
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cluster metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// A topic by its id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .values()
            .find(|t| t.meta.id == id)
            .cloned()
    }

    /// Every topic, ordered by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        all
    }

    /// One partition.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let topic = self.topic(topic)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i).cloned())
    }

    /// Wakes every fetch waiting for new data.
    pub fn notify_appended(&self) {
        self.appended.notify_waiters();
    }

    /// Resolves once records are appended after the returned future is first polled.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Creates a topic. `partitions` and `replication_factor` of -1 take the defaults.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, TopicError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.config.kafka.default_partitions
        } else {
            partitions
        };
        if !(1..=100_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions must be between 1 and 100000, not {partitions}"
            )));
        }
        if replication_factor != -1 && replication_factor != 1 {
            return Err(TopicError::InvalidReplicationFactor(replication_factor));
        }
        validate_configs(&configs)?;
        if self.topic(name).is_some() {
            return Err(TopicError::Exists(name.to_string()));
        }
        let meta = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
            internal: name.starts_with("__"),
        };
        if validate_only {
            return Ok(meta);
        }
        // Holding the write lock across the commit keeps concurrent creates of one name
        // from both opening logs.
        let mut topics = self.topics.write();
        if topics.contains_key(name) {
            return Err(TopicError::Exists(name.to_string()));
        }
        self.metadata.submit(Command::CreateTopic(meta.clone()))?;
        let topic = self.host_topic(meta.clone(), now_ms())?;
        topics.insert(name.to_string(), Arc::new(topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(meta)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<TopicMeta, TopicError> {
        let mut topics = self.topics.write();
        let topic = topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        self.metadata.submit(Command::DeleteTopic {
            name: name.to_string(),
        })?;
        topics.remove(name);
        drop(topics);
        for partition in &topic.partitions {
            let dir = self.partition_dir(name, partition.index());
            // Renamed first so that a crash mid-delete leaves nothing that looks live.
            let doomed = dir.with_extension(format!("{}.deleted", Uuid::new_v4().simple()));
            if let Err(e) = fs::rename(&dir, &doomed).and_then(|_| fs::remove_dir_all(&doomed)) {
                tracing::warn!(topic = name, partition = partition.index(), error = %e, "could not remove partition directory");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.meta.clone())
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut topics = self.topics.write();
        let topic = topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.meta.partitions;
        if count <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the new count {count} must be larger"
            )));
        }
        if count > 100_000 {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions must be at most 100000, not {count}"
            )));
        }
        if validate_only {
            return Ok(());
        }
        self.metadata.submit(Command::SetPartitions {
            name: name.to_string(),
            partitions: count,
        })?;
        let mut meta = topic.meta.clone();
        meta.partitions = count;
        let mut partitions = topic.partitions.clone();
        let now = now_ms();
        for index in current..count {
            partitions.push(Arc::new(self.open_partition(
                &meta,
                &topic.settings,
                index,
                now,
            )?));
        }
        topics.insert(
            name.to_string(),
            Arc::new(Topic {
                meta,
                settings: topic.settings.clone(),
                partitions,
            }),
        );
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        validate_configs(&configs)?;
        let mut topics = self.topics.write();
        let topic = topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        if validate_only {
            return Ok(());
        }
        self.metadata.submit(Command::SetConfigs {
            name: name.to_string(),
            configs: configs.clone(),
        })?;
        let settings = Arc::new(topic::resolve(&self.config.log, &configs));
        for partition in &topic.partitions {
            partition.set_settings(settings.clone());
        }
        let mut meta = topic.meta.clone();
        meta.configs = configs;
        topics.insert(
            name.to_string(),
            Arc::new(Topic {
                meta,
                settings,
                partitions: topic.partitions.clone(),
            }),
        );
        tracing::info!(topic = name, "changed topic configs");
        Ok(())
    }

    /// Compaction, retention, time-based rolling and due fsyncs for every partition.
    /// Compaction and retention run only when `enforce_retention` is set (every
    /// `retention_check_interval_ms`); with `cleanup.policy=compact,delete` the log is
    /// compacted first and retention then deletes whole expired segments, as in Kafka.
    /// Runs on a blocking thread: a compaction pass reads and rewrites whole segments.
    pub fn maintain(&self, enforce_retention: bool) {
        let now = now_ms();
        for topic in self.topics() {
            for partition in &topic.partitions {
                let log = partition.log();
                if enforce_retention && topic.settings.compact {
                    match log.compact(now) {
                        Ok(None) => {}
                        Ok(Some(stats)) => tracing::info!(
                            topic = %topic.meta.name,
                            partition = partition.index(),
                            cleaned_up_to = stats.cleaned_up_to,
                            segments_before = stats.segments_before,
                            segments_after = stats.segments_after,
                            bytes_before = stats.bytes_before,
                            bytes_after = stats.bytes_after,
                            records_removed = stats.records_removed,
                            tombstones_removed = stats.tombstones_removed,
                            "compacted log"
                        ),
                        Err(e) => tracing::error!(
                            topic = %topic.meta.name,
                            partition = partition.index(),
                            error = %e,
                            "compaction failed"
                        ),
                    }
                }
                if enforce_retention && topic.settings.delete_retention {
                    match log.enforce_retention(now) {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(
                            topic = %topic.meta.name,
                            partition = partition.index(),
                            deleted,
                            log_start_offset = log.log_start_offset(),
                            "retention deleted segments"
                        ),
                        Err(e) => tracing::error!(
                            topic = %topic.meta.name,
                            partition = partition.index(),
                            error = %e,
                            "retention failed"
                        ),
                    }
                }
                if let Err(e) = log.flush_if_due(now) {
                    tracing::error!(topic = %topic.meta.name, partition = partition.index(), error = %e, "flush failed");
                }
            }
        }
    }

    /// Runs [`Broker::maintain`] on a schedule until the broker is dropped.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let retention_every = Duration::from_millis(self.config.log.retention_check_interval_ms);
        tokio::spawn(async move {
            let tick = Duration::from_millis(100).min(retention_every);
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_retention = tokio::time::Instant::now();
            loop {
                interval.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                let retention = last_retention.elapsed() >= retention_every;
                if retention {
                    last_retention = tokio::time::Instant::now();
                }
                let _ = tokio::task::spawn_blocking(move || broker.maintain(retention)).await;
            }
        })
    }

    /// Flushes and closes every log; the broker must not append afterwards.
    pub fn shutdown(&self) {
        for topic in self.topics() {
            for partition in &topic.partitions {
                if let Err(e) = partition.close(now_ms()) {
                    tracing::error!(topic = %topic.meta.name, partition = partition.index(), error = %e, "closing log failed");
                }
            }
        }
    }

    /// Hands out a new producer id.
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        self.metadata.allocate_producer_id()
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.broker.data_dir.join(format!("{topic}-{index}"))
    }

    fn host_topic(&self, meta: TopicMeta, now: i64) -> Result<Topic, TopicError> {
        let settings = Arc::new(topic::resolve(&self.config.log, &meta.configs));
        let partitions = (0..meta.partitions)
            .map(|index| {
                self.open_partition(&meta, &settings, index, now)
                    .map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        Ok(Topic {
            meta,
            settings,
            partitions,
        })
    }

    fn open_partition(
        &self,
        meta: &TopicMeta,
        settings: &Arc<TopicSettings>,
        index: i32,
        now: i64,
    ) -> Result<Partition, TopicError> {
        let dir = self.partition_dir(&meta.name, index);
        let log =
            Log::open(&dir, settings.log.clone(), now).map_err(|source| TopicError::Storage {
                topic: meta.name.clone(),
                partition: index,
                source,
            })?;
        Partition::open(Arc::from(meta.name.as_str()), index, log, settings.clone()).map_err(
            |source| TopicError::Storage {
                topic: meta.name.clone(),
                partition: index,
                source,
            },
        )
    }
}

/// Kafka's topic naming rules.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| TopicError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if name.len() > MAX_TOPIC_NAME {
        return Err(invalid("the name is longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), TopicError> {
    for (key, value) in configs {
        topic::validate(key, value).map_err(|reason| TopicError::InvalidConfig {
            key: key.clone(),
            value: value.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Finishes deletes interrupted by a crash.
fn remove_deleted_dirs(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.to_string_lossy().ends_with(".deleted") {
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove deleted partition directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(dir: &Path) -> Broker {
        let mut config = Config::default();
        config.broker.data_dir = dir.to_path_buf();
        Broker::open(config).unwrap()
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert_eq!(err.code(), ResponseError::InvalidTopicException, "{bad}");
        }
    }

    #[test]
    fn lifecycle_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        let meta = b.create_topic("events", 2, -1, configs, false).unwrap();
        assert_eq!(
            b.create_topic("events", 2, 1, BTreeMap::new(), false)
                .unwrap_err()
                .code(),
            ResponseError::TopicAlreadyExists
        );
        b.create_partitions("events", 4, false).unwrap();
        assert_eq!(
            b.create_partitions("events", 3, false).unwrap_err().code(),
            ResponseError::InvalidPartitions
        );
        let mut bad = BTreeMap::new();
        bad.insert("retention.ms".to_string(), "-5".to_string());
        assert_eq!(
            b.set_topic_configs("events", bad, false)
                .unwrap_err()
                .code(),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            b.create_topic("rf", 1, 3, BTreeMap::new(), false)
                .unwrap_err()
                .code(),
            ResponseError::InvalidReplicationFactor
        );
        assert!(b
            .create_topic("gone", 1, -1, BTreeMap::new(), false)
            .is_ok());
        b.delete_topic("gone").unwrap();
        b.shutdown();
        drop(b);

        let b = broker(dir.path());
        let topic = b.topic("events").unwrap();
        assert_eq!(topic.meta.id, meta.id);
        assert_eq!(topic.partitions.len(), 4);
        assert_eq!(topic.settings.log.retention_ms, 1000);
        assert!(b.topic("gone").is_none());
        assert!(!dir.path().join("gone-0").exists());
    }

    #[test]
    fn a_data_directory_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let _first = broker(dir.path());
        let mut config = Config::default();
        config.broker.data_dir = dir.path().to_path_buf();
        assert!(matches!(Broker::open(config), Err(StartError::Locked(_))));
    }
}
