//! OffsetForLeaderEpoch (23): where a leader epoch ended in the leader's log.
//!
//! Consumers use it to detect log truncation after a leader change (KIP-320): a consumer
//! names the epoch of the last record it read and gets back the largest epoch at most
//! that one and the offset where it ended (the next epoch's start, or the log end for
//! the current epoch); a position past that end was truncated away. Only the leader
//! answers, after the usual `current_leader_epoch` check. Unknown epochs (newer than any
//! in the log) answer epoch -1 and offset -1, as Kafka's UNDEFINED values.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Context;

/// Answers an OffsetForLeaderEpoch request.
pub fn handle(
    ctx: &Context<'_>,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let broker = ctx.broker;
    let mut response = OffsetForLeaderEpochResponse::default();
    for wanted in request.topics {
        let topic = broker.topic(wanted.topic.0.as_str());
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
                None => r.error_code = ResponseError::UnknownTopicOrPartition.code(),
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
