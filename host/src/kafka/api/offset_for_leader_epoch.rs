//! OffsetForLeaderEpoch (23): where a leader epoch ended in the leader's log.
//!
//! Consumers use it to detect log truncation after a leader change (KIP-320): a consumer
//! names the epoch of the last record it read and gets back the largest epoch at most
//! that one and the offset where it ended (the next epoch's start, or the log end for
//! the current epoch); a position past that end was truncated away. Only the leader
//! answers, after the usual `current_leader_epoch` check. Unknown epochs (newer than any
//! in the log) answer epoch -1 and offset -1, as Kafka's UNDEFINED values.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Context;
use crate::tenancy::acl::Operation;

/// Answers an OffsetForLeaderEpoch request.
pub fn handle(
    ctx: &Context<'_>,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let broker = ctx.broker;
    let mut response = OffsetForLeaderEpochResponse::default();
    for wanted in request.topics {
        let authorized = ctx.topic_allowed(Operation::Describe, wanted.topic.0.as_str());
        let topic = authorized
            .then(|| broker.topic(wanted.topic.0.as_str()))
            .flatten();
        let mut out = OffsetForLeaderTopicResult::default();
        out.topic = wanted.topic.clone();
        for p in wanted.partitions {
            let mut r = EpochEndOffset::default();
            r.partition = p.partition;
            r.leader_epoch = -1;
            r.end_offset = -1;
            let partition = topic.as_ref().and_then(|t| {
                usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i).cloned())
            });
            match partition {
                None if !authorized => {
                    r.error_code =
                        kafka_protocol::error::ResponseError::TopicAuthorizationFailed.code()
                }
                None => {
                    r.error_code =
                        super::not_hosted(broker, wanted.topic.0.as_str(), p.partition).code()
                }
                Some(partition) => match partition.check_leader(p.current_leader_epoch) {
                    Err(e) => r.error_code = e.code().code(),
                    Ok(_) => {
                        if let Some((epoch, end)) =
                            partition.log().end_offset_for_epoch(p.leader_epoch)
                        {
                            r.leader_epoch = epoch;
                            r.end_offset = end;
                        }
                    }
                },
            }
            out.partitions.push(r);
        }
        response.topics.push(out);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::error::ResponseError;

    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use kafka_protocol::records::Compression;

    use super::super::test_support::{broker, Client};
    use super::*;
    use crate::partition::encode::{encode_batch, RecordData};

    fn request(partition: i32, current: i32, epoch: i32) -> OffsetForLeaderEpochRequest {
        let mut p = OffsetForLeaderPartition::default();
        p.partition = partition;
        p.current_leader_epoch = current;
        p.leader_epoch = epoch;
        let mut t = OffsetForLeaderTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        t.partitions = vec![p];
        let mut r = OffsetForLeaderEpochRequest::default();
        r.replica_id = (-1).into();
        r.topics = vec![t];
        r
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_from_the_epoch_cache_on_the_leader() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        b.create_topic("t", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let data = vec![RecordData::default(); 4];
        let batch = encode_batch(&data, Compression::None).unwrap();
        b.partition("t", 0).unwrap().append(&batch, 0).unwrap();
        let client = Client::new();
        let ctx = client.context(&b);
        let ask = |partition, current, epoch| {
            let response = handle(&ctx, request(partition, current, epoch), 4);
            // Every supported version encodes the answer and decodes the request.
            for version in 2..=4 {
                let mut buf = bytes::BytesMut::new();
                response.encode(&mut buf, version).unwrap();
                let mut buf = bytes::BytesMut::new();
                request(partition, current, epoch)
                    .encode(&mut buf, version)
                    .unwrap();
                OffsetForLeaderEpochRequest::decode(&mut buf.freeze(), version).unwrap();
            }
            let r = &response.topics[0].partitions[0];
            (r.error_code, r.leader_epoch, r.end_offset)
        };
        assert_eq!(ask(0, 0, 0), (0, 0, 4));
        assert_eq!(ask(0, -1, 0), (0, 0, 4));
        assert_eq!(ask(0, 0, 3), (0, -1, -1), "an epoch newer than any");
        assert_eq!(
            ask(0, 2, 0).0,
            ResponseError::UnknownLeaderEpoch.code(),
            "the client knows a newer leader"
        );
        assert_eq!(
            ask(1, 0, 0).0,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_all_on_a_single_replica_needs_min_insync_one() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let configs = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
        b.create_topic("strict", 1, 1, configs, false)
            .await
            .unwrap();
        b.create_topic("t", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let client = Client::new();
        let ctx = client.context(&b);
        let batch = encode_batch(&[RecordData::default()], Compression::None).unwrap();
        let produce = |topic: &'static str| {
            let mut p = PartitionProduceData::default();
            p.index = 0;
            p.records = Some(batch.clone());
            let mut t = TopicProduceData::default();
            t.name = TopicName(StrBytes::from_static_str(topic));
            t.partition_data = vec![p];
            let mut r = ProduceRequest::default();
            r.acks = -1;
            r.timeout_ms = 1_000;
            r.topic_data = vec![t];
            r
        };
        let code = |r: kafka_protocol::messages::ProduceResponse| {
            let p = &r.responses[0].partition_responses[0];
            (p.error_code, p.base_offset)
        };
        let strict = super::super::produce::handle(&ctx, produce("strict"), 9)
            .await
            .unwrap();
        assert_eq!(code(strict), (ResponseError::NotEnoughReplicas.code(), -1));
        assert_eq!(b.partition("strict", 0).unwrap().log().log_end_offset(), 0);
        let fine = super::super::produce::handle(&ctx, produce("t"), 9)
            .await
            .unwrap();
        assert_eq!(code(fine), (0, 0));
    }
}
