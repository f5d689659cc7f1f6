//! The non-Kafka reference: NATS JetStream, written and read through async-nats.
//!
//! `nats-publish` is JetStream's counterpart of `produce` with acks: every message is
//! acknowledged by the server once stored in the stream; a window of unacknowledged
//! publishes per publisher plays the role of the Kafka producer's batches in flight.
//! `nats-consume` reads the stream back with an ordered pull consumer. Counts are
//! checked against the stream's own message count.

use crate::payload::Values;
use crate::report::{self, Report};
use anyhow::{anyhow, bail, Context, Result};
use async_nats::jetstream::{self, stream::StorageType};
use clap::Args;
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct NatsConn {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub server: String,
    /// JetStream stream name (created with file storage when missing).
    #[arg(long, default_value = "LOADGEN")]
    pub stream: String,
    /// Subject the stream captures and messages are published to.
    #[arg(long, default_value = "loadgen")]
    pub subject: String,
}

#[derive(Args, Debug)]
pub struct NatsPublishArgs {
    #[command(flatten)]
    pub conn: NatsConn,
    /// Messages to publish in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Publishes awaiting their ack, per publisher.
    #[arg(long, default_value_t = 4096)]
    pub window: usize,
    /// Concurrent publishers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Stream storage: file or memory.
    #[arg(long, default_value = "file")]
    pub storage: String,
}

#[derive(Args, Debug)]
pub struct NatsConsumeArgs {
    #[command(flatten)]
    pub conn: NatsConn,
    /// Give up when no message arrived for this many seconds.
    #[arg(long, default_value_t = 20.0)]
    pub idle_timeout: f64,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn connect(conn: &NatsConn) -> Result<jetstream::Context> {
    let client = async_nats::connect(&conn.server)
        .await
        .with_context(|| format!("connecting to {}", conn.server))?;
    Ok(jetstream::new(client))
}

pub fn publish(args: NatsPublishArgs) -> Result<Report> {
    let storage = match args.storage.as_str() {
        "file" => StorageType::File,
        "memory" => StorageType::Memory,
        other => bail!("--storage must be file or memory, not {other:?}"),
    };
    if args.publishers == 0 || args.window == 0 {
        bail!("--publishers and --window must be at least 1");
    }
    runtime()?.block_on(async move {
        let js = connect(&args.conn).await?;
        let mut stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: args.conn.stream.clone(),
                subjects: vec![args.conn.subject.clone()],
                storage,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating stream {}: {e}", args.conn.stream))?;
        let before = stream
            .info()
            .await
            .map_err(|e| anyhow!("stream info: {e}"))?
            .state
            .messages;
        let n = args.publishers as u64;
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(connect(&args.conn).await?);
        }
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (t, js) in clients.into_iter().enumerate() {
            let t = t as u64;
            let count = args.records / n + u64::from(t < args.records % n);
            let (subject, size, window) = (args.conn.subject.clone(), args.size, args.window);
            tasks.push(tokio::spawn(async move {
                let mut values = Values::new(size, t + 1);
                let mut hist = report::new_histogram();
                let mut inflight = VecDeque::with_capacity(window);
                let mut acked = 0u64;
                let mut bytes = 0u64;
                for i in 0..count {
                    let payload = bytes::Bytes::copy_from_slice(values.next(i));
                    let len = payload.len() as u64;
                    let sent = Instant::now();
                    let ack = js
                        .publish(subject.clone(), payload)
                        .await
                        .map_err(|e| anyhow!("publish: {e}"))?;
                    inflight.push_back((sent, len, ack));
                    if inflight.len() >= window {
                        let (sent, len, ack) = inflight.pop_front().expect("window not empty");
                        ack.await.map_err(|e| anyhow!("publish ack: {e}"))?;
                        report::record(&mut hist, sent.elapsed());
                        acked += 1;
                        bytes += len;
                    }
                }
                while let Some((sent, len, ack)) = inflight.pop_front() {
                    ack.await.map_err(|e| anyhow!("publish ack: {e}"))?;
                    report::record(&mut hist, sent.elapsed());
                    acked += 1;
                    bytes += len;
                }
                anyhow::Ok((acked, bytes, hist))
            }));
        }
        let mut r = Report::new("nats-publish");
        let mut hist = report::new_histogram();
        for task in tasks {
            let (acked, bytes, h) = task.await.context("a publisher task failed")??;
            r.records += acked;
            r.bytes += bytes;
            let _ = hist.add(&h);
        }
        r.elapsed = t0.elapsed();
        r.requested = args.records;
        r.latency_of = Some("publish to ack");
        r.latency = Some(hist);
        let stored = stream
            .info()
            .await
            .map_err(|e| anyhow!("stream info: {e}"))?
            .state
            .messages
            - before;
        r.set("stream", args.conn.stream.as_str());
        r.set("storage", args.storage.as_str());
        r.set("publishers", n);
        r.set("stored", stored);
        if r.records != args.records {
            r.fail(format!(
                "{} of {} publishes acknowledged",
                r.records, args.records
            ));
        }
        if stored != r.records {
            r.fail(format!(
                "stream grew by {stored}, {} acknowledged",
                r.records
            ));
        }
        Ok(r)
    })
}

pub fn consume(args: NatsConsumeArgs) -> Result<Report> {
    runtime()?.block_on(async move {
        let js = connect(&args.conn).await?;
        let mut stream = js
            .get_stream(&args.conn.stream)
            .await
            .map_err(|e| anyhow!("stream {}: {e}", args.conn.stream))?;
        let expected = stream
            .info()
            .await
            .map_err(|e| anyhow!("stream info: {e}"))?
            .state
            .messages;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .map_err(|e| anyhow!("creating an ordered consumer: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow!("starting the ordered consumer: {e}"))?;
        let idle = Duration::from_secs_f64(args.idle_timeout);
        let t0 = Instant::now();
        let mut last = t0;
        let mut r = Report::new("nats-consume");
        r.requested = expected;
        while r.records < expected {
            match tokio::time::timeout(idle, messages.next()).await {
                Ok(Some(Ok(m))) => {
                    r.records += 1;
                    r.bytes += m.payload.len() as u64;
                    last = Instant::now();
                }
                Ok(Some(Err(e))) => bail!("reading the stream: {e}"),
                Ok(None) | Err(_) => break,
            }
        }
        r.elapsed = last.duration_since(t0);
        r.set("stream", args.conn.stream.as_str());
        if r.records != expected {
            r.fail(format!("read {} of {expected} messages", r.records));
        }
        Ok(r)
    })
}
