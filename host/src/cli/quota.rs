//! `quiver quota set|remove|list|policy`: client and tenant quotas, and the quota-policy
//! plugins that decide them, over the admin API.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::http::call;
use super::output::{cell, print_json, Table};
use super::Admin;

/// Whose quota: a user, a client id, both, their defaults, or a tenant.
#[derive(Debug, Args)]
pub(crate) struct EntityArgs {
    /// A user (the principal's name: `alice` for User:alice).
    #[arg(long, conflicts_with_all = ["default_user", "tenant"])]
    user: Option<String>,
    /// The default for every user without a quota of their own.
    #[arg(long)]
    default_user: bool,
    /// A Kafka client.id.
    #[arg(long, conflicts_with_all = ["default_client_id", "tenant"])]
    client_id: Option<String>,
    /// The default for every client id without a quota of its own.
    #[arg(long)]
    default_client_id: bool,
    /// A tenant: all its principals' traffic together.
    #[arg(long)]
    tenant: Option<String>,
    /// A client IP address (for --connection-creation-rate).
    #[arg(long, conflicts_with_all = ["default_ip", "tenant", "user", "default_user", "client_id", "default_client_id"])]
    ip: Option<String>,
    /// The default for every IP address without a quota of its own.
    #[arg(long, conflicts_with_all = ["tenant", "user", "default_user", "client_id", "default_client_id"])]
    default_ip: bool,
}

impl EntityArgs {
    fn entity(&self) -> anyhow::Result<Value> {
        let mut m = serde_json::Map::new();
        if let Some(t) = &self.tenant {
            if self.default_user || self.default_client_id {
                bail!("a tenant quota names only the tenant");
            }
            m.insert("tenant".into(), json!(t));
        }
        match (&self.user, self.default_user) {
            (Some(u), _) => {
                m.insert("user".into(), json!(u));
            }
            (None, true) => {
                m.insert("user".into(), Value::Null);
            }
            _ => {}
        }
        match (&self.client_id, self.default_client_id) {
            (Some(c), _) => {
                m.insert("client-id".into(), json!(c));
            }
            (None, true) => {
                m.insert("client-id".into(), Value::Null);
            }
            _ => {}
        }
        match (&self.ip, self.default_ip) {
            (Some(ip), _) => {
                m.insert("ip".into(), json!(ip));
            }
            (None, true) => {
                m.insert("ip".into(), Value::Null);
            }
            _ => {}
        }
        if m.is_empty() {
            bail!("name whose quota: --user, --default-user, --client-id, --default-client-id, --ip, --default-ip or --tenant");
        }
        Ok(Value::Object(m))
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum QuotaCommand {
    /// Set quotas of a user, client id, their defaults, or a tenant.
    #[command(after_help = "\
Examples:
  quiver quota set --user alice --producer-byte-rate 1048576 --consumer-byte-rate 2097152
  quiver quota set --default-client-id --request-percentage 25
  quiver quota set --tenant acme --producer-byte-rate 10485760
  quiver quota set --ip 10.0.0.7 --connection-creation-rate 5")]
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// Bytes per second produced.
        #[arg(long)]
        producer_byte_rate: Option<f64>,
        /// Bytes per second fetched.
        #[arg(long)]
        consumer_byte_rate: Option<f64>,
        /// Percent of one request-handling thread.
        #[arg(long)]
        request_percentage: Option<f64>,
        /// Partitions created or deleted per second.
        #[arg(long)]
        controller_mutation_rate: Option<f64>,
        /// Connections accepted per second from one IP address (--ip or --default-ip).
        #[arg(long)]
        connection_creation_rate: Option<f64>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Remove quotas (the named ones, or every quota of the entity).
    Remove {
        #[command(flatten)]
        entity: EntityArgs,
        /// producer_byte_rate, consumer_byte_rate, request_percentage,
        /// controller_mutation_rate or connection_creation_rate (repeatable; default
        /// all the entity can have).
        #[arg(long = "key")]
        keys: Vec<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// List quotas, quota policies, and what this broker meters against them.
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Bind or clear the quota-policy plugin that decides quotas.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `quiver quota policy …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Make a deployed quota-policy plugin decide the quotas of a tenant's clients
    /// (--tenant) or of every client no tenant policy covers. It replaces the
    /// configured client quotas for those clients; tenant quotas still apply on top.
    Set {
        /// The quota-policy plugin (deploy it with `quiver plugin deploy --kind quota-policy`).
        plugin: String,
        /// The tenant whose clients it decides.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Stop deciding quotas by plugin for a tenant (--tenant) or for the cluster.
    Clear {
        /// The tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
}

fn entity_text(e: &Value) -> String {
    e.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("<default>")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub(crate) async fn run(command: QuotaCommand) -> anyhow::Result<ExitCode> {
    match command {
        QuotaCommand::Set {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
            controller_mutation_rate,
            connection_creation_rate,
            admin,
        } => {
            let mut set = serde_json::Map::new();
            for (k, v) in [
                ("producer_byte_rate", producer_byte_rate),
                ("consumer_byte_rate", consumer_byte_rate),
                ("request_percentage", request_percentage),
                ("controller_mutation_rate", controller_mutation_rate),
                ("connection_creation_rate", connection_creation_rate),
            ] {
                if let Some(v) = v {
                    set.insert(k.into(), json!(v));
                }
            }
            if set.is_empty() {
                bail!("name at least one quota, e.g. --producer-byte-rate 1048576");
            }
            let body = json!({ "entity": entity.entity()?, "set": set });
            let v = call(&admin.admin, "POST", "/v1/quotas", Some(&body)).await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                println!("{}: {}", entity_text(&v["entity"]), v["values"]);
            }
        }
        QuotaCommand::Remove {
            entity,
            keys,
            admin,
        } => {
            let keys = match (keys.is_empty(), entity.ip.is_some() || entity.default_ip) {
                (false, _) => keys,
                (true, true) => vec!["connection_creation_rate".to_string()],
                (true, false) => [
                    "producer_byte_rate",
                    "consumer_byte_rate",
                    "request_percentage",
                    "controller_mutation_rate",
                ]
                .map(String::from)
                .to_vec(),
            };
            let body = json!({ "entity": entity.entity()?, "remove": keys });
            let v = call(&admin.admin, "POST", "/v1/quotas", Some(&body)).await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                println!("{}: {}", entity_text(&v["entity"]), v["values"]);
            }
        }
        QuotaCommand::List { admin } => {
            let v = call(&admin.admin, "GET", "/v1/quotas", None).await?;
            if admin.out.json() {
                print_json(&v);
                return Ok(ExitCode::SUCCESS);
            }
            let mut quotas = Table::new(["ENTITY", "QUOTAS"]);
            for q in v["quotas"].as_array().into_iter().flatten() {
                quotas.row([entity_text(&q["entity"]), q["values"].to_string()]);
            }
            quotas.print();
            let policies = v["policies"].as_array().cloned().unwrap_or_default();
            if !policies.is_empty() {
                let mut table = Table::new(["SCOPE", "POLICY", "VERSION", "KEY", "LIMITS"]);
                for p in policies {
                    let scope = p["tenant"]
                        .as_str()
                        .map_or("cluster".to_string(), |t| format!("tenant={t}"));
                    let plugin = cell(&p["plugin"]);
                    let version = cell(&p["version"]);
                    if let Some(reason) = p["failed"].as_str() {
                        table.row([
                            scope.clone(),
                            plugin.clone(),
                            version.clone(),
                            "(failing)".into(),
                            format!("{reason} (the limits in force stay)"),
                        ]);
                    }
                    let keys = p["keys"].as_array().cloned().unwrap_or_default();
                    if keys.is_empty() {
                        table.row([
                            scope.clone(),
                            plugin.clone(),
                            version.clone(),
                            "(no clients yet)".into(),
                            String::new(),
                        ]);
                    }
                    for k in keys {
                        table.row([
                            scope.clone(),
                            plugin.clone(),
                            version.clone(),
                            cell(&k["key"]),
                            k["limits"].to_string(),
                        ]);
                    }
                }
                println!();
                table.print();
            }
            let usage = v["usage_here"].as_array().cloned().unwrap_or_default();
            if !usage.is_empty() {
                let mut table = Table::new(["KEY", "TYPE", "RATE(this broker)"]);
                for u in usage {
                    table.row([
                        cell(&u["key"]),
                        cell(&u["type"]),
                        format!("{:.1}", u["rate"].as_f64().unwrap_or(0.0)),
                    ]);
                }
                println!();
                table.print();
            }
        }
        QuotaCommand::Policy(PolicyCommand::Set {
            plugin,
            tenant,
            admin,
        }) => {
            let body = json!({ "tenant": tenant, "plugin": plugin });
            let v = call(&admin.admin, "PUT", "/v1/quotas/policy", Some(&body)).await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                match &tenant {
                    Some(t) => println!("plugin {plugin} decides the quotas of tenant {t}"),
                    None => println!("plugin {plugin} decides the quotas of the cluster's clients"),
                }
            }
        }
        QuotaCommand::Policy(PolicyCommand::Clear { tenant, admin }) => {
            let body = json!({ "tenant": tenant, "plugin": null });
            let v = call(&admin.admin, "PUT", "/v1/quotas/policy", Some(&body)).await?;
            if admin.out.json() {
                print_json(&v);
            } else {
                match &tenant {
                    Some(t) => println!("tenant {t}'s quotas are no longer decided by a plugin"),
                    None => println!("the cluster's quotas are no longer decided by a plugin"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
