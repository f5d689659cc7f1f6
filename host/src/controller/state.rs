//! The metadata state machine: brokers, topics, partition replica sets, leaders, leader
//! epochs and ISRs, and producer-id blocks.
//!
//! [`State::apply`] is pure and deterministic: every broker applies the same committed
//! [`Command`]s in the same order and reaches the same state, so decisions that must be
//! atomic with a change — which replica leads after a broker is fenced, whether an ISR
//! change is still current — are made inside `apply`, not by whoever proposed it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::connect::spec::MirrorSpec;
use crate::plugin::{PluginRecord, Source};
use crate::tenancy::acl::{AclBinding, AclFilter, Acls};
use crate::tenancy::quota::{QuotaConfigs, QuotaEntity, QuotaType, QuotaValue};
use crate::tenancy::scram::{Credential, Mechanism};
use crate::tenancy::tenant::{self, Tenant};
use crate::tenancy::Users;
use crate::transform::spec::TransformSpec;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// No leader: every in-sync replica is fenced (and unclean election is off).
pub const NO_LEADER: i32 = -1;

/// Why a metadata change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StateError {
    /// CreateTopic for a name that is taken.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// A change names a topic that does not exist.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// A change names a partition that does not exist.
    #[error("partition {topic}-{partition} does not exist")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The partition count can only grow.
    #[error(
        "topic '{topic}' has {current} partitions; the count can only grow, not become {requested}"
    )]
    PartitionsCannotShrink {
        /// The topic.
        topic: String,
        /// Its current partition count.
        current: i32,
        /// What was asked for.
        requested: i32,
    },
    /// A change names a broker that never registered.
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    /// An ISR change from a leader that is no longer the leader, or that was based on an
    /// older partition state.
    #[error("stale ISR change for {topic}-{partition}: {reason}")]
    StalePartitionChange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What did not match.
        reason: String,
    },
    /// An ISR that is not a subset of the replicas, or names a fenced broker.
    #[error("invalid ISR {isr:?} for {topic}-{partition}: {reason}")]
    InvalidIsr {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The ISR asked for.
        isr: Vec<i32>,
        /// Why it is refused.
        reason: String,
    },
    /// A plugin change based on another newest version than the plugin has: two
    /// deploys raced, and this one lost.
    #[error("plugin '{name}' changed meanwhile: its newest version is {found}, not {expected}")]
    PluginChanged {
        /// The plugin.
        name: String,
        /// The newest version the change was based on (0: none).
        expected: u32,
        /// The newest version now.
        found: u32,
    },
    /// A plugin record naming a component the change does not carry.
    #[error("plugin '{name}' version {version} names component {sha256}, which was not sent")]
    PluginCodeMissing {
        /// The plugin.
        name: String,
        /// The version.
        version: u32,
        /// The component's SHA-256.
        sha256: String,
    },
    /// A change names a plugin that does not exist.
    #[error("plugin '{0}' does not exist")]
    UnknownPlugin(String),
    /// A plugin that topics name in their `partitioner` config cannot be removed.
    #[error("plugin '{name}' is used by topic(s) {topics}; change their configs first")]
    PluginUsedByTopics {
        /// The plugin.
        name: String,
        /// The topics, comma separated.
        topics: String,
    },
    /// A plugin that transforms run cannot be removed.
    #[error("plugin '{name}' is run by transform(s) {transforms}; remove them first")]
    PluginRunByTransforms {
        /// The plugin.
        name: String,
        /// The transforms, comma separated.
        transforms: String,
    },
    /// A transform is created under a name that is taken.
    #[error("transform '{0}' already exists")]
    TransformExists(String),
    /// A change names a transform that does not exist.
    #[error("transform '{0}' does not exist")]
    UnknownTransform(String),
    /// A plugin that mirrors run cannot be removed.
    #[error("plugin '{name}' is run by mirror(s) {mirrors}; delete them first")]
    PluginRunByMirrors {
        /// The plugin.
        name: String,
        /// The mirrors, comma separated.
        mirrors: String,
    },
    /// A mirror is created under a name that is taken.
    #[error("mirror '{0}' already exists")]
    MirrorExists(String),
    /// A change names a mirror that does not exist.
    #[error("mirror '{0}' does not exist")]
    UnknownMirror(String),
    /// An ACL that cannot be stored.
    #[error("invalid ACL: {0}")]
    InvalidAcl(String),
    /// A tenant is created under a name that is taken.
    #[error("tenant '{0}' already exists")]
    TenantExists(String),
    /// A change names a tenant that does not exist.
    #[error("tenant '{0}' does not exist")]
    UnknownTenant(String),
    /// A tenant that cannot be stored (its name, prefix, principals or limits).
    #[error("invalid tenant: {0}")]
    InvalidTenant(String),
    /// A topic change would break its tenant's limits; the message names the limit.
    #[error("{0}")]
    TenantLimit(String),
    /// A quota policy binding names a plugin that is not a quota policy.
    #[error("plugin '{name}' is a {kind}, not a quota-policy")]
    NotAQuotaPolicy {
        /// The plugin.
        name: String,
        /// Its kind.
        kind: String,
    },
    /// A plugin that decides quotas cannot be removed.
    #[error("plugin '{name}' is the quota policy of {scopes}; clear that first")]
    PluginDecidesQuotas {
        /// The plugin.
        name: String,
        /// `the cluster` and/or `tenant <name>`, comma separated.
        scopes: String,
    },
}

/// A broker as registered with the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    /// The broker's id (`broker.node_id`).
    pub id: i32,
    /// Host Kafka clients connect to.
    pub kafka_host: String,
    /// Port Kafka clients connect to.
    pub kafka_port: u16,
    /// The broker's QUIC address for cluster RPC and replica fetch.
    pub cluster_addr: SocketAddr,
    /// Failure domain, if configured.
    pub rack: Option<String>,
    /// Changes every time the broker process starts; a registration from an older
    /// incarnation is stale.
    pub incarnation: u64,
    /// A fenced broker leads nothing and is in no ISR it could be removed from.
    pub fenced: bool,
    /// The advertised (host, port) of each Kafka listener by name; Metadata answers a
    /// client with the addresses of the listener it came through.
    #[serde(default)]
    pub listeners: BTreeMap<String, (String, u16)>,
}

impl BrokerMeta {
    /// Where clients of the listener named `listener` reach this broker (the main
    /// listener's address when the broker has no listener of that name).
    pub fn endpoint(&self, listener: &str) -> (&str, u16) {
        match self.listeners.get(listener) {
            Some((host, port)) => (host, *port),
            None => (&self.kafka_host, self.kafka_port),
        }
    }
}

/// One partition's replica set and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// The leader's broker id, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped whenever the leader changes; fences requests from older leaders.
    pub leader_epoch: i32,
    /// Bumped on every change of this partition; an ISR change must name the current one.
    pub partition_epoch: i32,
}

impl PartitionState {
    /// A new partition led by its preferred replica with every replica in sync.
    pub fn new(replicas: Vec<i32>) -> PartitionState {
        PartitionState {
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    /// No leader: clients can neither write nor read it.
    pub fn is_offline(&self) -> bool {
        self.leader == NO_LEADER
    }

    /// Led, with an ISR smaller than its replica set.
    pub fn is_under_replicated(&self) -> bool {
        !self.is_offline() && self.isr.len() < self.replicas.len()
    }
}

/// A topic as every broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// The topic's name.
    pub name: String,
    /// Stable, non-zero id (Kafka topic IDs, used by Fetch v13+ and Metadata v10+).
    pub id: Uuid,
    /// Number of partitions, numbered 0..partitions.
    pub partitions: i32,
    /// Topic config overrides (only what was set explicitly).
    pub configs: BTreeMap<String, String>,
    /// Whether the topic is internal (e.g. `__consumer_offsets`).
    #[serde(default)]
    pub internal: bool,
    /// Replica set and leadership of each partition, indexed by partition number.
    #[serde(default)]
    pub assignments: Vec<PartitionState>,
}

impl TopicMeta {
    /// Whether an out-of-sync replica may become leader when no in-sync one is left.
    pub fn unclean_election(&self) -> bool {
        self.configs
            .get("unclean.leader.election.enable")
            .is_some_and(|v| v.trim() == "true")
    }
}

/// A change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a topic (its assignments decided by the controller that proposed it).
    CreateTopic(TopicMeta),
    /// Remove a topic.
    DeleteTopic {
        /// The topic's name.
        name: String,
    },
    /// Grow a topic's partition count; `assignments` covers the new partitions.
    SetPartitions {
        /// The topic's name.
        name: String,
        /// The new count.
        partitions: i32,
        /// Replica sets of the added partitions, in order.
        #[serde(default)]
        assignments: Vec<Vec<i32>>,
    },
    /// Replace a topic's config overrides.
    SetConfigs {
        /// The topic's name.
        name: String,
        /// The complete new set of overrides.
        configs: BTreeMap<String, String>,
    },
    /// Hand out the next `count` producer ids; the result is the first of them.
    AllocateProducerIds {
        /// How many ids.
        count: i64,
    },
    /// A broker (re)joins: recorded unfenced, and leads partitions that had no leader
    /// if it is in their ISR.
    RegisterBroker(BrokerMeta),
    /// A broker missed its lease or is shutting down: it loses every leadership (a new
    /// leader is elected from the rest of the ISR) and leaves every ISR it is not the
    /// last member of.
    FenceBroker {
        /// The broker.
        id: i32,
        /// Fence only this incarnation (a newer registration stays unfenced).
        incarnation: u64,
    },
    /// A partition leader changes its ISR.
    AlterPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The leader asking.
        leader: i32,
        /// Its leader epoch.
        leader_epoch: i32,
        /// The partition epoch its view is based on.
        partition_epoch: i32,
        /// The new ISR.
        isr: Vec<i32>,
    },
    /// Deploys a plugin version, rolls back, or otherwise replaces a plugin's record;
    /// `code` carries the components of versions that are new. Refused unless the
    /// plugin's newest version is still `expect` (0: the plugin must not exist yet).
    SetPlugin {
        /// The plugin.
        name: String,
        /// Its new record (`failed` is per broker and ignored).
        record: PluginRecord,
        /// Components by SHA-256.
        code: BTreeMap<String, Component>,
        /// The newest version the change is based on.
        expect: u32,
    },
    /// Removes a plugin and every version of it.
    RemovePlugin {
        /// The plugin.
        name: String,
    },
    /// Creates a transform (`create`: refused if the name is taken) or replaces one
    /// (pause, resume: refused if it does not exist).
    SetTransform {
        /// The transform (boxed: it is much larger than the other commands).
        spec: Box<TransformSpec>,
        /// Whether this creates it.
        create: bool,
    },
    /// Removes a transform (its progress records stay until compacted away).
    RemoveTransform {
        /// The transform.
        name: String,
    },
    /// Creates a mirror (`create`: refused if the name is taken) or replaces one
    /// (pause, resume: refused if it does not exist).
    SetMirror {
        /// The mirror (boxed, as transforms).
        spec: Box<MirrorSpec>,
        /// Whether this creates it.
        create: bool,
    },
    /// Deletes a mirror (its records in `__quiver_mirrors` are deleted after).
    RemoveMirror {
        /// The mirror.
        name: String,
    },
    /// Adds ACLs (ones that exist already change nothing).
    CreateAcls {
        /// The ACLs, validated by the proposer.
        acls: Vec<AclBinding>,
    },
    /// Removes the ACLs each filter selects; the result lists them per filter.
    DeleteAcls {
        /// The filters.
        filters: Vec<AclFilter>,
    },
    /// Creates a tenant (`create`: refused if the name is taken) or replaces one (its
    /// principals' ACLs follow).
    SetTenant {
        /// The tenant.
        tenant: Tenant,
        /// Whether this creates it.
        create: bool,
    },
    /// Removes a tenant and the ACLs it granted; its topics stay.
    RemoveTenant {
        /// The tenant.
        name: String,
    },
    /// Binds (`Some`) or unbinds (`None`) the quota-policy plugin of a tenant's clients
    /// (`tenant` set) or of every other client.
    SetQuotaPolicy {
        /// The tenant, or `None` for the cluster-wide policy.
        tenant: Option<String>,
        /// The plugin.
        plugin: Option<String>,
    },
    /// Sets (`Some`) and removes (`None`) client quotas, validated by the proposer.
    AlterQuotas {
        /// (entity, quota type, value).
        changes: Vec<(QuotaEntity, QuotaType, Option<QuotaValue>)>,
    },
    /// Sets and removes users' SCRAM credentials; a user without credentials is gone.
    AlterCredentials {
        /// (user, mechanism, credential) to set.
        upsert: Vec<(String, Mechanism, Credential)>,
        /// (user, mechanism) to remove.
        delete: Vec<(String, Mechanism)>,
    },
    /// Move leadership back to the preferred replica where it is in sync and alive.
    ElectPreferredLeaders {
        /// Partitions to consider; empty means all.
        partitions: Vec<(String, i32)>,
    },
}

/// What an applied command produced, for its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Nothing beyond the change itself.
    Done,
    /// The first producer id of an allocated block.
    ProducerIds(i64),
    /// The partition's state after an ISR change.
    Partition(PartitionState),
    /// How many partitions changed leader.
    LeadersChanged(usize),
    /// The ACLs removed, per filter.
    AclsDeleted(Vec<Vec<AclBinding>>),
}

/// The metadata state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct State {
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// Registered brokers by id.
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// Producer ids below this have been handed out.
    pub producer_ids_reserved: i64,
    /// Deployed plugins by name: every broker serves these.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginMeta>,
    /// Transforms by name: each runs on the leaders of its input's partitions.
    #[serde(default)]
    pub transforms: BTreeMap<String, TransformSpec>,
    /// Mirrors by name: they run on the leader of `__quiver_mirrors`.
    #[serde(default)]
    pub mirrors: BTreeMap<String, MirrorSpec>,
    /// The ACLs every broker enforces when the authorizer is on.
    #[serde(default)]
    pub acls: Acls,
    /// SCRAM credentials by user name (no passwords: salted keys only).
    #[serde(default)]
    pub users: Users,
    /// Tenants by name.
    #[serde(default)]
    pub tenants: BTreeMap<String, Tenant>,
    /// Client quotas by entity.
    #[serde(default, with = "crate::tenancy::quota::configs_serde")]
    pub quotas: QuotaConfigs,
    /// Quota-policy plugins by scope: a tenant's name, or `""` for every client no
    /// tenant binding covers.
    #[serde(default)]
    pub quota_policies: BTreeMap<String, String>,
}

/// A plugin as the cluster knows it: its versions (which one serves) and the
/// WebAssembly components they name. Per-broker health (a plugin failed by traps)
/// is not here: each broker judges the code it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMeta {
    /// Kind, versions and the serving version.
    pub record: PluginRecord,
    /// Components by SHA-256, only of versions still kept.
    pub code: BTreeMap<String, Component>,
}

impl PluginMeta {
    /// The newest version (0 for none).
    pub fn newest(&self) -> u32 {
        self.record
            .versions
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
    }
}

/// A component's bytes; base64 in the metadata log and snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component(pub bytes::Bytes);

impl Serialize for Component {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Component {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(|b| Component(b.into()))
            .map_err(serde::de::Error::custom)
    }
}

impl State {
    /// Brokers that are registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Whether `id` is registered and not fenced.
    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// One partition's state.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics
            .get(topic)?
            .assignments
            .get(usize::try_from(partition).ok()?)
    }

    /// Checks that topic `name` with `partitions` partitions and `configs` fits the
    /// limits of the tenant owning it (if any).
    pub fn check_tenant(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), StateError> {
        let Some(owner) = tenant::owner(&self.tenants, name) else {
            return Ok(());
        };
        let others: i64 = self
            .topics
            .values()
            .filter(|t| t.name != name && owner.owns(&t.name))
            .map(|t| i64::from(t.partitions))
            .sum();
        tenant::check_topic(owner, name, i64::from(partitions), others, configs)
            .map_err(|e| StateError::TenantLimit(e.to_string()))
    }

    /// Applies one command, or explains why it cannot apply; on error `self` is unchanged.
    pub fn apply(&mut self, command: Command) -> Result<Applied, StateError> {
        match command {
            Command::CreateTopic(mut meta) => {
                if self.topics.contains_key(&meta.name) {
                    return Err(StateError::TopicExists(meta.name));
                }
                self.check_tenant(&meta.name, meta.partitions, &meta.configs)?;
                for partition in meta.assignments.iter_mut() {
                    self.settle_new_partition(partition);
                }
                self.topics.insert(meta.name.clone(), meta);
            }
            Command::DeleteTopic { name } => {
                self.topics
                    .remove(&name)
                    .ok_or(StateError::UnknownTopic(name))?;
            }
            Command::SetPartitions {
                name,
                partitions,
                assignments,
            } => {
                let configs = self
                    .topics
                    .get(&name)
                    .map(|t| t.configs.clone())
                    .ok_or_else(|| StateError::UnknownTopic(name.clone()))?;
                self.check_tenant(&name, partitions, &configs)?;
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or_else(|| StateError::UnknownTopic(name.clone()))?;
                if partitions < topic.partitions {
                    return Err(StateError::PartitionsCannotShrink {
                        topic: name,
                        current: topic.partitions,
                        requested: partitions,
                    });
                }
                topic.partitions = partitions;
                let mut added: Vec<PartitionState> =
                    assignments.into_iter().map(PartitionState::new).collect();
                for partition in added.iter_mut() {
                    self.settle_new_partition(partition);
                }
                self.topics
                    .get_mut(&name)
                    .expect("checked above")
                    .assignments
                    .extend(added);
            }
            Command::SetConfigs { name, configs } => {
                let partitions = self
                    .topics
                    .get(&name)
                    .map(|t| t.partitions)
                    .ok_or_else(|| StateError::UnknownTopic(name.clone()))?;
                self.check_tenant(&name, partitions, &configs)?;
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(StateError::UnknownTopic(name))?;
                topic.configs = configs;
            }
            Command::AllocateProducerIds { count } => {
                let first = self.producer_ids_reserved;
                self.producer_ids_reserved += count.max(1);
                return Ok(Applied::ProducerIds(first));
            }
            Command::RegisterBroker(meta) => {
                let id = meta.id;
                if let Some(old) = self.brokers.get(&id) {
                    if old.incarnation > meta.incarnation {
                        // A late registration of an older process: the newer one stands.
                        return Ok(Applied::Done);
                    }
                }
                let mut changed = 0;
                if let Some(old) = self.brokers.get_mut(&id) {
                    if old.incarnation != meta.incarnation && !old.fenced {
                        // A restarted broker lost what it held in memory (followers'
                        // progress, pending acks): its old incarnation is fenced first,
                        // exactly as if its lease had run out.
                        old.fenced = true;
                        changed += self.remove_from_partitions(id);
                    }
                }
                self.brokers.insert(
                    id,
                    BrokerMeta {
                        fenced: false,
                        ..meta
                    },
                );
                changed += self.elect_leaderless();
                return Ok(Applied::LeadersChanged(changed));
            }
            Command::FenceBroker { id, incarnation } => {
                let broker = self
                    .brokers
                    .get_mut(&id)
                    .ok_or(StateError::UnknownBroker(id))?;
                if broker.incarnation != incarnation || broker.fenced {
                    return Ok(Applied::LeadersChanged(0));
                }
                broker.fenced = true;
                let changed = self.remove_from_partitions(id);
                return Ok(Applied::LeadersChanged(changed));
            }
            Command::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
                let state = self
                    .topics
                    .get_mut(&topic)
                    .ok_or_else(|| StateError::UnknownTopic(topic.clone()))?
                    .assignments
                    .get_mut(usize::try_from(partition).unwrap_or(usize::MAX))
                    .ok_or_else(|| StateError::UnknownPartition {
                        topic: topic.clone(),
                        partition,
                    })?;
                let stale = |reason: String| StateError::StalePartitionChange {
                    topic: topic.clone(),
                    partition,
                    reason,
                };
                if state.leader != leader || state.leader_epoch != leader_epoch {
                    return Err(stale(format!(
                        "leader is {} at epoch {}, not {leader} at epoch {leader_epoch}",
                        state.leader, state.leader_epoch
                    )));
                }
                if state.partition_epoch != partition_epoch {
                    return Err(stale(format!(
                        "partition epoch is {}, not {partition_epoch}",
                        state.partition_epoch
                    )));
                }
                let invalid = |reason: &str| StateError::InvalidIsr {
                    topic: topic.clone(),
                    partition,
                    isr: isr.clone(),
                    reason: reason.into(),
                };
                if !isr.contains(&leader) {
                    return Err(invalid("the ISR must contain the leader"));
                }
                if isr.iter().any(|r| !state.replicas.contains(r)) {
                    return Err(invalid("every ISR member must be a replica"));
                }
                let added: Vec<i32> = isr
                    .iter()
                    .copied()
                    .filter(|r| !state.isr.contains(r))
                    .collect();
                if added.iter().any(|r| !live.contains(r)) {
                    return Err(invalid("a fenced broker cannot join the ISR"));
                }
                let mut isr = isr;
                isr.sort_by_key(|r| state.replicas.iter().position(|x| x == r));
                isr.dedup();
                state.isr = isr;
                state.partition_epoch += 1;
                return Ok(Applied::Partition(state.clone()));
            }
            Command::SetPlugin {
                name,
                mut record,
                code,
                expect,
            } => {
                let found = self.plugins.get(&name).map_or(0, PluginMeta::newest);
                if found != expect {
                    return Err(StateError::PluginChanged {
                        name,
                        expected: expect,
                        found,
                    });
                }
                let mut kept = self
                    .plugins
                    .get(&name)
                    .map(|p| p.code.clone())
                    .unwrap_or_default();
                kept.extend(code);
                let mut needed = BTreeMap::new();
                for version in &record.versions {
                    if let Source::Wasm { sha256 } = &version.source {
                        let component =
                            kept.get(sha256)
                                .ok_or_else(|| StateError::PluginCodeMissing {
                                    name: name.clone(),
                                    version: version.version,
                                    sha256: sha256.clone(),
                                })?;
                        needed.insert(sha256.clone(), component.clone());
                    }
                }
                record.failed = None;
                self.plugins.insert(
                    name,
                    PluginMeta {
                        record,
                        code: needed,
                    },
                );
            }
            Command::RemovePlugin { name } => {
                if !self.plugins.contains_key(&name) {
                    return Err(StateError::UnknownPlugin(name));
                }
                // Judged here, in log order, so a topic deleted or a transform removed
                // just before counts as gone on every broker, however stale its view.
                let topics: Vec<&str> = self
                    .topics
                    .values()
                    .filter(|t| t.configs.get("partitioner").map(|p| p.trim()) == Some(&*name))
                    .map(|t| t.name.as_str())
                    .collect();
                if !topics.is_empty() {
                    return Err(StateError::PluginUsedByTopics {
                        topics: topics.join(", "),
                        name,
                    });
                }
                let transforms: Vec<&str> = self
                    .transforms
                    .values()
                    .filter(|t| t.plugin == name)
                    .map(|t| t.name.as_str())
                    .collect();
                if !transforms.is_empty() {
                    return Err(StateError::PluginRunByTransforms {
                        transforms: transforms.join(", "),
                        name,
                    });
                }
                let mirrors: Vec<&str> = self
                    .mirrors
                    .values()
                    .filter(|m| m.plugin == name)
                    .map(|m| m.name.as_str())
                    .collect();
                if !mirrors.is_empty() {
                    return Err(StateError::PluginRunByMirrors {
                        mirrors: mirrors.join(", "),
                        name,
                    });
                }
                let scopes: Vec<String> = self
                    .quota_policies
                    .iter()
                    .filter(|(_, plugin)| **plugin == name)
                    .map(|(scope, _)| match scope.as_str() {
                        "" => "the cluster".to_string(),
                        tenant => format!("tenant {tenant}"),
                    })
                    .collect();
                if !scopes.is_empty() {
                    return Err(StateError::PluginDecidesQuotas {
                        scopes: scopes.join(", "),
                        name,
                    });
                }
                self.plugins.remove(&name);
            }
            Command::SetTransform { spec, create } => {
                let exists = self.transforms.contains_key(&spec.name);
                if create && exists {
                    return Err(StateError::TransformExists(spec.name));
                }
                if !create && !exists {
                    return Err(StateError::UnknownTransform(spec.name));
                }
                self.transforms.insert(spec.name.clone(), *spec);
            }
            Command::RemoveTransform { name } => {
                self.transforms
                    .remove(&name)
                    .ok_or(StateError::UnknownTransform(name))?;
            }
            Command::SetMirror { spec, create } => {
                let exists = self.mirrors.contains_key(&spec.name);
                if create && exists {
                    return Err(StateError::MirrorExists(spec.name));
                }
                if !create && !exists {
                    return Err(StateError::UnknownMirror(spec.name));
                }
                self.mirrors.insert(spec.name.clone(), *spec);
            }
            Command::RemoveMirror { name } => {
                self.mirrors
                    .remove(&name)
                    .ok_or(StateError::UnknownMirror(name))?;
            }
            Command::CreateAcls { acls } => {
                for acl in &acls {
                    acl.validate()
                        .map_err(|e| StateError::InvalidAcl(e.to_string()))?;
                }
                for acl in acls {
                    self.acls.add(acl);
                }
            }
            Command::DeleteAcls { filters } => {
                let removed = filters.iter().map(|f| self.acls.remove(f)).collect();
                return Ok(Applied::AclsDeleted(removed));
            }
            Command::SetTenant { tenant, create } => {
                tenant
                    .validate()
                    .and_then(|()| tenant.check_against(&self.tenants))
                    .map_err(|e| StateError::InvalidTenant(e.to_string()))?;
                let old = self.tenants.get(&tenant.name);
                match (create, old) {
                    (true, Some(_)) => return Err(StateError::TenantExists(tenant.name)),
                    (false, None) => return Err(StateError::UnknownTenant(tenant.name)),
                    _ => {}
                }
                if let Some(old) = old {
                    for acl in old.acls() {
                        self.acls.remove_exact(&acl);
                    }
                }
                for acl in tenant.acls() {
                    self.acls.add(acl);
                }
                self.tenants.insert(tenant.name.clone(), tenant);
            }
            Command::RemoveTenant { name } => {
                let old = self
                    .tenants
                    .remove(&name)
                    .ok_or(StateError::UnknownTenant(name))?;
                for acl in old.acls() {
                    self.acls.remove_exact(&acl);
                }
                self.quota_policies.remove(&old.name);
            }
            Command::SetQuotaPolicy { tenant, plugin } => {
                if let Some(tenant) = &tenant {
                    if !self.tenants.contains_key(tenant) {
                        return Err(StateError::UnknownTenant(tenant.clone()));
                    }
                }
                let scope = tenant.unwrap_or_default();
                match plugin {
                    Some(plugin) => {
                        let meta = self
                            .plugins
                            .get(&plugin)
                            .ok_or_else(|| StateError::UnknownPlugin(plugin.clone()))?;
                        if meta.record.kind != crate::plugin::Kind::QuotaPolicy {
                            return Err(StateError::NotAQuotaPolicy {
                                kind: meta.record.kind.to_string(),
                                name: plugin,
                            });
                        }
                        self.quota_policies.insert(scope, plugin);
                    }
                    None => {
                        self.quota_policies.remove(&scope);
                    }
                }
            }
            Command::AlterQuotas { changes } => {
                for (entity, kind, value) in changes {
                    match value {
                        Some(v) => {
                            self.quotas.entry(entity).or_default().insert(kind, v);
                        }
                        None => {
                            if let Some(values) = self.quotas.get_mut(&entity) {
                                values.remove(&kind);
                                if values.is_empty() {
                                    self.quotas.remove(&entity);
                                }
                            }
                        }
                    }
                }
            }
            Command::AlterCredentials { upsert, delete } => {
                for (user, mechanism) in delete {
                    if let Some(creds) = self.users.get_mut(&user) {
                        creds.remove(&mechanism);
                        if creds.is_empty() {
                            self.users.remove(&user);
                        }
                    }
                }
                for (user, mechanism, credential) in upsert {
                    self.users
                        .entry(user)
                        .or_default()
                        .insert(mechanism, credential);
                }
            }
            Command::ElectPreferredLeaders { partitions } => {
                let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
                let mut changed = 0;
                for (name, topic) in self.topics.iter_mut() {
                    for (index, state) in topic.assignments.iter_mut().enumerate() {
                        let wanted = partitions.is_empty()
                            || partitions
                                .iter()
                                .any(|(t, p)| t == name && *p as usize == index);
                        let Some(&preferred) = state.replicas.first() else {
                            continue;
                        };
                        if wanted
                            && state.leader != preferred
                            && live.contains(&preferred)
                            && state.isr.contains(&preferred)
                        {
                            state.leader = preferred;
                            state.leader_epoch += 1;
                            state.partition_epoch += 1;
                            changed += 1;
                        }
                    }
                }
                return Ok(Applied::LeadersChanged(changed));
            }
        }
        Ok(Applied::Done)
    }

    /// A new partition's replicas were chosen from the proposer's view of live
    /// brokers, which may be older than this state: replicas fenced since are left out
    /// of the ISR, and the leader is the first live one. A new partition holds no data,
    /// so any live replica may lead it.
    fn settle_new_partition(&self, partition: &mut PartitionState) {
        let live: Vec<i32> = partition
            .replicas
            .iter()
            .copied()
            .filter(|r| self.is_live(*r))
            .collect();
        if live.len() == partition.replicas.len() {
            return;
        }
        match live.first() {
            Some(&leader) => {
                partition.leader = leader;
                partition.isr = live;
            }
            None => partition.leader = NO_LEADER,
        }
    }

    /// Takes fenced broker `id` out of every partition: a new leader for what it led,
    /// and out of every ISR where someone else remains.
    fn remove_from_partitions(&mut self, id: i32) -> usize {
        let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
        let mut changed = 0;
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for state in topic.assignments.iter_mut() {
                if !state.replicas.contains(&id) {
                    continue;
                }
                let mut touched = false;
                // The last ISR member stays in the ISR: it holds every committed record,
                // and only it may lead again without losing data.
                if state.isr.contains(&id) && state.isr.len() > 1 {
                    state.isr.retain(|r| *r != id);
                    touched = true;
                }
                if state.leader == id {
                    state.leader = elect(state, &live, unclean);
                    if state.leader != NO_LEADER && !state.isr.contains(&state.leader) {
                        // Unclean: the new leader's log is the truth from now on.
                        state.isr = vec![state.leader];
                    }
                    state.leader_epoch += 1;
                    changed += 1;
                    touched = true;
                }
                if touched {
                    state.partition_epoch += 1;
                }
            }
        }
        changed
    }

    /// Gives a leader to every partition that has none and now can have one.
    fn elect_leaderless(&mut self) -> usize {
        let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
        let mut changed = 0;
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for state in topic.assignments.iter_mut() {
                if state.leader != NO_LEADER {
                    continue;
                }
                let leader = elect(state, &live, unclean);
                if leader == NO_LEADER {
                    continue;
                }
                state.leader = leader;
                if !state.isr.contains(&leader) {
                    state.isr = vec![leader];
                }
                state.leader_epoch += 1;
                state.partition_epoch += 1;
                changed += 1;
            }
        }
        changed
    }
}

/// The new leader: the first live ISR member in replica order (the preferred replica
/// first); with unclean election, failing that, the first live replica.
fn elect(state: &PartitionState, live: &BTreeSet<i32>, unclean: bool) -> i32 {
    let in_sync = state
        .replicas
        .iter()
        .find(|r| state.isr.contains(r) && live.contains(r));
    if let Some(&leader) = in_sync {
        return leader;
    }
    if unclean {
        if let Some(&leader) = state.replicas.iter().find(|r| live.contains(r)) {
            return leader;
        }
    }
    NO_LEADER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> BrokerMeta {
        BrokerMeta {
            id,
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9000 + id as u16,
            cluster_addr: SocketAddr::from(([127, 0, 0, 1], 9100 + id as u16)),
            rack: None,
            incarnation: 1,
            fenced: false,
            listeners: Default::default(),
        }
    }

    fn cluster(replicas: &[&[i32]]) -> State {
        let mut state = State::default();
        for id in 1..=3 {
            state.apply(Command::RegisterBroker(broker(id))).unwrap();
        }
        state
            .apply(Command::CreateTopic(TopicMeta {
                name: "t".into(),
                id: Uuid::new_v4(),
                partitions: replicas.len() as i32,
                configs: BTreeMap::new(),
                internal: false,
                assignments: replicas
                    .iter()
                    .map(|r| PartitionState::new(r.to_vec()))
                    .collect(),
            }))
            .unwrap();
        state
    }

    #[test]
    fn fencing_the_leader_elects_the_next_in_sync_replica() {
        let mut state = cluster(&[&[1, 2, 3]]);
        state
            .apply(Command::FenceBroker {
                id: 1,
                incarnation: 1,
            })
            .unwrap();
        let p = state.partition("t", 0).unwrap();
        assert_eq!(p.leader, 2);
        assert_eq!(p.isr, vec![2, 3]);
        assert_eq!(p.leader_epoch, 1);
    }

    #[test]
    fn the_last_in_sync_replica_stays_in_the_isr_and_leads_again_on_return() {
        let mut state = cluster(&[&[1, 2, 3]]);
        for id in [2, 3] {
            state
                .apply(Command::AlterPartition {
                    topic: "t".into(),
                    partition: 0,
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: state.partition("t", 0).unwrap().partition_epoch,
                    isr: state
                        .partition("t", 0)
                        .unwrap()
                        .isr
                        .iter()
                        .copied()
                        .filter(|r| *r != id)
                        .collect(),
                })
                .unwrap();
        }
        state
            .apply(Command::FenceBroker {
                id: 1,
                incarnation: 1,
            })
            .unwrap();
        let p = state.partition("t", 0).unwrap();
        assert_eq!(p.leader, NO_LEADER, "out-of-sync replicas must not lead");
        assert_eq!(p.isr, vec![1]);
        // Broker 2 coming back changes nothing: it is not in sync.
        state
            .apply(Command::RegisterBroker(BrokerMeta {
                incarnation: 2,
                ..broker(2)
            }))
            .unwrap();
        assert_eq!(state.partition("t", 0).unwrap().leader, NO_LEADER);
        state
            .apply(Command::RegisterBroker(BrokerMeta {
                incarnation: 2,
                ..broker(1)
            }))
            .unwrap();
        let p = state.partition("t", 0).unwrap();
        assert_eq!(p.leader, 1);
        assert_eq!(p.leader_epoch, 2);
    }

    #[test]
    fn unclean_election_picks_a_live_replica_when_allowed() {
        let mut state = cluster(&[&[1, 2]]);
        state
            .topics
            .get_mut("t")
            .unwrap()
            .configs
            .insert("unclean.leader.election.enable".into(), "true".into());
        state
            .apply(Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                isr: vec![1],
            })
            .unwrap();
        state
            .apply(Command::FenceBroker {
                id: 1,
                incarnation: 1,
            })
            .unwrap();
        let p = state.partition("t", 0).unwrap();
        assert_eq!(p.leader, 2);
        assert_eq!(p.isr, vec![2]);
    }

    #[test]
    fn stale_isr_changes_are_refused() {
        let mut state = cluster(&[&[1, 2, 3]]);
        let change =
            |leader, leader_epoch, partition_epoch, isr: Vec<i32>| Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            };
        assert!(matches!(
            state.clone().apply(change(2, 0, 0, vec![2, 3])),
            Err(StateError::StalePartitionChange { .. })
        ));
        assert!(matches!(
            state.clone().apply(change(1, 0, 5, vec![1, 3])),
            Err(StateError::StalePartitionChange { .. })
        ));
        assert!(matches!(
            state.clone().apply(change(1, 0, 0, vec![2, 3])),
            Err(StateError::InvalidIsr { .. })
        ));
        assert!(matches!(
            state.clone().apply(change(1, 0, 0, vec![1, 4])),
            Err(StateError::InvalidIsr { .. })
        ));
        let applied = state.apply(change(1, 0, 0, vec![3, 1])).unwrap();
        let Applied::Partition(p) = applied else {
            panic!("{applied:?}")
        };
        assert_eq!(p.isr, vec![1, 3], "kept in replica order");
        assert_eq!(p.partition_epoch, 1);
    }

    #[test]
    fn fenced_brokers_cannot_rejoin_the_isr() {
        let mut state = cluster(&[&[1, 2, 3]]);
        state
            .apply(Command::FenceBroker {
                id: 3,
                incarnation: 1,
            })
            .unwrap();
        let p = state.partition("t", 0).unwrap().clone();
        assert_eq!(p.isr, vec![1, 2]);
        let err = state
            .apply(Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: 1,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: vec![1, 2, 3],
            })
            .unwrap_err();
        assert!(matches!(err, StateError::InvalidIsr { .. }), "{err}");
    }

    #[test]
    fn a_restart_fences_the_old_incarnation_and_later_fences_of_it_are_ignored() {
        let mut state = cluster(&[&[1, 2, 3]]);
        state
            .apply(Command::RegisterBroker(BrokerMeta {
                incarnation: 5,
                ..broker(1)
            }))
            .unwrap();
        // The restarted broker lost its in-memory replication state: it no longer
        // leads, and rejoins the ISR only by catching up.
        let p = state.partition("t", 0).unwrap().clone();
        assert_eq!(p.leader, 2);
        assert_eq!(p.isr, vec![2, 3]);
        assert_eq!(p.leader_epoch, 1);
        state
            .apply(Command::FenceBroker {
                id: 1,
                incarnation: 1,
            })
            .unwrap();
        assert!(state.is_live(1));
        assert_eq!(state.partition("t", 0).unwrap(), &p);
    }

    #[test]
    fn preferred_leaders_return_when_in_sync() {
        let mut state = cluster(&[&[1, 2, 3], &[2, 3, 1]]);
        state
            .apply(Command::FenceBroker {
                id: 1,
                incarnation: 1,
            })
            .unwrap();
        assert_eq!(state.partition("t", 0).unwrap().leader, 2);
        state
            .apply(Command::RegisterBroker(BrokerMeta {
                incarnation: 2,
                ..broker(1)
            }))
            .unwrap();
        // Not back in the ISR yet: stays with 2.
        assert_eq!(
            state
                .apply(Command::ElectPreferredLeaders { partitions: vec![] })
                .unwrap(),
            Applied::LeadersChanged(0)
        );
        let p = state.partition("t", 0).unwrap().clone();
        state
            .apply(Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: 2,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: vec![2, 3, 1],
            })
            .unwrap();
        assert_eq!(
            state
                .apply(Command::ElectPreferredLeaders { partitions: vec![] })
                .unwrap(),
            Applied::LeadersChanged(1)
        );
        let p = state.partition("t", 0).unwrap();
        assert_eq!(p.leader, 1);
        assert_eq!(p.leader_epoch, 2);
    }

    #[test]
    fn a_topic_placed_on_a_broker_fenced_meanwhile_is_led_by_a_live_replica() {
        let mut state = cluster(&[]);
        state
            .apply(Command::FenceBroker {
                id: 2,
                incarnation: 1,
            })
            .unwrap();
        state
            .apply(Command::CreateTopic(TopicMeta {
                name: "late".into(),
                id: Uuid::new_v4(),
                partitions: 1,
                configs: BTreeMap::new(),
                internal: false,
                assignments: vec![PartitionState::new(vec![2, 3, 1])],
            }))
            .unwrap();
        let p = state.partition("late", 0).unwrap();
        assert_eq!(p.leader, 3);
        assert_eq!(p.isr, vec![3, 1]);
        assert_eq!(p.replicas, vec![2, 3, 1]);
    }

    #[test]
    fn producer_id_blocks_do_not_overlap() {
        let mut state = State::default();
        let a = state
            .apply(Command::AllocateProducerIds { count: 1000 })
            .unwrap();
        let b = state
            .apply(Command::AllocateProducerIds { count: 1000 })
            .unwrap();
        assert_eq!(a, Applied::ProducerIds(0));
        assert_eq!(b, Applied::ProducerIds(1000));
    }

    fn version(version: u32, sha256: &str) -> crate::plugin::VersionRecord {
        crate::plugin::VersionRecord {
            version,
            source: Source::Wasm {
                sha256: sha256.into(),
            },
            config: vec![],
            limits: Default::default(),
            api_version: "0.1.0".into(),
            deployed_at_ms: 1,
        }
    }

    fn set_plugin(versions: &[(u32, &str)], active: u32, code: &[&str], expect: u32) -> Command {
        Command::SetPlugin {
            name: "p".into(),
            record: PluginRecord {
                kind: crate::plugin::Kind::Partitioner,
                active,
                versions: versions.iter().map(|(v, sha)| version(*v, sha)).collect(),
                failed: None,
            },
            code: code
                .iter()
                .map(|sha| {
                    (
                        sha.to_string(),
                        Component(bytes::Bytes::from(sha.to_string())),
                    )
                })
                .collect(),
            expect,
        }
    }

    #[test]
    fn plugin_changes_are_based_on_the_newest_version_and_keep_only_named_code() {
        let mut state = State::default();
        state.apply(set_plugin(&[(1, "a")], 1, &["a"], 0)).unwrap();
        // a second "first deploy" lost the race
        assert_eq!(
            state.apply(set_plugin(&[(1, "b")], 1, &["b"], 0)),
            Err(StateError::PluginChanged {
                name: "p".into(),
                expected: 0,
                found: 1
            })
        );
        // a version naming code nobody sent
        assert_eq!(
            state.apply(set_plugin(&[(1, "a"), (2, "c")], 2, &[], 1)),
            Err(StateError::PluginCodeMissing {
                name: "p".into(),
                version: 2,
                sha256: "c".into()
            })
        );
        state
            .apply(set_plugin(&[(1, "a"), (2, "b")], 2, &["b"], 1))
            .unwrap();
        assert_eq!(state.plugins["p"].newest(), 2);
        assert_eq!(
            state.plugins["p"].code.keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        // version 1 dropped: its code goes with it; a rollback sends no code
        state.apply(set_plugin(&[(2, "b")], 2, &[], 2)).unwrap();
        assert_eq!(state.plugins["p"].code.keys().collect::<Vec<_>>(), ["b"]);

        // the whole state, components included, survives a snapshot's JSON
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);

        // In use by a topic's config, then by a transform: refused, naming them.
        let mut configs = BTreeMap::new();
        configs.insert("partitioner".to_string(), "p".to_string());
        state
            .apply(Command::CreateTopic(TopicMeta {
                name: "routed".into(),
                id: Uuid::new_v4(),
                partitions: 1,
                configs,
                internal: false,
                assignments: vec![PartitionState::new(vec![1])],
            }))
            .unwrap();
        assert_eq!(
            state
                .apply(Command::RemovePlugin { name: "p".into() })
                .unwrap_err()
                .to_string(),
            "plugin 'p' is used by topic(s) routed; change their configs first"
        );
        state
            .apply(Command::DeleteTopic {
                name: "routed".into(),
            })
            .unwrap();
        let mut spec: crate::transform::spec::TransformSpec =
            serde_json::from_value(serde_json::json!({
                "name": "t", "plugin": "p", "input": "a", "outputs": ["b"],
                "from": {"at": "earliest"}, "config": [], "deterministic": true,
                "on_error": {"policy": "stop"}, "max_amplification": 100, "paused": false,
                "created_ms": 0
            }))
            .unwrap();
        spec.id = "1".into();
        state
            .apply(Command::SetTransform {
                spec: Box::new(spec),
                create: true,
            })
            .unwrap();
        assert_eq!(
            state
                .apply(Command::RemovePlugin { name: "p".into() })
                .unwrap_err()
                .to_string(),
            "plugin 'p' is run by transform(s) t; remove them first"
        );
        state
            .apply(Command::RemoveTransform { name: "t".into() })
            .unwrap();
        state
            .apply(Command::RemovePlugin { name: "p".into() })
            .unwrap();
        assert!(state.plugins.is_empty());
        assert_eq!(
            state.apply(Command::RemovePlugin { name: "p".into() }),
            Err(StateError::UnknownPlugin("p".into()))
        );
    }

    fn tenant_topic(name: &str, partitions: i32) -> Command {
        Command::CreateTopic(TopicMeta {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
            internal: false,
            assignments: (0..partitions)
                .map(|_| PartitionState::new(vec![1]))
                .collect(),
        })
    }

    #[test]
    fn tenants_grant_their_prefix_and_cap_partitions_atomically() {
        use crate::tenancy::acl::{Operation, ResourceType};
        use crate::tenancy::Principal;
        let mut state = cluster(&[&[1]]);
        let tenant = Tenant {
            name: "acme".into(),
            prefix: "acme.".into(),
            principals: vec!["User:app".into()],
            limits: crate::tenancy::tenant::TenantLimits {
                max_partitions: Some(4),
                max_retention_ms: Some(60_000),
                ..Default::default()
            },
        };
        state
            .apply(Command::SetTenant {
                tenant: tenant.clone(),
                create: true,
            })
            .unwrap();
        let app = Principal::user("app");
        assert!(state
            .acls
            .allows(&app, None, Operation::Write, ResourceType::Topic, "acme.x"));
        assert!(state
            .acls
            .allows(&app, None, Operation::Read, ResourceType::Group, "acme.g"));
        assert!(!state
            .acls
            .allows(&app, None, Operation::Read, ResourceType::Topic, "t"));
        state.apply(tenant_topic("acme.a", 3)).unwrap();
        // Each change is checked against what is committed before it, so two creates
        // racing cannot exceed the limit together.
        assert!(matches!(
            state.apply(tenant_topic("acme.b", 2)),
            Err(StateError::TenantLimit(m)) if m.contains("max_partitions")
        ));
        state.apply(tenant_topic("acme.b", 1)).unwrap();
        assert!(matches!(
            state.apply(Command::SetPartitions {
                name: "acme.a".into(),
                partitions: 4,
                assignments: vec![vec![1]]
            }),
            Err(StateError::TenantLimit(_))
        ));
        assert!(matches!(
            state.apply(Command::SetConfigs { name: "acme.a".into(), configs: BTreeMap::new() }),
            Err(StateError::TenantLimit(m)) if m.contains("retention.ms")
        ));
        // Topics outside every tenant are not limited.
        state.apply(tenant_topic("other", 50)).unwrap();
        assert_eq!(
            state.apply(Command::SetTenant {
                tenant: tenant.clone(),
                create: true
            }),
            Err(StateError::TenantExists("acme".into()))
        );
        state
            .apply(Command::RemoveTenant {
                name: "acme".into(),
            })
            .unwrap();
        assert!(state.acls.is_empty());
        assert!(state.topics.contains_key("acme.a"));
    }
}
