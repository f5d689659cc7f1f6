"""Hostile or confused group requests, sent raw: each gets the error Kafka
gives, and the group they aim at keeps working (heartbeats, committed offsets)."""

from __future__ import annotations

import pytest

import kproto
from clients import create_topic, unique_topic
from kproto import array, i16, i32, i64, kbytes, string

JOIN, SYNC, HEARTBEAT, OFFSET_COMMIT, OFFSET_FETCH = 11, 14, 12, 8, 9
NONE, OFFSET_METADATA_TOO_LARGE, MESSAGE_TOO_LARGE = 0, 12, 10
ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, UNKNOWN_MEMBER_ID = 22, 23, 25


def join_v1(conn, group, member="", protocols=(("range", b"sub"),), session_ms=10_000):
    body = (string(group) + i32(session_ms) + i32(session_ms) + string(member) + string("consumer")
            + array(string(name) + kbytes(meta) for name, meta in protocols))
    r = conn.request(JOIN, 1, body)
    error, generation = r.i16(), r.i32()
    _protocol, _leader, member_id = r.string(), r.string(), r.string()
    r.array(lambda r: (r.string(), r.bytes()))
    return error, generation, member_id


def sync_v0(conn, group, generation, member, assignment=b""):
    body = string(group) + i32(generation) + string(member) + array(
        [string(member) + kbytes(assignment)] if assignment else [])
    r = conn.request(SYNC, 0, body)
    return r.i16(), r.bytes()


def heartbeat_v0(conn, group, generation, member):
    return conn.request(HEARTBEAT, 0, string(group) + i32(generation) + string(member)).i16()


def commit_v2(conn, group, generation, member, topic, offset, metadata=""):
    body = (string(group) + i32(generation) + string(member) + i64(-1)
            + array([string(topic) + array([i32(0) + i64(offset) + string(metadata)])]))
    r = conn.request(OFFSET_COMMIT, 2, body)
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    return topics[0][1][0][1]


def fetch_v1(conn, group, topic):
    r = conn.request(OFFSET_FETCH, 1, string(group) + array([string(topic) + array([i32(0)])]))
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i64(), r.string(), r.i16()))))
    _partition, offset, metadata, error = topics[0][1][0]
    return error, offset, metadata


@pytest.mark.timeout(120)
def test_bad_group_requests_get_kafka_errors_and_leave_the_group_alone(broker_factory):
    broker = broker_factory(sets={"group.initial_rebalance_delay_ms": 0})
    topic = unique_topic("bad")
    create_topic(broker.bootstrap, topic, 1)
    with kproto.Conn.to(broker.bootstrap, timeout=60) as conn:
        error, generation, member = join_v1(conn, "g")
        assert (error, generation) == (NONE, 1)
        assert sync_v0(conn, "g", generation, member, b"assignment") == (NONE, b"assignment")
        assert commit_v2(conn, "g", generation, member, topic, 42, "kept") == NONE
        error, _, other_member = join_v1(conn, "other")
        assert error == NONE

        # a commit for a generation the group never had
        assert commit_v2(conn, "g", generation + 7, member, topic, 1) == ILLEGAL_GENERATION
        # a join offering no protocol at all
        assert join_v1(conn, "g", member, protocols=())[0] == INCONSISTENT_GROUP_PROTOCOL
        assert join_v1(conn, "g", "", protocols=())[0] == INCONSISTENT_GROUP_PROTOCOL
        # a member id that belongs to another group
        assert join_v1(conn, "g", other_member)[0] == UNKNOWN_MEMBER_ID
        assert heartbeat_v0(conn, "g", generation, other_member) == UNKNOWN_MEMBER_ID
        assert commit_v2(conn, "g", generation, other_member, topic, 1) == UNKNOWN_MEMBER_ID
        # commit metadata over the limit (4096 bytes by default)
        assert commit_v2(conn, "g", generation, member, topic, 1, "m" * 5000) == OFFSET_METADATA_TOO_LARGE
        # a 100 MB protocol metadata blob
        blob = b"\x00" * 100_000_000
        assert join_v1(conn, "g", member, protocols=(("range", blob),))[0] == MESSAGE_TOO_LARGE
        del blob

        # the group is unharmed: same generation, same assignment, same offset
        assert heartbeat_v0(conn, "g", generation, member) == NONE
        assert sync_v0(conn, "g", generation, member) == (NONE, b"assignment")
        assert fetch_v1(conn, "g", topic) == (NONE, 42, "kept")
        assert heartbeat_v0(conn, "other", 1, other_member) == NONE
