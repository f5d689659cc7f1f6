//! One file per Kafka API. Each handler takes the decoded request and its version and
//! returns the response to encode; handlers only set fields that exist in the version
//! being answered, because the codec refuses to encode a field the version lacks.

pub mod acls;
pub mod alter_configs;
pub mod api_versions;
pub mod client_quotas;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_producers;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod scram_credentials;
pub mod sync_group;

use std::net::SocketAddr;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::StrBytes;

use super::frame::ResponseFrame;
use super::session::Session;
use super::{decode, encode, encode_response_sharing, ConnectionError};
use crate::broker::Broker;
use crate::controller::state::State;
use crate::tenancy::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::tenancy::quota::{self, QuotaType};
use crate::tenancy::{policy, tenant};

/// What a handler knows about the request beyond its body.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The broker serving the request.
    pub broker: &'a Broker,
    /// The request header (client id, correlation id).
    pub header: &'a RequestHeader,
    /// The client's address.
    pub peer: SocketAddr,
    /// Who the client is and which listener it came through.
    pub session: &'a Session,
}

impl Context<'_> {
    /// Whether the client may do `operation` on (`resource_type`, `name`).
    pub fn authorize(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        // No metadata snapshot when the answer cannot depend on it.
        let security = self.broker.security();
        if !security.authorizer_enabled() || security.is_super_user(&self.session.principal) {
            return true;
        }
        self.authorize_in(&self.broker.metadata(), operation, resource_type, name)
    }

    /// Like [`authorize`](Self::authorize), against a metadata snapshot the handler
    /// already holds (one snapshot per request keeps its answers consistent).
    pub fn authorize_in(
        &self,
        metadata: &State,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.broker.security().authorize(
            metadata,
            &self.session.principal,
            self.peer.ip(),
            operation,
            resource_type,
            name,
        )
    }

    /// Whether the client may do `operation` on the topic `name`.
    pub fn topic_allowed(&self, operation: Operation, name: &str) -> bool {
        self.authorize(operation, ResourceType::Topic, name)
    }

    /// Whether the client may do `operation` on the group `name`.
    pub fn group_allowed(&self, operation: Operation, name: &str) -> bool {
        self.authorize(operation, ResourceType::Group, name)
    }

    /// Whether the client may do `operation` on the cluster.
    pub fn cluster_allowed(&self, operation: Operation) -> bool {
        self.authorize(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Records `value` of the quota `kind` for this client and raises the request's
    /// throttle to what its quotas call for (`record` false: only looks). Returns the
    /// request's throttle so far, ms.
    pub fn quota(&self, kind: QuotaType, value: f64, record: bool) -> i32 {
        let metadata = self.broker.metadata();
        if metadata.quotas.is_empty() && metadata.quota_policies.is_empty() {
            return self.session.throttle_time_ms();
        }
        let client_id = self
            .header
            .client_id
            .as_ref()
            .map(|c| c.as_str())
            .unwrap_or("");
        let tenant = tenant::of_principal(&metadata.tenants, &self.session.principal);
        let tenant = tenant.map(|t| t.name.as_str());
        let client = quota::Client {
            user: self.session.principal.name(),
            client_id,
            tenant,
        };
        let asker = || {
            (
                policy::Asker {
                    principal: self.session.principal.to_string(),
                    tenant,
                    client_id,
                    listener: &self.session.listener.name,
                    host: self.peer.ip().to_string(),
                },
                &self.session.policy_key,
            )
        };
        let throttle = self
            .broker
            .security()
            .throttle(&metadata, &client, asker, kind, value, record);
        self.session.throttle(throttle, kind)
    }

    /// Whether the authorizer is on (handlers skip the work of filtering when not).
    pub fn authorizing(&self) -> bool {
        self.broker.security().authorizer_enabled()
    }
}

/// Decodes the body for `api`, runs its handler and encodes the response frame.
pub async fn dispatch(
    ctx: Context<'_>,
    api: ApiKey,
    version: i16,
    body: Bytes,
) -> Result<Option<ResponseFrame>, ConnectionError> {
    macro_rules! sync_api {
        ($module:ident) => {{
            let request = decode(api, version, body).await?;
            let response = $module::handle(&ctx, request, version);
            encode(ctx.header, api, version, response).await.map(Some)
        }};
    }
    macro_rules! async_api {
        ($module:ident) => {{
            let request = decode(api, version, body).await?;
            let response = $module::handle(&ctx, request, version).await;
            encode(ctx.header, api, version, response).await.map(Some)
        }};
    }
    match api {
        ApiKey::ApiVersions => sync_api!(api_versions),
        ApiKey::Metadata => async_api!(metadata),
        ApiKey::Produce => {
            let request = decode(api, version, body).await?;
            match produce::handle(&ctx, request, version).await {
                Some(response) => encode(ctx.header, api, version, response).await.map(Some),
                None => Ok(None),
            }
        }
        ApiKey::Fetch => {
            let request = decode(api, version, body).await?;
            let response = fetch::handle(&ctx, request, version).await;
            let record_sets: Vec<Bytes> = response
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter_map(|p| p.records.clone())
                .collect();
            encode_response_sharing(ctx.header, api, version, &response, &record_sets).map(Some)
        }
        ApiKey::ListOffsets => sync_api!(list_offsets),
        ApiKey::CreateTopics => async_api!(create_topics),
        ApiKey::DeleteTopics => async_api!(delete_topics),
        ApiKey::CreatePartitions => async_api!(create_partitions),
        ApiKey::DeleteRecords => sync_api!(delete_records),
        ApiKey::DescribeConfigs => sync_api!(describe_configs),
        ApiKey::AlterConfigs => async_api!(alter_configs),
        ApiKey::IncrementalAlterConfigs => async_api!(incremental_alter_configs),
        ApiKey::InitProducerId => async_api!(init_producer_id),
        ApiKey::FindCoordinator => async_api!(find_coordinator),
        ApiKey::JoinGroup => {
            let request = decode(api, version, body).await?;
            let response = join_group::handle(&ctx, request, version).await;
            encode(ctx.header, api, version, response).await.map(Some)
        }
        ApiKey::SyncGroup => {
            let request = decode(api, version, body).await?;
            let response = sync_group::handle(&ctx, request, version).await;
            encode(ctx.header, api, version, response).await.map(Some)
        }
        ApiKey::Heartbeat => sync_api!(heartbeat),
        ApiKey::LeaveGroup => sync_api!(leave_group),
        ApiKey::OffsetCommit => async_api!(offset_commit),
        ApiKey::OffsetFetch => sync_api!(offset_fetch),
        ApiKey::DescribeGroups => sync_api!(describe_groups),
        ApiKey::ListGroups => sync_api!(list_groups),
        ApiKey::DeleteGroups => sync_api!(delete_groups),
        ApiKey::OffsetDelete => sync_api!(offset_delete),
        ApiKey::OffsetForLeaderEpoch => sync_api!(offset_for_leader_epoch),
        ApiKey::DescribeProducers => sync_api!(describe_producers),
        ApiKey::CreateAcls => {
            let request = decode(api, version, body).await?;
            let response = acls::create(&ctx, request, version).await;
            encode(ctx.header, api, version, response).await.map(Some)
        }
        ApiKey::DescribeAcls => {
            let request = decode(api, version, body).await?;
            let response = acls::describe(&ctx, request, version);
            encode(ctx.header, api, version, response).await.map(Some)
        }
        ApiKey::DeleteAcls => {
            let request = decode(api, version, body).await?;
            let response = acls::delete(&ctx, request, version).await;
            encode(ctx.header, api, version, response).await.map(Some)
        }
        ApiKey::DescribeClientQuotas => {
            let request = decode(api, version, body).await?;
            let response = client_quotas::describe(&ctx, request, version);
            encode(ctx.header, api, version, response).await.map(Some)
        }
        ApiKey::AlterClientQuotas => {
            let request = decode(api, version, body).await?;
            let response = client_quotas::alter(&ctx, request, version).await;
            encode(ctx.header, api, version, response).await.map(Some)
        }
        ApiKey::DescribeUserScramCredentials => {
            let request = decode(api, version, body).await?;
            let response = scram_credentials::describe(&ctx, request, version);
            encode(ctx.header, api, version, response).await.map(Some)
        }
        ApiKey::AlterUserScramCredentials => {
            let request = decode(api, version, body).await?;
            let response = scram_credentials::alter(&ctx, request, version).await;
            encode(ctx.header, api, version, response).await.map(Some)
        }
        other => Err(ConnectionError::UnknownApiKey(other as i16)),
    }
}

/// The error for a partition this broker does not host: NOT_LEADER_OR_FOLLOWER when
/// the cluster has it (it lives on other brokers, or this replica is still being
/// opened; the client refreshes its metadata and goes to the leader), otherwise
/// UNKNOWN_TOPIC_OR_PARTITION.
pub(crate) fn not_hosted(broker: &Broker, topic: &str, partition: i32) -> ResponseError {
    if broker.metadata().partition(topic, partition).is_some() {
        ResponseError::NotLeaderOrFollower
    } else {
        ResponseError::UnknownTopicOrPartition
    }
}

/// The client id from the request header ("" when absent).
pub(crate) fn client_id(ctx: &Context<'_>) -> String {
    ctx.header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default()
}

/// The client's host as Kafka reports it in group descriptions (`/address`).
pub(crate) fn client_host(ctx: &Context<'_>) -> String {
    format!("/{}", ctx.peer.ip())
}

/// A Kafka string from a Rust one.
pub(crate) fn kstr(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// What handler tests share: a broker to ask and a client asking.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use kafka_protocol::messages::RequestHeader;

    use super::Context;
    use crate::broker::Broker;
    use crate::kafka::session::Session;

    /// A single-node broker in `dir` with one offsets partition (few files to open).
    pub(crate) async fn broker(dir: &std::path::Path) -> Arc<Broker> {
        crate::broker::test_support::single_node(dir, 1, |config| {
            config.group.offsets_topic_partitions = 1;
        })
        .await
    }

    /// A plaintext client without credentials, as a handler sees it.
    pub(crate) struct Client {
        header: RequestHeader,
        session: Session,
    }

    impl Client {
        pub(crate) fn new() -> Self {
            Client {
                header: RequestHeader::default(),
                session: Session::plaintext("127.0.0.1:1".parse().unwrap()),
            }
        }

        /// A writer of broker `id` of the cluster, over the cluster transport.
        pub(crate) fn own_broker(id: i32) -> Self {
            let mut client = Client::new();
            client.session.own_broker = Some(id);
            client
        }

        /// The context of this client's requests to `broker`.
        pub(crate) fn context<'a>(&'a self, broker: &'a Broker) -> Context<'a> {
            Context {
                broker,
                header: &self.header,
                peer: self.session.peer,
                session: &self.session,
            }
        }
    }
}
