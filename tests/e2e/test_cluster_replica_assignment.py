"""Replica assignments given by the client (kafka-topics --replica-assignment): a
topic and new partitions get exactly the brokers asked for, the first of each list
leading; assignments naming an unknown broker, repeating one, or mixing replication
factors are refused with INVALID_REPLICA_ASSIGNMENT and a message saying which
partition and broker, and nothing is created."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewPartitions, NewTopic

from clients import read_partitions, unique_topic

pytestmark = pytest.mark.timeout(180)


def refusal(fut) -> tuple[str, str]:
    with pytest.raises(KafkaException) as e:
        fut.result(30)
    return e.value.args[0].name(), e.value.args[0].str()


def layout(c, topic: str) -> dict:
    """partition -> (leader, replicas) as every live broker agrees."""
    views = []
    for i in c.live_ids():
        _, parts = c.metadata(via=i).topics[topic]
        views.append({p: (pm.leader, list(pm.replicas)) for p, pm in parts.items()})
    assert all(v == views[0] for v in views), views
    return views[0]


def test_topics_and_partitions_take_the_brokers_they_are_given(cluster_factory):
    c = cluster_factory(3)
    admin = c.admin()
    topic = unique_topic("assigned")
    wanted = [[2, 3], [3, 1], [1, 2], [2, 1]]
    # (the client sends -1 for the count and factor; it only wants the count locally)
    admin.create_topics([NewTopic(topic, len(wanted), replica_assignment=wanted,
                                  config={"min.insync.replicas": "1"})])[topic].result(30)
    c.wait_topic(topic, 4, 2)
    assert layout(c, topic) == {p: (r[0], r) for p, r in enumerate(wanted)}

    more = [[3, 2], [1, 3]]
    admin.create_partitions([NewPartitions(topic, 6, replica_assignment=more)])[topic].result(30)
    c.wait_topic(topic, 6, 2)
    assert layout(c, topic) == {p: (r[0], r) for p, r in enumerate(wanted + more)}

    # every partition takes writes on its assigned leader and gives them back
    prod = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for p in range(6):
        prod.produce(topic, key=b"k", value=f"p{p}".encode(), partition=p)
    assert prod.flush(30) == 0
    got = read_partitions(c.bootstrap, topic, {p: 1 for p in range(6)})
    assert {p: [(m.offset, m.value) for m in msgs] for p, msgs in got.items()} == {
        p: [(0, f"p{p}".encode())] for p in range(6)}


def test_bad_assignments_are_refused_with_the_reason(cluster_factory):
    c = cluster_factory(3)
    admin = c.admin()
    cases = {
        unique_topic("unknown"): ([[1, 9]], "partition 0 names broker 9, which is not registered"),
        unique_topic("repeat"): ([[1, 2], [3, 3]], "partition 1 names broker 3 more than once"),
        unique_topic("uneven"): ([[1, 2], [3]],
                                 "partition 1 has 1 replica(s) where the topic's other partitions have 2"),
    }
    futs = admin.create_topics([NewTopic(t, len(a), replica_assignment=a) for t, (a, _) in cases.items()])
    for topic, (_, message) in cases.items():
        assert refusal(futs[topic]) == ("INVALID_REPLICA_ASSIGNMENT", f"invalid replica assignment: {message}")
    assert not set(cases) & set(c.metadata().topics)

    topic = unique_topic("grow")
    c.create_topic(topic, 2, rf=2, config={"min.insync.replicas": "1"})
    before = layout(c, topic)
    fut = admin.create_partitions([NewPartitions(topic, 4, replica_assignment=[[1, 2], [3]])])[topic]
    assert refusal(fut) == ("INVALID_REPLICA_ASSIGNMENT",
                            "invalid replica assignment: partition 3 has 1 replica(s) where the "
                            "topic's other partitions have 2")
    fut = admin.create_partitions([NewPartitions(topic, 4, replica_assignment=[[1, 2]])])[topic]
    assert refusal(fut) == ("INVALID_REPLICA_ASSIGNMENT",
                            "invalid replica assignment: 2 new partition(s) but 1 assignment(s)")
    assert layout(c, topic) == before
