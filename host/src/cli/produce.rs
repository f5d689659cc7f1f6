//! `quiver produce`: lines from stdin or a file become records.
//!
//! Each line is a record value, or `key<SEP>value` with `--key-separator`. Records are
//! routed like the Java client does (murmur2 of the key; keyless records spread round
//! robin a batch at a time), sent in batches, and acknowledged before the command exits.
//!
//! With `--file` on a terminal a progress bar on stderr follows the bytes read. The
//! summary goes to stderr as a sentence (stdout stays free for a pipeline), or with
//! `--output json` to stdout as `{"topic", "records", "partitions": {"<p>": count}}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::client::Client;
use super::output::Steps;
use super::{check, parse_pairs, topic, Connection};
use crate::partition::encode::{encode_batch, RecordData};
// The Java client's keyed choice; one implementation shared with the plugins.
use quiver_plugin_sdk::hash::murmur2_partition as partition_for_key;

/// Records per produce request.
const BATCH_RECORDS: usize = 1000;

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Split each line into key and value at the first occurrence of this string.
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
    /// Header added to every record, e.g. --header source=cli (repeatable).
    #[arg(long, short = 'H')]
    header: Vec<String>,
    /// Send every record to this partition instead of routing by key.
    #[arg(long, short)]
    partition: Option<i32>,
    /// Read lines from this file instead of stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Acknowledgements to wait for: 0, 1 or all (-1).
    #[arg(long, default_value = "all")]
    acks: String,
    /// Compression codec: none, gzip, snappy, lz4 or zstd.
    #[arg(long, short = 'z', default_value = "none")]
    compression: String,
    #[command(flatten)]
    connection: Connection,
}

/// What `produce --output json` prints.
#[derive(Debug, Serialize)]
struct Produced {
    topic: String,
    records: u64,
    /// Records per partition, by partition number.
    partitions: BTreeMap<i32, u64>,
}

pub(crate) async fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let acks: i16 = match args.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => bail!("--acks must be 0, 1 or all, not `{other}`"),
    };
    let compression = match args.compression.as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("--compression must be none, gzip, snappy, lz4 or zstd, not `{other}`"),
    };
    let headers: Vec<(String, Option<Bytes>)> = parse_pairs(&args.header, "header")?
        .into_iter()
        .map(|(k, v)| (k, Some(Bytes::from(v))))
        .collect();
    let mut client = Client::connect(&args.connection.bootstrap).await?;
    let partitions = topic::partition_count(&mut client, &args.topic).await?;
    if let Some(p) = args.partition {
        if p < 0 || p >= partitions {
            return Err(super::hinted(
                format!(
                    "topic '{}' has partitions 0..{}; there is no partition {p}",
                    args.topic, partitions
                ),
                format!(
                    "`quiver topic describe {}` lists them; `quiver topic alter {} --partitions N` adds more",
                    args.topic, args.topic
                ),
            ));
        }
    }

    let (input, size): (Box<dyn tokio::io::AsyncRead + Unpin>, Option<u64>) = match &args.file {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            let size = file.metadata().await.ok().map(|m| m.len());
            (Box::new(file), size)
        }
        None => (Box::new(tokio::io::stdin()), None),
    };
    // Only a file has a known end; a pipe on stdin gets no bar.
    let progress = match size {
        Some(len) => args
            .connection
            .out
            .progress(Steps::Bytes(len), &format!("producing to {}", args.topic)),
        None => indicatif::ProgressBar::hidden(),
    };
    let mut lines = BufReader::new(input).lines();
    let mut sender = Sender {
        client,
        topic: args.topic.clone(),
        acks,
        compression,
        pending: BTreeMap::new(),
        pending_count: 0,
        sent: 0,
        per_partition: BTreeMap::new(),
        round_robin: 0,
        partitions,
    };
    while let Some(line) = lines.next_line().await? {
        progress.inc(line.len() as u64 + 1);
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                None => (None, Bytes::from(line)),
            },
            None => (None, Bytes::from(line)),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, partitions as u32) as i32,
            (None, None) => sender.round_robin,
        };
        sender.add(partition, key, value, &headers);
        if sender.pending_count >= BATCH_RECORDS {
            sender.flush().await?;
        }
    }
    sender.flush().await?;
    progress.finish_and_clear();
    let produced = Produced {
        topic: args.topic.clone(),
        records: sender.sent,
        partitions: sender.per_partition,
    };
    args.connection.out.print(&produced, |p| {
        eprintln!("produced {} records to '{}'", p.records, p.topic)
    });
    Ok(ExitCode::SUCCESS)
}

struct Sender {
    client: Client,
    topic: String,
    acks: i16,
    compression: Compression,
    pending: BTreeMap<i32, Vec<RecordData>>,
    pending_count: usize,
    sent: u64,
    per_partition: BTreeMap<i32, u64>,
    round_robin: i32,
    partitions: i32,
}

impl Sender {
    fn add(
        &mut self,
        partition: i32,
        key: Option<Bytes>,
        value: Bytes,
        headers: &[(String, Option<Bytes>)],
    ) {
        self.pending.entry(partition).or_default().push(RecordData {
            key,
            value: Some(value),
            headers: headers.to_vec(),
            timestamp: crate::broker::now_ms(),
        });
        self.pending_count += 1;
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(StrBytes::from_string(self.topic.clone()));
        for (partition, records) in std::mem::take(&mut self.pending) {
            *self.per_partition.entry(partition).or_default() += records.len() as u64;
            let batch = encode_batch(&records, self.compression).map_err(anyhow::Error::msg)?;
            let mut data = PartitionProduceData::default();
            data.index = partition;
            data.records = Some(batch);
            topic.partition_data.push(data);
        }
        let mut request = ProduceRequest::default();
        request.acks = self.acks;
        request.timeout_ms = 30_000;
        request.topic_data = vec![topic];
        if self.acks == 0 {
            // No response will come; send and move on.
            self.client.send_only(request, 8).await?;
        } else {
            let response = self.client.request(request, 8).await?;
            for t in &response.responses {
                for p in &t.partition_responses {
                    check(
                        p.error_code,
                        p.error_message.as_deref(),
                        format!("producing to {}-{}", self.topic, p.index),
                    )?;
                }
            }
        }
        self.sent += self.pending_count as u64;
        self.pending_count = 0;
        self.round_robin = (self.round_robin + 1) % self.partitions;
        Ok(())
    }
}
