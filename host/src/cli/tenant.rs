//! `quiver tenant create|alter|list|describe|delete`, over the admin API.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::http::{call, encode};
use super::output::{cell, print_json, Table};
use super::Admin;

/// A tenant's limits on the command line; unset flags are unlimited (create) or
/// unchanged (alter).
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Partitions of all the tenant's topics together.
    #[arg(long)]
    max_partitions: Option<i64>,
    /// Longest retention.ms of its topics (also their default).
    #[arg(long)]
    max_retention_ms: Option<i64>,
    /// Largest retention.bytes of its topics (also their default).
    #[arg(long)]
    max_retention_bytes: Option<i64>,
    /// Bytes its partitions may hold (produce is refused beyond it).
    #[arg(long)]
    max_stored_bytes: Option<i64>,
    /// Authenticated connections per broker.
    #[arg(long)]
    max_connections: Option<u32>,
}

impl LimitArgs {
    fn merge_into(&self, limits: &mut serde_json::Map<String, Value>) {
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                limits.insert(k.into(), v);
            }
        };
        put("max_partitions", self.max_partitions.map(Value::from));
        put("max_retention_ms", self.max_retention_ms.map(Value::from));
        put(
            "max_retention_bytes",
            self.max_retention_bytes.map(Value::from),
        );
        put("max_stored_bytes", self.max_stored_bytes.map(Value::from));
        put("max_connections", self.max_connections.map(Value::from));
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant: its namespace, principals (with ALL on the namespace) and limits.
    #[command(after_help = "\
Examples:
  quiver tenant create acme --prefix acme. --user acme-app:s3cret --max-partitions 100
  quiver tenant create beta --prefix beta. --principal User:CN=beta --max-stored-bytes 10737418240
  quiver quota set --tenant acme --producer-byte-rate 1048576     # then its quota")]
    Create {
        /// Tenant name.
        name: String,
        /// Prefix of its topics, groups and transactional ids, e.g. `acme.`.
        #[arg(long)]
        prefix: String,
        /// A principal acting for it, e.g. User:acme-app or User:CN=acme (repeatable).
        #[arg(long = "principal")]
        principals: Vec<String>,
        /// A SCRAM user to create for it, NAME:PASSWORD (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        admin: Admin,
    },
    /// Change a tenant's limits or add principals.
    Alter {
        /// Tenant name.
        name: String,
        /// A principal to add (repeatable).
        #[arg(long = "principal")]
        principals: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        admin: Admin,
    },
    /// List tenants with their usage.
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Show one tenant: namespace, principals, limits, usage.
    Describe {
        /// Tenant name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Delete a tenant and the ACLs it granted (its topics and users stay).
    Delete {
        /// Tenant name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
}

fn limit(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_tenant(t: &Value) {
    println!("tenant      {}", t["name"].as_str().unwrap_or("?"));
    println!("prefix      {}", t["prefix"].as_str().unwrap_or("?"));
    let principals: Vec<&str> = t["principals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("principals  {}", principals.join(", "));
    let l = &t["limits"];
    let u = &t["usage"];
    println!(
        "partitions  {} of {}",
        u["partitions"],
        limit(&l["max_partitions"])
    );
    println!(
        "stored      {} bytes here, of {}",
        u["stored_bytes_here"],
        limit(&l["max_stored_bytes"])
    );
    println!(
        "connections {} here, of {}",
        u["connections_here"],
        limit(&l["max_connections"])
    );
    println!(
        "retention   ms up to {}, bytes up to {}",
        limit(&l["max_retention_ms"]),
        limit(&l["max_retention_bytes"])
    );
    let topics: Vec<&str> = u["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "topics      {}",
        if topics.is_empty() {
            "-".into()
        } else {
            topics.join(", ")
        }
    );
}

pub(crate) async fn run(command: TenantCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::Create {
            name,
            prefix,
            principals,
            users,
            limits,
            admin,
        } => {
            let users = users
                .iter()
                .map(|u| match u.split_once(':') {
                    Some((n, p)) if !n.is_empty() && !p.is_empty() => {
                        Ok(json!({"name": n, "password": p}))
                    }
                    _ => bail!("--user takes NAME:PASSWORD, not `{u}`"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut l = serde_json::Map::new();
            limits.merge_into(&mut l);
            let body = json!({ "name": name, "prefix": prefix, "principals": principals, "users": users, "limits": l });
            let v = call(&admin.admin, "POST", "/v1/tenants", Some(&body)).await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                print_tenant(&v);
            }
        }
        TenantCommand::Alter {
            name,
            principals,
            limits,
            admin,
        } => {
            let path = format!("/v1/tenants/{}", encode(&name));
            let current = call(&admin.admin, "GET", &path, None).await?;
            let mut l = current["limits"].as_object().cloned().unwrap_or_default();
            limits.merge_into(&mut l);
            let mut all: Vec<Value> = current["principals"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for p in principals {
                if !all.contains(&json!(p)) {
                    all.push(json!(p));
                }
            }
            let body = json!({ "prefix": current["prefix"], "principals": all, "limits": l });
            let v = call(&admin.admin, "PUT", &path, Some(&body)).await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                print_tenant(&v);
            }
        }
        TenantCommand::List { admin } => {
            let v = call(&admin.admin, "GET", "/v1/tenants", None).await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                let mut table = Table::new([
                    "TENANT",
                    "PREFIX",
                    "PARTITIONS",
                    "STORED(here)",
                    "CONNS(here)",
                ]);
                for t in v["tenants"].as_array().into_iter().flatten() {
                    table.row([
                        cell(&t["name"]),
                        cell(&t["prefix"]),
                        format!(
                            "{}/{}",
                            t["usage"]["partitions"],
                            limit(&t["limits"]["max_partitions"])
                        ),
                        cell(&t["usage"]["stored_bytes_here"]),
                        cell(&t["usage"]["connections_here"]),
                    ]);
                }
                table.print();
            }
        }
        TenantCommand::Describe { name, admin } => {
            let v = call(
                &admin.admin,
                "GET",
                &format!("/v1/tenants/{}", encode(&name)),
                None,
            )
            .await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                print_tenant(&v);
            }
        }
        TenantCommand::Delete { name, admin } => {
            call(
                &admin.admin,
                "DELETE",
                &format!("/v1/tenants/{}", encode(&name)),
                None,
            )
            .await?;
            admin
                .out
                .print(&serde_json::json!({ "deleted": name }), |_| {
                    println!("deleted tenant '{name}' (its topics and users stay)")
                });
        }
    }
    Ok(ExitCode::SUCCESS)
}
