//! `quiver cluster …`: operator commands for the cluster itself.
//!
//! `status` asks a broker's admin API how the cluster looks. `certs` makes the certificates brokers authenticate each other with (see
//! [`crate::net::certs`]); it works on files only and needs no running broker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use super::output::{cell, Table};
use crate::net::certs;

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Create the cluster CA and broker certificates for the cluster transport (or add
    /// brokers: an existing CA in --out signs the certificates of new broker ids).
    Certs(CertsArgs),
    /// Show the controller, Raft term and commit index, brokers, and under-replicated
    /// and offline partitions.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The admin API of any broker.
    #[command(flatten)]
    admin: super::Admin,
}

#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// The cluster id (cluster.id); every certificate carries it.
    #[arg(long)]
    cluster_id: String,
    /// Broker ids to issue certificates for, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', required = true)]
    brokers: Vec<i32>,
    /// Directory to write into (created if missing); point cluster.tls_dir at it.
    #[arg(long)]
    out: PathBuf,
    /// DNS names and IP addresses to put into broker certificates besides the identity.
    #[arg(long, value_delimiter = ',', default_values_t = certs::DEFAULT_HOSTS.map(String::from))]
    hosts: Vec<String>,
    /// Replace an existing CA and existing broker certificates.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    output: super::OutputArgs,
}

pub(crate) async fn run(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Certs(args) => certs(args),
        ClusterCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let status = super::http::call(&args.admin.admin, "GET", "/v1/cluster", None).await?;
    args.admin.out.print(&status, print_status);
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &serde_json::Value) {
    println!("cluster     {}", cell(&status["cluster_id"]));
    println!("controller  {}", cell(&status["controller"]));
    println!(
        "raft        term {}, commit index {}, voters {}, learners {}",
        cell(&status["raft"]["term"]),
        cell(&status["raft"]["commit_index"]),
        cell(&status["raft"]["voters"]),
        cell(&status["raft"]["learners"])
    );
    println!();
    let mut table = Table::new(["BROKER", "KAFKA", "CLUSTER", "RACK", "STATE"]);
    for b in status["brokers"].as_array().into_iter().flatten() {
        let state = if b["fenced"].as_bool() == Some(true) {
            "fenced"
        } else {
            "live"
        };
        table.row([
            cell(&b["id"]),
            cell(&b["kafka"]),
            cell(&b["cluster"]),
            cell(&b["rack"]),
            state.to_string(),
        ]);
    }
    table.print();
    for (title, key) in [
        ("under-replicated", "under_replicated"),
        ("offline", "offline"),
    ] {
        let parts: Vec<String> = status[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}-{}", cell(&p["topic"]), cell(&p["partition"])))
            .collect();
        println!();
        println!(
            "{title} partitions: {}",
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(", ")
            }
        );
    }
}

/// `cluster certs`' answer.
#[derive(Debug, serde::Serialize)]
struct CertsReport {
    reused_ca: bool,
    written: Vec<PathBuf>,
    kept: Vec<PathBuf>,
}

fn certs(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let mut brokers = args.brokers.clone();
    brokers.sort_unstable();
    brokers.dedup();
    if let Some(id) = brokers.iter().find(|id| **id < 0) {
        bail!("broker id {id} is negative; broker ids are >= 0");
    }
    let report = certs::create_cluster_certs(
        &args.out,
        &args.cluster_id,
        &brokers,
        &args.hosts,
        args.force,
    )
    .with_context(|| format!("cannot make cluster certificates in {}", args.out.display()))?;
    let view = CertsReport {
        reused_ca: report.reused_ca,
        written: report.written.clone(),
        kept: report.kept.clone(),
    };
    args.output.print(&view, |report| {
        if report.reused_ca {
            println!(
                "signed with the existing CA in {}",
                args.out.join(certs::CA_CERT_FILE).display()
            );
        }
        for path in &report.written {
            let note = if path.ends_with(certs::CA_KEY_FILE) {
                " (the CA key: needed only to add brokers; keep it off the brokers if you can)"
            } else {
                ""
            };
            println!("wrote {}{note}", path.display());
        }
        for path in &report.kept {
            println!(
                "kept  {} (already there; --force replaces the CA and every listed broker's certificate)",
                path.display()
            );
        }
        println!(
            "each broker needs {} and its own broker-<id>.pem and broker-<id>.key; set cluster.id = {:?} and cluster.tls_dir",
            certs::CA_CERT_FILE,
            args.cluster_id
        );
    });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::Cli;

    #[test]
    fn certs_arguments_parse() {
        let cli = Cli::try_parse_from([
            "quiver",
            "cluster",
            "certs",
            "--cluster-id",
            "prod",
            "--brokers",
            "1,2,3",
            "--out",
            "/tmp/x",
        ])
        .unwrap();
        let text = format!("{cli:?}");
        assert!(text.contains("brokers: [1, 2, 3]"), "{text}");
        assert!(
            text.contains(r#"hosts: ["127.0.0.1", "localhost"]"#),
            "{text}"
        );
        assert!(text.contains("force: false"), "{text}");
    }

    #[test]
    fn certs_writes_a_loadable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let args = [
            "quiver",
            "cluster",
            "certs",
            "--cluster-id",
            "prod",
            "--brokers",
            "1,2",
            "--out",
            out.to_str().unwrap(),
            "--hosts",
            "10.0.0.1,broker.example",
        ];
        crate::cli::run(Cli::try_parse_from(args).unwrap()).unwrap();
        crate::net::ClusterTls::load(&out, "prod", 2).unwrap();
        // Again without --force: the CA stays, nothing is overwritten.
        let ca = std::fs::read(out.join("ca.pem")).unwrap();
        crate::cli::run(Cli::try_parse_from(args).unwrap()).unwrap();
        assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), ca);
    }
}
