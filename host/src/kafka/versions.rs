//! The API versions this broker advertises in ApiVersions.
//!
//! The ranges follow Apache Kafka 3.7 for every API Quiver implements, because clients
//! infer behaviour from them (kafka-python guesses the broker release from them). Two
//! deliberate details: Produce is advertised from v0, because librdkafka 2.0 silently
//! stops compressing when a broker's Produce range does not start at v0; and versions
//! older than the codec can decode (Produce v0–2, Fetch v0–3, OffsetCommit v0–1,
//! OffsetFetch v0, …) are advertised but
//! answered by closing the connection with a logged reason — no current client sends
//! them, since clients pick the highest version both sides support.

use kafka_protocol::messages::ApiKey;

/// An inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Lowest version advertised.
    pub min: i16,
    /// Highest version advertised.
    pub max: i16,
}

impl Range {
    /// Whether `version` is advertised and decodable.
    pub fn contains(&self, version: i16) -> bool {
        version >= self.min && version <= self.max
    }
}

/// (API, advertised min, advertised max, lowest version the codec decodes).
const TABLE: &[(ApiKey, i16, i16, i16)] = &[
    (ApiKey::Produce, 0, 10, 3),
    (ApiKey::Fetch, 0, 16, 4),
    (ApiKey::ListOffsets, 0, 8, 1),
    (ApiKey::Metadata, 0, 12, 0),
    (ApiKey::ApiVersions, 0, 3, 0),
    (ApiKey::CreateTopics, 0, 7, 2),
    (ApiKey::DeleteTopics, 0, 6, 1),
    (ApiKey::DeleteRecords, 0, 2, 0),
    (ApiKey::InitProducerId, 0, 4, 0),
    (ApiKey::DescribeConfigs, 0, 4, 1),
    (ApiKey::AlterConfigs, 0, 2, 0),
    (ApiKey::CreatePartitions, 0, 3, 0),
    (ApiKey::IncrementalAlterConfigs, 0, 1, 0),
    (ApiKey::FindCoordinator, 0, 4, 0),
    (ApiKey::JoinGroup, 0, 9, 0),
    (ApiKey::SyncGroup, 0, 5, 0),
    (ApiKey::Heartbeat, 0, 4, 0),
    (ApiKey::LeaveGroup, 0, 5, 0),
    (ApiKey::OffsetCommit, 0, 9, 2),
    (ApiKey::OffsetFetch, 0, 9, 1),
    (ApiKey::DescribeGroups, 0, 5, 0),
    (ApiKey::ListGroups, 0, 4, 0),
    (ApiKey::DeleteGroups, 0, 2, 0),
    (ApiKey::OffsetDelete, 0, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 0, 4, 2),
    (ApiKey::DescribeProducers, 0, 0, 0),
    // v0 handshakes are followed by raw SASL tokens outside Kafka frames; every client
    // since Kafka 1.0 uses v1 and SaslAuthenticate.
    (ApiKey::SaslHandshake, 0, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2, 0),
    (ApiKey::DescribeAcls, 0, 3, 1),
    (ApiKey::CreateAcls, 0, 3, 1),
    (ApiKey::DeleteAcls, 0, 3, 1),
    (ApiKey::DescribeClientQuotas, 0, 1, 0),
    (ApiKey::AlterClientQuotas, 0, 1, 0),
    (ApiKey::DescribeUserScramCredentials, 0, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0, 0),
];

/// Every advertised API with its advertised range.
pub fn advertised() -> impl Iterator<Item = (ApiKey, Range)> {
    TABLE
        .iter()
        .map(|&(api, min, max, _)| (api, Range { min, max }))
}

/// The versions of `api` this broker can actually handle, or `None` if it does not
/// implement the API.
pub fn supported(api: ApiKey) -> Option<Range> {
    TABLE
        .iter()
        .find(|(a, ..)| *a == api)
        .map(|&(_, _, max, decodable)| Range {
            min: decodable,
            max,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_is_advertised_from_v0() {
        let (_, produce) = advertised().find(|(a, _)| *a == ApiKey::Produce).unwrap();
        assert_eq!(produce.min, 0);
    }

    #[test]
    fn supported_versions_are_within_the_codec() {
        for (api, range) in advertised() {
            let codec = api.valid_versions();
            let ours = supported(api).unwrap();
            assert!(ours.min >= codec.min && ours.max <= codec.max, "{api:?}");
            assert!(ours.max == range.max);
        }
    }
}
