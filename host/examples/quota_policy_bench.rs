//! Quota benchmark: what configured quotas and quota-policy plugins cost the broker.
//! Prints figures, asserts nothing.
//!
//! ```sh
//! export CARGO_TARGET_DIR=$HOME/.cache/quiver/target
//! bash plugins/build.sh        # quiver_plugin_tiers.wasm, quiver_plugin_fair_share.wasm
//! cargo run --release -p quiver --example quota_policy_bench -- --out target/bench/quota_policy.json
//! ```
//!
//! Everything runs in this process against the broker's own `Security` and
//! `QuotaPolicies`, with the plugins deployed into a `Plugins` of a temporary data
//! directory; no network, no broker. Three parts:
//!
//! 1. **Per request, ns.** One client, `User:alice` (client.id `bench-producer`, listener
//!    `PLAINTEXT`, peer 127.0.0.1), a principal of tenant `acme` (`State.tenants` holds
//!    that one tenant in every scenario), under five quota configurations of the cluster
//!    metadata (`State`):
//!    - `none`: no quotas, no policy;
//!    - `user-default`: a configured `user=<default>` `producer_byte_rate` quota;
//!    - `user-named`: a configured `user=alice` one (found earlier in Kafka's order);
//!    - `policy`: the `tiers` plugin bound cluster-wide (`quota_policies[""]`), every
//!      key in tier `gold`, and the client's connection already keyed (steady state);
//!    - `policy+tenant`: the same plus a configured `tenant=acme` quota on top.
//!
//!    Every limit is 10^12 bytes/s, so the meters run but never throttle (each run
//!    checks that every call returned a zero throttle). Two timed regions:
//!    - `throttle`: one `Security::throttle(&state, &client, asker, ProduceBytes, 16384.0,
//!      record = true)`, the call a produce request's `Context::quota` makes. `client`
//!      (a `quota::Client` of borrowed strings) is built before the region. The `asker`
//!      closure is the broker's: when a policy is bound, `throttle` calls it and it
//!      formats the principal and the peer address into `String`s, inside the region.
//!      Not included: what `Context::quota` does before the call (loading the
//!      `Arc<State>`, `tenant::of_principal`).
//!    - `request`: the quota work of one produce request as the broker does it: three
//!      passes of a copy of `Context::quota`'s body (that type needs a running broker),
//!      for `request_percentage` looked at before dispatch, `producer_byte_rate`
//!      recorded by the produce handler, and `request_percentage` recorded after
//!      dispatch. Each pass: the early return when the metadata has neither quotas nor
//!      policies, else `tenant::of_principal` over `State.tenants`, the `quota::Client`,
//!      and `Security::throttle`. Not included: `Session::throttle` (an atomic max).
//!
//!    Ratios are taken per run, then the median: against `none` and against
//!    `user-default`.
//!
//! 2. **Per connection, µs.** The first request of a new connection under the `policy`
//!    configuration: `Security::throttle` as in part 1 with a fresh `ConnectionKey`, so
//!    `QuotaPolicies::resolve` misses its cache and calls into the component:
//!    - `new key`: the client is of a tenant the policy has not seen, so the call runs
//!      `quota-key` and then `initial-limits` in WASM, inserts the key's limits, counts
//!      the connection, records usage and creates the key's meter;
//!    - `known key`: a new connection of tenant `acme`, already keyed: `quota-key` only.
//!
//!    Each run uses a fresh `Security`: the plugin's session is opened and tenant `acme`
//!    keyed first, then 100 new keys are made, all untimed; then `--connections` new
//!    connections of new tenants, then as many of `acme`. Every first request is timed
//!    alone (the clock's own cost, the median of back-to-back reads, subtracted); the
//!    `ConnectionKey`s are made before and dropped after (a drop uncounts the
//!    connection), outside the region. Figures per run: the mean (all the first
//!    requests' time ÷ their number: this includes the host's tables — the policy's
//!    limits and usage, the meters — growing with the keys, a rehash at each doubling),
//!    the median (p50) and the single slowest request (max: with new keys, the request
//!    that made a table double). "miss cost" is the mean minus the steady-state
//!    `throttle` of part 1's `policy` in the same run.
//!
//! 3. **Per window, µs.** `QuotaPolicies::tick(&bound)`: what the broker's window task
//!    runs once a second. It includes dropping unbound policies, `follow_deployment`
//!    (nothing to do: no redeploy), taking the window's usage, building the usage report
//!    (one entry per key), the `rebalance` call into WASM (lowering the report, the
//!    guest's work, lifting and checking the changes) and writing the changed limits.
//!    N keys are made by N connections of N distinct tenants (both plugins key by
//!    tenant), each kept open (so each key counts a connection) and each recording one
//!    16 KiB produce per window through `QuotaPolicies::resolve` before the tick,
//!    outside the region. Cases:
//!    - `fair-share` (a 10^12 bytes/s produce cap), N = 10, 100, 1000, `steady`: the
//!      same N keys active every window, so `rebalance` returns no change;
//!    - `fair-share`, same N, `all change`: one more tenant connects and disconnects in
//!      alternate windows (outside the region), so every key's share moves and
//!      `rebalance` returns N or N + 1 changed limits every window;
//!    - `tiers`, N = 1000 (its limits never move: no changes).
//!
//!    Each run makes a fresh `QuotaPolicies` (a new session of the plugin); making its
//!    keys and two first windows are untimed. Per key = the tick ÷ N.
//!
//! Times are the benchmarking thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) unless
//! `--clock wall`; the plugin calls run on the same thread, so they are counted. Each run
//! measures every figure in turn; figures are the median and range over `--runs`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use quiver::config::{PluginsConfig, SecurityConfig};
use quiver::controller::state::State;
use quiver::plugin::{Code, DeployRequest, Kind, LimitOverrides, Plugins};
use quiver::tenancy::policy::{Asker, ConnectionKey, QuotaPolicies};
use quiver::tenancy::quota::{self, QuotaEntity, QuotaType, QuotaValue};
use quiver::tenancy::tenant::{self, Tenant, TenantLimits};
use quiver::tenancy::{Principal, Security};
use serde_json::json;

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{fmt_stat, stat, stat_json, Clock};

#[derive(Parser, Debug)]
#[command(about = "Quota and quota-policy benchmark (prints figures; asserts nothing)")]
struct Args {
    /// Runs per figure (median and range are taken over them).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Requests timed per scenario and run (part 1).
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    /// New connections timed per case and run (part 2).
    #[arg(long, default_value_t = 2_000)]
    connections: usize,
    /// Key-windows per case and run (part 3): windows = max(20, this ÷ keys).
    #[arg(long, default_value_t = 50_000)]
    window_keys: usize,
    /// Key counts of the fair-share windows.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    keys: Vec<usize>,
    /// Key count of the tiers windows.
    #[arg(long, default_value_t = 1000)]
    tiers_keys: usize,
    /// The tiers component.
    #[arg(long)]
    tiers_wasm: Option<PathBuf>,
    /// The fair-share component.
    #[arg(long)]
    fair_share_wasm: Option<PathBuf>,
    /// What times the regions: `thread` (the thread's CPU time) or `wall`.
    #[arg(long, default_value = "thread")]
    clock: Clock,
    /// JSON output file.
    #[arg(long, default_value = "target/bench/quota_policy.json")]
    out: PathBuf,
}

/// Every limit: far above anything a request loop records, so nothing throttles.
const HUGE: f64 = 1e12;
/// The produce request the figures are for.
const PRODUCE_BYTES: f64 = 16384.0;
/// A request's own time as `request_percentage` records it (50 µs × 100).
const REQUEST_PERCENT_SECONDS: f64 = 50e-6 * 100.0;
/// New keys made before part 2's timed ones, each run.
const WARM_KEYS: usize = 100;
const TIERS: &str = "tiers";
const FAIR_SHARE: &str = "fair-share";
const TENANT: &str = "acme";
const USER: &str = "alice";
const CLIENT_ID: &str = "bench-producer";
const LISTENER: &str = "PLAINTEXT";

// ---------------------------------------------------------------------------------------
// Statistics

/// Per-run ratios `a[r] / b[r]`.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

// ---------------------------------------------------------------------------------------
// The broker's pieces

/// One client connection, as the broker's session holds it.
struct Conn {
    principal: Principal,
    client_id: String,
    listener: String,
    peer: IpAddr,
    key: ConnectionKey,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            principal: Principal::user(USER),
            client_id: CLIENT_ID.into(),
            listener: LISTENER.into(),
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            key: ConnectionKey::default(),
        }
    }

    /// The asker closure `Context::quota` builds.
    fn asker<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> impl FnOnce() -> (Asker<'a>, &'a ConnectionKey) {
        move || {
            (
                Asker {
                    principal: self.principal.to_string(),
                    tenant,
                    client_id: &self.client_id,
                    listener: &self.listener,
                    host: self.peer.to_string(),
                },
                &self.key,
            )
        }
    }
}

/// A copy of the body of `kafka::api::Context::quota` (minus `Session::throttle`), which
/// cannot be built without a running broker.
fn context_quota(
    security: &Security,
    metadata: &State,
    conn: &Conn,
    kind: QuotaType,
    value: f64,
    record: bool,
) -> Duration {
    if metadata.quotas.is_empty() && metadata.quota_policies.is_empty() {
        return Duration::ZERO;
    }
    let tenant = tenant::of_principal(&metadata.tenants, &conn.principal).map(|t| t.name.as_str());
    let client = quota::Client {
        user: conn.principal.name(),
        client_id: &conn.client_id,
        tenant,
    };
    security.throttle(metadata, &client, conn.asker(tenant), kind, value, record)
}

/// The quota work of one produce request (`kafka::handle` and `produce::handle`).
fn produce_request(security: &Security, metadata: &State, conn: &Conn) -> Duration {
    let before = context_quota(
        security,
        metadata,
        conn,
        QuotaType::RequestPercentage,
        0.0,
        false,
    );
    let produce = context_quota(
        security,
        metadata,
        conn,
        QuotaType::ProduceBytes,
        PRODUCE_BYTES,
        true,
    );
    let after = context_quota(
        security,
        metadata,
        conn,
        QuotaType::RequestPercentage,
        REQUEST_PERCENT_SECONDS,
        true,
    );
    before.max(produce).max(after)
}

fn entity(pairs: &[(&str, Option<&str>)]) -> QuotaEntity {
    QuotaEntity(
        pairs
            .iter()
            .map(|(t, n)| (t.to_string(), n.map(String::from)))
            .collect(),
    )
}

/// The metadata every scenario starts from: tenant `acme` with `User:alice`.
fn base_state() -> State {
    let mut state = State::default();
    state.tenants.insert(
        TENANT.into(),
        Tenant {
            name: TENANT.into(),
            prefix: format!("{TENANT}."),
            principals: vec![Principal::user(USER).to_string()],
            limits: TenantLimits::default(),
        },
    );
    state
}

fn with_quota(mut state: State, entity: QuotaEntity) -> State {
    state
        .quotas
        .entry(entity)
        .or_default()
        .insert(QuotaType::ProduceBytes, QuotaValue(HUGE));
    state
}

fn with_policy(mut state: State, plugin: &str) -> State {
    state.quota_policies.insert(String::new(), plugin.into());
    state
}

fn security(plugins: &Arc<Plugins>) -> Security {
    let security = Security::new(&SecurityConfig::default());
    security.policies.attach(plugins.clone());
    security
}

fn deploy(plugins: &Plugins, name: &str, wasm: &[u8], config: &[(&str, String)]) {
    plugins
        .deploy(DeployRequest {
            name: name.into(),
            kind: Kind::QuotaPolicy,
            code: Code::Wasm(wasm.to_vec()),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            limits: LimitOverrides::default(),
        })
        .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
}

/// Panics when a policy has failed: its figures would be those of fail-closed limits.
fn check_policies(policies: &QuotaPolicies, what: &str) {
    for (plugin, view) in policies.views() {
        if let Some(reason) = view.failed {
            panic!("{what}: policy {plugin} failed: {reason}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Part 1: per request

struct Scenario {
    name: &'static str,
    what: &'static str,
    security: Security,
    state: State,
    conn: Conn,
}

fn scenarios(plugins: &Arc<Plugins>) -> Vec<Scenario> {
    let make = |name, what, state: State| Scenario {
        name,
        what,
        security: security(plugins),
        state,
        conn: Conn::new(),
    };
    let tenant_quota = entity(&[(quota::TENANT, Some(TENANT))]);
    vec![
        make("none", "no quotas, no policy", base_state()),
        make(
            "user-default",
            "configured user=<default> producer_byte_rate",
            with_quota(base_state(), entity(&[(quota::USER, None)])),
        ),
        make(
            "user-named",
            "configured user=alice producer_byte_rate",
            with_quota(base_state(), entity(&[(quota::USER, Some(USER))])),
        ),
        make(
            "policy",
            "tiers bound cluster-wide, key cached",
            with_policy(base_state(), TIERS),
        ),
        make(
            "policy+tenant",
            "tiers + configured tenant=acme producer_byte_rate",
            with_quota(with_policy(base_state(), TIERS), tenant_quota),
        ),
    ]
}

/// ns per call of (`throttle`, `request`) for one scenario.
fn measure_request(clock: Clock, s: &Scenario, n: usize) -> (f64, f64) {
    let tenant = tenant::of_principal(&s.state.tenants, &s.conn.principal).map(|t| t.name.as_str());
    let client = quota::Client {
        user: s.conn.principal.name(),
        client_id: &s.conn.client_id,
        tenant,
    };
    let mut throttled = Duration::ZERO;
    let t = clock.now_ns();
    for _ in 0..n {
        let d = s.security.throttle(
            black_box(&s.state),
            black_box(&client),
            s.conn.asker(tenant),
            QuotaType::ProduceBytes,
            PRODUCE_BYTES,
            true,
        );
        throttled = throttled.max(black_box(d));
    }
    let call = clock.now_ns() - t;
    let t = clock.now_ns();
    for _ in 0..n {
        let d = produce_request(&s.security, black_box(&s.state), &s.conn);
        throttled = throttled.max(black_box(d));
    }
    let request = clock.now_ns() - t;
    assert_eq!(
        throttled,
        Duration::ZERO,
        "{}: a quota throttled; the limits are meant not to bind",
        s.name
    );
    (call as f64 / n as f64, request as f64 / n as f64)
}

// ---------------------------------------------------------------------------------------
// Part 2: per connection

/// The clock's own cost: the median of back-to-back reads, ns.
fn clock_overhead(clock: Clock) -> f64 {
    let reads: Vec<f64> = (0..1001)
        .map(|_| {
            let a = clock.now_ns();
            (clock.now_ns() - a) as f64
        })
        .collect();
    stat(&reads).median
}

/// One run's first requests of new connections, µs: the mean (what the connections
/// cost together, the host's tables growing included), the median and the worst one.
#[derive(Debug, Clone, Copy)]
struct Firsts {
    mean: f64,
    p50: f64,
    max: f64,
}

/// The first request of one new connection per tenant in `tenants`, each timed alone
/// (less the clock's own cost, `overhead` ns).
fn first_requests(
    clock: Clock,
    security: &Security,
    state: &State,
    tenants: &[String],
    overhead: f64,
) -> Firsts {
    let conns: Vec<Conn> = tenants.iter().map(|_| Conn::new()).collect();
    let mut each = Vec::with_capacity(tenants.len());
    for (conn, tenant) in conns.iter().zip(tenants) {
        let client = quota::Client {
            user: conn.principal.name(),
            client_id: &conn.client_id,
            tenant: Some(tenant.as_str()),
        };
        let t = clock.now_ns();
        black_box(security.throttle(
            state,
            &client,
            conn.asker(Some(tenant.as_str())),
            QuotaType::ProduceBytes,
            PRODUCE_BYTES,
            true,
        ));
        each.push(((clock.now_ns() - t) as f64 - overhead).max(0.0) / 1e3);
    }
    drop(black_box(conns));
    Firsts {
        mean: each.iter().sum::<f64>() / each.len() as f64,
        p50: stat(&each).median,
        max: stat(&each).max,
    }
}

/// Part 2 for one run, on a fresh `Security` (so every run grows the same tables from
/// the same size): (new key, known key).
fn measure_connections(
    clock: Clock,
    plugins: &Arc<Plugins>,
    run: usize,
    connections: usize,
) -> (Firsts, Firsts) {
    let security = security(plugins);
    let state = with_policy(base_state(), TIERS);
    let acme = vec![TENANT.to_string(); connections];
    let names = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{run}-{i:06}")).collect()
    };
    // Untimed: open the session, key acme, and a warm-up of new keys.
    first_requests(clock, &security, &state, &acme[..1], 0.0);
    first_requests(clock, &security, &state, &names("w", WARM_KEYS), 0.0);
    let overhead = clock_overhead(clock);
    let new = first_requests(clock, &security, &state, &names("t", connections), overhead);
    let known = first_requests(clock, &security, &state, &acme, overhead);
    check_policies(&security.policies, "connections");
    let keyed = security.policies.views()[TIERS].keys.len();
    assert_eq!(
        keyed,
        1 + WARM_KEYS + connections,
        "the connections part keyed every new tenant (and acme)"
    );
    (new, known)
}

// ---------------------------------------------------------------------------------------
// Part 3: per window

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Steady,
    AllChange,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Steady => "steady",
            Mode::AllChange => "all change",
        }
    }
}

#[derive(Clone, Debug)]
struct WindowCase {
    plugin: &'static str,
    keys: usize,
    mode: Mode,
}

impl WindowCase {
    fn label(&self) -> String {
        format!("{} {} keys {}", self.plugin, self.keys, self.mode.name())
    }
}

/// Records one produce of `conn` (of `tenant`) through the policy.
fn record(policies: &QuotaPolicies, plugin: &str, conn: &Conn, tenant: &str) {
    let asker = (conn.asker(Some(tenant)))().0;
    black_box(policies.resolve(
        plugin,
        &asker,
        &conn.key,
        QuotaType::ProduceBytes,
        PRODUCE_BYTES,
        true,
    ));
}

/// µs per tick of one case over `windows` timed windows, on a fresh `QuotaPolicies`.
fn measure_windows(clock: Clock, plugins: &Arc<Plugins>, case: &WindowCase, windows: usize) -> f64 {
    let policies = QuotaPolicies::default();
    policies.attach(plugins.clone());
    let bound = BTreeMap::from([(String::new(), case.plugin.to_string())]);
    let tenants: Vec<String> = (0..case.keys).map(|i| format!("k{i:05}")).collect();
    let conns: Vec<Conn> = tenants.iter().map(|_| Conn::new()).collect();
    let extra_tenant = "k-extra".to_string();
    let mut extra: Option<Conn> = None;
    let mut timed = 0u64;
    for window in 0..windows + 2 {
        if case.mode == Mode::AllChange {
            if window.is_multiple_of(2) {
                let conn = Conn::new();
                record(&policies, case.plugin, &conn, &extra_tenant);
                extra = Some(conn);
            } else {
                extra = None;
            }
        }
        for (conn, tenant) in conns.iter().zip(&tenants) {
            record(&policies, case.plugin, conn, tenant);
        }
        let t = clock.now_ns();
        policies.tick(black_box(&bound));
        let elapsed = clock.now_ns() - t;
        if window >= 2 {
            timed += elapsed;
        }
    }
    drop(extra);
    check_policies(&policies, &case.label());
    let view = &policies.views()[case.plugin];
    let expected = case.keys + usize::from(case.mode == Mode::AllChange);
    assert_eq!(
        view.keys.len(),
        expected,
        "{}: keys the policy holds",
        case.label()
    );
    if case.plugin == FAIR_SHARE {
        // The last window had every key active (and the extra one when its index was
        // even): each key's share is the cap divided among them.
        let active = case.keys
            + usize::from(case.mode == Mode::AllChange && (windows + 1).is_multiple_of(2));
        let first = view.keys.iter().find(|k| k.key == "tenant:k00000");
        let share = first.expect("the first tenant's key").limits[&QuotaType::ProduceBytes];
        assert_eq!(
            share,
            (HUGE / active as f64).round(),
            "{}: fair-share's division after the last window",
            case.label()
        );
    }
    timed as f64 / windows as f64 / 1e3
}

// ---------------------------------------------------------------------------------------

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn read_wasm(given: &Option<PathBuf>, file: &str) -> (PathBuf, Vec<u8>) {
    let path = given
        .clone()
        .unwrap_or_else(|| target_dir().join("wasm32-wasip2/release").join(file));
    match std::fs::read(&path) {
        Ok(bytes) => (path, bytes),
        Err(e) => {
            eprintln!(
                "quota_policy_bench: cannot read {}: {e}\nbuild it first: bash plugins/build.sh",
                path.display()
            );
            std::process::exit(2);
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args = Args::parse();
    let (tiers_path, tiers_wasm) = read_wasm(&args.tiers_wasm, "quiver_plugin_tiers.wasm");
    let (fair_path, fair_wasm) = read_wasm(&args.fair_share_wasm, "quiver_plugin_fair_share.wasm");
    let started = Instant::now();
    let load0 = loadavg();

    let dir = tempfile::tempdir().expect("tempdir");
    let plugins =
        Arc::new(Plugins::open(&PluginsConfig::default(), dir.path()).expect("open plugins"));
    let huge = format!("{HUGE}");
    deploy(
        &plugins,
        TIERS,
        &tiers_wasm,
        &[
            ("tier.gold.producer_byte_rate", huge.clone()),
            ("tenant.acme", "gold".into()),
            ("default", "gold".into()),
        ],
    );
    deploy(
        &plugins,
        FAIR_SHARE,
        &fair_wasm,
        &[("producer_byte_rate", huge.clone())],
    );

    // Part 1 set-up, with a warm-up pass that also opens the policies' sessions and keys
    // their connections.
    let scenarios = scenarios(&plugins);
    for s in &scenarios {
        measure_request(args.clock, s, (args.requests / 10).max(100));
        check_policies(&s.security.policies, s.name);
    }
    // Part 3 cases.
    let mut cases = Vec::new();
    for mode in [Mode::Steady, Mode::AllChange] {
        for &keys in &args.keys {
            cases.push(WindowCase {
                plugin: FAIR_SHARE,
                keys,
                mode,
            });
        }
    }
    cases.push(WindowCase {
        plugin: TIERS,
        keys: args.tiers_keys,
        mode: Mode::Steady,
    });
    let windows_for = |keys: usize| (args.window_keys / keys.max(1)).max(20);

    let mut call = vec![Vec::new(); scenarios.len()];
    let mut request = vec![Vec::new(); scenarios.len()];
    let (mut new_key, mut known_key) = (Vec::new(), Vec::new());
    let mut window = vec![Vec::new(); cases.len()];
    for run in 0..args.runs {
        let t0 = Instant::now();
        for (i, s) in scenarios.iter().enumerate() {
            let (c, r) = measure_request(args.clock, s, args.requests);
            call[i].push(c);
            request[i].push(r);
        }
        let (new, known) = measure_connections(args.clock, &plugins, run, args.connections);
        new_key.push(new);
        known_key.push(known);
        for (i, case) in cases.iter().enumerate() {
            window[i].push(measure_windows(
                args.clock,
                &plugins,
                case,
                windows_for(case.keys),
            ));
        }
        eprintln!(
            "run {}/{} done ({:.1} s)",
            run + 1,
            args.runs,
            t0.elapsed().as_secs_f64()
        );
    }
    for s in &scenarios {
        check_policies(&s.security.policies, s.name);
    }

    let clock = match args.clock {
        Clock::Thread => "thread CPU",
        Clock::Wall => "wall",
    };
    let mut out = json!({
        "bench": "quota_policy_bench",
        "args": format!("{args:?}"),
        "tiers_wasm": tiers_path.display().to_string(),
        "fair_share_wasm": fair_path.display().to_string(),
        "clock": clock,
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_start": load0,
    });

    // Part 1 table.
    const NONE: usize = 0;
    const USER_DEFAULT: usize = 1;
    println!();
    println!(
        "## Per request, ns ({clock} clock) — median (min–max) of {} runs, {} requests each; produce of {} bytes, every limit {HUGE:e} B/s (never binding)",
        args.runs, args.requests, PRODUCE_BYTES
    );
    println!();
    println!("`throttle`: one Security::throttle(ProduceBytes, record) — the produce handler's call. `request`: a produce request's three Context::quota passes (request_percentage look, producer_byte_rate record, request_percentage record), each with tenant::of_principal. Ratios per run, then median.");
    println!();
    println!(
        "| scenario | throttle | ÷ none | ÷ user-default | request | ÷ none | ÷ user-default |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let rc_none = ratios(&call[i], &call[NONE]);
        let rc_user = ratios(&call[i], &call[USER_DEFAULT]);
        let rr_none = ratios(&request[i], &request[NONE]);
        let rr_user = ratios(&request[i], &request[USER_DEFAULT]);
        println!(
            "| {} ({}) | {} | {:.1}x | {:.2}x | {} | {:.1}x | {:.2}x |",
            s.name,
            s.what,
            fmt_stat(&call[i], 1),
            stat(&rc_none).median,
            stat(&rc_user).median,
            fmt_stat(&request[i], 1),
            stat(&rr_none).median,
            stat(&rr_user).median,
        );
        rows.push(json!({
            "scenario": s.name,
            "what": s.what,
            "throttle_ns": stat_json(&call[i]),
            "request_ns": stat_json(&request[i]),
            "throttle_ratio_to_none": stat_json(&rc_none),
            "throttle_ratio_to_user_default": stat_json(&rc_user),
            "request_ratio_to_none": stat_json(&rr_none),
            "request_ratio_to_user_default": stat_json(&rr_user),
        }));
    }
    out["per_request"] = json!(rows);

    // Part 2 table.
    let steady = &call[3];
    println!();
    println!(
        "## Per connection, µs ({clock} clock) — median (min–max) of {} runs, {} new connections each (after {WARM_KEYS} untimed); tiers bound cluster-wide",
        args.runs, args.connections
    );
    println!();
    println!("First request of a new connection: Security::throttle with an empty ConnectionKey, each timed alone (less the clock's own cost). `new key`: quota-key + initial-limits in WASM. `known key`: quota-key only. mean: all the connections' time ÷ their number (the host's tables growing included); p50 and max: of the single requests in a run. Miss cost = mean − the steady-state `policy` throttle of the same run.");
    println!();
    println!("| case | mean | p50 | max (one request) | miss cost |");
    println!("|---|---:|---:|---:|---:|");
    let mut figures = json!({ "connections_per_run": args.connections, "warm_keys": WARM_KEYS });
    for (name, what, firsts) in [
        (
            "new_key",
            "new key (tenant not seen: quota-key + initial-limits)",
            &new_key,
        ),
        (
            "known_key",
            "known key (tenant acme: quota-key)",
            &known_key,
        ),
    ] {
        let mean: Vec<f64> = firsts.iter().map(|f| f.mean).collect();
        let p50: Vec<f64> = firsts.iter().map(|f| f.p50).collect();
        let max: Vec<f64> = firsts.iter().map(|f| f.max).collect();
        let miss: Vec<f64> = mean.iter().zip(steady).map(|(m, s)| m - s / 1e3).collect();
        println!(
            "| {what} | {} | {} | {} | {} |",
            fmt_stat(&mean, 2),
            fmt_stat(&p50, 2),
            fmt_stat(&max, 1),
            fmt_stat(&miss, 2)
        );
        figures[name] = json!({
            "mean_us": stat_json(&mean),
            "p50_us": stat_json(&p50),
            "max_us": stat_json(&max),
            "miss_cost_us": stat_json(&miss),
        });
    }
    out["per_connection"] = figures;

    // Part 3 table.
    println!();
    println!(
        "## Per window, µs ({clock} clock) — median (min–max) of {} runs; QuotaPolicies::tick",
        args.runs
    );
    println!();
    println!("N keys = N open connections of N tenants, each producing once per window. `steady`: the same keys active every window (no limit changes). `all change`: one more tenant joins and leaves in alternate windows, so every share moves each window.");
    println!();
    println!("| plugin | keys | case | windows/run | tick, µs | per key, µs |");
    println!("|---|---:|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let per_key: Vec<f64> = window[i].iter().map(|t| t / case.keys as f64).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            case.plugin,
            case.keys,
            case.mode.name(),
            windows_for(case.keys),
            fmt_stat(&window[i], 1),
            fmt_stat(&per_key, 3)
        );
        rows.push(json!({
            "plugin": case.plugin,
            "keys": case.keys,
            "case": case.mode.name(),
            "windows_per_run": windows_for(case.keys),
            "tick_us": stat_json(&window[i]),
            "per_key_us": stat_json(&per_key),
        }));
    }
    out["per_window"] = json!(rows);

    let load1 = loadavg();
    out["loadavg_end"] = json!(load1);
    out["seconds"] = json!(started.elapsed().as_secs_f64());
    println!();
    println!(
        "load average: {load0} at start, {load1} at end; {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(parent) = args.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&out).unwrap()).expect("write --out");
    println!("figures written to {}", args.out.display());
}
