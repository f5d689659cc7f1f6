//! `quiver transform deploy|list|describe|pause|resume|remove`, over the admin API.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use serde_json::{json, Value};

use super::http::{encode, request};
use super::plugin::Admin;

#[derive(Debug, Subcommand)]
pub(crate) enum TransformCommand {
    /// Run a transform plugin over a topic, writing to output topics (which must exist).
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
        admin: Admin,
    },
    /// List transforms.
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Show a transform's status, lag and counters per partition.
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

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
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
    println!("status:     {}", s("status"));
    println!(
        "records:    {} in, {} out, {} dead letters, {} errors, lag {}",
        v["records_in"], v["records_out"], v["dead_letters"], v["errors"], v["lag"]
    );
    println!(
        "{:>9} {:<9} {:>12} {:>12} {:>10} {:>12} {:>12}  REASON",
        "PARTITION", "STATE", "POSITION", "HW", "LAG", "IN", "OUT"
    );
    for p in v["partitions"].as_array().into_iter().flatten() {
        println!(
            "{:>9} {:<9} {:>12} {:>12} {:>10} {:>12} {:>12}  {}",
            p["partition"].to_string(),
            p["state"].as_str().unwrap_or(""),
            p["position"].to_string(),
            p["high_watermark"].to_string(),
            p["lag"].to_string(),
            p["records_in"].to_string(),
            p["records_out"].to_string(),
            p["reason"]
                .as_str()
                .or(p["last_error"].as_str())
                .unwrap_or("")
        );
    }
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
    if admin.json {
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
            admin,
        } => {
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
            if admin.json {
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
            if admin.json {
                print_json(&v);
            } else {
                println!(
                    "{:<24} {:<20} {:<24} {:<9} {:>12} {:>12} {:>10}",
                    "NAME", "PLUGIN", "INPUT", "STATUS", "IN", "OUT", "LAG"
                );
                for t in v["transforms"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<20} {:<24} {:<9} {:>12} {:>12} {:>10}",
                        t["name"].as_str().unwrap_or(""),
                        t["plugin"].as_str().unwrap_or(""),
                        t["input"].as_str().unwrap_or(""),
                        t["status"].as_str().unwrap_or(""),
                        t["records_in"].to_string(),
                        t["records_out"].to_string(),
                        t["lag"].to_string()
                    );
                }
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
            if admin.json {
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
            println!("removed transform '{name}'");
        }
    }
    Ok(ExitCode::SUCCESS)
}
