//! Writing to partitions led by another broker: what the broker's own producers
//! (transform and mirror runners) write when the leader is elsewhere in the cluster.
//!
//! A runner speaks the Kafka protocol to the leader, as any idempotent producer would
//! (Produce with acks=all, carrying the runner's producer id and sequence numbers), and
//! asks the leader where that producer's sequence stands with DescribeProducers before
//! replaying into it. One connection per leader, opened on
//! first use and dropped on any error so the next attempt reconnects.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, DescribeProducersRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::cli::client::Client;

/// How long a leader may take to replicate a write to its ISR.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// Why a remote write or question failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The metadata names no live leader, or no address for it.
    #[error("partition {partition} of '{topic}' has no reachable leader ({reason})")]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Why.
        reason: String,
    },
    /// The connection or the request failed.
    #[error("broker {broker}: {reason}")]
    Request {
        /// The leader.
        broker: i32,
        /// What failed.
        reason: String,
    },
    /// The leader refused.
    #[error("broker {broker} refused partition {partition} of '{topic}': {error:?}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused {
        /// The leader.
        broker: i32,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The Kafka error.
        error: ResponseError,
        /// The leader's message.
        message: Option<String>,
    },
}

/// Connections of one runner to the leaders it writes to.
#[derive(Debug, Default)]
pub struct Leaders {
    clients: HashMap<i32, Client>,
}

impl Leaders {
    async fn client(&mut self, broker: &Broker, leader: i32) -> Result<&mut Client, RemoteError> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.clients.entry(leader) {
            let meta = broker.metadata();
            let address = meta
                .brokers
                .get(&leader)
                .filter(|b| !b.fenced)
                .map(|b| format!("{}:{}", b.kafka_host, b.kafka_port))
                .ok_or_else(|| RemoteError::Request {
                    broker: leader,
                    reason: "not registered, or fenced".into(),
                })?;
            let client = Client::connect(&address)
                .await
                .map_err(Self::request_failed(leader))?;
            slot.insert(client);
        }
        Ok(self.clients.get_mut(&leader).expect("inserted above"))
    }

    /// Appends `batch` to a partition led by `leader`, acknowledged once every in-sync
    /// replica has it; returns the offset of its first record. A batch the leader
    /// recognises as a retry of one it has (a duplicate sequence) counts as written,
    /// with no offset.
    pub async fn produce(
        &mut self,
        broker: &Broker,
        leader: i32,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<Option<i64>, RemoteError> {
        let result = self
            .try_produce(broker, leader, topic, partition, batch)
            .await;
        self.forget_on_failure(leader, result)
    }

    /// Drops the connection to `leader` after a failed request, so the next one
    /// reconnects (to the same broker, or to whichever leads by then).
    fn forget_on_failure<T>(
        &mut self,
        leader: i32,
        result: Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        if matches!(result, Err(RemoteError::Request { .. })) {
            self.clients.remove(&leader);
        }
        result
    }

    fn request_failed(leader: i32) -> impl Fn(anyhow::Error) -> RemoteError {
        move |e| RemoteError::Request {
            broker: leader,
            reason: format!("{e:#}"),
        }
    }

    async fn try_produce(
        &mut self,
        broker: &Broker,
        leader: i32,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<Option<i64>, RemoteError> {
        let client = self.client(broker, leader).await?;
        let mut data = PartitionProduceData::default();
        data.index = partition;
        data.records = Some(batch);
        let mut topic_data = TopicProduceData::default();
        topic_data.name = TopicName(StrBytes::from_string(topic.to_string()));
        topic_data.partition_data = vec![data];
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = PRODUCE_TIMEOUT_MS;
        request.topic_data = vec![topic_data];
        let version = client
            .version(ApiKey::Produce, 8)
            .map_err(Self::request_failed(leader))?;
        let response = client
            .request(request, version)
            .await
            .map_err(Self::request_failed(leader))?;
        let answer = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| RemoteError::Request {
                broker: leader,
                reason: "the produce response does not mention the partition".into(),
            })?;
        match ResponseError::try_from_code(answer.error_code) {
            None => Ok(Some(answer.base_offset)),
            Some(ResponseError::DuplicateSequenceNumber) => Ok(None),
            Some(error) => Err(RemoteError::Refused {
                broker: leader,
                topic: topic.to_string(),
                partition,
                error,
                message: answer.error_message.as_ref().map(|m| m.to_string()),
            }),
        }
    }

    /// The epoch and last sequence `producer_id` has in a partition led by `leader`.
    pub async fn last_sequence(
        &mut self,
        broker: &Broker,
        leader: i32,
        topic: &str,
        partition: i32,
        producer_id: i64,
    ) -> Result<Option<(i16, i32)>, RemoteError> {
        let result = self
            .try_last_sequence(broker, leader, topic, partition, producer_id)
            .await;
        self.forget_on_failure(leader, result)
    }

    async fn try_last_sequence(
        &mut self,
        broker: &Broker,
        leader: i32,
        topic: &str,
        partition: i32,
        producer_id: i64,
    ) -> Result<Option<(i16, i32)>, RemoteError> {
        let client = self.client(broker, leader).await?;
        let mut wanted = TopicRequest::default();
        wanted.name = TopicName(StrBytes::from_string(topic.to_string()));
        wanted.partition_indexes = vec![partition];
        let mut request = DescribeProducersRequest::default();
        request.topics = vec![wanted];
        let response = client
            .request(request, 0)
            .await
            .map_err(Self::request_failed(leader))?;
        let answer = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| RemoteError::Request {
                broker: leader,
                reason: "the DescribeProducers response does not mention the partition".into(),
            })?;
        if let Some(error) = ResponseError::try_from_code(answer.error_code) {
            return Err(RemoteError::Refused {
                broker: leader,
                topic: topic.to_string(),
                partition,
                error,
                message: answer.error_message.as_ref().map(|m| m.to_string()),
            });
        }
        Ok(answer
            .active_producers
            .iter()
            .find(|p| p.producer_id.0 == producer_id && p.last_sequence >= 0)
            .map(|p| (p.producer_epoch as i16, p.last_sequence)))
    }
}
