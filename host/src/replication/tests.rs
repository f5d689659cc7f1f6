//! Three brokers in one process: real partition logs in temporary directories, the
//! in-memory transport, the real metadata state machine behind a fake controller, and a
//! manual clock for lag. Tests wait for conditions by waiting on partition changes, never
//! by sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use parking_lot::Mutex;

use super::memory::MemoryNetwork;
use super::wire::{FetchError, FetchRequest, FetchResponse, PartitionFetch};
use super::*;
use crate::config::topic::resolve;
use crate::config::LogDefaults;
use crate::controller::state::{Applied, Command, State, StateError, TopicMeta};
use crate::log::batch::Batches;
use crate::log::Log;
use crate::partition::encode::{encode_batch, RecordData};
use crate::partition::{AppendError, Changes, CommitError};

const TOPIC: &str = "t";
const LAG_MS: u64 = 1_000;

/// A broker hearing metadata: its manager and its replica of t-0.
type Subscriber = (Weak<ReplicaManager>, Arc<Partition>);

/// The controller: the real state machine; every accepted change is published to the
/// brokers that are not cut off from it.
struct FakeController {
    state: Mutex<State>,
    nodes: Mutex<BTreeMap<i32, Subscriber>>,
    /// Brokers that do not hear about metadata changes.
    deaf: Mutex<BTreeSet<i32>>,
    alters: Mutex<Vec<Vec<i32>>>,
}

impl FakeController {
    fn apply(&self, command: Command) -> Result<Applied, StateError> {
        let applied = self.state.lock().apply(command);
        if applied.is_ok() {
            self.publish();
        }
        applied
    }

    fn partition_state(&self) -> PartitionState {
        self.state.lock().partition(TOPIC, 0).unwrap().clone()
    }

    fn publish(&self) {
        let (ps, brokers) = {
            let state = self.state.lock();
            (
                state.partition(TOPIC, 0).unwrap().clone(),
                state.brokers.clone(),
            )
        };
        let deaf = self.deaf.lock().clone();
        let nodes: Vec<_> = self
            .nodes
            .lock()
            .iter()
            .filter(|(id, _)| !deaf.contains(id))
            .map(|(_, (m, p))| (m.clone(), Arc::clone(p)))
            .collect();
        for (manager, partition) in nodes {
            if let Some(manager) = manager.upgrade() {
                manager.update(vec![(partition, ps.clone())], &brokers);
            }
        }
    }
}

impl IsrChanger for FakeController {
    fn alter_partition(
        &self,
        topic: &str,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    ) -> BoxFuture<'static, Result<PartitionState, String>> {
        self.alters.lock().push(isr.clone());
        let leader = self.partition_state().leader;
        let result = self
            .apply(Command::AlterPartition {
                topic: topic.to_string(),
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            })
            .map_err(|e| e.to_string())
            .and_then(|applied| match applied {
                Applied::Partition(state) => Ok(state),
                other => Err(format!("unexpected {other:?}")),
            });
        Box::pin(async move { result })
    }
}

struct Node {
    manager: Arc<ReplicaManager>,
    partition: Arc<Partition>,
    _dir: tempfile::TempDir,
}

struct Cluster {
    network: Arc<MemoryNetwork>,
    controller: Arc<FakeController>,
    clock: Arc<ManualClock>,
    nodes: BTreeMap<i32, Node>,
}

fn broker_meta(id: i32) -> BrokerMeta {
    BrokerMeta {
        id,
        kafka_host: "127.0.0.1".into(),
        kafka_port: 9000 + id as u16,
        cluster_addr: SocketAddr::from(([127, 0, 0, 1], 9100 + id as u16)),
        rack: None,
        incarnation: 1,
        fenced: false,
        listeners: Default::default(),
    }
}

fn config(compression: &str) -> ClusterConfig {
    ClusterConfig {
        replica_lag_time_max_ms: LAG_MS,
        replica_fetch_wait_max_ms: 100,
        replica_fetch_max_bytes: 16 * 1024,
        replication_compression: compression.into(),
        ..ClusterConfig::default()
    }
}

impl Cluster {
    /// Brokers 1, 2, 3 replicating partition t-0 (leader 1), with topic `overrides`.
    fn start(overrides: &[(&str, &str)], compression: &str) -> Cluster {
        let mut state = State::default();
        for id in 1..=3 {
            state
                .apply(Command::RegisterBroker(broker_meta(id)))
                .unwrap();
        }
        state
            .apply(Command::CreateTopic(TopicMeta {
                name: TOPIC.into(),
                id: uuid::Uuid::new_v4(),
                partitions: 1,
                configs: BTreeMap::new(),
                internal: false,
                assignments: vec![PartitionState::new(vec![1, 2, 3])],
            }))
            .unwrap();
        let controller = Arc::new(FakeController {
            state: Mutex::new(state),
            nodes: Mutex::new(BTreeMap::new()),
            deaf: Mutex::new(BTreeSet::new()),
            alters: Mutex::new(Vec::new()),
        });
        let network = MemoryNetwork::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let overrides: BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = Arc::new(resolve(&LogDefaults::default(), &overrides));
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), settings.log.clone(), 0).unwrap();
            let partition =
                Arc::new(Partition::open(TOPIC.into(), 0, log, Arc::clone(&settings)).unwrap());
            let manager = ReplicaManager::with_clock(
                id,
                config(compression),
                controller.clone(),
                network.links_for(id),
                clock.clone(),
            );
            network.register(&manager);
            controller
                .nodes
                .lock()
                .insert(id, (Arc::downgrade(&manager), Arc::clone(&partition)));
            nodes.insert(
                id,
                Node {
                    manager,
                    partition,
                    _dir: dir,
                },
            );
        }
        controller.publish();
        Cluster {
            network,
            controller,
            clock,
            nodes,
        }
    }

    fn p(&self, id: i32) -> &Arc<Partition> {
        &self.nodes[&id].partition
    }

    fn all(&self) -> Vec<&Arc<Partition>> {
        self.nodes.values().map(|n| &n.partition).collect()
    }

    /// Cuts broker `id` off from every other broker (not from the controller).
    fn isolate(&self, id: i32) {
        for other in 1..=3 {
            if other != id {
                self.network.cut(id, other);
            }
        }
    }

    fn reconnect(&self, id: i32) {
        for other in 1..=3 {
            if other != id {
                self.network.heal(id, other);
            }
        }
    }
}

/// One batch of `n` records `tag-i`.
fn records(tag: &str, n: usize) -> Bytes {
    let data: Vec<RecordData> = (0..n)
        .map(|i| RecordData {
            key: Some(Bytes::from(format!("{tag}-k{i}"))),
            value: Some(Bytes::from(format!("{tag}-v{i}-{}", "x".repeat(i % 13)))),
            headers: Vec::new(),
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect();
    encode_batch(&data, Compression::None).unwrap()
}

/// Waits (up to a generous bound) until `cond` holds, re-checking whenever one of
/// `parts` changes.
async fn until(parts: &[&Arc<Partition>], what: &str, cond: impl Fn() -> bool) {
    let wait = async {
        loop {
            let mut changes = Changes::register(parts.iter().map(|p| &***p));
            if cond() {
                return;
            }
            changes.wait().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting for {what}");
    }
}

/// The whole log as stored, from its start.
fn raw(p: &Partition) -> Vec<u8> {
    let log = p.log();
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        for item in Batches::new(&read.records) {
            offset = item.unwrap().0.last_offset() + 1;
        }
        out.extend_from_slice(&read.records);
    }
    out
}

fn leo(p: &Partition) -> i64 {
    p.log().log_end_offset()
}

async fn with_deadline<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn leader_and_two_followers_replicate_ten_thousand_records() {
    let c = Cluster::start(&[("segment.bytes", "65536")], "zstd");
    assert_eq!(c.p(1).role(), Role::Leader { epoch: 0 });
    assert_eq!(
        c.p(2).role(),
        Role::Follower {
            leader: 1,
            epoch: 0
        }
    );
    assert_eq!(c.nodes[&2].manager.fetcher_leaders(), vec![1]);
    assert!(c.nodes[&1].manager.fetcher_leaders().is_empty());
    for b in 0..100 {
        c.p(1).append(&records(&format!("b{b}"), 100), 0).unwrap();
    }
    assert_eq!(leo(c.p(1)), 10_000);
    until(
        &c.all(),
        "every replica to hold and commit 10k records",
        || {
            c.all()
                .iter()
                .all(|p| leo(p) == 10_000 && p.high_watermark() == 10_000)
        },
    )
    .await;
    let leader = raw(c.p(1));
    assert_eq!(raw(c.p(2)), leader, "follower 2 byte for byte");
    assert_eq!(raw(c.p(3)), leader, "follower 3 byte for byte");
    assert!(c.p(2).log().segment_count() > 3, "followers roll too");
    assert_eq!(c.p(2).log().epoch_entries(), c.p(1).log().epoch_entries());
    // Consumers of the leader read up to the (now complete) high watermark.
    let last = c.p(1).read(9_999, usize::MAX, true).unwrap().records;
    let (header, _) = Batches::new(&last).last().unwrap().unwrap();
    assert_eq!(header.last_offset(), 9_999);
}

#[tokio::test]
async fn high_watermark_waits_for_every_isr_member() {
    let c = Cluster::start(&[], "none");
    c.p(1).append(&records("a", 5), 0).unwrap();
    until(&c.all(), "the first batch committed", || {
        c.p(1).high_watermark() == 5
    })
    .await;
    // Follower 3 can no longer fetch: its log stays behind and so does the HW.
    c.network.cut(3, 1);
    c.p(1).append(&records("b", 5), 0).unwrap();
    until(&c.all(), "follower 2 to fetch the batch", || {
        leo(c.p(2)) == 10
    })
    .await;
    assert_eq!(c.p(1).high_watermark(), 5, "3 is in the ISR and lacks it");
    assert_eq!(c.p(1).commit_status(10), None);
    // Consumers do not see it either.
    let read = c.p(1).read(5, usize::MAX, true).unwrap();
    assert!(read.records.is_empty());
    assert_eq!(
        c.p(1).wait_for_commit(10, Duration::from_millis(50)).await,
        Err(CommitError::Timeout)
    );
    c.network.heal(3, 1);
    with_deadline(
        "the commit after healing",
        c.p(1).wait_for_commit(10, Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert_eq!(c.p(1).high_watermark(), 10);
    // Followers learn the new high watermark without new data.
    until(&c.all(), "followers to learn the HW", || {
        c.p(2).high_watermark() == 10 && c.p(3).high_watermark() == 10
    })
    .await;
}

#[tokio::test]
async fn lagging_follower_leaves_the_isr_and_rejoins_after_catching_up() {
    let c = Cluster::start(&[("min.insync.replicas", "2")], "none");
    c.p(1).append(&records("a", 3), 0).unwrap();
    until(&c.all(), "all caught up", || {
        c.all().iter().all(|p| leo(p) == 3) && c.p(1).high_watermark() == 3
    })
    .await;
    c.network.cut(3, 1);
    c.p(1).append(&records("b", 3), 0).unwrap();
    until(&c.all(), "follower 2 caught up", || leo(c.p(2)) == 6).await;

    // Within the lag time nothing changes.
    c.clock.advance(LAG_MS as i64);
    c.nodes[&1].manager.check_isr();
    assert_eq!(c.p(1).isr(), vec![1, 2, 3]);
    // Past it, 3 goes; 2 is at the log end and stays.
    c.clock.advance(1);
    c.nodes[&1].manager.check_isr();
    until(&c.all(), "the ISR to shrink", || c.p(1).isr() == vec![1, 2]).await;
    assert_eq!(c.controller.partition_state().isr, vec![1, 2]);
    until(&c.all(), "the HW to move without 3", || {
        c.p(1).high_watermark() == 6
    })
    .await;
    // acks=all works with the smaller ISR (min.insync.replicas = 2).
    let (info, _) = c.p(1).append_with_acks(&records("c", 2), 0, -1).unwrap();
    with_deadline(
        "acks=all with two in sync",
        c.p(1)
            .wait_for_commit(info.last_offset + 1, Duration::from_secs(30)),
    )
    .await
    .unwrap();

    // Healed, 3 catches up and is added back.
    c.network.heal(3, 1);
    until(&c.all(), "3 back in the ISR", || {
        c.p(1).isr() == vec![1, 2, 3]
    })
    .await;
    assert!(leo(c.p(3)) >= 8);
    assert_eq!(
        c.controller.alters.lock().clone(),
        vec![vec![1, 2], vec![1, 2, 3]]
    );
    assert_eq!(raw(c.p(3)), raw(c.p(1)));
}

#[tokio::test]
async fn acks_all_waiters_complete_or_fail_as_kafka_does() {
    let c = Cluster::start(&[("min.insync.replicas", "2")], "none");
    // Take 3 out of the ISR first: it misses a batch 2 gets, for longer than the lag.
    c.network.cut(3, 1);
    c.p(1).append(&records("pre", 1), 0).unwrap();
    until(&c.all(), "2 caught up", || leo(c.p(2)) == 1).await;
    c.clock.advance(LAG_MS as i64 + 1);
    c.nodes[&1].manager.check_isr();
    until(&c.all(), "ISR without 3", || c.p(1).isr() == vec![1, 2]).await;

    // The ISR shrinks below min.insync.replicas while a waiter waits: the records end
    // up committed, but the producer hears NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    c.network.cut(2, 1);
    let (info, _) = c.p(1).append_with_acks(&records("a", 4), 0, -1).unwrap();
    assert_eq!(info.last_offset, 4);
    let leader = Arc::clone(c.p(1));
    let waiter = tokio::spawn(async move {
        leader
            .wait_for_commit(info.last_offset + 1, Duration::from_secs(30))
            .await
    });
    tokio::task::yield_now().await;
    c.clock.advance(LAG_MS as i64 + 1);
    c.nodes[&1].manager.check_isr();
    let outcome = with_deadline("the waiter", waiter).await.unwrap();
    assert_eq!(
        outcome,
        Err(CommitError::NotEnoughReplicas { isr: 1, min: 2 })
    );
    assert_eq!(
        outcome.unwrap_err().code(),
        kafka_protocol::error::ResponseError::NotEnoughReplicasAfterAppend
    );
    assert_eq!(c.p(1).high_watermark(), 5);
    // Now the ISR is below the minimum: acks=all is refused before appending.
    let end = leo(c.p(1));
    assert!(matches!(
        c.p(1).append_with_acks(&records("b", 1), 0, -1),
        Err(AppendError::NotEnoughReplicas { isr: 1, min: 2 })
    ));
    assert_eq!(leo(c.p(1)), end, "nothing appended");
    // acks=1 still works.
    c.p(1).append_with_acks(&records("c", 1), 0, 1).unwrap();

    // A waiter on a leader that loses leadership hears NOT_LEADER_OR_FOLLOWER.
    c.network.heal(2, 1);
    until(&c.all(), "2 back in the ISR", || c.p(1).isr() == vec![1, 2]).await;
    c.network.cut(2, 1);
    let (info, _) = c.p(1).append_with_acks(&records("d", 1), 0, -1).unwrap();
    let leader = Arc::clone(c.p(1));
    let waiter = tokio::spawn(async move {
        leader
            .wait_for_commit(info.last_offset + 1, Duration::from_secs(30))
            .await
    });
    tokio::task::yield_now().await;
    c.controller
        .apply(Command::FenceBroker {
            id: 1,
            incarnation: 1,
        })
        .unwrap();
    assert_eq!(
        with_deadline("the waiter", waiter).await.unwrap(),
        Err(CommitError::NotLeader)
    );
    assert!(matches!(
        c.p(1).append(&records("e", 1), 0),
        Err(AppendError::NotLeader)
    ));
    assert_eq!(c.p(2).role(), Role::Leader { epoch: 1 });
}

#[tokio::test]
async fn diverged_follower_truncates_to_the_leaders_epoch_end_and_matches_it() {
    let c = Cluster::start(&[], "none");
    for b in 0..5 {
        c.p(1).append(&records(&format!("c{b}"), 10), 0).unwrap();
    }
    until(&c.all(), "everything committed", || {
        c.all()
            .iter()
            .all(|p| leo(p) == 50 && p.high_watermark() == 50)
    })
    .await;

    // Leader 1 is cut off from its followers and from the metadata, and keeps taking
    // acks=1 writes that nobody else has.
    c.isolate(1);
    c.controller.deaf.lock().insert(1);
    for b in 0..3 {
        c.p(1).append(&records(&format!("lost{b}"), 7), 0).unwrap();
    }
    assert_eq!(leo(c.p(1)), 71);
    assert_eq!(c.p(1).high_watermark(), 50, "never committed");

    // The controller fences it; 2 leads at epoch 1 from offset 50.
    c.controller
        .apply(Command::FenceBroker {
            id: 1,
            incarnation: 1,
        })
        .unwrap();
    assert_eq!(c.p(2).role(), Role::Leader { epoch: 1 });
    assert_eq!(c.p(2).log().end_offset_for_epoch(0), Some((0, 50)));

    // 1 comes back and follows 2. It asks with its last epoch (0) and offset 71; 2
    // answers that epoch 0 ended at 50, and 1 cuts exactly there.
    c.reconnect(1);
    c.controller.deaf.lock().clear();
    c.controller
        .apply(Command::RegisterBroker(broker_meta(1)))
        .unwrap();
    assert_eq!(
        c.p(1).role(),
        Role::Follower {
            leader: 2,
            epoch: 1
        }
    );
    until(&c.all(), "1 to truncate", || leo(c.p(1)) == 50).await;
    assert_eq!(raw(c.p(1)), raw(c.p(2)));

    // New writes at epoch 1 reach it, and the logs match byte for byte.
    for b in 0..4 {
        c.p(2).append(&records(&format!("e1-{b}"), 9), 0).unwrap();
    }
    until(&c.all(), "everyone at 86", || {
        c.all().iter().all(|p| leo(p) == 86) && c.p(2).high_watermark() == 86
    })
    .await;
    assert_eq!(raw(c.p(1)), raw(c.p(2)));
    assert_eq!(raw(c.p(3)), raw(c.p(2)));
    let entries: Vec<(i32, i64)> = c
        .p(1)
        .log()
        .epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(entries, vec![(0, 0), (1, 50)]);
    until(&c.all(), "1 back in the ISR", || {
        c.p(2).isr() == vec![1, 2, 3]
    })
    .await;
}

#[tokio::test]
async fn a_new_leader_deduplicates_retries_its_old_leader_acknowledged() {
    let c = Cluster::start(&[], "none");
    let data: Vec<RecordData> = (0..3)
        .map(|i| RecordData {
            value: Some(Bytes::from(format!("v{i}"))),
            timestamp: i,
            ..RecordData::default()
        })
        .collect();
    // An idempotent producer's batch: producer id 42, epoch 0, sequence 0.
    let mut batch = encode_batch(&data, Compression::None).unwrap().to_vec();
    batch[43..51].copy_from_slice(&42i64.to_be_bytes());
    batch[51..53].copy_from_slice(&0i16.to_be_bytes());
    batch[53..57].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    let batch = Bytes::from(batch);
    let (first, _) = c.p(1).append(&batch, 0).unwrap();
    until(&c.all(), "replicated", || {
        leo(c.p(2)) == 3 && leo(c.p(3)) == 3
    })
    .await;
    c.controller
        .apply(Command::FenceBroker {
            id: 1,
            incarnation: 1,
        })
        .unwrap();
    // The producer did not hear back and retries at the new leader.
    let (retry, _) = c.p(2).append(&batch, 0).unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, first.last_offset)
    );
    assert_eq!(leo(c.p(2)), 3, "the retry appended nothing");
}

#[tokio::test]
async fn follower_behind_the_leaders_log_start_starts_over_there() {
    let c = Cluster::start(&[("segment.bytes", "4096")], "none");
    c.network.cut(3, 1);
    for b in 0..20 {
        c.p(1).append(&records(&format!("b{b}"), 10), 0).unwrap();
    }
    until(&c.all(), "2 caught up", || leo(c.p(2)) == 200).await;
    c.clock.advance(LAG_MS as i64 + 1);
    c.nodes[&1].manager.check_isr();
    until(&c.all(), "3 out of the ISR and 200 committed", || {
        c.p(1).isr() == vec![1, 2] && c.p(1).high_watermark() == 200
    })
    .await;
    assert_eq!(c.p(1).log().delete_records_before(150).unwrap(), 150);
    c.network.heal(3, 1);
    until(&c.all(), "3 caught up from 150", || leo(c.p(3)) == 200).await;
    assert_eq!(c.p(3).log().log_start_offset(), 150);
    assert_eq!(raw(c.p(3)), raw(c.p(1)));
    // Deletions on the leader reach followers that have the data too.
    until(&c.all(), "2 to follow the log start", || {
        c.p(2).log().log_start_offset() == 150
    })
    .await;
}

#[tokio::test]
async fn malformed_and_misdirected_fetches_are_refused() {
    let c = Cluster::start(&[], "none");
    let leader = &c.nodes[&1].manager;
    for garbage in [
        Bytes::new(),
        Bytes::from_static(b"\x01"),
        Bytes::from_static(b"\x07\x00\x01"),
        Bytes::from(vec![0xff; 100]),
    ] {
        assert!(leader.handle(2, garbage).await.is_err());
    }
    let fetch = |partition: PartitionFetch| FetchRequest {
        follower_id: 2,
        incarnation: 1,
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        partitions: vec![partition],
    };
    let good = PartitionFetch {
        topic: TOPIC.into(),
        partition: 0,
        current_leader_epoch: 0,
        fetch_offset: 0,
        last_fetched_epoch: -1,
        log_start_offset: 0,
        high_watermark: 0,
        max_bytes: 1 << 20,
    };
    let bytes = fetch(good.clone()).encode();
    // Truncated, or sent by another broker than it claims to be.
    assert!(leader
        .handle(2, bytes.slice(..bytes.len() - 1))
        .await
        .is_err());
    assert!(leader.handle(3, bytes.clone()).await.is_err());

    let ask = |request: FetchRequest, peer: i32| async move {
        let bytes = leader.handle(peer, request.encode()).await.unwrap();
        FetchResponse::decode(bytes).unwrap().partitions[0].error
    };
    assert_eq!(ask(fetch(good.clone()), 2).await, FetchError::None);
    let wrong = |f: fn(&mut PartitionFetch)| {
        let mut p = good.clone();
        f(&mut p);
        fetch(p)
    };
    assert_eq!(
        ask(wrong(|p| p.topic = "nope".into()), 2).await,
        FetchError::UnknownTopicOrPartition
    );
    assert_eq!(
        ask(wrong(|p| p.current_leader_epoch = 3), 2).await,
        FetchError::UnknownLeaderEpoch
    );
    assert_eq!(
        ask(wrong(|p| p.fetch_offset = 99), 2).await,
        FetchError::OffsetOutOfRange
    );
    let mut stale = fetch(good.clone());
    stale.incarnation = 0;
    assert_eq!(ask(stale, 2).await, FetchError::StaleBrokerEpoch);
    // A follower asking a follower.
    let follower = &c.nodes[&2].manager;
    let mut to_follower = fetch(good.clone());
    to_follower.follower_id = 3;
    let bytes = follower.handle(3, to_follower.encode()).await.unwrap();
    assert_eq!(
        FetchResponse::decode(bytes).unwrap().partitions[0].error,
        FetchError::NotLeaderOrFollower
    );
    // A broker that is not a replica.
    let mut stranger = fetch(good);
    stranger.follower_id = 9;
    let bytes = leader.handle(9, stranger.encode()).await.unwrap();
    assert_eq!(
        FetchResponse::decode(bytes).unwrap().partitions[0].error,
        FetchError::ReplicaNotAvailable
    );
}

#[tokio::test]
async fn fenced_epochs_and_single_replica_partitions() {
    let c = Cluster::start(&[], "none");
    assert_eq!(c.p(1).check_leader(0), Ok(0));
    assert!(matches!(
        c.p(2).check_leader(0),
        Err(crate::partition::LeaderError::NotLeader)
    ));
    c.controller
        .apply(Command::FenceBroker {
            id: 1,
            incarnation: 1,
        })
        .unwrap();
    assert!(matches!(
        c.p(2).check_leader(0),
        Err(crate::partition::LeaderError::Fenced { ours: 1, theirs: 0 })
    ));
    assert!(matches!(
        c.p(2).check_leader(2),
        Err(crate::partition::LeaderError::UnknownEpoch { ours: 1, theirs: 2 })
    ));
    assert_eq!(c.p(2).check_leader(-1), Ok(1));
    // Stale metadata is ignored.
    let old = PartitionState::new(vec![1, 2, 3]);
    assert_eq!(
        c.p(2).set_role(2, &old, 0).unwrap(),
        crate::partition::RoleChange::Stale
    );

    // A partition with one replica commits on append, as before replication existed.
    let dir = tempfile::tempdir().unwrap();
    let settings = Arc::new(resolve(&LogDefaults::default(), &BTreeMap::new()));
    let log = Log::open(dir.path(), settings.log.clone(), 0).unwrap();
    let alone = Partition::open(TOPIC.into(), 0, log, settings).unwrap();
    let (info, _) = alone.append_with_acks(&records("x", 3), 0, -1).unwrap();
    assert_eq!(alone.high_watermark(), 3);
    assert_eq!(alone.commit_status(info.last_offset + 1), Some(Ok(())));
    alone.set_role(7, &PartitionState::new(vec![7]), 0).unwrap();
    alone.append_with_acks(&records("y", 2), 0, -1).unwrap();
    assert_eq!(alone.high_watermark(), 5);
    assert_eq!(alone.log().epoch_entries().len(), 1);
}
