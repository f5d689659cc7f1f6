//! Quiver: a Kafka-compatible streaming broker.
//!
//! The host core owns what must be fast and correct: partition logs ([`log`]), the
//! partitions a broker hosts ([`partition`], [`broker`]), their replication between
//! brokers ([`replication`]), the metadata every broker agrees on ([`controller`]), the
//! authenticated QUIC transport between brokers ([`net`]), the Kafka wire protocol
//! ([`kafka`]) and consumer groups with their committed offsets ([`group`]); who a client
//! is and what it may do lives in [`tenancy`]. Policy — custom partitioners, transforms,
//! quotas, connectors — is sandboxed plugins ([`plugin`]).
//!
//! Configuration is one typed [`config::Config`], loaded from defaults, `quiver.toml`,
//! `QUIVER_*` environment variables and command-line flags, in that order.

#![warn(missing_debug_implementations)]
#![deny(unused_must_use)]

/// See [`alloc`]: no allocation a client's request sizes can abort the process.
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

pub mod admin;
pub mod alloc;
pub mod broker;
pub mod cli;
pub mod config;
pub mod connect;
pub mod controller;
pub mod durability;
pub mod group;
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod net;
pub mod partition;
pub mod plugin;
pub mod replication;
pub mod server;
pub mod tenancy;
pub mod transform;
