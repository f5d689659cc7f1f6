//! CreateAcls, DescribeAcls and DeleteAcls: Kafka's ACL administration. Changing ACLs
//! needs ALTER on the cluster, reading them DESCRIBE; the ACLs themselves live in the
//! controller's metadata ([`crate::tenancy::acl`]).
//!
//! ACLs may be stored while `security.authorizer` is off, so an operator can prepare
//! them before turning enforcement on.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{kstr, Context};
use crate::controller::{ControllerError, StateError};
use crate::tenancy::acl::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
};

/// Kafka's code for ANY in resource type, operation and permission filters.
const ANY: i8 = 1;

/// The error and message for a controller failure.
fn controller_failure(e: &ControllerError) -> (ResponseError, String) {
    match e {
        ControllerError::Rejected(StateError::InvalidAcl(reason)) => {
            (ResponseError::InvalidRequest, reason.clone())
        }
        other => (ResponseError::RequestTimedOut, other.to_string()),
    }
}

/// One creation as an ACL, or why it cannot be one.
fn binding(creation: &AclCreation) -> Result<AclBinding, String> {
    let acl = AclBinding {
        resource_type: ResourceType::from_code(creation.resource_type).ok_or_else(|| {
            format!(
                "resource type {} is not one of topic, group, cluster, transactional id",
                creation.resource_type
            )
        })?,
        name: creation.resource_name.to_string(),
        pattern: PatternType::from_code(creation.resource_pattern_type).ok_or_else(|| {
            format!(
                "pattern type {} is neither LITERAL nor PREFIXED",
                creation.resource_pattern_type
            )
        })?,
        principal: creation.principal.to_string(),
        host: creation.host.to_string(),
        operation: Operation::from_code(creation.operation).ok_or_else(|| {
            format!(
                "operation {} is not a concrete operation",
                creation.operation
            )
        })?,
        permission: Permission::from_code(creation.permission_type).ok_or_else(|| {
            format!(
                "permission {} is neither ALLOW nor DENY",
                creation.permission_type
            )
        })?,
    };
    acl.validate().map_err(|e| e.to_string())?;
    Ok(acl)
}

/// Handles CreateAcls.
pub async fn create(
    ctx: &Context<'_>,
    request: CreateAclsRequest,
    _version: i16,
) -> CreateAclsResponse {
    let mut response = CreateAclsResponse::default();
    let result = |error: ResponseError, message: String| {
        let mut r = AclCreationResult::default();
        r.error_code = error.code();
        r.error_message = Some(kstr(message));
        r
    };
    if !ctx.cluster_allowed(Operation::Alter) {
        response.results = request
            .creations
            .iter()
            .map(|_| {
                result(
                    ResponseError::ClusterAuthorizationFailed,
                    "creating ACLs needs ALTER on the cluster".into(),
                )
            })
            .collect();
        return response;
    }
    let checked: Vec<Result<AclBinding, String>> = request.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let stored = if valid.is_empty() {
        Ok(())
    } else {
        ctx.broker.create_acls(valid).await
    };
    response.results = checked
        .into_iter()
        .map(|c| match (c, &stored) {
            (Err(reason), _) => result(ResponseError::InvalidRequest, reason),
            (Ok(_), Err(e)) => {
                let (error, message) = controller_failure(e);
                result(error, message)
            }
            (Ok(_), Ok(())) => AclCreationResult::default(),
        })
        .collect();
    response
}

/// A filter from Kafka's filter fields, or why it is invalid.
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    Ok(AclFilter {
        resource_type: match resource_type {
            ANY => None,
            code => Some(
                ResourceType::from_code(code)
                    .ok_or_else(|| format!("resource type filter {code} is not valid"))?,
            ),
        },
        name: name.map(|n| n.to_string()),
        pattern: PatternFilter::from_code(pattern)
            .ok_or_else(|| format!("pattern type filter {pattern} is not valid"))?,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: match operation {
            ANY => None,
            code => Some(
                Operation::from_code(code)
                    .ok_or_else(|| format!("operation filter {code} is not valid"))?,
            ),
        },
        permission: match permission {
            ANY => None,
            code => Some(
                Permission::from_code(code)
                    .ok_or_else(|| format!("permission filter {code} is not valid"))?,
            ),
        },
    })
}

/// Handles DescribeAcls.
pub fn describe(
    ctx: &Context<'_>,
    request: DescribeAclsRequest,
    _version: i16,
) -> DescribeAclsResponse {
    let mut response = DescribeAclsResponse::default();
    if !ctx.cluster_allowed(Operation::Describe) {
        response.error_code = ResponseError::ClusterAuthorizationFailed.code();
        response.error_message = Some(kstr("describing ACLs needs DESCRIBE on the cluster"));
        return response;
    }
    let filter = match filter(
        request.resource_type_filter,
        request.resource_name_filter.as_ref(),
        request.pattern_type_filter,
        request.principal_filter.as_ref(),
        request.host_filter.as_ref(),
        request.operation,
        request.permission_type,
    ) {
        Ok(f) => f,
        Err(reason) => {
            response.error_code = ResponseError::InvalidRequest.code();
            response.error_message = Some(kstr(reason));
            return response;
        }
    };
    let metadata = ctx.broker.metadata();
    let mut by_resource: BTreeMap<(ResourceType, String, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for acl in metadata.acls.select(&filter) {
        let mut d = AclDescription::default();
        d.principal = kstr(acl.principal.clone());
        d.host = kstr(acl.host.clone());
        d.operation = acl.operation.code();
        d.permission_type = acl.permission.code();
        by_resource
            .entry((acl.resource_type, acl.name.clone(), acl.pattern))
            .or_default()
            .push(d);
    }
    response.resources = by_resource
        .into_iter()
        .map(|((resource_type, name, pattern), acls)| {
            let mut r = DescribeAclsResource::default();
            r.resource_type = resource_type.code();
            r.resource_name = kstr(name);
            r.pattern_type = pattern.code();
            r.acls = acls;
            r
        })
        .collect();
    response
}

/// Handles DeleteAcls.
pub async fn delete(
    ctx: &Context<'_>,
    request: DeleteAclsRequest,
    _version: i16,
) -> DeleteAclsResponse {
    let mut response = DeleteAclsResponse::default();
    let failed = |error: ResponseError, message: String| {
        let mut r = DeleteAclsFilterResult::default();
        r.error_code = error.code();
        r.error_message = Some(kstr(message));
        r
    };
    if !ctx.cluster_allowed(Operation::Alter) {
        response.filter_results = request
            .filters
            .iter()
            .map(|_| {
                failed(
                    ResponseError::ClusterAuthorizationFailed,
                    "deleting ACLs needs ALTER on the cluster".into(),
                )
            })
            .collect();
        return response;
    }
    let parsed: Vec<Result<AclFilter, String>> = request
        .filters
        .iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclFilter> = parsed.iter().filter_map(|f| f.clone().ok()).collect();
    let removed = if valid.is_empty() {
        Ok(Vec::new())
    } else {
        ctx.broker.delete_acls(valid).await
    };
    let mut removed_per_filter = match &removed {
        Ok(r) => r.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    response.filter_results = parsed
        .into_iter()
        .map(|f| match (f, &removed) {
            (Err(reason), _) => failed(ResponseError::InvalidRequest, reason),
            (Ok(_), Err(e)) => {
                let (error, message) = controller_failure(e);
                failed(error, message)
            }
            (Ok(_), Ok(_)) => {
                let mut r = DeleteAclsFilterResult::default();
                r.matching_acls = removed_per_filter
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|acl| {
                        let mut m = DeleteAclsMatchingAcl::default();
                        m.resource_type = acl.resource_type.code();
                        m.resource_name = kstr(acl.name);
                        m.pattern_type = acl.pattern.code();
                        m.principal = kstr(acl.principal);
                        m.host = kstr(acl.host);
                        m.operation = acl.operation.code();
                        m.permission_type = acl.permission.code();
                        m
                    })
                    .collect();
                r
            }
        })
        .collect();
    response
}
