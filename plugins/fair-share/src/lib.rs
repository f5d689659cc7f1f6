//! `fair-share`: a byte-rate cap divided among the active tenants by weight.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `producer_byte_rate` | the produce cap, bytes per second, that all active keys share |
//! | `consumer_byte_rate` | the fetch cap, bytes per second, shared the same way (at least one of the two caps is required) |
//! | `weight.<TENANT>` | tenant `TENANT`'s weight, a positive number |
//! | `default_weight` | the weight of every other key (default `1`) |
//! | `min_share` | a fraction of each cap, `0 <= min_share < 1`, that no key's limit is pushed below (default `0`) |
//!
//! Quota keys: a client of a tenant is metered under `tenant:<TENANT>`, so all of a
//! tenant's clients share its part; any other client under `user:<USER>`, its principal
//! without the `User:` prefix. Weights name tenants; `user:` keys get `default_weight`.
//!
//! How the cap is divided:
//!
//! - Once per window the broker reports each key's usage. The active keys are those that
//!   produced or fetched anything in the window or hold an open connection; each gets
//!   `cap * weight / (sum of the active keys' weights)`, at least `cap * min_share`. With
//!   a 40 MB/s cap and tenants of weights 3 and 1 both active: 30 and 10 MB/s; when the
//!   second goes quiet, the first gets all 40. The `min_share` floor is applied after
//!   the division, so floors raised for small keys can together exceed the cap.
//! - A key the broker has not seen before gets its share at once, counted as though it
//!   were already active: `cap * weight / (sum of the active keys' weights + weight)`.
//!   Several newcomers in one window can together overcommit the cap until the next
//!   window corrects it.
//! - Only changed limits are returned. A key that went idle keeps its last limit until
//!   it is active again (nothing is returned for it while idle), so a returning key may
//!   use up to its old share for one window before the division counts it again.
//!
//! Both caps are divided by the same weights over the same active keys: a tenant that
//! only produces still takes its part of the fetch cap while it is active. The policy
//! remembers the last limits of the active keys only, so its memory follows the number
//! of active keys, not of every key ever seen; a key returning from idleness is sent its
//! share again even when unchanged.

use quiver_plugin_sdk::prelude::*;
use quiver_plugin_sdk::quota::{byte_rate, positive};
use std::collections::{BTreeMap, HashMap};

/// The configuration keys, as `ConfigError::Unknown` lists them.
const KNOWN: &str =
    "producer_byte_rate, consumer_byte_rate, weight.<TENANT>, default_weight, min_share";

/// The quota policy: its parsed configuration and what it remembers between windows.
#[derive(Debug, Default)]
pub struct FairShare {
    /// The produce cap, bytes per second.
    produce_cap: Option<u64>,
    /// The fetch cap, bytes per second.
    fetch_cap: Option<u64>,
    /// Tenant name to weight.
    weights: HashMap<String, f64>,
    /// The weight of keys without one of their own.
    default_weight: f64,
    /// The fraction of each cap no key is pushed below.
    min_share: f64,
    /// The keys active in the last window, with their weights.
    active: BTreeMap<String, f64>,
    /// The limits last given to each key that is active or new since the last window.
    assigned: HashMap<String, Limits>,
}

/// Whether a key counts as active in a window.
fn is_active(usage: &Usage) -> bool {
    usage.produce_bytes > 0 || usage.fetch_bytes > 0 || usage.connections > 0
}

impl FairShare {
    /// The weight of `key`.
    fn weight(&self, key: &str) -> f64 {
        key.strip_prefix("tenant:")
            .and_then(|tenant| self.weights.get(tenant))
            .copied()
            .unwrap_or(self.default_weight)
    }

    /// The limits of a key of weight `weight` when the active weights sum to `total`.
    fn limits(&self, weight: f64, total: f64) -> Limits {
        let share = |cap: u64| {
            let cap = cap as f64;
            let share = (cap * weight / total).max(cap * self.min_share).round();
            // Never 0: a zero limit would stop the key altogether.
            (share as u64).max(1)
        };
        Limits {
            produce_bytes_per_second: self.produce_cap.map(share),
            fetch_bytes_per_second: self.fetch_cap.map(share),
            ..Limits::default()
        }
    }
}

impl QuotaPolicy for FairShare {
    fn init(&mut self, config: &Config) -> Result<()> {
        let unknown = config.iter().find(|(key, _)| {
            !matches!(
                *key,
                "producer_byte_rate" | "consumer_byte_rate" | "default_weight" | "min_share"
            ) && !key.starts_with("quiver.")
                && key.strip_prefix("weight.").is_none_or(str::is_empty)
        });
        if let Some((key, _)) = unknown {
            return Err(ConfigError::Unknown {
                key: key.to_owned(),
                known: KNOWN.to_owned(),
            }
            .into());
        }
        let rate = |key: &str| {
            config
                .get(key)
                .map(|value| byte_rate(key, value))
                .transpose()
        };
        self.produce_cap = rate("producer_byte_rate")?;
        self.fetch_cap = rate("consumer_byte_rate")?;
        if self.produce_cap.is_none() && self.fetch_cap.is_none() {
            return Err(PluginError::invalid_config(
                "set `producer_byte_rate` or `consumer_byte_rate` (or both): there is no cap to share",
            ));
        }
        self.default_weight = match config.get("default_weight") {
            Some(value) => positive("default_weight", value)?,
            None => 1.0,
        };
        self.min_share = match config.get("min_share") {
            Some(value) => match value.trim().parse::<f64>() {
                Ok(n) if (0.0..1.0).contains(&n) => n,
                _ => {
                    return Err(ConfigError::invalid(
                        "min_share",
                        value,
                        "expected a fraction of the cap, at least 0 and below 1",
                    )
                    .into())
                }
            },
            None => 0.0,
        };
        for (key, _) in config.iter() {
            if let Some(tenant) = key.strip_prefix("weight.") {
                // The last value of a repeated key is the one that counts.
                let value = config.get(key).unwrap_or_default();
                self.weights
                    .insert(tenant.to_owned(), positive(key, value)?);
            }
        }
        Ok(())
    }

    fn quota_key(&mut self, client: &Client) -> Result<String> {
        Ok(client.tenant_or_user_key())
    }

    fn initial_limits(&mut self, key: &str) -> Result<Limits> {
        let weight = self.weight(key);
        let others: f64 = self
            .active
            .iter()
            .filter(|(active, _)| *active != key)
            .map(|(_, w)| w)
            .sum();
        let limits = self.limits(weight, others + weight);
        self.assigned.insert(key.to_owned(), limits);
        Ok(limits)
    }

    fn rebalance(&mut self, _window_ms: u32, usage: &[Usage]) -> Result<Vec<(String, Limits)>> {
        self.active = usage
            .iter()
            .filter(|u| is_active(u))
            .map(|u| (u.key.clone(), self.weight(&u.key)))
            .collect();
        let total: f64 = self.active.values().sum();
        let mut changed = Vec::new();
        // Idle keys keep the limits they have (nothing is sent for them) and are left
        // out of the new map, so memory follows the active keys.
        let mut assigned = HashMap::with_capacity(self.active.len());
        for (key, &weight) in &self.active {
            let limits = self.limits(weight, total);
            if self.assigned.get(key) != Some(&limits) {
                changed.push((key.clone(), limits));
            }
            assigned.insert(key.clone(), limits);
        }
        self.assigned = assigned;
        Ok(changed)
    }
}

register_quota_policy!(FairShare);

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_plugin_sdk::testing::QuotaPolicyHarness;

    const MB: u64 = 1_000_000;

    fn fair(pairs: &[(&str, &str)]) -> QuotaPolicyHarness<FairShare> {
        QuotaPolicyHarness::init(pairs).unwrap()
    }

    fn produce(bytes: u64) -> Limits {
        Limits {
            produce_bytes_per_second: Some(bytes),
            ..Limits::default()
        }
    }

    /// A window in which `key` produced `bytes` (and holds one connection when `bytes`
    /// is not 0).
    fn used(key: &str, bytes: u64) -> Usage {
        Usage {
            key: key.into(),
            produce_bytes: bytes,
            fetch_bytes: 0,
            requests: if bytes > 0 { 10 } else { 0 },
            request_time_us: 0,
            connections: u32::from(bytes > 0),
        }
    }

    fn acme_globex() -> QuotaPolicyHarness<FairShare> {
        fair(&[
            ("producer_byte_rate", "40000000"),
            ("weight.acme", "3"),
            ("weight.globex", "1"),
        ])
    }

    #[test]
    fn keys_follow_the_tenant_else_the_user() {
        let h = acme_globex();
        let client = |principal: &str, tenant: Option<&str>| Client {
            principal: principal.into(),
            tenant: tenant.map(Into::into),
            client_id: String::new(),
            listener: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
        };
        assert_eq!(
            h.quota_key(&client("User:a", Some("acme"))).unwrap(),
            "tenant:acme"
        );
        assert_eq!(
            h.quota_key(&client("User:ANONYMOUS", None)).unwrap(),
            "user:ANONYMOUS"
        );
    }

    #[test]
    fn the_cap_is_divided_by_weight_among_the_active_tenants() {
        let h = acme_globex();
        // Nobody is active yet: each newcomer may use the whole cap at once.
        assert_eq!(h.initial_limits("tenant:acme").unwrap(), produce(40 * MB));
        assert_eq!(h.initial_limits("tenant:globex").unwrap(), produce(40 * MB));

        let both = [used("tenant:acme", 35 * MB), used("tenant:globex", 12 * MB)];
        assert_eq!(
            h.rebalance(1000, &both).unwrap(),
            [
                ("tenant:acme".to_string(), produce(30 * MB)),
                ("tenant:globex".to_string(), produce(10 * MB)),
            ]
        );
        // Nothing changed: nothing is returned.
        assert_eq!(h.rebalance(1000, &both).unwrap(), []);

        // globex goes idle (reported with nothing used, or not at all): acme gets the
        // whole cap and globex keeps its 10 MB/s, so nothing is returned for it.
        let acme_only = [used("tenant:acme", 30 * MB), used("tenant:globex", 0)];
        assert_eq!(
            h.rebalance(1000, &acme_only).unwrap(),
            [("tenant:acme".to_string(), produce(40 * MB))]
        );
        assert_eq!(h.rebalance(1000, &acme_only[..1]).unwrap(), []);

        // globex is back: 30/10 again, both returned.
        assert_eq!(h.rebalance(1000, &both).unwrap().len(), 2);
    }

    #[test]
    fn a_newcomer_gets_its_share_at_once() {
        let h = acme_globex();
        h.rebalance(1000, &[used("tenant:acme", MB)]).unwrap();
        // initech has the default weight 1 beside acme's 3: a quarter, right away.
        assert_eq!(
            h.initial_limits("tenant:initech").unwrap(),
            produce(10 * MB)
        );
        // Its first active window confirms the share: only acme's changes.
        assert_eq!(
            h.rebalance(1000, &[used("tenant:acme", MB), used("tenant:initech", MB)])
                .unwrap(),
            [("tenant:acme".to_string(), produce(30 * MB))]
        );
        // A third tenant joins the division: 3:1:1.
        assert_eq!(h.initial_limits("tenant:globex").unwrap(), produce(8 * MB));
        assert_eq!(
            h.rebalance(
                1000,
                &[
                    used("tenant:acme", MB),
                    used("tenant:globex", MB),
                    used("tenant:initech", MB),
                ]
            )
            .unwrap(),
            [
                ("tenant:acme".to_string(), produce(24 * MB)),
                ("tenant:initech".to_string(), produce(8 * MB)),
            ]
        );
        // A key already active asked again (after a redeploy) counts itself once.
        assert_eq!(h.initial_limits("tenant:acme").unwrap(), produce(24 * MB));
    }

    #[test]
    fn an_open_connection_counts_as_active() {
        let h = acme_globex();
        let idle_but_connected = Usage {
            connections: 2,
            ..used("tenant:globex", 0)
        };
        assert_eq!(
            h.rebalance(1000, &[used("tenant:acme", MB), idle_but_connected])
                .unwrap()
                .into_iter()
                .map(|(k, l)| (k, l.produce_bytes_per_second.unwrap()))
                .collect::<Vec<_>>(),
            [
                ("tenant:acme".to_string(), 30 * MB),
                ("tenant:globex".to_string(), 10 * MB)
            ]
        );
        // Fetching counts too.
        let fetching = Usage {
            fetch_bytes: 1,
            ..used("tenant:globex", 0)
        };
        assert_eq!(
            h.rebalance(1000, &[used("tenant:acme", MB), fetching])
                .unwrap(),
            []
        );
    }

    #[test]
    fn both_caps_min_share_and_default_weight() {
        let h = fair(&[
            ("producer_byte_rate", "40e6"),
            ("consumer_byte_rate", "80000000"),
            ("weight.big", "99"),
            ("default_weight", "0.5"),
            ("min_share", "0.1"),
        ]);
        let changed = h
            .rebalance(
                1000,
                &[
                    used("tenant:big", MB),
                    used("tenant:small", MB),
                    used("user:alice", MB),
                ],
            )
            .unwrap();
        let by_key: HashMap<String, Limits> = changed.into_iter().collect();
        // 99 : 0.5 : 0.5 of 40 MB/s is 39.6 / 0.2 / 0.2, but no one goes below 10%.
        assert_eq!(
            by_key["tenant:big"],
            Limits {
                produce_bytes_per_second: Some(39_600_000),
                fetch_bytes_per_second: Some(79_200_000),
                ..Limits::default()
            }
        );
        for small in ["tenant:small", "user:alice"] {
            assert_eq!(
                by_key[small],
                Limits {
                    produce_bytes_per_second: Some(4 * MB),
                    fetch_bytes_per_second: Some(8 * MB),
                    ..Limits::default()
                },
                "{small}"
            );
        }
    }

    #[test]
    fn an_empty_window_changes_nothing() {
        let h = acme_globex();
        h.rebalance(1000, &[used("tenant:acme", MB)]).unwrap();
        assert_eq!(h.rebalance(1000, &[]).unwrap(), []);
        // acme went idle with 40 MB/s and keeps it; a newcomer sees nobody active.
        assert_eq!(h.initial_limits("tenant:globex").unwrap(), produce(40 * MB));
    }

    #[test]
    fn bad_configurations_are_refused_naming_the_key_and_value() {
        let err = |pairs: &[(&str, &str)]| {
            QuotaPolicyHarness::<FairShare>::init(pairs)
                .unwrap_err()
                .to_string()
        };
        let cap = ("producer_byte_rate", "1000");
        assert_eq!(
            err(&[]),
            "invalid config: set `producer_byte_rate` or `consumer_byte_rate` (or both): there is no cap to share"
        );
        assert_eq!(
            err(&[("weight.acme", "3")]),
            "invalid config: set `producer_byte_rate` or `consumer_byte_rate` (or both): there is no cap to share"
        );
        assert_eq!(
            err(&[("producer_byte_rate", "fast")]),
            "invalid config: config key `producer_byte_rate` has invalid value \"fast\": expected a positive number"
        );
        for bad in ["0", "-1", "NaN", "inf"] {
            assert!(err(&[("consumer_byte_rate", bad)])
                .contains(&format!("`consumer_byte_rate` has invalid value {bad:?}")));
            assert!(err(&[cap, ("weight.acme", bad)]).contains(&format!(
                "`weight.acme` has invalid value {bad:?}: expected a positive number"
            )));
            assert!(err(&[cap, ("default_weight", bad)])
                .contains(&format!("`default_weight` has invalid value {bad:?}")));
        }
        for bad in ["1", "-0.1", "half", "2"] {
            assert!(err(&[cap, ("min_share", bad)]).contains(&format!(
                "`min_share` has invalid value {bad:?}: expected a fraction of the cap, at least 0 and below 1"
            )));
        }
        for key in ["weight.", "weights.acme", "producer_rate", "cap"] {
            assert!(
                err(&[cap, (key, "1")]).starts_with(&format!(
                    "invalid config: unknown config key `{key}` (known keys: producer_byte_rate"
                )),
                "{key}"
            );
        }
        // Keys the host sets pass; a repeated key's last value counts.
        let h = fair(&[
            cap,
            ("quiver.node", "1"),
            ("weight.acme", "0"),
            ("weight.acme", "3"),
        ]);
        h.rebalance(1000, &[used("tenant:x", 1)]).unwrap();
        assert_eq!(h.initial_limits("tenant:acme").unwrap(), produce(750));
    }
}
