//! `quiver cluster …`: operator commands for the cluster itself.
//!
//! `status` asks a broker's admin API how the cluster looks. `certs` makes the certificates brokers authenticate each other with (see
//! [`crate::net::certs`]); it works on files only and needs no running broker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

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
    /// The admin API of any broker (host:port).
    #[arg(long, env = "QUIVER_ADMIN", default_value = "127.0.0.1:9644")]
    admin: String,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
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
}

pub(crate) async fn run(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClusterCommand::Certs(args) => certs(args),
        ClusterCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let response = super::http::request(&args.admin, "GET", "/v1/cluster", None, &[]).await?;
    let status = response.json()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let field = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!("cluster     {}", field(&status["cluster_id"]));
    println!("controller  {}", field(&status["controller"]));
    println!(
        "raft        term {}, commit index {}, voters {}, learners {}",
        field(&status["raft"]["term"]),
        field(&status["raft"]["commit_index"]),
        field(&status["raft"]["voters"]),
        field(&status["raft"]["learners"])
    );
    println!();
    println!(
        "{:>6}  {:<22} {:<22} {:<10} STATE",
        "BROKER", "KAFKA", "CLUSTER", "RACK"
    );
    for b in status["brokers"].as_array().into_iter().flatten() {
        let state = if b["fenced"].as_bool() == Some(true) {
            "fenced"
        } else {
            "live"
        };
        println!(
            "{:>6}  {:<22} {:<22} {:<10} {state}",
            field(&b["id"]),
            field(&b["kafka"]),
            field(&b["cluster"]),
            field(&b["rack"])
        );
    }
    for (title, key) in [
        ("under-replicated", "under_replicated"),
        ("offline", "offline"),
    ] {
        let parts: Vec<String> = status[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}-{}", field(&p["topic"]), field(&p["partition"])))
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
    Ok(ExitCode::SUCCESS)
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
