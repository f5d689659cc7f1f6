//! Every Kafka request the broker decodes, in every version it advertises.
//!
//! The first byte chooses how the input is used:
//! - even: the rest is a whole request frame (after the length prefix), read by the
//!   broker's own frame-head parser ([`quiver::kafka::read_request_head`]) exactly as a
//!   connection reads it, then the body is decoded as the API it names;
//! - odd: the next two bytes choose an advertised API and one of its advertised
//!   versions, a valid request header for them is written, and the rest of the input is
//!   the body, so every decoder is reached without the fuzzer first having to discover
//!   the header layout.
//!
//! Whatever decodes is encoded again, and those bytes must decode and encode to the
//! same bytes: what the broker understood is what the client sent.

#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use libfuzzer_sys::fuzz_target;
use quiver::kafka::{decode_request, read_request_head, versions, ConnectionError, RequestHead};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(RequestHead::Request {
            api, version, body, ..
        }) = read_request_head(Bytes::copy_from_slice(rest))
        {
            decode_body(api, version, body);
        }
        return;
    }
    let [api_pick, version_pick, rest @ ..] = rest else {
        return;
    };
    let advertised: Vec<_> = versions::advertised().collect();
    let (api, range) = advertised[usize::from(*api_pick) % advertised.len()];
    let span = (range.max - range.min + 1) as u8;
    let version = range.min + i16::from(version_pick % span);
    let mut frame = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = i32::from(*version_pick);
    header.client_id = Some(StrBytes::from_static_str("fuzz"));
    header
        .encode(&mut frame, api.request_header_version(version))
        .expect("a request header encodes");
    frame.extend_from_slice(rest);
    let decodable = versions::supported(api).is_some_and(|r| r.contains(version));
    match read_request_head(frame.freeze()) {
        Ok(RequestHead::Request {
            api: read_api,
            version: read_version,
            header: read_header,
            body,
        }) => {
            assert!(decodable, "{api:?} v{version} accepted but not supported");
            assert_eq!((read_api, read_version), (api, version));
            assert_eq!(read_header.correlation_id, header.correlation_id);
            decode_body(api, version, body);
        }
        Ok(RequestHead::UnknownApiVersions { .. }) => {
            panic!("ApiVersions v{version} is advertised but answered as unknown")
        }
        Err(ConnectionError::UnsupportedVersion { .. }) => {
            assert!(!decodable, "{api:?} v{version} is supported but refused");
        }
        Err(e) => panic!("a well-formed {api:?} v{version} header was refused: {e}"),
    }
});

/// Decodes `body` as the request type the broker's handler for `api` takes.
fn decode_body(api: ApiKey, version: i16, body: Bytes) {
    macro_rules! by_api {
        ($($key:ident => $request:ty),* $(,)?) => {
            match api {
                $(ApiKey::$key => roundtrip::<$request>(api, version, body),)*
                other => panic!("{other:?} v{version} passed the head check but has no decoder here"),
            }
        };
    }
    by_api! {
        Produce => ProduceRequest,
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        ApiVersions => ApiVersionsRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        DeleteRecords => DeleteRecordsRequest,
        InitProducerId => InitProducerIdRequest,
        DescribeConfigs => DescribeConfigsRequest,
        AlterConfigs => AlterConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest,
        SyncGroup => SyncGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        DescribeGroups => DescribeGroupsRequest,
        ListGroups => ListGroupsRequest,
        DeleteGroups => DeleteGroupsRequest,
        OffsetDelete => OffsetDeleteRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        DescribeProducers => DescribeProducersRequest,
        SaslHandshake => SaslHandshakeRequest,
        SaslAuthenticate => SaslAuthenticateRequest,
        DescribeAcls => DescribeAclsRequest,
        CreateAcls => CreateAclsRequest,
        DeleteAcls => DeleteAclsRequest,
        DescribeClientQuotas => DescribeClientQuotasRequest,
        AlterClientQuotas => AlterClientQuotasRequest,
        DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
        AlterUserScramCredentials => AlterUserScramCredentialsRequest,
    }
}

/// Decodes with the broker's own `decode_request`; what decodes must encode, and the
/// encoding must be a fixed point (decode and encode it again: the same bytes).
fn roundtrip<R: Decodable + Encodable>(api: ApiKey, version: i16, body: Bytes) {
    let Ok(request) = decode_request::<R>(api, version, body) else {
        return;
    };
    let size = request
        .compute_size(version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: a decoded request has no size: {e}"));
    let mut first = BytesMut::new();
    request
        .encode(&mut first, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: a decoded request does not encode: {e}"));
    assert_eq!(first.len(), size, "{api:?} v{version}: computed size");
    let again = decode_request::<R>(api, version, first.clone().freeze()).unwrap_or_else(|e| {
        panic!("{api:?} v{version}: the re-encoded request does not decode: {e}")
    });
    let mut second = BytesMut::new();
    again
        .encode(&mut second, version)
        .expect("a re-decoded request encodes");
    assert_eq!(
        first, second,
        "{api:?} v{version}: encoding is not a fixed point"
    );
}
