"""Consumer groups in a cluster: a group's coordinator is the leader of its
`__consumer_offsets` partition, and when that broker dies the next leader
coordinates the group with every offset the group committed."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

from clients import consumer, producer, unique_topic
from groupkit import Worker, assignment_covers, produce_keyed, stop_all, wait_all_consumed
from harness import quiver_bin

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 3
RECORDS = 300


def consume(c, group: str, topic: str, count: int) -> list:
    """Joins `group`, reads `count` records, commits them synchronously, leaves."""
    cons = consumer(c.bootstrap, **{"group.id": group, "session.timeout.ms": 6000})
    cons.subscribe([topic])
    seen = []
    deadline = time.monotonic() + 90
    try:
        while len(seen) < count:
            assert time.monotonic() < deadline, f"read {len(seen)} of {count} records in group {group}"
            msg = cons.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            seen.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        ends = {}
        for p, o, _, _ in seen:
            ends[p] = max(ends.get(p, -1), o + 1)
        cons.commit(offsets=[TopicPartition(topic, p, o) for p, o in ends.items()], asynchronous=False)
    finally:
        cons.close()
    return seen


def test_group_offsets_survive_the_loss_of_the_coordinator(cluster_factory):
    c = cluster_factory(3)
    topic = unique_topic("gfail")
    c.create_topic(topic, PARTITIONS, rf=3, config={"min.insync.replicas": "2"})
    p = producer(c.bootstrap, acks="all", **{"enable.idempotence": True})
    sent = {}
    for i in range(RECORDS):
        key = f"k{i}".encode()
        p.produce(topic, key=key, value=f"v{i}".encode(), partition=i % PARTITIONS)
        sent[key] = f"v{i}".encode()
    assert p.flush(60) == 0

    group = unique_topic("group")
    first = consume(c, group, topic, RECORDS // 2)

    admin = c.admin()
    described = admin.describe_consumer_groups([group])[group].result(30)
    coordinator = described.coordinator.id
    committed_before = {
        tp.partition: tp.offset
        for tp in admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)])[group].result(30).topic_partitions
    }
    assert sum(committed_before.values()) == RECORDS // 2, committed_before

    c.kill(coordinator)
    c.wait_formed()
    # the new coordinator answers COORDINATOR_LOAD_IN_PROGRESS until it has replayed
    # the group's partition (librdkafka's admin client does not retry that itself)
    deadline = time.monotonic() + 30
    while True:
        try:
            described = c.admin().describe_consumer_groups([group])[group].result(30)
            break
        except KafkaException as e:
            retriable = e.args[0].code() in (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR)
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert described.coordinator.id != coordinator

    # the rest of the records, exactly: nothing read twice, nothing skipped
    rest = consume(c, group, topic, RECORDS - RECORDS // 2)
    for part, offset, _, _ in rest:
        assert offset >= committed_before.get(part, 0), \
            f"partition {part} offset {offset} re-read below the committed {committed_before.get(part)}"
    keys = [k for _, _, k, _ in first + rest]
    assert len(keys) == len(set(keys)) == RECORDS
    assert {k: v for _, _, k, v in first + rest} == sent


def test_each_of_four_brokers_coordinates_groups_without_holding_every_offsets_partition(cluster_factory):
    c = cluster_factory(4)
    topic = unique_topic("g4")
    c.create_topic(topic, PARTITIONS, rf=3, config={"min.insync.replicas": "2"})
    p = producer(c.bootstrap, acks="all", **{"enable.idempotence": True})
    for i in range(RECORDS):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(60) == 0

    # one group per coordinator, found by asking (FindCoordinator) for fresh names
    admin = c.admin()
    by_coordinator = {}
    for _ in range(200):
        g = unique_topic("g4group")
        by_coordinator.setdefault(admin.describe_consumer_groups([g])[g].result(30).coordinator.id, g)
        if len(by_coordinator) == 4:
            break
    assert sorted(by_coordinator) == [1, 2, 3, 4]
    # with replication factor 3 over four brokers, none holds the whole offsets topic
    _, offsets_parts = c.metadata().topics["__consumer_offsets"]
    for b in range(1, 5):
        assert any(b not in pm.replicas for pm in offsets_parts.values()), f"broker {b} holds every partition"

    for coordinator, group in sorted(by_coordinator.items()):
        seen = consume(c, group, topic, RECORDS)
        assert sorted((part, off) for part, off, _, _ in seen) == sorted(
            (i % PARTITIONS, i // PARTITIONS) for i in range(RECORDS))
        committed = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)])[group].result(30).topic_partitions
        assert {tp.partition: tp.offset for tp in committed} == {
            q: RECORDS // PARTITIONS for q in range(PARTITIONS)}, f"group {group} at broker {coordinator}"

    # `quiver group list` asks every broker: each lists only the groups it coordinates
    listed = subprocess.run([quiver_bin(), "group", "list", "--bootstrap", c.bootstrap],
                            capture_output=True, timeout=60)
    assert listed.returncode == 0, listed.stderr.decode(errors="replace")
    rows = {line.split()[0]: line.split()[1:] for line in listed.stdout.decode().splitlines()[1:]}
    assert {g: rows.get(g) for g in by_coordinator.values()} == {
        g: ["Empty", "consumer"] for g in by_coordinator.values()}

    # The admin API of any broker answers for the whole cluster: every broker lists the
    # four groups with their coordinators, and describes each one as its coordinator
    # does, committed offsets included.
    for asked in range(1, 5):
        admin_api = f"http://{c.broker(asked).admin}"
        listed = admin_get(f"{admin_api}/v1/groups")
        assert listed["broker"] == asked and listed["unavailable"] == [], listed
        mine = {g["group"]: g for g in listed["groups"] if g["group"] in by_coordinator.values()}
        assert {g: (x["coordinator"], x["state"], x["members"]) for g, x in mine.items()} == {
            g: (coordinator, "Empty", 0) for coordinator, g in by_coordinator.items()}, listed
        for coordinator, group in by_coordinator.items():
            detail = admin_get(f"{admin_api}/v1/groups/{group}")
            assert (detail["group"], detail["coordinator"], detail["state"]) == (group, coordinator, "Empty")
            assert [(o["topic"], o["partition"], o["committed_offset"]) for o in detail["offsets"]] == [
                (topic, q, RECORDS // PARTITIONS) for q in range(PARTITIONS)], detail
            # lag where the coordinator holds a replica; it holds at least two of three
            assert all(o["lag"] in (0, None) for o in detail["offsets"]), detail
            assert sum(o["lag"] == 0 for o in detail["offsets"]) >= 1, detail
        missing = admin_get(f"{admin_api}/v1/groups/no-such-group", expect=404)
        assert missing["error"] == "unknown_group" and "no-such-group" in missing["message"], missing


def admin_get(url: str, expect: int = 200) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    assert status == expect, (url, status, body)
    return json.loads(body)


def test_a_stable_group_keeps_its_generation_when_the_coordinator_dies(cluster_factory, tmp_path):
    """The group's metadata (generation, members, assignment) was in the ISR before the
    members got their assignment, so the next coordinator knows them: after the
    coordinator is killed the members heartbeat on without a rebalance and read on."""
    c = cluster_factory(3)
    topic = unique_topic("gstable")
    c.create_topic(topic, PARTITIONS, rf=3, config={"min.insync.replicas": "2"})
    group = unique_topic("stable")
    workers = [Worker("confluent", c.bootstrap, topic, group, tmp_path, f"w{i}", session_ms=10000).start()
               for i in range(2)]
    try:
        c.wait(lambda: assignment_covers(workers, PARTITIONS) and all(w.assigned() for w in workers), 60,
               "both members to share every partition")
        before = [w.assign_events() for w in workers]
        coordinator = c.admin().describe_consumer_groups([group])[group].result(30).coordinator.id
        c.kill(coordinator)
        c.wait_formed()
        produced = produce_keyed(c.bootstrap, topic, PARTITIONS, 300, create=False)
        wait_all_consumed(workers, produced, 90)
        assert [w.assign_events() for w in workers] == before, "the group rebalanced after the coordinator died"
    finally:
        stop_all(workers)
