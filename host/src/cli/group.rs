//! `quiver group list|describe|reset-offsets|delete`: consumer groups and their lag.
//!
//! Lag is what operators watch most, so `describe` shows it per partition next to the
//! member consuming it. `reset-offsets` only prints its plan unless `--execute` is
//! given, and refuses a group with live members: their next commit would overwrite the
//! reset, and Kafka refuses such a commit from outside the group anyway. Looking up
//! the offsets of many topics takes a while, so on a terminal a progress bar counts them.
//!
//! `--output json` prints these documents:
//!
//! - `list`: `{"groups": [{"group_id", "state", "protocol_type"}]}`, sorted by id
//! - `describe`: `{"group_id", "state", "protocol_type", "protocol", "members":
//!   [{"member_id", "client_id", "host", "partitions": [{"topic", "partition"}]}],
//!   "offsets": [{"topic", "partition", "current_offset", "log_end_offset", "lag",
//!   "member_id", "client_id", "host"}]}` (absent values are null)
//! - `reset-offsets`: `{"group_id", "executed", "offsets": [{"topic", "partition",
//!   "current_offset", "new_offset"}]}`
//! - `delete`: `{"deleted"}`

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use bytes::Buf;
use clap::{Args, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, GroupId, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;

use super::client::Client;
use super::output::{Steps, Table};
use super::topic::{list_offsets, metadata, partition_count};
use super::{check, Connection};

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// List consumer groups with their state.
    #[command(after_help = "\
Examples:
  quiver group list
  quiver group list --output json | jq -r '.groups[] | select(.state == \"Empty\") | .group_id'")]
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a group's members and, per partition, committed offset, log end and lag.
    #[command(after_help = "\
Examples:
  quiver group describe billing
  quiver group describe billing --output json | jq '[.offsets[].lag] | add'")]
    Describe {
        /// Group id.
        group: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Move an inactive group's committed offsets (prints the plan unless --execute).
    #[command(after_help = "\
Examples:
  quiver group reset-offsets billing --topic orders --to-earliest            # dry run: the plan
  quiver group reset-offsets billing --topic orders --to-earliest --execute
  quiver group reset-offsets billing --topic orders --shift-by -100 --execute
  quiver group reset-offsets billing --topic orders --to-datetime 2026-11-01T00:00:00Z --execute")]
    ResetOffsets(ResetArgs),
    /// Delete an inactive group and its committed offsets.
    Delete {
        /// Group id.
        group: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(
    ["to_earliest", "to_latest", "to_datetime", "to_offset", "shift_by"]
)))]
pub(crate) struct ResetArgs {
    /// Group id.
    group: String,
    /// Topic whose partitions are reset (repeatable).
    #[arg(long, required = true)]
    topic: Vec<String>,
    /// The first offset still in the log.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset (skip everything not yet consumed).
    #[arg(long)]
    to_latest: bool,
    /// The first offset with a timestamp at or after this time, e.g.
    /// 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.000+02:00.
    #[arg(long, value_name = "ISO-8601")]
    to_datetime: Option<String>,
    /// This offset (clamped to the offsets the log holds).
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// The committed offset moved by N (negative goes back; clamped to the log).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Commit the plan instead of only printing it.
    #[arg(long)]
    execute: bool,
    #[command(flatten)]
    connection: Connection,
}

pub(crate) async fn run(command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::List { connection } => {
            // Each broker lists the groups it coordinates: ask them all, as Kafka's
            // admin client does.
            let mut bootstrap = Client::connect(&connection.bootstrap).await?;
            let brokers = metadata(&mut bootstrap, None).await?.brokers;
            let mut groups = BTreeMap::new();
            for broker in &brokers {
                let address = format!("{}:{}", broker.host.as_str(), broker.port);
                let mut client = Client::connect(&address).await.with_context(|| {
                    format!("listing the groups of broker {}", broker.node_id.0)
                })?;
                let version = client.version(ApiKey::ListGroups, 4)?;
                let response = client
                    .request(ListGroupsRequest::default(), version)
                    .await?;
                check(
                    response.error_code,
                    None,
                    format!("listing the groups of broker {}", broker.node_id.0),
                )?;
                for g in response.groups {
                    let state = if version >= 4 {
                        g.group_state.to_string()
                    } else {
                        "-".into()
                    };
                    groups.insert(
                        g.group_id.0.to_string(),
                        (state, g.protocol_type.to_string()),
                    );
                }
            }
            let groups: Vec<ListedGroup> = groups
                .into_iter()
                .map(|(group_id, (state, protocol_type))| ListedGroup {
                    group_id,
                    state,
                    protocol_type,
                })
                .collect();
            connection.out.print(&GroupList { groups }, |v| {
                let mut table = Table::new(["GROUP", "STATE", "PROTOCOL-TYPE"]);
                for g in &v.groups {
                    table.row([&g.group_id, &g.state, &g.protocol_type]);
                }
                table.print();
            });
        }
        GroupCommand::Describe { group, connection } => {
            let mut client = Client::connect(&connection.bootstrap).await?;
            let view = describe(&mut client, &group).await?;
            connection.out.print(&view, print_described);
        }
        GroupCommand::ResetOffsets(args) => {
            let mut client = Client::connect(&args.connection.bootstrap).await?;
            let view = reset_offsets(&mut client, &args).await?;
            args.connection.out.print(&view, |v| {
                let mut table = Table::new(["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]);
                for o in &v.offsets {
                    table.row([
                        o.topic.clone(),
                        o.partition.to_string(),
                        o.current_offset.map_or("-".into(), |n| n.to_string()),
                        o.new_offset.to_string(),
                    ]);
                }
                table.print();
                if v.executed {
                    println!(
                        "committed {} offset(s) for group {}",
                        v.offsets.len(),
                        v.group_id
                    );
                } else {
                    println!("dry run: nothing changed (add --execute to commit these offsets)");
                }
            });
        }
        GroupCommand::Delete { group, connection } => {
            let mut client = Client::connect(&connection.bootstrap).await?;
            let mut coordinator = coordinator(&mut client, &group).await?;
            let mut request = DeleteGroupsRequest::default();
            request.groups_names = vec![group_id(&group)];
            let version = coordinator.version(ApiKey::DeleteGroups, 2)?;
            let response = coordinator.request(request, version).await?;
            let result = response
                .results
                .first()
                .context("empty DeleteGroups response")?;
            check(result.error_code, None, format!("deleting group '{group}'"))?;
            connection
                .out
                .print(&serde_json::json!({ "deleted": group }), |_| {
                    println!("deleted group {group}")
                });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

/// A connection to the group's coordinator (the bootstrap broker if it is the one).
pub(crate) async fn coordinator(client: &mut Client, group: &str) -> anyhow::Result<Client> {
    let mut request = FindCoordinatorRequest::default();
    request.key = StrBytes::from_string(group.to_string());
    let version = client.version(ApiKey::FindCoordinator, 3)?;
    let response = client.request(request, version).await?;
    check(
        response.error_code,
        response.error_message.as_ref().map(|m| m.as_str()),
        format!("finding the coordinator of group '{group}'"),
    )?;
    let address = format!("{}:{}", response.host.as_str(), response.port);
    Client::connect(&address).await
}

pub(crate) async fn describe_group(
    client: &mut Client,
    group: &str,
) -> anyhow::Result<DescribeGroupsResponse> {
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![group_id(group)];
    let version = client.version(ApiKey::DescribeGroups, 5)?;
    let response = client.request(request, version).await?;
    let described = response
        .groups
        .first()
        .context("empty DescribeGroups response")?;
    check(
        described.error_code,
        None,
        format!("describing group '{group}'"),
    )?;
    Ok(response)
}

/// Committed offsets of `group`: of every partition when `topics` is `None`.
async fn committed(
    client: &mut Client,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut request = OffsetFetchRequest::default();
    request.group_id = group_id(group);
    request.topics = topics.map(|topics| {
        topics
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = OffsetFetchRequestTopic::default();
                t.name = TopicName(StrBytes::from_string(name));
                t.partition_indexes = partitions;
                t
            })
            .collect()
    });
    // v2 to v7 share the single-group layout with a top-level error.
    let version = client.version(ApiKey::OffsetFetch, 7)?;
    if version < 2 {
        bail!("{} only speaks OffsetFetch v{version}", client.address());
    }
    let response = client.request(request, version).await?;
    check(
        response.error_code,
        None,
        format!("fetching offsets of '{group}'"),
    )?;
    let mut out = BTreeMap::new();
    for t in response.topics {
        for p in t.partitions {
            check(
                p.error_code,
                None,
                format!("offset of {}-{}", t.name.0.as_str(), p.partition_index),
            )?;
            if p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// The partitions in a consumer-protocol assignment.
pub(crate) fn assigned_partitions(assignment: &[u8]) -> Vec<(String, i32)> {
    let mut buf = bytes::Bytes::copy_from_slice(assignment);
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16();
    match ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|tp| {
                let topic = tp.topic.0.to_string();
                tp.partitions.into_iter().map(move |p| (topic.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `group list`'s answer.
#[derive(Debug, Serialize)]
struct GroupList {
    groups: Vec<ListedGroup>,
}

#[derive(Debug, Serialize)]
struct ListedGroup {
    group_id: String,
    state: String,
    protocol_type: String,
}

/// `group describe`'s answer.
#[derive(Debug, Serialize)]
struct Described {
    group_id: String,
    state: String,
    protocol_type: String,
    /// The assignor the members agreed on; null when the group has none.
    protocol: Option<String>,
    members: Vec<Member>,
    offsets: Vec<PartitionLag>,
}

#[derive(Debug, Serialize)]
struct Member {
    member_id: String,
    client_id: String,
    host: String,
    partitions: Vec<TopicPartition>,
}

#[derive(Debug, Serialize)]
struct TopicPartition {
    topic: String,
    partition: i32,
}

#[derive(Debug, Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
    client_id: Option<String>,
    host: Option<String>,
}

/// `group reset-offsets`' answer: the plan, and whether it was committed.
#[derive(Debug, Serialize)]
struct ResetPlan {
    group_id: String,
    executed: bool,
    offsets: Vec<PlannedOffset>,
}

#[derive(Debug, Serialize)]
struct PlannedOffset {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    new_offset: i64,
}

async fn describe(client: &mut Client, group: &str) -> anyhow::Result<Described> {
    let mut coordinator = coordinator(client, group).await?;
    let response = describe_group(&mut coordinator, group).await?;
    let described = &response.groups[0];
    let offsets = committed(&mut coordinator, group, None).await?;
    let consumer = described.protocol_type.as_str() == "consumer";
    let mut owner: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
    let mut members = Vec::new();
    for m in &described.members {
        let assigned = if consumer {
            assigned_partitions(&m.member_assignment)
        } else {
            Vec::new()
        };
        for tp in &assigned {
            owner.insert(
                tp.clone(),
                (
                    m.member_id.to_string(),
                    m.client_id.to_string(),
                    m.client_host.to_string(),
                ),
            );
        }
        members.push(Member {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            partitions: assigned
                .into_iter()
                .map(|(topic, partition)| TopicPartition { topic, partition })
                .collect(),
        });
    }
    let state = described.group_state.as_str();
    if state == "Dead" && offsets.is_empty() {
        return Err(super::hinted(
            format!("group '{group}' does not exist"),
            "`quiver group list` shows the groups there are",
        ));
    }
    let partitions: BTreeSet<(String, i32)> = offsets.keys().chain(owner.keys()).cloned().collect();
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in &partitions {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    let mut log_end = BTreeMap::new();
    for (topic, ps) in &by_topic {
        for (p, end) in list_offsets(client, topic, ps, -1).await? {
            log_end.insert((topic.clone(), p), end);
        }
    }
    let lags = partitions
        .into_iter()
        .map(|tp| {
            let current = offsets.get(&tp).copied();
            let end = log_end.get(&tp).copied();
            let owner = owner.get(&tp).cloned();
            PartitionLag {
                lag: current.zip(end).map(|(c, e)| (e - c).max(0)),
                current_offset: current,
                log_end_offset: end,
                member_id: owner.as_ref().map(|o| o.0.clone()),
                client_id: owner.as_ref().map(|o| o.1.clone()),
                host: owner.map(|o| o.2),
                topic: tp.0,
                partition: tp.1,
            }
        })
        .collect();
    Ok(Described {
        group_id: group.to_string(),
        state: state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: Some(described.protocol_data.to_string()).filter(|p| !p.is_empty()),
        members,
        offsets: lags,
    })
}

fn print_described(d: &Described) {
    println!(
        "group {}: state {}, {} member(s), protocol {}",
        d.group_id,
        d.state,
        d.members.len(),
        d.protocol.as_deref().unwrap_or("-")
    );
    let mut table = Table::new([
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "MEMBER-ID",
        "CLIENT-ID",
        "HOST",
    ]);
    let text = |n: Option<i64>| n.map_or("-".to_string(), |n| n.to_string());
    for o in &d.offsets {
        table.row([
            o.topic.clone(),
            o.partition.to_string(),
            text(o.current_offset),
            text(o.log_end_offset),
            text(o.lag),
            o.member_id.clone().unwrap_or_default(),
            o.client_id.clone().unwrap_or_default(),
            o.host.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print();
    if d.protocol_type == "consumer" {
        for m in d.members.iter().filter(|m| m.partitions.is_empty()) {
            println!(
                "member {} ({}, {}) has no partitions",
                m.member_id, m.client_id, m.host
            );
        }
    }
}

async fn reset_offsets(client: &mut Client, args: &ResetArgs) -> anyhow::Result<ResetPlan> {
    let group = args.group.as_str();
    let mut coordinator = coordinator(client, group).await?;
    let response = describe_group(&mut coordinator, group).await?;
    let described = &response.groups[0];
    if !described.members.is_empty() {
        return Err(super::hinted(
            format!(
                "group '{group}' has {} active member(s) (state {})",
                described.members.len(),
                described.group_state.as_str()
            ),
            "stop its consumers before resetting its offsets: their next commit would undo the reset",
        ));
    }
    let datetime = args
        .to_datetime
        .as_deref()
        .map(parse_datetime)
        .transpose()?;
    let mut plan: Vec<(String, i32, Option<i64>, i64)> = Vec::new();
    // Each topic costs a metadata, three ListOffsets and an OffsetFetch round trip:
    // with many topics or a slow link that is worth showing.
    let progress = args
        .connection
        .out
        .progress(Steps::Count(args.topic.len() as u64), "looking up offsets");
    for topic in &args.topic {
        progress.set_message(format!("looking up offsets of {topic}"));
        metadata(client, Some(topic)).await?;
        let count = partition_count(client, topic).await?;
        let partitions: Vec<i32> = (0..count).collect();
        let earliest: BTreeMap<i32, i64> = list_offsets(client, topic, &partitions, -2)
            .await?
            .into_iter()
            .collect();
        let latest: BTreeMap<i32, i64> = list_offsets(client, topic, &partitions, -1)
            .await?
            .into_iter()
            .collect();
        let by_time: Option<BTreeMap<i32, i64>> = match datetime {
            Some(ts) => Some(
                list_offsets(client, topic, &partitions, ts)
                    .await?
                    .into_iter()
                    .collect(),
            ),
            None => None,
        };
        let current = committed(
            &mut coordinator,
            group,
            Some(vec![(topic.clone(), partitions.clone())]),
        )
        .await?;
        for p in partitions {
            let (low, high) = (earliest[&p], latest[&p]);
            let now = current.get(&(topic.clone(), p)).copied();
            let target = if args.to_earliest {
                low
            } else if args.to_latest {
                high
            } else if let Some(found) = &by_time {
                // No record at or after the time: everything is older, start at the end.
                match found[&p] {
                    -1 => high,
                    offset => offset,
                }
            } else if let Some(offset) = args.to_offset {
                offset
            } else {
                let shift = args.shift_by.expect("clap requires one target");
                now.unwrap_or(low).saturating_add(shift)
            };
            plan.push((topic.clone(), p, now, target.clamp(low, high)));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let mut result = ResetPlan {
        group_id: group.to_string(),
        executed: false,
        offsets: plan
            .iter()
            .map(|(topic, partition, now, target)| PlannedOffset {
                topic: topic.clone(),
                partition: *partition,
                current_offset: *now,
                new_offset: *target,
            })
            .collect(),
    };
    if !args.execute {
        return Ok(result);
    }
    let mut request = OffsetCommitRequest::default();
    request.group_id = group_id(group);
    request.generation_id_or_member_epoch = -1;
    let mut topics: BTreeMap<String, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (topic, p, _, target) in &plan {
        let mut part = OffsetCommitRequestPartition::default();
        part.partition_index = *p;
        part.committed_offset = *target;
        topics.entry(topic.clone()).or_default().push(part);
    }
    request.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = OffsetCommitRequestTopic::default();
            t.name = TopicName(StrBytes::from_string(name));
            t.partitions = partitions;
            t
        })
        .collect();
    let version = coordinator.version(ApiKey::OffsetCommit, 8)?;
    let response = coordinator.request(request, version).await?;
    for t in response.topics {
        for p in t.partitions {
            check(
                p.error_code,
                None,
                format!("committing {}-{}", t.name.0.as_str(), p.partition_index),
            )?;
        }
    }
    result.executed = true;
    Ok(result)
}

/// Milliseconds since the epoch of an ISO-8601 date-time:
/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (no zone means UTC).
fn parse_datetime(text: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "'{text}' is not an ISO-8601 date-time such as 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.000+02:00"
        )
    };
    let (date, rest) = text.split_once(['T', ' ']).ok_or_else(bad)?;
    let (zone_offset_min, time) = if let Some(time) = rest.strip_suffix('Z') {
        (0, time)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (time, zone) = rest.split_at(pos);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (sign * (h * 60 + m), time)
    } else {
        (0, rest)
    };
    let mut d = date.splitn(3, '-');
    let (year, month, day): (i64, i64, i64) = (
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
    );
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':');
    let (hour, minute, second): (i64, i64, i64) = (
        t.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        t.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        t.next()
            .map_or(Some(0), |v| v.parse().ok())
            .ok_or_else(bad)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let millis: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
    // Days from 1970-01-01 in the proleptic Gregorian calendar.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - zone_offset_min * 60;
    Ok(seconds * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::parse_datetime;

    #[test]
    fn datetimes_parse_to_epoch_millis() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_datetime("2024-05-01T12:00:00Z").unwrap(),
            1_714_564_800_000
        );
        assert_eq!(
            parse_datetime("2024-05-01T14:00:00.250+02:00").unwrap(),
            1_714_564_800_250
        );
        assert_eq!(
            parse_datetime("2000-02-29T00:00:00").unwrap(),
            951_782_400_000
        );
        for bad in [
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-01",
            "2024-05-01T25:00:00Z",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }
}
