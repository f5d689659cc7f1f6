//! `tiers`: quota limits by service tier (gold, silver, bronze, ...), one budget per
//! tenant.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `tier.<TIER>.producer_byte_rate` | bytes per second a key of tier `TIER` may produce |
//! | `tier.<TIER>.consumer_byte_rate` | bytes per second it may fetch |
//! | `tier.<TIER>.request_percentage` | percent of one request thread's time it may use (`50` is half a thread) |
//! | `tier.<TIER>.controller_mutation_rate` | partitions it may create or delete per second |
//! | `tenant.<TENANT>` | the tier of every client of tenant `TENANT` |
//! | `user.<USER>` | the tier of principal `User:<USER>` when it belongs to no tenant |
//! | `default` | optional: the tier of clients given none above (see "Fail closed") |
//!
//! Tier names are free (`gold`, `free-trial`, ...). A tier is defined by giving it at least
//! one limit, and at least one tier must be defined; a limit a tier leaves out is
//! unlimited for it. Every value must be a positive number (`4000000`, `4e6`); byte
//! rates are whole bytes per second, so they are rounded to the nearest byte and a rate
//! below one byte per second is refused. Unknown keys, tiers assigned but not defined,
//! and values that are not positive numbers refuse the deploy, naming the key and value.
//!
//! Quota keys: a client of a tenant is metered under `tenant:<TENANT>`, so all of a
//! tenant's clients share one budget whatever their principal; any other client under
//! `user:<USER>`, its principal without the `User:` prefix (`user:ANONYMOUS` without
//! authentication). `user.<USER>` therefore applies only to principals outside tenants.
//!
//! Fail closed: a client with no tier of its own gets the `default` tier; without
//! `default` it gets the strictest limit of each type that any tier sets (with gold at
//! 10 MB/s produce and bronze at 1 MB/s produce and 2 MB/s fetch: 1 MB/s and 2 MB/s),
//! never "unlimited" because an assignment was forgotten.
//!
//! Limits never move with usage (`rebalance` changes nothing). To change them, redeploy
//! with a new configuration: the broker asks every key again after a redeploy.

use quiver_plugin_sdk::prelude::*;
use quiver_plugin_sdk::quota::{byte_rate, positive};
use std::collections::{BTreeMap, HashMap};

/// The configuration keys, as `ConfigError::Unknown` lists them.
const KNOWN: &str = "tier.<TIER>.producer_byte_rate, tier.<TIER>.consumer_byte_rate, \
                     tier.<TIER>.request_percentage, tier.<TIER>.controller_mutation_rate, \
                     tenant.<TENANT>, user.<USER>, default";

/// The quota policy and its parsed configuration: every assignment already resolved to
/// its tier's limits.
#[derive(Debug, Default)]
pub struct Tiers {
    /// Tenant name to its tier's limits.
    tenants: HashMap<String, Limits>,
    /// User name (principal without `User:`) to its tier's limits.
    users: HashMap<String, Limits>,
    /// The limits of every client with no tier of its own: `default`'s, or the
    /// strictest of each type.
    unassigned: Limits,
}

/// Sets the limit `field` of a tier from `value`.
fn set_limit(limits: &mut Limits, field: &str, key: &str, value: &str) -> Result<(), ConfigError> {
    match field {
        "producer_byte_rate" => limits.produce_bytes_per_second = Some(byte_rate(key, value)?),
        "consumer_byte_rate" => limits.fetch_bytes_per_second = Some(byte_rate(key, value)?),
        "request_percentage" => limits.request_percentage = Some(positive(key, value)?),
        "controller_mutation_rate" => {
            limits.controller_mutations_per_second = Some(positive(key, value)?)
        }
        _ => return Err(unknown(key)),
    }
    Ok(())
}

fn unknown(key: &str) -> ConfigError {
    ConfigError::Unknown {
        key: key.to_owned(),
        known: KNOWN.to_owned(),
    }
}

/// The smaller of two limits, `None` being unlimited.
fn stricter<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b < a { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The strictest limit of each type over `tiers`.
fn strictest<'a>(tiers: impl Iterator<Item = &'a Limits>) -> Limits {
    tiers.fold(Limits::default(), |acc, t| Limits {
        produce_bytes_per_second: stricter(
            acc.produce_bytes_per_second,
            t.produce_bytes_per_second,
        ),
        fetch_bytes_per_second: stricter(acc.fetch_bytes_per_second, t.fetch_bytes_per_second),
        request_percentage: stricter(acc.request_percentage, t.request_percentage),
        controller_mutations_per_second: stricter(
            acc.controller_mutations_per_second,
            t.controller_mutations_per_second,
        ),
    })
}

/// Which tier a name (a tenant, a user, or everyone else) is assigned.
enum Assigned {
    Tenant(String),
    User(String),
    Default,
}

impl QuotaPolicy for Tiers {
    fn init(&mut self, config: &Config) -> Result<()> {
        // Each distinct key once, with its last value (a repeated key's last value wins).
        let mut keys: Vec<&str> = Vec::new();
        for (key, _) in config.iter() {
            if !keys.contains(&key) && !key.starts_with("quiver.") {
                keys.push(key);
            }
        }
        let mut tiers: BTreeMap<String, Limits> = BTreeMap::new();
        let mut assignments: Vec<(Assigned, &str, &str)> = Vec::new(); // (who, key, tier)
        for key in keys {
            let value = config.get(key).unwrap_or_default();
            if let Some(rest) = key.strip_prefix("tier.") {
                let (tier, field) = rest
                    .rsplit_once('.')
                    .filter(|(tier, _)| !tier.is_empty())
                    .ok_or_else(|| unknown(key))?;
                set_limit(tiers.entry(tier.to_owned()).or_default(), field, key, value)?;
                continue;
            }
            let who = match key.split_once('.') {
                Some(("tenant", name)) if !name.is_empty() => Assigned::Tenant(name.to_owned()),
                Some(("user", name)) if !name.is_empty() => Assigned::User(name.to_owned()),
                None if key == "default" => Assigned::Default,
                _ => return Err(unknown(key).into()),
            };
            let tier = value.trim();
            if tier.is_empty() {
                return Err(ConfigError::invalid(key, value, "name a tier").into());
            }
            assignments.push((who, key, tier));
        }
        if tiers.is_empty() {
            return Err(PluginError::invalid_config(
                "no tier is defined: give at least one limit, e.g. \
                 `tier.gold.producer_byte_rate=10000000`",
            ));
        }
        self.unassigned = strictest(tiers.values());
        for (who, key, tier) in assignments {
            let Some(&limits) = tiers.get(tier) else {
                let defined: Vec<&str> = tiers.keys().map(String::as_str).collect();
                return Err(ConfigError::invalid(
                    key,
                    config.get(key).unwrap_or_default(),
                    format!(
                        "tier `{tier}` is not defined (defined tiers: {})",
                        defined.join(", ")
                    ),
                )
                .into());
            };
            match who {
                Assigned::Tenant(name) => {
                    self.tenants.insert(name, limits);
                }
                Assigned::User(name) => {
                    self.users.insert(name, limits);
                }
                Assigned::Default => self.unassigned = limits,
            }
        }
        Ok(())
    }

    fn quota_key(&mut self, client: &Client) -> Result<String> {
        Ok(client.tenant_or_user_key())
    }

    fn initial_limits(&mut self, key: &str) -> Result<Limits> {
        let assigned = if let Some(tenant) = key.strip_prefix("tenant:") {
            self.tenants.get(tenant)
        } else if let Some(user) = key.strip_prefix("user:") {
            self.users.get(user)
        } else {
            None
        };
        Ok(*assigned.unwrap_or(&self.unassigned))
    }
}

register_quota_policy!(Tiers);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::QuotaPolicyHarness;

    fn tiers(pairs: &[(&str, &str)]) -> QuotaPolicyHarness<Tiers> {
        QuotaPolicyHarness::init(pairs).unwrap()
    }

    fn client(principal: &str, tenant: Option<&str>) -> Client {
        Client {
            principal: principal.into(),
            tenant: tenant.map(Into::into),
            client_id: "app".into(),
            listener: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
        }
    }

    fn produce(bytes: u64) -> Limits {
        Limits {
            produce_bytes_per_second: Some(bytes),
            ..Limits::default()
        }
    }

    const GOLD_SILVER: &[(&str, &str)] = &[
        ("tier.gold.producer_byte_rate", "10000000"),
        ("tier.gold.consumer_byte_rate", "20000000"),
        ("tier.gold.request_percentage", "200"),
        ("tier.gold.controller_mutation_rate", "50"),
        ("tier.silver.producer_byte_rate", "4e6"),
        ("tier.silver.consumer_byte_rate", "8000000"),
        ("tenant.acme", "gold"),
        ("tenant.globex", "silver"),
        ("user.alice", "gold"),
        ("default", "silver"),
    ];

    #[test]
    fn a_tenants_clients_share_its_key_and_others_are_keyed_by_user() {
        let h = tiers(GOLD_SILVER);
        assert_eq!(
            h.quota_key(&client("User:acme-app", Some("acme"))).unwrap(),
            "tenant:acme"
        );
        assert_eq!(
            h.quota_key(&client("User:acme-batch", Some("acme")))
                .unwrap(),
            "tenant:acme"
        );
        // A user assignment does not take a tenant's client out of its tenant's budget.
        assert_eq!(
            h.quota_key(&client("User:alice", Some("globex"))).unwrap(),
            "tenant:globex"
        );
        assert_eq!(
            h.quota_key(&client("User:alice", None)).unwrap(),
            "user:alice"
        );
        assert_eq!(
            h.quota_key(&client("User:ANONYMOUS", None)).unwrap(),
            "user:ANONYMOUS"
        );
        // Not a `User:` principal: the whole principal names the key.
        assert_eq!(
            h.quota_key(&client("Service:etl", None)).unwrap(),
            "user:Service:etl"
        );
        assert_eq!(
            h.quota_key(&client("User:bob", Some(""))).unwrap(),
            "user:bob"
        );
    }

    #[test]
    fn each_key_gets_its_tiers_limits() {
        let h = tiers(GOLD_SILVER);
        let gold = Limits {
            produce_bytes_per_second: Some(10_000_000),
            fetch_bytes_per_second: Some(20_000_000),
            request_percentage: Some(200.0),
            controller_mutations_per_second: Some(50.0),
        };
        let silver = Limits {
            produce_bytes_per_second: Some(4_000_000),
            fetch_bytes_per_second: Some(8_000_000),
            ..Limits::default()
        };
        assert_eq!(h.initial_limits("tenant:acme").unwrap(), gold);
        assert_eq!(h.initial_limits("tenant:globex").unwrap(), silver);
        assert_eq!(h.initial_limits("user:alice").unwrap(), gold);
        // Neither assigned: the default tier.
        assert_eq!(h.initial_limits("user:bob").unwrap(), silver);
        assert_eq!(h.initial_limits("tenant:initech").unwrap(), silver);
        // `user.alice` names a user, not a tenant called alice.
        assert_eq!(h.initial_limits("tenant:alice").unwrap(), silver);
        // A key this policy never hands out (the host's shared fail-closed key).
        assert_eq!(h.initial_limits("undecided").unwrap(), silver);
    }

    #[test]
    fn without_a_default_unassigned_clients_get_the_strictest_limit_of_each_type() {
        let h = tiers(&[
            ("tier.gold.producer_byte_rate", "10000000"),
            ("tier.gold.request_percentage", "25"),
            ("tier.bronze.producer_byte_rate", "1000000"),
            ("tier.bronze.consumer_byte_rate", "2000000"),
            ("tier.bronze.request_percentage", "50"),
            ("user.alice", "gold"),
        ]);
        assert_eq!(
            h.initial_limits("user:bob").unwrap(),
            Limits {
                produce_bytes_per_second: Some(1_000_000),
                fetch_bytes_per_second: Some(2_000_000),
                request_percentage: Some(25.0),
                controller_mutations_per_second: None,
            }
        );
        assert_eq!(
            h.initial_limits("user:alice").unwrap(),
            Limits {
                request_percentage: Some(25.0),
                ..produce(10_000_000)
            }
        );
    }

    #[test]
    fn limits_never_move_with_usage() {
        let h = tiers(GOLD_SILVER);
        let usage = [Usage {
            key: "tenant:acme".into(),
            produce_bytes: 50_000_000,
            fetch_bytes: 0,
            requests: 100,
            request_time_us: 1_000,
            connections: 3,
        }];
        assert_eq!(h.rebalance(1000, &usage).unwrap(), []);
        assert_eq!(
            h.initial_limits("tenant:acme")
                .unwrap()
                .produce_bytes_per_second,
            Some(10_000_000)
        );
    }

    #[test]
    fn values_are_rounded_to_whole_bytes_and_the_last_repeat_wins() {
        let h = tiers(&[
            ("tier.t.producer_byte_rate", "nonsense"),
            ("tier.t.producer_byte_rate", " 1500000.4 "),
            ("default", "t"),
            ("quiver.node", "1"),
        ]);
        assert_eq!(h.initial_limits("user:x").unwrap(), produce(1_500_000));
        // Tier and tenant names may contain dots.
        let h = tiers(&[
            ("tier.plan.v2.producer_byte_rate", "7"),
            ("tenant.acme.eu", "plan.v2"),
            ("tier.other.producer_byte_rate", "9"),
        ]);
        assert_eq!(h.initial_limits("tenant:acme.eu").unwrap(), produce(7));
    }

    #[test]
    fn bad_configurations_are_refused_naming_the_key_and_value() {
        let err = |pairs: &[(&str, &str)]| {
            QuotaPolicyHarness::<Tiers>::init(pairs)
                .unwrap_err()
                .to_string()
        };
        let gold = ("tier.gold.producer_byte_rate", "1000");
        assert_eq!(
            err(&[("tier.gold.producer_byte_rate", "fast")]),
            "invalid config: config key `tier.gold.producer_byte_rate` has invalid value \
             \"fast\": expected a positive number"
        );
        for bad in ["0", "-5", "NaN", "inf", ""] {
            assert!(
                err(&[("tier.gold.consumer_byte_rate", bad)]).contains(&format!(
                    "`tier.gold.consumer_byte_rate` has invalid value {bad:?}: expected a positive number"
                )),
                "{bad}"
            );
        }
        assert!(err(&[("tier.gold.request_percentage", "-1")])
            .contains("`tier.gold.request_percentage` has invalid value \"-1\""));
        assert!(err(&[("tier.gold.controller_mutation_rate", "0")])
            .contains("`tier.gold.controller_mutation_rate` has invalid value \"0\""));
        assert!(err(&[("tier.gold.producer_byte_rate", "0.4")])
            .contains("\"0.4\": a byte rate must be at least 1 byte per second"));
        assert_eq!(
            err(&[gold, ("tenant.acme", "platinum")]),
            "invalid config: config key `tenant.acme` has invalid value \"platinum\": \
             tier `platinum` is not defined (defined tiers: gold)"
        );
        assert!(err(&[gold, ("user.bob", "silver")])
            .contains("`user.bob` has invalid value \"silver\": tier `silver` is not defined"));
        assert!(err(&[gold, ("default", "bronze")])
            .contains("`default` has invalid value \"bronze\": tier `bronze` is not defined"));
        assert!(err(&[gold, ("default", " ")])
            .contains("`default` has invalid value \" \": name a tier"));
        for key in [
            "tier.gold.produce_rate",
            "tier.gold",
            "tier..producer_byte_rate",
            "tenant.",
            "tenants.acme",
            "defaults",
            "producer_byte_rate",
        ] {
            assert!(
                err(&[gold, (key, "1")]).starts_with(&format!(
                    "invalid config: unknown config key `{key}` (known keys: tier.<TIER>.producer_byte_rate"
                )),
                "{key}: {}",
                err(&[gold, (key, "1")])
            );
        }
        assert_eq!(
            err(&[("tenant.acme", "gold")]),
            "invalid config: no tier is defined: give at least one limit, e.g. \
             `tier.gold.producer_byte_rate=10000000`"
        );
        assert!(err(&[]).contains("no tier is defined"));
    }
}
