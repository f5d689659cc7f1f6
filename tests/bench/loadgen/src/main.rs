//! `quiver-loadgen`: the load generator of Quiver's benchmarks.
//!
//! One client for every broker that speaks the Kafka protocol (librdkafka, through the
//! `rdkafka` crate), so a comparison measures brokers, not clients; and a small
//! JetStream publisher and reader for NATS, the non-Kafka reference. Each subcommand
//! prints a human summary and, as its last line, one JSON object for scripts
//! (`tests/bench/compare.py`). The exit code is 1 when records were lost, refused or
//! duplicated, so a figure never hides loss, and 2 when the run could not be made.

mod kafka;
mod nats;
mod payload;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "quiver-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write records (N of them, or for T seconds) and report throughput and send-to-ack latency.
    Produce(kafka::ProduceArgs),
    /// Read a topic from the beginning (assigned partitions or a group) and report throughput.
    Consume(kafka::ConsumeArgs),
    /// Write at a fixed rate while reading concurrently; latency from the send time in each value.
    E2e(kafka::E2eArgs),
    /// Publish to a NATS JetStream stream with acks.
    NatsPublish(nats::NatsPublishArgs),
    /// Read a NATS JetStream stream from its start.
    NatsConsume(nats::NatsConsumeArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Produce(a) => kafka::produce(a),
        Command::Consume(a) => kafka::consume(a),
        Command::E2e(a) => kafka::e2e(a),
        Command::NatsPublish(a) => nats::publish(a),
        Command::NatsConsume(a) => nats::consume(a),
    };
    match result {
        Ok(report) => {
            report.print();
            std::process::exit(if report.ok { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("quiver-loadgen: {e:#}");
            std::process::exit(2);
        }
    }
}
