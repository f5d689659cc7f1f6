//! `quiver serve`: opens the broker, binds its listeners and runs until SIGTERM/SIGINT.
//!
//! Order matters for operators: configuration is validated before anything else; the
//! data directory is recovered before a port opens, so a client never reaches a broker
//! that is still repairing its logs; and shutdown stops accepting, lets in-flight
//! requests finish, then flushes and closes every log (the clean-shutdown marker spares
//! the next start a log scan).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::Config;
use crate::controller::{
    Applied, BoxFuture, BrokerMeta, Command, Controller, PartitionState, RpcKind, Transport,
};
use crate::plugin::Plugins;
use crate::replication::{IsrChanger, LeaderLink, LinkFactory, ReplicaManager};

/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long startup waits for this broker's registration to be committed.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a controlled shutdown waits for the controller to move leadership away.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a broker with `config` until a termination signal.
pub fn run(config: Config) -> anyhow::Result<()> {
    raise_fd_limit(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quiver")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

/// File descriptors kept for everything but client connections: log segments and
/// their indexes, the cluster endpoint, the admin API.
const FD_RESERVE: u64 = 1024;

/// Raises this process's open-file limit to its hard limit, as the Kafka listeners'
/// `kafka.max_connections` are meant to be the limit that bites, not the descriptor
/// table; warns when even the hard limit is below what the settings allow.
fn raise_fd_limit(config: &Config) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        // An unlimited hard limit is not a value the kernel takes for open files
        // (fs.nr_open caps it, 2^20 by default).
        let target = limit.rlim_max.min(1 << 20);
        if limit.rlim_cur < target {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = target;
            }
        }
        limit.rlim_cur
    };
    let listeners = config.kafka.all_listeners().len() as u64;
    let wanted = listeners * u64::from(config.kafka.max_connections) + FD_RESERVE;
    if soft < wanted {
        tracing::warn!(
            open_files = soft,
            wanted,
            "the open-file limit is below kafka.max_connections per listener plus {FD_RESERVE} for logs; accepts will fail before the connection limit is reached (raise the limit or lower kafka.max_connections)"
        );
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.kafka.listen;
    let data_dir = config.broker.data_dir.clone();
    let started = std::time::Instant::now();
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .context("opening the broker")?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    let broker = Arc::new(broker);
    let (controller, endpoint, service) = start_controller(&broker).await?;
    broker.attach_peers(endpoint.clone());
    let replication = ReplicaManager::new(
        broker.config().broker.node_id,
        broker.config().cluster.clone(),
        Arc::new(ControllerIsr(controller.clone())),
        Arc::new(QuicLinks {
            endpoint: endpoint.clone(),
        }),
    );
    broker.attach_replication(replication.clone());
    let _ = service.replication.set(replication.clone());
    let duties = controller.spawn();
    if !controller.wait_registered(REGISTRATION_TIMEOUT).await {
        tracing::warn!(
            timeout_s = REGISTRATION_TIMEOUT.as_secs(),
            "not registered with the controller yet; serving the metadata known so far"
        );
    } else {
        if broker.config().cluster.seeds.is_empty() {
            broker
                .adopt_legacy_metadata()
                .await
                .context("adopting the topics of metadata.json")?;
        }
        broker.remove_stray_partitions();
    }
    broker
        .reconcile_now()
        .await
        .context("opening the partitions assigned to this broker")?;
    // Created at startup only once every seed broker is registered: placed earlier it
    // would leave out the brokers still starting. Otherwise the first FindCoordinator
    // creates it.
    let seeds = broker.config().cluster.seeds.len().max(1);
    if broker.metadata().live_brokers().count() >= seeds {
        if let Err(e) = broker.ensure_offsets_topic().await {
            tracing::debug!(error = %e, "__consumer_offsets not created yet");
        }
    }
    tracing::info!(
        data_dir = %data_dir.display(),
        topics = broker.topics().len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered data directory"
    );
    let plugin_settings = broker.config().plugins.clone();
    let plugin_dir = broker.config().broker.data_dir.clone();
    let plugins = tokio::task::spawn_blocking(move || Plugins::open(&plugin_settings, &plugin_dir))
        .await
        .context("loading plugins")?
        .context("loading plugins")?;
    let plugins = Arc::new(plugins);
    if broker.config().cluster.seeds.is_empty() {
        adopt_local_plugins(&broker, &plugins)
            .await
            .context("adopting this broker's plugins into the cluster metadata")?;
    }
    // The cluster's plugins are the truth; the local registry is their cache.
    {
        let (p, state) = (plugins.clone(), broker.metadata());
        tokio::task::spawn_blocking(move || p.sync(&state.plugins))
            .await
            .context("applying the cluster's plugins")?;
    }
    let reconciler = spawn_reconciler(broker.clone(), plugins.clone());
    let policies = broker.security().policies.clone();
    policies.attach(plugins.clone());
    let policy_windows = {
        let weak = Arc::downgrade(&broker);
        policies.spawn_windows(move || Some(weak.upgrade()?.metadata().quota_policies.clone()))
    };
    let transforms = Arc::new(crate::transform::Transforms::new(
        broker.clone(),
        plugins.clone(),
    ));
    let transform_tasks = transforms.spawn();
    let mirrors = Arc::new(crate::connect::Mirrors::new(
        broker.clone(),
        plugins.clone(),
    ));
    let mirror_tasks = mirrors.spawn();
    let listeners = bind_kafka_listeners(broker.config()).await?;
    let admin_config = broker.config().admin.clone();
    let admin_listener = if admin_config.enabled {
        Some(
            TcpListener::bind(admin_config.listen)
                .await
                .with_context(|| {
                    format!(
                        "binding the admin API on {} (admin.listen)",
                        admin_config.listen
                    )
                })?,
        )
    } else {
        None
    };
    let maintenance = broker.spawn_maintenance();
    let group_timers = broker.groups().spawn_timers();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_admin = stop_rx.clone();
    let server = tokio::spawn(crate::kafka::serve(
        listeners,
        broker.clone(),
        stop_rx,
        SHUTDOWN_GRACE,
    ));
    let admin_state = crate::admin::AdminState {
        broker: broker.clone(),
        plugins: plugins.clone(),
        transforms: transforms.clone(),
        mirrors: mirrors.clone(),
        history: Default::default(),
        peers: crate::admin::peers::Peers(endpoint.clone()),
    };
    // Peers' admin APIs ask this broker about its groups even when its own HTTP
    // listener is off.
    let _ = service.admin.set(admin_state.clone());
    let admin_tls = admin_config
        .tls
        .then(|| {
            crate::tenancy::tls::server_config(&broker.config().security.tls, false)
                .map(tokio_rustls::TlsAcceptor::from)
                .context("setting up TLS for the admin API (admin.tls)")
        })
        .transpose()?;
    let admin = admin_listener.map(|l| {
        tokio::spawn(crate::admin::serve(
            l,
            admin_tls,
            admin_state,
            stop_rx_admin,
        ))
    });
    tracing::info!(kafka = %listen, admin = ?admin_config.enabled.then_some(admin_config.listen), node_id = broker.config().broker.node_id, "quiver is ready");

    wait_for_signal().await?;
    tracing::info!("shutting down: moving leadership away");
    transform_tasks.abort();
    transforms.shutdown().await;
    mirror_tasks.abort();
    mirrors.shutdown().await;
    controller.shut_down(CONTROLLED_SHUTDOWN_TIMEOUT).await;
    replication.shutdown();
    duties.abort();
    reconciler.abort();
    policy_windows.abort();
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    server.await.context("the Kafka listener task failed")?;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    maintenance.abort();
    group_timers.abort();
    let closing = broker.clone();
    tokio::task::spawn_blocking(move || closing.shutdown())
        .await
        .context("closing logs")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Binds every Kafka listener, with its TLS configuration and SASL mechanisms.
async fn bind_kafka_listeners(config: &Config) -> anyhow::Result<Vec<crate::kafka::Listener>> {
    use crate::config::SecurityProtocol;
    use crate::tenancy::sasl::SaslMechanism;
    let all = config.kafka.all_listeners();
    let acceptor = |client_auth: bool| -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        Ok(tokio_rustls::TlsAcceptor::from(
            crate::tenancy::tls::server_config(&config.security.tls, client_auth)
                .context("setting up TLS for the Kafka listeners")?,
        ))
    };
    let uses =
        |protocol: SecurityProtocol| all.iter().any(|(_, l)| l.security_protocol == protocol);
    // SSL listeners ask for client certificates as configured; SASL_SSL ones never do.
    let ssl = uses(SecurityProtocol::Ssl)
        .then(|| acceptor(true))
        .transpose()?;
    let sasl_ssl = uses(SecurityProtocol::SaslSsl)
        .then(|| acceptor(false))
        .transpose()?;
    let mut listeners = Vec::new();
    for (index, (name, listener)) in all.into_iter().enumerate() {
        let key = if index == 0 {
            "kafka.listen".to_string()
        } else {
            format!("kafka.listeners.{name}.listen")
        };
        let socket = bind_backlog(listener.listen, KAFKA_LISTEN_BACKLOG).with_context(|| {
            format!(
                "binding the Kafka listener {name} on {} ({key})",
                listener.listen
            )
        })?;
        let protocol = listener.security_protocol;
        let mechanisms = if protocol.sasl() {
            config
                .security
                .sasl
                .mechanisms
                .iter()
                .filter_map(|m| SaslMechanism::parse(m))
                // PLAIN sends the password itself: not over a listener without TLS
                // unless the operator says so.
                .filter(|m| {
                    *m != SaslMechanism::Plain
                        || protocol.tls()
                        || config.security.sasl.plain_without_tls
                })
                .collect()
        } else {
            Vec::new()
        };
        if protocol.sasl() && mechanisms.is_empty() {
            anyhow::bail!(
                "listener {name} is {} but offers no SASL mechanism: PLAIN is not offered without TLS unless security.sasl.plain_without_tls = true",
                protocol.name()
            );
        }
        tracing::info!(listener = %name, address = %listener.listen, protocol = protocol.name(), mechanisms = ?mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>(), "Kafka listener bound");
        listeners.push(crate::kafka::Listener {
            socket,
            info: Arc::new(crate::kafka::session::ListenerInfo {
                name,
                protocol,
                mechanisms,
            }),
            tls: match protocol {
                SecurityProtocol::Ssl => ssl.clone(),
                SecurityProtocol::SaslSsl => sasl_ssl.clone(),
                _ => None,
            },
        });
    }
    Ok(listeners)
}

/// Connections the kernel completes and queues for a Kafka listener before the broker
/// accepts them (capped by `net.core.somaxconn`). When a burst of connects overflows
/// the queue, Linux drops the handshake's last ACK: the client believes it is connected
/// while the broker learns of the connection only after retransmissions, seconds later,
/// or never. Room for a few thousand keeps a flood of connects, hostile or not, from
/// turning into connections neither side agrees on.
const KAFKA_LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with a listen queue of `backlog`.
fn bind_backlog(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As TcpListener::bind does: a restarted broker rebinds despite TIME_WAIT sockets.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Starts this broker's controller replica and attaches it to the broker.
async fn start_controller(
    broker: &Arc<Broker>,
) -> anyhow::Result<(Arc<Controller>, crate::net::Endpoint, Arc<ClusterService>)> {
    let config = broker.config();
    let (kafka_host, kafka_port) = config.kafka.advertised();
    let listeners = config
        .kafka
        .all_listeners()
        .into_iter()
        .map(|(name, listener)| (name, listener.advertised()))
        .collect();
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let registration = BrokerMeta {
        id: config.broker.node_id,
        kafka_host,
        kafka_port,
        cluster_addr: config.cluster.advertised(),
        rack: config.broker.rack.clone(),
        incarnation,
        fenced: false,
        listeners,
    };
    let cluster = &config.cluster;
    let tls_dir = match &cluster.tls_dir {
        Some(dir) => dir.clone(),
        None => crate::net::certs::ensure_dev_certs(
            &config.broker.data_dir,
            &cluster.id,
            config.broker.node_id,
        )
        .context("creating development certificates for the single-node cluster")?,
    };
    let tls = crate::net::ClusterTls::load_accepting_mirrors(
        &tls_dir,
        &cluster.id,
        config.broker.node_id,
        cluster.mirror_clients_ca.as_deref(),
    )
    .with_context(|| {
        format!(
            "loading cluster certificates from {} (and cluster.mirror_clients_ca)",
            tls_dir.display()
        )
    })?;
    let service = Arc::new(ClusterService::default());
    let endpoint = crate::net::Endpoint::bind(
        cluster.listen,
        tls,
        service.clone(),
        CLUSTER_MAX_FRAME,
        cluster.congestion_control,
    )
    .with_context(|| {
        format!(
            "binding the cluster endpoint on udp {} (cluster.listen)",
            cluster.listen
        )
    })?;
    let transport: Arc<dyn Transport> = Arc::new(QuicTransport(endpoint.clone()));
    let controller = Controller::start(
        registration,
        &config.cluster,
        &config.broker.data_dir,
        transport,
    )
    .await
    .context("starting the controller")?;
    broker.attach_controller(controller.clone());
    controller.exchange_usage(Arc::new(TenantUsage(Arc::downgrade(broker))));
    let _ = service.controller.set(controller.clone());
    Ok((controller, endpoint, service))
}

/// The broker's side of the controller's usage exchange: its tenant quota meters.
struct TenantUsage(std::sync::Weak<Broker>);

impl crate::controller::UsageExchange for TenantUsage {
    fn local(&self) -> BTreeMap<String, f64> {
        self.0
            .upgrade()
            .map(|b| b.security().tenant_usage_report())
            .unwrap_or_default()
    }

    fn cluster(&self, totals: BTreeMap<String, f64>) {
        if let Some(b) = self.0.upgrade() {
            b.security()
                .cluster_usage
                .set_totals(totals, std::time::Instant::now());
        }
    }
}

/// ISR changes go through the controller as `AlterPartition` commands.
struct ControllerIsr(Arc<Controller>);

impl IsrChanger for ControllerIsr {
    fn alter_partition(
        &self,
        topic: &str,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    ) -> BoxFuture<'static, Result<PartitionState, String>> {
        let controller = self.0.clone();
        let command = Command::AlterPartition {
            topic: topic.to_string(),
            partition,
            leader: controller.id(),
            leader_epoch,
            partition_epoch,
            isr,
        };
        Box::pin(async move {
            match controller.submit(command, ISR_CHANGE_TIMEOUT).await {
                Ok(Applied::Partition(state)) => Ok(state),
                Ok(other) => Err(format!("unexpected answer to an ISR change: {other:?}")),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// How long an ISR change waits for the controller.
const ISR_CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Replica fetch sessions to leaders over the QUIC endpoint.
struct QuicLinks {
    endpoint: crate::net::Endpoint,
}

impl LinkFactory for QuicLinks {
    fn open(
        &self,
        leader: i32,
        addr: std::net::SocketAddr,
    ) -> BoxFuture<'static, Result<Box<dyn LeaderLink>, String>> {
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let session = endpoint
                .open_session(leader, addr, crate::net::Channel::Replica)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(QuicLink { session }) as Box<dyn LeaderLink>)
        })
    }
}

struct QuicLink {
    session: crate::net::Session,
}

impl LeaderLink for QuicLink {
    fn call(
        &mut self,
        request: bytes::Bytes,
        quiet: Duration,
    ) -> BoxFuture<'_, Result<bytes::Bytes, String>> {
        Box::pin(async move {
            self.session
                .call(request, quiet)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Largest cluster message (a replica fetch response carries up to
/// `cluster.replica_fetch_max_bytes` per partition).
const CLUSTER_MAX_FRAME: u32 = 256 * 1024 * 1024;

/// Dispatches requests arriving on the cluster endpoint to the room that owns them.
#[derive(Default)]
struct ClusterService {
    controller: std::sync::OnceLock<Arc<Controller>>,
    replication: std::sync::OnceLock<Arc<ReplicaManager>>,
    admin: std::sync::OnceLock<crate::admin::AdminState>,
}

impl crate::net::Service for ClusterService {
    fn handle_mirror(
        &self,
        cluster_id: &str,
        peer: crate::net::BrokerId,
        request: bytes::Bytes,
    ) -> BoxFuture<'static, Result<bytes::Bytes, String>> {
        match self.admin.get() {
            Some(state) => Box::pin(crate::connect::quic::answer(
                state.broker.clone(),
                cluster_id.to_string(),
                peer,
                request,
            )),
            None => Box::pin(async { Err("this broker is still starting".to_string()) }),
        }
    }

    fn handle(
        &self,
        peer: crate::net::BrokerId,
        channel: crate::net::Channel,
        request: bytes::Bytes,
    ) -> BoxFuture<'static, Result<bytes::Bytes, String>> {
        if channel == crate::net::Channel::Replica {
            return match self.replication.get() {
                Some(manager) => manager.handle(peer, request),
                None => Box::pin(async { Err("this broker is still starting".to_string()) }),
            };
        }
        if channel == crate::net::Channel::Admin {
            return match self.admin.get() {
                Some(state) => Box::pin(crate::admin::peers::answer(state.clone(), peer, request)),
                None => Box::pin(async { Err("this broker is still starting".to_string()) }),
            };
        }
        if channel == crate::net::Channel::Writes {
            return match self.admin.get() {
                Some(state) => {
                    let broker = state.broker.clone();
                    Box::pin(async move {
                        crate::kafka::answer_broker_write(&broker, peer, request).await
                    })
                }
                None => Box::pin(async { Err("this broker is still starting".to_string()) }),
            };
        }
        let controller = self.controller.get().cloned();
        Box::pin(async move {
            let controller =
                controller.ok_or_else(|| "this broker is still starting".to_string())?;
            match channel {
                crate::net::Channel::Raft => controller.handle_raft(&request).await,
                crate::net::Channel::Controller => {
                    controller.handle_controller(peer, &request).await
                }
                crate::net::Channel::Replica
                | crate::net::Channel::Admin
                | crate::net::Channel::Mirror
                | crate::net::Channel::Writes => {
                    Err(format!("the {channel} channel is not the controller's"))
                }
            }
        })
    }
}

/// Controller RPCs over the QUIC endpoint.
struct QuicTransport(crate::net::Endpoint);

impl Transport for QuicTransport {
    fn call(
        &self,
        peer: i32,
        addr: std::net::SocketAddr,
        kind: RpcKind,
        request: bytes::Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<bytes::Bytes, String>> {
        let endpoint = self.0.clone();
        let channel = match kind {
            RpcKind::Raft => crate::net::Channel::Raft,
            RpcKind::Controller => crate::net::Channel::Controller,
        };
        Box::pin(async move {
            endpoint
                .call(peer, addr, channel, request, timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn gone(
        &self,
        _peer: i32,
        addr: std::net::SocketAddr,
        wait: Duration,
    ) -> BoxFuture<'static, bool> {
        Box::pin(async move {
            crate::net::probe::udp_port(addr, wait).await == crate::net::probe::PortAnswer::Closed
        })
    }
}

/// Applies every committed metadata change to this broker's disk.
fn spawn_reconciler(broker: Arc<Broker>, plugins: Arc<Plugins>) -> tokio::task::JoinHandle<()> {
    let mut changes = broker.controller().subscribe();
    // Startup reconciled with the state known then, and the controller went on applying
    // its log since (after a whole-cluster restart it replays it as the brokers come up).
    // A new receiver counts the current state as seen: without this first round, a
    // change applied in between would wait for the next one, which may never come (a
    // follower keeping a stale leader epoch is refused by its leader, so the ISR never
    // grows back and nothing more is committed).
    changes.mark_changed();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let state = changes.borrow_and_update().clone();
            let (b, p) = (broker.clone(), plugins.clone());
            let applied = tokio::task::spawn_blocking(move || {
                p.sync(&state.plugins);
                // Not `state`: the sync may have taken seconds (compiling a component)
                // while the replicas moved on with newer metadata.
                b.reconcile_latest()
            });
            match applied.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "applying metadata to local replicas failed")
                }
                Err(e) => tracing::error!(error = %e, "metadata reconciliation panicked"),
            }
        }
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// A single node's plugins from before they were kept in the cluster metadata: each
/// one in the local registry that the metadata lacks is proposed once, as it is, so
/// the first sync does not remove it. Returns how many were adopted.
async fn adopt_local_plugins(broker: &Broker, plugins: &Plugins) -> anyhow::Result<usize> {
    use crate::controller::state::{Command, Component};
    let known = broker.metadata().plugins.clone();
    let mut adopted = 0;
    for (name, (record, code)) in plugins.stored() {
        if known.contains_key(&name) {
            continue;
        }
        let command = Command::SetPlugin {
            name: name.clone(),
            record,
            code: code
                .into_iter()
                .map(|(sha, b)| (sha, Component(b)))
                .collect(),
            expect: 0,
        };
        broker
            .controller()
            .submit(command, Duration::from_secs(30))
            .await
            .with_context(|| format!("adopting plugin '{name}'"))?;
        tracing::info!(plugin = %name, "adopted a locally stored plugin into the cluster metadata");
        adopted += 1;
    }
    Ok(adopted)
}
