//! Client quotas with Kafka's semantics: configured per entity (user, client id, their
//! defaults and combinations, and Quiver's tenant), metered per quota key over sliding
//! windows, enforced by `throttle_time_ms` and by muting the connection that long.
//!
//! Resolution follows Kafka: for each quota type the most specific configured entity
//! wins, in the order `user+client-id`, `user+<default client-id>`, `user`,
//! `<default user>+client-id`, `<default user>+<default client-id>`, `<default user>`,
//! `client-id`, `<default client-id>`. The entity that matched decides the metering key:
//! clients share a bucket exactly when they resolve to the same user and client-id
//! parts. A tenant's quota is metered over all its principals together and applies on
//! top: a request is throttled by whichever of the two is further over.
//!
//! Usage is measured as Kafka measures it: the sum over `SAMPLES` windows of `WINDOW`
//! each, divided by the time they cover (reported by `/v1/quotas`). Enforcement is a
//! token bucket per key, refilled at the quota and holding at most `BURST` of it (the
//! model Kafka adopted for controller mutations in KIP-599): a request that takes the
//! bucket below zero is throttled for as long as the refill needs to pay the debt back.
//! Kafka's byte-rate formula over the sliding windows, `(rate - quota) / quota × span`,
//! lets a client send ten seconds' worth in one burst each time an old window expires
//! (the rate is averaged over at least ten seconds); the bucket gives it its quota
//! steadily, within one second's worth, which is what a neighbour needs.
//!
//! A tenant's quota is cluster-wide: brokers report their recent rate per tenant key
//! with their heartbeats, the controller answers with the cluster's totals, and each
//! broker enforces the share of the quota its own traffic is of the total
//! ([`ClusterUsage`]), so a tenant spread over three brokers gets its quota in total.
//! Quotas of users and client ids are per broker, as in Kafka.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One window of the sliding rate.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Windows kept (Kafka's `quota.window.num` default).
pub const SAMPLES: u32 = 11;
/// How much unused quota a key may save up: one second's worth.
pub const BURST: Duration = Duration::from_secs(1);
/// The longest single throttle; a larger debt is paid over several.
pub const MAX_THROTTLE: Duration = Duration::from_secs(11);

/// A kind of quota, by its Kafka config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuotaType {
    /// `producer_byte_rate`: bytes per second produced.
    #[serde(rename = "producer_byte_rate")]
    ProduceBytes,
    /// `consumer_byte_rate`: bytes per second fetched.
    #[serde(rename = "consumer_byte_rate")]
    FetchBytes,
    /// `request_percentage`: percent of one request-handling thread's time.
    #[serde(rename = "request_percentage")]
    RequestPercentage,
    /// `controller_mutation_rate`: partitions created or deleted per second.
    #[serde(rename = "controller_mutation_rate")]
    ControllerMutations,
    /// `connection_creation_rate`: connections accepted per second from one IP
    /// address (KIP-612); a quota of `ip` entities only.
    #[serde(rename = "connection_creation_rate")]
    ConnectionCreations,
}

impl QuotaType {
    /// Every type.
    pub const ALL: [QuotaType; 5] = [
        QuotaType::ProduceBytes,
        QuotaType::FetchBytes,
        QuotaType::RequestPercentage,
        QuotaType::ControllerMutations,
        QuotaType::ConnectionCreations,
    ];

    /// The Kafka config key.
    pub fn key(self) -> &'static str {
        match self {
            QuotaType::ProduceBytes => "producer_byte_rate",
            QuotaType::FetchBytes => "consumer_byte_rate",
            QuotaType::RequestPercentage => "request_percentage",
            QuotaType::ControllerMutations => "controller_mutation_rate",
            QuotaType::ConnectionCreations => "connection_creation_rate",
        }
    }

    /// The type with config key `key`.
    pub fn parse(key: &str) -> Option<QuotaType> {
        QuotaType::ALL.into_iter().find(|t| t.key() == key)
    }
}

/// Entity types: Kafka's `user` and `client-id`, and Quiver's `tenant`.
pub const USER: &str = "user";
/// The `client-id` entity type.
pub const CLIENT_ID: &str = "client-id";
/// The `tenant` entity type (Quiver's).
pub const TENANT: &str = "tenant";
/// The `ip` entity type: a client IP address, for `connection_creation_rate`.
pub const IP: &str = "ip";

/// A quota entity: entity type → name (`None`: the default of that type). Kafka allows
/// `user`, `client-id` and both; Quiver adds `tenant` on its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity(pub BTreeMap<String, Option<String>>);

/// Why a quota change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The entity is not a combination Kafka (or Quiver) supports.
    #[error("{0}")]
    Entity(String),
    /// The key or value is not acceptable.
    #[error("{0}")]
    Value(String),
}

impl QuotaEntity {
    /// Checks the combination: user, client-id, user + client-id, ip (an address or
    /// the default), or tenant (alone, named).
    pub fn validate(&self) -> Result<(), QuotaError> {
        let types: Vec<&str> = self.0.keys().map(String::as_str).collect();
        match types.as_slice() {
            [CLIENT_ID] | [USER] | [CLIENT_ID, USER] => Ok(()),
            [IP] => match &self.0[IP] {
                Some(ip) if ip.parse::<std::net::IpAddr>().is_err() => Err(QuotaError::Entity(
                    format!("ip `{ip}` is not an IP address"),
                )),
                _ => Ok(()),
            },
            [TENANT] if self.0[TENANT].is_some() => Ok(()),
            [TENANT] => Err(QuotaError::Entity(
                "a tenant quota names its tenant (there is no default tenant)".into(),
            )),
            other => Err(QuotaError::Entity(format!(
                "entity {other:?} is not one of user, client-id, user+client-id, ip, tenant"
            ))),
        }
    }

    /// Checks that this entity can have a quota of `kind`: connection creation is
    /// metered per IP address, everything else per client.
    pub fn check_kind(&self, kind: QuotaType) -> Result<(), QuotaError> {
        let is_ip = self.0.contains_key(IP);
        match (is_ip, kind == QuotaType::ConnectionCreations) {
            (true, false) => Err(QuotaError::Value(format!(
                "an ip entity has only connection_creation_rate, not {}",
                kind.key()
            ))),
            (false, true) => Err(QuotaError::Value(
                "connection_creation_rate is a quota of ip entities (--ip or --default-ip)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// `user=alice,client-id=<default>` for messages and the CLI.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Checks a quota value for `key`.
pub fn validate_value(key: &str, value: f64) -> Result<QuotaType, QuotaError> {
    let kind = QuotaType::parse(key).ok_or_else(|| {
        QuotaError::Value(format!(
            "quota `{key}` is not one of {}",
            QuotaType::ALL.map(|t| t.key()).join(", ")
        ))
    })?;
    if !(value.is_finite() && value > 0.0) {
        return Err(QuotaError::Value(format!(
            "{key} must be a positive number, not {value}"
        )));
    }
    Ok(kind)
}

/// A quota's value. Compared bit for bit, so the metadata state that holds it stays `Eq`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// The configured quotas: entity → (type → value).
pub type QuotaConfigs = BTreeMap<QuotaEntity, BTreeMap<QuotaType, QuotaValue>>;

/// Serde for [`QuotaConfigs`] as a list of (entity, values): JSON map keys must be
/// strings, and an entity is a map.
pub mod configs_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Serializes as a list of pairs.
    pub fn serialize<S: Serializer>(configs: &QuotaConfigs, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(configs.iter())
    }

    /// Deserializes from a list of pairs.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<QuotaConfigs, D::Error> {
        let pairs: Vec<(QuotaEntity, BTreeMap<QuotaType, QuotaValue>)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Who a request comes from, for quota purposes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Client<'a> {
    /// The principal's name (`alice` for `User:alice`).
    pub user: &'a str,
    /// The Kafka client.id.
    pub client_id: &'a str,
    /// The tenant the principal acts for.
    pub tenant: Option<&'a str>,
}

/// A metering bucket: which quota type and whose traffic is summed together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaKey {
    /// The quota type.
    pub kind: QuotaType,
    /// `user=…,client-id=…` or `tenant=…`.
    pub key: String,
}

/// The quota of `kind` that applies to `client` (not counting its tenant's), and its
/// metering key, by Kafka's precedence.
pub fn resolve(
    configs: &QuotaConfigs,
    client: &Client<'_>,
    kind: QuotaType,
) -> Option<(QuotaKey, f64)> {
    let entity = |user: Option<Option<&str>>, id: Option<Option<&str>>| {
        let mut m = BTreeMap::new();
        if let Some(u) = user {
            m.insert(USER.to_string(), u.map(String::from));
        }
        if let Some(c) = id {
            m.insert(CLIENT_ID.to_string(), c.map(String::from));
        }
        QuotaEntity(m)
    };
    let (u, c) = (Some(client.user), Some(client.client_id));
    // (entity, whether the user part keys the bucket, whether the client part does)
    let order = [
        (entity(Some(u), Some(c)), true, true),
        (entity(Some(u), Some(None)), true, true),
        (entity(Some(u), None), true, false),
        (entity(Some(None), Some(c)), true, true),
        (entity(Some(None), Some(None)), true, true),
        (entity(Some(None), None), true, false),
        (entity(None, Some(c)), false, true),
        (entity(None, Some(None)), false, true),
    ];
    order.into_iter().find_map(|(e, by_user, by_client)| {
        let value = configs.get(&e)?.get(&kind)?.0;
        let mut key = Vec::new();
        if by_user {
            key.push(format!("user={}", client.user));
        }
        if by_client {
            key.push(format!("client-id={}", client.client_id));
        }
        Some((
            QuotaKey {
                kind,
                key: key.join(","),
            },
            value,
        ))
    })
}

/// The tenant quota of `kind` for `tenant`, with its key.
pub fn resolve_tenant(
    configs: &QuotaConfigs,
    tenant: &str,
    kind: QuotaType,
) -> Option<(QuotaKey, f64)> {
    let entity = QuotaEntity(BTreeMap::from([(
        TENANT.to_string(),
        Some(tenant.to_string()),
    )]));
    let value = configs.get(&entity)?.get(&kind)?.0;
    Some((
        QuotaKey {
            kind,
            key: format!("tenant={tenant}"),
        },
        value,
    ))
}

/// The `connection_creation_rate` quota of connections from `ip`, with its key: the
/// address's own, else the default ip entity's; either way each address has its own
/// bucket, as in Kafka.
pub fn resolve_ip(configs: &QuotaConfigs, ip: std::net::IpAddr) -> Option<(QuotaKey, f64)> {
    let kind = QuotaType::ConnectionCreations;
    let entity = |name: Option<String>| QuotaEntity(BTreeMap::from([(IP.to_string(), name)]));
    let value = configs
        .get(&entity(Some(ip.to_string())))
        .or_else(|| configs.get(&entity(None)))?
        .get(&kind)?
        .0;
    Some((
        QuotaKey {
            kind,
            key: format!("ip={ip}"),
        },
        value,
    ))
}

/// A sliding-window rate: `SAMPLES` windows of `WINDOW`.
#[derive(Debug, Default)]
struct Rate {
    /// (window start, total in it), oldest first.
    samples: VecDeque<(Instant, f64)>,
}

impl Rate {
    fn record(&mut self, value: f64, now: Instant) {
        self.expire(now);
        match self.samples.back_mut() {
            Some((start, total)) if now.duration_since(*start) < WINDOW => *total += value,
            _ => self.samples.push_back((now, value)),
        }
    }

    fn expire(&mut self, now: Instant) {
        let span = WINDOW * SAMPLES;
        while self
            .samples
            .front()
            .is_some_and(|(start, _)| now.duration_since(*start) >= span)
        {
            self.samples.pop_front();
        }
    }

    /// Per second over the samples that started within the last `span`, divided by
    /// the time they actually cover (from the first one's start to now): what the
    /// cluster-wide share is computed from, which must follow traffic moving between
    /// brokers within seconds, and must not read a window that has just begun as a
    /// drop in traffic.
    fn recent_per_second(&mut self, now: Instant, span: Duration) -> f64 {
        self.expire(now);
        let recent = self
            .samples
            .iter()
            .filter(|(start, _)| now.duration_since(*start) < span);
        let (first, total) = recent.fold((None, 0.0), |(first, total), (start, v)| {
            (first.or(Some(*start)), total + v)
        });
        match first {
            Some(first) => total / now.duration_since(first).max(WINDOW).as_secs_f64(),
            None => 0.0,
        }
    }

    /// Per second, over the time the samples cover (at least `SAMPLES - 1` windows, as
    /// Kafka does, so one burst after an idle period is not read as a huge rate).
    fn per_second(&mut self, now: Instant) -> f64 {
        self.expire(now);
        let Some((oldest, _)) = self.samples.front() else {
            return 0.0;
        };
        let covered = now
            .duration_since(*oldest)
            .max(WINDOW * (SAMPLES - 1))
            .as_secs_f64();
        self.samples.iter().map(|(_, v)| v).sum::<f64>() / covered
    }
}

/// One key's meter: its measured rate and its token bucket.
#[derive(Debug)]
struct Meter {
    rate: Rate,
    /// Quota units available; below zero is debt.
    tokens: f64,
    refilled: Instant,
}

impl Meter {
    fn new(quota: f64, now: Instant) -> Meter {
        Meter {
            rate: Rate::default(),
            tokens: quota * BURST.as_secs_f64(),
            refilled: now,
        }
    }

    /// Refills at `quota` per second (the quota may have changed since the last call).
    fn refill(&mut self, quota: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + quota * elapsed).min(quota * BURST.as_secs_f64());
        self.refilled = now;
    }

    /// How long until the debt is paid back.
    fn throttle(&self, quota: f64) -> Duration {
        if self.tokens >= 0.0 || quota <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / quota).min(MAX_THROTTLE)
    }
}

/// The broker's meters, one per quota key.
#[derive(Debug, Default)]
pub struct Meters {
    meters: Mutex<HashMap<QuotaKey, Meter>>,
    /// When idle meters were last dropped.
    pruned: Mutex<Option<Instant>>,
}

/// Drops the meters idle for the whole span and out of debt: clients come and go (and
/// client ids can be anything), so the table must not keep every key it ever saw.
fn prune(meters: &mut HashMap<QuotaKey, Meter>, now: Instant) {
    meters.retain(|_, m| {
        m.rate.expire(now);
        !m.rate.samples.is_empty() || m.tokens < 0.0
    });
}

impl Meters {
    /// Adds `value` to `key` and returns the throttle its quota calls for now.
    pub fn record(&self, key: &QuotaKey, quota: f64, value: f64, now: Instant) -> Duration {
        let mut meters = self.meters.lock();
        {
            let mut pruned = self.pruned.lock();
            let due = pruned.is_none_or(|at| now.saturating_duration_since(at) >= WINDOW * SAMPLES);
            if due {
                prune(&mut meters, now);
                *pruned = Some(now);
            }
        }
        let meter = meters
            .entry(key.clone())
            .or_insert_with(|| Meter::new(quota, now));
        meter.refill(quota, now);
        meter.tokens -= value;
        meter.rate.record(value, now);
        meter.throttle(quota)
    }

    /// The throttle `key`'s quota calls for now, without recording anything.
    pub fn current(&self, key: &QuotaKey, quota: f64, now: Instant) -> Duration {
        let mut meters = self.meters.lock();
        match meters.get_mut(key) {
            Some(meter) => {
                meter.refill(quota, now);
                meter.throttle(quota)
            }
            None => Duration::ZERO,
        }
    }

    /// The rate of every key `keep` selects over the last `span`, for the heartbeat's
    /// usage report.
    pub fn recent_rates(
        &self,
        now: Instant,
        span: Duration,
        keep: impl Fn(&QuotaKey) -> bool,
    ) -> BTreeMap<QuotaKey, f64> {
        let mut meters = self.meters.lock();
        meters
            .iter_mut()
            .filter(|(k, _)| keep(k))
            .map(|(k, m)| (k.clone(), m.rate.recent_per_second(now, span)))
            .filter(|(_, rate)| *rate > 0.0)
            .collect()
    }

    /// Every key's measured rate per second over the windows (for the admin API); keys
    /// idle for the whole span and out of debt are forgotten.
    pub fn rates(&self, now: Instant) -> BTreeMap<QuotaKey, f64> {
        let mut meters = self.meters.lock();
        prune(&mut meters, now);
        meters
            .iter_mut()
            .map(|(k, m)| (k.clone(), m.rate.per_second(now)))
            .collect()
    }
}

/// How far back a broker's reported rate looks.
pub const SHARE_SPAN: Duration = Duration::from_secs(2);
/// How long the cluster's totals are trusted without a fresh heartbeat reply; older
/// totals mean the controller is out of reach, and each broker falls back to the whole
/// quota (Kafka's per-broker behaviour) rather than to nothing.
pub const TOTALS_TTL: Duration = Duration::from_secs(3);
/// The least share of a cluster-wide quota a broker enforces: a broker where the tenant
/// just started sending gets room to show its traffic.
pub const MIN_SHARE: f64 = 0.05;

impl QuotaKey {
    /// The key as heartbeats carry it: `producer_byte_rate/tenant=acme`.
    pub fn wire(&self) -> String {
        format!("{}/{}", self.kind.key(), self.key)
    }
}

/// The cluster-wide usage of tenant keys as the controller last reported it, and this
/// broker's own part of it.
#[derive(Debug, Default)]
pub struct ClusterUsage {
    /// What this broker last reported (wire key → rate).
    reported: Mutex<HashMap<String, f64>>,
    totals: Mutex<Option<(Instant, HashMap<String, f64>)>>,
}

impl ClusterUsage {
    /// Keeps what this broker reports with its heartbeat: its share is computed from
    /// that figure, not a fresher one, so it is its exact part of the totals it gets
    /// back (a lone broker's share is 1, not a ratio of two measurements).
    pub fn set_reported(&self, report: &BTreeMap<String, f64>) {
        *self.reported.lock() = report.iter().map(|(k, v)| (k.clone(), *v)).collect();
    }

    /// Takes the controller's totals (wire key → bytes or units per second).
    pub fn set_totals(&self, totals: BTreeMap<String, f64>, now: Instant) {
        *self.totals.lock() = Some((now, totals.into_iter().collect()));
    }

    /// The share of `key`'s cluster-wide quota this broker enforces: its reported part
    /// of the cluster's total, at least [`MIN_SHARE`]; the whole quota when there are
    /// no fresh totals or no traffic anywhere.
    pub fn share(&self, key: &QuotaKey, now: Instant) -> f64 {
        let totals = self.totals.lock();
        let Some((at, totals)) = totals.as_ref() else {
            return 1.0;
        };
        if now.saturating_duration_since(*at) > TOTALS_TTL {
            return 1.0;
        }
        let wire = key.wire();
        match totals.get(&wire) {
            Some(total) if *total > 0.0 => {
                let local = self.reported.lock().get(&wire).copied().unwrap_or(0.0);
                (local / total).clamp(MIN_SHARE, 1.0)
            }
            _ => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(pairs: &[(&str, Option<&str>)]) -> QuotaEntity {
        QuotaEntity(
            pairs
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(String::from)))
                .collect(),
        )
    }

    #[test]
    fn the_most_specific_entity_wins_and_decides_the_bucket() {
        let mut configs = QuotaConfigs::new();
        let set = |c: &mut QuotaConfigs, e, v| {
            c.entry(e)
                .or_default()
                .insert(QuotaType::ProduceBytes, QuotaValue(v));
        };
        set(&mut configs, entity(&[(USER, None)]), 100.0);
        set(&mut configs, entity(&[(USER, Some("alice"))]), 200.0);
        set(
            &mut configs,
            entity(&[(USER, Some("alice")), (CLIENT_ID, Some("etl"))]),
            300.0,
        );
        set(&mut configs, entity(&[(CLIENT_ID, Some("etl"))]), 400.0);
        let alice = |id| Client {
            user: "alice",
            client_id: id,
            tenant: None,
        };
        let (key, v) = resolve(&configs, &alice("etl"), QuotaType::ProduceBytes).unwrap();
        assert_eq!((key.key.as_str(), v), ("user=alice,client-id=etl", 300.0));
        // alice's other clients share her user quota.
        let (key, v) = resolve(&configs, &alice("web"), QuotaType::ProduceBytes).unwrap();
        assert_eq!((key.key.as_str(), v), ("user=alice", 200.0));
        // The default user quota applies per user, not shared.
        let bob = Client {
            user: "bob",
            client_id: "etl",
            tenant: None,
        };
        let (key, v) = resolve(&configs, &bob, QuotaType::ProduceBytes).unwrap();
        assert_eq!((key.key.as_str(), v), ("user=bob", 100.0));
        assert!(resolve(&configs, &bob, QuotaType::FetchBytes).is_none());
    }

    fn key(name: &str) -> QuotaKey {
        QuotaKey {
            kind: QuotaType::ProduceBytes,
            key: name.into(),
        }
    }

    #[test]
    fn throttle_is_the_time_the_refill_needs_to_pay_the_debt() {
        let start = Instant::now();
        let meters = Meters::default();
        let a = key("user=a");
        // 1 MB/s with 1 MB of burst: 0.6 MB passes, the next 0.9 MB leaves 0.5 MB of debt.
        assert_eq!(meters.record(&a, 1e6, 0.6e6, start), Duration::ZERO);
        assert_eq!(
            meters.record(&a, 1e6, 0.9e6, start),
            Duration::from_millis(500)
        );
        let quarter = start + Duration::from_millis(250);
        assert_eq!(meters.current(&a, 1e6, quarter), Duration::from_millis(250));
        let half = start + Duration::from_millis(500);
        assert_eq!(meters.current(&a, 1e6, half), Duration::ZERO);
        // A huge debt is paid over several throttles of at most MAX_THROTTLE.
        assert_eq!(
            meters.record(&key("user=b"), 1e6, 100e6, start),
            MAX_THROTTLE
        );
        // Idle time refills at most one second's worth.
        let c = key("user=c");
        meters.record(&c, 1e6, 1e6, start);
        let later = start + Duration::from_secs(5);
        assert_eq!(meters.record(&c, 1e6, 1e6, later), Duration::ZERO);
        assert!(meters.record(&c, 1e6, 1e6, later) > Duration::ZERO);
        // The measured rate is the windows' (Kafka's): 3 MB over the 10 s minimum.
        assert_eq!(meters.rates(later)[&c], 0.3e6);
    }

    #[test]
    fn a_client_pushing_hard_gets_its_quota_steadily() {
        // 100 KB requests back to back, each throttle waited out, for 30 s at 1 MB/s:
        // at every 5 s mark it has sent its quota's worth, within one second's burst.
        let start = Instant::now();
        let meters = Meters::default();
        let a = key("user=a");
        let mut now = start;
        let mut sent = Vec::new();
        while now < start + Duration::from_secs(30) {
            let throttle = meters.record(&a, 1e6, 1e5, now);
            sent.push(now - start);
            now += throttle + Duration::from_millis(1);
        }
        for second in (5..30).step_by(5) {
            let upto = sent
                .iter()
                .filter(|t| **t < Duration::from_secs(second))
                .count() as f64
                * 1e5;
            let want = 1e6 * second as f64;
            assert!((upto - want).abs() <= 1.1e6, "{second} s: {upto} vs {want}");
        }
    }

    #[test]
    fn idle_meters_are_dropped_as_traffic_goes_on() {
        let start = Instant::now();
        let meters = Meters::default();
        for i in 0..100 {
            meters.record(&key(&format!("client-id=c{i}")), 1e6, 10.0, start);
        }
        // Once a span has passed, recording anything drops the idle ones.
        let later = start + WINDOW * SAMPLES + Duration::from_millis(1);
        meters.record(&key("client-id=new"), 1e6, 10.0, later);
        assert_eq!(meters.meters.lock().len(), 1);
    }

    #[test]
    fn a_broker_enforces_its_share_of_a_cluster_wide_quota() {
        let now = Instant::now();
        let usage = ClusterUsage::default();
        let k = QuotaKey {
            kind: QuotaType::ProduceBytes,
            key: "tenant=acme".into(),
        };
        // No totals yet: the whole quota, as a lone broker.
        assert_eq!(usage.share(&k, now), 1.0);
        usage.set_reported(&BTreeMap::from([(k.wire(), 10.0)]));
        usage.set_totals(BTreeMap::from([(k.wire(), 30.0)]), now);
        assert!((usage.share(&k, now) - 1.0 / 3.0).abs() < 1e-9);
        // Alone, the report is the total: all of it.
        usage.set_totals(BTreeMap::from([(k.wire(), 10.0)]), now);
        assert_eq!(usage.share(&k, now), 1.0);
        // A broker the tenant barely uses keeps a floor; stale totals fall back.
        usage.set_reported(&BTreeMap::new());
        assert_eq!(usage.share(&k, now), MIN_SHARE);
        assert_eq!(usage.share(&k, now + TOTALS_TTL * 2), 1.0);
    }

    #[test]
    fn entities_and_values_are_checked() {
        assert!(entity(&[(USER, Some("a"))]).validate().is_ok());
        assert!(entity(&[(USER, None), (CLIENT_ID, Some("x"))])
            .validate()
            .is_ok());
        assert!(entity(&[(TENANT, Some("acme"))]).validate().is_ok());
        assert!(entity(&[(TENANT, None)]).validate().is_err());
        assert!(entity(&[(IP, Some("1.2.3.4"))]).validate().is_ok());
        assert!(entity(&[(IP, None)]).validate().is_ok());
        assert!(entity(&[(IP, Some("not-an-ip"))]).validate().is_err());
        assert!(entity(&[(IP, None), (USER, None)]).validate().is_err());
        let ip = entity(&[(IP, None)]);
        assert!(ip.check_kind(QuotaType::ConnectionCreations).is_ok());
        assert!(ip.check_kind(QuotaType::ProduceBytes).is_err());
        assert!(entity(&[(USER, None)])
            .check_kind(QuotaType::ConnectionCreations)
            .is_err());
        assert!(validate_value("producer_byte_rate", 1024.0).is_ok());
        assert!(validate_value("producer_byte_rate", -1.0).is_err());
        assert!(validate_value("bogus", 1.0).is_err());
    }
}
