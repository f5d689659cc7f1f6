//! Kafka's ACL model: bindings of (resource pattern, principal, host, operation,
//! permission), the filters that describe and delete them, and the decision whether a
//! principal may do an operation on a resource.
//!
//! The decision follows Apache Kafka's authorizer so that tools and habits carry over:
//! super users may do everything; otherwise a matching DENY wins over any ALLOW; ALLOW
//! of READ, WRITE, DELETE or ALTER also allows DESCRIBE, and ALLOW of ALTER_CONFIGS also
//! allows DESCRIBE_CONFIGS; ALL matches every operation; a literal `*` name matches
//! every resource of its type, a prefixed pattern every name that starts with it; the
//! principal `User:*` and the host `*` match everyone. Nothing matching means deny.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Principal;

/// What an ACL protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster (its name is always `kafka-cluster`).
    Cluster,
    /// A transactional id.
    TransactionalId,
}

/// The only name a cluster resource has.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The literal name that matches every resource of a type.
pub const WILDCARD: &str = "*";

impl ResourceType {
    /// Every resource type.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
    ];

    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    /// The type with Kafka's wire code `code`.
    pub fn from_code(code: i8) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The name in CLI and JSON form.
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
            ResourceType::TransactionalId => "transactional_id",
        }
    }
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    /// The exact name (or `*`, every name).
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

impl PatternType {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    /// The type with Kafka's wire code `code`.
    pub fn from_code(code: i8) -> Option<PatternType> {
        match code {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

/// An operation on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Every operation.
    All,
    /// Consume, join a group, commit offsets.
    Read,
    /// Produce.
    Write,
    /// Create topics.
    Create,
    /// Delete topics, records, groups.
    Delete,
    /// Add partitions, change ACLs and credentials (on the cluster).
    Alter,
    /// See that a resource exists and its metadata.
    Describe,
    /// Broker-to-broker requests.
    ClusterAction,
    /// Read configs.
    DescribeConfigs,
    /// Change configs.
    AlterConfigs,
    /// Produce idempotently (on the cluster).
    IdempotentWrite,
}

impl Operation {
    /// Every operation, in Kafka's code order.
    pub const ALL: [Operation; 11] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        Operation::ALL.iter().position(|o| *o == self).unwrap_or(0) as i8 + 2
    }

    /// The operation with Kafka's wire code `code`.
    pub fn from_code(code: i8) -> Option<Operation> {
        usize::try_from(code - 2)
            .ok()
            .and_then(|i| Operation::ALL.get(i).copied())
    }

    /// The name in CLI and JSON form (`describe_configs`).
    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "all",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Describe => "describe",
            Operation::ClusterAction => "cluster_action",
            Operation::DescribeConfigs => "describe_configs",
            Operation::AlterConfigs => "alter_configs",
            Operation::IdempotentWrite => "idempotent_write",
        }
    }

    /// The operation named `name`, in CLI form or Kafka's (`DescribeConfigs`,
    /// `DESCRIBE_CONFIGS`).
    pub fn parse(name: &str) -> Option<Operation> {
        let wanted: String = name
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        Operation::ALL
            .into_iter()
            .find(|o| o.name().replace('_', "") == wanted)
    }

    /// Whether an ACL for `self` grants `wanted` (ALLOW side: implications apply).
    fn allows(self, wanted: Operation) -> bool {
        self == Operation::All
            || self == wanted
            || (wanted == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (wanted == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// A DENY wins over every ALLOW.
    Deny,
    /// Grants the operation.
    Allow,
}

impl Permission {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    /// The permission with Kafka's wire code `code`.
    pub fn from_code(code: i8) -> Option<Permission> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// What it protects.
    pub resource_type: ResourceType,
    /// The resource name or prefix (`*` literal: every resource of the type).
    pub name: String,
    /// How the name matches.
    pub pattern: PatternType,
    /// Who: `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// From where: an IP address, or `*`.
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

/// Why an ACL or a filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The principal is not `Type:name`.
    #[error("principal `{0}` is not of the form User:<name>")]
    Principal(String),
    /// The host is neither `*` nor an IP address.
    #[error("host `{0}` is neither `*` nor an IP address")]
    Host(String),
    /// A resource name that cannot be used.
    #[error("{0}")]
    Resource(String),
}

impl AclBinding {
    /// Checks that the binding can be stored: a `Type:name` principal, a `*` or IP
    /// host, a non-empty name (`kafka-cluster` for the cluster).
    pub fn validate(&self) -> Result<(), AclError> {
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return Err(AclError::Principal(self.principal.clone())),
        }
        if self.host != WILDCARD && self.host.parse::<IpAddr>().is_err() {
            return Err(AclError::Host(self.host.clone()));
        }
        if self.name.is_empty() {
            return Err(AclError::Resource("the resource name is empty".into()));
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(AclError::Resource(format!(
                "the cluster resource is named `{CLUSTER_NAME}`, not `{}`",
                self.name
            )));
        }
        if self.pattern == PatternType::Prefixed && self.name == WILDCARD {
            return Err(AclError::Resource(
                "a prefixed pattern of `*` matches nothing; use a literal `*`".into(),
            ));
        }
        Ok(())
    }

    /// Whether this binding's resource pattern covers the resource `name`.
    fn covers(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.name == WILDCARD || self.name == name,
            PatternType::Prefixed => name.starts_with(self.name.as_str()),
        }
    }

    fn applies_to(&self, principal: &Principal, host: Option<IpAddr>) -> bool {
        let principal_matches = self.principal == principal.as_str()
            || self
                .principal
                .split_once(':')
                .is_some_and(|(kind, name)| name == WILDCARD && kind == principal.kind());
        let host_matches = self.host == WILDCARD
            || host.is_some_and(|h| self.host.parse::<IpAddr>().is_ok_and(|a| a == h));
        principal_matches && host_matches
    }
}

/// How a filter matches resource patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternFilter {
    /// Every pattern type.
    Any,
    /// Patterns that would apply to the filter's name (literal, `*`, or a prefix of it).
    Match,
    /// Literal patterns only.
    Literal,
    /// Prefixed patterns only.
    Prefixed,
}

impl PatternFilter {
    /// The filter with Kafka's wire code `code`.
    pub fn from_code(code: i8) -> Option<PatternFilter> {
        match code {
            1 => Some(PatternFilter::Any),
            2 => Some(PatternFilter::Match),
            3 => Some(PatternFilter::Literal),
            4 => Some(PatternFilter::Prefixed),
            _ => None,
        }
    }
}

/// Which ACLs a describe or delete selects; `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    /// Resource type.
    pub resource_type: Option<ResourceType>,
    /// Resource name (for `Match`, the resource the ACLs would apply to).
    pub name: Option<String>,
    /// Pattern type.
    pub pattern: PatternFilter,
    /// Principal.
    pub principal: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Operation (`All` here matches only ACLs for ALL, as in Kafka; `None` is any).
    pub operation: Option<Operation>,
    /// Permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// A filter that selects every ACL.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: None,
            name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Whether `acl` is selected.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        let resource = self.resource_type.is_none_or(|t| t == acl.resource_type);
        let pattern = match (self.pattern, &self.name) {
            (PatternFilter::Any, None) => true,
            (PatternFilter::Any, Some(name)) => &acl.name == name,
            (PatternFilter::Literal, name) => {
                acl.pattern == PatternType::Literal && name.as_ref().is_none_or(|n| &acl.name == n)
            }
            (PatternFilter::Prefixed, name) => {
                acl.pattern == PatternType::Prefixed && name.as_ref().is_none_or(|n| &acl.name == n)
            }
            (PatternFilter::Match, None) => true,
            (PatternFilter::Match, Some(name)) => acl.covers(name),
        };
        resource
            && pattern
            && self.principal.as_ref().is_none_or(|p| p == &acl.principal)
            && self.host.as_ref().is_none_or(|h| h == &acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

/// The cluster's ACLs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acls {
    bindings: BTreeSet<AclBinding>,
}

impl Acls {
    /// Adds `acl` (adding one that exists changes nothing).
    pub fn add(&mut self, acl: AclBinding) {
        self.bindings.insert(acl);
    }

    /// Removes exactly `acl`, if present.
    pub fn remove_exact(&mut self, acl: &AclBinding) -> bool {
        self.bindings.remove(acl)
    }

    /// Removes and returns every ACL `filter` selects.
    pub fn remove(&mut self, filter: &AclFilter) -> Vec<AclBinding> {
        let removed: Vec<AclBinding> = self
            .bindings
            .iter()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect();
        for acl in &removed {
            self.bindings.remove(acl);
        }
        removed
    }

    /// Every ACL `filter` selects.
    pub fn select<'a>(&'a self, filter: &'a AclFilter) -> impl Iterator<Item = &'a AclBinding> {
        self.bindings.iter().filter(move |a| filter.matches(a))
    }

    /// Every ACL.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.bindings.iter()
    }

    /// How many ACLs there are.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Whether `principal` connecting from `host` may do `operation` on the resource
    /// (`resource_type`, `name`) by these ACLs alone (super users are the caller's
    /// concern).
    pub fn allows(
        &self,
        principal: &Principal,
        host: Option<IpAddr>,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let mut allowed = false;
        for acl in self.bindings.iter() {
            if acl.resource_type != resource_type
                || !acl.covers(name)
                || !acl.applies_to(principal, host)
            {
                continue;
            }
            match acl.permission {
                // DENY applies to the operation itself (or ALL), not by implication.
                Permission::Deny
                    if acl.operation == operation || acl.operation == Operation::All =>
                {
                    return false
                }
                Permission::Deny => {}
                Permission::Allow => allowed |= acl.operation.allows(operation),
            }
        }
        allowed
    }

    /// Whether `principal` may do `operation` on some resource of `resource_type`
    /// (Kafka's check for an idempotent producer: WRITE on any topic).
    pub fn allows_any(
        &self,
        principal: &Principal,
        host: Option<IpAddr>,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        self.bindings.iter().any(|acl| {
            acl.resource_type == resource_type
                && acl.permission == Permission::Allow
                && acl.operation.allows(operation)
                && acl.applies_to(principal, host)
                // A resource that the ALLOW covers must not be denied outright; a
                // literal DENY of the same pattern cancels it.
                && !self.bindings.iter().any(|deny| {
                    deny.permission == Permission::Deny
                        && deny.resource_type == resource_type
                        && (deny.operation == operation || deny.operation == Operation::All)
                        && deny.applies_to(principal, host)
                        && deny.pattern == acl.pattern
                        && deny.name == acl.name
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        resource_type: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    fn alice() -> Principal {
        Principal::user("alice")
    }

    #[test]
    fn nothing_matching_is_denied() {
        let acls = Acls::default();
        assert!(!acls.allows(&alice(), None, Operation::Read, ResourceType::Topic, "t"));
    }

    #[test]
    fn prefixed_literal_and_wildcard_patterns() {
        let mut acls = Acls::default();
        acls.add(acl(
            ResourceType::Topic,
            "acme.",
            PatternType::Prefixed,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        ));
        acls.add(acl(
            ResourceType::Topic,
            "shared",
            PatternType::Literal,
            "User:alice",
            Operation::Write,
            Permission::Allow,
        ));
        acls.add(acl(
            ResourceType::Group,
            "*",
            PatternType::Literal,
            "User:*",
            Operation::Read,
            Permission::Allow,
        ));
        let p = alice();
        assert!(acls.allows(
            &p,
            None,
            Operation::Read,
            ResourceType::Topic,
            "acme.orders"
        ));
        assert!(!acls.allows(&p, None, Operation::Read, ResourceType::Topic, "acm"));
        assert!(!acls.allows(
            &p,
            None,
            Operation::Read,
            ResourceType::Topic,
            "globex.orders"
        ));
        assert!(acls.allows(&p, None, Operation::Write, ResourceType::Topic, "shared"));
        assert!(!acls.allows(&p, None, Operation::Write, ResourceType::Topic, "shared2"));
        assert!(acls.allows(
            &Principal::user("bob"),
            None,
            Operation::Read,
            ResourceType::Group,
            "g"
        ));
        // The type matters: a topic ACL says nothing about another resource of that name.
        assert!(!acls.allows(
            &p,
            None,
            Operation::Read,
            ResourceType::TransactionalId,
            "acme.x"
        ));
    }

    #[test]
    fn implied_operations_follow_kafka() {
        let mut acls = Acls::default();
        acls.add(acl(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:alice",
            Operation::Write,
            Permission::Allow,
        ));
        acls.add(acl(
            ResourceType::Topic,
            "c",
            PatternType::Literal,
            "User:alice",
            Operation::AlterConfigs,
            Permission::Allow,
        ));
        let p = alice();
        assert!(acls.allows(&p, None, Operation::Describe, ResourceType::Topic, "t"));
        assert!(!acls.allows(&p, None, Operation::Read, ResourceType::Topic, "t"));
        assert!(acls.allows(
            &p,
            None,
            Operation::DescribeConfigs,
            ResourceType::Topic,
            "c"
        ));
        assert!(!acls.allows(&p, None, Operation::Describe, ResourceType::Topic, "c"));
    }

    #[test]
    fn deny_beats_allow_and_all() {
        let mut acls = Acls::default();
        acls.add(acl(
            ResourceType::Topic,
            "acme.",
            PatternType::Prefixed,
            "User:alice",
            Operation::All,
            Permission::Allow,
        ));
        acls.add(acl(
            ResourceType::Topic,
            "acme.secret",
            PatternType::Literal,
            "User:alice",
            Operation::Write,
            Permission::Deny,
        ));
        let p = alice();
        assert!(acls.allows(
            &p,
            None,
            Operation::Write,
            ResourceType::Topic,
            "acme.orders"
        ));
        assert!(!acls.allows(
            &p,
            None,
            Operation::Write,
            ResourceType::Topic,
            "acme.secret"
        ));
        assert!(acls.allows(
            &p,
            None,
            Operation::Read,
            ResourceType::Topic,
            "acme.secret"
        ));
        acls.add(acl(
            ResourceType::Topic,
            "*",
            PatternType::Literal,
            "User:*",
            Operation::All,
            Permission::Deny,
        ));
        assert!(!acls.allows(
            &p,
            None,
            Operation::Read,
            ResourceType::Topic,
            "acme.orders"
        ));
    }

    #[test]
    fn hosts_restrict_where_from() {
        let mut acls = Acls::default();
        let mut a = acl(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        );
        a.host = "10.0.0.1".into();
        acls.add(a);
        let p = alice();
        assert!(acls.allows(
            &p,
            "10.0.0.1".parse().ok(),
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        assert!(!acls.allows(
            &p,
            "127.0.0.1".parse().ok(),
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
    }

    #[test]
    fn filters_select_as_kafka_does() {
        let mut acls = Acls::default();
        acls.add(acl(
            ResourceType::Topic,
            "acme.",
            PatternType::Prefixed,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        ));
        acls.add(acl(
            ResourceType::Topic,
            "acme.orders",
            PatternType::Literal,
            "User:bob",
            Operation::Read,
            Permission::Allow,
        ));
        acls.add(acl(
            ResourceType::Group,
            "g",
            PatternType::Literal,
            "User:bob",
            Operation::Read,
            Permission::Allow,
        ));
        let mut f = AclFilter::any();
        assert_eq!(acls.select(&f).count(), 3);
        f.pattern = PatternFilter::Match;
        f.name = Some("acme.orders".into());
        f.resource_type = Some(ResourceType::Topic);
        assert_eq!(acls.select(&f).count(), 2);
        f.pattern = PatternFilter::Literal;
        assert_eq!(acls.select(&f).count(), 1);
        let mut by_principal = AclFilter::any();
        by_principal.principal = Some("User:bob".into());
        assert_eq!(acls.remove(&by_principal).len(), 2);
        assert_eq!(acls.len(), 1);
    }

    #[test]
    fn codes_round_trip() {
        for o in Operation::ALL {
            assert_eq!(Operation::from_code(o.code()), Some(o));
            assert_eq!(Operation::parse(o.name()), Some(o));
        }
        assert_eq!(Operation::Read.code(), 3);
        assert_eq!(Operation::IdempotentWrite.code(), 12);
        assert_eq!(
            Operation::parse("DescribeConfigs"),
            Some(Operation::DescribeConfigs)
        );
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_code(t.code()), Some(t));
        }
    }

    #[test]
    fn invalid_bindings_are_refused_with_the_reason() {
        let mut a = acl(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "alice",
            Operation::Read,
            Permission::Allow,
        );
        assert_eq!(a.validate(), Err(AclError::Principal("alice".into())));
        a.principal = "User:alice".into();
        a.host = "somewhere".into();
        assert_eq!(a.validate(), Err(AclError::Host("somewhere".into())));
        a.host = "*".into();
        a.resource_type = ResourceType::Cluster;
        assert!(matches!(a.validate(), Err(AclError::Resource(_))));
    }
}
