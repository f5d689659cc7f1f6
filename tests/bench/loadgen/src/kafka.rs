//! The Kafka-API modes: `produce`, `consume` and `e2e`, all through librdkafka.
//!
//! Every Kafka-API broker is driven by this one client, so a difference in figures is a
//! difference in brokers. Each producer thread owns a client of its own (its own
//! connections and batches, as separate producer processes would have); delivery
//! reports are counted per thread and merged at the end. Reads check offsets per
//! partition, so a count of records received is a count of distinct offsets, and gaps
//! and duplicates are reported next to it.

use crate::payload::{self, Keys, Values};
use crate::report::{self, Report};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const META_TIMEOUT: Duration = Duration::from_secs(15);

/// Where to connect and what to pass through to librdkafka.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Kafka bootstrap address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to write or read.
    #[arg(long, default_value = "loadgen")]
    pub topic: String,
    /// Extra librdkafka property for every client, KEY=VALUE (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub props: Vec<String>,
}

/// Settings shared by the modes that write.
#[derive(Args, Debug, Clone)]
pub struct WriteSettings {
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Keys: none, seq (each record its own) or random:N (one of N).
    #[arg(long, default_value = "none")]
    pub keys: Keys,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// linger.ms: how long a batch waits for more records.
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// batch.size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_size: u64,
    /// compression.codec: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Create the topic with this many partitions when it does not exist.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor for a topic this command creates.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
    /// Idempotent producer (enable.idempotence=true).
    #[arg(long)]
    pub idempotence: bool,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(flatten)]
    pub write: WriteSettings,
    /// Records to send in all (split over the producers).
    #[arg(long, default_value_t = 1_000_000, conflicts_with = "seconds")]
    pub records: u64,
    /// Send for this many seconds instead of a number of records.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Producer threads, each with its own client and connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Total send rate in records/s (default: as fast as the broker acknowledges).
    #[arg(long)]
    pub rate: Option<f64>,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Read as members of this consumer group (subscribe); default: assign every
    /// partition directly, without a group.
    #[arg(long)]
    pub group: Option<String>,
    /// Records to read (default: every record in the topic when the command starts).
    #[arg(long)]
    pub records: Option<u64>,
    /// Consumer threads (partitions are split among them, or they join one group).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Give up when no record arrived for this many seconds.
    #[arg(long, default_value_t = 20.0)]
    pub idle_timeout: f64,
}

#[derive(Args, Debug)]
pub struct E2eArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(flatten)]
    pub write: WriteSettings,
    /// Fixed send rate, records/s.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Seconds of sending (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of sending first whose latencies are not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// After the last send, how long to wait for the reader to catch up.
    #[arg(long, default_value_t = 20.0)]
    pub drain_timeout: f64,
}

fn split_prop(p: &str) -> Result<(&str, &str)> {
    p.split_once('=')
        .ok_or_else(|| anyhow!("-X takes KEY=VALUE, not {p:?}"))
}

fn client_config(conn: &Connection) -> Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &conn.bootstrap)
        .set("client.id", "quiver-loadgen");
    for p in &conn.props {
        let (k, v) = split_prop(p)?;
        c.set(k, v);
    }
    Ok(c)
}

fn producer_config(
    conn: &Connection,
    w: &WriteSettings,
    default_linger: u64,
) -> Result<ClientConfig> {
    match w.acks.as_str() {
        "0" | "1" | "all" | "-1" => {}
        other => bail!("--acks must be 0, 1 or all, not {other:?}"),
    }
    match w.compression.as_str() {
        "none" | "gzip" | "snappy" | "lz4" | "zstd" => {}
        other => bail!("--compression must be none, gzip, snappy, lz4 or zstd, not {other:?}"),
    }
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &conn.bootstrap)
        .set("client.id", "quiver-loadgen")
        .set("acks", &w.acks)
        .set(
            "linger.ms",
            w.linger_ms.unwrap_or(default_linger).to_string(),
        )
        .set("batch.size", w.batch_size.to_string())
        // batch.size, not a record count, closes a batch.
        .set("batch.num.messages", "1000000")
        // A bounded queue: enough to keep batches full at loopback rates (~0.1 s of
        // 1 KiB records at 600 MB/s), small enough that draining it after a timed run
        // does not stretch the run on a slow broker.
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("compression.codec", &w.compression)
        .set(
            "enable.idempotence",
            if w.idempotence { "true" } else { "false" },
        )
        .set("message.timeout.ms", "120000");
    for p in &conn.props {
        let (k, v) = split_prop(p)?;
        c.set(k, v);
    }
    Ok(c)
}

fn consumer(conn: &Connection, group: Option<&str>) -> Result<BaseConsumer> {
    let mut c = client_config(conn)?;
    let group = group
        .map(str::to_string)
        .unwrap_or_else(|| format!("quiver-loadgen-{}", std::process::id()));
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    // -X again, so a property given there wins over the defaults above.
    for p in &conn.props {
        let (k, v) = split_prop(p)?;
        c.set(k, v);
    }
    c.create().context("creating the librdkafka consumer")
}

/// Creates the topic unless it exists; an existing topic is kept as it is.
fn ensure_topic(conn: &Connection, partitions: i32, rf: i32) -> Result<()> {
    if partitions < 1 {
        bail!("--partitions must be at least 1, not {partitions}");
    }
    let admin: AdminClient<DefaultClientContext> = client_config(conn)?
        .create()
        .context("creating the librdkafka admin client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the admin client's runtime")?;
    let topic = NewTopic::new(&conn.topic, partitions, TopicReplication::Fixed(rf));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = rt
        .block_on(admin.create_topics([&topic], &opts))
        .with_context(|| format!("CreateTopics {} to {}", conn.topic, conn.bootstrap))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                bail!("creating topic {t} ({partitions} partitions, RF {rf}): {code}")
            }
        }
    }
    Ok(())
}

/// Partition ids of the topic, waiting (bounded) for a just-created topic to appear.
fn partitions_of(c: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let deadline = Instant::now() + META_TIMEOUT;
    loop {
        let md = c
            .fetch_metadata(Some(topic), META_TIMEOUT)
            .with_context(|| format!("Metadata for topic {topic}"))?;
        if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
            let ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            if t.error().is_none() && !ids.is_empty() {
                return Ok(ids);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "topic {topic} has no partitions in the broker's metadata after {META_TIMEOUT:?}"
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------------
// produce

/// Delivery reports of one producer thread.
struct Deliveries {
    base: Instant,
    hist: Mutex<Histogram<u64>>,
    acked: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    fn new(base: Instant) -> Self {
        Deliveries {
            base,
            hist: Mutex::new(report::new_histogram()),
            acked: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// The send time, as ns since `base`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.base.elapsed();
        match result {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                self.bytes
                    .fetch_add(m.payload_len() as u64, Ordering::Relaxed);
                let lat = now.saturating_sub(Duration::from_nanos(sent_ns as u64));
                if let Ok(mut h) = self.hist.lock() {
                    report::record(&mut h, lat);
                }
            }
            Err((e, _)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// What one sender should do.
struct SendPlan {
    records: Option<u64>,
    until: Option<Instant>,
    /// Seconds between sends of this thread (pacing), if paced.
    interval: Option<f64>,
    first_seq: u64,
    seed: u64,
}

/// Sends through one client until the plan is done, then flushes; returns the
/// attempted sends.
fn send_loop(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    w: &WriteSettings,
    plan: &SendPlan,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut values = Values::new(w.size, plan.seed);
    let mut key = String::new();
    let mut rng = plan.seed | 1;
    let base = producer.context().base;
    let start = Instant::now();
    let mut i: u64 = 0;
    loop {
        if plan.records.is_some_and(|n| i >= n)
            || plan.until.is_some_and(|t| Instant::now() >= t)
            || stop.load(Ordering::Relaxed)
        {
            break;
        }
        if let Some(iv) = plan.interval {
            let due = start + Duration::from_secs_f64(i as f64 * iv);
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                producer.poll(Duration::ZERO);
                thread::sleep((due - now).min(Duration::from_millis(1)));
            }
        }
        let seq = plan.first_seq + i;
        let has_key = payload::key_into(w.keys, seq, &mut rng, &mut key);
        let value = values.next(seq);
        let sent = base.elapsed().as_nanos() as usize;
        let mut rec = BaseRecord::with_opaque_to(topic, sent).payload(value);
        if has_key {
            rec = rec.key(key.as_bytes());
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(5));
                    rec = back;
                }
                Err((e, _)) => return Err(anyhow!("producing to {topic}: {e}")),
            }
        }
        i += 1;
        if i.is_multiple_of(256) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the producer (records still unacknowledged after 120 s)")?;
    Ok(i)
}

/// Per-thread result of `produce`.
struct SentTotals {
    attempted: u64,
    acked: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

fn merge(totals: Vec<SentTotals>) -> SentTotals {
    let mut all = SentTotals {
        attempted: 0,
        acked: 0,
        bytes: 0,
        errors: 0,
        first_error: None,
        hist: report::new_histogram(),
    };
    for t in totals {
        all.attempted += t.attempted;
        all.acked += t.acked;
        all.bytes += t.bytes;
        all.errors += t.errors;
        all.first_error = all.first_error.or(t.first_error);
        // Same bounds on both sides: adding cannot fail.
        let _ = all.hist.add(&t.hist);
    }
    all
}

fn make_producer(cfg: &ClientConfig, base: Instant) -> Result<BaseProducer<Deliveries>> {
    cfg.create_with_context(Deliveries::new(base))
        .context("creating the librdkafka producer")
}

fn finish_producer(p: BaseProducer<Deliveries>, attempted: u64) -> SentTotals {
    let ctx = p.context();
    let hist = ctx
        .hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| report::new_histogram());
    SentTotals {
        attempted,
        acked: ctx.acked.load(Ordering::Relaxed),
        bytes: ctx.bytes.load(Ordering::Relaxed),
        errors: ctx.errors.load(Ordering::Relaxed),
        first_error: ctx.first_error.lock().ok().and_then(|e| e.clone()),
        hist,
    }
}

pub fn produce(args: ProduceArgs) -> Result<Report> {
    if args.producers == 0 {
        bail!("--producers must be at least 1");
    }
    if let Some(p) = args.write.partitions {
        ensure_topic(&args.conn, p, args.write.replication_factor)?;
    }
    let cfg = producer_config(&args.conn, &args.write, 5)?;
    let n = args.producers as u64;
    let base = Instant::now();
    // Clients connect before the clock starts: the figure is the steady rate.
    let producers: Vec<_> = (0..n)
        .map(|_| make_producer(&cfg, base))
        .collect::<Result<_>>()?;
    for p in &producers {
        p.client()
            .fetch_metadata(Some(&args.conn.topic), META_TIMEOUT)
            .with_context(|| {
                format!(
                    "Metadata for topic {} from {}",
                    args.conn.topic, args.conn.bootstrap
                )
            })?;
    }
    let barrier = Arc::new(Barrier::new(producers.len() + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (t, p) in producers.into_iter().enumerate() {
        let t = t as u64;
        let records = args
            .seconds
            .is_none()
            .then(|| args.records / n + u64::from(t < args.records % n));
        let first_seq = (args.records / n) * t + t.min(args.records % n);
        let interval = args.rate.map(|r| n as f64 / r);
        let seconds = args.seconds;
        let (topic, w) = (args.conn.topic.clone(), args.write.clone());
        let (barrier, stop) = (barrier.clone(), stop.clone());
        handles.push(thread::spawn(move || -> Result<SentTotals> {
            barrier.wait();
            let plan = SendPlan {
                records,
                until: seconds.map(|s| Instant::now() + Duration::from_secs_f64(s)),
                interval,
                first_seq: if seconds.is_some() {
                    t << 40
                } else {
                    first_seq
                },
                seed: t + 1,
            };
            let result = send_loop(&p, &topic, &w, &plan, &stop);
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            Ok(finish_producer(p, result?))
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    let totals = handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow!("a producer thread panicked"))?
        })
        .collect::<Result<Vec<_>>>()?;
    let elapsed = t0.elapsed();
    let all = merge(totals);

    let mut r = Report::new("produce");
    r.requested = if args.seconds.is_some() {
        all.attempted
    } else {
        args.records
    };
    r.records = all.acked;
    r.bytes = all.bytes;
    r.elapsed = elapsed;
    r.latency_of = Some("send to ack");
    r.latency = Some(all.hist);
    r.set("topic", args.conn.topic.as_str());
    r.set("size", args.write.size as u64);
    r.set("acks", args.write.acks.as_str());
    r.set("producers", n);
    r.set("errors", all.errors);
    if let Some(e) = &all.first_error {
        r.set("first_error", e.as_str());
    }
    if all.errors > 0 {
        r.fail(format!("{} records were refused or timed out", all.errors));
    }
    if all.acked != r.requested {
        r.fail(format!(
            "{} of {} records acknowledged",
            all.acked, r.requested
        ));
    }
    Ok(r)
}

// ------------------------------------------------------------------------------------
// consume

/// Offsets seen, per partition: the next offset expected, so distinct records, gaps
/// and duplicates can be counted without a lock, whichever thread reads a partition.
struct Seen {
    next: Vec<AtomicI64>,
    distinct: AtomicU64,
    bytes: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
}

impl Seen {
    fn new(starts: &[i64]) -> Self {
        Seen {
            next: starts.iter().map(|&s| AtomicI64::new(s)).collect(),
            distinct: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
        }
    }

    /// Counts one record; true when it was not seen before.
    fn note(&self, partition: usize, offset: i64, len: usize) -> bool {
        let Some(next) = self.next.get(partition) else {
            return false;
        };
        let prev = next.fetch_max(offset + 1, Ordering::Relaxed);
        if offset < prev {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if offset > prev {
            self.gaps
                .fetch_add((offset - prev) as u64, Ordering::Relaxed);
        }
        self.distinct.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        true
    }
}

pub fn consume(args: ConsumeArgs) -> Result<Report> {
    if args.consumers == 0 {
        bail!("--consumers must be at least 1");
    }
    let probe = consumer(&args.conn, None)?;
    let topic = args.conn.topic.clone();
    let parts = partitions_of(&probe, &topic)?;
    let n_parts = parts.iter().copied().max().unwrap_or(0) as usize + 1;
    let mut low = vec![0i64; n_parts];
    let mut high = vec![0i64; n_parts];
    for &p in &parts {
        let (l, h) = probe
            .fetch_watermarks(&topic, p, META_TIMEOUT)
            .with_context(|| format!("ListOffsets for {topic}/{p}"))?;
        low[p as usize] = l;
        high[p as usize] = h;
    }
    drop(probe);
    let present: u64 = parts
        .iter()
        .map(|&p| (high[p as usize] - low[p as usize]).max(0) as u64)
        .sum();
    let expected = args.records.unwrap_or(present);
    let seen = Arc::new(Seen::new(&low));
    let threads = args.consumers.min(parts.len()).max(1);
    let mut consumers = Vec::new();
    for t in 0..threads {
        let c = consumer(&args.conn, args.group.as_deref())?;
        match &args.group {
            Some(_) => c
                .subscribe(&[&topic])
                .with_context(|| format!("subscribing to {topic}"))?,
            None => {
                let mut tpl = TopicPartitionList::new();
                for &p in parts.iter().skip(t).step_by(threads) {
                    tpl.add_partition_offset(&topic, p, Offset::Offset(low[p as usize]))
                        .context("building the assignment")?;
                }
                c.assign(&tpl).context("assigning partitions")?;
            }
        }
        consumers.push(c);
    }
    let idle = Duration::from_secs_f64(args.idle_timeout);
    let t0 = Instant::now();
    let last = Arc::new(Mutex::new(t0));
    let mut handles = Vec::new();
    for c in consumers {
        let (seen, last) = (seen.clone(), last.clone());
        handles.push(thread::spawn(move || -> Result<()> {
            let mut quiet_since = Instant::now();
            while seen.distinct.load(Ordering::Relaxed) < expected {
                match c.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let len = m.payload_len();
                        if seen.note(m.partition() as usize, m.offset(), len) {
                            quiet_since = Instant::now();
                            if let Ok(mut l) = last.lock() {
                                *l = quiet_since;
                            }
                        }
                    }
                    Some(Err(e)) => return Err(anyhow!("consumer error: {e}")),
                    None => {
                        // The run is over when no thread has received for `idle`.
                        let latest = last.lock().map(|l| *l).unwrap_or(quiet_since);
                        if latest.elapsed() > idle && quiet_since.elapsed() > idle {
                            break;
                        }
                    }
                }
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow!("a consumer thread panicked"))??;
    }
    let end = last.lock().map(|l| *l).unwrap_or_else(|_| Instant::now());

    let mut r = Report::new("consume");
    r.requested = expected;
    r.records = seen.distinct.load(Ordering::Relaxed);
    r.bytes = seen.bytes.load(Ordering::Relaxed);
    r.elapsed = end.duration_since(t0);
    r.set("topic", topic.as_str());
    r.set("partitions", parts.len() as u64);
    r.set("consumers", threads as u64);
    r.set(
        "group",
        args.group
            .clone()
            .map(serde_json::Value::from)
            .unwrap_or_default(),
    );
    r.set("present_at_start", present);
    let dups = seen.duplicates.load(Ordering::Relaxed);
    let gaps = seen.gaps.load(Ordering::Relaxed);
    r.set("duplicates", dups);
    r.set("offset_gaps", gaps);
    if r.records < expected {
        r.fail(format!(
            "read {} of {expected} records (no record for {:.0} s)",
            r.records, args.idle_timeout
        ));
    }
    if gaps > 0 {
        r.fail(format!("{gaps} offsets skipped"));
    }
    Ok(r)
}

// ------------------------------------------------------------------------------------
// e2e

pub fn e2e(args: E2eArgs) -> Result<Report> {
    if args.write.size < payload::HEADER {
        bail!(
            "e2e needs --size >= {} (the send time travels in the value)",
            payload::HEADER
        );
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    if let Some(p) = args.write.partitions {
        ensure_topic(&args.conn, p, args.write.replication_factor)?;
    }
    let topic = args.conn.topic.clone();
    let reader = consumer(&args.conn, None)?;
    let parts = partitions_of(&reader, &topic)?;
    let n_parts = parts.iter().copied().max().unwrap_or(0) as usize + 1;
    let mut starts = vec![0i64; n_parts];
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        let (_, h) = reader
            .fetch_watermarks(&topic, p, META_TIMEOUT)
            .with_context(|| format!("ListOffsets for {topic}/{p}"))?;
        starts[p as usize] = h;
        tpl.add_partition_offset(&topic, p, Offset::Offset(h))
            .context("building the assignment")?;
    }
    reader.assign(&tpl).context("assigning partitions")?;

    let cfg = producer_config(&args.conn, &args.write, 0)?;
    let base = Instant::now();
    let producer = make_producer(&cfg, base)?;
    producer
        .client()
        .fetch_metadata(Some(&topic), META_TIMEOUT)
        .with_context(|| format!("Metadata for topic {topic}"))?;
    let warm_records = (args.warmup * args.rate).round() as u64;
    let total = warm_records + (args.seconds * args.rate).round() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (w, topic, stop, done) = (
            args.write.clone(),
            topic.clone(),
            stop.clone(),
            done.clone(),
        );
        let rate = args.rate;
        thread::spawn(move || -> Result<SentTotals> {
            let plan = SendPlan {
                records: Some(total),
                until: None,
                interval: Some(1.0 / rate),
                first_seq: 0,
                seed: 1,
            };
            let result = send_loop(&producer, &topic, &w, &plan, &stop);
            done.store(true, Ordering::Release);
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            Ok(finish_producer(producer, result?))
        })
    };
    let t0 = Instant::now();
    let seen = Seen::new(&starts);
    let mut hist = report::new_histogram();
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let mut done_at: Option<Instant> = None;
    let mut reader_error = None;
    loop {
        if done_at.is_none() && done.load(Ordering::Acquire) {
            done_at = Some(Instant::now());
        }
        if done_at.is_some() && seen.distinct.load(Ordering::Relaxed) >= total {
            break;
        }
        if done_at.is_some_and(|d| d.elapsed() > drain) || stop.load(Ordering::Relaxed) {
            break;
        }
        match reader.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let now = payload::now_ns();
                let Some(value) = m.payload() else { continue };
                if !seen.note(m.partition() as usize, m.offset(), value.len()) {
                    continue;
                }
                if let Some((ts, seq)) = payload::header(value) {
                    if seq >= warm_records {
                        report::record(&mut hist, Duration::from_nanos(now.saturating_sub(ts)));
                    }
                }
            }
            Some(Err(e)) => {
                reader_error = Some(e.to_string());
                stop.store(true, Ordering::Relaxed);
                break;
            }
            None => {}
        }
    }
    let elapsed = t0.elapsed();
    let sent = sender
        .join()
        .map_err(|_| anyhow!("the producer thread panicked"))??;
    if let Some(e) = reader_error {
        bail!("consumer error: {e}");
    }
    let mut r = Report::new("e2e");
    r.requested = total;
    r.records = seen.distinct.load(Ordering::Relaxed);
    r.bytes = seen.bytes.load(Ordering::Relaxed);
    r.elapsed = elapsed;
    r.latency_of = Some("value timestamp to receipt");
    r.latency = Some(hist);
    r.set("topic", topic.as_str());
    r.set("rate_target", args.rate);
    r.set("acked", sent.acked);
    r.set("errors", sent.errors);
    let ack = &sent.hist;
    if !ack.is_empty() {
        r.set(
            "ack_latency_ms",
            serde_json::json!({
                "p50": ack.value_at_quantile(0.5) as f64 / 1000.0,
                "p99": ack.value_at_quantile(0.99) as f64 / 1000.0,
                "p999": ack.value_at_quantile(0.999) as f64 / 1000.0,
            }),
        );
    }
    r.set("duplicates", seen.duplicates.load(Ordering::Relaxed));
    if sent.errors > 0 || sent.acked != total {
        r.fail(format!(
            "{} of {total} records acknowledged, {} errors",
            sent.acked, sent.errors
        ));
    }
    if r.records != sent.acked {
        r.fail(format!(
            "read {} of {} acknowledged records",
            r.records, sent.acked
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_distinct_records_gaps_and_duplicates() {
        let s = Seen::new(&[0, 10]);
        assert!(s.note(0, 0, 5));
        assert!(s.note(0, 1, 5));
        assert!(!s.note(0, 1, 5));
        assert!(s.note(1, 12, 5));
        assert!(!s.note(7, 0, 5));
        assert_eq!(s.distinct.load(Ordering::Relaxed), 3);
        assert_eq!(s.bytes.load(Ordering::Relaxed), 15);
        assert_eq!(s.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(s.gaps.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn bad_settings_are_named() {
        let conn = Connection {
            bootstrap: "127.0.0.1:1".into(),
            topic: "t".into(),
            props: vec![],
        };
        let mut w = WriteSettings {
            size: 10,
            keys: Keys::None,
            acks: "2".into(),
            linger_ms: None,
            batch_size: 1,
            compression: "none".into(),
            partitions: None,
            replication_factor: 1,
            idempotence: false,
        };
        let e = producer_config(&conn, &w, 0).unwrap_err().to_string();
        assert!(e.contains("--acks must be 0, 1 or all"), "{e}");
        w.acks = "all".into();
        w.compression = "brotli".into();
        let e = producer_config(&conn, &w, 0).unwrap_err().to_string();
        assert!(e.contains("--compression must be"), "{e}");
        let bad = Connection {
            props: vec!["nokey".into()],
            ..conn
        };
        let e = client_config(&bad).unwrap_err().to_string();
        assert!(e.contains("-X takes KEY=VALUE"), "{e}");
    }
}
