//! Hostile test plugin: a quota policy whose `init` succeeds and whose `quota-key`,
//! `initial-limits` and `rebalance` all panic, which traps the WASM instance. The host
//! must fail closed: keep enforcing the limits last in force and report the traps.

use quiver_plugin_sdk::prelude::*;

/// The policy; it accepts any configuration.
#[derive(Debug, Default)]
pub struct QuotaTrap;

impl QuotaPolicy for QuotaTrap {
    fn init(&mut self, _config: &Config) -> Result<()> {
        Ok(())
    }

    fn quota_key(&mut self, _client: &Client) -> Result<String> {
        panic!("hostile test plugin: panic in quota-key")
    }

    fn initial_limits(&mut self, _key: &str) -> Result<Limits> {
        panic!("hostile test plugin: panic in initial-limits")
    }

    fn rebalance(&mut self, _window_ms: u32, _usage: &[Usage]) -> Result<Vec<(String, Limits)>> {
        panic!("hostile test plugin: panic in rebalance")
    }
}

register_quota_policy!(QuotaTrap);
