//! `quiver plugin deploy|list|describe|logs|rollback|remove`, over the admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use super::http::{encode, request};
use super::output::{cell, print_json, Table};
use super::Admin;

/// The sandbox limits a plugin or transform deploy may set, each at most the broker's
/// `[plugins]` value (which is also the default).
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Memory cap per plugin instance, bytes (at most the broker's plugins.max_memory_bytes).
    ///
    /// Without it, a transform gets its plugin deployment's value, and a plugin the
    /// broker's.
    #[arg(long)]
    max_memory_bytes: Option<u64>,
    /// Deadline per plugin call, ms (at most the broker's plugins.call_timeout_ms).
    ///
    /// Without it, a transform gets its plugin deployment's value, and a plugin the
    /// broker's.
    #[arg(long)]
    call_timeout_ms: Option<u64>,
    /// Largest output per plugin call, bytes (at most the broker's plugins.max_output_bytes).
    ///
    /// Without it, a transform gets its plugin deployment's value, and a plugin the
    /// broker's.
    #[arg(long)]
    max_output_bytes: Option<u64>,
}

impl LimitArgs {
    /// The limits given, by the names the admin API takes them under.
    pub(crate) fn given(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("max_memory_bytes", self.max_memory_bytes),
            ("call_timeout_ms", self.call_timeout_ms),
            ("max_output_bytes", self.max_output_bytes),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Deploy a new version of a plugin (validated before it serves).
    #[command(after_help = "\
Examples:
  quiver plugin deploy vip --kind partitioner \\
      --file target/wasm32-wasip2/release/quiver_plugin_vip.wasm \\
      --config vip.prefixes=gold- --config vip.partitions=8
  quiver topic create orders --partitions 10 --config partitioner=vip   # then use it
  quiver plugin deploy redact --kind transform --file quiver_plugin_json_redact.wasm
  quiver plugin deploy fast --kind partitioner --native libfast.so       # plugins.native.enabled
  quiver plugin rollback vip                                             # serve the previous version")]
    Deploy {
        /// Plugin name.
        name: String,
        /// partitioner, transform, quota-policy or connector.
        #[arg(long, short)]
        kind: String,
        /// The WebAssembly component (.wasm).
        #[arg(
            long,
            short,
            required_unless_present = "native",
            conflicts_with = "native"
        )]
        file: Option<PathBuf>,
        /// A native library file inside plugins.native.dirs (trusted partitioners and transforms only).
        #[arg(long)]
        native: Option<String>,
        /// Plugin configuration, e.g. --config vip.partitions=8 (repeatable).
        #[arg(long, short)]
        config: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        admin: Admin,
    },
    /// List plugins.
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Show a plugin's versions, status, limits and metrics.
    Describe {
        /// Plugin name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Show a plugin's recent log lines (its stdout/stderr and host events).
    Logs {
        /// Plugin name.
        name: String,
        /// How many lines.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
        #[command(flatten)]
        admin: Admin,
    },
    /// Serve the previous version again.
    Rollback {
        /// Plugin name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Remove a plugin and all its versions.
    Remove {
        /// Plugin name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
}

pub(crate) async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Deploy {
            name,
            kind,
            file,
            native,
            config,
            limits,
            admin,
        } => {
            let mut query = format!("kind={}", encode(&kind));
            for c in &config {
                if !c.contains('=') {
                    bail!("config `{c}` is not of the form key=value");
                }
                query.push_str(&format!("&config={}", encode(c)));
            }
            for (k, v) in limits.given() {
                query.push_str(&format!("&{k}={v}"));
            }
            let body = match (&file, &native) {
                (Some(path), _) => {
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
                }
                (None, Some(lib)) => {
                    query.push_str(&format!("&native={}", encode(lib)));
                    Vec::new()
                }
                (None, None) => bail!("give --file or --native"),
            };
            let response = request(
                &admin.admin,
                "PUT",
                &format!("/v1/plugins/{}?{query}", encode(&name)),
                Some("application/wasm"),
                &body,
            )
            .await?;
            let v = response
                .json()
                .with_context(|| format!("deploying plugin '{name}'"))?;
            if admin.out.json() {
                print_json(&v);
            } else {
                println!(
                    "deployed {name} version {} ({}), serving after {:.1} ms (instantiate {} µs)",
                    v["version"],
                    v["kind"].as_str().unwrap_or(""),
                    v["deploy_us"].as_f64().unwrap_or(0.0) / 1000.0,
                    v["instantiate_us"]
                );
            }
        }
        PluginCommand::List { admin } => {
            let v = request(&admin.admin, "GET", "/v1/plugins", None, b"")
                .await?
                .json()?;
            if admin.out.json() {
                print_json(&v);
            } else {
                let mut table = Table::new([
                    "NAME", "KIND", "VERSION", "STATE", "CALLS", "ERRORS", "TRAPS",
                ]);
                for p in v["plugins"].as_array().into_iter().flatten() {
                    table.row([
                        cell(&p["name"]),
                        cell(&p["kind"]),
                        cell(&p["active_version"]),
                        cell(&p["status"]["state"]),
                        cell(&p["metrics"]["calls"]),
                        cell(&p["metrics"]["errors"]),
                        cell(&p["metrics"]["traps"]),
                    ]);
                }
                table.print();
            }
        }
        PluginCommand::Describe { name, admin } => {
            let v = request(
                &admin.admin,
                "GET",
                &format!("/v1/plugins/{}", encode(&name)),
                None,
                b"",
            )
            .await?
            .json()?;
            if admin.out.json() {
                print_json(&v);
            } else {
                println!("plugin:   {}", v["name"].as_str().unwrap_or(""));
                println!("kind:     {}", v["kind"].as_str().unwrap_or(""));
                println!("version:  {} (serving)", v["active_version"]);
                match v["status"]["state"].as_str() {
                    Some("failed") => println!(
                        "status:   FAILED: {}",
                        v["status"]["reason"].as_str().unwrap_or("")
                    ),
                    Some(s) => println!("status:   {s}"),
                    None => {}
                }
                let l = &v["limits"];
                println!(
                    "limits:   memory {} bytes, call timeout {} ms, output {} bytes",
                    l["max_memory_bytes"], l["call_timeout_ms"], l["max_output_bytes"]
                );
                let m = &v["metrics"];
                println!(
                    "metrics:  {} calls, {} records, {} errors, {} traps, {} µs in calls",
                    m["calls"], m["records"], m["errors"], m["traps"], m["call_time_us"]
                );
                println!("versions:");
                for ver in v["versions"].as_array().into_iter().flatten() {
                    let config: Vec<String> = ver["config"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|kv| {
                            format!(
                                "{}={}",
                                kv[0].as_str().unwrap_or(""),
                                kv[1].as_str().unwrap_or("")
                            )
                        })
                        .collect();
                    println!(
                        "  v{:<4} api {}  config [{}]",
                        ver["version"],
                        ver["api_version"].as_str().unwrap_or(""),
                        config.join(", ")
                    );
                }
            }
        }
        PluginCommand::Logs { name, lines, admin } => {
            let v = request(
                &admin.admin,
                "GET",
                &format!("/v1/plugins/{}/logs?lines={lines}", encode(&name)),
                None,
                b"",
            )
            .await?
            .json()?;
            if admin.out.json() {
                print_json(&v);
            } else {
                for l in v["lines"].as_array().into_iter().flatten() {
                    println!(
                        "{} {:<6} {}",
                        l["at_ms"],
                        l["stream"].as_str().unwrap_or(""),
                        l["line"].as_str().unwrap_or("")
                    );
                }
            }
        }
        PluginCommand::Rollback { name, admin } => {
            let v = request(
                &admin.admin,
                "POST",
                &format!("/v1/plugins/{}/rollback", encode(&name)),
                None,
                b"",
            )
            .await?
            .json()?;
            admin.out.print(&v, |v| {
                println!("{name} now serves version {}", v["active_version"])
            });
        }
        PluginCommand::Remove { name, admin } => {
            let r = request(
                &admin.admin,
                "DELETE",
                &format!("/v1/plugins/{}", encode(&name)),
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
                    println!("removed plugin '{name}'")
                });
        }
    }
    Ok(ExitCode::SUCCESS)
}
