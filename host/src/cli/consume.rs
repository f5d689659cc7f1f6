//! `quiver consume`: reads records from a topic's partitions and prints them.
//!
//! Without `--follow` it stops at the end of each partition as it was when the command
//! started (like `kcat -e`); with `--follow` it keeps waiting for new records.
//!
//! `--output json` prints one JSON object per record per line (JSON Lines, so a
//! `--follow` stream can be read record by record):
//!
//! ```text
//! {"topic":"orders","partition":0,"offset":7,"timestamp":1700000000000,"key":"k1","value":"v1","headers":[{"key":"source","value":"cli"}]}
//! ```
//!
//! `key`, `value` and a header's `value` are strings when their bytes are UTF-8, null
//! when the record has none, and `{"base64": "…"}` otherwise, so no byte is lost.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use super::client::Client;
use super::{check, topic, Connection};

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Only this partition (default: all).
    #[arg(long, short)]
    partition: Option<i32>,
    /// Start at the earliest retained record (the default).
    #[arg(long, conflicts_with_all = ["offset", "timestamp", "from_end"])]
    from_beginning: bool,
    /// Start at this offset (in every selected partition).
    #[arg(long, short)]
    offset: Option<i64>,
    /// Start at the first record with a timestamp at or after this (ms since epoch).
    #[arg(long)]
    timestamp: Option<i64>,
    /// Start at the end: print only records produced from now on.
    #[arg(long)]
    from_end: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max_messages: Option<u64>,
    /// Record template of table output: %t topic, %p partition, %o offset, %k key,
    /// %v value, %T timestamp, %h headers (k=v,…), \n newline, \t tab. With
    /// `--output json` each record is a JSON object on its own line instead.
    #[arg(long, short, default_value = "%v\\n")]
    format: String,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    connection: Connection,
}

struct Cursor {
    partition: i32,
    next: i64,
    stop: i64,
}

pub(crate) async fn run(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.connection.bootstrap).await?;
    let count = topic::partition_count(&mut client, &args.topic).await?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if p < 0 || p >= count => {
            return Err(super::hinted(
                format!(
                    "topic '{}' has partitions 0..{count}; there is no partition {p}",
                    args.topic
                ),
                format!("`quiver topic describe {}` lists them", args.topic),
            ))
        }
        Some(p) => vec![p],
        None => (0..count).collect(),
    };
    let starts = match (args.offset, args.timestamp, args.from_end) {
        (Some(offset), _, _) => partitions.iter().map(|&p| (p, offset)).collect(),
        (_, Some(ts), _) => {
            let found = topic::list_offsets(&mut client, &args.topic, &partitions, ts).await?;
            let ends = topic::list_offsets(&mut client, &args.topic, &partitions, -1).await?;
            // No record at or after the timestamp: start at the end.
            found
                .into_iter()
                .zip(ends)
                .map(|((p, o), (_, end))| (p, if o < 0 { end } else { o }))
                .collect()
        }
        (_, _, true) => topic::list_offsets(&mut client, &args.topic, &partitions, -1).await?,
        _ => topic::list_offsets(&mut client, &args.topic, &partitions, -2).await?,
    };
    let ends = topic::list_offsets(&mut client, &args.topic, &partitions, -1).await?;
    let mut cursors: Vec<Cursor> = starts
        .into_iter()
        .zip(ends)
        .map(|((partition, next), (_, end))| Cursor {
            partition,
            next,
            stop: if args.follow { i64::MAX } else { end },
        })
        .collect();

    let format = args.format.replace("\\n", "\n").replace("\\t", "\t");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let limit = args.max_messages.unwrap_or(u64::MAX);
    loop {
        cursors.retain(|c| c.next < c.stop);
        if cursors.is_empty() || printed >= limit {
            break;
        }
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(StrBytes::from_string(args.topic.clone()));
        topic.partitions = cursors
            .iter()
            .map(|c| {
                let mut p = FetchPartition::default();
                p.partition = c.partition;
                p.fetch_offset = c.next;
                p.partition_max_bytes = 1024 * 1024;
                p
            })
            .collect();
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(-1);
        request.max_wait_ms = 500;
        request.min_bytes = 1;
        request.max_bytes = 16 * 1024 * 1024;
        request.topics = vec![topic];
        let response = client.request(request, 12).await?;
        for t in response.responses {
            for p in t.partitions {
                check(
                    p.error_code,
                    None,
                    format!("fetching {}-{}", args.topic, p.partition_index),
                )?;
                let Some(cursor) = cursors
                    .iter_mut()
                    .find(|c| c.partition == p.partition_index)
                else {
                    continue;
                };
                let mut records = p.records.unwrap_or_default();
                let sets = RecordBatchDecoder::decode_all(&mut records).with_context(|| {
                    format!("decoding records of {}-{}", args.topic, p.partition_index)
                })?;
                for record in sets.into_iter().flat_map(|s| s.records) {
                    if record.offset < cursor.next || record.offset >= cursor.stop || record.control
                    {
                        continue;
                    }
                    cursor.next = record.offset + 1;
                    if printed < limit {
                        if args.connection.out.json() {
                            let line = json_record(&args.topic, p.partition_index, &record);
                            serde_json::to_writer(&mut out, &line)?;
                            out.write_all(b"\n")?;
                        } else {
                            write_record(
                                &mut out,
                                &format,
                                &args.topic,
                                p.partition_index,
                                &record,
                            )?;
                        }
                        printed += 1;
                    }
                }
            }
        }
        out.flush()?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One line of `consume --output json`.
#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Value,
    value: Value,
    headers: Vec<JsonHeader>,
}

#[derive(Debug, Serialize)]
struct JsonHeader {
    key: String,
    value: Value,
}

/// Bytes as JSON: a string when they are UTF-8, `{"base64": …}` when not, null when
/// absent.
fn json_bytes(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => serde_json::json!({
                "base64": base64::engine::general_purpose::STANDARD.encode(b)
            }),
        },
    }
}

fn json_record<'a>(topic: &'a str, partition: i32, r: &Record) -> JsonRecord<'a> {
    JsonRecord {
        topic,
        partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: json_bytes(r.key.as_deref()),
        value: json_bytes(r.value.as_deref()),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| JsonHeader {
                key: k.to_string(),
                value: json_bytes(v.as_deref()),
            })
            .collect(),
    }
}

fn write_record(
    out: &mut impl Write,
    format: &str,
    topic: &str,
    partition: i32,
    r: &Record,
) -> anyhow::Result<()> {
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            write!(out, "{c}")?;
            continue;
        }
        match chars.next() {
            Some('t') => write!(out, "{topic}")?,
            Some('p') => write!(out, "{partition}")?,
            Some('o') => write!(out, "{}", r.offset)?,
            Some('T') => write!(out, "{}", r.timestamp)?,
            Some('k') => out.write_all(r.key.as_deref().unwrap_or_default())?,
            Some('v') => out.write_all(r.value.as_deref().unwrap_or_default())?,
            Some('h') => {
                let mut first = true;
                for (k, v) in &r.headers {
                    if !first {
                        write!(out, ",")?;
                    }
                    first = false;
                    write!(out, "{}=", k.as_str())?;
                    out.write_all(v.as_deref().unwrap_or_default())?;
                }
            }
            Some('%') => write!(out, "%")?,
            Some(other) => write!(out, "%{other}")?,
            None => write!(out, "%")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn records_become_one_json_object_each() {
        let mut record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: 7,
            sequence: 0,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k1")),
            value: Some(Bytes::from_static(&[0xff, 0x00])),
            headers: Default::default(),
        };
        record.headers.insert(
            kafka_protocol::protocol::StrBytes::from_static_str("source"),
            Some(Bytes::from_static(b"cli")),
        );
        let line = serde_json::to_string(&json_record("orders", 2, &record)).unwrap();
        assert_eq!(
            line,
            r#"{"topic":"orders","partition":2,"offset":7,"timestamp":1700000000000,"key":"k1","value":{"base64":"/wA="},"headers":[{"key":"source","value":"cli"}]}"#
        );
        record.key = None;
        let line = serde_json::to_value(json_record("orders", 2, &record)).unwrap();
        assert_eq!(line["key"], Value::Null);
    }
}
