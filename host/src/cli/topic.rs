//! `quiver topic create|list|describe|alter|delete`.
//!
//! `--output json` prints these documents (one per command):
//!
//! - `create`: `{"name", "partitions", "replication_factor", "validate_only"}`
//! - `list`: `{"topics": [{"name", "partitions", "id"}]}`, sorted by name
//! - `describe`: `{"name", "id", "partitions": [{"partition", "leader", "leader_epoch",
//!   "replicas", "isr", "start_offset", "end_offset", "records"}], "configs": [{"name",
//!   "value", "source"}]}` where `source` is `topic` (an override) or `default`
//! - `alter`: `{"name", "configs_set", "configs_deleted", "partitions"}`
//! - `delete`: `{"deleted"}`

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use serde::Serialize;

use super::client::Client;
use super::output::Table;
use super::{check, parse_pairs, Connection};

#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "\
Examples:
  quiver topic create orders --partitions 6
  quiver topic create audit --partitions 3 --replication-factor 3 --config retention.ms=604800000
  quiver topic create compacted --config cleanup.policy=compact --validate-only")]
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (broker default if omitted).
        #[arg(long, short)]
        partitions: Option<i32>,
        /// Replication factor (broker default if omitted).
        #[arg(long, short)]
        replication_factor: Option<i16>,
        /// Topic config, e.g. --config retention.ms=60000 (repeatable).
        #[arg(long, short)]
        config: Vec<String>,
        /// Only check that the broker would accept it.
        #[arg(long)]
        validate_only: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// List topics.
    #[command(after_help = "\
Examples:
  quiver topic list
  quiver topic list --output json | jq -r '.topics[].name'")]
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a topic's partitions, offsets and config overrides.
    #[command(after_help = "\
Examples:
  quiver topic describe orders
  quiver topic describe orders --output json | jq '.partitions[] | {partition, records}'")]
    Describe {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Change a topic's configs or grow its partition count.
    #[command(after_help = "\
Examples:
  quiver topic alter orders --config retention.ms=86400000 --config compression.type=zstd
  quiver topic alter orders --delete-config retention.ms
  quiver topic alter orders --partitions 12")]
    Alter {
        /// Topic name.
        name: String,
        /// Set a config, e.g. --config retention.ms=60000 (repeatable).
        #[arg(long, short)]
        config: Vec<String>,
        /// Remove a config override, returning it to the default (repeatable).
        #[arg(long)]
        delete_config: Vec<String>,
        /// New (larger) partition count.
        #[arg(long, short)]
        partitions: Option<i32>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub(crate) async fn run(command: TopicCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            config,
            validate_only,
            connection,
        } => {
            let mut client = Client::connect(&connection.bootstrap).await?;
            let mut topic = CreatableTopic::default();
            topic.name = TopicName(StrBytes::from_string(name.clone()));
            topic.num_partitions = partitions.unwrap_or(-1);
            topic.replication_factor = replication_factor.unwrap_or(-1);
            topic.configs = parse_pairs(&config, "config")?
                .into_iter()
                .map(|(k, v)| {
                    let mut c = CreatableTopicConfig::default();
                    c.name = StrBytes::from_string(k);
                    c.value = Some(StrBytes::from_string(v));
                    c
                })
                .collect();
            let mut request = CreateTopicsRequest::default();
            request.topics = vec![topic];
            request.timeout_ms = 30_000;
            request.validate_only = validate_only;
            let response = client.request(request, 5).await?;
            let result = response
                .topics
                .first()
                .context("empty CreateTopics response")?;
            check(
                result.error_code,
                result.error_message.as_deref(),
                format!("creating topic '{name}'"),
            )?;
            let view = Created {
                name: name.clone(),
                partitions: result.num_partitions,
                replication_factor: result.replication_factor,
                validate_only,
            };
            connection.out.print(&view, |v| {
                if v.validate_only {
                    println!(
                        "topic '{}' would be created with {} partitions",
                        v.name, v.partitions
                    );
                } else {
                    println!(
                        "created topic '{}' with {} partitions",
                        v.name, v.partitions
                    );
                }
            });
        }
        TopicCommand::List { connection } => {
            let mut client = Client::connect(&connection.bootstrap).await?;
            let metadata = metadata(&mut client, None).await?;
            let mut topics: Vec<ListedTopic> = metadata
                .topics
                .iter()
                .map(|t| ListedTopic {
                    name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                    partitions: t.partitions.len(),
                    id: t.topic_id.to_string(),
                })
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            connection.out.print(&TopicList { topics }, |v| {
                let mut table = Table::new(["TOPIC", "PARTITIONS", "ID"]);
                for t in &v.topics {
                    table.row([t.name.clone(), t.partitions.to_string(), t.id.clone()]);
                }
                table.print();
            });
        }
        TopicCommand::Describe { name, connection } => {
            let mut client = Client::connect(&connection.bootstrap).await?;
            let view = describe(&mut client, &name).await?;
            connection.out.print(&view, print_described);
        }
        TopicCommand::Alter {
            name,
            config,
            delete_config,
            partitions,
            connection,
        } => {
            if config.is_empty() && delete_config.is_empty() && partitions.is_none() {
                bail!("nothing to change: give --config, --delete-config or --partitions");
            }
            let mut client = Client::connect(&connection.bootstrap).await?;
            let mut view = Altered {
                name: name.clone(),
                configs_set: Vec::new(),
                configs_deleted: delete_config.clone(),
                partitions: None,
            };
            if !config.is_empty() || !delete_config.is_empty() {
                let mut resource = AlterConfigsResource::default();
                resource.resource_type = 2;
                resource.resource_name = StrBytes::from_string(name.clone());
                for (k, v) in parse_pairs(&config, "config")? {
                    view.configs_set.push(k.clone());
                    let mut c = AlterableConfig::default();
                    c.name = StrBytes::from_string(k);
                    c.config_operation = 0;
                    c.value = Some(StrBytes::from_string(v));
                    resource.configs.push(c);
                }
                for k in delete_config {
                    let mut c = AlterableConfig::default();
                    c.name = StrBytes::from_string(k);
                    c.config_operation = 1;
                    resource.configs.push(c);
                }
                let mut request = IncrementalAlterConfigsRequest::default();
                request.resources = vec![resource];
                let response = client.request(request, 1).await?;
                let result = response
                    .responses
                    .first()
                    .context("empty IncrementalAlterConfigs response")?;
                check(
                    result.error_code,
                    result.error_message.as_deref(),
                    format!("altering topic '{name}'"),
                )?;
                if !connection.out.json() {
                    println!("updated configs of topic '{name}'");
                }
            }
            if let Some(count) = partitions {
                let mut topic = CreatePartitionsTopic::default();
                topic.name = TopicName(StrBytes::from_string(name.clone()));
                topic.count = count;
                // Null, not empty: the broker places the new partitions.
                topic.assignments = None;
                let mut request = CreatePartitionsRequest::default();
                request.topics = vec![topic];
                request.timeout_ms = 30_000;
                let response = client.request(request, 2).await?;
                let result = response
                    .results
                    .first()
                    .context("empty CreatePartitions response")?;
                check(
                    result.error_code,
                    result.error_message.as_deref(),
                    format!("adding partitions to '{name}'"),
                )?;
                view.partitions = Some(count);
                if !connection.out.json() {
                    println!("topic '{name}' now has {count} partitions");
                }
            }
            if connection.out.json() {
                super::output::print_json(&view);
            }
        }
        TopicCommand::Delete { name, connection } => {
            let mut client = Client::connect(&connection.bootstrap).await?;
            let mut request = DeleteTopicsRequest::default();
            request.topic_names = vec![TopicName(StrBytes::from_string(name.clone()))];
            request.timeout_ms = 30_000;
            let response = client.request(request, 4).await?;
            let result = response
                .responses
                .first()
                .context("empty DeleteTopics response")?;
            check(
                result.error_code,
                result.error_message.as_deref(),
                format!("deleting topic '{name}'"),
            )?;
            connection
                .out
                .print(&serde_json::json!({ "deleted": name }), |_| {
                    println!("deleted topic '{name}'")
                });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetches metadata for one topic (or all when `None`), without creating topics.
pub(crate) async fn metadata(
    client: &mut Client,
    topic: Option<&str>,
) -> anyhow::Result<MetadataResponse> {
    let mut request = MetadataRequest::default();
    request.topics = topic.map(|name| {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
        vec![t]
    });
    request.allow_auto_topic_creation = false;
    // v10+ carries topic ids; v4+ lets the client forbid auto-creation.
    let version = client.version(ApiKey::Metadata, 12)?;
    if version < 4 {
        bail!(
            "{} only speaks Metadata v{version}; v4 or newer is needed",
            client.address()
        );
    }
    let response = client.request(request, version).await?;
    if let Some(name) = topic {
        let t = response.topics.first().context("empty Metadata response")?;
        check(t.error_code, None, format!("topic '{name}'"))?;
    }
    Ok(response)
}

/// The partition count of a topic.
pub(crate) async fn partition_count(client: &mut Client, topic: &str) -> anyhow::Result<i32> {
    let response = metadata(client, Some(topic)).await?;
    Ok(response.topics[0].partitions.len() as i32)
}

/// Looks up one offset per partition with ListOffsets (`timestamp` -2 earliest, -1 latest).
pub(crate) async fn list_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> anyhow::Result<Vec<(i32, i64)>> {
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = partitions
        .iter()
        .map(|&p| {
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = timestamp;
            lp
        })
        .collect();
    let mut request = ListOffsetsRequest::default();
    request.replica_id = kafka_protocol::messages::BrokerId(-1);
    request.topics = vec![t];
    let response = client.request(request, 6).await?;
    let mut out = Vec::new();
    for t in response.topics {
        for p in t.partitions {
            check(
                p.error_code,
                None,
                format!("listing offsets of {topic}-{}", p.partition_index),
            )?;
            out.push((p.partition_index, p.offset));
        }
    }
    out.sort();
    Ok(out)
}

/// `topic create`'s answer.
#[derive(Debug, Serialize)]
struct Created {
    name: String,
    partitions: i32,
    replication_factor: i16,
    validate_only: bool,
}

/// `topic list`'s answer.
#[derive(Debug, Serialize)]
struct TopicList {
    topics: Vec<ListedTopic>,
}

#[derive(Debug, Serialize)]
struct ListedTopic {
    name: String,
    partitions: usize,
    id: String,
}

/// `topic alter`'s answer: the config keys set and deleted, the new partition count.
#[derive(Debug, Serialize)]
struct Altered {
    name: String,
    configs_set: Vec<String>,
    configs_deleted: Vec<String>,
    partitions: Option<i32>,
}

/// `topic describe`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct Described {
    name: String,
    id: String,
    partitions: Vec<DescribedPartition>,
    configs: Vec<DescribedConfig>,
}

#[derive(Debug, Serialize)]
struct DescribedPartition {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    start_offset: i64,
    end_offset: i64,
    records: i64,
}

#[derive(Debug, Serialize)]
struct DescribedConfig {
    name: String,
    value: Option<String>,
    /// `topic` for an override of this topic, `default` otherwise.
    source: &'static str,
}

async fn describe(client: &mut Client, name: &str) -> anyhow::Result<Described> {
    let response = metadata(client, Some(name)).await?;
    let topic = &response.topics[0];
    let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
    let earliest = list_offsets(client, name, &partitions, -2).await?;
    let latest = list_offsets(client, name, &partitions, -1).await?;
    let ids = |ids: &[kafka_protocol::messages::BrokerId]| ids.iter().map(|id| id.0).collect();
    let mut sorted: Vec<_> = topic.partitions.iter().collect();
    sorted.sort_by_key(|p| p.partition_index);
    let offset =
        |list: &[(i32, i64)], p: i32| list.iter().find(|(i, _)| *i == p).map_or(-1, |x| x.1);
    let partitions = sorted
        .into_iter()
        .map(|p| {
            let start = offset(&earliest, p.partition_index);
            let end = offset(&latest, p.partition_index);
            DescribedPartition {
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: ids(&p.replica_nodes),
                isr: ids(&p.isr_nodes),
                start_offset: start,
                end_offset: end,
                records: end - start,
            }
        })
        .collect();
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string(name.to_string());
    resource.configuration_keys = None;
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let response = client.request(request, 3).await?;
    let result = response
        .results
        .first()
        .context("empty DescribeConfigs response")?;
    check(
        result.error_code,
        result.error_message.as_deref(),
        format!("describing configs of '{name}'"),
    )?;
    let configs = result
        .configs
        .iter()
        .map(|c| DescribedConfig {
            name: c.name.to_string(),
            value: c.value.as_ref().map(|v| v.to_string()),
            source: if c.config_source == 1 {
                "topic"
            } else {
                "default"
            },
        })
        .collect();
    Ok(Described {
        name: name.to_string(),
        id: topic.topic_id.to_string(),
        partitions,
        configs,
    })
}

fn print_described(d: &Described) {
    println!(
        "topic: {}  id: {}  partitions: {}",
        d.name,
        d.id,
        d.partitions.len()
    );
    let list = |ids: &[i32]| {
        ids.iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut table = Table::new([
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "START",
        "END",
        "RECORDS",
    ]);
    for p in &d.partitions {
        table.row([
            p.partition.to_string(),
            p.leader.to_string(),
            p.leader_epoch.to_string(),
            list(&p.replicas),
            list(&p.isr),
            p.start_offset.to_string(),
            p.end_offset.to_string(),
            p.records.to_string(),
        ]);
    }
    table.print();
    println!();
    let mut configs = Table::new(["CONFIG", "VALUE", "SOURCE"]);
    for c in &d.configs {
        configs.row([
            c.name.clone(),
            c.value.clone().unwrap_or_default(),
            c.source.to_string(),
        ]);
    }
    configs.print();
}
