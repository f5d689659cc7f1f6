//! `quiver mirror create|list|describe|pause|resume|delete|checkpoints|failover`, over
//! the admin API of the target cluster (mirrors run where the data goes).

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use serde_json::{json, Value};

use super::http::{call, encode, request};
use super::output::{cell, print_json, Table};
use super::Admin;

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum MirrorCommand {
    /// Mirror topics and group offsets of a source cluster into this one.
    #[command(after_help = "\
Examples:
  quiver plugin deploy mirror --kind connector --file quiver_plugin_mirror.wasm
  quiver mirror create east --source us-east-kafka:9092 --source-alias us-east --topics 'orders.*'
  quiver mirror create east --source 10.0.0.5:9092 --source-alias us-east --groups 'billing' \\
      --config naming=identity --exactly-once --wait
  quiver mirror describe east")]
    Create {
        /// Mirror name.
        name: String,
        /// The source cluster's bootstrap servers (host:port[,host:port…]).
        #[arg(long)]
        source: String,
        /// What this cluster calls the source: `--source-alias us-east` mirrors
        /// `orders` as `us-east.orders` under the default naming.
        #[arg(long)]
        source_alias: String,
        /// The connector plugin (deploy it first with `quiver plugin deploy --kind connector`).
        #[arg(long, default_value = "mirror")]
        plugin: String,
        /// Regular expression of source topics to mirror (whole names).
        #[arg(long)]
        topics: Option<String>,
        /// Regular expression of consumer groups whose offsets are translated.
        #[arg(long)]
        groups: Option<String>,
        /// How the source is reached: kafka (any Kafka-API cluster) or quic (a Quiver
        /// cluster's QUIC transport: --source names its cluster.listen addresses, and
        /// --source-ca its CA).
        #[arg(long, default_value = "kafka")]
        via: String,
        /// The source cluster's CA certificate (its ca.pem), for --via quic: the mirror
        /// trusts the source brokers it signed. The source must list this cluster's CA
        /// in its cluster.mirror_clients_ca.
        #[arg(long, value_name = "PATH")]
        source_ca: Option<std::path::PathBuf>,
        /// Plugin configuration, e.g. --config naming=identity (repeatable).
        #[arg(long, short)]
        config: Vec<String>,
        /// Write idempotently by source coordinates: no duplicates after a crash.
        #[arg(long)]
        exactly_once: bool,
        /// Replication factor of the target topics it creates (default: min(3, brokers)).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A source topic config not to copy (repeatable; replication settings never are).
        #[arg(long = "exclude-config")]
        exclude_configs: Vec<String>,
        /// How often to look for new topics and partitions at the source, ms.
        #[arg(long)]
        discovery_interval_ms: Option<u64>,
        /// How often to translate group offsets, ms.
        #[arg(long)]
        checkpoint_interval_ms: Option<u64>,
        /// Wait for the initial sync: until the mirror copies at least one topic and
        /// nothing is behind, showing its progress on a terminal.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300, value_name = "SECONDS", requires = "wait")]
        wait_timeout: u64,
        #[command(flatten)]
        admin: Admin,
    },
    /// List mirrors.
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Show a mirror's state, throughput, latency and records behind per partition.
    Describe {
        /// Mirror name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Pause a mirror; it keeps its positions.
    Pause {
        /// Mirror name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Resume a paused mirror.
    Resume {
        /// Mirror name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Delete a mirror (its target topics stay).
    Delete {
        /// Mirror name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Show the translated offsets of every mirrored group.
    Checkpoints {
        /// Mirror name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Move a consumer group to this cluster: commit its translated offsets here
    /// (refused while the group has members here).
    #[command(after_help = "\
Examples:
  quiver mirror failover east --group billing --dry-run
  quiver mirror failover east --group billing")]
    Failover {
        /// Mirror name.
        name: String,
        /// The consumer group.
        #[arg(long)]
        group: String,
        /// Show the offsets without committing them.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        admin: Admin,
    },
}

fn print_describe(v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let r = &v["report"];
    println!("mirror:     {}", s("name"));
    println!(
        "source:     {} (alias {}, via {})",
        s("source"),
        s("source_alias"),
        s("via")
    );
    println!("plugin:     {}", s("plugin"));
    println!(
        "delivery:   {}",
        if v["exactly_once"].as_bool() == Some(true) {
            "exactly-once"
        } else {
            "at-least-once"
        }
    );
    println!("status:     {}", s("status"));
    if let Some(reason) = r["reason"].as_str() {
        println!("reason:     {reason}");
    }
    if r.is_null() {
        println!(
            "runs on:    broker {} (ask its admin API for live figures)",
            v["runs_on"]
        );
        return;
    }
    println!(
        "copied:     {} records, {} bytes; {:.0} records/s, {:.0} bytes/s",
        r["records"],
        r["bytes"],
        r["records_per_sec"].as_f64().unwrap_or(0.0),
        r["bytes_per_sec"].as_f64().unwrap_or(0.0)
    );
    println!(
        "latency:    p50 {} ms, p99 {} ms (source timestamp to target append)",
        r["latency_p50_ms"], r["latency_p99_ms"]
    );
    println!(
        "dropped:    {} by the plugin, {} that came from this cluster",
        r["filtered"], r["loops_prevented"]
    );
    println!("behind:     {} records", v["behind"]);
    let mut table = Table::new([
        "SOURCE TOPIC",
        "TARGET TOPIC",
        "PARTITION",
        "POSITION",
        "SOURCE-HW",
        "BEHIND",
    ]);
    for (topic, t) in r["topics"].as_object().into_iter().flatten() {
        for p in t["partitions"].as_array().into_iter().flatten() {
            table.row([
                topic.clone(),
                cell(&t["target"]),
                cell(&p["partition"]),
                cell(&p["position"]),
                cell(&p["high_watermark"]),
                cell(&p["behind"]),
            ]);
        }
    }
    table.print();
}

async fn get(admin: &Admin, path: &str) -> anyhow::Result<Value> {
    call(&admin.admin, "GET", path, None).await
}

async fn post(admin: &Admin, path: &str, body: &Value) -> anyhow::Result<Value> {
    call(&admin.admin, "POST", path, Some(body)).await
}

pub(crate) async fn run(command: MirrorCommand) -> anyhow::Result<ExitCode> {
    match command {
        MirrorCommand::Create {
            name,
            source,
            source_alias,
            plugin,
            topics,
            groups,
            via,
            source_ca,
            config,
            exactly_once,
            replication_factor,
            exclude_configs,
            discovery_interval_ms,
            checkpoint_interval_ms,
            wait,
            wait_timeout,
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
                "source": source,
                "source_alias": source_alias,
                "plugin": plugin,
                "via": via,
                "config": entries,
                "exactly_once": exactly_once,
                "exclude_configs": exclude_configs,
            });
            if let Some(path) = &source_ca {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --source-ca {}", path.display()))?;
                body["source_ca"] = Value::from(pem);
            }
            for (key, value) in [
                ("topics", topics.map(Value::from)),
                ("groups", groups.map(Value::from)),
                ("replication_factor", replication_factor.map(Value::from)),
                (
                    "discovery_interval_ms",
                    discovery_interval_ms.map(Value::from),
                ),
                (
                    "checkpoint_interval_ms",
                    checkpoint_interval_ms.map(Value::from),
                ),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let v = post(&admin, "/v1/mirrors", &body)
                .await
                .with_context(|| format!("creating mirror '{name}'"))?;
            let v = if wait {
                super::wait::wait_for(
                    &admin,
                    &format!("/v1/mirrors/{}", encode(&name)),
                    &format!("mirror '{name}' to sync"),
                    std::time::Duration::from_secs(wait_timeout),
                    super::wait::mirror_look,
                )
                .await?
            } else {
                v
            };
            if admin.out.json() {
                print_json(&v);
            } else {
                println!(
                    "created mirror {name}: {} ({}) -> this cluster, plugin {}",
                    v["source"].as_str().unwrap_or(""),
                    v["source_alias"].as_str().unwrap_or(""),
                    v["plugin"].as_str().unwrap_or("")
                );
            }
        }
        MirrorCommand::List { admin } => {
            let v = get(&admin, "/v1/mirrors").await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                let mut table =
                    Table::new(["NAME", "ALIAS", "SOURCE", "STATUS", "RECORDS", "BEHIND"]);
                for m in v["mirrors"].as_array().into_iter().flatten() {
                    table.row([
                        cell(&m["name"]),
                        cell(&m["source_alias"]),
                        cell(&m["source"]),
                        cell(&m["status"]),
                        cell(&m["report"]["records"]),
                        cell(&m["behind"]),
                    ]);
                }
                table.print();
            }
        }
        MirrorCommand::Describe { name, admin } => {
            let v = get(&admin, &format!("/v1/mirrors/{}", encode(&name))).await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                print_describe(&v);
            }
        }
        MirrorCommand::Pause { name, admin } => {
            let v = post(
                &admin,
                &format!("/v1/mirrors/{}/pause", encode(&name)),
                &json!({}),
            )
            .await?;
            if admin.out.json() {
                print_json(&v)
            } else {
                println!("paused mirror '{name}'")
            }
        }
        MirrorCommand::Resume { name, admin } => {
            let v = post(
                &admin,
                &format!("/v1/mirrors/{}/resume", encode(&name)),
                &json!({}),
            )
            .await?;
            if admin.out.json() {
                print_json(&v)
            } else {
                println!("resumed mirror '{name}'")
            }
        }
        MirrorCommand::Delete { name, admin } => {
            let r = request(
                &admin.admin,
                "DELETE",
                &format!("/v1/mirrors/{}", encode(&name)),
                None,
                b"",
            )
            .await?;
            if r.status >= 400 {
                r.json()?;
            }
            admin
                .out
                .print(&serde_json::json!({ "deleted": name }), |_| {
                    println!("deleted mirror '{name}' (its target topics stay)")
                });
        }
        MirrorCommand::Checkpoints { name, admin } => {
            let v = get(
                &admin,
                &format!("/v1/mirrors/{}/checkpoints", encode(&name)),
            )
            .await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                let mut table = Table::new([
                    "GROUP",
                    "TARGET TOPIC",
                    "PARTITION",
                    "SOURCE-OFFSET",
                    "TARGET-OFFSET",
                ]);
                for (group, c) in v["groups"].as_object().into_iter().flatten() {
                    for o in c["offsets"].as_array().into_iter().flatten() {
                        table.row([
                            group.clone(),
                            cell(&o["target_topic"]),
                            cell(&o["partition"]),
                            cell(&o["source_offset"]),
                            cell(&o["target_offset"]),
                        ]);
                    }
                }
                table.print();
            }
        }
        MirrorCommand::Failover {
            name,
            group,
            dry_run,
            admin,
        } => {
            let v = post(
                &admin,
                &format!("/v1/mirrors/{}/failover", encode(&name)),
                &json!({ "group": group, "dry_run": dry_run }),
            )
            .await
            .with_context(|| format!("failing group '{group}' over"))?;
            if admin.out.json() {
                print_json(&v);
            } else {
                let mut table = Table::new(["TOPIC", "PARTITION", "OFFSET"]);
                for o in v["offsets"].as_array().into_iter().flatten() {
                    table.row([cell(&o["topic"]), cell(&o["partition"]), cell(&o["offset"])]);
                }
                table.print();
                if dry_run {
                    println!("dry run: nothing committed");
                } else {
                    println!("group '{group}' now starts here from the offsets above");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
