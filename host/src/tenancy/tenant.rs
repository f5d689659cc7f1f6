//! Tenants: a namespace (a prefix of topic, group and transactional-id names), the
//! principals that act for it, and its limits.
//!
//! Creating a tenant grants its principals ALL on the three prefixed resource types, so
//! with the authorizer on a tenant sees and touches only its own namespace. The limits
//! on the namespace's shape — partitions, retention — are checked by the controller
//! when it applies a topic change ([`check_topic`]), so two concurrent requests cannot
//! exceed them together; stored bytes and connections are checked by the broker that
//! serves the request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::acl::{AclBinding, Operation, PatternType, Permission, ResourceType, WILDCARD};
use super::Principal;

/// A tenant's limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Partitions of all the tenant's topics together.
    #[serde(default)]
    pub max_partitions: Option<i64>,
    /// Longest `retention.ms` a topic may have (also the default for its topics).
    #[serde(default)]
    pub max_retention_ms: Option<i64>,
    /// Largest `retention.bytes` (per partition) a topic may have (also the default).
    #[serde(default)]
    pub max_retention_bytes: Option<i64>,
    /// Bytes the tenant's partitions may hold; produce is refused beyond it.
    #[serde(default)]
    pub max_stored_bytes: Option<i64>,
    /// Authenticated connections of the tenant's principals, per broker.
    #[serde(default)]
    pub max_connections: Option<u32>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// The prefix of every topic, group and transactional id it owns (`acme.`).
    pub prefix: String,
    /// Who acts for it (`User:acme-app`, `User:CN=acme`).
    pub principals: Vec<String>,
    /// Its limits.
    pub limits: TenantLimits,
}

/// Why a tenant or a change to its namespace is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// The tenant itself is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A change would break a limit; the message names it.
    #[error("{0}")]
    Limit(String),
}

impl Tenant {
    /// Checks the tenant on its own: a name, a prefix, principals of the form
    /// `Type:name`, limits that are not negative.
    pub fn validate(&self) -> Result<(), TenantError> {
        let invalid = |m: String| Err(TenantError::Invalid(m));
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return invalid(format!(
                "tenant name `{}` must be ASCII letters, digits, '.', '_' or '-'",
                self.name
            ));
        }
        if self.prefix.is_empty() || self.prefix == WILDCARD || self.prefix.starts_with("__") {
            return invalid(format!(
                "prefix `{}` must be non-empty, not `*` and not start with `__` (internal topics)",
                self.prefix
            ));
        }
        for p in &self.principals {
            if Principal::parse(p).is_none() {
                return invalid(format!("principal `{p}` is not of the form User:<name>"));
            }
        }
        let l = &self.limits;
        for (what, v) in [
            ("max_partitions", l.max_partitions),
            ("max_retention_ms", l.max_retention_ms),
            ("max_retention_bytes", l.max_retention_bytes),
            ("max_stored_bytes", l.max_stored_bytes),
        ] {
            if v.is_some_and(|v| v < 0) {
                return invalid(format!("{what} must be >= 0"));
            }
        }
        Ok(())
    }

    /// Checks the tenant against the others: prefixes may not nest (a topic would
    /// belong to two tenants) and a principal acts for one tenant only.
    pub fn check_against(&self, others: &BTreeMap<String, Tenant>) -> Result<(), TenantError> {
        for other in others.values().filter(|o| o.name != self.name) {
            if other.prefix.starts_with(&self.prefix) || self.prefix.starts_with(&other.prefix) {
                return Err(TenantError::Invalid(format!(
                    "prefix `{}` overlaps tenant {}'s prefix `{}`",
                    self.prefix, other.name, other.prefix
                )));
            }
            if let Some(p) = self
                .principals
                .iter()
                .find(|p| other.principals.contains(p))
            {
                return Err(TenantError::Invalid(format!(
                    "principal {p} already acts for tenant {}",
                    other.name
                )));
            }
        }
        Ok(())
    }

    /// The ACLs the tenant's principals get: ALL on its prefix for topics, groups and
    /// transactional ids.
    pub fn acls(&self) -> Vec<AclBinding> {
        let mut acls = Vec::new();
        for principal in &self.principals {
            for resource_type in [
                ResourceType::Topic,
                ResourceType::Group,
                ResourceType::TransactionalId,
            ] {
                acls.push(AclBinding {
                    resource_type,
                    name: self.prefix.clone(),
                    pattern: PatternType::Prefixed,
                    principal: principal.clone(),
                    host: WILDCARD.into(),
                    operation: Operation::All,
                    permission: Permission::Allow,
                });
            }
        }
        acls
    }

    /// Whether `name` (a topic, group or transactional id) is in the namespace.
    pub fn owns(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }
}

/// The tenant whose namespace holds `name`.
pub fn owner<'a>(tenants: &'a BTreeMap<String, Tenant>, name: &str) -> Option<&'a Tenant> {
    tenants.values().find(|t| t.owns(name))
}

/// The tenant `principal` acts for.
pub fn of_principal<'a>(
    tenants: &'a BTreeMap<String, Tenant>,
    principal: &Principal,
) -> Option<&'a Tenant> {
    tenants
        .values()
        .find(|t| t.principals.iter().any(|p| p == principal.as_str()))
}

/// Checks a topic change against the limits of the tenant owning `topic`: the topic
/// will have `partitions` partitions (`other_partitions` is what the tenant's other
/// topics have) and the config overrides `configs`.
pub fn check_topic(
    tenant: &Tenant,
    topic: &str,
    partitions: i64,
    other_partitions: i64,
    configs: &BTreeMap<String, String>,
) -> Result<(), TenantError> {
    let limits = &tenant.limits;
    if let Some(max) = limits.max_partitions {
        if other_partitions + partitions > max {
            return Err(TenantError::Limit(format!(
                "tenant {} may have at most {max} partitions (max_partitions); its other topics have {other_partitions} and '{topic}' would have {partitions}",
                tenant.name
            )));
        }
    }
    for (key, max, limit) in [
        ("retention.ms", limits.max_retention_ms, "max_retention_ms"),
        (
            "retention.bytes",
            limits.max_retention_bytes,
            "max_retention_bytes",
        ),
    ] {
        let Some(max) = max else { continue };
        let value = configs.get(key).and_then(|v| v.trim().parse::<i64>().ok());
        match value {
            Some(v) if (0..=max).contains(&v) => {}
            Some(v) => {
                return Err(TenantError::Limit(format!(
                    "tenant {} allows {key} up to {max} ({limit}); '{topic}' asks for {v}{}",
                    tenant.name,
                    if v < 0 { " (unlimited)" } else { "" }
                )))
            }
            None => {
                return Err(TenantError::Limit(format!(
                    "tenant {} allows {key} up to {max} ({limit}); '{topic}' must set it",
                    tenant.name
                )))
            }
        }
    }
    Ok(())
}

/// The config overrides a new or changed topic of `tenant` gets: `configs` plus the
/// tenant's retention limits as `retention.ms` / `retention.bytes` where the topic sets
/// none (a broker default may be longer than the tenant is allowed).
pub fn with_defaults(
    tenant: &Tenant,
    mut configs: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    for (key, max) in [
        ("retention.ms", tenant.limits.max_retention_ms),
        ("retention.bytes", tenant.limits.max_retention_bytes),
    ] {
        if let Some(max) = max {
            configs
                .entry(key.to_string())
                .or_insert_with(|| max.to_string());
        }
    }
    configs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Tenant {
        Tenant {
            name: "acme".into(),
            prefix: "acme.".into(),
            principals: vec!["User:acme-app".into()],
            limits: TenantLimits {
                max_partitions: Some(10),
                max_retention_ms: Some(86_400_000),
                ..Default::default()
            },
        }
    }

    #[test]
    fn limits_name_what_was_exceeded() {
        let t = acme();
        let configs = with_defaults(&t, BTreeMap::new());
        assert_eq!(configs["retention.ms"], "86400000");
        check_topic(&t, "acme.a", 4, 6, &configs).unwrap();
        let err = check_topic(&t, "acme.a", 5, 6, &configs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_partitions") && err.contains("at most 10"),
            "{err}"
        );
        let mut long = configs.clone();
        long.insert("retention.ms".into(), "-1".into());
        let err = check_topic(&t, "acme.a", 1, 0, &long)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_retention_ms") && err.contains("unlimited"),
            "{err}"
        );
    }

    #[test]
    fn prefixes_may_not_nest_and_principals_belong_to_one_tenant() {
        let mut others = BTreeMap::new();
        others.insert("acme".to_string(), acme());
        let mut nested = acme();
        nested.name = "acme-eu".into();
        nested.prefix = "acme.eu.".into();
        nested.principals = vec!["User:eu".into()];
        assert!(nested
            .check_against(&others)
            .unwrap_err()
            .to_string()
            .contains("overlaps"));
        let mut shared = acme();
        shared.name = "globex".into();
        shared.prefix = "globex.".into();
        assert!(shared
            .check_against(&others)
            .unwrap_err()
            .to_string()
            .contains("already acts"));
    }

    #[test]
    fn a_tenant_gets_all_on_its_prefix() {
        let acls = acme().acls();
        assert_eq!(acls.len(), 3);
        assert!(acls
            .iter()
            .all(|a| a.pattern == PatternType::Prefixed && a.name == "acme."));
    }

    #[test]
    fn bad_tenants_are_refused() {
        let mut t = acme();
        t.prefix = "__".into();
        assert!(t.validate().is_err());
        let mut t = acme();
        t.principals = vec!["acme".into()];
        assert!(t.validate().is_err());
    }
}
