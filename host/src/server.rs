//! `quiver serve`: opens the broker, binds its listeners and runs until SIGTERM/SIGINT.
//!
//! Order matters for operators: configuration is validated before anything else; the
//! data directory is recovered before a port opens, so a client never reaches a broker
//! that is still repairing its logs; and shutdown stops accepting, lets in-flight
//! requests finish, then flushes and closes every log (the clean-shutdown marker spares
//! the next start a log scan).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::Config;
use crate::plugin::Plugins;

/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs a broker with `config` until a termination signal.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quiver")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
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
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the Kafka listener on {listen} (kafka.listen)"))?;
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
        listener,
        broker.clone(),
        stop_rx,
        SHUTDOWN_GRACE,
    ));
    let admin = admin_listener.map(|l| {
        tokio::spawn(crate::admin::serve(
            l,
            crate::admin::AdminState {
                broker: broker.clone(),
                plugins: plugins.clone(),
            },
            stop_rx_admin,
        ))
    });
    tracing::info!(kafka = %listen, admin = ?admin_config.enabled.then_some(admin_config.listen), node_id = broker.config().broker.node_id, "quiver is ready");

    wait_for_signal().await?;
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
