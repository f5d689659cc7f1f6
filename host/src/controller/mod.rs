//! Cluster metadata: which topics exist (name, stable id, partition count, config
//! overrides) and which producer ids have been handed out.
//!
//! Changes are [`Command`]s applied by a pure state machine ([`State::apply`]); the
//! store persists the resulting state before the change becomes visible, so a crash
//! never exposes metadata that was not durable. On a single node the store is one JSON
//! document written atomically (temp file, fsync, rename, fsync of the directory); the
//! cluster replaces that persistence with a replicated log of the same commands.

pub mod state;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Producer ids are reserved durably in blocks so that allocating one rarely writes.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Why a metadata change was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The metadata file could not be read or written.
    #[error("metadata file {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata file exists but is not valid.
    #[error("metadata file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// CreateTopic for a name that is taken.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// A change names a topic that does not exist.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
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
}

/// A change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a topic.
    CreateTopic(TopicMeta),
    /// Remove a topic.
    DeleteTopic {
        /// The topic's name.
        name: String,
    },
    /// Grow a topic's partition count.
    SetPartitions {
        /// The topic's name.
        name: String,
        /// The new count.
        partitions: i32,
    },
    /// Replace a topic's config overrides.
    SetConfigs {
        /// The topic's name.
        name: String,
        /// The complete new set of overrides.
        configs: BTreeMap<String, String>,
    },
    /// Reserve producer ids below `end`.
    ReserveProducerIds {
        /// First id not reserved.
        end: i64,
    },
}

/// The metadata state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Identifies this cluster to clients (Metadata's cluster_id).
    pub cluster_id: String,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this have been handed out (or reserved) already.
    pub producer_ids_reserved: i64,
}

impl State {
    fn new() -> Self {
        Self {
            cluster_id: Uuid::new_v4().simple().to_string(),
            topics: BTreeMap::new(),
            producer_ids_reserved: 0,
        }
    }

    /// Applies one command, or explains why it cannot apply; on error `self` is unchanged.
    pub fn apply(&mut self, command: Command) -> Result<(), MetadataError> {
        match command {
            Command::CreateTopic(meta) => {
                if self.topics.contains_key(&meta.name) {
                    return Err(MetadataError::TopicExists(meta.name));
                }
                self.topics.insert(meta.name.clone(), meta);
            }
            Command::DeleteTopic { name } => {
                self.topics
                    .remove(&name)
                    .ok_or(MetadataError::UnknownTopic(name))?;
            }
            Command::SetPartitions { name, partitions } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                if partitions < topic.partitions {
                    return Err(MetadataError::PartitionsCannotShrink {
                        topic: name,
                        current: topic.partitions,
                        requested: partitions,
                    });
                }
                topic.partitions = partitions;
            }
            Command::SetConfigs { name, configs } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(MetadataError::UnknownTopic(name))?;
                topic.configs = configs;
            }
            Command::ReserveProducerIds { end } => {
                self.producer_ids_reserved = self.producer_ids_reserved.max(end);
            }
        }
        Ok(())
    }
}

/// The durable metadata store of a single-node cluster.
#[derive(Debug)]
pub struct Metadata {
    path: PathBuf,
    state: RwLock<State>,
    /// Serialises writers so that persisted states follow each other in order.
    write: Mutex<ProducerIds>,
}

#[derive(Debug)]
struct ProducerIds {
    next: i64,
}

impl Metadata {
    /// Opens (or initialises) the metadata kept in `dir`.
    pub fn open(dir: &Path) -> Result<Metadata, MetadataError> {
        let path = dir.join("metadata.json");
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = State::new();
                persist(&path, &state)?;
                state
            }
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        // Ids handed out before a restart may be in use; start after the reserved block.
        let next = state.producer_ids_reserved;
        Ok(Metadata {
            path,
            state: RwLock::new(state),
            write: Mutex::new(ProducerIds { next }),
        })
    }

    /// This cluster's id.
    pub fn cluster_id(&self) -> String {
        self.state.read().cluster_id.clone()
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<TopicMeta> {
        self.state.read().topics.values().cloned().collect()
    }

    /// One topic by name.
    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.state.read().topics.get(name).cloned()
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        self.state
            .read()
            .topics
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// Applies `command` durably: the change is visible only once it is on disk.
    pub fn submit(&self, command: Command) -> Result<(), MetadataError> {
        let _writer = self.write.lock();
        let mut next = self.state.read().clone();
        next.apply(command)?;
        persist(&self.path, &next)?;
        *self.state.write() = next;
        Ok(())
    }

    /// Hands out a producer id never given before, across restarts.
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let mut ids = self.write.lock();
        let reserved = self.state.read().producer_ids_reserved;
        if ids.next >= reserved {
            let mut next = self.state.read().clone();
            next.apply(Command::ReserveProducerIds {
                end: ids.next + PRODUCER_ID_BLOCK,
            })?;
            persist(&self.path, &next)?;
            *self.state.write() = next;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }
}

fn persist(path: &Path, state: &State) -> Result<(), MetadataError> {
    let io = |source| MetadataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).expect("metadata serialises");
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: BTreeMap::new(),
            internal: false,
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata::open(dir.path()).unwrap();
        let cluster = meta.cluster_id();
        let t = topic("orders");
        meta.submit(Command::CreateTopic(t.clone())).unwrap();
        meta.submit(Command::SetPartitions {
            name: "orders".into(),
            partitions: 6,
        })
        .unwrap();
        let first = meta.allocate_producer_id().unwrap();
        drop(meta);

        let meta = Metadata::open(dir.path()).unwrap();
        assert_eq!(meta.cluster_id(), cluster);
        let stored = meta.topic("orders").unwrap();
        assert_eq!(stored.id, t.id);
        assert_eq!(stored.partitions, 6);
        assert_eq!(meta.topic_by_id(t.id).unwrap().name, "orders");
        assert!(meta.allocate_producer_id().unwrap() > first);
    }

    #[test]
    fn refused_changes_leave_state_alone() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata::open(dir.path()).unwrap();
        meta.submit(Command::CreateTopic(topic("a"))).unwrap();
        assert!(matches!(
            meta.submit(Command::CreateTopic(topic("a"))),
            Err(MetadataError::TopicExists(_))
        ));
        assert!(matches!(
            meta.submit(Command::SetPartitions {
                name: "a".into(),
                partitions: 1
            }),
            Err(MetadataError::PartitionsCannotShrink { .. })
        ));
        assert_eq!(meta.topic("a").unwrap().partitions, 3);
        assert!(matches!(
            meta.submit(Command::DeleteTopic { name: "b".into() }),
            Err(MetadataError::UnknownTopic(_))
        ));
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("metadata.json"), b"{not json").unwrap();
        let err = Metadata::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
