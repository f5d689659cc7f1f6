//! `quiver topic create|list|describe|alter|delete`.

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

use super::client::Client;
use super::{check, parse_pairs, Connection};

#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
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
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a topic's partitions, offsets and config overrides.
    Describe {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Change a topic's configs or grow its partition count.
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
            if validate_only {
                println!(
                    "topic '{name}' would be created with {} partitions",
                    result.num_partitions
                );
            } else {
                println!(
                    "created topic '{name}' with {} partitions",
                    result.num_partitions
                );
            }
        }
        TopicCommand::List { connection } => {
            let mut client = Client::connect(&connection.bootstrap).await?;
            let metadata = metadata(&mut client, None).await?;
            let mut topics: Vec<_> = metadata.topics.iter().collect();
            topics.sort_by_key(|t| t.name.as_ref().map(|n| n.0.to_string()));
            println!("{:<40} {:>10}  ID", "TOPIC", "PARTITIONS");
            for t in topics {
                let name = t.name.as_ref().map(|n| n.0.as_str()).unwrap_or("");
                println!("{:<40} {:>10}  {}", name, t.partitions.len(), t.topic_id);
            }
        }
        TopicCommand::Describe { name, connection } => {
            let mut client = Client::connect(&connection.bootstrap).await?;
            describe(&mut client, &name).await?;
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
            if !config.is_empty() || !delete_config.is_empty() {
                let mut resource = AlterConfigsResource::default();
                resource.resource_type = 2;
                resource.resource_name = StrBytes::from_string(name.clone());
                for (k, v) in parse_pairs(&config, "config")? {
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
                println!("updated configs of topic '{name}'");
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
                println!("topic '{name}' now has {count} partitions");
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
            println!("deleted topic '{name}'");
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

async fn describe(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let response = metadata(client, Some(name)).await?;
    let topic = &response.topics[0];
    let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
    let earliest = list_offsets(client, name, &partitions, -2).await?;
    let latest = list_offsets(client, name, &partitions, -1).await?;
    println!(
        "topic: {name}  id: {}  partitions: {}",
        topic.topic_id,
        partitions.len()
    );
    println!(
        "{:>9} {:>7} {:>6} {:<14} {:<14} {:>12} {:>12} {:>12}",
        "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "START", "END", "RECORDS"
    );
    let ids = |ids: &[kafka_protocol::messages::BrokerId]| {
        ids.iter()
            .map(|id| id.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut sorted: Vec<_> = topic.partitions.iter().collect();
    sorted.sort_by_key(|p| p.partition_index);
    for p in sorted {
        let start = earliest
            .iter()
            .find(|(i, _)| *i == p.partition_index)
            .map_or(-1, |x| x.1);
        let end = latest
            .iter()
            .find(|(i, _)| *i == p.partition_index)
            .map_or(-1, |x| x.1);
        println!(
            "{:>9} {:>7} {:>6} {:<14} {:<14} {:>12} {:>12} {:>12}",
            p.partition_index,
            p.leader_id.0,
            p.leader_epoch,
            ids(&p.replica_nodes),
            ids(&p.isr_nodes),
            start,
            end,
            end - start
        );
    }
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
    println!("configs:");
    for c in &result.configs {
        let source = if c.config_source == 1 {
            "topic"
        } else {
            "default"
        };
        println!(
            "  {:<26} {:<24} ({source})",
            c.name.as_str(),
            c.value.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
