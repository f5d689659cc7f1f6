//! DescribeClientQuotas and AlterClientQuotas (KIP-546): client quotas managed through
//! the Kafka API. Reading needs DESCRIBE_CONFIGS on the cluster, changing ALTER_CONFIGS,
//! as in Kafka. Entity types are Kafka's `user` and `client-id`, plus `tenant`.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};

use super::{kstr, Context};
use crate::tenancy::acl::Operation;
use crate::tenancy::quota::{self, QuotaEntity, QuotaValue};

/// DescribeClientQuotas match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

/// Handles DescribeClientQuotas.
pub fn describe(
    ctx: &Context<'_>,
    request: DescribeClientQuotasRequest,
    _version: i16,
) -> DescribeClientQuotasResponse {
    let mut response = DescribeClientQuotasResponse::default();
    if !ctx.cluster_allowed(Operation::DescribeConfigs) {
        response.error_code = ResponseError::ClusterAuthorizationFailed.code();
        response.error_message = Some(kstr(
            "describing quotas needs DESCRIBE_CONFIGS on the cluster",
        ));
        return response;
    }
    for c in &request.components {
        if !matches!(c.match_type, MATCH_EXACT | MATCH_DEFAULT | MATCH_ANY) {
            response.error_code = ResponseError::InvalidRequest.code();
            response.error_message =
                Some(kstr(format!("match type {} is not valid", c.match_type)));
            return response;
        }
    }
    let metadata = ctx.broker.metadata();
    let matches = |entity: &QuotaEntity| {
        let all = request.components.iter().all(|c| {
            match (entity.0.get(c.entity_type.as_str()), c.match_type) {
                (Some(Some(name)), MATCH_EXACT) => c._match.as_deref() == Some(name.as_str()),
                (Some(None), MATCH_DEFAULT) => true,
                (Some(_), MATCH_ANY) => true,
                _ => false,
            }
        });
        all && (!request.strict || entity.0.len() == request.components.len())
    };
    response.entries = Some(
        metadata
            .quotas
            .iter()
            .filter(|(entity, _)| matches(entity))
            .map(|(entity, values)| {
                let mut e = EntryData::default();
                e.entity = entity
                    .0
                    .iter()
                    .map(|(t, n)| {
                        let mut d = EntityData::default();
                        d.entity_type = kstr(t.clone());
                        d.entity_name = n.clone().map(kstr);
                        d
                    })
                    .collect();
                e.values = values
                    .iter()
                    .map(|(kind, v)| {
                        let mut d = ValueData::default();
                        d.key = kstr(kind.key());
                        d.value = v.0;
                        d
                    })
                    .collect();
                e
            })
            .collect(),
    );
    response
}

/// An entry's outcome: accepted, or the error and message it is answered with.
type Refusal = Result<(), (ResponseError, String)>;

/// Handles AlterClientQuotas.
pub async fn alter(
    ctx: &Context<'_>,
    request: AlterClientQuotasRequest,
    _version: i16,
) -> AlterClientQuotasResponse {
    let mut response = AlterClientQuotasResponse::default();
    let allowed = ctx.cluster_allowed(Operation::AlterConfigs);
    let mut changes = Vec::new();
    let mut results: Vec<(Vec<AlteredEntity>, Refusal)> = Vec::new();
    for entry in &request.entries {
        let echoed: Vec<AlteredEntity> = entry
            .entity
            .iter()
            .map(|e| {
                let mut d = AlteredEntity::default();
                d.entity_type = e.entity_type.clone();
                d.entity_name = e.entity_name.clone();
                d
            })
            .collect();
        let checked = (|| {
            if !allowed {
                return Err((
                    ResponseError::ClusterAuthorizationFailed,
                    "changing quotas needs ALTER_CONFIGS on the cluster".to_string(),
                ));
            }
            let mut entity = BTreeMap::new();
            for e in &entry.entity {
                if entity
                    .insert(
                        e.entity_type.to_string(),
                        e.entity_name.as_ref().map(|n| n.to_string()),
                    )
                    .is_some()
                {
                    return Err((
                        ResponseError::InvalidRequest,
                        format!("entity type {} is named twice", e.entity_type.as_str()),
                    ));
                }
            }
            let entity = QuotaEntity(entity);
            entity
                .validate()
                .map_err(|e| (ResponseError::InvalidRequest, e.to_string()))?;
            let mut mine = Vec::new();
            for op in &entry.ops {
                if op.remove {
                    let kind = quota::QuotaType::parse(op.key.as_str()).ok_or_else(|| {
                        (
                            ResponseError::InvalidRequest,
                            format!("quota `{}` is unknown", op.key.as_str()),
                        )
                    })?;
                    mine.push((entity.clone(), kind, None));
                } else {
                    let kind = quota::validate_value(op.key.as_str(), op.value)
                        .and_then(|kind| entity.check_kind(kind).map(|()| kind))
                        .map_err(|e| (ResponseError::InvalidRequest, e.to_string()))?;
                    mine.push((entity.clone(), kind, Some(QuotaValue(op.value))));
                }
            }
            Ok(mine)
        })();
        match checked {
            Ok(mine) => {
                changes.extend(mine);
                results.push((echoed, Ok(())));
            }
            Err(e) => results.push((echoed, Err(e))),
        }
    }
    let stored = if request.validate_only || changes.is_empty() {
        Ok(())
    } else {
        ctx.broker.alter_quotas(changes).await
    };
    response.entries = results
        .into_iter()
        .map(|(entity, result)| {
            let mut e = AlteredEntry::default();
            e.entity = entity;
            let failure = match (result, &stored) {
                (Err(e), _) => Some(e),
                (Ok(()), Err(err)) => Some((ResponseError::RequestTimedOut, err.to_string())),
                (Ok(()), Ok(())) => None,
            };
            if let Some((error, message)) = failure {
                e.error_code = error.code();
                e.error_message = Some(kstr(message));
            }
            e
        })
        .collect();
    response
}
