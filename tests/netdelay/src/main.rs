//! `quiver-netdelay`: a TCP or UDP proxy adding a fixed delay each way (see the
//! library's docs). Prints `listening on HOST:PORT` once ready, so a script can wait
//! for it by reading one line, and runs until SIGINT or SIGTERM; then prints what it
//! forwarded and dropped on stderr.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use quiver_netdelay::{tcp, udp, Link};

#[derive(Parser, Debug)]
#[command(
    name = "quiver-netdelay",
    about = "Forward TCP (or UDP) to an upstream after a fixed delay in each direction"
)]
struct Args {
    /// HOST:PORT to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// HOST:PORT to forward to.
    #[arg(long)]
    upstream: String,
    /// One-way delay in milliseconds, added in each direction.
    #[arg(long, default_value_t = 40.0)]
    delay_ms: f64,
    /// Forward UDP datagrams instead of TCP connections.
    #[arg(long)]
    udp: bool,
    /// Percentage of datagrams dropped in each direction (UDP only).
    #[arg(long, default_value_t = 0.0)]
    loss_pct: f64,
    /// Seed of the loss decisions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seconds without a datagram either way after which a UDP session is closed.
    #[arg(long, default_value_t = 60.0)]
    idle_secs: f64,
}

async fn resolve(what: &str, s: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(s)
        .await
        .with_context(|| format!("--{what} {s:?} is not a reachable HOST:PORT"))?
        .next()
        .with_context(|| format!("--{what} {s:?} resolves to no address"))
}

fn seconds(what: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .with_context(|| format!("{what} must be a finite number >= 0, got {v}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.0..=100.0).contains(&args.loss_pct) {
        bail!(
            "--loss-pct must be between 0 and 100, got {}",
            args.loss_pct
        );
    }
    if args.loss_pct > 0.0 && !args.udp {
        bail!("--loss-pct needs --udp: a TCP proxy ends each connection, so it cannot lose segments end to end");
    }
    let link = Link {
        delay: seconds("--delay-ms", args.delay_ms / 1000.0)?,
        loss_pct: args.loss_pct,
        seed: args.seed,
        idle: seconds("--idle-secs", args.idle_secs)?,
    };
    let listen = resolve("listen", &args.listen).await?;
    let upstream = resolve("upstream", &args.upstream).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    if args.udp {
        let socket = udp::bind(listen).with_context(|| format!("binding UDP {listen}"))?;
        let bound = socket.local_addr()?;
        let c = Arc::new(udp::Counters::default());
        println!("listening on {bound}");
        tokio::select! {
            r = udp::serve(socket, upstream, link, c.clone()) => r.context("the UDP socket failed")?,
            _ = stop => {}
        }
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        eprintln!(
            "udp: {} sessions; up {} datagrams ({} B), {} lost; down {} datagrams ({} B), {} lost; {} dropped on full queues",
            n(&c.sessions), n(&c.datagrams_up), n(&c.bytes_up), n(&c.lost_up),
            n(&c.datagrams_down), n(&c.bytes_down), n(&c.lost_down), n(&c.overflow)
        );
    } else {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding TCP {listen}"))?;
        let bound = listener.local_addr()?;
        let c = Arc::new(tcp::Counters::default());
        println!("listening on {bound}");
        tokio::select! {
            _ = tcp::serve(listener, upstream, link.delay, c.clone()) => {}
            _ = stop => {}
        }
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        eprintln!(
            "tcp: {} connections; {} B up, {} B down",
            n(&c.connections),
            n(&c.bytes_up),
            n(&c.bytes_down)
        );
    }
    Ok(())
}
