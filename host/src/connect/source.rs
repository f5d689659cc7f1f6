//! The source cluster, as a mirror sees it: a Kafka client on the broker's own codecs
//! that asks for metadata, topic configs, log bounds, groups and their committed
//! offsets, and fetches records. It speaks to any Kafka-API cluster (versions are
//! negotiated per broker), one connection per source broker; or, to a Quiver source,
//! the same requests over the cluster transport (`--via quic`, see [`super::quic`]),
//! where the connection to a source broker is shared and each request is its own
//! stream.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    describe_configs_request::DescribeConfigsResource, ApiKey, BrokerId, DescribeConfigsRequest,
    FetchRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest, ListOffsetsRequest,
    MetadataRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use std::sync::Arc;

use kafka_protocol::protocol::Request;

use super::quic::{self, QuicConn};
use crate::cli::client::Client;
use crate::net::MirrorClient;

/// A connection to one source broker, over either transport.
#[derive(Debug)]
pub enum Conn {
    /// The Kafka protocol over TCP.
    Kafka(Client),
    /// The Kafka protocol over the cluster transport's mirror channel.
    Quic(QuicConn),
}

impl Conn {
    /// The highest version of `api` both sides speak.
    pub fn version(&self, api: ApiKey, ours: i16) -> anyhow::Result<i16> {
        match self {
            Conn::Kafka(c) => c.version(api, ours),
            Conn::Quic(c) => c.version(api, ours),
        }
    }

    /// The broker's address.
    pub fn address(&self) -> &str {
        match self {
            Conn::Kafka(c) => c.address(),
            Conn::Quic(c) => c.address(),
        }
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn request<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        match self {
            Conn::Kafka(c) => c.request(request, version).await,
            Conn::Quic(c) => c.request(request, version).await,
        }
    }
}

/// Why the source did not answer as needed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// No source broker could be reached, or a request failed on the way.
    #[error("source cluster: {0}")]
    Unreachable(String),
    /// The source refused a request.
    #[error("source cluster refused {what}: {error:?}")]
    Refused {
        /// What was asked.
        what: String,
        /// The Kafka error.
        error: ResponseError,
    },
}

fn unreachable(e: anyhow::Error) -> SourceError {
    SourceError::Unreachable(format!("{e:#}"))
}

fn check(code: i16, what: impl FnOnce() -> String) -> Result<(), SourceError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(SourceError::Refused {
            what: what(),
            error,
        }),
    }
}

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// What the source's metadata says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMetadata {
    /// The source's cluster id (its alias when it reports none).
    pub cluster_id: String,
    /// Brokers by id: `host:port`.
    pub brokers: BTreeMap<i32, String>,
    /// Topics: the leader of each partition (-1: none).
    pub topics: BTreeMap<String, Vec<i32>>,
}

/// One partition of a fetch answer.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Where the fetch started.
    pub offset: i64,
    /// The partition's error, if any.
    pub error: Option<ResponseError>,
    /// The high watermark.
    pub high_watermark: i64,
    /// The log start offset.
    pub log_start: i64,
    /// Whole record batches.
    pub records: Bytes,
}

/// Connections to a source cluster.
#[derive(Debug)]
pub struct Source {
    bootstrap: String,
    alias: String,
    bootstrap_client: Option<Conn>,
    clients: HashMap<i32, Conn>,
    brokers: BTreeMap<i32, String>,
    /// Set when the source is reached over QUIC.
    quic: Option<Arc<MirrorClient>>,
}

impl Source {
    /// A source reached through `bootstrap`; `alias` stands in for a cluster id the
    /// source does not report.
    pub fn new(bootstrap: &str, alias: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
            alias: alias.to_string(),
            bootstrap_client: None,
            clients: HashMap::new(),
            brokers: BTreeMap::new(),
            quic: None,
        }
    }

    /// A Quiver source reached over QUIC through `link`; `bootstrap` names QUIC
    /// addresses, and broker addresses are QUIC addresses too.
    pub fn over_quic(bootstrap: &str, alias: &str, link: Arc<MirrorClient>) -> Self {
        Self {
            quic: Some(link),
            ..Self::new(bootstrap, alias)
        }
    }

    async fn connect(&self, addresses: &str) -> Result<Conn, SourceError> {
        match &self.quic {
            None => Client::connect(addresses).await.map(Conn::Kafka),
            Some(link) => QuicConn::connect(link.clone(), addresses)
                .await
                .map(Conn::Quic),
        }
        .map_err(unreachable)
    }

    async fn any(&mut self) -> Result<&mut Conn, SourceError> {
        if self.bootstrap_client.is_none() {
            let client = self.connect(&self.bootstrap).await?;
            self.bootstrap_client = Some(client);
        }
        Ok(self.bootstrap_client.as_mut().expect("set above"))
    }

    /// A connection to source broker `id` (known from the last metadata).
    pub async fn broker(&mut self, id: i32) -> Result<&mut Conn, SourceError> {
        if !self.clients.contains_key(&id) {
            let address = self.brokers.get(&id).cloned().ok_or_else(|| {
                SourceError::Unreachable(format!("broker {id} is not in the source's metadata"))
            })?;
            let client = self.connect(&address).await?;
            self.clients.insert(id, client);
        }
        Ok(self.clients.get_mut(&id).expect("inserted above"))
    }

    /// Takes the broker addresses of `meta` (learned by another connection).
    pub fn use_brokers(&mut self, meta: &SourceMetadata) {
        self.brokers = meta.brokers.clone();
    }

    /// Drops every connection (after a failed request: the next one reconnects).
    pub fn reset(&mut self) {
        self.bootstrap_client = None;
        self.clients.clear();
    }

    /// The address of source broker `id`.
    pub fn address(&self, id: i32) -> Option<&str> {
        self.brokers.get(&id).map(String::as_str)
    }

    /// Every topic and partition leader of the source.
    pub async fn metadata(&mut self) -> Result<SourceMetadata, SourceError> {
        let alias = self.alias.clone();
        let client = self.any().await?;
        let version = client.version(ApiKey::Metadata, 9).map_err(unreachable)?;
        let mut request = MetadataRequest::default();
        request.topics = None;
        request.allow_auto_topic_creation = false;
        let response = client
            .request(request, version)
            .await
            .map_err(unreachable)?;
        let mut out = SourceMetadata {
            cluster_id: response
                .cluster_id
                .as_ref()
                .map(|c| c.to_string())
                .filter(|c| !c.is_empty())
                .unwrap_or(alias),
            ..Default::default()
        };
        for b in response.brokers {
            out.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        let address = client.address().to_string();
        if let Some(link) = &self.quic {
            // Metadata names Kafka addresses; over QUIC each broker's cluster address.
            let cluster = quic::brokers(link, &address).await.map_err(unreachable)?;
            for (id, addr) in out.brokers.iter_mut() {
                *addr = cluster.get(id).cloned().unwrap_or_else(|| {
                    // Not live: a connection to it fails and is retried later.
                    format!("(broker {id} has no live cluster address)")
                });
            }
        }
        for t in response.topics {
            let Some(topic) = t.name else { continue };
            if t.error_code != 0 {
                continue;
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in &t.partitions {
                if let Some(slot) = leaders.get_mut(p.partition_index as usize) {
                    *slot = p.leader_id.0;
                }
            }
            out.topics.insert(topic.0.to_string(), leaders);
        }
        self.brokers = out.brokers.clone();
        Ok(out)
    }

    /// The configs set on a source topic (not the defaults), as `(name, value)`.
    pub async fn topic_configs(
        &mut self,
        topic: &str,
    ) -> Result<Vec<(String, String)>, SourceError> {
        let client = self.any().await?;
        let version = client
            .version(ApiKey::DescribeConfigs, 4)
            .map_err(unreachable)?;
        if version < 1 {
            return Err(SourceError::Unreachable(format!(
                "{} only speaks DescribeConfigs v0, which does not tell topic overrides from defaults",
                client.address()
            )));
        }
        let mut resource = DescribeConfigsResource::default();
        resource.resource_type = 2;
        resource.resource_name = name(topic);
        let mut request = DescribeConfigsRequest::default();
        request.resources = vec![resource];
        let response = client
            .request(request, version)
            .await
            .map_err(unreachable)?;
        let mut out = Vec::new();
        for result in response.results {
            check(result.error_code, || {
                format!("describing the configs of '{topic}'")
            })?;
            for c in result.configs {
                // Topic-level overrides only (source 1 = DYNAMIC_TOPIC_CONFIG).
                if c.config_source == 1 && !c.is_sensitive {
                    if let Some(value) = c.value {
                        out.push((c.name.to_string(), value.to_string()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The earliest offsets (`timestamp` -2) or latest (-1) of partitions led by `leader`.
    pub async fn list_offsets(
        &mut self,
        leader: i32,
        partitions: &[(String, i32)],
        timestamp: i64,
    ) -> Result<BTreeMap<(String, i32), i64>, SourceError> {
        let client = self.broker(leader).await?;
        let version = client
            .version(ApiKey::ListOffsets, 5)
            .map_err(unreachable)?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            by_topic.entry(t).or_default().push(*p);
        }
        let mut request = ListOffsetsRequest::default();
        request.replica_id = BrokerId(-1);
        request.topics = by_topic
            .into_iter()
            .map(|(t, ps)| {
                let mut topic = ListOffsetsTopic::default();
                topic.name = TopicName(name(t));
                topic.partitions = ps
                    .into_iter()
                    .map(|p| {
                        let mut part = ListOffsetsPartition::default();
                        part.partition_index = p;
                        part.current_leader_epoch = -1;
                        part.timestamp = timestamp;
                        part
                    })
                    .collect();
                topic
            })
            .collect();
        let response = client
            .request(request, version)
            .await
            .map_err(unreachable)?;
        let mut out = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                check(p.error_code, || {
                    format!(
                        "listing offsets of {}-{}",
                        t.name.0.as_str(),
                        p.partition_index
                    )
                })?;
                out.insert((t.name.0.to_string(), p.partition_index), p.offset);
            }
        }
        Ok(out)
    }

    /// One fetch from `leader` of `partitions` (topic, partition, offset), committed
    /// records only, waiting up to `wait_ms` for data.
    pub async fn fetch(
        &mut self,
        leader: i32,
        partitions: &[(String, i32, i64)],
        wait_ms: i32,
        partition_bytes: i32,
        total_bytes: i32,
    ) -> Result<Vec<Fetched>, SourceError> {
        let client = self.broker(leader).await?;
        // v12 is the newest layout naming topics (v13 uses topic ids).
        let version = client.version(ApiKey::Fetch, 12).map_err(unreachable)?;
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for (t, p, o) in partitions {
            by_topic.entry(t).or_default().push((*p, *o));
        }
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(-1);
        request.max_wait_ms = wait_ms;
        request.min_bytes = 1;
        request.max_bytes = total_bytes;
        request.isolation_level = 1;
        request.session_epoch = -1;
        request.topics = by_topic
            .into_iter()
            .map(|(t, ps)| {
                let mut topic = FetchTopic::default();
                topic.topic = TopicName(name(t));
                topic.partitions = ps
                    .into_iter()
                    .map(|(p, o)| {
                        let mut part = FetchPartition::default();
                        part.partition = p;
                        part.current_leader_epoch = -1;
                        part.fetch_offset = o;
                        part.last_fetched_epoch = -1;
                        part.log_start_offset = -1;
                        part.partition_max_bytes = partition_bytes;
                        part
                    })
                    .collect();
                topic
            })
            .collect();
        let response = client
            .request(request, version)
            .await
            .map_err(unreachable)?;
        check(response.error_code, || "a fetch".to_string())?;
        let offsets: HashMap<(String, i32), i64> = partitions
            .iter()
            .map(|(t, p, o)| ((t.clone(), *p), *o))
            .collect();
        let mut out = Vec::new();
        for t in response.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let offset = offsets
                    .get(&(topic.clone(), p.partition_index))
                    .copied()
                    .unwrap_or(-1);
                out.push(Fetched {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    offset,
                    error: ResponseError::try_from_code(p.error_code),
                    high_watermark: p.high_watermark,
                    log_start: p.log_start_offset,
                    records: p.records.unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    /// Every consumer group of the source (each broker lists the groups it coordinates).
    pub async fn groups(&mut self) -> Result<Vec<String>, SourceError> {
        let ids: Vec<i32> = self.brokers.keys().copied().collect();
        let mut out = Vec::new();
        for id in ids {
            let client = self.broker(id).await?;
            let version = client.version(ApiKey::ListGroups, 4).map_err(unreachable)?;
            let response = client
                .request(ListGroupsRequest::default(), version)
                .await
                .map_err(unreachable)?;
            check(response.error_code, || "listing groups".to_string())?;
            out.extend(
                response
                    .groups
                    .into_iter()
                    .map(|g| g.group_id.0.to_string()),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// A group's committed offsets, by (topic, partition).
    pub async fn committed(
        &mut self,
        group: &str,
    ) -> Result<BTreeMap<(String, i32), i64>, SourceError> {
        let coordinator = {
            let client = self.any().await?;
            let version = client
                .version(ApiKey::FindCoordinator, 3)
                .map_err(unreachable)?;
            let mut request = FindCoordinatorRequest::default();
            request.key = name(group);
            let response = client
                .request(request, version)
                .await
                .map_err(unreachable)?;
            check(response.error_code, || {
                format!("finding the coordinator of '{group}'")
            })?;
            response.node_id.0
        };
        let client = self.broker(coordinator).await?;
        let version = client
            .version(ApiKey::OffsetFetch, 7)
            .map_err(unreachable)?;
        let mut request = OffsetFetchRequest::default();
        request.group_id = GroupId(name(group));
        request.topics = if version >= 2 {
            None
        } else {
            Some(Vec::<OffsetFetchRequestTopic>::new())
        };
        let response = client
            .request(request, version)
            .await
            .map_err(unreachable)?;
        check(response.error_code, || {
            format!("fetching the offsets of '{group}'")
        })?;
        let mut out = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
        Ok(out)
    }
}
