//! The group protocol driven input by input with a hand-held clock.

use super::*;
use bytes::BytesMut;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::{Encodable, StrBytes};

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;
const DELAY: i32 = 100;

struct Harness {
    groups: Groups,
    now: i64,
    next: Token,
}

fn harness(initial_delay: i32) -> Harness {
    Harness {
        groups: Groups::new(Limits {
            initial_rebalance_delay_ms: initial_delay,
            ..Limits::default()
        }),
        now: 1_000_000,
        next: 0,
    }
}

fn request(group: &str, member: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: CONSUMER_PROTOCOL.into(),
        protocols: vec![
            ("range".into(), Bytes::from_static(b"range-meta")),
            ("roundrobin".into(), Bytes::from_static(b"rr-meta")),
        ],
        require_known_member_id: false,
    }
}

fn static_request(group: &str, member: &str, instance: &str) -> JoinRequest {
    JoinRequest {
        instance_id: Some(instance.into()),
        ..request(group, member)
    }
}

impl Harness {
    /// Lets the initial rebalance delay run out; it is extended once when several
    /// members joined in its first window.
    fn settle(&mut self) {
        self.advance(DELAY as i64);
        self.advance(DELAY as i64);
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        self.groups.tick(self.now);
    }

    fn join(&mut self, req: JoinRequest) -> Token {
        self.next += 1;
        self.groups.join(self.now, self.next, req);
        self.next
    }

    fn sync(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
        assignments: &[(&str, &str)],
    ) -> Token {
        self.next += 1;
        self.groups.sync(
            self.now,
            self.next,
            SyncRequest {
                group_id: group.into(),
                generation,
                member_id: member.into(),
                instance_id: None,
                protocol_type: None,
                protocol_name: None,
                assignments: assignments
                    .iter()
                    .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                    .collect(),
            },
        );
        self.next
    }

    fn outputs(&mut self) -> Vec<Output> {
        self.groups.take_outputs()
    }

    fn joins(&mut self) -> HashMap<Token, JoinResponse> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Join(t, r) => Some((t, r)),
                _ => None,
            })
            .collect()
    }

    /// The one response for `token` among the outputs, which must be all there is.
    fn join_response(&mut self, token: Token) -> JoinResponse {
        let mut joins = self.joins();
        let response = joins.remove(&token).expect("join answered");
        assert!(joins.is_empty(), "unexpected join responses: {joins:?}");
        response
    }

    fn sync_response(&mut self, token: Token) -> SyncResponse {
        self.outputs()
            .into_iter()
            .find_map(|o| match o {
                Output::Sync(t, r) if t == token => Some(r),
                _ => None,
            })
            .expect("sync answered")
    }

    /// A stable group with `n` dynamic members; returns their ids (leader first) and
    /// the generation.
    fn stable_group(&mut self, group: &str, n: usize) -> (Vec<String>, i32) {
        let tokens: Vec<Token> = (0..n).map(|_| self.join(request(group, ""))).collect();
        self.settle();
        let mut joins = self.joins();
        let responses: Vec<JoinResponse> =
            tokens.iter().map(|t| joins.remove(t).unwrap()).collect();
        let generation = responses[0].generation;
        let leader = responses[0].leader.clone();
        let mut ids: Vec<String> = responses.iter().map(|r| r.member_id.clone()).collect();
        ids.sort_by_key(|id| id != &leader);
        let assignments: Vec<(String, String)> = ids
            .iter()
            .map(|id| (id.clone(), format!("assign-{id}")))
            .collect();
        let borrowed: Vec<(&str, &str)> = assignments
            .iter()
            .map(|(m, a)| (m.as_str(), a.as_str()))
            .collect();
        for id in &ids[1..] {
            self.sync(group, generation, id, &[]);
        }
        self.sync(group, generation, &ids[0], &borrowed);
        let outputs = self.outputs();
        assert_eq!(
            outputs
                .iter()
                .filter(|o| matches!(o, Output::Sync(_, r) if r.error.is_none()))
                .count(),
            n
        );
        assert_eq!(self.state(group), GroupState::Stable);
        (ids, generation)
    }

    fn state(&self, group: &str) -> GroupState {
        self.groups.describe(group).unwrap().state
    }

    fn heartbeat(&mut self, group: &str, generation: i32, member: &str) -> Option<ResponseError> {
        self.groups
            .heartbeat(self.now, group, generation, member, None)
    }
}

#[test]
fn first_join_with_v4_requires_a_member_id() {
    let mut h = harness(DELAY);
    let t = h.join(JoinRequest {
        require_known_member_id: true,
        ..request("g", "")
    });
    let r = h.join_response(t);
    assert_eq!(r.error, Some(ResponseError::MemberIdRequired));
    assert!(r.member_id.starts_with("client-"), "{}", r.member_id);

    let t = h.join(request("g", &r.member_id));
    h.settle();
    let joined = h.join_response(t);
    assert_eq!(joined.error, None);
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, r.member_id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    assert_eq!(
        joined.members[0].metadata,
        Bytes::from_static(b"range-meta")
    );
}

#[test]
fn a_pending_member_that_never_rejoins_expires() {
    let mut h = harness(DELAY);
    let (ids, generation) = h.stable_group("g", 1);
    let t = h.join(JoinRequest {
        require_known_member_id: true,
        ..request("g", "")
    });
    assert_eq!(
        h.join_response(t).error,
        Some(ResponseError::MemberIdRequired)
    );
    // The pending member holds nothing up: the group is still stable and, once the
    // pending id expires, forgets it.
    assert_eq!(h.heartbeat("g", generation, &ids[0]), None);
    h.advance(SESSION as i64 - 1);
    assert_eq!(h.heartbeat("g", generation, &ids[0]), None);
    h.advance(2);
    assert!(h.groups.groups["g"].pending.is_empty());
    assert_eq!(h.state("g"), GroupState::Stable);
}

#[test]
fn bad_joins_get_the_right_errors_and_leave_the_group_alone() {
    let mut h = harness(DELAY);
    let (ids, generation) = h.stable_group("g", 2);
    let cases: Vec<(JoinRequest, ResponseError)> = vec![
        (request("", ""), ResponseError::InvalidGroupId),
        (
            JoinRequest {
                session_timeout_ms: 10,
                ..request("g", "")
            },
            ResponseError::InvalidSessionTimeout,
        ),
        (
            JoinRequest {
                session_timeout_ms: 1_800_001,
                ..request("g", "")
            },
            ResponseError::InvalidSessionTimeout,
        ),
        (
            JoinRequest {
                protocols: vec![],
                ..request("g", "")
            },
            ResponseError::InconsistentGroupProtocol,
        ),
        (
            JoinRequest {
                protocol_type: String::new(),
                ..request("g", "")
            },
            ResponseError::InconsistentGroupProtocol,
        ),
        (
            JoinRequest {
                protocols: vec![("sticky".into(), Bytes::new())],
                ..request("g", "")
            },
            ResponseError::InconsistentGroupProtocol,
        ),
        (
            JoinRequest {
                protocol_type: "connect".into(),
                ..request("g", "")
            },
            ResponseError::InconsistentGroupProtocol,
        ),
        (
            JoinRequest {
                protocols: vec![("range".into(), Bytes::from(vec![0u8; 2 * 1024 * 1024]))],
                ..request("g", "")
            },
            ResponseError::MessageTooLarge,
        ),
        (
            request("g", "no-such-member"),
            ResponseError::UnknownMemberId,
        ),
        (request("other", &ids[0]), ResponseError::UnknownMemberId),
    ];
    for (req, expected) in cases {
        let t = h.join(req.clone());
        assert_eq!(h.join_response(t).error, Some(expected), "{req:?}");
    }
    assert_eq!(h.state("g"), GroupState::Stable);
    for id in &ids {
        assert_eq!(h.heartbeat("g", generation, id), None);
    }
}

#[test]
fn initial_delay_collects_members_into_one_generation() {
    let mut h = harness(3_000);
    let a = h.join(request("g", ""));
    h.advance(2_000);
    let b = h.join(request("g", ""));
    assert!(h.joins().is_empty(), "nobody is answered during the delay");
    h.advance(1_000);
    // b joined during the first delay, so the delay is extended once.
    assert!(h.joins().is_empty());
    let c = h.join(request("g", ""));
    h.advance(3_000);
    // c joined during the extension, so it is extended once more.
    assert!(h.joins().is_empty());
    h.advance(3_000);
    let joins = h.joins();
    assert_eq!(joins.len(), 3, "{joins:?}");
    let leader = &joins[&a];
    assert_eq!(leader.members.len(), 3);
    assert_eq!(leader.leader, leader.member_id);
    for t in [b, c] {
        assert_eq!(joins[&t].generation, leader.generation);
        assert!(joins[&t].members.is_empty(), "only the leader sees members");
    }
}

#[test]
fn followers_wait_for_the_leaders_assignment_which_is_persisted_first() {
    let mut h = harness(DELAY);
    let a = h.join(request("g", ""));
    let b = h.join(request("g", ""));
    h.settle();
    let joins = h.joins();
    let (leader, follower) = (joins[&a].clone(), joins[&b].clone());
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);

    let fs = h.sync("g", follower.generation, &follower.member_id, &[]);
    assert!(h.outputs().is_empty(), "the follower is parked");
    // A heartbeat while the assignment is computed is fine.
    assert_eq!(
        h.heartbeat("g", follower.generation, &follower.member_id),
        None
    );
    let ls = h.sync(
        "g",
        leader.generation,
        &leader.member_id,
        &[(&leader.member_id, "A"), (&follower.member_id, "B")],
    );
    let outputs = h.outputs();
    assert!(
        matches!(&outputs[0], Output::Persist { group, value: Some(v) }
        if group == "g" && v.members.len() == 2 && v.generation == leader.generation)
    );
    let syncs: HashMap<Token, SyncResponse> = outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Sync(t, r) => Some((t, r)),
            _ => None,
        })
        .collect();
    assert_eq!(syncs[&fs].assignment, Bytes::from_static(b"B"));
    assert_eq!(syncs[&ls].assignment, Bytes::from_static(b"A"));
    assert_eq!(h.state("g"), GroupState::Stable);

    // A stable member asking again gets its assignment straight away.
    let again = h.sync("g", follower.generation, &follower.member_id, &[]);
    assert_eq!(h.sync_response(again).assignment, Bytes::from_static(b"B"));
}

#[test]
fn sync_errors() {
    let mut h = harness(DELAY);
    let (ids, generation) = h.stable_group("g", 2);
    let t = h.sync("nope", generation, &ids[0], &[]);
    assert_eq!(
        h.sync_response(t).error,
        Some(ResponseError::UnknownMemberId)
    );
    let t = h.sync("g", generation, "stranger", &[]);
    assert_eq!(
        h.sync_response(t).error,
        Some(ResponseError::UnknownMemberId)
    );
    let t = h.sync("g", generation + 1, &ids[1], &[]);
    assert_eq!(
        h.sync_response(t).error,
        Some(ResponseError::IllegalGeneration)
    );
    let t = h.sync("", generation, &ids[1], &[]);
    assert_eq!(
        h.sync_response(t).error,
        Some(ResponseError::InvalidGroupId)
    );

    h.next += 1;
    let token = h.next;
    h.groups.sync(
        h.now,
        token,
        SyncRequest {
            group_id: "g".into(),
            generation,
            member_id: ids[1].clone(),
            instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("roundrobin".into()),
            assignments: vec![],
        },
    );
    assert_eq!(
        h.sync_response(token).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );

    // A new member starts a rebalance; syncing the old generation is refused.
    h.join(request("g", ""));
    h.outputs();
    let t = h.sync("g", generation, &ids[1], &[]);
    assert_eq!(
        h.sync_response(t).error,
        Some(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn heartbeats_report_rebalances_and_fence_generations() {
    let mut h = harness(DELAY);
    let (ids, generation) = h.stable_group("g", 2);
    assert_eq!(h.heartbeat("g", generation, &ids[0]), None);
    assert_eq!(
        h.heartbeat("g", generation - 1, &ids[0]),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        h.heartbeat("g", generation, "stranger"),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        h.heartbeat("other", generation, &ids[0]),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        h.heartbeat("", generation, &ids[0]),
        Some(ResponseError::InvalidGroupId)
    );
    let newcomer = h.join(request("g", ""));
    assert_eq!(
        h.heartbeat("g", generation, &ids[0]),
        Some(ResponseError::RebalanceInProgress)
    );
    // Both old members rejoin: the rebalance completes without waiting for a timeout.
    let a = h.join(request("g", &ids[0]));
    let b = h.join(request("g", &ids[1]));
    let joins = h.joins();
    assert_eq!(joins.len(), 3);
    for t in [a, b, newcomer] {
        assert_eq!(joins[&t].generation, generation + 1);
    }
}

#[test]
fn a_clean_leave_rebalances_at_once() {
    let mut h = harness(DELAY);
    let (ids, generation) = h.stable_group("g", 3);
    let results = h.groups.leave(
        h.now,
        "g",
        &[Leaving {
            member_id: ids[2].clone(),
            instance_id: None,
        }],
    );
    assert_eq!(results, vec![None]);
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(
        h.heartbeat("g", generation, &ids[0]),
        Some(ResponseError::RebalanceInProgress)
    );
    let a = h.join(request("g", &ids[0]));
    assert!(h.joins().is_empty());
    let b = h.join(request("g", &ids[1]));
    let joins = h.joins();
    assert_eq!(joins[&a].generation, generation + 1);
    assert_eq!(joins[&b].generation, generation + 1);
    assert_eq!(joins[&a].members.len(), 2, "the leader stays leader");
}

#[test]
fn batched_leave_reports_each_member() {
    let mut h = harness(DELAY);
    let a = h.join(static_request("g", "", "inst-a"));
    let b = h.join(static_request("g", "", "inst-b"));
    h.settle();
    let joins = h.joins();
    let (a_id, b_id) = (joins[&a].member_id.clone(), joins[&b].member_id.clone());
    let results = h.groups.leave(
        h.now,
        "g",
        &[
            Leaving {
                member_id: String::new(),
                instance_id: Some("inst-a".into()),
            },
            Leaving {
                member_id: "someone-else".into(),
                instance_id: Some("inst-b".into()),
            },
            Leaving {
                member_id: "ghost".into(),
                instance_id: None,
            },
            Leaving {
                member_id: b_id.clone(),
                instance_id: Some("inst-b".into()),
            },
        ],
    );
    assert_eq!(
        results,
        vec![
            None,
            Some(ResponseError::FencedInstanceId),
            Some(ResponseError::UnknownMemberId),
            None,
        ]
    );
    assert!(h.groups.describe("g").unwrap().members.is_empty());
    assert_eq!(h.state("g"), GroupState::Empty);
    let _ = a_id;
    assert_eq!(
        h.groups.leave(
            h.now,
            "nope",
            &[Leaving {
                member_id: "x".into(),
                instance_id: None
            }]
        ),
        vec![Some(ResponseError::UnknownMemberId)]
    );
}

#[test]
fn an_expired_session_moves_the_work_to_the_others() {
    let mut h = harness(DELAY);
    let (ids, generation) = h.stable_group("g", 3);
    h.advance(SESSION as i64 / 2);
    assert_eq!(h.heartbeat("g", generation, &ids[0]), None);
    assert_eq!(h.heartbeat("g", generation, &ids[1]), None);
    // ids[2] has sent nothing since it synced: its session runs out.
    h.advance(SESSION as i64 / 2);
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(
        h.heartbeat("g", generation, &ids[0]),
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        h.heartbeat("g", generation, &ids[2]),
        Some(ResponseError::UnknownMemberId)
    );
    let a = h.join(request("g", &ids[0]));
    let b = h.join(request("g", &ids[1]));
    let joins = h.joins();
    assert_eq!(joins[&a].generation, generation + 1);
    assert_eq!(joins[&b].generation, generation + 1);
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_deadline() {
    let mut h = harness(DELAY);
    let (ids, generation) = h.stable_group("g", 2);
    let newcomer = h.join(request("g", ""));
    let a = h.join(request("g", &ids[0]));
    // ids[1] keeps heartbeating but never rejoins.
    for _ in 0..(REBALANCE / 2_000) {
        h.advance(2_000);
        let _ = h.heartbeat("g", generation, &ids[1]);
    }
    h.advance(1);
    let joins = h.joins();
    assert_eq!(joins.len(), 2);
    assert_eq!(joins[&a].generation, generation + 1);
    assert_eq!(joins[&newcomer].generation, generation + 1);
    assert_eq!(joins[&a].members.len(), 2);
    assert_eq!(
        h.heartbeat("g", generation + 1, &ids[1]),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn the_leader_dying_before_sync_restarts_the_rebalance() {
    let mut h = harness(DELAY);
    let a = h.join(request("g", ""));
    let b = h.join(request("g", ""));
    h.settle();
    let joins = h.joins();
    let follower = joins[&b].clone();
    let _leader = joins[&a].clone();
    let fs = h.sync("g", follower.generation, &follower.member_id, &[]);
    h.advance(SESSION as i64 + 1);
    assert_eq!(
        h.sync_response(fs).error,
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    let again = h.join(request("g", &follower.member_id));
    let r = h.join_response(again);
    assert_eq!(r.generation, follower.generation + 1);
    assert_eq!(r.leader, follower.member_id);
}

#[test]
fn rejoining_unchanged_while_completing_returns_the_current_generation() {
    let mut h = harness(DELAY);
    let a = h.join(request("g", ""));
    let b = h.join(request("g", ""));
    h.settle();
    let joins = h.joins();
    let follower = joins[&b].clone();
    let _ = a;
    let again = h.join(request("g", &follower.member_id));
    let r = h.join_response(again);
    assert_eq!(r.generation, follower.generation);
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
}

#[test]
fn static_members_restart_without_a_rebalance() {
    let mut h = harness(DELAY);
    let a = h.join(static_request("g", "", "inst-a"));
    let b = h.join(static_request("g", "", "inst-b"));
    h.settle();
    let joins = h.joins();
    let (ra, rb) = (joins[&a].clone(), joins[&b].clone());
    let generation = ra.generation;
    let (leader, follower) = if ra.leader == ra.member_id {
        (ra, rb)
    } else {
        (rb, ra)
    };
    h.sync("g", generation, &follower.member_id, &[]);
    h.sync(
        "g",
        generation,
        &leader.member_id,
        &[(&leader.member_id, "L"), (&follower.member_id, "F")],
    );
    h.outputs();

    // The follower's process restarts: a new join with its instance id and no member id.
    let follower_instance = if follower.member_id.starts_with("inst-a") {
        "inst-a"
    } else {
        "inst-b"
    };
    let t = h.join(static_request("g", "", follower_instance));
    let outputs = h.outputs();
    assert!(matches!(&outputs[0], Output::Persist { .. }));
    let Output::Join(token, r) = &outputs[1] else {
        panic!("{outputs:?}")
    };
    assert_eq!(*token, t);
    assert_eq!(r.error, None);
    assert_eq!(r.generation, generation, "no new generation");
    assert_ne!(r.member_id, follower.member_id);
    assert!(!r.skip_assignment);
    assert_eq!(h.state("g"), GroupState::Stable);
    let s = h.sync("g", generation, &r.member_id, &[]);
    assert_eq!(h.sync_response(s).assignment, Bytes::from_static(b"F"));

    // The old process is fenced.
    assert_eq!(
        h.groups.heartbeat(
            h.now,
            "g",
            generation,
            &follower.member_id,
            Some(follower_instance)
        ),
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        h.groups.validate_commit(
            h.now,
            "g",
            generation,
            &follower.member_id,
            Some(follower_instance)
        ),
        Err(ResponseError::FencedInstanceId)
    );
    // The leader keeps heartbeating in the same generation.
    assert_eq!(h.heartbeat("g", generation, &leader.member_id), None);

    // The leader restarting is told to skip the assignment.
    let leader_instance = if follower_instance == "inst-a" {
        "inst-b"
    } else {
        "inst-a"
    };
    let t = h.join(static_request("g", "", leader_instance));
    let r = h.joins().remove(&t).unwrap();
    assert!(r.skip_assignment);
    assert_eq!(r.leader, r.member_id);
    assert_eq!(r.members.len(), 2);
    assert_eq!(r.generation, generation);
}

#[test]
fn a_static_member_with_new_protocols_triggers_a_rebalance() {
    let mut h = harness(DELAY);
    let a = h.join(static_request("g", "", "inst-a"));
    h.settle();
    let r = h.join_response(a);
    h.sync("g", r.generation, &r.member_id, &[(&r.member_id, "x")]);
    h.outputs();
    let t = h.join(JoinRequest {
        protocols: vec![("range".into(), Bytes::from_static(b"new-subscription"))],
        ..static_request("g", "", "inst-a")
    });
    let joined = h.join_response(t);
    assert_eq!(joined.generation, r.generation + 1);
}

#[test]
fn commits_are_fenced_by_generation_and_membership() {
    let mut h = harness(DELAY);
    assert_eq!(
        h.groups.validate_commit(h.now, "new", 3, "m", None),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(h.groups.validate_commit(h.now, "new", -1, "", None), Ok(()));
    assert_eq!(
        h.groups.validate_commit(h.now, "", -1, "", None),
        Err(ResponseError::InvalidGroupId)
    );
    let (ids, generation) = h.stable_group("g", 2);
    assert_eq!(
        h.groups
            .validate_commit(h.now, "g", generation, &ids[0], None),
        Ok(())
    );
    assert_eq!(
        h.groups
            .validate_commit(h.now, "g", generation + 7, &ids[0], None),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        h.groups
            .validate_commit(h.now, "g", generation, "stranger", None),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        h.groups.validate_commit(h.now, "g", -1, "", None),
        Err(ResponseError::UnknownMemberId),
        "outside tools may not commit for a live group"
    );
    // While preparing a rebalance members may still commit what they processed.
    h.join(request("g", ""));
    assert_eq!(
        h.groups
            .validate_commit(h.now, "g", generation, &ids[0], None),
        Ok(())
    );
    // While the leader assigns, commits would race the new assignment.
    h.join(request("g", &ids[0]));
    h.join(request("g", &ids[1]));
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
    assert_eq!(
        h.groups
            .validate_commit(h.now, "g", generation + 1, &ids[0], None),
        Err(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn offsets_apply_and_tombstone() {
    let mut h = harness(DELAY);
    let value = |offset| OffsetValue {
        offset,
        leader_epoch: 2,
        metadata: "m".into(),
        commit_timestamp: 5,
    };
    h.groups.apply_offsets(
        h.now,
        "g",
        vec![
            (("t".into(), 0), Some(value(10))),
            (("t".into(), 1), Some(value(20))),
        ],
    );
    assert_eq!(h.groups.offset("g", "t", 1), Some(&value(20)));
    h.groups
        .apply_offsets(h.now, "g", vec![(("t".into(), 1), None)]);
    assert_eq!(h.groups.offset("g", "t", 1), None);
    assert_eq!(h.groups.offsets("g").len(), 1);
    assert_eq!(h.state("g"), GroupState::Empty);
    assert_eq!(
        h.groups.list(),
        vec![("g".into(), String::new(), GroupState::Empty)]
    );
}

#[test]
fn deleting_groups_requires_them_empty() {
    let mut h = harness(DELAY);
    assert_eq!(
        h.groups.deletable("nope"),
        Err(ResponseError::GroupIdNotFound)
    );
    assert_eq!(h.groups.deletable(""), Err(ResponseError::InvalidGroupId));
    let (ids, _) = h.stable_group("g", 1);
    h.groups.apply_offsets(
        h.now,
        "g",
        vec![(
            ("t".into(), 0),
            Some(OffsetValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            }),
        )],
    );
    assert_eq!(h.groups.deletable("g"), Err(ResponseError::NonEmptyGroup));
    h.groups.leave(
        h.now,
        "g",
        &[Leaving {
            member_id: ids[0].clone(),
            instance_id: None,
        }],
    );
    let outputs = h.outputs();
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Persist { value: Some(v), .. } if v.members.is_empty())),
        "the empty generation is stored: {outputs:?}"
    );
    assert_eq!(h.state("g"), GroupState::Empty);
    assert_eq!(h.groups.deletable("g"), Ok(vec![("t".to_string(), 0)]));
    h.groups.remove_group("g");
    assert!(h.groups.describe("g").is_none());
}

fn subscription(topics: &[&str]) -> Bytes {
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics
        .iter()
        .map(|t| StrBytes::from_string(t.to_string()))
        .collect();
    let mut out = BytesMut::new();
    bytes::BufMut::put_i16(&mut out, 1);
    sub.encode(&mut out, 1).unwrap();
    let _ = TopicName::default();
    out.freeze()
}

#[test]
fn offsets_of_subscribed_topics_cannot_be_deleted_while_members_consume() {
    let mut h = harness(DELAY);
    let t = h.join(JoinRequest {
        protocols: vec![("range".into(), subscription(&["orders"]))],
        ..request("g", "")
    });
    h.settle();
    let r = h.join_response(t);
    h.sync("g", r.generation, &r.member_id, &[]);
    h.outputs();
    let wanted = vec![("orders".to_string(), 0), ("audit".to_string(), 0)];
    assert_eq!(
        h.groups.deletable_offsets("g", &wanted),
        Ok(vec![Some(ResponseError::GroupSubscribedToTopic), None])
    );
    assert_eq!(
        h.groups.deletable_offsets("nope", &wanted),
        Err(ResponseError::GroupIdNotFound)
    );
}

#[test]
fn the_most_voted_common_protocol_wins() {
    let mut h = harness(DELAY);
    let proto = |names: &[&str]| -> Vec<(String, Bytes)> {
        names
            .iter()
            .map(|n| (n.to_string(), Bytes::new()))
            .collect()
    };
    h.join(JoinRequest {
        protocols: proto(&["cooperative-sticky", "range"]),
        ..request("g", "")
    });
    h.join(JoinRequest {
        protocols: proto(&["roundrobin", "cooperative-sticky", "range"]),
        ..request("g", "")
    });
    h.join(JoinRequest {
        protocols: proto(&["range", "cooperative-sticky"]),
        ..request("g", "")
    });
    h.settle();
    let joins = h.joins();
    assert_eq!(joins.len(), 3);
    for r in joins.values() {
        assert_eq!(r.protocol_name.as_deref(), Some("cooperative-sticky"));
    }
}

#[test]
fn groups_reload_from_their_stored_metadata() {
    let mut h = harness(DELAY);
    let (ids, generation) = h.stable_group("g", 2);
    let stored = h.groups.groups["g"].snapshot();

    let mut restarted = harness(DELAY);
    restarted
        .groups
        .load_group(restarted.now, "g", Some(stored));
    assert_eq!(restarted.state("g"), GroupState::Stable);
    for id in &ids {
        assert_eq!(restarted.heartbeat("g", generation, id), None);
    }
    let t = restarted.sync("g", generation, &ids[1], &[]);
    assert_eq!(
        restarted.sync_response(t).assignment,
        Bytes::from(format!("assign-{}", ids[1]))
    );
    // A member that never comes back expires as it would have.
    restarted.advance(SESSION as i64 / 2);
    assert_eq!(restarted.heartbeat("g", generation, &ids[0]), None);
    restarted.advance(SESSION as i64 / 2 + 1);
    assert_eq!(restarted.state("g"), GroupState::PreparingRebalance);

    restarted.groups.load_group(restarted.now, "g", None);
    assert!(restarted.groups.describe("g").is_none());
}

#[test]
fn next_deadline_tracks_sessions_and_rebalances() {
    let mut h = harness(3_000);
    assert_eq!(h.groups.next_deadline(), None);
    h.join(request("g", ""));
    assert_eq!(h.groups.next_deadline(), Some(h.now + 3_000));
    h.advance(3_000);
    h.outputs();
    // Joined, awaiting sync: kept alive until the session would lapse after the join.
    let (ids, _) = (h.groups.describe("g").unwrap().members, ());
    assert_eq!(ids.len(), 1);
    assert_eq!(h.groups.next_deadline(), Some(h.now + SESSION as i64));
}
