"""Cluster formation as clients and operators see it: three brokers started from
seeds elect a controller; an RF=3 topic gets its leaders spread over all three
and every replica in sync; every broker answers Metadata the same way; a
request at a follower is refused with NOT_LEADER_OR_FOLLOWER while a real
client finds the leader on its own; replication factors the cluster cannot
hold are refused with INVALID_REPLICATION_FACTOR; replicas spread over racks."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

import kproto
from clients import read_partitions, unique_topic
from harness import quiver_bin

pytestmark = pytest.mark.timeout(180)

NOT_LEADER_OR_FOLLOWER = 6
INVALID_REPLICATION_FACTOR = 38


def test_three_brokers_elect_a_controller_and_spread_leaders(cluster_factory):
    c = cluster_factory(3, racks={1: "a", 2: "b", 3: "c"})
    controller = c.wait_formed()

    st = c.status()
    assert st["cluster_id"] == "test-cluster"
    assert st["controller"] == controller and controller in (1, 2, 3)
    assert sorted(st["raft"]["voters"]) == [1, 2, 3]
    assert st["raft"]["term"] >= 1 and st["raft"]["commit_index"] >= 1
    assert {b["id"]: (b["kafka"], b["cluster"], b["rack"], b["fenced"]) for b in st["brokers"]} == {
        i: (c.broker(i).bootstrap, c.broker(i).cluster_addr, "abc"[i - 1], False) for i in (1, 2, 3)}
    assert st["under_replicated"] == [] and st["offline"] == []
    # every broker names the same controller
    assert {c.status(via=i)["controller"] for i in (1, 2, 3)} == {controller}

    # what a user's AdminClient sees
    admin = c.admin()
    md = admin.list_topics(timeout=10)
    assert {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()} == {
        i: c.broker(i).bootstrap for i in (1, 2, 3)}
    # admin requests may go to any broker (each forwards them to the controller), so
    # Metadata names the answering broker, as Kafka does in KRaft mode
    assert md.controller_id in (1, 2, 3)

    topic = unique_topic("formed")
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])[topic].result(30)
    c.wait_topic(topic, 6, 3)
    parts = admin.list_topics(topic=topic, timeout=10).topics[topic].partitions
    assert sorted(parts) == list(range(6))
    for p, pm in parts.items():
        assert pm.error is None, f"partition {p}: {pm.error}"
        assert sorted(pm.replicas) == [1, 2, 3], f"partition {p} replicas {pm.replicas}"
        assert sorted(pm.isrs) == [1, 2, 3], f"partition {p} ISR {pm.isrs}"
        assert pm.leader == pm.replicas[0], f"partition {p}: leader {pm.leader} is not the preferred replica"
    # 6 partitions over 3 brokers: two leaderships each, as Kafka's placement gives
    assert Counter(pm.leader for pm in parts.values()) == {1: 2, 2: 2, 3: 2}, \
        {p: pm.leader for p, pm in parts.items()}

    # each broker's own Metadata (not just the one the client happened to ask) agrees
    views = {}
    for i in (1, 2, 3):
        m = c.metadata(via=i)
        assert {b.node_id: (b.host, b.port, b.rack) for b in m.brokers.values()} == {
            j: (c.broker(j).host, c.broker(j).port, "abc"[j - 1]) for j in (1, 2, 3)}
        assert m.controller_id == i
        err, ps = m.topics[topic]
        assert err == 0
        views[i] = {p: (pm.leader, list(pm.replicas), sorted(pm.isr)) for p, pm in ps.items()}
    assert views[1] == views[2] == views[3]

    res = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    entries = list(res.values())[0].result(30)
    assert entries["min.insync.replicas"].value == "2"

    # the operator's view
    out = subprocess.run([quiver_bin(), "cluster", "status", "--admin", c.broker(1).admin],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for i in (1, 2, 3):
        assert c.broker(i).bootstrap in out.stdout, out.stdout
    assert "test-cluster" in out.stdout, out.stdout


def test_acks_all_roundtrip_on_a_replicated_topic(cluster_factory):
    """Every record produced with acks=all comes back from every partition, in
    order, with key, headers and offset."""
    c = cluster_factory(3)
    topic = unique_topic("rt")
    c.create_topic(topic, 3)
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5})
    acked = {}
    for i in range(300):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 3, headers=[("i", b"%d" % i)],
                  on_delivery=lambda err, m, i=i: acked.__setitem__(i, (err, m.partition(), m.offset())))
    assert p.flush(60) == 0
    assert all(err is None for err, _, _ in acked.values()) and len(acked) == 300
    got = read_partitions(c.bootstrap, topic, {0: 100, 1: 100, 2: 100})
    for part in range(3):
        want = [(j, b"k%d" % i, b"v%d" % i, [("i", b"%d" % i)])
                for j, i in enumerate(range(part, 300, 3))]
        assert [(s.offset, s.key, s.value, s.headers) for s in got[part]] == want
        assert all(acked[i][1:] == (part, j) for j, i in enumerate(range(part, 300, 3)))


def test_a_follower_refuses_produce_and_fetch_and_clients_find_the_leader(cluster_factory):
    c = cluster_factory(3)
    topic = unique_topic("follower")
    c.create_topic(topic, 1)
    leader = c.leader_of(topic, 0)
    follower = next(i for i in c.replicas_of(topic, 0) if i != leader)
    fb = c.broker(follower)

    batch = kproto.encode_batch([kproto.Record(b"k", b"at-follower")])
    with kproto.Conn(fb.host, fb.port) as conn:
        res = kproto.produce_v3(conn, topic, 0, batch, acks=-1)
        assert res.error_code == NOT_LEADER_OR_FOLLOWER, kproto.error_name(res.error_code)
        fetched = kproto.fetch_v4(conn, topic, 0, 0)
        assert fetched.error_code == NOT_LEADER_OR_FOLLOWER, kproto.error_name(fetched.error_code)

    # a client that only knows the follower learns the leader from Metadata
    from confluent_kafka import Producer
    prod = Producer({"bootstrap.servers": fb.bootstrap, "acks": "all", "enable.idempotence": True})
    out = []
    prod.produce(topic, key=b"k", value=b"via-follower", partition=0,
                 on_delivery=lambda err, m: out.append((err, m.offset())))
    assert prod.flush(30) == 0 and out == [(None, 0)], out
    got = read_partitions(fb.bootstrap, topic, {0: 1})
    assert [(s.offset, s.key, s.value) for s in got[0]] == [(0, b"k", b"via-follower")]
    # and the record is nowhere but at offset 0: the refused produce left no trace
    with kproto.Conn(c.broker(leader).host, c.broker(leader).port) as conn:
        assert kproto.fetch_v4(conn, topic, 0, 0).high_watermark == 1


def test_replication_factor_beyond_live_brokers_is_refused(cluster_factory):
    c = cluster_factory(3)
    admin = c.admin()

    def create(name, rf):
        fut = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=rf)],
                                  operation_timeout=30)[name]
        try:
            fut.result(30)
            return None
        except KafkaException as e:
            return e.args[0]

    too_many = unique_topic("rf4")
    err = create(too_many, 4)
    assert err is not None and err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err
    for i in (1, 2, 3):
        assert too_many not in c.metadata(via=i).topics, f"broker {i} lists the refused topic"

    # with a broker gone, RF 3 is more than the live brokers
    c.kill(3)
    c.wait_formed()
    err = create(unique_topic("rf3"), 3)
    assert err is not None and err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err
    ok = unique_topic("rf2")
    assert create(ok, 2) is None
    c.wait_topic(ok, 1, 2)
    assert set(c.replicas_of(ok, 0)) == {1, 2}


def test_replicas_spread_over_racks(cluster_factory):
    racks = {1: "a", 2: "a", 3: "b", 4: "b"}
    c = cluster_factory(4, racks=racks)
    topic = unique_topic("racks")
    c.create_topic(topic, 8, rf=2, config={"min.insync.replicas": "1"})
    for p in range(8):
        reps = c.replicas_of(topic, p)
        assert sorted(racks[r] for r in reps) == ["a", "b"], f"partition {p} replicas {reps} share a rack"
    leaders = Counter(c.leader_of(topic, p) for p in range(8))
    assert set(leaders) == {1, 2, 3, 4}, leaders
