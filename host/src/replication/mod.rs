//! Partition replication between brokers, Kafka's way: followers pull from leaders.
//!
//! This room owns the replica fetch protocol ([`wire`]), the leader's side of it — serve
//! batches, learn each follower's log end offset, advance the high watermark, propose
//! ISR changes to the controller ([`leader`]) — and the follower's side: one fetcher
//! task per leader broker, fetching every partition this broker follows from it in one
//! request, appending, truncating where the logs diverge and taking the leader's high
//! watermark ([`fetcher`]). The [`ReplicaManager`] ties them to the metadata: the broker
//! calls [`ReplicaManager::update`] after every metadata change and routes replica
//! fetches from peers to [`ReplicaManager::handle`].
//!
//! What a replica *is* — its role, log, high watermark and ISR arithmetic — lives in
//! [`crate::partition`]; this room adds the I/O around it. Three seams keep it testable
//! without a network or a controller: [`LinkFactory`]/[`LeaderLink`] (QUIC sessions in
//! production, [`memory::MemoryNetwork`] in tests), [`IsrChanger`] (the controller's
//! AlterPartition) and [`Clock`] (lag is measured in its milliseconds).
//!
//! # Safety properties, and where they come from
//! - A record is acknowledged for acks=all only when every member of the maximal ISR has
//!   it ([`crate::partition::replicas`]), so it survives any leader the controller can
//!   elect (unclean election off).
//! - Followers truncate only where the leader says their logs diverge, found from the
//!   leader-epoch caches (KIP-101/KIP-320), never to their own high watermark; data the
//!   leader committed is never cut.
//! - Every request and every follower operation carries the leader epoch it was made
//!   under; stale leaders and followers are fenced by it.
//!
//! # Wiring it into a broker
//! 1. Inside the runtime: `ReplicaManager::new(own_id, config.cluster.clone(), isr,
//!    links)`, where `isr` implements [`IsrChanger`] over the controller
//!    (`Command::AlterPartition`, answering the partition's new state) and `links`
//!    implements [`LinkFactory`] over the QUIC endpoint's replica channel
//!    (`open_session(peer, addr, Channel::Replica)`, then `Session::call` per request).
//! 2. After every metadata change, and once at startup before serving clients:
//!    [`ReplicaManager::update`] with every hosted partition and its `PartitionState`,
//!    and the registered brokers. Until then a partition leads alone at epoch 0.
//! 3. Replica-channel requests from peer `id`: `manager.handle(id, bytes).await`; an
//!    `Err` is a refused request (answer it as a transport-level error).
//! 4. Nothing else on the produce path: acks=all goes through
//!    [`Partition::append_with_acks`] and [`Partition::wait_for_commit`] already.
//! 5. Controlled shutdown, once leadership has moved away: [`ReplicaManager::shutdown`],
//!    then close the partitions (which checkpoints their high watermarks).

pub mod fetcher;
pub mod leader;
pub mod memory;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::cluster::ClusterConfig;
use crate::controller::state::{BrokerMeta, PartitionState};
use crate::partition::replicas::IsrChange;
use crate::partition::{CommitError, Partition, Role};

/// A boxed, sendable future (what the seams below return, so they stay object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A persistent request/response session from a follower to one leader broker.
///
/// In production a QUIC session on the replica channel; calls on one link are made one
/// at a time (`&mut self`), so a link may be a single stream.
pub trait LeaderLink: Send {
    /// Sends one request and returns the leader's response, or why there is none: it
    /// gives up when the leader has sent nothing of its answer for `quiet` (the long
    /// poll plus a grace), and waits for an answer that keeps arriving however slowly.
    /// An error means the session is unusable: the fetcher drops the link and opens a
    /// new one after a backoff.
    fn call(&mut self, request: Bytes, quiet: Duration) -> BoxFuture<'_, Result<Bytes, String>>;
}

/// Opens [`LeaderLink`]s.
pub trait LinkFactory: Send + Sync {
    /// Opens a session to broker `leader` at its cluster address `addr`.
    fn open(
        &self,
        leader: i32,
        addr: SocketAddr,
    ) -> BoxFuture<'static, Result<Box<dyn LeaderLink>, String>>;
}

/// Changes a partition's ISR through the controller (Kafka's AlterPartition).
pub trait IsrChanger: Send + Sync {
    /// Asks for `isr`, as the leader at `leader_epoch` whose view is `partition_epoch`;
    /// returns the partition's state after the change, or why it was refused (stale
    /// epochs, an ineligible replica, no controller).
    fn alter_partition(
        &self,
        topic: &str,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    ) -> BoxFuture<'static, Result<PartitionState, String>>;
}

/// Where replication reads the time: lag and caught-up times are in its milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds on this clock; only differences matter.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::broker::now_ms()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(start_ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A partition by name.
type Key = (Arc<str>, i32);

fn key(partition: &Partition) -> Key {
    (Arc::from(partition.topic()), partition.index())
}

/// How often HW checkpoints are written, at most.
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// The replication of every partition this broker hosts.
pub struct ReplicaManager {
    own_id: i32,
    config: ClusterConfig,
    isr: Arc<dyn IsrChanger>,
    links: Arc<dyn LinkFactory>,
    clock: Arc<dyn Clock>,
    runtime: tokio::runtime::Handle,
    me: Weak<ReplicaManager>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("ReplicaManager")
            .field("own_id", &self.own_id)
            .field("partitions", &inner.partitions.len())
            .field("fetchers", &inner.fetchers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    partitions: HashMap<Key, Arc<Partition>>,
    brokers: BTreeMap<i32, BrokerMeta>,
    fetchers: HashMap<i32, FetcherHandle>,
    background: Option<JoinHandle<()>>,
}

struct FetcherHandle {
    addr: SocketAddr,
    /// Bumped on every metadata update; the fetcher re-reads its partitions.
    updates: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl ReplicaManager {
    /// A manager for broker `own_id`, on the wall clock. Must be called inside a tokio
    /// runtime: fetchers and the ISR check run as tasks on it.
    pub fn new(
        own_id: i32,
        config: ClusterConfig,
        isr: Arc<dyn IsrChanger>,
        links: Arc<dyn LinkFactory>,
    ) -> Arc<ReplicaManager> {
        Self::with_clock(own_id, config, isr, links, Arc::new(SystemClock))
    }

    /// [`ReplicaManager::new`] with another clock.
    pub fn with_clock(
        own_id: i32,
        config: ClusterConfig,
        isr: Arc<dyn IsrChanger>,
        links: Arc<dyn LinkFactory>,
        clock: Arc<dyn Clock>,
    ) -> Arc<ReplicaManager> {
        let manager = Arc::new_cyclic(|me| ReplicaManager {
            own_id,
            config,
            isr,
            links,
            clock,
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
            inner: Mutex::new(Inner::default()),
        });
        let task = manager.runtime.spawn(background(Arc::downgrade(&manager)));
        manager.inner.lock().background = Some(task);
        manager
    }

    /// This broker's id.
    pub fn own_id(&self) -> i32 {
        self.own_id
    }

    /// Applies the metadata: `local` is every partition this broker hosts with its
    /// current state, `brokers` every registered broker. Sets each partition's role,
    /// starts a fetcher for every leader this broker now follows something from, stops
    /// fetchers no longer needed and wakes the others to re-read their partitions.
    /// Partitions missing from `local` go offline here. Call it after every metadata
    /// change, and once at startup before serving clients.
    pub fn update(
        &self,
        local: Vec<(Arc<Partition>, PartitionState)>,
        brokers: &BTreeMap<i32, BrokerMeta>,
    ) {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        inner.brokers = brokers.clone();
        let mut hosted = HashMap::with_capacity(local.len());
        for (partition, state) in local {
            if let Err(e) = partition.set_role(self.own_id, &state, now) {
                tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "could not take the partition's new role");
            }
            hosted.insert(key(&partition), partition);
        }
        for (k, gone) in inner.partitions.drain() {
            if !hosted.contains_key(&k) {
                gone.go_offline();
            }
        }
        inner.partitions = hosted;

        let mut wanted: BTreeMap<i32, SocketAddr> = BTreeMap::new();
        for partition in inner.partitions.values() {
            if let Role::Follower { leader, .. } = partition.role() {
                match inner.brokers.get(&leader) {
                    Some(broker) => {
                        wanted.insert(leader, broker.cluster_addr);
                    }
                    None => tracing::warn!(
                        topic = partition.topic(),
                        partition = partition.index(),
                        leader,
                        "the partition's leader is not a registered broker; not fetching"
                    ),
                }
            }
        }
        inner.fetchers.retain(|leader, fetcher| {
            let keep = wanted.get(leader) == Some(&fetcher.addr);
            if keep {
                fetcher.updates.send_modify(|generation| *generation += 1);
            } else {
                fetcher.task.abort();
            }
            keep
        });
        for (leader, addr) in wanted {
            if inner.fetchers.contains_key(&leader) {
                continue;
            }
            let (updates, receiver) = watch::channel(0);
            let task = self
                .runtime
                .spawn(fetcher::run(self.me.clone(), leader, addr, receiver));
            tracing::info!(leader, %addr, "started a replica fetcher");
            inner.fetchers.insert(
                leader,
                FetcherHandle {
                    addr,
                    updates,
                    task,
                },
            );
        }
    }

    /// Handles a replication request from broker `peer` (authenticated by the
    /// transport): a replica fetch, answered when there is news or after its max wait.
    /// A malformed request is an error, never a panic.
    pub fn handle(&self, peer: i32, request: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let me = self.me.clone();
        Box::pin(async move {
            let Some(manager) = me.upgrade() else {
                return Err("the broker is shutting down".to_string());
            };
            leader::handle_fetch(&manager, peer, request).await
        })
    }

    /// Waits until records of `partition` up to `end_offset` (exclusive) are committed,
    /// for acks=all; see [`Partition::wait_for_commit`].
    pub async fn wait_for_commit(
        &self,
        partition: &Partition,
        end_offset: i64,
        timeout: Duration,
    ) -> Result<(), CommitError> {
        partition.wait_for_commit(end_offset, timeout).await
    }

    /// Proposes ISR shrinks for every led partition with followers lagging longer than
    /// `replica_lag_time_max_ms` (runs by itself every half lag time; public so tests and
    /// operators can force a check).
    pub fn check_isr(&self) {
        let now = self.clock.now_ms();
        let lag = self.config.replica_lag_time_max_ms as i64;
        for partition in self.partitions() {
            if let Some(change) = partition.propose_isr_shrink(now, lag) {
                tracing::info!(topic = %change.topic, partition = change.partition, isr = ?change.isr, "shrinking the ISR");
                self.submit_isr_change(partition, change);
            }
        }
    }

    /// Writes every hosted partition's high watermark checkpoint that moved.
    pub fn checkpoint_high_watermarks(&self) {
        for partition in self.partitions() {
            if let Err(e) = partition.checkpoint_high_watermark() {
                tracing::warn!(topic = partition.topic(), partition = partition.index(), error = %e, "could not checkpoint the high watermark");
            }
        }
    }

    /// Stops every fetcher and the background checks, and takes every partition
    /// offline (controlled shutdown, after leadership moved away).
    pub fn shutdown(&self) {
        let mut inner = self.inner.lock();
        for (_, fetcher) in inner.fetchers.drain() {
            fetcher.task.abort();
        }
        if let Some(task) = inner.background.take() {
            task.abort();
        }
        for partition in inner.partitions.values() {
            partition.go_offline();
        }
    }

    /// The leaders this broker runs fetchers for.
    pub fn fetcher_leaders(&self) -> Vec<i32> {
        let mut leaders: Vec<i32> = self.inner.lock().fetchers.keys().copied().collect();
        leaders.sort_unstable();
        leaders
    }

    fn partitions(&self) -> Vec<Arc<Partition>> {
        self.inner.lock().partitions.values().cloned().collect()
    }

    fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.inner
            .lock()
            .partitions
            .get(&(Arc::from(topic), index))
            .cloned()
    }

    /// The incarnation this broker registered with (0 before metadata names it).
    fn own_incarnation(&self) -> u64 {
        self.inner
            .lock()
            .brokers
            .get(&self.own_id)
            .map_or(0, |b| b.incarnation)
    }

    /// The registered incarnation of `broker`, if any.
    fn incarnation_of(&self, broker: i32) -> Option<u64> {
        self.inner
            .lock()
            .brokers
            .get(&broker)
            .map(|b| b.incarnation)
    }

    /// The partitions this broker follows from `leader`, with the epoch of each.
    fn followed_from(&self, leader: i32) -> Vec<(Arc<Partition>, i32)> {
        self.inner
            .lock()
            .partitions
            .values()
            .filter_map(|p| match p.role() {
                Role::Follower { leader: l, epoch } if l == leader => Some((Arc::clone(p), epoch)),
                _ => None,
            })
            .collect()
    }

    /// Sends an ISR change to the controller and settles it with the answer.
    fn submit_isr_change(&self, partition: Arc<Partition>, change: IsrChange) {
        let isr = Arc::clone(&self.isr);
        self.runtime.spawn(async move {
            let result = isr
                .alter_partition(
                    &change.topic,
                    change.partition,
                    change.leader_epoch,
                    change.partition_epoch,
                    change.isr.clone(),
                )
                .await;
            match &result {
                Ok(state) => {
                    partition.finish_isr_change(&change, Ok(state));
                }
                Err(reason) => {
                    tracing::warn!(topic = %change.topic, partition = change.partition, isr = ?change.isr, %reason, "the controller refused an ISR change");
                    partition.finish_isr_change(&change, Err(reason));
                }
            }
        });
    }
}

impl Drop for ReplicaManager {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        for (_, fetcher) in inner.fetchers.drain() {
            fetcher.task.abort();
        }
        if let Some(task) = inner.background.take() {
            task.abort();
        }
    }
}

/// The periodic work: ISR shrink checks every half lag time (as Kafka's
/// isr-expiration task) and high watermark checkpoints.
async fn background(me: Weak<ReplicaManager>) {
    let period = match me.upgrade() {
        Some(m) => Duration::from_millis((m.config.replica_lag_time_max_ms / 2).max(10)),
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = tokio::time::Instant::now();
    loop {
        interval.tick().await;
        let Some(manager) = me.upgrade() else { return };
        manager.check_isr();
        if last_checkpoint.elapsed() >= HW_CHECKPOINT_INTERVAL {
            last_checkpoint = tokio::time::Instant::now();
            // Checkpoints fsync: off the async threads.
            let m = Arc::clone(&manager);
            let _ = tokio::task::spawn_blocking(move || m.checkpoint_high_watermarks()).await;
        }
    }
}

#[cfg(test)]
mod tests;
