//! Three controllers in one process over an in-memory switchboard: formation, commits
//! through followers, lease expiry, controller failover and durable restart.

use std::collections::HashMap;
use std::sync::Weak;

use super::*;

/// Routes calls to the controllers registered in it; a cut broker is unreachable.
#[derive(Default)]
struct Switchboard {
    nodes: Mutex<HashMap<i32, Weak<Controller>>>,
    cut: Mutex<BTreeSet<i32>>,
    /// Brokers whose process the transport reports gone.
    gone: Mutex<BTreeSet<i32>>,
}

struct Port {
    from: i32,
    board: Arc<Switchboard>,
}

impl Transport for Port {
    fn call(
        &self,
        peer: i32,
        _addr: SocketAddr,
        kind: RpcKind,
        request: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let board = self.board.clone();
        let from = self.from;
        Box::pin(async move {
            let cut = board.cut.lock().clone();
            if cut.contains(&peer) || cut.contains(&from) {
                tokio::time::sleep(timeout.min(Duration::from_millis(50))).await;
                return Err(format!("broker {peer} is unreachable"));
            }
            let target = board.nodes.lock().get(&peer).and_then(|w| w.upgrade());
            let Some(target) = target else {
                return Err(format!("broker {peer} is down"));
            };
            let call = async move {
                match kind {
                    RpcKind::Raft => target.handle_raft(&request).await,
                    RpcKind::Controller => target.handle_controller(from, &request).await,
                }
            };
            tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| "timed out".to_string())?
        })
    }

    fn gone(&self, peer: i32, _addr: SocketAddr, _wait: Duration) -> BoxFuture<'static, bool> {
        let gone = self.board.gone.lock().contains(&peer);
        Box::pin(async move { gone })
    }
}

fn config() -> ClusterConfig {
    ClusterConfig {
        seeds: (1..=3)
            .map(|i| format!("{i}@127.0.0.1:{}", 19000 + i))
            .collect(),
        tls_dir: Some("/unused".into()),
        heartbeat_interval_ms: 50,
        session_timeout_ms: 600,
        election_timeout_ms: 150,
        ..Default::default()
    }
}

async fn start(board: &Arc<Switchboard>, dir: &Path, id: i32, incarnation: u64) -> Arc<Controller> {
    start_with(board, dir, id, incarnation, &config()).await
}

async fn start_with(
    board: &Arc<Switchboard>,
    dir: &Path,
    id: i32,
    incarnation: u64,
    config: &ClusterConfig,
) -> Arc<Controller> {
    let registration = BrokerMeta {
        id,
        kafka_host: "127.0.0.1".into(),
        kafka_port: 9000 + id as u16,
        cluster_addr: SocketAddr::from(([127, 0, 0, 1], 19000 + id as u16)),
        rack: None,
        incarnation,
        fenced: false,
        listeners: Default::default(),
    };
    let port = Arc::new(Port {
        from: id,
        board: board.clone(),
    });
    let controller = Controller::start(registration, config, &dir.join(id.to_string()), port)
        .await
        .unwrap();
    board.nodes.lock().insert(id, Arc::downgrade(&controller));
    controller.spawn();
    controller
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn topic(name: &str) -> Command {
    Command::CreateTopic(TopicMeta {
        name: name.into(),
        id: uuid::Uuid::new_v4(),
        partitions: 1,
        configs: BTreeMap::new(),
        internal: false,
        assignments: vec![PartitionState::new(vec![1, 2, 3])],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_agree_and_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let board = Arc::new(Switchboard::default());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&board, dir.path(), id, 1).await);
    }
    for node in &nodes {
        assert!(node.wait_registered(Duration::from_secs(20)).await);
    }
    let leader = nodes[0].leader().unwrap();
    assert!(nodes.iter().all(|n| n.leader() == Some(leader)));

    // A proposal through a follower is committed and applied everywhere.
    let follower = nodes.iter().find(|n| n.id() != leader).unwrap();
    follower
        .submit(topic("t"), Duration::from_secs(10))
        .await
        .unwrap();
    eventually("every broker applies the topic", || {
        nodes.iter().all(|n| n.state().topics.contains_key("t"))
    })
    .await;
    let err = follower
        .submit(topic("t"), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ControllerError::Rejected(StateError::TopicExists(_))),
        "{err}"
    );

    // Cut off the partition leader's broker (1, the preferred replica): its lease runs
    // out and the next in-sync replica leads.
    board.cut.lock().insert(1);
    let survivors: Vec<_> = nodes.iter().filter(|n| n.id() != 1).cloned().collect();
    eventually("broker 1 fenced and partition led by 2", || {
        survivors.iter().all(|n| {
            let s = n.state();
            s.brokers[&1].fenced && s.partition("t", 0).unwrap().leader == 2
        })
    })
    .await;
    let p = survivors[0].state().partition("t", 0).unwrap().clone();
    assert_eq!(p.isr, vec![2, 3]);
    assert_eq!(p.leader_epoch, 1);
    // The survivors still commit, whoever the controller is now.
    survivors[1]
        .submit(topic("u"), Duration::from_secs(10))
        .await
        .unwrap();

    // Healed, broker 1 re-registers and catches up on the log.
    board.cut.lock().clear();
    eventually("broker 1 live again with both topics", || {
        let s = nodes[0].state();
        !s.brokers[&1].fenced && s.topics.contains_key("u")
    })
    .await;
}

/// Three brokers, every one a voter, registered, with a lease of `lease`.
async fn three_registered(dir: &Path, lease: Duration) -> (Arc<Switchboard>, Vec<Arc<Controller>>) {
    let config = ClusterConfig {
        session_timeout_ms: lease.as_millis() as u64,
        ..config()
    };
    let board = Arc::new(Switchboard::default());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_with(&board, dir, id, 1, &config).await);
    }
    for node in &nodes {
        assert!(node.wait_registered(Duration::from_secs(20)).await);
    }
    (board, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_process_is_gone_is_fenced_before_its_lease_runs_out() {
    let lease = Duration::from_secs(4);
    let dir = tempfile::tempdir().unwrap();
    let (board, nodes) = three_registered(dir.path(), lease).await;
    nodes[0]
        .submit(topic("t"), Duration::from_secs(10))
        .await
        .unwrap();
    let controller = nodes[0].leader().unwrap();
    let silent = (1..=3).find(|id| *id != controller).unwrap();
    let witness = nodes.iter().find(|n| n.id() == controller).unwrap().clone();

    // Silent but not known dead (paused, or its packets dropped): it keeps its lease.
    let cut_at = Instant::now();
    board.cut.lock().insert(silent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !witness.state().brokers[&silent].fenced,
        "broker {silent} was fenced within its lease though only silent"
    );

    // Its host now says nothing holds its port: fenced at once, out of every ISR.
    board.gone.lock().insert(silent);
    eventually("the gone broker fenced", || {
        witness.state().brokers[&silent].fenced
    })
    .await;
    assert!(
        cut_at.elapsed() < lease,
        "fenced only after {:?}, when its lease ran out anyway",
        cut_at.elapsed()
    );
    let p = witness.state().partition("t", 0).unwrap().clone();
    assert!(!p.isr.contains(&silent), "{p:?}");
    assert_ne!(p.leader, silent, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_whose_process_is_gone_is_replaced_and_fenced_before_its_lease_runs_out() {
    let lease = Duration::from_secs(4);
    let dir = tempfile::tempdir().unwrap();
    let (board, nodes) = three_registered(dir.path(), lease).await;
    let old = nodes[0].leader().unwrap();
    let survivors: Vec<_> = nodes.iter().filter(|n| n.id() != old).cloned().collect();
    let gone_at = Instant::now();
    board.cut.lock().insert(old);
    board.gone.lock().insert(old);
    eventually("a new controller that fenced the old one", || {
        survivors
            .iter()
            .all(|n| n.leader().is_some_and(|l| l != old) && n.state().brokers[&old].fenced)
    })
    .await;
    assert!(
        gone_at.elapsed() < lease,
        "fenced only after {:?}, when its lease ran out anyway",
        gone_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_a_full_restart() {
    let dir = tempfile::tempdir().unwrap();
    let board = Arc::new(Switchboard::default());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&board, dir.path(), id, 1).await);
    }
    for node in &nodes {
        assert!(node.wait_registered(Duration::from_secs(20)).await);
    }
    for name in ["a", "b", "c"] {
        nodes[2]
            .submit(topic(name), Duration::from_secs(10))
            .await
            .unwrap();
    }
    for node in nodes.drain(..) {
        node.raft.shutdown().await.unwrap();
    }
    board.nodes.lock().clear();

    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&board, dir.path(), id, 2).await);
    }
    eventually("the restarted quorum has every topic", || {
        nodes.iter().all(|n| {
            ["a", "b", "c"]
                .iter()
                .all(|t| n.state().topics.contains_key(*t))
        })
    })
    .await;
    for node in &nodes {
        assert!(node.wait_registered(Duration::from_secs(20)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_with_its_clock_set_back_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let board = Arc::new(Switchboard::default());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&board, dir.path(), id, 1_000_000).await);
    }
    for node in &nodes {
        assert!(node.wait_registered(Duration::from_secs(20)).await);
    }
    let old = nodes.pop().unwrap();
    old.raft.shutdown().await.unwrap();
    board.nodes.lock().remove(&3);
    drop(old);

    // The wall clock (the incarnation's source) now reads earlier than at the first
    // start: the restarted process must still register above the old incarnation,
    // not be taken for a late message of the old process and ignored forever.
    let restarted = start(&board, dir.path(), 3, 5).await;
    assert!(
        restarted.wait_registered(Duration::from_secs(20)).await,
        "the restarted broker never registered"
    );
    let known = restarted.state().brokers[&3].clone();
    assert!(known.incarnation > 1_000_000, "{known:?}");
    assert!(!known.fenced);
    eventually("the others to apply the new registration", || {
        nodes.iter().all(|n| n.state().brokers[&3] == known)
    })
    .await;
    // The number was recorded before it was used, so the next start goes higher still.
    let recorded: u64 = std::fs::read_to_string(dir.path().join("3/controller/incarnation"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(recorded, known.incarnation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_back_with_an_empty_disk_catches_up_and_the_leader_carries_on() {
    // Four seeds: 1-3 vote, 4 follows as a learner.
    let four = ClusterConfig {
        seeds: (1..=4)
            .map(|i| format!("{i}@127.0.0.1:{}", 19000 + i))
            .collect(),
        ..config()
    };
    let dir = tempfile::tempdir().unwrap();
    let board = Arc::new(Switchboard::default());
    let mut nodes = Vec::new();
    for id in 1..=4 {
        nodes.push(start_with(&board, dir.path(), id, 1, &four).await);
    }
    for node in &nodes {
        assert!(node.wait_registered(Duration::from_secs(20)).await);
    }
    for name in ["a", "b", "c"] {
        nodes[0]
            .submit(topic(name), Duration::from_secs(10))
            .await
            .unwrap();
    }
    eventually("the learner to apply every topic", || {
        ["a", "b", "c"]
            .iter()
            .all(|t| nodes[3].state().topics.contains_key(*t))
    })
    .await;

    // The learner's disk is replaced: it comes back with an empty Raft log, behind
    // what the leader knows it had. The leader must send it everything again, not
    // take the shorter log for a broken follower and stop.
    let learner = nodes.pop().unwrap();
    learner.raft.shutdown().await.unwrap();
    board.nodes.lock().remove(&4);
    drop(learner);
    std::fs::remove_dir_all(dir.path().join("4")).unwrap();
    let replaced = start_with(&board, dir.path(), 4, 2, &four).await;
    assert!(replaced.wait_registered(Duration::from_secs(20)).await);
    nodes[1]
        .submit(topic("d"), Duration::from_secs(10))
        .await
        .unwrap();
    eventually("the replaced learner to apply every topic", || {
        ["a", "b", "c", "d"]
            .iter()
            .all(|t| replaced.state().topics.contains_key(*t))
    })
    .await;
    for node in &nodes {
        assert!(
            node.raft.metrics().borrow().running_state.is_ok(),
            "the Raft core of broker {} stopped",
            node.id()
        );
    }
}

#[test]
fn incarnations_grow_across_starts_whatever_the_clock_says() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(store::next_incarnation(dir.path(), 500).unwrap(), 500);
    assert_eq!(store::next_incarnation(dir.path(), 100).unwrap(), 501);
    assert_eq!(store::next_incarnation(dir.path(), 900).unwrap(), 900);
    std::fs::write(dir.path().join("incarnation"), "garbage").unwrap();
    let err = store::next_incarnation(dir.path(), 1).unwrap_err();
    assert!(
        err.to_string().contains("not an incarnation number"),
        "{err}"
    );
}

#[test]
fn a_registration_starts_a_full_lease_and_clears_pending_fences() {
    let t0 = Instant::now();
    let mut leases = Leases::default();
    leases.renewed.insert(3, (7, t0));
    leases.fencing.insert((3, 7));
    leases.fencing.insert((2, 4));

    let later = t0 + Duration::from_secs(10);
    leases.registered(3, 8, later);
    assert_eq!(leases.renewed[&3], (8, later));
    assert_eq!(leases.fencing, BTreeSet::from([(2, 4)]));
}

#[test]
fn a_stalled_check_credits_the_stall_to_every_lease() {
    let t0 = Instant::now();
    let beat = Duration::from_millis(250);
    let mut leases = Leases {
        since: Some(t0),
        ..Leases::default()
    };
    leases.renewed.insert(1, (1, t0));
    leases.credit_stall(t0 + beat, beat);
    assert_eq!(leases.renewed[&1].1, t0, "an on-time check changes nothing");

    // the next check comes 5 s late: 4.75 s of it is this node's stall
    let late = t0 + beat + Duration::from_secs(5);
    leases.credit_stall(late, beat);
    assert_eq!(leases.renewed[&1].1, t0 + Duration::from_millis(4750));
    assert_eq!(leases.since, Some(t0 + Duration::from_millis(4750)));
    assert_eq!(leases.checked, Some(late));
}

#[test]
fn a_new_controller_keeps_the_leases_it_heard_as_a_follower_unless_it_heard_nobody() {
    let t0 = Instant::now();
    let beat = Duration::from_millis(250);
    let mut leases = Leases::default();
    // broker 2 beat just now; broker 3 (died with the old controller) 1.2 s ago
    leases
        .renewed
        .insert(2, (1, t0 + Duration::from_millis(1200)));
    leases.renewed.insert(3, (1, t0));
    leases.fencing.insert((4, 1));
    let elected = t0 + Duration::from_millis(1300);
    leases.new_term(7, elected, beat);
    assert_eq!(leases.term, 7);
    assert_eq!(leases.since, Some(elected));
    assert_eq!(
        leases.renewed[&3],
        (1, t0),
        "the dead broker's silence keeps counting"
    );
    assert!(leases.fencing.is_empty());

    // a node that heard nobody for a second (itself stalled) trusts none of it
    leases.new_term(8, elected + Duration::from_secs(1), beat);
    assert!(leases.renewed.is_empty());
}
