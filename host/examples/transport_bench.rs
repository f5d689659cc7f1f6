//! The price of QUIC for replication: CPU-seconds per GiB over the cluster transport
//! against the same bytes over TCP with TLS 1.3 and over plain TCP. Prints figures,
//! asserts nothing.
//!
//! ```sh
//! export CARGO_TARGET_DIR=$HOME/.cache/quiver/target
//! cargo run --release -p quiver --example transport_bench -- --out target/bench/transport.json
//! cargo run -p quiver --example transport_bench -- --quick   # smoke, seconds
//! ```
//!
//! The traffic is shaped like replication: a follower sends a fetch request of about
//! 100 bytes, the leader answers with `--answer` bytes of record data (1 MiB, the
//! default `cluster.replica_fetch_max_bytes`, and 64 KiB), request and answer in turn
//! on one stream, until `--bytes` of answers have crossed. The cases:
//!
//! - `quic-bbr`, `quic-cubic`: the broker's own transport — two `quiver::net::Endpoint`s
//!   with the cluster's mutual TLS (certificates made as `quiver cluster certs` makes
//!   them, in a temporary directory), the follower on a persistent `Session` on the
//!   replica channel as the fetcher uses it, and the leader answering through the
//!   endpoint's own stream task. `quic-bbr-zstd` also compresses every answer as
//!   `cluster.replication_compression = "zstd"` does (`quiver::net::compress`; the
//!   leader packs each answer, the follower unpacks it), so its bytes on the wire are
//!   fewer and its figures are per GiB of record data.
//! - `tls`: tokio `TcpStream` + `tokio-rustls` with the same rustls configurations
//!   (same certificates, verifier, ALPN; TLS 1.3), Nagle off, the same frames.
//! - `tcp`: the same without TLS, the floor.
//!
//! Both sides live in this one process, each on its own thread running its own
//! single-threaded tokio runtime, so everything a side does — quinn's endpoint driver,
//! timers, the socket's syscalls, TLS — runs on that thread and is counted by that
//! thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID` through `pthread_getcpuclockid`). One
//! process keeps the setup in one file, shares the certificates without files between
//! processes, and still separates the two sides' CPU exactly; the process's total CPU
//! is printed too, as a check that nothing ran elsewhere. The leader is the sending
//! side (it sends the record data), the follower the receiving side.
//!
//! Every case gets a fresh pair of endpoints and a fresh connection; the handshake and
//! a few warm-up exchanges are outside the timed region. Each run times every case in
//! turn (so a change of machine load falls on all of them); figures are the median and
//! range over `--runs`, and ratios are taken per run. Loopback only.

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bench_common::{fmt_stat, stat_json, Clock};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use quiver::config::CongestionControl;
use quiver::net::frame::{self, Kind};
use quiver::net::{certs, compress, BrokerId, Channel, ClusterTls, Endpoint, Service};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CLUSTER: &str = "bench";
const LEADER: BrokerId = 1;
const FOLLOWER: BrokerId = 2;
/// The broker's frame bound for the cluster transport.
const MAX_FRAME: u32 = 64 << 20;
/// Exchanges before the timed region: the connection's windows and path MTU settle.
const WARMUP: usize = 32;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    about = "QUIC vs TCP+TLS vs TCP CPU per GiB, replication-shaped (prints figures; asserts nothing)"
)]
struct Args {
    /// Runs per figure.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Answer bytes moved per case and run.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Answer sizes in bytes (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1u32 << 20, 64 << 10])]
    answer: Vec<u32>,
    /// Cases to run (comma separated; default all).
    #[arg(long, value_delimiter = ',', value_enum)]
    case: Vec<Case>,
    /// One run of 16 MiB per case: a smoke test that takes seconds.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Case {
    QuicBbr,
    QuicCubic,
    QuicBbrZstd,
    Tls,
    Tcp,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::QuicBbr,
        Case::QuicCubic,
        Case::QuicBbrZstd,
        Case::Tls,
        Case::Tcp,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::QuicBbr => "quic-bbr",
            Case::QuicCubic => "quic-cubic",
            Case::QuicBbrZstd => "quic-bbr-zstd",
            Case::Tls => "tls",
            Case::Tcp => "tcp",
        }
    }

    fn is_quic(self) -> bool {
        matches!(self, Case::QuicBbr | Case::QuicCubic | Case::QuicBbrZstd)
    }

    fn zstd(self) -> bool {
        self == Case::QuicBbrZstd
    }
}

/// What one timed region measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Record bytes the follower received (plain, before any compression).
    bytes: u64,
    /// Bytes of answers as framed on the stream (compressed when zstd).
    wire_bytes: u64,
    wall_s: f64,
    leader_cpu_s: f64,
    follower_cpu_s: f64,
    process_cpu_s: f64,
}

impl Sample {
    fn gib(&self) -> f64 {
        self.bytes as f64 / (1u64 << 30) as f64
    }
}

/// The cluster's certificates in a temporary directory, loaded for both brokers.
struct Material {
    _dir: tempfile::TempDir,
    leader: ClusterTls,
    follower: ClusterTls,
}

fn material() -> anyhow::Result<Material> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let ca = certs::generate_ca(CLUSTER)?;
    let hosts = vec!["127.0.0.1".to_string()];
    let brokers = [LEADER, FOLLOWER]
        .into_iter()
        .map(|id| certs::issue_broker(&ca, CLUSTER, id, &hosts))
        .collect::<Result<Vec<_>, _>>()?;
    certs::write_dir(dir.path(), Some(&ca), &brokers)?;
    Ok(Material {
        leader: ClusterTls::load(dir.path(), CLUSTER, LEADER)?,
        follower: ClusterTls::load(dir.path(), CLUSTER, FOLLOWER)?,
        _dir: dir,
    })
}

/// Record data that compresses about as well as JSON events do: repeated keys, varying
/// numbers and identifiers.
fn records(size: usize) -> Bytes {
    let mut out = String::with_capacity(size + 256);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i = 0u64;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!(
            "{{\"id\":{i},\"user\":\"u{}@example.com\",\"ts\":{},\"amount\":{}.{:02},\"trace\":\"{:016x}\"}}\n",
            x % 100_000,
            1_700_000_000_000u64 + i * 7,
            x % 10_000,
            x % 100,
            x
        ));
        i += 1;
    }
    out.truncate(size);
    Bytes::from(out)
}

/// The ~100-byte fetch request the follower repeats.
fn request() -> Bytes {
    Bytes::from(vec![0x5au8; 100])
}

/// The leader's answer: the records, packed as the replication stream packs them.
fn answer(records: &Bytes, zstd: bool) -> Bytes {
    if zstd {
        let mut out = BytesMut::new();
        compress::pack(&mut out, records, true);
        out.freeze()
    } else {
        records.clone()
    }
}

fn thread_clock() -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self` is the calling thread, alive; `clock` is writable.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid failed");
    clock
}

fn clock_s(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock belongs to a live thread.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn process_cpu_s() -> f64 {
    clock_s(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// A thread running a single-threaded tokio runtime, so all of one side's work is on
/// one thread whose CPU clock the caller gets.
fn side<F, Fut, T>(
    name: &str,
    f: F,
) -> anyhow::Result<(libc::clockid_t, std::thread::JoinHandle<anyhow::Result<T>>)>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let (clock_tx, clock_rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = clock_tx.send(thread_clock());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            runtime.block_on(f())
        })
        .context("spawning a side's thread")?;
    let clock = clock_rx.recv().context("side thread died")?;
    Ok((clock, handle))
}

/// What the follower does around its exchanges: warm up, then time `bytes` of answers,
/// reading the leader's CPU clock from here.
struct Timer {
    leader_clock: libc::clockid_t,
    bytes: u64,
    zstd: bool,
}

/// One fetch: the request out, the answer back.
trait Fetch {
    fn fetch(&mut self) -> impl std::future::Future<Output = anyhow::Result<Bytes>>;
}

/// The follower on the cluster transport: a replica-channel session.
struct QuicFollower {
    session: quiver::net::Session,
    request: Bytes,
}

impl Fetch for QuicFollower {
    async fn fetch(&mut self) -> anyhow::Result<Bytes> {
        Ok(self
            .session
            .call(self.request.clone(), CALL_TIMEOUT)
            .await?)
    }
}

/// The follower on a TCP stream (with or without TLS).
struct TcpFollower<S> {
    stream: S,
    request: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Fetch for TcpFollower<S> {
    async fn fetch(&mut self) -> anyhow::Result<Bytes> {
        write_frame(&mut self.stream, Kind::Request, &self.request).await?;
        read_frame(&mut self.stream)
            .await?
            .ok_or_else(|| anyhow!("the leader closed the connection"))
    }
}

impl Timer {
    async fn run(&self, follower: &mut impl Fetch) -> anyhow::Result<Sample> {
        for _ in 0..WARMUP {
            follower.fetch().await?;
        }
        let (l0, f0, p0, t0) = (
            clock_s(self.leader_clock),
            Clock::Thread.now_ns(),
            process_cpu_s(),
            Instant::now(),
        );
        let (mut bytes, mut wire_bytes) = (0u64, 0u64);
        while bytes < self.bytes {
            let got = follower.fetch().await?;
            wire_bytes += got.len() as u64;
            let records = if self.zstd {
                compress::unpack(got).map_err(|e| anyhow!("answer: {e}"))?
            } else {
                got
            };
            bytes += records.len() as u64;
            std::hint::black_box(&records);
        }
        Ok(Sample {
            bytes,
            wire_bytes,
            wall_s: t0.elapsed().as_secs_f64(),
            leader_cpu_s: clock_s(self.leader_clock) - l0,
            follower_cpu_s: (Clock::Thread.now_ns() - f0) as f64 * 1e-9,
            process_cpu_s: process_cpu_s() - p0,
        })
    }
}

/// The leader's side of the cluster transport: answers every replica request with the
/// records.
struct Leader {
    records: Bytes,
    zstd: bool,
}

impl Service for Leader {
    fn handle(
        &self,
        _peer: BrokerId,
        channel: Channel,
        _request: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send>> {
        let answer = (channel == Channel::Replica).then(|| answer(&self.records, self.zstd));
        Box::pin(async move { answer.ok_or_else(|| format!("no {channel} here")) })
    }
}

/// The follower's endpoint serves nothing.
struct Nobody;

impl Service for Nobody {
    fn handle(
        &self,
        _peer: BrokerId,
        channel: Channel,
        _request: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send>> {
        Box::pin(async move { Err(format!("no {channel} here")) })
    }
}

fn quic_case(
    material: &Material,
    records: &Bytes,
    bytes: u64,
    congestion: CongestionControl,
    zstd: bool,
) -> anyhow::Result<Sample> {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tls = material.leader.clone();
    let service = Arc::new(Leader {
        records: records.clone(),
        zstd,
    });
    let (leader_clock, leader) = side("leader", move || async move {
        let endpoint = Endpoint::bind(local(), tls, service, MAX_FRAME, congestion)?;
        let _ = addr_tx.send(endpoint.local_addr());
        let _ = stop_rx.await;
        endpoint.close().await;
        Ok(())
    })?;
    let leader_addr = addr_rx.recv().context("the leader did not bind")?;
    let tls = material.follower.clone();
    let timer = Timer {
        leader_clock,
        bytes,
        zstd,
    };
    let (_, follower) = side("follower", move || async move {
        let endpoint = Endpoint::bind(local(), tls, Arc::new(Nobody), MAX_FRAME, congestion)?;
        let session = endpoint
            .open_session(LEADER, leader_addr, Channel::Replica)
            .await?;
        let mut follower = QuicFollower {
            session,
            request: request(),
        };
        let sample = timer.run(&mut follower).await;
        drop(follower);
        endpoint.close().await;
        sample
    })?;
    let sample = follower.join().map_err(|_| anyhow!("follower panicked"))?;
    let _ = stop_tx.send(());
    leader.join().map_err(|_| anyhow!("leader panicked"))??;
    sample
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a socket address")
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<Option<Bytes>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let length = frame::check_length(u32::from_be_bytes(length), MAX_FRAME)?;
    let mut body = BytesMut::zeroed(length);
    stream.read_exact(&mut body).await?;
    let header = body.split_to(frame::HEADER_LEN as usize);
    if header[0] != frame::VERSION {
        bail!("frame of version {}", header[0]);
    }
    Ok(Some(body.freeze()))
}

async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: Kind,
    payload: &[u8],
) -> anyhow::Result<()> {
    stream
        .write_all(&frame::prefix(Channel::Replica as u8, kind, payload.len()))
        .await?;
    stream.write_all(payload).await?;
    stream.flush().await?;
    Ok(())
}

/// The leader's loop on a TCP stream: answer each request with the records.
async fn serve_tcp<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    records: Bytes,
    zstd: bool,
) -> anyhow::Result<()> {
    while read_frame(&mut stream).await?.is_some() {
        write_frame(&mut stream, Kind::Ok, &answer(&records, zstd)).await?;
    }
    Ok(())
}

fn tcp_case(material: &Material, records: &Bytes, bytes: u64, tls: bool) -> anyhow::Result<Sample> {
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = material.leader.server_config();
    let records = records.clone();
    let (leader_clock, leader) = side("leader", move || async move {
        let listener = tokio::net::TcpListener::bind(local()).await?;
        let _ = addr_tx.send(listener.local_addr()?);
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        if tls {
            let stream = tokio_rustls::TlsAcceptor::from(server)
                .accept(stream)
                .await?;
            serve_tcp(stream, records, false).await
        } else {
            serve_tcp(stream, records, false).await
        }
    })?;
    let leader_addr: SocketAddr = addr_rx.recv().context("the leader did not bind")?;
    let client = material.follower.client_config();
    let timer = Timer {
        leader_clock,
        bytes,
        zstd: false,
    };
    let (_, follower) = side("follower", move || async move {
        let stream = tokio::net::TcpStream::connect(leader_addr).await?;
        stream.set_nodelay(true)?;
        if tls {
            // The name the cluster verifier expects for broker 1 (`tls::server_name`).
            let name = rustls::pki_types::ServerName::try_from(format!("broker-{LEADER}.quiver"))?;
            let stream = tokio_rustls::TlsConnector::from(client)
                .connect(name, stream)
                .await?;
            follow_tcp(stream, &timer).await
        } else {
            follow_tcp(stream, &timer).await
        }
    })?;
    let sample = follower
        .join()
        .map_err(|_| anyhow!("follower panicked"))??;
    // Joined only after a good run: a leader whose follower never connected would wait
    // in `accept` for ever.
    leader.join().map_err(|_| anyhow!("leader panicked"))??;
    Ok(sample)
}

async fn follow_tcp<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    timer: &Timer,
) -> anyhow::Result<Sample> {
    let mut follower = TcpFollower {
        stream,
        request: request(),
    };
    let sample = timer.run(&mut follower).await;
    // Closing the write side ends the leader's loop.
    let _ = follower.stream.shutdown().await;
    sample
}

fn run_case(
    case: Case,
    material: &Material,
    records: &Bytes,
    bytes: u64,
) -> anyhow::Result<Sample> {
    match case {
        Case::QuicBbr => quic_case(material, records, bytes, CongestionControl::Bbr, false),
        Case::QuicCubic => quic_case(material, records, bytes, CongestionControl::Cubic, false),
        Case::QuicBbrZstd => quic_case(
            material,
            records,
            bytes,
            CongestionControl::Bbr,
            case.zstd(),
        ),
        Case::Tls => tcp_case(material, records, bytes, true),
        Case::Tcp => tcp_case(material, records, bytes, false),
    }
}

fn size_name(bytes: u32) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.runs = 1;
        args.bytes = 16 << 20;
    }
    if args.runs == 0 || args.bytes == 0 || args.answer.is_empty() {
        bail!("--runs, --bytes and --answer must be positive");
    }
    if let Some(&bad) = args
        .answer
        .iter()
        .find(|&&a| a == 0 || a > MAX_FRAME - 1024)
    {
        bail!("--answer {bad} is outside 1..{} bytes", MAX_FRAME - 1024);
    }
    let cases: Vec<Case> = if args.case.is_empty() {
        Case::ALL.to_vec()
    } else {
        args.case.clone()
    };
    let material = material()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "transport_bench: {} run(s) x {} MiB per case, answers {:?}, {} cores, load {}",
        args.runs,
        args.bytes >> 20,
        args.answer
            .iter()
            .map(|&a| size_name(a))
            .collect::<Vec<_>>(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );

    let mut report = Vec::new();
    for &answer_size in &args.answer {
        let records = records(answer_size as usize);
        // samples[case][run]
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
        for run in 0..args.runs {
            for (i, &case) in cases.iter().enumerate() {
                let sample =
                    run_case(case, &material, &records, args.bytes).with_context(|| {
                        format!("{} with {} answers", case.name(), size_name(answer_size))
                    })?;
                eprintln!(
                    "  run {run} {:<14} {:>7}: {:.2} GiB in {:.2} s, leader {:.2} s, follower {:.2} s CPU",
                    case.name(),
                    size_name(answer_size),
                    sample.gib(),
                    sample.wall_s,
                    sample.leader_cpu_s,
                    sample.follower_cpu_s
                );
                samples[i].push(sample);
            }
        }
        println!();
        println!(
            "answers of {} (request 100 B); median (min–max) over {} run(s)",
            size_name(answer_size),
            args.runs
        );
        println!(
            "{:<14} {:>6} {:>18} {:>22} {:>22} {:>22} {:>9}",
            "case",
            "GiB",
            "GiB/s",
            "leader CPU-s/GiB",
            "follower CPU-s/GiB",
            "both CPU-s/GiB",
            "wire/plain"
        );
        let per_gib = |s: &[Sample], f: fn(&Sample) -> f64| -> Vec<f64> {
            s.iter().map(|x| f(x) / x.gib()).collect()
        };
        let mut case_json = serde_json::Map::new();
        for (i, &case) in cases.iter().enumerate() {
            let s = &samples[i];
            let rate: Vec<f64> = s.iter().map(|x| x.gib() / x.wall_s).collect();
            let leader = per_gib(s, |x| x.leader_cpu_s);
            let follower = per_gib(s, |x| x.follower_cpu_s);
            let both = per_gib(s, |x| x.leader_cpu_s + x.follower_cpu_s);
            let process = per_gib(s, |x| x.process_cpu_s);
            let wall: Vec<f64> = s.iter().map(|x| x.wall_s).collect();
            let wire = s[0].wire_bytes as f64 / s[0].bytes as f64;
            println!(
                "{:<14} {:>6.2} {:>18} {:>22} {:>22} {:>22} {:>9.3}",
                case.name(),
                s[0].gib(),
                fmt_stat(&rate, 2),
                fmt_stat(&leader, 3),
                fmt_stat(&follower, 3),
                fmt_stat(&both, 3),
                wire
            );
            case_json.insert(
                case.name().into(),
                json!({
                    "gib": s[0].gib(),
                    "wall_s": stat_json(&wall),
                    "gib_per_s": stat_json(&rate),
                    "leader_cpu_s_per_gib": stat_json(&leader),
                    "follower_cpu_s_per_gib": stat_json(&follower),
                    "both_cpu_s_per_gib": stat_json(&both),
                    "process_cpu_s_per_gib": stat_json(&process),
                    "wire_over_plain": wire,
                }),
            );
        }
        let mut ratios = serde_json::Map::new();
        for (base_name, base) in [("tls", Case::Tls), ("tcp", Case::Tcp)] {
            let Some(b) = cases.iter().position(|&c| c == base) else {
                continue;
            };
            for (i, &case) in cases.iter().enumerate() {
                if !case.is_quic() {
                    continue;
                }
                let ratio = |f: fn(&Sample) -> f64| -> Vec<f64> {
                    samples[i]
                        .iter()
                        .zip(&samples[b])
                        .map(|(q, t)| (f(q) / q.gib()) / (f(t) / t.gib()))
                        .collect()
                };
                let leader = ratio(|x| x.leader_cpu_s);
                let follower = ratio(|x| x.follower_cpu_s);
                let both = ratio(|x| x.leader_cpu_s + x.follower_cpu_s);
                println!(
                    "{:>14} ÷ {:<4} CPU per GiB: leader {}, follower {}, both {}",
                    case.name(),
                    base_name,
                    fmt_stat(&leader, 2),
                    fmt_stat(&follower, 2),
                    fmt_stat(&both, 2)
                );
                ratios.insert(
                    format!("{}/{}", case.name(), base_name),
                    json!({
                        "leader": stat_json(&leader),
                        "follower": stat_json(&follower),
                        "both": stat_json(&both),
                    }),
                );
            }
        }
        report.push(json!({
            "answer_bytes": answer_size,
            "request_bytes": 100,
            "cases": case_json,
            "ratios": ratios,
        }));
    }
    let doc = json!({
        "bench": "transport",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "runs": args.runs,
        "bytes_per_run": args.bytes,
        "load_before": load.trim(),
        "answers": report,
    });
    println!();
    println!("JSON {doc}");
    if let Some(path) = &args.out {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
