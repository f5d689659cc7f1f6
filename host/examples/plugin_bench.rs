//! Partitioner plugin benchmark: prints figures, asserts nothing.
//!
//! ```sh
//! export CARGO_TARGET_DIR=$HOME/.cache/quiver/target
//! bash plugins/build.sh
//! cargo build --release -p quiver-plugin-murmur2 --features native
//! cargo run --release -p quiver --example plugin_bench -- --out target/bench/plugin.json
//! ```
//!
//! Two parts (both by default; `--only partition|deploy`):
//!
//! 1. **Partitioning cost, ns/record**, at batch sizes 1, 16, 256, 4096 (`--sizes`), for
//!    three paths over the same records (`NewRecord`s as HTTP produce makes them: keys of
//!    16–32 random bytes, values of `--value-bytes`, each its own allocation; no
//!    headers; `--partitions` partitions):
//!    - `builtin`: the broker's own `produce::choose_partitions` for a topic without a
//!      plugin: the native murmur2 (`quiver_plugin_sdk::hash::murmur2_partition`) of
//!      every key. It needs no columns, so it has one figure.
//!    - `wasm`: the murmur2 component, for a topic with `partitioner=murmur2`.
//!    - `native-abi`: the same plugin compiled as a `.so`, through the same
//!      `Plugins::partition` and the C ABI.
//!
//!    For the two plugin paths two timed regions are reported:
//!    - `call`: only `plugins.partition(name, columns, n)` — deployment lookup, status
//!      check, instance from the pool, epoch deadline, lowering the columns into the
//!      guest, the guest's work, lifting the result, output checks, metrics, and dropping
//!      the consumed `Columns`. The `Columns` are built (by `produce::columns`) before
//!      the timed region.
//!    - `broker`: `produce::choose_partitions` for a topic with the plugin: what the
//!      broker does per HTTP produce request — building the columns from the records
//!      (`produce::columns`) plus the call.
//!
//!    A fourth figure, `hash`, is `murmur2_partition` over the keys into a `Vec` alone:
//!    the floor every path pays.
//!
//!
//!    Times are the benchmarking thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) by
//!    default: on a shared machine, wall time also counts the time the thread waits for
//!    a CPU. `--clock wall` times by the wall clock instead.
//!
//!    Each run times every path and size in turn (interleaved, so drift of the shared
//!    machine hits them alike); figures are the median and range over `--runs`. Ratios
//!    compare like with like — `call` to `hash` (the partitioning alone) and `broker`
//!    to `builtin` (the broker's whole choice) — per run, then take the median. The
//!    time of a
//!    1-record call (fixed cost) and the slope between the two largest sizes (marginal
//!    cost per record) split each path's cost.
//!
//! 2. **Deploy and instantiate time**: cold deploys (fresh data directory, so the
//!    component is compiled), warm deploys (same bytes again: compiled code from the
//!    on-disk cache), the broker's restart path (`Plugins::open` of a directory holding
//!    the plugin), native `.so` deploys, and the first call after each deploy.
//!    `deploy_us` and `instantiate_us` are the host's own figures (`DeployOutcome`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use quiver::broker::produce::{choose_partitions, columns, NewRecord};
use quiver::config::topic::{resolve, TopicSettings};
use quiver::config::{LogDefaults, PluginsConfig};
use quiver::plugin::{Code, DeployRequest, Kind, LimitOverrides, Plugins};
use quiver_plugin_sdk::columns::Columns;
use quiver_plugin_sdk::hash::murmur2_partition as partition_for_key;
use serde_json::{json, Value};

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{fmt_stat, stat, stat_json, Clock};

#[derive(Parser, Debug)]
#[command(about = "Partitioner plugin benchmark (prints figures; asserts nothing)")]
struct Args {
    /// Runs per figure (median and range are taken over them).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256,4096")]
    sizes: Vec<usize>,
    /// Records timed per path, size and run (batch size 1: `--calls-1` calls instead).
    #[arg(long, default_value_t = 400_000)]
    records: usize,
    /// Calls timed per path and run at batch size 1.
    #[arg(long, default_value_t = 40_000)]
    calls_1: usize,
    /// Value size of each record, bytes (values cross the boundary too).
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Shortest key, bytes (lengths are uniform in key-min..=key-max).
    #[arg(long, default_value_t = 16)]
    key_min: usize,
    /// Longest key, bytes.
    #[arg(long, default_value_t = 32)]
    key_max: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// The murmur2 component.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The murmur2 plugin built as a native library (skipped if absent).
    #[arg(long)]
    native_so: Option<PathBuf>,
    /// Cold deploys (each compiles in a fresh data directory).
    #[arg(long, default_value_t = 7)]
    cold_deploys: usize,
    /// Warm deploys (compiled code from the cache).
    #[arg(long, default_value_t = 15)]
    warm_deploys: usize,
    /// What times part 1: `thread` (the thread's CPU time) or `wall`.
    #[arg(long, default_value = "thread")]
    clock: Clock,
    /// Only one part: `partition` or `deploy`.
    #[arg(long)]
    only: Option<String>,
    /// Seed of the record generator.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// JSON output file.
    #[arg(long, default_value = "target/bench/plugin.json")]
    out: PathBuf,
    /// Instead of benchmarking, loop the broker path with the WASM plugin at this batch size for
    /// `--profile-secs` (to run under `perf record`).
    #[arg(long)]
    profile_size: Option<usize>,
    /// Seconds of the profiling loop.
    #[arg(long, default_value_t = 10.0)]
    profile_secs: f64,
}

const TOPIC: &str = "bench";
const PLUGIN: &str = "murmur2";
const NATIVE_PLUGIN: &str = "murmur2-native";
const POOL_RECORDS: usize = 1 << 16;
/// The timestamp records without one get (all bench records have one).
const NOW: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------
// Records

/// splitmix64: deterministic records from `--seed`, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn records(args: &Args, n: usize) -> Vec<NewRecord> {
    let (value_bytes, lo, hi) = (
        args.value_bytes,
        args.key_min,
        args.key_max.max(args.key_min),
    );
    let mut rng = Rng(args.seed);
    (0..n)
        .map(|i| {
            let klen = lo + (rng.next() % (hi - lo + 1) as u64) as usize;
            NewRecord {
                key: Some(Bytes::from(rng.bytes(klen))),
                value: Some(Bytes::from(rng.bytes(value_bytes))),
                headers: Vec::new(),
                partition: None,
                timestamp: Some(NOW + i as i64),
            }
        })
        .collect()
}

/// The batch starting at record `i * size` of the pool.
fn batch(pool: &[NewRecord], size: usize, i: usize) -> &[NewRecord] {
    let start = (i * size) % pool.len();
    &pool[start..start + size]
}

/// The columns the broker hands a partitioner for these records (`produce::columns`).
fn build_columns(recs: &[NewRecord]) -> Columns {
    let all: Vec<usize> = (0..recs.len()).collect();
    columns(TOPIC, recs, &all, NOW)
}

/// Topic settings: the built-in murmur2 (`None`) or the named partitioner plugin.
fn settings(plugin: Option<&str>) -> TopicSettings {
    let mut overrides = std::collections::BTreeMap::new();
    if let Some(plugin) = plugin {
        overrides.insert("partitioner".to_string(), plugin.to_string());
    }
    resolve(&LogDefaults::default(), &overrides)
}

/// The murmur2 of every key, nothing else: the floor of every path.
fn hash_only(recs: &[NewRecord], partitions: u32) -> Vec<u32> {
    recs.iter()
        .map(|r| partition_for_key(r.key.as_deref().expect("keyed"), partitions))
        .collect()
}

/// What the broker does for a request's records: `choose_partitions` for a topic with
/// `settings`.
fn broker(plugins: &Plugins, settings: &TopicSettings, recs: &[NewRecord], n: u32) -> Vec<i32> {
    choose_partitions(plugins, TOPIC, settings, recs, n, NOW).expect("partitioning")
}

// ---------------------------------------------------------------------------------------
// Part 1: ns/record

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path_ {
    Hash,
    Builtin,
    Wasm,
    NativeAbi,
}

impl Path_ {
    fn name(self) -> &'static str {
        match self {
            Path_::Hash => "hash",
            Path_::Builtin => "builtin",
            Path_::Wasm => "wasm",
            Path_::NativeAbi => "native-abi",
        }
    }
    fn plugin(self) -> &'static str {
        match self {
            Path_::Wasm => PLUGIN,
            Path_::NativeAbi => NATIVE_PLUGIN,
            Path_::Hash | Path_::Builtin => unreachable!(),
        }
    }
}

/// Nanoseconds per record for (call, broker) of one path at one size.
fn measure(
    plugins: &Plugins,
    clock: Clock,
    path: Path_,
    pool: &[NewRecord],
    size: usize,
    calls: usize,
    partitions: u32,
) -> (f64, f64) {
    let records = (calls * size) as f64;
    if path == Path_::Hash {
        let t = clock.now_ns();
        for i in 0..calls {
            black_box(hash_only(black_box(batch(pool, size, i)), partitions));
        }
        let ns = (clock.now_ns() - t) as f64 / records;
        return (ns, ns);
    }
    if path == Path_::Builtin {
        let settings = settings(None);
        let t = clock.now_ns();
        for i in 0..calls {
            black_box(broker(
                plugins,
                &settings,
                black_box(batch(pool, size, i)),
                partitions,
            ));
        }
        let ns = (clock.now_ns() - t) as f64 / records;
        return (ns, ns);
    }
    let name = path.plugin();
    // call only: columns prepared in chunks outside the timed region.
    let chunk = (POOL_RECORDS / size).max(1);
    let mut call = 0;
    let mut i = 0;
    while i < calls {
        let n = chunk.min(calls - i);
        let prepared: Vec<Columns> = (i..i + n)
            .map(|j| build_columns(batch(pool, size, j)))
            .collect();
        let t = clock.now_ns();
        for columns in prepared {
            black_box(plugins.partition(name, columns, partitions).expect("call"));
        }
        call += clock.now_ns() - t;
        i += n;
    }
    // The broker's path: columns from the records, then the call.
    let settings = settings(Some(name));
    let t = clock.now_ns();
    for i in 0..calls {
        black_box(broker(plugins, &settings, batch(pool, size, i), partitions));
    }
    let both = clock.now_ns() - t;
    (call as f64 / records, both as f64 / records)
}

fn check_agreement(plugins: &Plugins, path: Path_, pool: &[NewRecord], partitions: u32) {
    for size in [1usize, 7, 256, 4096] {
        let recs = batch(pool, size, 3);
        let got = plugins
            .partition(path.plugin(), build_columns(recs), partitions)
            .unwrap_or_else(|e| panic!("{} call failed: {e}", path.name()));
        let expected = hash_only(recs, partitions);
        assert_eq!(
            got,
            expected,
            "{} placed records differently from the built-in murmur2",
            path.name()
        );
        let via_broker = broker(plugins, &settings(Some(path.plugin())), recs, partitions);
        let builtin = broker(plugins, &settings(None), recs, partitions);
        assert!(
            via_broker.iter().zip(&builtin).all(|(a, b)| a == b)
                && builtin.iter().zip(&expected).all(|(&a, &b)| a as u32 == b),
            "the broker placed records differently with and without {}",
            path.name()
        );
    }
}

fn plugins_config(native_dir: Option<&Path>) -> PluginsConfig {
    let mut c = PluginsConfig::default();
    if let Some(dir) = native_dir {
        c.native.enabled = true;
        c.native.dirs = vec![dir.to_path_buf()];
    }
    c
}

fn deploy_wasm(plugins: &Plugins, name: &str, wasm: &[u8]) -> quiver::plugin::DeployOutcome {
    plugins
        .deploy(DeployRequest {
            name: name.into(),
            kind: Kind::Partitioner,
            code: Code::Wasm(wasm.to_vec()),
            config: vec![],
            limits: LimitOverrides::default(),
        })
        .expect("deploy")
}

fn deploy_native(plugins: &Plugins, name: &str, file: &str) -> quiver::plugin::DeployOutcome {
    plugins
        .deploy(DeployRequest {
            name: name.into(),
            kind: Kind::Partitioner,
            code: Code::Native(file.into()),
            config: vec![],
            limits: LimitOverrides::default(),
        })
        .expect("deploy native")
}

fn calls_for(args: &Args, size: usize) -> usize {
    if size == 1 {
        args.calls_1
    } else {
        (args.records / size).max(20)
    }
}

fn part_partition(args: &Args, wasm: &[u8], native_so: Option<&Path>) -> Value {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugins = Plugins::open(
        &plugins_config(native_so.and_then(Path::parent)),
        tmp.path(),
    )
    .expect("open plugins");
    deploy_wasm(&plugins, PLUGIN, wasm);
    let mut paths = vec![Path_::Hash, Path_::Builtin, Path_::Wasm];
    if let Some(so) = native_so {
        let file = so.file_name().unwrap().to_str().unwrap();
        deploy_native(&plugins, NATIVE_PLUGIN, file);
        paths.push(Path_::NativeAbi);
    }
    let pool = records(args, POOL_RECORDS);
    for &p in &paths[2..] {
        check_agreement(&plugins, p, &pool, args.partitions);
    }
    eprintln!("plugin placements equal the built-in murmur2's (checked at sizes 1, 7, 256, 4096)");

    // Warm-up: one short pass over everything.
    for &size in &args.sizes {
        for &p in &paths {
            measure(
                &plugins,
                args.clock,
                p,
                &pool,
                size,
                (calls_for(args, size) / 10).max(2),
                args.partitions,
            );
        }
    }

    // [path][size] -> per-run (call, both)
    let mut call = vec![vec![Vec::new(); args.sizes.len()]; paths.len()];
    let mut both = call.clone();
    let t0 = Instant::now();
    for run in 0..args.runs {
        for (si, &size) in args.sizes.iter().enumerate() {
            for (pi, &p) in paths.iter().enumerate() {
                let (c, b) = measure(
                    &plugins,
                    args.clock,
                    p,
                    &pool,
                    size,
                    calls_for(args, size),
                    args.partitions,
                );
                call[pi][si].push(c);
                both[pi][si].push(b);
            }
        }
        eprintln!(
            "run {}/{} done ({:.1} s)",
            run + 1,
            args.runs,
            t0.elapsed().as_secs_f64()
        );
    }

    println!();
    println!(
        "## Partitioning cost, ns/record ({} clock) — median (min–max) of {} runs; {} partitions; keys {}–{} random bytes, values {} B, no headers",
        match args.clock { Clock::Thread => "thread CPU", Clock::Wall => "wall" },
        args.runs, args.partitions, args.key_min, args.key_max, args.value_bytes
    );
    println!();
    println!("`hash`: murmur2_partition over the keys into a Vec, nothing else. `builtin`: the broker's choose_partitions for a topic without a plugin. `call`: plugins.partition() only, columns built beforehand. `broker`: choose_partitions for a topic with the plugin (columns from the records + the call). Ratios, per run then median: call ÷ hash, broker ÷ builtin.");
    println!();
    let mut header = String::from("| batch | hash | builtin |");
    let mut rule = String::from("|---:|---:|---:|");
    for &p in &paths[2..] {
        header += &format!(
            " {0} call | {0} broker | call ÷ hash / broker ÷ builtin |",
            p.name()
        );
        rule += "---:|---:|---:|";
    }
    header += " wasm targets ≤2x & ≤15 ns (call; broker) |";
    rule += "---|";
    println!("{header}\n{rule}");

    const HASH: usize = 0;
    const BUILTIN: usize = 1;
    let mut rows = Vec::new();
    for (si, &size) in args.sizes.iter().enumerate() {
        let mut line = format!(
            "| {size} | {} | {} |",
            fmt_stat(&call[0][si], 1),
            fmt_stat(&call[BUILTIN][si], 1)
        );
        let mut row = json!({
            "batch": size,
            "calls_per_run": calls_for(args, size),
            "hash_ns_per_record": stat_json(&call[0][si]),
            "builtin_ns_per_record": stat_json(&call[BUILTIN][si]),
        });
        let mut wasm = None;
        for (pi, &p) in paths.iter().enumerate().skip(2) {
            let rc: Vec<f64> = (0..args.runs)
                .map(|r| call[pi][si][r] / call[HASH][si][r])
                .collect();
            let rb: Vec<f64> = (0..args.runs)
                .map(|r| both[pi][si][r] / call[BUILTIN][si][r])
                .collect();
            line += &format!(
                " {} | {} | {:.2}x / {:.2}x |",
                fmt_stat(&call[pi][si], 1),
                fmt_stat(&both[pi][si], 1),
                stat(&rc).median,
                stat(&rb).median
            );
            row[p.name()] = json!({
                "call_ns_per_record": stat_json(&call[pi][si]),
                "broker_ns_per_record": stat_json(&both[pi][si]),
                "ratio_call_to_hash": stat_json(&rc),
                "ratio_broker_to_builtin": stat_json(&rb),
            });
            if p == Path_::Wasm {
                wasm = Some([
                    (stat(&rc).median, stat(&call[pi][si]).median),
                    (stat(&rb).median, stat(&both[pi][si]).median),
                ]);
            }
        }
        let mark = match wasm {
            Some(regions) if size >= 256 => regions
                .iter()
                .map(|&(ratio, ns)| {
                    format!(
                        "{} {ratio:.2}x {} {ns:.1} ns",
                        if ratio <= 2.0 { "✓" } else { "✗" },
                        if ns <= 15.0 { "✓" } else { "✗" },
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => "(no target below 256)".into(),
        };
        line += &format!(" {mark} |");
        println!("{line}");
        rows.push(row);
    }

    // Fixed cost per call (time of a 1-record call) and marginal cost per record (slope
    // between the two largest sizes), from the medians.
    println!();
    println!("Split of the median time per call: fixed = a 1-record call; marginal = slope between the two largest batch sizes:");
    println!();
    println!("| path | region | fixed per call | marginal per record |");
    println!("|---|---|---:|---:|");
    let mut fits = json!({});
    let per_call = |data: &Vec<Vec<Vec<f64>>>, pi: usize, si: usize| {
        stat(&data[pi][si]).median * args.sizes[si] as f64
    };
    let n = args.sizes.len();
    for (pi, &p) in paths.iter().enumerate() {
        for (region, data) in [("call", &call), ("broker", &both)] {
            if matches!(p, Path_::Hash | Path_::Builtin) && region == "broker" || n < 2 {
                continue;
            }
            let fixed = args
                .sizes
                .iter()
                .position(|&s| s == 1)
                .map(|si| per_call(data, pi, si));
            let (s1, s2) = (args.sizes[n - 2] as f64, args.sizes[n - 1] as f64);
            let marginal = (per_call(data, pi, n - 1) - per_call(data, pi, n - 2)) / (s2 - s1);
            println!(
                "| {} | {region} | {} | {:.1} ns |",
                p.name(),
                fixed.map_or("-".into(), |f| format!("{f:.0} ns")),
                marginal
            );
            fits[format!("{}:{region}", p.name())] =
                json!({"fixed_ns_per_call": fixed, "marginal_ns_per_record": marginal});
        }
    }
    json!({ "rows": rows, "fits": fits, "paths": paths.iter().map(|p| p.name()).collect::<Vec<_>>() })
}

// ---------------------------------------------------------------------------------------
// Part 2: deploy-to-serving

fn first_call_us(plugins: &Plugins, name: &str, cols: &Columns, partitions: u32) -> f64 {
    let t = Instant::now();
    black_box(
        plugins
            .partition(name, cols.clone(), partitions)
            .expect("first call"),
    );
    t.elapsed().as_nanos() as f64 / 1000.0
}

fn part_deploy(args: &Args, wasm: &[u8], native_so: Option<&Path>) -> Value {
    let pool = records(args, 16);
    let cols = build_columns(&pool);
    let native_dir = native_so.and_then(Path::parent);
    let config = plugins_config(native_dir);

    let mut open_ms = Vec::new();
    let mut cold_wall = Vec::new();
    let mut cold_deploy = Vec::new();
    let mut cold_inst = Vec::new();
    let mut cold_first = Vec::new();
    let mut last_dir = None;
    for i in 0..args.cold_deploys {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let plugins = Plugins::open(&config, dir.path()).expect("open");
        open_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let o = deploy_wasm(&plugins, PLUGIN, wasm);
        cold_wall.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!o.cached, "a fresh data directory had compiled code cached");
        cold_deploy.push(o.deploy_us as f64 / 1e3);
        cold_inst.push(o.instantiate_us as f64);
        cold_first.push(first_call_us(&plugins, PLUGIN, &cols, args.partitions));
        drop(plugins);
        if i + 1 == args.cold_deploys {
            last_dir = Some(dir);
        }
    }
    let dir = last_dir.expect("at least one cold deploy");

    // Warm: the same bytes again, compiled code from the cache.
    let plugins = Plugins::open(&config, dir.path()).expect("open");
    let mut warm_wall = Vec::new();
    let mut warm_deploy = Vec::new();
    let mut warm_inst = Vec::new();
    let mut warm_first = Vec::new();
    for _ in 0..args.warm_deploys {
        let t = Instant::now();
        let o = deploy_wasm(&plugins, PLUGIN, wasm);
        warm_wall.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(o.cached, "a redeploy of the same bytes missed the cache");
        warm_deploy.push(o.deploy_us as f64 / 1e3);
        warm_inst.push(o.instantiate_us as f64);
        warm_first.push(first_call_us(&plugins, PLUGIN, &cols, args.partitions));
    }
    drop(plugins);

    // Restart: open a data directory that holds the plugin (compiled code cached).
    let mut restart_ms = Vec::new();
    let mut restart_first = Vec::new();
    for _ in 0..args.warm_deploys.clamp(3, 7) {
        let t = Instant::now();
        let plugins = Plugins::open(&config, dir.path()).expect("reopen");
        restart_ms.push(t.elapsed().as_secs_f64() * 1e3);
        restart_first.push(first_call_us(&plugins, PLUGIN, &cols, args.partitions));
    }

    // Native .so deploys.
    let mut native_wall = Vec::new();
    let mut native_first = Vec::new();
    if let Some(so) = native_so {
        let file = so.file_name().unwrap().to_str().unwrap();
        let plugins = Plugins::open(&config, dir.path()).expect("open");
        for _ in 0..args.warm_deploys {
            let t = Instant::now();
            deploy_native(&plugins, NATIVE_PLUGIN, file);
            native_wall.push(t.elapsed().as_secs_f64() * 1e3);
            native_first.push(first_call_us(
                &plugins,
                NATIVE_PLUGIN,
                &cols,
                args.partitions,
            ));
        }
    }

    println!();
    println!(
        "## Deploy-to-serving — median (min–max); component {} bytes",
        wasm.len()
    );
    println!();
    println!("`deploy()` wall = the call returning, plugin serving (validate, store, compile or load, link, instantiate + init one instance, registry fsync). `deploy_us`/`instantiate_us` are DeployOutcome's own figures. First call = one 16-record call right after.");
    println!();
    println!("| what | n | deploy() wall, ms | deploy_us, ms | instantiate, µs | first call, µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| cold (compile) | {} | {} | {} | {} | {} |",
        cold_wall.len(),
        fmt_stat(&cold_wall, 2),
        fmt_stat(&cold_deploy, 2),
        fmt_stat(&cold_inst, 0),
        fmt_stat(&cold_first, 1)
    );
    println!(
        "| warm (cached component) | {} | {} | {} | {} | {} |",
        warm_wall.len(),
        fmt_stat(&warm_wall, 2),
        fmt_stat(&warm_deploy, 2),
        fmt_stat(&warm_inst, 0),
        fmt_stat(&warm_first, 1)
    );
    println!(
        "| restart: Plugins::open with the plugin stored | {} | {} | | | {} |",
        restart_ms.len(),
        fmt_stat(&restart_ms, 2),
        fmt_stat(&restart_first, 1)
    );
    if !native_wall.is_empty() {
        println!(
            "| native .so | {} | {} | | | {} |",
            native_wall.len(),
            fmt_stat(&native_wall, 2),
            fmt_stat(&native_first, 1)
        );
    }
    println!(
        "| (Plugins::open, empty directory: engine + epoch thread) | {} | {} | | | |",
        open_ms.len(),
        fmt_stat(&open_ms, 2)
    );
    json!({
        "component_bytes": wasm.len(),
        "cold": { "wall_ms": stat_json(&cold_wall), "deploy_ms": stat_json(&cold_deploy), "instantiate_us": stat_json(&cold_inst), "first_call_us": stat_json(&cold_first) },
        "warm": { "wall_ms": stat_json(&warm_wall), "deploy_ms": stat_json(&warm_deploy), "instantiate_us": stat_json(&warm_inst), "first_call_us": stat_json(&warm_first) },
        "restart": { "open_ms": stat_json(&restart_ms), "first_call_us": stat_json(&restart_first) },
        "native": if native_wall.is_empty() { Value::Null } else { json!({ "wall_ms": stat_json(&native_wall), "first_call_us": stat_json(&native_first) }) },
        "open_empty_ms": stat_json(&open_ms),
    })
}

// ---------------------------------------------------------------------------------------

fn profile_loop(args: &Args, wasm: &[u8], size: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugins = Plugins::open(&plugins_config(None), tmp.path()).expect("open");
    deploy_wasm(&plugins, PLUGIN, wasm);
    let pool = records(args, POOL_RECORDS);
    let deadline = Instant::now() + Duration::from_secs_f64(args.profile_secs);
    let settings = settings(Some(PLUGIN));
    let mut calls = 0usize;
    let t = Instant::now();
    while Instant::now() < deadline {
        for _ in 0..64 {
            let recs = batch(&pool, size, calls);
            black_box(broker(&plugins, &settings, recs, args.partitions));
            calls += 1;
        }
    }
    eprintln!(
        "profile loop: {calls} calls of {size} records, {:.1} ns/record",
        t.elapsed().as_nanos() as f64 / (calls * size) as f64
    );
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn main() {
    let args = Args::parse();
    let wasm_path = args
        .wasm
        .clone()
        .unwrap_or_else(|| target_dir().join("wasm32-wasip2/release/quiver_plugin_murmur2.wasm"));
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| {
        eprintln!(
            "plugin_bench: cannot read {}: {e}\nbuild it first: bash plugins/build.sh",
            wasm_path.display()
        );
        std::process::exit(2);
    });
    if let Some(size) = args.profile_size {
        profile_loop(&args, &wasm, size);
        return;
    }
    let so = args
        .native_so
        .clone()
        .unwrap_or_else(|| target_dir().join("release/libquiver_plugin_murmur2.so"));
    let native_so = if so.is_file() {
        Some(so.canonicalize().expect("canonical path"))
    } else {
        eprintln!(
            "plugin_bench: {} not found; skipping the native ABI (cargo build --release -p quiver-plugin-murmur2 --features native)",
            so.display()
        );
        None
    };
    let started = Instant::now();
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = json!({
        "bench": "plugin_bench",
        "args": format!("{args:?}"),
        "wasm": wasm_path.display().to_string(),
        "native_so": native_so.as_ref().map(|p| p.display().to_string()),
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_start": load0.trim(),
    });
    let only = args.only.as_deref();
    if only.is_none() || only == Some("partition") {
        out["partition"] = part_partition(&args, &wasm, native_so.as_deref());
    }
    if only.is_none() || only == Some("deploy") {
        out["deploy"] = part_deploy(&args, &wasm, native_so.as_deref());
    }
    let load1 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    out["loadavg_end"] = json!(load1.trim());
    out["seconds"] = json!(started.elapsed().as_secs_f64());
    println!();
    println!(
        "load average: {} at start, {} at end; {:.0} s",
        load0
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load1
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        started.elapsed().as_secs_f64()
    );
    if let Some(parent) = args.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&out).unwrap()).expect("write --out");
    println!("figures written to {}", args.out.display());
}
