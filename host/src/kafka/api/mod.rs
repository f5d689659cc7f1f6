//! One file per Kafka API. Each handler takes the decoded request and its version and
//! returns the response to encode; handlers only set fields that exist in the version
//! being answered, because the codec refuses to encode a field the version lacks.

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_configs;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::StrBytes;

use super::{decode_request, encode_response, ConnectionError};
use crate::broker::Broker;

/// What a handler knows about the request beyond its body.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The broker serving the request.
    pub broker: &'a Broker,
    /// The request header (client id, correlation id).
    pub header: &'a RequestHeader,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Decodes the body for `api`, runs its handler and encodes the response frame.
pub async fn dispatch(
    ctx: Context<'_>,
    api: ApiKey,
    version: i16,
    body: Bytes,
) -> Result<Option<BytesMut>, ConnectionError> {
    macro_rules! sync_api {
        ($module:ident) => {{
            let request = decode_request(api, version, body)?;
            let response = $module::handle(&ctx, request, version);
            encode_response(ctx.header, api, version, &response).map(Some)
        }};
    }
    match api {
        ApiKey::ApiVersions => sync_api!(api_versions),
        ApiKey::Metadata => sync_api!(metadata),
        ApiKey::Produce => {
            let request = decode_request(api, version, body)?;
            match produce::handle(&ctx, request, version) {
                Some(response) => encode_response(ctx.header, api, version, &response).map(Some),
                None => Ok(None),
            }
        }
        ApiKey::Fetch => {
            let request = decode_request(api, version, body)?;
            let response = fetch::handle(&ctx, request, version).await;
            encode_response(ctx.header, api, version, &response).map(Some)
        }
        ApiKey::ListOffsets => sync_api!(list_offsets),
        ApiKey::CreateTopics => sync_api!(create_topics),
        ApiKey::DeleteTopics => sync_api!(delete_topics),
        ApiKey::CreatePartitions => sync_api!(create_partitions),
        ApiKey::DeleteRecords => sync_api!(delete_records),
        ApiKey::DescribeConfigs => sync_api!(describe_configs),
        ApiKey::AlterConfigs => sync_api!(alter_configs),
        ApiKey::IncrementalAlterConfigs => sync_api!(incremental_alter_configs),
        ApiKey::InitProducerId => sync_api!(init_producer_id),
        other => Err(ConnectionError::UnknownApiKey(other as i16)),
    }
}

/// A Kafka string from a Rust one.
pub(crate) fn kstr(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
