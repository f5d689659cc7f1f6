//! The classic group protocol as a pure state machine: requests and `now` go in;
//! responses to complete, group records to persist and the next deadline come out. No
//! I/O and no clock, so every rebalance path is unit-tested by feeding inputs.
//!
//! ```text
//!            join (first member)              all members rejoined, or the
//!   Empty ─────────────────────▶ Preparing ── rebalance deadline passes ──▶ Completing
//!     ▲                          Rebalance ◀───────────────┐                Rebalance
//!     │ last member gone             ▲    member joins,     │ member leaves,      │
//!     └──────────────────────────────┤    leaves, expires   │ expires, or        │ leader's
//!                                    │                      │ changes protocols   ▼ SyncGroup
//!                                    └──────────────────────┴───────────────── Stable
//! ```
//!
//! A JoinGroup that has to wait for the rebalance is *parked*: the caller passes a
//! [`Token`] and later finds it in an [`Output::Join`]. SyncGroup from followers parks
//! the same way until the leader's assignment arrives. Everything the group must
//! remember across a restart (generation, members, assignments) is emitted as an
//! [`Output::Persist`] before the responses that depend on it.
//!
//! Offsets live here too (committed offsets are read by OffsetFetch and described with
//! the group), but a commit is applied only after its record is durable: the caller
//! validates with [`Groups::validate_commit`], appends, then calls
//! [`Groups::apply_offsets`].

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;

use super::records::{GroupValue, MemberValue, OffsetValue};

/// Identifies a parked request; chosen by the caller, echoed in its [`Output`].
pub type Token = u64;

/// The protocol type of consumer groups; only its members' subscriptions are parsed.
pub const CONSUMER_PROTOCOL: &str = "consumer";

/// A group's lifecycle state, named as Kafka names it in DescribeGroups and ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The broker settings the protocol enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Smallest session timeout a member may ask for (ms).
    pub min_session_timeout_ms: i32,
    /// Largest session timeout a member may ask for (ms).
    pub max_session_timeout_ms: i32,
    /// How long the first rebalance of an empty group waits for more members (ms).
    pub initial_rebalance_delay_ms: i32,
    /// Largest total protocol metadata one member may send in a JoinGroup.
    pub max_member_metadata_bytes: usize,
    /// Largest metadata string one committed offset may carry.
    pub max_offset_metadata_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_member_metadata_bytes: 1024 * 1024,
            max_offset_metadata_bytes: 4096,
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The group.
    pub group_id: String,
    /// Empty on a first join.
    pub member_id: String,
    /// Static membership id (v5+).
    pub instance_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// How long the member may go without a heartbeat (ms).
    pub session_timeout_ms: i32,
    /// How long a rebalance waits for the member to rejoin (ms).
    pub rebalance_timeout_ms: i32,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// Supported protocols (assignors) in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a first join gets MEMBER_ID_REQUIRED and a member id to rejoin with.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// The error, if any.
    pub error: Option<ResponseError>,
    /// The generation joined (-1 on error).
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// Whether the leader should skip computing an assignment (static leader rejoin).
    pub skip_assignment: bool,
    /// The member's id (also set with MEMBER_ID_REQUIRED).
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    fn error(error: ResponseError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation: i32,
    /// The member id.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// v5: must match the group's protocol type when given.
    pub protocol_type: Option<String>,
    /// v5: must match the generation's protocol when given.
    pub protocol_name: Option<String>,
    /// The leader's assignment per member (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// The error, if any.
    pub error: Option<ResponseError>,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The generation's protocol.
    pub protocol_name: Option<String>,
    /// The member's assignment.
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: ResponseError) -> SyncResponse {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// One member named in a LeaveGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaving {
    /// The member id (may be empty when `instance_id` names a static member).
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
}

/// What the caller must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Answer the parked JoinGroup.
    Join(Token, JoinResponse),
    /// Answer the parked SyncGroup.
    Sync(Token, SyncResponse),
    /// Store the group's metadata (`None`: a tombstone) before the outputs after it.
    Persist {
        /// The group.
        group: String,
        /// Its metadata.
        value: Option<GroupValue>,
    },
}

/// A member of a group, as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its host.
    pub client_host: String,
    /// Its metadata for the chosen protocol (empty before one is chosen).
    pub metadata: Bytes,
    /// Its assignment (empty unless the group is stable).
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The state.
    pub state: GroupState,
    /// The protocol type.
    pub protocol_type: String,
    /// The chosen protocol.
    pub protocol: String,
    /// The members.
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<Token>,
    awaiting_sync: Option<Token>,
    session_deadline: i64,
    joined_at: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    fn heartbeat(&mut self, now: i64) {
        self.session_deadline = now + self.session_timeout_ms as i64;
    }
}

#[derive(Debug, Clone)]
struct InitialDelay {
    remaining_ms: i64,
    members_joined: bool,
}

#[derive(Debug, Clone)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    static_members: HashMap<String, String>,
    pending: HashMap<String, i64>,
    rebalance_deadline: Option<i64>,
    initial_delay: Option<InitialDelay>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    state_timestamp: i64,
    next_join: u64,
}

impl Group {
    fn new(now: i64) -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            offsets: BTreeMap::new(),
            state_timestamp: now,
            next_join: 0,
        }
    }

    fn transition(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_timestamp = now;
    }

    /// Protocols every member supports, in the order the first member prefers them.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let rest: Vec<&Member> = members.collect();
        first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| rest.iter().all(|m| m.supports(name)))
            .collect()
    }

    /// Whether a member with `protocols` of `protocol_type` may join.
    fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .candidate_protocols()
                .iter()
                .any(|c| protocols.iter().any(|(name, _)| name == c))
    }

    /// Each member votes for its most preferred protocol that all members support;
    /// the most votes win, ties going to the earliest candidate.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for member in self.members.values() {
            if let Some(i) = member
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|c| c == name))
            {
                votes[i] += 1;
            }
        }
        let best = votes.iter().copied().max()?;
        candidates
            .into_iter()
            .zip(votes)
            .find(|(_, v)| *v == best)
            .map(|(c, _)| c)
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    fn snapshot(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Topics the members subscribe to, when the group is a consumer group whose
    /// subscriptions parse; `None` when that cannot be known.
    fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL) {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for member in self.members.values() {
            let mut metadata = member.metadata_for(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            let _ = bytes::Buf::get_i16(&mut metadata);
            let subscription =
                ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
    }
}

/// Every group this coordinator owns.
#[derive(Debug)]
pub struct Groups {
    limits: Limits,
    groups: HashMap<String, Group>,
    outputs: Vec<Output>,
}

impl Groups {
    /// No groups yet.
    pub fn new(limits: Limits) -> Groups {
        Groups {
            limits,
            groups: HashMap::new(),
            outputs: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes the outputs produced so far, in the order they must be carried out.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// Handles a JoinGroup. Its response comes out as [`Output::Join`] with `token`,
    /// at once or when the rebalance completes.
    pub fn join(&mut self, now: i64, token: Token, req: JoinRequest) {
        let fail = |groups: &mut Groups, error| {
            groups.outputs.push(Output::Join(
                token,
                JoinResponse::error(error, &req.member_id),
            ));
        };
        if req.group_id.is_empty() {
            return fail(self, ResponseError::InvalidGroupId);
        }
        if req.session_timeout_ms < self.limits.min_session_timeout_ms
            || req.session_timeout_ms > self.limits.max_session_timeout_ms
        {
            return fail(self, ResponseError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(self, ResponseError::InconsistentGroupProtocol);
        }
        let metadata_bytes: usize = req.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if metadata_bytes > self.limits.max_member_metadata_bytes {
            return fail(self, ResponseError::MessageTooLarge);
        }
        if !req.member_id.is_empty() && !self.groups.contains_key(&req.group_id) {
            return fail(self, ResponseError::UnknownMemberId);
        }
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(now));
        if group.state == GroupState::Dead {
            return fail(self, ResponseError::CoordinatorNotAvailable);
        }
        if req.member_id.is_empty() {
            self.join_unknown_member(now, token, req);
        } else {
            self.join_known_member(now, token, req);
        }
    }

    fn join_unknown_member(&mut self, now: i64, token: Token, req: JoinRequest) {
        let group_id = req.group_id.clone();
        let group = self.groups.get_mut(&group_id).expect("group exists");
        if !group.accepts(&req.protocol_type, &req.protocols) {
            self.outputs.push(Output::Join(
                token,
                JoinResponse::error(ResponseError::InconsistentGroupProtocol, ""),
            ));
            return;
        }
        let new_id = format!("{}-{}", member_prefix(&req), uuid::Uuid::new_v4());
        if let Some(instance) = &req.instance_id {
            if let Some(old_id) = group.static_members.get(instance).cloned() {
                self.replace_static_member(now, token, req, old_id, new_id);
                return;
            }
        } else if req.require_known_member_id {
            let deadline = now + req.session_timeout_ms as i64;
            group.pending.insert(new_id.clone(), deadline);
            self.outputs.push(Output::Join(
                token,
                JoinResponse::error(ResponseError::MemberIdRequired, &new_id),
            ));
            return;
        }
        self.add_member(now, token, req, new_id);
    }

    fn join_known_member(&mut self, now: i64, token: Token, req: JoinRequest) {
        let group_id = req.group_id.clone();
        let group = self.groups.get_mut(&group_id).expect("group exists");
        if group.pending.remove(&req.member_id).is_some() {
            if !group.accepts(&req.protocol_type, &req.protocols) {
                self.outputs.push(Output::Join(
                    token,
                    JoinResponse::error(ResponseError::InconsistentGroupProtocol, &req.member_id),
                ));
                return;
            }
            let id = req.member_id.clone();
            self.add_member(now, token, req, id);
            return;
        }
        if let Err(error) = check_member(group, &req.member_id, req.instance_id.as_deref()) {
            self.outputs.push(Output::Join(
                token,
                JoinResponse::error(error, &req.member_id),
            ));
            return;
        }
        if !group.accepts_update(&req) {
            self.outputs.push(Output::Join(
                token,
                JoinResponse::error(ResponseError::InconsistentGroupProtocol, &req.member_id),
            ));
            return;
        }
        let member = group.members.get_mut(&req.member_id).expect("checked");
        member.heartbeat(now);
        match group.state {
            GroupState::PreparingRebalance => {
                update_member(member, &req, token, &mut self.outputs);
                self.maybe_complete_join(&group_id, now);
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let unchanged = member.protocols == req.protocols;
                let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
                if unchanged && !(group.state == GroupState::Stable && is_leader) {
                    // A member that missed its JoinGroup response gets the current
                    // generation again instead of forcing a rebalance.
                    let response = join_response(group, &req.member_id, is_leader, false);
                    self.outputs.push(Output::Join(token, response));
                } else {
                    update_member(member, &req, token, &mut self.outputs);
                    self.prepare_rebalance(&group_id, now);
                }
            }
            GroupState::Empty | GroupState::Dead => {
                self.outputs.push(Output::Join(
                    token,
                    JoinResponse::error(ResponseError::UnknownMemberId, &req.member_id),
                ));
            }
        }
    }

    fn add_member(&mut self, now: i64, token: Token, req: JoinRequest, member_id: String) {
        let group_id = req.group_id.clone();
        let group = self.groups.get_mut(&group_id).expect("group exists");
        if group.members.is_empty() {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.instance_id {
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
        }
        let joined_at = group.next_join;
        group.next_join += 1;
        group.members.insert(
            member_id.clone(),
            Member {
                id: member_id,
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type.clone(),
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                awaiting_join: Some(token),
                awaiting_sync: None,
                session_deadline: now + req.session_timeout_ms as i64,
                joined_at,
            },
        );
        if let Some(delay) = &mut group.initial_delay {
            delay.members_joined = true;
        }
        if group.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(&group_id, now);
        } else {
            self.prepare_rebalance(&group_id, now);
        }
    }

    /// A static member came back with a new process: it takes over the old member's
    /// place (and assignment) under a new member id, without a rebalance when the
    /// group is stable and its protocols did not change.
    fn replace_static_member(
        &mut self,
        now: i64,
        token: Token,
        req: JoinRequest,
        old_id: String,
        new_id: String,
    ) {
        let group_id = req.group_id.clone();
        let group = self.groups.get_mut(&group_id).expect("group exists");
        let mut member = group.members.remove(&old_id).expect("static member exists");
        if let Some(old) = member.awaiting_join.take() {
            self.outputs.push(Output::Join(
                old,
                JoinResponse::error(ResponseError::FencedInstanceId, &old_id),
            ));
        }
        if let Some(old) = member.awaiting_sync.take() {
            self.outputs.push(Output::Sync(
                old,
                SyncResponse::error(ResponseError::FencedInstanceId),
            ));
        }
        let protocols_changed = member.protocols != req.protocols;
        member.id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.protocols = req.protocols.clone();
        member.heartbeat(now);
        let instance = req.instance_id.clone().expect("static join");
        group.static_members.insert(instance, new_id.clone());
        if group.leader.as_deref() == Some(old_id.as_str()) {
            group.leader = Some(new_id.clone());
        }
        group.members.insert(new_id.clone(), member);
        match group.state {
            GroupState::Stable
                if !protocols_changed
                    && group.protocol.as_deref() == group.select_protocol().as_deref() =>
            {
                let is_leader = group.leader.as_deref() == Some(new_id.as_str());
                let response = join_response(group, &new_id, is_leader, is_leader);
                let value = group.snapshot();
                self.outputs.push(Output::Persist {
                    group: group_id,
                    value: Some(value),
                });
                self.outputs.push(Output::Join(token, response));
            }
            GroupState::PreparingRebalance => {
                group
                    .members
                    .get_mut(&new_id)
                    .expect("inserted")
                    .awaiting_join = Some(token);
                self.maybe_complete_join(&group_id, now);
            }
            _ => {
                group
                    .members
                    .get_mut(&new_id)
                    .expect("inserted")
                    .awaiting_join = Some(token);
                self.prepare_rebalance(&group_id, now);
            }
        }
    }

    /// Handles a SyncGroup; its response comes out as [`Output::Sync`] with `token`.
    pub fn sync(&mut self, now: i64, token: Token, req: SyncRequest) {
        let response = |error| Output::Sync(token, SyncResponse::error(error));
        if req.group_id.is_empty() {
            self.outputs.push(response(ResponseError::InvalidGroupId));
            return;
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            self.outputs.push(response(ResponseError::UnknownMemberId));
            return;
        };
        if group.state == GroupState::Dead {
            self.outputs
                .push(response(ResponseError::CoordinatorNotAvailable));
            return;
        }
        if let Err(error) = check_member(group, &req.member_id, req.instance_id.as_deref()) {
            self.outputs.push(response(error));
            return;
        }
        if req.generation != group.generation {
            self.outputs
                .push(response(ResponseError::IllegalGeneration));
            return;
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != group.protocol.as_ref())
        {
            self.outputs
                .push(response(ResponseError::InconsistentGroupProtocol));
            return;
        }
        match group.state {
            GroupState::Empty => self.outputs.push(response(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => self
                .outputs
                .push(response(ResponseError::RebalanceInProgress)),
            GroupState::Stable => {
                let member = group.members.get_mut(&req.member_id).expect("checked");
                member.heartbeat(now);
                let out = SyncResponse {
                    error: None,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    assignment: member.assignment.clone(),
                };
                self.outputs.push(Output::Sync(token, out));
            }
            GroupState::CompletingRebalance => {
                let member = group.members.get_mut(&req.member_id).expect("checked");
                member.heartbeat(now);
                if let Some(previous) = member.awaiting_sync.replace(token) {
                    self.outputs.push(Output::Sync(
                        previous,
                        SyncResponse::error(ResponseError::RebalanceInProgress),
                    ));
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    let given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for member in group.members.values_mut() {
                        member.assignment = given.get(&member.id).cloned().unwrap_or_default();
                    }
                    group.transition(GroupState::Stable, now);
                    self.outputs.push(Output::Persist {
                        group: req.group_id.clone(),
                        value: Some(group.snapshot()),
                    });
                    for member in group.members.values_mut() {
                        if let Some(waiting) = member.awaiting_sync.take() {
                            member.heartbeat(now);
                            self.outputs.push(Output::Sync(
                                waiting,
                                SyncResponse {
                                    error: None,
                                    protocol_type: group.protocol_type.clone(),
                                    protocol_name: group.protocol.clone(),
                                    assignment: member.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
            }
            GroupState::Dead => unreachable!("handled above"),
        }
    }

    /// Handles a Heartbeat; returns its error, if any.
    pub fn heartbeat(
        &mut self,
        now: i64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Option<ResponseError> {
        if group_id.is_empty() {
            return Some(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if group.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(error) = check_member(group, member_id, instance_id) {
            return Some(error);
        }
        if generation != group.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        let member = group.members.get_mut(member_id).expect("checked");
        member.heartbeat(now);
        match group.state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::Empty => Some(ResponseError::UnknownMemberId),
            _ => None,
        }
    }

    /// Handles a LeaveGroup: removes each named member and returns its error, if any,
    /// in order. A departure rebalances the group at once.
    pub fn leave(
        &mut self,
        now: i64,
        group_id: &str,
        leaving: &[Leaving],
    ) -> Vec<Option<ResponseError>> {
        if !self.groups.contains_key(group_id) {
            return vec![Some(ResponseError::UnknownMemberId); leaving.len()];
        }
        let mut results = Vec::with_capacity(leaving.len());
        for who in leaving {
            let group = self.groups.get_mut(group_id).expect("checked");
            let member_id = match (&who.instance_id, who.member_id.as_str()) {
                (Some(instance), "") => match group.static_members.get(instance) {
                    Some(id) => id.clone(),
                    None => {
                        results.push(Some(ResponseError::UnknownMemberId));
                        continue;
                    }
                },
                (_, id) => id.to_string(),
            };
            if group.pending.remove(&member_id).is_some() {
                results.push(None);
                self.maybe_complete_join(group_id, now);
                continue;
            }
            match check_member(group, &member_id, who.instance_id.as_deref()) {
                Ok(()) => {
                    self.remove_member(group_id, &member_id, now);
                    results.push(None);
                }
                Err(error) => results.push(Some(error)),
            }
        }
        results
    }

    /// Checks whether a commit may be stored; the caller appends its records and then
    /// calls [`Groups::apply_offsets`]. A negative generation with no member commits
    /// as an outside tool, which only an empty (or new) group allows.
    pub fn validate_commit(
        &mut self,
        now: i64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if group.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            return if group.state == GroupState::Empty {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        check_member(group, member_id, instance_id)?;
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        group
            .members
            .get_mut(member_id)
            .expect("checked")
            .heartbeat(now);
        Ok(())
    }

    /// Records durable offsets (`None`: deleted). Creates the group if it is new.
    pub fn apply_offsets(
        &mut self,
        now: i64,
        group_id: &str,
        offsets: impl IntoIterator<Item = ((String, i32), Option<OffsetValue>)>,
    ) {
        let offsets: Vec<_> = offsets.into_iter().collect();
        if !self.groups.contains_key(group_id) && offsets.iter().all(|(_, v)| v.is_none()) {
            return;
        }
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(now));
        for (tp, value) in offsets {
            match value {
                Some(v) => {
                    group.offsets.insert(tp, v);
                }
                None => {
                    group.offsets.remove(&tp);
                }
            }
        }
    }

    /// A group's committed offsets (empty for an unknown group).
    pub fn offsets(&self, group_id: &str) -> BTreeMap<(String, i32), OffsetValue> {
        self.groups
            .get(group_id)
            .map(|g| g.offsets.clone())
            .unwrap_or_default()
    }

    /// One committed offset.
    pub fn offset(&self, group_id: &str, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_string(), partition))
    }

    /// Checks that a group may be deleted and returns the offsets it holds (to
    /// tombstone); [`Groups::remove_group`] then forgets it.
    pub fn deletable(&self, group_id: &str) -> Result<Vec<(String, i32)>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let group = self
            .groups
            .get(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        match group.state {
            GroupState::Empty => Ok(group.offsets.keys().cloned().collect()),
            GroupState::Dead => Err(ResponseError::GroupIdNotFound),
            _ => Err(ResponseError::NonEmptyGroup),
        }
    }

    /// Forgets a group whose tombstones are durable.
    pub fn remove_group(&mut self, group_id: &str) {
        self.groups.remove(group_id);
    }

    /// Forgets every group `pick` chooses, because another broker coordinates them
    /// now: each parked JoinGroup and SyncGroup of theirs is answered with `error`
    /// (NOT_COORDINATOR sends the client to find the new coordinator). Returns how many
    /// groups were forgotten. Their state lives on in the offsets partition, from
    /// which the next coordinator rebuilds it.
    pub fn unload(&mut self, mut pick: impl FnMut(&str) -> bool, error: ResponseError) -> usize {
        let doomed: Vec<String> = self.groups.keys().filter(|g| pick(g)).cloned().collect();
        for group_id in &doomed {
            let Some(group) = self.groups.remove(group_id) else {
                continue;
            };
            for member in group.members.values() {
                if let Some(token) = member.awaiting_join {
                    self.outputs
                        .push(Output::Join(token, JoinResponse::error(error, &member.id)));
                }
                if let Some(token) = member.awaiting_sync {
                    self.outputs
                        .push(Output::Sync(token, SyncResponse::error(error)));
                }
            }
        }
        doomed.len()
    }

    /// Checks which of `partitions` may have their offsets deleted: the group must
    /// exist, and a partition of a topic the live members subscribe to is refused.
    pub fn deletable_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let group = self
            .groups
            .get(group_id)
            .filter(|g| g.state != GroupState::Dead)
            .ok_or(ResponseError::GroupIdNotFound)?;
        if group.state == GroupState::Empty {
            return Ok(vec![None; partitions.len()]);
        }
        let Some(subscribed) = group.subscribed_topics() else {
            return Err(ResponseError::NonEmptyGroup);
        };
        Ok(partitions
            .iter()
            .map(|(topic, _)| {
                subscribed
                    .contains(topic)
                    .then_some(ResponseError::GroupSubscribedToTopic)
            })
            .collect())
    }

    /// Describes a group; `None` when it does not exist.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.groups.get(group_id)?;
        let protocol = group.protocol.clone().unwrap_or_default();
        let mut members: Vec<&Member> = group.members.values().collect();
        members.sort_by_key(|m| m.joined_at);
        Some(GroupDescription {
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: if group.state == GroupState::Stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// Every group with its protocol type and state, ordered by id.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let mut all: Vec<_> = self
            .groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Restores a group from its stored metadata (`None`: deleted). Members come back
    /// with a fresh session, so live clients keep their generation across a restart
    /// and dead ones expire as they would have.
    pub fn load_group(&mut self, now: i64, group_id: &str, value: Option<GroupValue>) {
        let Some(value) = value else {
            self.groups.remove(group_id);
            return;
        };
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(now));
        group.generation = value.generation;
        group.protocol_type = Some(value.protocol_type).filter(|t| !t.is_empty());
        group.protocol = value.protocol;
        group.leader = value.leader;
        group.members.clear();
        group.static_members.clear();
        group.pending.clear();
        group.rebalance_deadline = None;
        group.initial_delay = None;
        let protocol = group.protocol.clone().unwrap_or_default();
        for (i, m) in value.members.into_iter().enumerate() {
            if let Some(instance) = &m.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            group.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: group.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    awaiting_join: None,
                    awaiting_sync: None,
                    session_deadline: now + m.session_timeout_ms as i64,
                    joined_at: i as u64,
                },
            );
        }
        group.next_join = group.members.len() as u64;
        let state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group.transition(state, value.state_timestamp.max(0));
    }

    /// The earliest time [`Groups::tick`] has work to do.
    pub fn next_deadline(&self) -> Option<i64> {
        self.groups
            .values()
            .flat_map(|g| {
                let sessions = g
                    .members
                    .values()
                    .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
                    .map(|m| m.session_deadline);
                g.rebalance_deadline
                    .into_iter()
                    .chain(g.pending.values().copied())
                    .chain(sessions)
            })
            .min()
    }

    /// Expires sessions, pending members and rebalance deadlines due at `now`.
    pub fn tick(&mut self, now: i64) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            let expired_pending: Vec<String> = group
                .pending
                .iter()
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(m, _)| m.clone())
                .collect();
            for member in &expired_pending {
                group.pending.remove(member);
            }
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.awaiting_join.is_none()
                        && m.awaiting_sync.is_none()
                        && m.session_deadline <= now
                })
                .map(|m| m.id.clone())
                .collect();
            for member in &expired {
                tracing::info!(group = %id, member = %member, "member session expired");
                self.remove_member(&id, member, now);
            }
            if !expired_pending.is_empty() {
                self.maybe_complete_join(&id, now);
            }
            let group = self.groups.get_mut(&id).expect("still present");
            if group.state == GroupState::PreparingRebalance
                && group.rebalance_deadline.is_some_and(|d| d <= now)
            {
                match group.initial_delay.take() {
                    Some(delay) if delay.members_joined && delay.remaining_ms > 0 => {
                        let step =
                            (self.limits.initial_rebalance_delay_ms as i64).min(delay.remaining_ms);
                        group.rebalance_deadline = Some(now + step);
                        group.initial_delay = Some(InitialDelay {
                            remaining_ms: delay.remaining_ms - step,
                            members_joined: false,
                        });
                    }
                    _ => self.complete_join(&id, now),
                }
            }
        }
    }

    fn remove_member(&mut self, group_id: &str, member_id: &str, now: i64) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        let Some(member) = group.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &member.instance_id {
            if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
                group.static_members.remove(instance);
            }
        }
        if let Some(token) = member.awaiting_join {
            self.outputs.push(Output::Join(
                token,
                JoinResponse::error(ResponseError::UnknownMemberId, member_id),
            ));
        }
        if let Some(token) = member.awaiting_sync {
            self.outputs.push(Output::Sync(
                token,
                SyncResponse::error(ResponseError::UnknownMemberId),
            ));
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group_id, now)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group_id, now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn prepare_rebalance(&mut self, group_id: &str, now: i64) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        if group.state == GroupState::CompletingRebalance {
            for member in group.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(token) = member.awaiting_sync.take() {
                    self.outputs.push(Output::Sync(
                        token,
                        SyncResponse::error(ResponseError::RebalanceInProgress),
                    ));
                }
            }
        }
        let timeout = group.max_rebalance_timeout();
        let delay = (self.limits.initial_rebalance_delay_ms as i64).min(timeout);
        if group.state == GroupState::Empty && delay > 0 {
            group.rebalance_deadline = Some(now + delay);
            group.initial_delay = Some(InitialDelay {
                remaining_ms: timeout - delay,
                members_joined: false,
            });
        } else {
            group.rebalance_deadline = Some(now + timeout);
            group.initial_delay = None;
        }
        group.transition(GroupState::PreparingRebalance, now);
        self.maybe_complete_join(group_id, now);
    }

    fn maybe_complete_join(&mut self, group_id: &str, now: i64) {
        let group = self.groups.get(group_id).expect("group exists");
        if group.state == GroupState::PreparingRebalance
            && group.initial_delay.is_none()
            && group.all_joined()
        {
            self.complete_join(group_id, now);
        }
    }

    fn complete_join(&mut self, group_id: &str, now: i64) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        let missing: Vec<String> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in &missing {
            if let Some(member) = group.members.remove(id) {
                if let Some(instance) = &member.instance_id {
                    group.static_members.remove(instance);
                }
                tracing::info!(group = %group_id, member = %id, "member did not rejoin in time; removed");
            }
        }
        group.rebalance_deadline = None;
        group.initial_delay = None;
        group.generation += 1;
        if group.members.is_empty() {
            group.protocol = None;
            group.leader = None;
            group.transition(GroupState::Empty, now);
            self.outputs.push(Output::Persist {
                group: group_id.to_string(),
                value: Some(group.snapshot()),
            });
            return;
        }
        group.protocol = group.select_protocol();
        if !group
            .leader
            .as_ref()
            .is_some_and(|l| group.members.contains_key(l))
        {
            group.leader = group
                .members
                .values()
                .min_by_key(|m| m.joined_at)
                .map(|m| m.id.clone());
        }
        group.transition(GroupState::CompletingRebalance, now);
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let is_leader = group.leader.as_deref() == Some(id.as_str());
            let response = join_response(group, &id, is_leader, false);
            let member = group.members.get_mut(&id).expect("listed");
            member.heartbeat(now);
            if let Some(token) = member.awaiting_join.take() {
                self.outputs.push(Output::Join(token, response));
            }
        }
    }
}

impl Group {
    /// Whether a known member's rejoin keeps the group's protocols satisfiable.
    fn accepts_update(&self, req: &JoinRequest) -> bool {
        if self.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.id != req.member_id)
            .collect();
        req.protocols
            .iter()
            .any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }
}

fn member_prefix(req: &JoinRequest) -> &str {
    match &req.instance_id {
        Some(instance) => instance,
        None => &req.client_id,
    }
}

/// Static membership fencing first (a stale process of a static member must learn it
/// was replaced), then plain membership.
fn check_member(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), ResponseError> {
    if let Some(instance) = instance_id {
        match group.static_members.get(instance) {
            Some(current) if current != member_id => return Err(ResponseError::FencedInstanceId),
            Some(_) => {}
            None => return Err(ResponseError::UnknownMemberId),
        }
    }
    if group.members.contains_key(member_id) {
        Ok(())
    } else {
        Err(ResponseError::UnknownMemberId)
    }
}

fn update_member(member: &mut Member, req: &JoinRequest, token: Token, outputs: &mut Vec<Output>) {
    member.protocols = req.protocols.clone();
    member.protocol_type = req.protocol_type.clone();
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.client_id = req.client_id.clone();
    member.client_host = req.client_host.clone();
    if let Some(previous) = member.awaiting_join.replace(token) {
        // The client gave up on its earlier JoinGroup and sent another; only the
        // newest one is answered with the generation.
        outputs.push(Output::Join(
            previous,
            JoinResponse::error(ResponseError::RebalanceInProgress, &member.id),
        ));
    }
}

fn join_response(group: &Group, member_id: &str, is_leader: bool, skip: bool) -> JoinResponse {
    let protocol = group.protocol.clone().unwrap_or_default();
    let members = if is_leader {
        let mut all: Vec<&Member> = group.members.values().collect();
        all.sort_by_key(|m| m.joined_at);
        all.into_iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResponse {
        error: None,
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        skip_assignment: skip,
        member_id: member_id.to_string(),
        members,
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
