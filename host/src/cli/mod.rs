//! The `quiver` command line: `serve` runs the broker; every other sub-command is a
//! Kafka client (on the broker's own codecs) or an admin API client for operators.
//!
//! What every client command shares lives here and in [`output`]: where it connects
//! ([`Connection`] for the Kafka API, [`Admin`] for the HTTP admin API), how it prints
//! (`--output table|json`), and errors that end with the next thing to try ([`Hinted`]).

pub mod client;
mod cluster;
mod completions;
mod config;
mod consume;
pub(crate) mod group;
mod http;
mod mirror;
mod output;
mod plugin;
mod produce;
mod quota;
mod security;
mod tenant;
mod topic;
mod transform;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
pub(crate) use output::OutputArgs;

/// The default Kafka address of `--bootstrap`, the broker's own default listener.
pub(crate) const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";
/// The default address of `--admin`, the broker's own default admin listener.
pub(crate) const DEFAULT_ADMIN: &str = "127.0.0.1:9644";

const LONG_ABOUT: &str = "\
Quiver: a Kafka-compatible streaming broker.

`quiver serve` runs a broker; every other command is a client for operators. Commands
that speak Kafka (topic, produce, consume, group) connect to --bootstrap (default
127.0.0.1:9092, or QUIVER_BOOTSTRAP); the others call the HTTP admin API at --admin
(default 127.0.0.1:9644, or QUIVER_ADMIN). Every command that prints takes
--output table|json.";

const AFTER_HELP: &str = "\
Common workflows:

  Start a broker (single node, data in ./quiver-data):
    quiver serve
    quiver serve --config quiver.toml --set log.retention_ms=86400000

  Create a topic, produce and consume:
    quiver topic create orders --partitions 6
    printf 'k1,v1\\nk2,v2\\n' | quiver produce orders --key-separator ,
    quiver produce orders --file events.txt
    quiver consume orders --from-beginning --output json

  Deploy a partitioner plugin and use it:
    quiver plugin deploy vip --kind partitioner --file quiver_plugin_vip.wasm --config vip.partitions=8
    quiver topic create payments --partitions 10 --config partitioner=vip

  Run a transform:
    quiver transform deploy --name clean --plugin redact --input orders --output orders.clean --wait

  Mirror another cluster into this one:
    quiver mirror create east --source us-east-kafka:9092 --source-alias us-east --topics 'orders.*' --wait
    quiver mirror failover east --group billing

  Tenants and quotas:
    quiver tenant create acme --prefix acme. --user acme-app:s3cret --max-partitions 100
    quiver quota set --tenant acme --producer-byte-rate 1048576

  Consumer groups:
    quiver group describe billing
    quiver group reset-offsets billing --topic orders --to-earliest --execute

  Configuration and shell completions:
    quiver config reference            every broker setting, its default and env override
    quiver config show --set kafka.listen=0.0.0.0:9092
    quiver completions bash > /etc/bash_completion.d/quiver

Run `quiver <command> --help` for the options and examples of each command.";

/// Quiver: a Kafka-compatible streaming broker.
#[derive(Debug, Parser)]
#[command(
    name = "quiver",
    version,
    about,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (single node with embedded defaults when given nothing).
    #[command(after_help = "\
Examples:
  quiver serve                                   # 127.0.0.1:9092, admin on 127.0.0.1:9644
  quiver serve --config quiver.toml
  quiver serve --data-dir /var/lib/quiver --kafka-listen 0.0.0.0:9092
  QUIVER_LOG__RETENTION_MS=3600000 quiver serve   # any setting from the environment

Every setting, its default and its environment variable: `quiver config reference`.")]
    Serve(ServeArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce lines from stdin or a file as records.
    #[command(after_help = "\
Examples:
  echo hello | quiver produce greetings
  printf 'alice:hi\\nbob:yo\\n' | quiver produce greetings --key-separator :
  quiver produce orders --file orders.txt --compression zstd      # with a progress bar
  quiver produce orders --file orders.txt --output json           # {\"topic\":…,\"records\":…}")]
    Produce(produce::ProduceArgs),
    /// Consume records and print them.
    #[command(after_help = "\
Examples:
  quiver consume orders --from-beginning
  quiver consume orders --partition 2 --offset 100 --max-messages 10
  quiver consume orders --format '%p/%o %k=%v %h\\n'
  quiver consume orders --from-end --follow
  quiver consume orders --output json | jq .value

With --output json each record is one JSON object on its own line:
  {\"topic\":\"orders\",\"partition\":0,\"offset\":7,\"timestamp\":1700000000000,
   \"key\":\"k1\",\"value\":\"v1\",\"headers\":[{\"key\":\"source\",\"value\":\"cli\"}]}
key, value and header values are strings when they are UTF-8, null when absent, and
{\"base64\":\"…\"} otherwise.")]
    Consume(consume::ConsumeArgs),
    /// Deploy and manage plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run transform plugins over topics: deploy, list, describe, pause, resume, remove.
    #[command(subcommand)]
    Transform(transform::TransformCommand),
    /// Mirror another cluster's topics and group offsets into this one: create, list,
    /// describe, pause, resume, delete, checkpoints, failover.
    #[command(subcommand)]
    Mirror(mirror::MirrorCommand),
    /// List, describe (with lag), reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Cluster administration: status, and certificates for the cluster transport.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// SCRAM users (SASL PLAIN and SCRAM logins): create, list, delete.
    #[command(subcommand)]
    User(security::UserCommand),
    /// ACLs, Kafka's model: create, list, delete.
    #[command(subcommand)]
    Acl(security::AclCommand),
    /// Certificates for the TLS listeners.
    #[command(subcommand)]
    Tls(security::TlsCommand),
    /// Tenants: namespaces with principals and limits.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Client and tenant quotas (Kafka's byte rates, request percentage, mutations).
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// The broker's settings: the reference of every key, and the effective configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
}

/// The flags that make a broker's configuration: `serve` runs with them, `config
/// show` prints what they add up to.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (default: ./quiver.toml if it exists).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Data directory (broker.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka listener address (kafka.listen).
    #[arg(long)]
    kafka_listen: Option<String>,
    /// Admin API address (admin.listen).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Any setting as section.key=value, e.g. --set log.retention_ms=60000.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ServeArgs {
    /// The flags as `section.key=value` overrides, in the order they apply.
    fn overrides(&self) -> Vec<String> {
        let mut overrides = Vec::new();
        if let Some(dir) = &self.data_dir {
            overrides.push(format!("broker.data_dir={}", dir.display()));
        }
        if let Some(listen) = &self.kafka_listen {
            overrides.push(format!("kafka.listen={listen}"));
        }
        if let Some(listen) = &self.admin_listen {
            overrides.push(format!("admin.listen={listen}"));
        }
        overrides.extend(self.set.iter().cloned());
        overrides
    }
}

/// Where Kafka clients connect, and how they print.
#[derive(Debug, Args, Clone)]
pub(crate) struct Connection {
    /// Kafka address of a broker (host:port[,host:port…]).
    #[arg(
        long,
        short = 'b',
        default_value = DEFAULT_BOOTSTRAP,
        env = "QUIVER_BOOTSTRAP",
        global = true
    )]
    bootstrap: String,
    #[command(flatten)]
    out: OutputArgs,
}

/// Where admin API clients connect, and how they print.
#[derive(Debug, Args, Clone)]
pub(crate) struct Admin {
    /// Admin API address of a broker (host:port).
    #[arg(long, default_value = DEFAULT_ADMIN, env = "QUIVER_ADMIN", global = true)]
    pub(crate) admin: String,
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

/// An error that knows what the operator can do about it: `main` prints the message
/// like any error and the hint on a line of its own after it.
#[derive(Debug)]
pub(crate) struct Hinted {
    message: String,
    hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// An error `message` with the next step to try.
pub(crate) fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// What the binary prints for an error: `error: <message and its causes>`, then a
/// `hint:` line for each hint the error carries.
pub fn error_report(err: &anyhow::Error) -> String {
    let mut text = format!("error: {err:#}");
    for cause in err.chain() {
        if let Some(h) = cause.downcast_ref::<Hinted>() {
            text.push_str("\nhint: ");
            text.push_str(&h.hint);
        }
    }
    text
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_on_closed_stdout();
    }
    match cli.command {
        Command::Serve(args) => {
            // Validated before logging starts or any port opens.
            let config = Config::load(args.config.as_deref(), &args.overrides())
                .context("invalid configuration")?;
            init_tracing();
            crate::durability::init()?;
            crate::server::run(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(cmd) => config::run(cmd),
        Command::Completions(args) => completions::run(args),
        Command::Topic(cmd) => block_on(topic::run(cmd)),
        Command::Produce(args) => block_on(produce::run(args)),
        Command::Consume(args) => block_on(consume::run(args)),
        Command::Plugin(cmd) => block_on(plugin::run(cmd)),
        Command::Group(cmd) => block_on(group::run(cmd)),
        Command::Transform(cmd) => block_on(transform::run(cmd)),
        Command::Mirror(cmd) => block_on(mirror::run(cmd)),
        Command::Cluster(cmd) => block_on(cluster::run(cmd)),
        Command::User(cmd) => block_on(security::run_user(cmd)),
        Command::Acl(cmd) => block_on(security::run_acl(cmd)),
        Command::Tls(cmd) => security::run_tls(cmd),
        Command::Tenant(cmd) => block_on(tenant::run(cmd)),
        Command::Quota(cmd) => block_on(quota::run(cmd)),
    }
}

/// A command whose output is piped into a reader that stops early (`| head`) ends
/// quietly, as other Unix tools do, instead of panicking on the failed print. Rust
/// ignores SIGPIPE for the sake of sockets; the broker keeps it so (a client hanging
/// up must never end the server), only the one-shot commands take the default back.
fn quiet_on_closed_stdout() {
    // SAFETY: restoring a signal's default disposition at startup, before any thread
    // exists, has no memory-safety conditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // openraft narrates every election and membership step at info; its warnings are
    // what an operator needs, the rest is for RUST_LOG=openraft=info.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Parses `k=v` pairs.
pub(crate) fn parse_pairs(pairs: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{what} `{p}` is not of the form key=value"))
        })
        .collect()
}

/// Turns a Kafka error code into an error naming it, and for the errors an operator
/// can act on, what to do next.
pub(crate) fn check(
    code: i16,
    message: Option<&str>,
    what: impl std::fmt::Display,
) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    let error = kafka_protocol::error::ResponseError::try_from_code(code);
    let name = error
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error {code}"));
    let text = match message {
        Some(m) if !m.is_empty() => format!("{what}: {name}: {m}"),
        _ => format!("{what}: {name}"),
    };
    match error.and_then(kafka_hint) {
        Some(hint) => Err(hinted(text, hint)),
        None => Err(anyhow::anyhow!(text)),
    }
}

/// The next step for a Kafka error an operator can do something about.
fn kafka_hint(error: kafka_protocol::error::ResponseError) -> Option<&'static str> {
    use kafka_protocol::error::ResponseError as E;
    Some(match error {
        E::UnknownTopicOrPartition | E::UnknownTopicId => {
            "`quiver topic list` shows the topics there are; `quiver topic create NAME` makes one"
        }
        E::TopicAlreadyExists => {
            "`quiver topic describe NAME` shows it; `quiver topic alter NAME` changes it"
        }
        E::GroupIdNotFound => "`quiver group list` shows the groups there are",
        E::NonEmptyGroup => "stop the group's consumers first, then try again",
        E::InvalidPartitions => {
            "a topic's partition count can only grow; `quiver topic describe NAME` shows it"
        }
        E::InvalidReplicationFactor => {
            "the replication factor cannot exceed the live brokers; `quiver cluster status` lists them"
        }
        E::InvalidConfig => "`quiver topic describe NAME` lists a topic's configs and their values",
        E::TopicAuthorizationFailed
        | E::GroupAuthorizationFailed
        | E::ClusterAuthorizationFailed => {
            "the CLI connects without credentials (User:ANONYMOUS): grant it with `quiver acl create`, or use a listener where it is allowed"
        }
        E::CoordinatorNotAvailable
        | E::NotCoordinator
        | E::CoordinatorLoadInProgress
        | E::LeaderNotAvailable
        | E::NotLeaderOrFollower
        | E::NotController => {
            "the cluster is moving leaders; try again in a moment (`quiver cluster status` shows it)"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_name_the_code_and_what_to_do() {
        let err = check(3, None, "topic 'orders'").unwrap_err();
        assert_eq!(
            error_report(&err),
            "error: topic 'orders': UnknownTopicOrPartition\n\
             hint: `quiver topic list` shows the topics there are; `quiver topic create NAME` makes one"
        );
        let err = check(36, Some("exists"), "creating topic 'a'").unwrap_err();
        assert!(error_report(&err).starts_with(
            "error: creating topic 'a': TopicAlreadyExists: exists\nhint: `quiver topic describe NAME`"
        ));
        // An error without advice is only the error.
        let err = check(2, None, "fetching t-0").unwrap_err();
        assert_eq!(error_report(&err), "error: fetching t-0: CorruptMessage");
        assert!(check(0, None, "fine").is_ok());
    }

    #[test]
    fn context_goes_before_the_hint() {
        let err = Err::<(), _>(hinted("cannot reach x", "try y"))
            .context("listing groups")
            .unwrap_err();
        assert_eq!(
            error_report(&err),
            "error: listing groups: cannot reach x\nhint: try y"
        );
    }

    #[test]
    fn every_command_parses_and_help_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
