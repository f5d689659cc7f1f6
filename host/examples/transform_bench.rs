//! Transform plugin benchmark: prints figures, asserts nothing.
//!
//! ```sh
//! export CARGO_TARGET_DIR=$HOME/.cache/quiver/target
//! bash plugins/build.sh
//! cargo run --release -p quiver --example transform_bench -- --out target/bench/transform.json
//! ```
//!
//! Records per second through a transform, for `repartition` (pass-through) and
//! `json-redact` (parse the value as JSON, mask one field, serialise), with 100 B and
//! 1 KiB values, two ways:
//!
//! - `wasm`: the component through the broker's own path, `Plugins::transform` on a
//!   `TransformSession` — lowering the input columns into the guest, the guest's loop
//!   over the records, lifting the output columns, and the host's checks.
//! - `native`: the same plugin crate compiled into this binary, called through the
//!   SDK's `run_transform` on the same columns (what the guest runs, without the
//!   boundary).
//!
//! Input batches hold what one runner step reads (about 1 MiB: 8192 records of 100 B,
//! 1024 of 1 KiB); they are built before the timed region. Times are the thread's CPU
//! time, so figures are per core. Each run times every case in turn; figures are the
//! median and range over `--runs`, and WASM ÷ native is taken per run.

use std::path::PathBuf;

use clap::Parser;
use quiver::config::PluginsConfig;
use quiver::plugin::{Code, DeployRequest, Kind, LimitOverrides, Plugins};
use quiver_plugin_json_redact::JsonRedact;
use quiver_plugin_repartition::Repartition;
use quiver_plugin_sdk::columns::{Columns, ColumnsBuilder};
use quiver_plugin_sdk::testing::TransformHarness;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Transform plugin benchmark (prints figures; asserts nothing)")]
struct Args {
    /// Runs per figure.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Input bytes timed per case and run.
    #[arg(long, default_value_t = 64 << 20)]
    bytes: usize,
    /// Where the plugins are (default: $CARGO_TARGET_DIR/wasm32-wasip2/release).
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Records whose values are JSON objects of about `size` bytes with an `email` field
/// under `user`, keys of 8–12 bytes, one header.
fn batch(size: usize, records: usize) -> Columns {
    let mut b = ColumnsBuilder::new("in", 0);
    for i in 0..records {
        let base =
            json!({"id": i, "user": {"email": format!("u{i}@example.com"), "n": i}, "pad": ""});
        let pad = size.saturating_sub(base.to_string().len());
        let value = json!({"id": i, "user": {"email": format!("u{i}@example.com"), "n": i}, "pad": "x".repeat(pad)})
            .to_string();
        let key = format!("key-{i}");
        b.push(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[("trace", Some(b"t".as_slice()))],
            1_700_000_000_000 + i as i64,
            i as i64,
        );
    }
    b.build()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Case {
    plugin: &'static str,
    config: Vec<(&'static str, &'static str)>,
    size: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args.plugins.clone().unwrap_or_else(|| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        PathBuf::from(target).join("wasm32-wasip2/release")
    });
    let tmp = tempfile::tempdir()?;
    let plugins = Plugins::open(&PluginsConfig::default(), tmp.path())?;
    for (name, file) in [
        ("repartition", "quiver_plugin_repartition.wasm"),
        ("json-redact", "quiver_plugin_json_redact.wasm"),
    ] {
        let wasm = std::fs::read(dir.join(file)).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (build with plugins/build.sh)",
                dir.join(file).display()
            )
        })?;
        plugins.deploy(DeployRequest {
            name: name.into(),
            kind: Kind::Transform,
            code: Code::Wasm(wasm),
            config: vec![],
            limits: LimitOverrides {
                max_output_bytes: Some(64 << 20),
                ..Default::default()
            },
        })?;
    }
    let cases = [
        Case {
            plugin: "repartition",
            config: vec![],
            size: 100,
        },
        Case {
            plugin: "repartition",
            config: vec![],
            size: 1024,
        },
        Case {
            plugin: "json-redact",
            config: vec![("paths", "user.email")],
            size: 100,
        },
        Case {
            plugin: "json-redact",
            config: vec![("paths", "user.email")],
            size: 1024,
        },
    ];
    let mut rows = Vec::new();
    println!(
        "{:<12} {:>6} {:>22} {:>22} {:>12} {:>12}  {:>14}",
        "plugin",
        "value",
        "wasm rec/s",
        "native rec/s",
        "wasm MB/s",
        "native MB/s",
        "wasm ÷ native"
    );
    for case in &cases {
        let per_batch = (1 << 20) / (case.size + 40);
        let input = batch(case.size, per_batch);
        let input_bytes = input.data.len() as f64;
        let batches = (args.bytes / input.data.len()).max(1);
        let mut config: Vec<(String, String)> = case
            .config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config.push(("quiver.input".into(), "in".into()));
        config.push(("quiver.outputs".into(), "out".into()));
        let mut session =
            plugins.open_transform(case.plugin, config.clone(), &Default::default())?;
        let pairs: Vec<(&str, &str)> = config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let native_run: Box<dyn Fn(&Columns) -> quiver_plugin_sdk::Result<_>> = match case.plugin {
            "repartition" => {
                let h = TransformHarness::<Repartition>::init(&pairs)?;
                Box::new(move |c| h.transform(c))
            }
            _ => {
                let h = TransformHarness::<JsonRedact>::init(&pairs)?;
                Box::new(move |c| h.transform(c))
            }
        };
        let (mut wasm, mut native, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let started = thread_cpu_ns();
            for _ in 0..batches {
                let out = plugins.transform(&mut session, input.clone())?;
                std::hint::black_box(out);
            }
            let w = (batches * per_batch) as f64 / ((thread_cpu_ns() - started) as f64 / 1e9);
            let started = thread_cpu_ns();
            for _ in 0..batches {
                let out = native_run(&input)?;
                std::hint::black_box(out);
            }
            let n = (batches * per_batch) as f64 / ((thread_cpu_ns() - started) as f64 / 1e9);
            ratio.push(w / n);
            wasm.push(w);
            native.push(n);
        }
        let (w, n, r) = (median(&mut wasm), median(&mut native), median(&mut ratio));
        let mb = |rate: f64| rate * input_bytes / per_batch as f64 / 1e6;
        println!(
            "{:<12} {:>5}B {:>10.0} ({:.0}–{:.0}) {:>10.0} ({:.0}–{:.0}) {:>12.1} {:>12.1}  {:>13.2}x",
            case.plugin,
            case.size,
            w,
            wasm[0],
            wasm[wasm.len() - 1],
            n,
            native[0],
            native[native.len() - 1],
            mb(w),
            mb(n),
            r
        );
        rows.push(json!({
            "plugin": case.plugin, "value_bytes": case.size, "batch_records": per_batch,
            "wasm_records_per_s": w, "native_records_per_s": n, "wasm_over_native": r,
            "wasm_mb_per_s": mb(w), "native_mb_per_s": mb(n), "runs": args.runs,
        }));
    }
    if let Some(out) = &args.out {
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
