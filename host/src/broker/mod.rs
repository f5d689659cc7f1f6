//! The partitions this broker hosts, kept in line with the cluster metadata, and the
//! topic lifecycle on top of the [`controller`](crate::controller): creating, growing,
//! reconfiguring and deleting topics, and the background upkeep of every log
//! (retention, time-based rolling, periodic fsync).
//!
//! Topic changes are committed to the metadata log first; every broker then applies the
//! committed state to its disk in [`Broker::reconcile`] (opening replicas assigned to it,
//! removing those of deleted topics). After a crash the logs are brought in line with
//! the metadata the same way.

pub mod produce;
pub mod remote;
mod security;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::topic::{self, TopicSettings};
use crate::config::Config;
use crate::controller::placement::{self, AssignmentError, PlacementError};
use crate::controller::{
    Applied, BrokerMeta, Command, Controller, ControllerError, PartitionState, State, StateError,
    TopicMeta,
};
use crate::group::{GroupCoordinator, GroupError, LoadStats, OFFSETS_TOPIC};
use crate::log::{Log, LogError};
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::replication::ReplicaManager;
use crate::tenancy::{tenant, Security};

/// The longest topic name Kafka accepts.
const MAX_TOPIC_NAME: usize = 249;

/// Producer ids are reserved from the controller in blocks so that allocating one
/// rarely needs a commit.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Replicas opened at once when several are newly assigned (or recovered at startup).
const OPENERS: usize = 8;

/// How long a topic change waits for the controller.
pub(crate) const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The replicas cannot be placed.
    #[error(transparent)]
    InvalidReplicationFactor(#[from] PlacementError),
    /// Replica lists given by the client were refused.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(#[from] AssignmentError),
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
    /// The change would break the limits of the tenant owning the topic.
    #[error("{0}")]
    TenantLimit(String),
    /// The controller refused the change or could not be reached.
    #[error(transparent)]
    Controller(#[from] ControllerError),
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
        use ControllerError::Rejected;
        match self {
            TopicError::Unknown(_)
            | TopicError::Controller(Rejected(StateError::UnknownTopic(_))) => {
                ResponseError::UnknownTopicOrPartition
            }
            TopicError::Exists(_)
            | TopicError::Controller(Rejected(StateError::TopicExists(_))) => {
                ResponseError::TopicAlreadyExists
            }
            TopicError::InvalidName { .. } => ResponseError::InvalidTopicException,
            TopicError::InvalidPartitions(_)
            | TopicError::Controller(Rejected(StateError::PartitionsCannotShrink { .. })) => {
                ResponseError::InvalidPartitions
            }
            TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            TopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            TopicError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            TopicError::TenantLimit(_)
            | TopicError::Controller(Rejected(StateError::TenantLimit(_))) => {
                ResponseError::PolicyViolation
            }
            TopicError::Storage { .. } => ResponseError::KafkaStorageError,
            TopicError::Controller(ControllerError::Unavailable(_)) => {
                ResponseError::RequestTimedOut
            }
            TopicError::Controller(_) => ResponseError::UnknownServerError,
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
    /// A partition log could not be opened.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The consumer groups could not be loaded from `__consumer_offsets`.
    #[error(transparent)]
    Groups(#[from] GroupError),
}

/// A topic as hosted here: its metadata, effective settings and the partitions this
/// broker holds a replica of.
#[derive(Debug)]
pub struct Topic {
    /// The topic's metadata, including every partition's replicas and leader.
    pub meta: TopicMeta,
    /// Effective settings (broker defaults overridden by the topic's configs).
    pub settings: Arc<TopicSettings>,
    /// The replicas hosted here, sorted by partition number (all of them on a single
    /// node).
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// The local replica of partition `index`, if this broker holds one.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        // Every produce and fetch looks partitions up: `partitions` is in partition
        // order (reconcile builds it so), so a search, not a scan.
        self.partitions
            .binary_search_by_key(&index, |p| p.index())
            .ok()
            .map(|i| &self.partitions[i])
    }

    /// The replica set and leadership of partition `index`.
    pub fn assignment(&self, index: i32) -> Option<&PartitionState> {
        self.meta.assignments.get(usize::try_from(index).ok()?)
    }
}

/// The broker: hosted partitions, the metadata view and the group coordinator.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    controller: OnceLock<Arc<Controller>>,
    replication: OnceLock<Arc<ReplicaManager>>,
    /// The cluster endpoint, over which the broker's own writers reach other leaders.
    peers: OnceLock<remote::Peers>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises reconciliations so two never open the same log; holds the
    /// `__consumer_offsets` partitions this broker led after the last one.
    reconciling: Mutex<BTreeSet<i32>>,
    /// Producer ids handed out here: next, end of the reserved block.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    appended: Notify,
    groups: Arc<GroupCoordinator>,
    security: Security,
    metrics: Arc<Metrics>,
    /// Fenced brokers (id, incarnation) and when a Metadata answer here first saw them
    /// fenced ([`listed_brokers`]).
    fenced_seen: Mutex<HashMap<(i32, u64), Instant>>,
    _lock: fs::File,
}

/// How long Metadata answers keep listing a broker after they first showed it fenced.
///
/// The answer that moves a dead broker's partitions to their new leaders must still list
/// the dead broker. librdkafka forgets ("decommissions") a broker that an answer no
/// longer lists, and when that answer also moves the broker's partitions, the forgotten
/// broker's thread hands them back to "no leader" while they migrate: the client then
/// waits for its next once-a-second leader scan. Answers in the grace move the
/// partitions; a later one drops the broker once nothing is delegated to it. Three
/// seconds cover clients that refresh once a second, with room for a slow one; a client
/// that asks later sees the broker gone, as before. It is short because the broker list
/// is also how tools tell which brokers are alive.
const FENCED_LISTED_FOR: Duration = Duration::from_secs(3);

/// The brokers a Metadata answer at `now` lists: every live broker, and a fenced one for
/// [`FENCED_LISTED_FOR`] after an answer first showed it fenced (`seen` remembers when,
/// and forgets brokers that are no longer fenced).
pub fn listed_brokers<'s>(
    state: &'s State,
    seen: &mut HashMap<(i32, u64), Instant>,
    now: Instant,
) -> Vec<&'s BrokerMeta> {
    seen.retain(|(id, incarnation), _| {
        state
            .brokers
            .get(id)
            .is_some_and(|b| b.fenced && b.incarnation == *incarnation)
    });
    state
        .brokers
        .values()
        .filter(|b| {
            !b.fenced || {
                let first = *seen.entry((b.id, b.incarnation)).or_insert(now);
                now.saturating_duration_since(first) < FENCED_LISTED_FOR
            }
        })
        .collect()
}

/// A tenant limit the controller's state refuses, as the broker's error.
fn tenant_limit(checked: Result<(), StateError>) -> Result<(), TopicError> {
    checked.map_err(|e| match e {
        StateError::TenantLimit(message) => TopicError::TenantLimit(message),
        other => TopicError::Controller(ControllerError::Rejected(other)),
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Broker {
    /// Takes ownership of the data directory. Partitions are opened by
    /// [`reconcile`](Self::reconcile) once the controller's metadata is known.
    pub fn open(config: Config) -> Result<Broker, StartError> {
        let dir = config.broker.data_dir.clone();
        let io = |source| StartError::DataDir {
            path: dir.clone(),
            source,
        };
        crate::durability::create_dir_all(&dir).map_err(io)?;
        let lock = fs::File::create(dir.join(".lock")).map_err(io)?;
        if lock.try_lock().is_err() {
            return Err(StartError::Locked(dir));
        }
        remove_deleted_dirs(&dir);
        Ok(Broker {
            groups: Arc::new(GroupCoordinator::new(config.group.limits())),
            security: Security::new(&config.security),
            metrics: Arc::new(Metrics::new()),
            config,
            controller: OnceLock::new(),
            replication: OnceLock::new(),
            peers: OnceLock::new(),
            topics: RwLock::new(HashMap::new()),
            reconciling: Mutex::new(BTreeSet::new()),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            appended: Notify::new(),
            fenced_seen: Mutex::new(HashMap::new()),
            _lock: lock,
        })
    }

    /// The brokers this broker's Metadata answers list now ([`listed_brokers`]).
    pub fn metadata_brokers<'s>(&self, state: &'s State) -> Vec<&'s BrokerMeta> {
        listed_brokers(state, &mut self.fenced_seen.lock(), Instant::now())
    }

    /// Gives the broker's own writers the cluster endpoint, to write to partitions led
    /// by other brokers (see [`remote`]).
    pub fn attach_peers(&self, endpoint: crate::net::Endpoint) {
        let _ = self.peers.set(remote::Peers(endpoint));
    }

    /// The cluster endpoint, once attached.
    pub(crate) fn peers(&self) -> Option<&remote::Peers> {
        self.peers.get()
    }

    /// Connects the broker to its controller; done once, at startup.
    pub fn attach_controller(&self, controller: Arc<Controller>) {
        let me = self.config.broker.node_id;
        self.groups
            .set_store_timeout(std::time::Duration::from_millis(
                self.config.group.offsets_commit_timeout_ms,
            ));
        let metadata = controller.clone();
        self.groups.set_leadership_probe(Arc::new(move |index| {
            metadata
                .state()
                .partition(OFFSETS_TOPIC, index)
                .is_some_and(|p| p.leader == me)
        }));
        let _ = self.controller.set(controller);
    }

    /// Connects the broker to the replica manager; done once, at startup, before the
    /// first reconciliation.
    pub fn attach_replication(&self, manager: Arc<ReplicaManager>) {
        let _ = self.replication.set(manager);
    }

    /// The replica manager, once attached.
    pub fn replication(&self) -> Option<&Arc<ReplicaManager>> {
        self.replication.get()
    }

    /// The controller handle.
    ///
    /// # Panics
    /// Before [`attach_controller`](Self::attach_controller): the server attaches it
    /// before any listener opens.
    pub fn controller(&self) -> &Arc<Controller> {
        self.controller
            .get()
            .expect("the controller is attached before the broker serves")
    }

    /// The cluster metadata as applied on this broker.
    pub fn metadata(&self) -> Arc<State> {
        self.controller().state()
    }

    /// The cluster's id, as clients see it in Metadata.
    pub fn cluster_id(&self) -> &str {
        &self.config.cluster.id
    }

    /// The group coordinator.
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// The broker's event instruments (`/metrics`).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A hosted topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// A hosted topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .values()
            .find(|t| t.meta.id == id)
            .cloned()
    }

    /// Every hosted topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        all
    }

    /// The local replica of one partition.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.topic(topic)?.partition(index).cloned()
    }

    /// Wakes fetches waiting for new data.
    pub fn notify_appended(&self) {
        self.appended.notify_waiters();
    }

    /// Resolves at the next append anywhere on this broker.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Creates a topic through the controller; `partitions` and `replication_factor`
    /// of -1 mean the broker defaults.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, TopicError> {
        let replicas = Replicas::Placed {
            partitions,
            replication_factor,
        };
        self.create_topic_with(name, replicas, configs, validate_only)
            .await
    }

    /// [`create_topic`](Self::create_topic) with the replicas placed by the cluster or
    /// given by the client.
    pub async fn create_topic_with(
        &self,
        name: &str,
        replicas: Replicas,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, TopicError> {
        validate_topic_name(name)?;
        validate_configs(&configs)?;
        let state = self.metadata();
        if state.topics.contains_key(name) {
            return Err(TopicError::Exists(name.to_string()));
        }
        let configs = match tenant::owner(&state.tenants, name) {
            Some(owner) => tenant::with_defaults(owner, configs),
            None => configs,
        };
        let assignments = match replicas {
            Replicas::Placed {
                partitions,
                replication_factor,
            } => {
                let partitions = if partitions == -1 {
                    self.config.kafka.default_partitions
                } else {
                    partitions
                };
                check_partition_count(partitions)?;
                let replication_factor = if replication_factor == -1 {
                    self.config.cluster.default_replication_factor
                } else {
                    replication_factor
                };
                let live: Vec<_> = state.live_brokers().collect();
                placement::assign(name, 0, partitions, replication_factor, &live)?
            }
            Replicas::Assigned(lists) => {
                check_partition_count(lists.len() as i32)?;
                placement::manual(0, lists, None, &state.brokers)?
            }
        };
        let partitions = assignments.len() as i32;
        let replication_factor = assignments.first().map_or(0, Vec::len);
        // Checked here too, so validate_only answers the same as the real thing.
        tenant_limit(state.check_tenant(name, partitions, &configs))?;
        let meta = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
            internal: name.starts_with("__"),
            assignments: assignments.into_iter().map(PartitionState::new).collect(),
        };
        if validate_only {
            return Ok(meta);
        }
        match self
            .controller()
            .submit(Command::CreateTopic(meta.clone()), CONTROLLER_TIMEOUT)
            .await
        {
            Ok(_) => {}
            // A retried proposal that had in fact been committed finds its own topic.
            Err(ControllerError::Rejected(StateError::TopicExists(_)))
                if self.metadata().topics.get(name).map(|t| t.id) == Some(meta.id) => {}
            Err(e) => return Err(e.into()),
        }
        self.reconcile_now().await?;
        tracing::info!(
            topic = name,
            partitions,
            replication_factor,
            "created topic"
        );
        Ok(meta)
    }

    /// Deletes a topic through the controller.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicMeta, TopicError> {
        let meta = self
            .metadata()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        self.controller()
            .submit(
                Command::DeleteTopic {
                    name: name.to_string(),
                },
                CONTROLLER_TIMEOUT,
            )
            .await?;
        self.reconcile_now().await?;
        tracing::info!(topic = name, "deleted topic");
        Ok(meta)
    }

    /// Grows a topic to `count` partitions through the controller, placing the new
    /// partitions' replicas or taking them from `assigned` (one list per new
    /// partition).
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assigned: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let state = self.metadata();
        let topic = state
            .topics
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let current = topic.partitions;
        tenant_limit(state.check_tenant(name, count, &topic.configs))?;
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
        let rf = topic
            .assignments
            .first()
            .map(|p| p.replicas.len() as i16)
            .unwrap_or(1);
        let assignments = match assigned {
            None => {
                let live: Vec<_> = state.live_brokers().collect();
                placement::assign(name, current, count - current, rf, &live)?
            }
            Some(lists) => {
                if lists.len() != (count - current) as usize {
                    return Err(AssignmentError::Count {
                        count: count - current,
                        given: lists.len(),
                    }
                    .into());
                }
                placement::manual(current, lists, Some(rf as usize), &state.brokers)?
            }
        };
        if validate_only {
            return Ok(());
        }
        self.controller()
            .submit(
                Command::SetPartitions {
                    name: name.to_string(),
                    partitions: count,
                    assignments,
                },
                CONTROLLER_TIMEOUT,
            )
            .await?;
        self.reconcile_now().await?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides through the controller.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        validate_configs(&configs)?;
        let state = self.metadata();
        let Some(topic) = state.topics.get(name) else {
            return Err(TopicError::Unknown(name.to_string()));
        };
        let configs = match tenant::owner(&state.tenants, name) {
            Some(owner) => tenant::with_defaults(owner, configs),
            None => configs,
        };
        tenant_limit(state.check_tenant(name, topic.partitions, &configs))?;
        if validate_only {
            return Ok(());
        }
        self.controller()
            .submit(
                Command::SetConfigs {
                    name: name.to_string(),
                    configs,
                },
                CONTROLLER_TIMEOUT,
            )
            .await?;
        self.reconcile_now().await?;
        tracing::info!(topic = name, "changed topic configs");
        Ok(())
    }

    /// Hands out a producer id never given before in this cluster.
    pub async fn allocate_producer_id(&self) -> Result<i64, ControllerError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let applied = self
                .controller()
                .submit(
                    Command::AllocateProducerIds {
                        count: PRODUCER_ID_BLOCK,
                    },
                    CONTROLLER_TIMEOUT,
                )
                .await?;
            let Applied::ProducerIds(first) = applied else {
                return Err(ControllerError::Raft(format!(
                    "unexpected answer to a producer id allocation: {applied:?}"
                )));
            };
            *ids = (first, first + PRODUCER_ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Creates `__consumer_offsets` once enough brokers are alive to give it its
    /// configured replication factor (capped by the cluster's size).
    pub async fn ensure_offsets_topic(&self) -> Result<(), TopicError> {
        let state = self.metadata();
        if state.topics.contains_key(OFFSETS_TOPIC) {
            return Ok(());
        }
        let seeds = self.config.cluster.seeds.len().max(1);
        let wanted = (self.config.cluster.offsets_topic_replication_factor as usize).min(seeds);
        let live = state.live_brokers().count();
        if live < wanted {
            return Err(TopicError::InvalidReplicationFactor(
                PlacementError::NotEnoughBrokers {
                    requested: wanted as i16,
                    live,
                },
            ));
        }
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), (100 * 1024 * 1024).to_string()),
        ]);
        let partitions = self.config.group.offsets_topic_partitions;
        match self
            .create_topic(OFFSETS_TOPIC, partitions, wanted as i16, configs, false)
            .await
        {
            Ok(_) | Err(TopicError::Exists(_)) => Ok(()),
            Err(e) if e.code() == ResponseError::TopicAlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Applies the latest metadata to this broker's disk, on a blocking thread.
    pub async fn reconcile_now(&self) -> Result<(), TopicError> {
        tokio::task::block_in_place(|| self.reconcile_latest())
    }

    /// Applies the metadata as it is when this call's turn comes, read under the
    /// reconcile lock. Callers that captured a state earlier (before a slow plugin
    /// sync, say) must not apply it after a newer one: a topic created in between,
    /// already opened and written here, would look removed, and its logs be deleted.
    pub fn reconcile_latest(&self) -> Result<(), TopicError> {
        let mut offsets_led = self.reconciling.lock();
        let state = self.metadata();
        self.reconcile_locked(&mut offsets_led, &state)
    }

    /// Brings hosted replicas in line with `state`: opens replicas newly assigned here
    /// (recovering their logs), applies changed configs, and removes the replicas of
    /// topics that no longer exist. `state` must be the newest (see
    /// [`reconcile_latest`](Self::reconcile_latest)).
    pub fn reconcile(&self, state: &State) -> Result<(), TopicError> {
        let mut offsets_led = self.reconciling.lock();
        self.reconcile_locked(&mut offsets_led, state)
    }

    fn reconcile_locked(
        &self,
        offsets_led: &mut BTreeSet<i32>,
        state: &State,
    ) -> Result<(), TopicError> {
        let me = self.config.broker.node_id;
        let now = now_ms();
        let current: HashMap<String, Arc<Topic>> = self.topics.read().clone();
        let settings: HashMap<&str, Arc<TopicSettings>> = state
            .topics
            .iter()
            .map(|(name, meta)| {
                let settings = match current.get(name).filter(|t| t.meta.id == meta.id) {
                    Some(t) if t.meta.configs == meta.configs => t.settings.clone(),
                    _ => Arc::new(topic::resolve(&self.config.log, &meta.configs)),
                };
                (name.as_str(), settings)
            })
            .collect();
        let newly_assigned: Vec<(&TopicMeta, &Arc<TopicSettings>, i32)> = state
            .topics
            .iter()
            .flat_map(|(name, meta)| {
                let old = current.get(name).filter(|t| t.meta.id == meta.id);
                let settings = &settings[name.as_str()];
                meta.assignments
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.replicas.contains(&me))
                    .map(|(index, _)| index as i32)
                    .filter(move |index| old.and_then(|t| t.partition(*index)).is_none())
                    .map(move |index| (meta, settings, index))
            })
            .collect();
        let mut opened = self.open_partitions(&newly_assigned, now)?;
        let mut next = HashMap::with_capacity(state.topics.len());
        for (name, meta) in &state.topics {
            let old = current.get(name).filter(|t| t.meta.id == meta.id);
            let settings = settings[name.as_str()].clone();
            let mut partitions = Vec::new();
            for (index, assignment) in meta.assignments.iter().enumerate() {
                if !assignment.replicas.contains(&me) {
                    continue;
                }
                // ISR changes of a partition led here before and after, whatever
                // their cause (this broker's proposal, or the controller fencing a
                // follower), as Kafka's leader counts its ISR shrinks and expansions.
                if let Some(before) = old.and_then(|t| t.meta.assignments.get(index)) {
                    if before.leader == me
                        && assignment.leader == me
                        && before.isr.len() != assignment.isr.len()
                    {
                        self.metrics
                            .isr_changed(assignment.isr.len() > before.isr.len());
                    }
                }
                let index = index as i32;
                let partition = match old.and_then(|t| t.partition(index)) {
                    Some(p) => {
                        if !Arc::ptr_eq(&p.settings(), &settings) {
                            p.set_settings(settings.clone());
                        }
                        p.clone()
                    }
                    None => match opened.remove(&(name.as_str(), index)) {
                        Some(p) => p,
                        None => Arc::new(self.open_partition(meta, &settings, index, now)?),
                    },
                };
                partitions.push(partition);
            }
            next.insert(
                name.clone(),
                Arc::new(Topic {
                    meta: meta.clone(),
                    settings,
                    partitions,
                }),
            );
        }
        let removed: Vec<Arc<Topic>> = current
            .iter()
            .filter(|(name, t)| next.get(*name).is_none_or(|n| n.meta.id != t.meta.id))
            .map(|(_, t)| t.clone())
            .collect();
        *self.topics.write() = next;
        if let Some(manager) = self.replication.get() {
            // Roles (leader, follower, offline) follow the metadata just applied.
            let local: Vec<_> = self
                .topics
                .read()
                .values()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter_map(|p| t.assignment(p.index()).map(|a| (p.clone(), a.clone())))
                        .collect::<Vec<_>>()
                })
                .collect();
            manager.update(local, &state.brokers);
        }
        for topic in removed {
            for partition in &topic.partitions {
                self.remove_partition_dir(&topic.meta.name, partition.index());
            }
            if !state.topics.contains_key(&topic.meta.name) {
                self.metrics.forget_topic(&topic.meta.name);
            }
        }
        let led: BTreeSet<i32> = state
            .topics
            .get(OFFSETS_TOPIC)
            .map(|t| {
                t.assignments
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.leader == me)
                    .map(|(i, _)| i as i32)
                    .collect()
            })
            .unwrap_or_default();
        let offsets_topic = self.topics.read().get(OFFSETS_TOPIC).cloned();
        if let Some(topic) = offsets_topic {
            self.coordinate_groups(&topic, offsets_led, &led);
            *offsets_led = led;
        }
        Ok(())
    }

    /// Adopts a data directory from before the replicated metadata: a single node kept
    /// its topics in `<data_dir>/metadata.json`. Its topics are proposed to the
    /// controller once, keeping their ids, with this broker as their only replica, and
    /// the file is renamed to `metadata.json.adopted`. Must run before
    /// [`remove_stray_partitions`](Self::remove_stray_partitions), which would
    /// otherwise delete their logs. Returns how many topics were adopted.
    pub async fn adopt_legacy_metadata(&self) -> Result<usize, TopicError> {
        #[derive(serde::Deserialize)]
        struct Legacy {
            topics: BTreeMap<String, TopicMeta>,
            #[serde(default)]
            producer_ids_reserved: i64,
        }
        let path = self.config.broker.data_dir.join("metadata.json");
        let Ok(bytes) = fs::read(&path) else {
            return Ok(0);
        };
        let corrupt = |reason: String| TopicError::Storage {
            topic: String::new(),
            partition: -1,
            source: LogError::Corrupt {
                path: path.clone(),
                reason,
            },
        };
        let legacy: Legacy = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let me = self.config.broker.node_id;
        let mut adopted = 0;
        for (name, mut meta) in legacy.topics {
            if self.metadata().topics.contains_key(&name) {
                continue;
            }
            meta.assignments = (0..meta.partitions)
                .map(|_| PartitionState::new(vec![me]))
                .collect();
            match self
                .controller()
                .submit(Command::CreateTopic(meta), CONTROLLER_TIMEOUT)
                .await
            {
                Ok(_) | Err(ControllerError::Rejected(StateError::TopicExists(_))) => adopted += 1,
                Err(e) => return Err(e.into()),
            }
        }
        let reserved = self.metadata().producer_ids_reserved;
        if legacy.producer_ids_reserved > reserved {
            // Ids handed out before may still be in use by producers.
            self.controller()
                .submit(
                    Command::AllocateProducerIds {
                        count: legacy.producer_ids_reserved - reserved,
                    },
                    CONTROLLER_TIMEOUT,
                )
                .await?;
        }
        fs::rename(&path, path.with_extension("json.adopted"))
            .map_err(|e| corrupt(format!("could not rename it after adopting it: {e}")))?;
        self.reconcile_now().await?;
        tracing::info!(
            topics = adopted,
            "adopted the topics of a single-node metadata.json"
        );
        Ok(adopted)
    }

    /// Removes partition directories of topics the metadata does not know: left over
    /// from a delete this broker missed while it was down. Only called once this
    /// broker's own registration is applied, so the metadata is known to be current.
    pub fn remove_stray_partitions(&self) {
        let state = self.metadata();
        let me = self.config.broker.node_id;
        let Ok(entries) = fs::read_dir(&self.config.broker.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if validate_topic_name(topic).is_err() {
                continue;
            }
            let assigned = state
                .partition(topic, index)
                .is_some_and(|p| p.replicas.contains(&me));
            if !assigned {
                tracing::warn!(
                    topic,
                    partition = index,
                    "removing a replica the metadata does not assign here"
                );
                self.remove_partition_dir(topic, index);
            }
        }
    }

    /// Group coordination follows the leadership of the offsets partitions: this
    /// broker resigns the groups of partitions it no longer leads and takes over (after
    /// replaying) those of partitions it has come to lead.
    fn coordinate_groups(&self, topic: &Topic, before: &BTreeSet<i32>, led: &BTreeSet<i32>) {
        if self.groups.partition_count() == 0 {
            if topic.meta.partitions != self.config.group.offsets_topic_partitions {
                tracing::warn!(
                    existing = topic.meta.partitions,
                    configured = self.config.group.offsets_topic_partitions,
                    "{OFFSETS_TOPIC} exists with another partition count; keeping it, since groups are placed by it"
                );
            }
            if let Err(e) = self.groups.load(topic.meta.partitions, Vec::new()) {
                tracing::error!(error = %e, "could not start the group coordinator");
                return;
            }
        }
        for index in before.difference(led) {
            let forgotten = self.groups.resign(*index);
            tracing::info!(
                partition = index,
                groups = forgotten,
                "resigned coordination of the groups of a {OFFSETS_TOPIC} partition"
            );
        }
        let started = std::time::Instant::now();
        let mut total = LoadStats::default();
        let mut taken = 0;
        for index in led.difference(before) {
            let Some(partition) = topic.partition(*index) else {
                continue;
            };
            match self.groups.take_over(partition.clone()) {
                Ok(stats) => {
                    taken += 1;
                    total.records += stats.records;
                    total.skipped += stats.skipped;
                    total.groups = stats.groups;
                }
                Err(e) => tracing::error!(
                    partition = index,
                    error = %e,
                    "could not take over the groups of a {OFFSETS_TOPIC} partition; they answer NOT_COORDINATOR"
                ),
            }
        }
        if taken > 0 {
            tracing::info!(
                partitions = taken,
                groups = total.groups,
                records = total.records,
                skipped = total.skipped,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "loaded consumer groups"
            );
        }
    }

    fn remove_partition_dir(&self, topic: &str, index: i32) {
        let dir = self.partition_dir(topic, index);
        if !dir.exists() {
            return;
        }
        // Renamed first so that a crash mid-delete leaves nothing that looks live.
        let doomed = dir.with_extension(format!("{}.deleted", Uuid::new_v4().simple()));
        if let Err(e) = fs::rename(&dir, &doomed).and_then(|_| fs::remove_dir_all(&doomed)) {
            tracing::warn!(topic, partition = index, error = %e, "could not remove partition directory");
        }
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
                // Reported once when it went offline; nothing more to do until a restart.
                if log.storage_failure().is_some() {
                    continue;
                }
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
                if let Err(e) = partition.flush_if_due(now) {
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

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.broker.data_dir.join(format!("{topic}-{index}"))
    }

    /// Opens (creating or recovering) the given replicas, several at a time: each open
    /// waits mostly on fsyncs (a new replica's directory, segment and checkpoints) or
    /// on reading a log back, so a broker hosting hundreds of replicas — the 50 of
    /// `__consumer_offsets` alone on a first start — would otherwise start one fsync
    /// after another. Fails with the first replica that cannot be opened.
    fn open_partitions<'a>(
        &self,
        wanted: &[(&'a TopicMeta, &Arc<TopicSettings>, i32)],
        now: i64,
    ) -> Result<HashMap<(&'a str, i32), Arc<Partition>>, TopicError> {
        let openers = OPENERS.min(wanted.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = Mutex::new(Vec::with_capacity(wanted.len()));
        std::thread::scope(|scope| {
            for _ in 0..openers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((meta, settings, index)) = wanted.get(i) else {
                        break;
                    };
                    let opened = self.open_partition(meta, settings, *index, now);
                    results.lock().push(((meta.name.as_str(), *index), opened));
                });
            }
        });
        results
            .into_inner()
            .into_iter()
            .map(|(key, opened)| opened.map(|p| (key, Arc::new(p))))
            .collect()
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

/// How a new topic's replicas are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicas {
    /// `partitions` partitions of `replication_factor` replicas each, placed by the
    /// cluster (rack-aware); -1 for either takes the broker's default.
    Placed {
        /// Partition count, or -1.
        partitions: i32,
        /// Replicas per partition, or -1.
        replication_factor: i16,
    },
    /// Each partition's replicas, in partition order, preferred leader first (Kafka's
    /// `--replica-assignment`).
    Assigned(Vec<Vec<i32>>),
}

fn check_partition_count(partitions: i32) -> Result<(), TopicError> {
    if !(1..=100_000).contains(&partitions) {
        return Err(TopicError::InvalidPartitions(format!(
            "number of partitions must be between 1 and 100000, not {partitions}"
        )));
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

/// A single-node broker with its controller, for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::controller::{BoxFuture, BrokerMeta, RpcKind, Transport};

    /// A transport with nobody on the other end.
    pub(crate) struct Alone;

    impl Transport for Alone {
        fn call(
            &self,
            peer: i32,
            _: std::net::SocketAddr,
            _: RpcKind,
            _: bytes::Bytes,
            _: Duration,
        ) -> BoxFuture<'static, Result<bytes::Bytes, String>> {
            Box::pin(async move { Err(format!("no broker {peer} here")) })
        }
    }

    /// Opens a single-node broker in `dir` (incarnation numbers restarts) once it has
    /// registered and reconciled. Needs a multi-threaded runtime.
    pub(crate) async fn single_node(
        dir: &Path,
        incarnation: u64,
        tweak: impl FnOnce(&mut Config),
    ) -> Arc<Broker> {
        let mut config = Config::default();
        config.broker.data_dir = dir.to_path_buf();
        config.cluster.election_timeout_ms = 50;
        config.cluster.heartbeat_interval_ms = 20;
        tweak(&mut config);
        let broker = Arc::new(Broker::open(config.clone()).unwrap());
        let registration = BrokerMeta {
            id: config.broker.node_id,
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9092,
            cluster_addr: config.cluster.advertised(),
            rack: None,
            incarnation,
            fenced: false,
            listeners: Default::default(),
        };
        let controller = Controller::start(registration, &config.cluster, dir, Arc::new(Alone))
            .await
            .unwrap();
        broker.attach_controller(controller.clone());
        controller.spawn();
        assert!(controller.wait_registered(Duration::from_secs(10)).await);
        broker.reconcile_now().await.unwrap();
        broker
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::single_node;
    use super::*;

    async fn broker(dir: &Path, incarnation: u64) -> Arc<Broker> {
        single_node(dir, incarnation, |_| {}).await
    }

    #[test]
    fn metadata_lists_a_fenced_broker_for_a_while_after_first_showing_it_fenced() {
        let meta = |id: i32, incarnation: u64, fenced: bool| BrokerMeta {
            id,
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9000 + id as u16,
            cluster_addr: ([127, 0, 0, 1], 19000 + id as u16).into(),
            rack: None,
            incarnation,
            fenced,
            listeners: Default::default(),
        };
        let ids = |listed: Vec<&BrokerMeta>| listed.iter().map(|b| b.id).collect::<Vec<_>>();
        let mut state = State::default();
        for id in 1..=3 {
            state.brokers.insert(id, meta(id, 1, false));
        }
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        assert_eq!(ids(listed_brokers(&state, &mut seen, t0)), [1, 2, 3]);

        state.brokers.insert(3, meta(3, 1, true));
        let first = t0 + Duration::from_secs(7);
        assert_eq!(ids(listed_brokers(&state, &mut seen, first)), [1, 2, 3]);
        let within = first + FENCED_LISTED_FOR - Duration::from_millis(1);
        assert_eq!(ids(listed_brokers(&state, &mut seen, within)), [1, 2, 3]);
        let after = first + FENCED_LISTED_FOR;
        assert_eq!(ids(listed_brokers(&state, &mut seen, after)), [1, 2]);

        // Back with a new process, then fenced again: a new grace.
        state.brokers.insert(3, meta(3, 2, false));
        assert_eq!(ids(listed_brokers(&state, &mut seen, after)), [1, 2, 3]);
        assert!(seen.is_empty());
        state.brokers.insert(3, meta(3, 2, true));
        let again = after + Duration::from_secs(60);
        assert_eq!(ids(listed_brokers(&state, &mut seen, again)), [1, 2, 3]);
        assert_eq!(
            ids(listed_brokers(&state, &mut seen, again + FENCED_LISTED_FOR)),
            [1, 2]
        );
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert_eq!(err.code(), ResponseError::InvalidTopicException, "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_node_metadata_json_is_adopted_with_its_logs() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        fs::write(
            dir.path().join("metadata.json"),
            serde_json::json!({
                "cluster_id": "x",
                "topics": {"old": {"name": "old", "id": id, "partitions": 2, "configs": {}, "internal": false}},
                "producer_ids_reserved": 5000
            })
            .to_string(),
        )
        .unwrap();
        fs::create_dir_all(dir.path().join("old-1")).unwrap();
        let b = broker(dir.path(), 1).await;
        assert_eq!(b.adopt_legacy_metadata().await.unwrap(), 1);
        b.remove_stray_partitions();
        let topic = b.topic("old").unwrap();
        assert_eq!(topic.meta.id, id);
        assert_eq!(topic.partitions.len(), 2);
        assert!(dir.path().join("old-1").exists());
        assert!(!dir.path().join("metadata.json").exists());
        assert!(b.allocate_producer_id().await.unwrap() >= 5000);
        assert_eq!(b.adopt_legacy_metadata().await.unwrap(), 0, "adopted once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lifecycle_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path(), 1).await;
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        let meta = b
            .create_topic("events", 2, -1, configs, false)
            .await
            .unwrap();
        assert_eq!(
            b.create_topic("events", 2, 1, BTreeMap::new(), false)
                .await
                .unwrap_err()
                .code(),
            ResponseError::TopicAlreadyExists
        );
        b.create_partitions("events", 4, None, false).await.unwrap();
        assert_eq!(b.topic("events").unwrap().partitions.len(), 4);
        assert_eq!(
            b.create_partitions("events", 3, None, false)
                .await
                .unwrap_err()
                .code(),
            ResponseError::InvalidPartitions
        );
        let mut bad = BTreeMap::new();
        bad.insert("retention.ms".to_string(), "-5".to_string());
        assert_eq!(
            b.set_topic_configs("events", bad, false)
                .await
                .unwrap_err()
                .code(),
            ResponseError::InvalidConfig
        );
        let err = b
            .create_topic("rf", 1, 3, BTreeMap::new(), false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ResponseError::InvalidReplicationFactor);
        assert!(err.to_string().contains("1 live broker"), "{err}");
        b.create_topic("gone", 1, -1, BTreeMap::new(), false)
            .await
            .unwrap();
        assert!(dir.path().join("gone-0").exists());
        b.delete_topic("gone").await.unwrap();
        assert!(!dir.path().join("gone-0").exists());
        let first = b.allocate_producer_id().await.unwrap();
        b.controller().shut_down(Duration::from_secs(5)).await;
        b.shutdown();
        drop(b);

        let b = broker(dir.path(), 2).await;
        let topic = b.topic("events").unwrap();
        assert_eq!(topic.meta.id, meta.id);
        assert_eq!(topic.partitions.len(), 4);
        assert_eq!(topic.settings.log.retention_ms, 1000);
        assert_eq!(topic.assignment(0).unwrap().leader, 0);
        assert!(b.topic("gone").is_none());
        assert!(b.allocate_producer_id().await.unwrap() > first);
    }
}
