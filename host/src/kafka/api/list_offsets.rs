//! ListOffsets (2): earliest, latest, max-timestamp and by-timestamp offset lookups, on
//! the partition's leader. "Latest" is the high watermark: what consumers can read.
//!
//! The leader epoch of an answer (v4+) is, as in Kafka, the epoch the returned offset
//! was written in -- the current leader epoch only for "latest". Clients keep it with
//! the position they start from: librdkafka compares it with the epoch of a later
//! answer for the same logical offset, and a current epoch that moved in between would
//! make two answers naming the same offset look like different positions (it then
//! starts that partition over from there).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::Context;
use crate::tenancy::acl::Operation;

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// Answers a ListOffsets request.
pub fn handle(ctx: &Context<'_>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let broker = ctx.broker;
    let mut response = ListOffsetsResponse::default();
    for wanted in request.topics {
        let authorized = ctx.topic_allowed(Operation::Describe, wanted.name.0.as_str());
        let topic = broker.topic(wanted.name.0.as_str());
        let mut out = ListOffsetsTopicResponse::default();
        out.name = wanted.name.clone();
        for p in wanted.partitions {
            let mut r = ListOffsetsPartitionResponse::default();
            r.partition_index = p.partition_index;
            r.timestamp = -1;
            r.offset = -1;
            if !authorized {
                r.error_code = ResponseError::TopicAuthorizationFailed.code();
                out.partitions.push(r);
                continue;
            }
            let partition = topic
                .as_ref()
                .and_then(|t| t.partition(p.partition_index).cloned());
            let Some(partition) = partition else {
                r.error_code =
                    super::not_hosted(broker, wanted.name.0.as_str(), p.partition_index).code();
                out.partitions.push(r);
                continue;
            };
            let current_epoch = if version >= 4 {
                p.current_leader_epoch
            } else {
                -1
            };
            let leader_epoch = match partition.check_leader(current_epoch) {
                Ok(epoch) => epoch,
                Err(e) => {
                    r.error_code = e.code().code();
                    out.partitions.push(r);
                    continue;
                }
            };
            let log = partition.log();
            let looked_up = match p.timestamp {
                LATEST => Ok(Some((-1, partition.high_watermark()))),
                EARLIEST | EARLIEST_LOCAL => Ok(Some((-1, log.log_start_offset()))),
                MAX_TIMESTAMP => log.max_timestamp(),
                ts if ts >= 0 => log
                    .offset_for_timestamp(ts)
                    .map(|found| found.map(|(off, ts)| (ts, off))),
                other => {
                    r.error_code = ResponseError::InvalidRequest.code();
                    tracing::debug!(
                        timestamp = other,
                        "ListOffsets with an unknown special timestamp"
                    );
                    out.partitions.push(r);
                    continue;
                }
            };
            match looked_up {
                Ok(Some((ts, offset))) => {
                    r.timestamp = ts;
                    r.offset = offset;
                    if version >= 4 {
                        r.leader_epoch = if p.timestamp == LATEST {
                            leader_epoch
                        } else {
                            log.epoch_at(offset).unwrap_or(-1)
                        };
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = partition.topic(), partition = p.partition_index, error = %e, "offset lookup failed");
                    r.error_code = ResponseError::KafkaStorageError.code();
                }
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

    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::Compression;

    use super::super::test_support::{broker, Client};
    use super::*;
    use crate::partition::encode::{encode_batch, RecordData};

    fn request(timestamp: i64) -> ListOffsetsRequest {
        let mut p = ListOffsetsPartition::default();
        p.partition_index = 0;
        p.current_leader_epoch = -1;
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_static_str("t"));
        t.partitions = vec![p];
        let mut r = ListOffsetsRequest::default();
        r.replica_id = (-1).into();
        r.topics = vec![t];
        r
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_carry_the_epoch_their_offset_was_written_in() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        b.create_topic("t", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let partition = b.partition("t", 0).unwrap();
        let records = |ts: i64| {
            let data: Vec<RecordData> = (0..4)
                .map(|i| RecordData {
                    timestamp: ts + i,
                    ..RecordData::default()
                })
                .collect();
            encode_batch(&data, Compression::None).unwrap()
        };
        // Offsets 0-3 in epoch 0, 4-7 in epoch 2 (a later leadership of this broker).
        partition.append(&records(1_000), 0).unwrap();
        let later = crate::controller::state::PartitionState {
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 2,
            partition_epoch: 2,
        };
        partition.set_role(1, &later, 0).unwrap();
        partition.append(&records(2_000), 0).unwrap();
        let client = Client::new();
        let ctx = client.context(&b);
        let ask = |timestamp: i64, version: i16| {
            let response = handle(&ctx, request(timestamp), version);
            let r = &response.topics[0].partitions[0];
            (r.error_code, r.offset, r.leader_epoch)
        };
        assert_eq!(partition.check_leader(-1), Ok(2));
        let current = 2;
        // Earliest: the first record's epoch, not the current one.
        assert_eq!(ask(EARLIEST, 4), (0, 0, 0));
        // Latest: the high watermark, with the current leader epoch.
        assert_eq!(ask(LATEST, 4), (0, 8, current));
        // By timestamp and max timestamp: the epoch of the record found.
        assert_eq!(ask(1_002, 4), (0, 2, 0));
        assert_eq!(ask(2_001, 4), (0, 5, 2));
        assert_eq!(ask(MAX_TIMESTAMP, 4), (0, 7, 2));
        // Before v4 the answer has no epoch.
        assert_eq!(ask(EARLIEST, 3), (0, 0, -1));
    }
}
