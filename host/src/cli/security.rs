//! `quiver user`, `quiver acl` and `quiver tls`: SCRAM users and ACLs over the admin
//! API, and development certificates for the TLS listeners.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::http::{call, encode};
use super::output::{cell, Table};
use super::Admin;

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create a SCRAM user, or replace its credentials (PLAIN logins check the same).
    Create {
        /// User name (the principal is User:<name>).
        name: String,
        /// The password (salted on the broker; never stored).
        #[arg(long, env = "QUIVER_USER_PASSWORD")]
        password: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512 (repeatable; default both).
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations (4096..=16384).
        #[arg(long)]
        iterations: Option<u32>,
        #[command(flatten)]
        admin: Admin,
    },
    /// List users and their mechanisms.
    List {
        #[command(flatten)]
        admin: Admin,
    },
    /// Delete a user and all its credentials.
    Delete {
        /// User name.
        name: String,
        #[command(flatten)]
        admin: Admin,
    },
}

/// Which ACLs: the resource, principal, host, operations and permission.
#[derive(Debug, Args)]
pub(crate) struct AclSelector {
    /// Principal, e.g. User:alice (User:* is everyone).
    #[arg(long)]
    principal: Option<String>,
    /// Operation: all, read, write, create, delete, alter, describe, cluster_action,
    /// describe_configs, alter_configs, idempotent_write (repeatable).
    #[arg(long = "operation")]
    operations: Vec<String>,
    /// A topic name or prefix (`*` is every topic).
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group name or prefix.
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// A transactional id or prefix.
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    /// The cluster.
    #[arg(long, group = "resource")]
    cluster: bool,
    /// How the name matches: literal or prefixed.
    #[arg(long)]
    pattern: Option<String>,
    /// Client host (an IP address, or * for any).
    #[arg(long)]
    host: Option<String>,
    /// A DENY ACL (default: ALLOW).
    #[arg(long)]
    deny: bool,
}

impl AclSelector {
    /// The fields shared by every operation, as JSON.
    fn base(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        let (resource_type, name) = match (&self.topic, &self.group, &self.transactional_id) {
            (Some(t), ..) => (Some("topic"), Some(t.clone())),
            (_, Some(g), _) => (Some("group"), Some(g.clone())),
            (.., Some(t)) => (Some("transactional_id"), Some(t.clone())),
            _ if self.cluster => (Some("cluster"), None),
            _ => (None, None),
        };
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_string(), Value::String(v));
            }
        };
        put("resource_type", resource_type.map(String::from));
        put("name", name);
        put("pattern", self.pattern.clone());
        put("principal", self.principal.clone());
        put("host", self.host.clone());
        if self.deny {
            put("permission", Some("deny".into()));
        }
        m
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// Add ACLs: one per --operation.
    Create {
        #[command(flatten)]
        selector: AclSelector,
        #[command(flatten)]
        admin: Admin,
    },
    /// List ACLs, optionally only those the selector matches.
    List {
        #[command(flatten)]
        selector: AclSelector,
        #[command(flatten)]
        admin: Admin,
    },
    /// Delete the ACLs the selector matches (one filter per --operation, or any
    /// operation when none is given).
    Delete {
        #[command(flatten)]
        selector: AclSelector,
        /// Delete every ACL (when no selector is given).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: Admin,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TlsCommand {
    /// Make a CA, a server certificate and client certificates for the Kafka
    /// listeners (for development: production keys come from your own CA).
    Certs {
        /// Directory to write into (created if missing).
        dir: PathBuf,
        /// DNS names and IP addresses of the server certificate.
        #[arg(long, value_delimiter = ',', default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
        hosts: Vec<String>,
        /// Client certificates to make, by name (subject CN=<name>), e.g. alice,bob.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        /// Replace an existing CA (and so every certificate it signed).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        out: super::OutputArgs,
    },
}

fn print(v: &Value, json_out: bool, human: impl FnOnce(&Value)) {
    if json_out {
        super::output::print_json(v);
    } else {
        human(v)
    }
}

fn acl_line(a: &Value) -> String {
    let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
    format!(
        "{:<6} {:<22} {:<16} {:<9} {:<17} {:<24} {}",
        s("permission"),
        s("principal"),
        s("operation"),
        s("pattern"),
        s("resource_type"),
        s("name"),
        s("host")
    )
}

pub(crate) async fn run_user(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Create {
            name,
            password,
            mechanisms,
            iterations,
            admin,
        } => {
            let mut body = json!({ "password": password });
            if !mechanisms.is_empty() {
                body["mechanisms"] = json!(mechanisms);
            }
            if let Some(i) = iterations {
                body["iterations"] = json!(i);
            }
            let path = format!("/v1/users/{}", encode(&name));
            let v = call(&admin.admin, "PUT", &path, Some(&body)).await?;
            print(&v, admin.out.json(), |v| {
                println!(
                    "user '{name}' has credentials for {} ({} iterations)",
                    v["mechanisms"]
                        .as_array()
                        .map(|m| m
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default(),
                    v["iterations"]
                )
            });
        }
        UserCommand::List { admin } => {
            let v = call(&admin.admin, "GET", "/v1/users", None).await?;
            print(&v, admin.out.json(), |v| {
                let mut table = Table::new(["USER", "MECHANISMS"]);
                for u in v["users"].as_array().into_iter().flatten() {
                    let mechs: Vec<String> = u["mechanisms"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| {
                            format!(
                                "{} ({})",
                                m["mechanism"].as_str().unwrap_or("?"),
                                m["iterations"]
                            )
                        })
                        .collect();
                    table.row([cell(&u["name"]), mechs.join(", ")]);
                }
                table.print();
            });
        }
        UserCommand::Delete { name, admin } => {
            let path = format!("/v1/users/{}", encode(&name));
            let v = call(&admin.admin, "DELETE", &path, None).await?;
            print(&v, admin.out.json(), |_| println!("deleted user '{name}'"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run_acl(command: AclCommand) -> anyhow::Result<ExitCode> {
    match command {
        AclCommand::Create { selector, admin } => {
            if selector.operations.is_empty() {
                anyhow::bail!("name at least one --operation");
            }
            let acls: Vec<Value> = selector
                .operations
                .iter()
                .map(|op| {
                    let mut m = selector.base();
                    m.insert("operation".into(), Value::String(op.clone()));
                    Value::Object(m)
                })
                .collect();
            let v = call(&admin.admin, "POST", "/v1/acls", Some(&json!(acls))).await?;
            print(&v, admin.out.json(), |v| {
                for a in v["created"].as_array().into_iter().flatten() {
                    println!("created {}", acl_line(a));
                }
            });
        }
        AclCommand::List { selector, admin } => {
            let mut query = selector.base();
            if let Some(op) = selector.operations.first() {
                query.insert("operation".into(), Value::String(op.clone()));
            }
            let v = call(
                &admin.admin,
                "GET",
                &format!("/v1/acls{}", query_string(&query)),
                None,
            )
            .await?;
            print(&v, admin.out.json(), |v| {
                if v["authorizer"] == json!(false) {
                    eprintln!("note: security.authorizer is off on this broker; these ACLs are not enforced");
                }
                let mut table = Table::new([
                    "PERM",
                    "PRINCIPAL",
                    "OPERATION",
                    "PATTERN",
                    "RESOURCE",
                    "NAME",
                    "HOST",
                ]);
                for a in v["acls"].as_array().into_iter().flatten() {
                    table.row(
                        [
                            "permission",
                            "principal",
                            "operation",
                            "pattern",
                            "resource_type",
                            "name",
                            "host",
                        ]
                        .map(|k| cell(&a[k])),
                    );
                }
                table.print();
            });
        }
        AclCommand::Delete {
            selector,
            all,
            admin,
        } => {
            let operations: Vec<Option<String>> = if selector.operations.is_empty() {
                vec![None]
            } else {
                selector.operations.iter().cloned().map(Some).collect()
            };
            let mut deleted = Vec::new();
            for op in operations {
                let mut query = selector.base();
                if let Some(op) = op {
                    query.insert("operation".into(), Value::String(op));
                }
                if all {
                    query.insert("all".into(), Value::String("true".into()));
                }
                let v = call(
                    &admin.admin,
                    "DELETE",
                    &format!("/v1/acls{}", query_string(&query)),
                    None,
                )
                .await?;
                deleted.extend(v["deleted"].as_array().cloned().unwrap_or_default());
            }
            let v = json!({ "deleted": deleted });
            print(&v, admin.out.json(), |_| {
                for a in &deleted {
                    println!("deleted {}", acl_line(a));
                }
                if deleted.is_empty() {
                    println!("no ACL matched");
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn query_string(m: &serde_json::Map<String, Value>) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub(crate) fn run_tls(command: TlsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TlsCommand::Certs {
            dir,
            hosts,
            clients,
            force,
            out,
        } => {
            let made = crate::tenancy::tls::create_listener_certs(&dir, &hosts, &clients, force)
                .with_context(|| format!("making certificates in {}", dir.display()))?;
            let view = json!({ "written": made.written });
            out.print(&view, |_| {
                for path in &made.written {
                    println!("wrote {}", path.display());
                }
                if made.written.is_empty() {
                    println!(
                        "nothing to do: {} has a CA and a server certificate",
                        dir.display()
                    );
                }
                println!(
                    "set security.tls.cert_file={0}/server.pem, security.tls.key_file={0}/server.key, security.tls.client_ca_file={0}/ca.pem",
                    dir.display()
                );
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
