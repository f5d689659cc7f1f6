//! `quiver transform deploy|list|describe|pause|resume|remove`, over the admin API.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use serde_json::{json, Value};

use super::http::{encode, request};
use super::output::{cell, print_json, Table};
use super::plugin::LimitArgs;
use super::Admin;

// Parsed once per process: the size of the largest variant does not matter.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum TransformCommand {
    /// Run a transform plugin over a topic, writing to output topics (which must exist).
    #[command(after_help = "\
Examples:
  quiver plugin deploy redact --kind transform --file quiver_plugin_json_redact.wasm
  quiver topic create orders.clean --partitions 6
  quiver transform deploy --name clean --plugin redact --input orders --output orders.clean \\
      --config paths=customer.email --dead-letter orders.dlq --wait
  quiver transform deploy --name split --plugin split --input events --output a --output b --json
  quiver transform deploy --name small --plugin redact --input orders --output orders.clean \\
      --max-memory-bytes 16777216 --call-timeout-ms 50

Here --output names an output topic, so JSON output is chosen with --json.")]
    Deploy {
        /// Transform name.
        #[arg(long)]
        name: String,
        /// The transform plugin (deploy it first with `quiver plugin deploy --kind transform`).
        #[arg(long)]
        plugin: String,
        /// The input topic.
        #[arg(long)]
        input: String,
        /// An output topic (repeatable; the plugin's output indices follow this order).
        #[arg(long = "output", required = true)]
        outputs: Vec<String>,
        /// Where partitions start: earliest, latest, offset:N or timestamp:MS.
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Plugin configuration, e.g. --config paths=user.email (repeatable).
        #[arg(long, short)]
        config: Vec<String>,
        /// Deliver at-least-once: for plugins whose output is not a pure function of
        /// their input (exactly-once is the default).
        #[arg(long)]
        at_least_once: bool,
        /// Send records the plugin fails on to this topic (with the error in headers)
        /// instead of stopping at them.
        #[arg(long)]
        dead_letter: Option<String>,
        /// Most output records per input record.
        #[arg(long)]
        max_amplification: Option<u32>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Wait until the transform has caught up with its input (lag 0), showing its
        /// progress on a terminal.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300, value_name = "SECONDS", requires = "wait")]
        wait_timeout: u64,
        /// Admin API address of a broker (host:port).
        #[arg(long, default_value = super::DEFAULT_ADMIN, env = "QUIVER_ADMIN")]
        admin: String,
        /// Print the result as JSON (here `--output` names output topics, so only
        /// `--json` selects JSON).
        #[arg(long)]
        json: bool,
    },
    /// List transforms.
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Show a transform's status, lag and counters per partition.
    #[command(after_help = "\
Examples:
  quiver transform describe clean
  quiver transform describe clean --output json | jq .lag")]
    Describe {
        /// Transform name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Pause a transform; it keeps its position.
    Pause {
        /// Transform name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Resume a transform (also restarts partitions stopped at a failing record).
    Resume {
        /// Transform name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Remove a transform (its outputs stay).
    Remove {
        /// Transform name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
}

fn print_describe(v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    println!("transform:  {}", s("name"));
    println!("plugin:     {}", s("plugin"));
    println!("input:      {}", s("input"));
    let outputs: Vec<&str> = v["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("outputs:    {}", outputs.join(", "));
    println!("delivery:   {}", s("delivery"));
    match v["dead_letter"].as_str() {
        Some(topic) => println!("on error:   dead-letter to {topic}"),
        None => println!("on error:   stop"),
    }
    let limit = |k: &str, unit: &str| {
        let l = &v["limits"][k];
        format!(
            "{} {unit} ({})",
            l["value"],
            l["source"].as_str().unwrap_or("")
        )
    };
    if v["limits"].is_object() {
        println!(
            "limits:     memory {}, call timeout {}, output {}",
            limit("max_memory_bytes", "bytes"),
            limit("call_timeout_ms", "ms"),
            limit("max_output_bytes", "bytes")
        );
    }
    println!("status:     {}", s("status"));
    println!(
        "records:    {} in, {} out, {} dead letters, {} errors, lag {}",
        v["records_in"], v["records_out"], v["dead_letters"], v["errors"], v["lag"]
    );
    println!(
        "latency:    p50 {} ms, p99 {} ms (input timestamp to output acknowledged, slowest partition)",
        v["latency_p50_ms"], v["latency_p99_ms"]
    );
    let mut table = Table::new([
        "PARTITION",
        "STATE",
        "POSITION",
        "HW",
        "LAG",
        "P99 MS",
        "IN",
        "OUT",
        "EPOCH",
        "REASON",
    ]);
    for p in v["partitions"].as_array().into_iter().flatten() {
        let mut row = [
            "partition",
            "state",
            "position",
            "high_watermark",
            "lag",
            "latency_p99_ms",
            "records_in",
            "records_out",
            "producer_epoch",
        ]
        .map(|k| cell(&p[k]))
        .to_vec();
        let reason = p["reason"].as_str().or(p["last_error"].as_str());
        row.push(reason.unwrap_or_default().to_string());
        table.row(row);
    }
    table.print();
}

/// `POST /v1/transforms/{name}/{action}` (pause, resume), reported as `done`.
async fn act(name: &str, action: &str, done: &str, admin: &Admin) -> anyhow::Result<()> {
    let v = request(
        &admin.admin,
        "POST",
        &format!("/v1/transforms/{}/{action}", encode(name)),
        None,
        b"",
    )
    .await?
    .json()?;
    if admin.out.json() {
        print_json(&v);
    } else {
        println!("{done} transform '{name}'");
    }
    Ok(())
}

pub(crate) async fn run(command: TransformCommand) -> anyhow::Result<ExitCode> {
    match command {
        TransformCommand::Deploy {
            name,
            plugin,
            input,
            outputs,
            from,
            config,
            at_least_once,
            dead_letter,
            max_amplification,
            limits,
            wait,
            wait_timeout,
            admin,
            json,
        } => {
            let admin = Admin {
                admin,
                out: super::OutputArgs::from_json_flag(json),
            };
            let mut entries = serde_json::Map::new();
            for c in &config {
                let Some((k, v)) = c.split_once('=') else {
                    bail!("config `{c}` is not of the form key=value");
                };
                entries.insert(k.to_string(), Value::String(v.to_string()));
            }
            let mut body = json!({
                "name": name,
                "plugin": plugin,
                "input": input,
                "outputs": outputs,
                "from": from,
                "config": entries,
                "deterministic": !at_least_once,
            });
            if let Some(topic) = dead_letter {
                body["dead_letter"] = json!(topic);
            }
            if let Some(n) = max_amplification {
                body["max_amplification"] = json!(n);
            }
            for (k, v) in limits.given() {
                body[k] = json!(v);
            }
            let bytes = serde_json::to_vec(&body).expect("serialisable");
            let v = request(
                &admin.admin,
                "POST",
                "/v1/transforms",
                Some("application/json"),
                &bytes,
            )
            .await?
            .json()
            .with_context(|| format!("deploying transform '{name}'"))?;
            let v = if wait {
                super::wait::wait_for(
                    &admin,
                    &format!("/v1/transforms/{}", encode(&name)),
                    &format!("transform '{name}' to catch up"),
                    std::time::Duration::from_secs(wait_timeout),
                    super::wait::transform_look,
                )
                .await?
            } else {
                v
            };
            if admin.out.json() {
                print_json(&v);
            } else {
                println!(
                    "deployed transform {name}: {} -> {} ({}), plugin {}",
                    v["input"].as_str().unwrap_or(""),
                    outputs.join(", "),
                    v["delivery"].as_str().unwrap_or(""),
                    v["plugin"].as_str().unwrap_or("")
                );
            }
        }
        TransformCommand::List { admin } => {
            let v = request(&admin.admin, "GET", "/v1/transforms", None, b"")
                .await?
                .json()?;
            if admin.out.json() {
                print_json(&v);
            } else {
                let mut table =
                    Table::new(["NAME", "PLUGIN", "INPUT", "STATUS", "IN", "OUT", "LAG"]);
                for t in v["transforms"].as_array().into_iter().flatten() {
                    table.row(
                        [
                            "name",
                            "plugin",
                            "input",
                            "status",
                            "records_in",
                            "records_out",
                            "lag",
                        ]
                        .map(|k| cell(&t[k])),
                    );
                }
                table.print();
            }
        }
        TransformCommand::Describe { name, admin } => {
            let v = request(
                &admin.admin,
                "GET",
                &format!("/v1/transforms/{}", encode(&name)),
                None,
                b"",
            )
            .await?
            .json()?;
            if admin.out.json() {
                print_json(&v);
            } else {
                print_describe(&v);
            }
        }
        TransformCommand::Pause { name, admin } => act(&name, "pause", "paused", &admin).await?,
        TransformCommand::Resume { name, admin } => act(&name, "resume", "resumed", &admin).await?,
        TransformCommand::Remove { name, admin } => {
            let r = request(
                &admin.admin,
                "DELETE",
                &format!("/v1/transforms/{}", encode(&name)),
                None,
                b"",
            )
            .await?;
            if r.status >= 400 {
                r.json()?;
            }
            admin
                .out
                .print(&serde_json::json!({ "removed": name }), |_| {
                    println!("removed transform '{name}'")
                });
        }
    }
    Ok(ExitCode::SUCCESS)
}
