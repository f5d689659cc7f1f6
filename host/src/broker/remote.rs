//! Writing to partitions led by another broker: what the broker's own producers
//! (transform and mirror runners) write when the leader is elsewhere in the cluster.
//!
//! A runner sends the leader Kafka requests, as any idempotent producer would (Produce
//! with acks=all, carrying the runner's producer id and sequence numbers), and asks
//! the leader where that producer's sequence stands with DescribeProducers before
//! replaying into it. They travel over the cluster transport's writes channel, not the
//! Kafka listener: the leader knows them by the broker's certificate as its own
//! cluster's, which is what lets a transform write with the producer ids the Kafka
//! listener refuses to clients. Each request is a stream of the endpoint's connection
//! to the leader (made on first use, remade after a loss).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, DescribeProducersRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::broker::Broker;
use crate::cli::client::{decode_response, encode_request};
use crate::net::{Channel, Endpoint};

/// How long a leader may take to replicate a write to its ISR.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// How long a request may take on the way there and back, beyond the leader's own time.
const TRANSPORT_GRACE: Duration = Duration::from_secs(5);

/// The Produce version the writers send: every broker of the cluster answers it.
const PRODUCE_VERSION: i16 = 8;

/// The cluster endpoint, for the broker's own writers.
#[derive(Clone)]
pub struct Peers(pub Endpoint);

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peers")
    }
}

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

/// One runner's requests to the leaders it writes to.
#[derive(Debug, Default)]
pub struct Leaders {
    correlation_id: i32,
}

impl Leaders {
    /// Sends `request` at `version` to broker `leader` on the writes channel.
    async fn ask<R: Request>(
        &mut self,
        broker: &Broker,
        leader: i32,
        request: R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, RemoteError> {
        let failed = |reason: String| RemoteError::Request {
            broker: leader,
            reason,
        };
        let peers = broker
            .peers()
            .ok_or_else(|| failed("this broker's cluster endpoint is not up yet".into()))?;
        let address = broker
            .metadata()
            .brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .map(|b| b.cluster_addr)
            .ok_or_else(|| failed("not registered, or fenced".into()))?;
        let api = ApiKey::try_from(R::KEY).map_err(|_| failed(format!("API key {}", R::KEY)))?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let mut frame = BytesMut::new();
        encode_request(&mut frame, request, version, self.correlation_id)
            .map_err(|e| failed(format!("{e:#}")))?;
        let answer: Bytes = peers
            .0
            .call(leader, address, Channel::Writes, frame.freeze(), timeout)
            .await
            .map_err(|e| failed(e.to_string()))?;
        decode_response::<R>(answer, api, version, self.correlation_id)
            .map_err(|e| failed(format!("{e:#}")))
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
        let timeout = Duration::from_millis(PRODUCE_TIMEOUT_MS as u64) + TRANSPORT_GRACE;
        let response = self
            .ask(broker, leader, request, PRODUCE_VERSION, timeout)
            .await?;
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
        let mut wanted = TopicRequest::default();
        wanted.name = TopicName(StrBytes::from_string(topic.to_string()));
        wanted.partition_indexes = vec![partition];
        let mut request = DescribeProducersRequest::default();
        request.topics = vec![wanted];
        let response = self
            .ask(broker, leader, request, 0, TRANSPORT_GRACE * 2)
            .await?;
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
