//! The controller: cluster metadata (brokers, topics, replica sets, leaders, leader
//! epochs, ISRs, producer-id blocks) as a log of [`Command`]s replicated with openraft
//! among the controller voters, applied by every broker to its own copy of the
//! [`State`].
//!
//! The Raft leader is the controller. Besides committing what brokers propose, it holds
//! the brokers' leases: every broker heartbeats it, and a broker whose lease runs out is
//! fenced by a committed [`Command::FenceBroker`], which in the same step elects new
//! leaders from the ISR. A broker that misses heartbeats and whose host says nothing
//! holds its cluster port any more ([`Transport::gone`]: the process is gone) is fenced
//! at once; a voter that finds the controller itself gone that way calls an election
//! instead of waiting for the election timers. Brokers that are not voters follow the log as Raft learners, so
//! every broker answers Metadata from its own replica.
//!
//! A single-node cluster is the same machinery with one voter.

pub mod placement;
pub mod raft;
pub mod state;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::ClusterConfig;
use raft::{MetaRaft, NetworkFactory, NodeId};
pub use state::{
    Applied, BrokerMeta, Command, PartitionState, State, StateError, TopicMeta, NO_LEADER,
};
use store::{LogStore, StateMachineStore};

/// A boxed future, as the transport seam returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which controller RPC a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    /// Raft between controller voters (and to learners).
    Raft,
    /// Broker to controller: proposals and heartbeats.
    Controller,
}

/// How the controller reaches peers: the QUIC endpoint in a broker, an in-memory
/// switchboard in tests.
pub trait Transport: Send + Sync + 'static {
    /// Sends one request to broker `peer` at `addr` and returns its answer.
    fn call(
        &self,
        peer: i32,
        addr: SocketAddr,
        kind: RpcKind,
        request: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>>;

    /// Whether broker `peer`'s process is known to be gone: asked at `addr`, its host
    /// answered within `wait` that nothing listens there. `false` whenever that is not
    /// certain (no answer, an answer from a live endpoint, a transport that cannot
    /// tell): the caller then waits for the lease as before.
    fn gone(&self, peer: i32, addr: SocketAddr, wait: Duration) -> BoxFuture<'static, bool> {
        let _ = (peer, addr, wait);
        Box::pin(async { false })
    }
}

/// Why a controller operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The state machine refused the change.
    #[error(transparent)]
    Rejected(#[from] StateError),
    /// No controller answered in time (no quorum, or the leader is unreachable).
    #[error("the controller is not available: {0}")]
    Unavailable(String),
    /// The Raft storage could not be opened.
    #[error("controller storage in {path}: {source}")]
    Storage {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// openraft refused to start or stopped.
    #[error("raft: {0}")]
    Raft(String),
}

/// A request on the controller channel.
#[derive(Debug, Serialize, Deserialize)]
enum ControllerRequest {
    /// Commit a command (only the leader does; others answer `NotLeader`).
    Propose(Command),
    /// Renew a broker's lease, reporting its recent usage of cluster-wide quotas.
    Heartbeat {
        id: i32,
        incarnation: u64,
        #[serde(default)]
        usage: BTreeMap<String, f64>,
    },
}

/// The answer to a [`ControllerRequest`].
#[derive(Debug, Serialize, Deserialize)]
enum ControllerReply {
    Applied {
        index: u64,
        result: Result<Applied, StateError>,
    },
    NotLeader {
        leader: Option<i32>,
    },
    Heartbeat {
        /// False when the controller does not know this incarnation as live: the
        /// broker must register (again).
        registered: bool,
        /// The cluster's usage of cluster-wide quotas: each key summed over the
        /// brokers' fresh reports.
        #[serde(default)]
        usage: BTreeMap<String, f64>,
    },
    Failed(String),
}

/// A summary of the Raft side, for `quiver cluster status`.
#[derive(Debug, Clone, Serialize)]
pub struct RaftStatus {
    /// This broker's id.
    pub id: i32,
    /// The controller (Raft leader) as this broker knows it.
    pub leader: Option<i32>,
    /// Current Raft term.
    pub term: u64,
    /// Index of the last applied (hence committed) entry.
    pub commit_index: u64,
    /// The voters.
    pub voters: Vec<i32>,
    /// The learners.
    pub learners: Vec<i32>,
}

/// This broker's view of the controller.
pub struct Controller {
    id: i32,
    registration: BrokerMeta,
    raft: MetaRaft,
    machine: StateMachineStore,
    transport: Arc<dyn Transport>,
    peers: BTreeMap<i32, SocketAddr>,
    voters: Vec<i32>,
    config: ClusterConfig,
    leases: Mutex<Leases>,
    /// A registration is in flight; heartbeats do not start another.
    registering: std::sync::atomic::AtomicBool,
    /// The controller this broker last had an answer from, and when.
    controller_heard: Mutex<Option<(i32, Instant)>>,
    /// An election called because the controller's process is gone is under way.
    electing: std::sync::atomic::AtomicBool,
    /// Where this broker's usage of cluster-wide quotas comes from and the cluster's
    /// totals go.
    usage: std::sync::OnceLock<Arc<dyn UsageExchange>>,
    /// The brokers' latest usage reports (kept by every node, used by the leader).
    reports: Mutex<HashMap<i32, UsageReport>>,
}

/// When a broker reported, and its rate per key.
type UsageReport = (Instant, BTreeMap<String, f64>);

/// A broker's side of the usage exchange that makes tenant quotas cluster-wide: what it
/// reports with each heartbeat, and the totals it is told back.
pub trait UsageExchange: Send + Sync {
    /// This broker's recent rate per key.
    fn local(&self) -> BTreeMap<String, f64>;
    /// The cluster's total rate per key.
    fn cluster(&self, totals: BTreeMap<String, f64>);
}

/// How long a broker's usage report counts toward the totals.
const USAGE_REPORT_TTL: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Leases {
    /// The term this node led in when the leases were last reset.
    term: u64,
    since: Option<Instant>,
    /// When the leases were last judged; a long gap means this node stalled.
    checked: Option<Instant>,
    /// Broker id -> (incarnation, last heartbeat or registration).
    renewed: HashMap<i32, (u64, Instant)>,
    /// Fences proposed and not yet seen applied, so each is proposed once.
    fencing: BTreeSet<(i32, u64)>,
    /// Silent brokers whose port is being probed, so each has one probe at a time.
    probing: BTreeSet<(i32, u64)>,
}

impl Leases {
    /// A registration starts a full lease. Without this, a broker that restarts (new
    /// incarnation) or re-registers after a fence would be judged by a heartbeat from
    /// before its registration and fenced again at once, until a heartbeat happened to
    /// land between the registration and the next check.
    fn registered(&mut self, id: i32, incarnation: u64, at: Instant) {
        self.renewed.insert(id, (incarnation, at));
        self.fencing.retain(|(fenced, _)| *fenced != id);
    }

    /// Judging starts under a new term at `now`. Every voter hears the brokers'
    /// heartbeats, so a new controller keeps what it heard as a follower: a broker lost
    /// with the old controller is fenced a lease after it went silent, not a lease
    /// after the election. Brokers it has no word of get a full lease from now; and if
    /// it heard nobody lately (it was itself stalled or cut off) it trusts nothing it
    /// heard and gives everyone a full lease.
    fn new_term(&mut self, term: u64, now: Instant, expected: Duration) {
        let heard_lately = self
            .renewed
            .values()
            .map(|(_, at)| *at)
            .max()
            .is_some_and(|at| now.saturating_duration_since(at) < expected * 4);
        if !heard_lately {
            self.renewed.clear();
        }
        self.term = term;
        self.since = Some(now);
        self.checked = None;
        self.fencing.clear();
    }

    /// Starts the check at `now`; when the previous check is longer ago than `expected`
    /// allows, this node itself stalled (a blocked runtime, a slow disk, a paused
    /// process): the brokers could not have been heard meanwhile, so the stall is
    /// credited to every lease instead of fencing brokers for this node's silence.
    fn credit_stall(&mut self, now: Instant, expected: Duration) {
        if let Some(previous) = self.checked.replace(now) {
            let gap = now.saturating_duration_since(previous);
            if gap > expected * 2 {
                let credit = gap - expected;
                tracing::warn!(
                    stalled_ms = gap.as_millis() as u64,
                    "lease checks were late; extending every lease by the stall"
                );
                for (_, at) in self.renewed.values_mut() {
                    *at = (*at + credit).min(now);
                }
                if let Some(since) = self.since.as_mut() {
                    *since = (*since + credit).min(now);
                }
            }
        }
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.id)
            .field("voters", &self.voters)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Opens the Raft storage under `data_dir/controller`, starts Raft and, on a voter
    /// that has never been initialised, proposes the initial membership.
    pub async fn start(
        mut registration: BrokerMeta,
        config: &ClusterConfig,
        data_dir: &Path,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Controller>, ControllerError> {
        let id = registration.id;
        let dir = data_dir.join("controller");
        let storage = |source| ControllerError::Storage {
            path: dir.clone(),
            source,
        };
        let log = LogStore::open(&dir).map_err(storage)?;
        let machine = StateMachineStore::open(&dir).map_err(storage)?;
        // Above every incarnation an earlier process here registered with (the file),
        // or that the metadata it kept knows of (a data directory from before the file).
        let known = machine
            .state()
            .brokers
            .get(&id)
            .map_or(0, |b| b.incarnation.saturating_add(1));
        registration.incarnation =
            store::next_incarnation(&dir, registration.incarnation.max(known)).map_err(storage)?;
        let seeds = config
            .seeds(id)
            .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let peers: BTreeMap<i32, SocketAddr> = seeds.iter().map(|s| (s.id, s.addr)).collect();
        let voters = config
            .controllers(id)
            .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let election = config.election_timeout_ms;
        let raft_config = openraft::Config {
            cluster_name: config.id.clone(),
            election_timeout_min: election,
            election_timeout_max: election * 2,
            heartbeat_interval: (election / 4).max(20),
            install_snapshot_timeout: 5_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(2_000),
            max_in_snapshot_log_to_keep: 500,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let raft = MetaRaft::new(
            id as NodeId,
            Arc::new(raft_config),
            NetworkFactory {
                transport: transport.clone(),
            },
            log,
            machine.clone(),
        )
        .await
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        if voters.contains(&id) {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| ControllerError::Raft(e.to_string()))?;
            if !initialized {
                let members: BTreeMap<NodeId, BasicNode> = voters
                    .iter()
                    .map(|v| (*v as NodeId, BasicNode::new(peers[v].to_string())))
                    .collect();
                // Every voter proposes the same membership; whichever is not first gets
                // NotAllowed, which is fine.
                if let Err(e) = raft.initialize(members).await {
                    tracing::debug!(error = %e, "controller membership already initialised");
                }
            }
        }
        Ok(Arc::new(Controller {
            id,
            registration,
            raft,
            machine,
            transport,
            peers,
            voters,
            config: config.clone(),
            leases: Mutex::new(Leases::default()),
            registering: std::sync::atomic::AtomicBool::new(false),
            controller_heard: Mutex::new(None),
            electing: std::sync::atomic::AtomicBool::new(false),
            usage: std::sync::OnceLock::new(),
            reports: Mutex::new(HashMap::new()),
        }))
    }

    /// This broker's id.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// This broker's registration (its incarnation changes with every start).
    pub fn registration(&self) -> &BrokerMeta {
        &self.registration
    }

    /// The metadata as applied here.
    pub fn state(&self) -> Arc<State> {
        self.machine.state()
    }

    /// Every newly applied metadata state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.machine.subscribe()
    }

    /// The controller (Raft leader) as known here.
    pub fn leader(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|l| l as i32)
    }

    /// Raft term, commit index and membership, as known here.
    pub fn raft_status(&self) -> RaftStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<i32> = membership.voter_ids().map(|v| v as i32).collect();
        let learners: Vec<i32> = membership.learner_ids().map(|v| v as i32).collect();
        RaftStatus {
            id: self.id,
            leader: metrics.current_leader.map(|l| l as i32),
            term: metrics.current_term,
            commit_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            voters,
            learners,
        }
    }

    /// Commits `command` through the controller and waits until this broker has
    /// applied it, retrying across leader changes until `timeout`.
    pub async fn submit(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<Applied, ControllerError> {
        let deadline = Instant::now() + timeout;
        let mut last_error;
        let mut next_voter = 0usize;
        loop {
            let target = match self.leader() {
                Some(leader) => leader,
                None => {
                    next_voter += 1;
                    self.voters[next_voter % self.voters.len()]
                }
            };
            let attempt = if target == self.id {
                self.propose_local(command.clone()).await
            } else {
                self.forward(target, &command, deadline).await
            };
            match attempt {
                Ok((index, result)) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let _ = self
                        .raft
                        .wait(Some(remaining.max(Duration::from_millis(100))))
                        .metrics(
                            |m| m.last_applied.map(|l| l.index) >= Some(index),
                            "metadata applied locally",
                        )
                        .await;
                    return result.map_err(ControllerError::Rejected);
                }
                Err(reason) => last_error = reason,
            }
            if Instant::now() >= deadline {
                return Err(ControllerError::Unavailable(last_error));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn propose_local(
        &self,
        command: Command,
    ) -> Result<(u64, Result<Applied, StateError>), String> {
        let registering = match &command {
            Command::RegisterBroker(meta) => Some((meta.id, meta.incarnation)),
            _ => None,
        };
        match self.raft.client_write(command).await {
            Ok(response) => {
                if let Some((id, incarnation)) = registering {
                    self.leases
                        .lock()
                        .registered(id, incarnation, Instant::now());
                }
                Ok((response.log_id.index, response.data.0))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(format!(
                "broker {} is no longer the controller (leader now {:?})",
                self.id, f.leader_id
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn forward(
        &self,
        target: i32,
        command: &Command,
        deadline: Instant,
    ) -> Result<(u64, Result<Applied, StateError>), String> {
        let request = ControllerRequest::Propose(command.clone());
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self
            .call(target, &request, remaining.max(Duration::from_millis(100)))
            .await?
        {
            ControllerReply::Applied { index, result } => Ok((index, result)),
            ControllerReply::NotLeader { leader } => Err(format!(
                "broker {target} is not the controller (it names {leader:?})"
            )),
            ControllerReply::Failed(reason) => Err(reason),
            ControllerReply::Heartbeat { .. } => Err("unexpected heartbeat reply".into()),
        }
    }

    async fn call(
        &self,
        target: i32,
        request: &ControllerRequest,
        timeout: Duration,
    ) -> Result<ControllerReply, String> {
        let addr = *self
            .peers
            .get(&target)
            .ok_or_else(|| format!("broker {target} is not in cluster.seeds"))?;
        let bytes = Bytes::from(serde_json::to_vec(request).expect("requests serialise"));
        let reply = self
            .transport
            .call(target, addr, RpcKind::Controller, bytes, timeout)
            .await?;
        serde_json::from_slice(&reply).map_err(|e| format!("malformed controller reply: {e}"))
    }

    /// Serves a Raft RPC from a peer.
    pub async fn handle_raft(&self, request: &[u8]) -> Result<Bytes, String> {
        raft::serve(&self.raft, request).await
    }

    /// Serves a controller RPC (proposal or heartbeat) from broker `peer`.
    pub async fn handle_controller(&self, peer: i32, request: &[u8]) -> Result<Bytes, String> {
        let request: ControllerRequest = serde_json::from_slice(request)
            .map_err(|e| format!("malformed controller request from broker {peer}: {e}"))?;
        let reply = match request {
            ControllerRequest::Propose(command) => match self.propose_local(command).await {
                Ok((index, result)) => ControllerReply::Applied { index, result },
                Err(_) => ControllerReply::NotLeader {
                    leader: self.leader(),
                },
            },
            ControllerRequest::Heartbeat {
                id,
                incarnation,
                usage,
            } => {
                // Followers keep the leases too, for the day they lead (Leases::new_term).
                let registered = self.renew_lease(id, incarnation);
                if self.leader() != Some(self.id) {
                    ControllerReply::NotLeader {
                        leader: self.leader(),
                    }
                } else {
                    let usage = self.report_usage(id, usage);
                    ControllerReply::Heartbeat { registered, usage }
                }
            }
        };
        Ok(Bytes::from(
            serde_json::to_vec(&reply).expect("replies serialise"),
        ))
    }

    /// Makes tenant quotas cluster-wide: `exchange` reports this broker's usage with
    /// each heartbeat and takes the cluster's totals.
    pub fn exchange_usage(&self, exchange: Arc<dyn UsageExchange>) {
        let _ = self.usage.set(exchange);
    }

    /// Records broker `id`'s usage report and returns the totals over fresh reports.
    fn report_usage(&self, id: i32, usage: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
        let now = Instant::now();
        let mut reports = self.reports.lock();
        reports.insert(id, (now, usage));
        reports.retain(|_, (at, _)| now.duration_since(*at) <= USAGE_REPORT_TTL);
        let mut totals = BTreeMap::new();
        for (_, report) in reports.values() {
            for (key, rate) in report {
                *totals.entry(key.clone()).or_insert(0.0) += rate;
            }
        }
        totals
    }

    /// This broker's usage report (empty until an exchange is attached).
    fn local_usage(&self) -> BTreeMap<String, f64> {
        self.usage.get().map(|u| u.local()).unwrap_or_default()
    }

    /// Records a heartbeat; true if `incarnation` is the live registration of `id`.
    fn renew_lease(&self, id: i32, incarnation: u64) -> bool {
        let state = self.state();
        let registered = state
            .brokers
            .get(&id)
            .is_some_and(|b| b.incarnation == incarnation && !b.fenced);
        if registered {
            self.leases
                .lock()
                .renewed
                .insert(id, (incarnation, Instant::now()));
        }
        registered
    }

    /// Runs the background duties until the returned handle is aborted: this broker's
    /// registration and heartbeats, and, while this broker is the controller, lease
    /// expiry, learner membership and preferred-leader rebalancing.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let interval = Duration::from_millis(this.config.heartbeat_interval_ms);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_rebalance = Instant::now();
            loop {
                ticker.tick().await;
                this.heartbeat().await;
                if this.leader() == Some(this.id) {
                    this.expire_leases();
                    this.add_learners().await;
                    let every = this.config.leader_rebalance_interval_ms;
                    if every > 0 && last_rebalance.elapsed() >= Duration::from_millis(every) {
                        last_rebalance = Instant::now();
                        this.rebalance_leaders();
                    }
                }
            }
        })
    }

    /// One heartbeat to the controller; registers when the controller does not know
    /// this incarnation.
    async fn heartbeat(self: &Arc<Self>) {
        self.heartbeat_other_voters();
        let Some(leader) = self.leader() else {
            // Not (yet) part of the quorum's view: ask a voter, which registers us and
            // thereby makes us a learner.
            if !self.voters.contains(&self.id) && !self.is_registered() {
                let _ = self
                    .submit(
                        Command::RegisterBroker(self.registration.clone()),
                        Duration::from_millis(self.config.heartbeat_interval_ms * 4),
                    )
                    .await;
            }
            return;
        };
        let registered = if leader == self.id {
            let totals = self.report_usage(self.id, self.local_usage());
            if let Some(exchange) = self.usage.get() {
                exchange.cluster(totals);
            }
            self.renew_lease(self.id, self.registration.incarnation)
        } else {
            let request = ControllerRequest::Heartbeat {
                id: self.id,
                incarnation: self.registration.incarnation,
                usage: self.local_usage(),
            };
            let timeout = Duration::from_millis(self.config.heartbeat_interval_ms.max(200));
            match self.call(leader, &request, timeout).await {
                Ok(ControllerReply::Heartbeat { registered, usage }) => {
                    *self.controller_heard.lock() = Some((leader, Instant::now()));
                    if let Some(exchange) = self.usage.get() {
                        exchange.cluster(usage);
                    }
                    registered
                }
                Ok(_) => {
                    *self.controller_heard.lock() = Some((leader, Instant::now()));
                    return;
                }
                Err(_) => {
                    self.elect_if_controller_gone(leader);
                    return;
                }
            }
        };
        if !registered
            && !self
                .registering
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let this = self.clone();
            // Registration waits for a commit; heartbeats must keep their rhythm.
            tokio::spawn(async move {
                match this
                    .submit(
                        Command::RegisterBroker(this.registration.clone()),
                        Duration::from_secs(5),
                    )
                    .await
                {
                    Ok(_) => match this.state().brokers.get(&this.id) {
                        Some(known) if known.incarnation > this.registration.incarnation => {
                            tracing::warn!(
                                broker = this.id,
                                incarnation = this.registration.incarnation,
                                known = known.incarnation,
                                "the controller ignored this registration: it knows a newer \
                                 process of this broker id (another process with the same \
                                 node_id, or this data directory was replaced)"
                            )
                        }
                        _ => tracing::info!(
                            broker = this.id,
                            incarnation = this.registration.incarnation,
                            "registered with the controller"
                        ),
                    },
                    Err(e) => tracing::warn!(error = %e, "registration with the controller failed"),
                }
                this.registering
                    .store(false, std::sync::atomic::Ordering::Release);
            });
        }
    }

    /// Heartbeats the voters that are neither this broker nor the leader, without
    /// waiting for them: they keep the leases a new controller starts from. Sent while
    /// no leader is known too, so an election does not age live brokers' leases.
    fn heartbeat_other_voters(self: &Arc<Self>) {
        let leader = self.leader();
        let timeout = Duration::from_millis(self.config.heartbeat_interval_ms.max(200));
        for &voter in &self.voters {
            if voter == self.id || Some(voter) == leader {
                continue;
            }
            let this = self.clone();
            // Only the leader sums usage; the other voters need the lease alone.
            let request = ControllerRequest::Heartbeat {
                id: self.id,
                incarnation: self.registration.incarnation,
                usage: BTreeMap::new(),
            };
            tokio::spawn(async move {
                let _ = this.call(voter, &request, timeout).await;
            });
        }
    }

    /// Waits until this incarnation's registration is applied here; false on timeout.
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        let mut changes = self.subscribe();
        let wait = async {
            loop {
                if self.is_registered() {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && self.is_registered()
    }

    fn is_registered(&self) -> bool {
        self.state()
            .brokers
            .get(&self.id)
            .is_some_and(|b| b.incarnation == self.registration.incarnation && !b.fenced)
    }

    /// Fences every broker whose lease has run out (controller only).
    fn expire_leases(self: &Arc<Self>) {
        let term = self.raft.metrics().borrow().current_term;
        let timeout = Duration::from_millis(self.config.session_timeout_ms);
        let state = self.state();
        let mut leases = self.leases.lock();
        let now = Instant::now();
        let beat = Duration::from_millis(self.config.heartbeat_interval_ms);
        if leases.term != term || leases.since.is_none() {
            leases.new_term(term, now, beat);
        }
        leases.credit_stall(now, beat);
        let since = leases.since.unwrap_or_else(Instant::now);
        leases.fencing.retain(|(id, inc)| {
            state
                .brokers
                .get(id)
                .is_some_and(|b| b.incarnation == *inc && !b.fenced)
        });
        for broker in state.live_brokers() {
            if broker.id == self.id {
                continue;
            }
            let last = match leases.renewed.get(&broker.id) {
                Some((inc, at)) if *inc == broker.incarnation => *at,
                _ => since,
            };
            let key = (broker.id, broker.incarnation);
            let silent = last.elapsed();
            if silent < timeout {
                // Missing two beats is not yet a reason to fence (a slow beat, a lost
                // packet), but it is one to ask whether the process is still there.
                if self.config.fence_when_port_closed
                    && silent >= beat * 2
                    && !leases.fencing.contains(&key)
                    && leases.probing.insert(key)
                {
                    self.fence_if_gone(broker, last);
                }
                continue;
            }
            if !leases.fencing.insert(key) {
                continue;
            }
            tracing::warn!(
                broker = broker.id,
                silent_ms = last.elapsed().as_millis() as u64,
                "broker missed its lease; fencing it"
            );
            let this = self.clone();
            let command = Command::FenceBroker {
                id: broker.id,
                incarnation: broker.incarnation,
            };
            tokio::spawn(async move {
                if let Err(e) = this.submit(command, Duration::from_secs(5)).await {
                    tracing::warn!(error = %e, "fencing failed");
                }
            });
        }
    }

    /// Fences `broker`, whose lease was last renewed at `last`, if its host says its
    /// process is gone ([`Transport::gone`]): a dead broker's leaderships move as soon as
    /// that is certain instead of when its lease runs out. A broker that answers, stays
    /// silent or heartbeats meanwhile keeps its lease (controller only).
    fn fence_if_gone(self: &Arc<Self>, broker: &BrokerMeta, last: Instant) {
        let this = self.clone();
        let (id, incarnation, addr) = (broker.id, broker.incarnation, broker.cluster_addr);
        let wait = Duration::from_millis(self.config.heartbeat_interval_ms)
            .min(Duration::from_millis(200));
        tokio::spawn(async move {
            let gone = this.transport.gone(id, addr, wait).await;
            let fence = {
                let mut leases = this.leases.lock();
                leases.probing.remove(&(id, incarnation));
                let heard_since = leases
                    .renewed
                    .get(&id)
                    .is_some_and(|(inc, at)| *inc == incarnation && *at > last);
                gone && !heard_since
                    && this.leader() == Some(this.id)
                    && leases.fencing.insert((id, incarnation))
            };
            if !fence {
                return;
            }
            tracing::warn!(
                broker = id,
                silent_ms = last.elapsed().as_millis() as u64,
                cluster_addr = %addr,
                "broker missed its heartbeats and nothing listens on its cluster port any \
                 more (its process is gone); fencing it before its lease runs out"
            );
            let command = Command::FenceBroker { id, incarnation };
            if let Err(e) = this.submit(command, Duration::from_secs(5)).await {
                tracing::warn!(error = %e, "fencing failed");
                this.leases.lock().fencing.remove(&(id, incarnation));
            }
        });
    }

    /// Calls a Raft election at once when the controller `leader` stopped answering and
    /// its host says its process is gone ([`Transport::gone`]), instead of leaving it to
    /// the election timers: when both remaining voters time out together they split the
    /// vote and go round again, which on a busy machine took seconds. One voter calls
    /// (the lowest-numbered other than `leader`), so two callers do not split the vote
    /// themselves, and only once the other voters' leader lease (twice the election
    /// timeout, plus a heartbeat of slack for when they last heard the leader) has run
    /// out, as they refuse to vote before. Calling an election is always safe in Raft; a
    /// wrong call costs a term, not data.
    fn elect_if_controller_gone(self: &Arc<Self>, leader: i32) {
        use std::sync::atomic::Ordering;
        if !self.config.fence_when_port_closed {
            return;
        }
        let caller = self.voters.iter().copied().filter(|v| *v != leader).min();
        if caller != Some(self.id) {
            return;
        }
        let Some((heard_from, at)) = *self.controller_heard.lock() else {
            return;
        };
        let beat = Duration::from_millis(self.config.heartbeat_interval_ms);
        let lease = Duration::from_millis(self.config.election_timeout_ms * 2) + beat;
        if heard_from != leader || at.elapsed() < lease {
            return;
        }
        let Some(addr) = self.peers.get(&leader).copied() else {
            return;
        };
        if self.electing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let wait = beat.min(Duration::from_millis(200));
        tokio::spawn(async move {
            if this.transport.gone(leader, addr, wait).await && this.leader() == Some(leader) {
                tracing::warn!(
                    controller = leader,
                    silent_ms = at.elapsed().as_millis() as u64,
                    "the controller stopped answering and nothing listens on its cluster \
                     port any more (its process is gone); calling an election"
                );
                if let Err(e) = this.raft.trigger().elect().await {
                    tracing::warn!(error = %e, "calling an election failed");
                }
            }
            this.electing.store(false, Ordering::Release);
        });
    }

    /// Makes every registered broker that is not a voter a Raft learner, so it gets the
    /// metadata log (controller only).
    async fn add_learners(&self) {
        let members: BTreeSet<i32> = {
            let metrics = self.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id as i32)
                .collect()
        };
        let state = self.state();
        for broker in state.live_brokers() {
            if members.contains(&broker.id) {
                continue;
            }
            let node = BasicNode::new(broker.cluster_addr.to_string());
            match self
                .raft
                .add_learner(broker.id as NodeId, node, false)
                .await
            {
                Ok(_) => tracing::info!(broker = broker.id, "added broker as a metadata learner"),
                Err(e) => tracing::warn!(broker = broker.id, error = %e, "could not add learner"),
            }
        }
    }

    /// Proposes moving leadership back to preferred replicas where one is in sync and
    /// alive but not leading (controller only).
    fn rebalance_leaders(self: &Arc<Self>) {
        let state = self.state();
        let imbalanced = state.topics.values().any(|t| {
            t.assignments.iter().any(|p| {
                p.replicas.first().is_some_and(|&preferred| {
                    p.leader != preferred && p.isr.contains(&preferred) && state.is_live(preferred)
                })
            })
        });
        if !imbalanced {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this
                .submit(
                    Command::ElectPreferredLeaders { partitions: vec![] },
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(Applied::LeadersChanged(n)) if n > 0 => {
                    tracing::info!(
                        partitions = n,
                        "moved leadership back to preferred replicas"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "preferred leader election failed"),
            }
        });
    }

    /// Controlled shutdown: gives up this broker's leaderships and ISR memberships
    /// through the controller before the process exits, so clients move on at once
    /// instead of waiting for the lease to run out.
    pub async fn shut_down(&self, timeout: Duration) {
        let command = Command::FenceBroker {
            id: self.id,
            incarnation: self.registration.incarnation,
        };
        match self.submit(command, timeout).await {
            Ok(Applied::LeadersChanged(n)) => {
                tracing::info!(partitions = n, "controlled shutdown moved leadership away")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "controlled shutdown could not reach the controller")
            }
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }
}

#[cfg(test)]
mod tests;
