"""Geo-replication end to end: two clusters on one machine joined by a delayed link
(delayproxy.py), a mirror created on the target with the CLI, real Kafka clients on both
sides. Every test reads whole topics back and compares record by record."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from clients import create_topic, kcat
from harness import wait_until
from plugins_kit import AdminApi, plugin_cli, quiver, wasm_path
from transforms_kit import produce, read_topic
from delayproxy import DelayProxy

PROVENANCE = "quiver.provenance"


def region(broker_factory, cluster_id: str, proxies: list, delay_ms: float = 40.0):
    """A one-broker cluster whose advertised Kafka address is a delayed link to it, so
    whoever learns its brokers from Metadata (a mirror elsewhere) crosses the link."""
    b = broker_factory(sets={"cluster.id": cluster_id}, start=False)
    proxy = DelayProxy("127.0.0.1", b.port, delay_ms).start()
    proxies.append(proxy)
    b.sets["kafka.advertised_port"] = str(proxy.port)
    b.start()
    b.link = proxy
    return b


@pytest.fixture
def proxies():
    started: list = []
    yield started
    for p in started:
        p.stop()


def mirror_cli(broker, *args: str, check: bool = True):
    return quiver("mirror", *args, "--admin", broker.admin, check=check)


def deploy_mirror_plugin(broker):
    plugin_cli(broker, "deploy", "mirror", "--kind", "connector", "--file", str(wasm_path("mirror")))


def create_mirror(target, source, name: str, alias: str, *extra: str):
    deploy_mirror_plugin(target)
    mirror_cli(target, "create", name, "--source", source.link.address, "--source-alias", alias,
               "--discovery-interval-ms", "500", "--checkpoint-interval-ms", "500", *extra)


def describe(target, name: str) -> dict:
    return json.loads(mirror_cli(target, "describe", name, "--json").stdout)


def wait_caught_up(target, name: str, topic: str, ends: dict, timeout: float = 120.0) -> dict:
    """Until the mirror's position equals the source end offset of every partition."""
    last = {}

    def done():
        nonlocal last
        last = describe(target, name)
        parts = (last.get("report") or {}).get("topics", {}).get(topic, {}).get("partitions", [])
        have = {p["partition"]: p["position"] for p in parts}
        return all(have.get(p, -1) >= end for p, end in ends.items())
    wait_until(done, timeout, f"mirror {name} to copy {topic} up to {ends}; last describe: {last}")
    return last


def source_records(n: int, partitions: int, tag: str) -> list:
    return [{"key": f"{tag}-k{i}".encode(), "value": f"{tag}-value-{i}".encode() * 3,
             "headers": [("seq", str(i).encode()), ("seq", b"dup")], "partition": i % partitions}
            for i in range(n)]


def dump_topic(bootstrap: str, topic: str) -> dict:
    """{partition: [(offset, key, value, headers, timestamp)]} of the whole topic now, as
    text, read with kcat: at a million records a C consumer takes seconds where a Python
    one spends half a minute."""
    out = kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%p\t%o\t%k\t%s\t%h\t%T\n").stdout.decode()
    by_partition: dict = {}
    for line in out.splitlines():
        p, o, k, v, h, ts = line.split("\t")
        by_partition.setdefault(int(p), []).append((int(o), k, v, h, ts))
    for p, rows in by_partition.items():
        assert [o for o, *_ in rows] == list(range(len(rows))), f"{topic}/{p}: offsets not 0.. in order"
    return by_partition


def test_mirror_copies_every_partition_in_order_over_a_wan_link(broker_factory, proxies):
    east = region(broker_factory, "us-east", proxies)
    west = region(broker_factory, "eu-west", proxies)
    partitions, n = 20, 1_000_000
    create_topic(east.bootstrap, "orders", partitions, {"cleanup.policy": "delete", "retention.ms": "86400000"})
    create_topic(east.bootstrap, "payments", 2)
    produce(east.bootstrap, "orders", source_records(n, partitions, "o"), **{"linger.ms": 20})
    ends = {p: n // partitions for p in range(partitions)}

    create_mirror(west, east, "east", "us-east", "--topics", "orders.*")
    report = wait_caught_up(west, "east", "orders", ends)
    assert report["status"] == "running", report
    assert report["report"]["source_cluster_id"] == "us-east"
    assert report["report"]["topics"]["orders"]["target"] == "us-east.orders"
    assert "payments" not in report["report"]["topics"], "a topic outside --topics was mirrored"

    source = dump_topic(east.bootstrap, "orders")
    target = dump_topic(west.bootstrap, "us-east.orders")
    assert sorted(source) == sorted(target) == list(range(partitions)), (sorted(source), sorted(target))
    for p in range(partitions):
        assert len(target[p]) == len(source[p]) == n // partitions, p
        for s, t in zip(source[p], target[p]):
            # Offset, key, value and timestamp equal; headers intact, repeats and order
            # kept, then where it came from.
            so, sk, sv, sh, sts = s
            assert t == (so, sk, sv, sh + f",{PROVENANCE}=us-east", sts), (p, s, t)
    # The source topic's own configs came along; replication settings stay behind.
    described = quiver("topic", "describe", "us-east.orders", "--bootstrap", west.bootstrap).stdout
    assert "retention.ms" in described and "86400000" in described, described
    assert east.link.bytes_down > 0, "the mirror did not cross the delayed link"


def group_commit(bootstrap: str, group: str, topic: str, offsets: dict):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def test_a_group_fails_over_with_translated_offsets_and_skips_nothing(broker_factory, proxies):
    east = region(broker_factory, "us-east", proxies)
    west = region(broker_factory, "eu-west", proxies, delay_ms=5)
    partitions, n = 4, 4000
    create_topic(east.bootstrap, "orders", partitions)
    produce(east.bootstrap, "orders", source_records(n, partitions, "g"))
    per = n // partitions
    consumed = {p: int(per * 0.6) + p for p in range(partitions)}
    group_commit(east.bootstrap, "billing", "orders", consumed)

    create_mirror(west, east, "east", "us-east", "--groups", "billing")
    wait_caught_up(west, "east", "orders", {p: per for p in range(partitions)})

    def checkpointed():
        out = json.loads(mirror_cli(west, "checkpoints", "east", "--json").stdout)
        return out["groups"].get("billing")
    wait_until(checkpointed, 30, "a checkpoint of group billing")
    checkpoint = checkpointed()
    assert sorted((o["partition"], o["source_offset"]) for o in checkpoint["offsets"]) == \
        sorted(consumed.items()), checkpoint

    # A member of the group on the target: failing over under it is refused.
    member = Consumer({"bootstrap.servers": west.bootstrap, "group.id": "billing",
                       "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    member.subscribe(["us-east.orders"])
    wait_until(lambda: member.poll(0.2) is not None or bool(member.assignment()), 30, "the member to join")
    refused = mirror_cli(west, "failover", "east", "--group", "billing", check=False)
    assert refused.returncode != 0
    assert "active member" in refused.stderr and "group_active" in refused.stderr, refused.stderr
    member.close()

    mirror_cli(west, "failover", "east", "--group", "billing")
    source = read_topic(east.bootstrap, "orders", partitions)
    c = Consumer({"bootstrap.servers": west.bootstrap, "group.id": "billing",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe(["us-east.orders"])
    seen = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + 60
    while sum(map(len, seen.values())) < sum(per - o for o in consumed.values()):
        assert time.monotonic() < deadline, {p: len(v) for p, v in seen.items()}
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        seen[m.partition()].append(m.value())
    c.close()
    for p in range(partitions):
        # Exactly what followed the group's position at the source: nothing skipped,
        # nothing it had already processed.
        assert seen[p] == [v for (_, _, v, _, _) in source[p][consumed[p]:]], p


def test_active_active_with_identity_names_never_loops(broker_factory, proxies):
    a = region(broker_factory, "cluster-a", proxies, delay_ms=5)
    b = region(broker_factory, "cluster-b", proxies, delay_ms=5)
    for c in (a, b):
        create_topic(c.bootstrap, "events", 3)
    create_mirror(b, a, "from-a", "a", "--topics", "events", "-c", "naming=identity")
    create_mirror(a, b, "from-b", "b", "--topics", "events", "-c", "naming=identity")
    produce(a.bootstrap, "events", [{"key": b"a", "value": f"a-{i}".encode()} for i in range(300)])
    produce(b.bootstrap, "events", [{"key": b"b", "value": f"b-{i}".encode()} for i in range(300)])
    want = sorted([f"a-{i}".encode() for i in range(300)] + [f"b-{i}".encode() for i in range(300)])

    def values(c):
        return sorted(v for recs in read_topic(c.bootstrap, "events", 3).values() for (_, _, v, _, _) in recs)
    wait_until(lambda: len(values(a)) >= 600 and len(values(b)) >= 600, 60, "both sides to hold 600 records")
    # Give a loop every chance to show itself: several more fetch rounds.
    time.sleep(2)  # not a readiness wait: a window in which a loop would add records
    assert values(a) == want
    assert values(b) == want
    for cluster, name in ((a, "from-b"), (b, "from-a")):
        report = describe(cluster, name)["report"]
        assert report["loops_prevented"] == 300, report
    # Provenance: a record from A at B names A; back at A it was never written again.
    at_b = read_topic(b.bootstrap, "events", 3)
    from_a = [h for recs in at_b.values() for (_, k, _, h, _) in recs if k == b"a"]
    assert all(h == [(PROVENANCE, b"cluster-a")] for h in from_a), from_a[:3]


def test_new_topics_and_partitions_are_discovered(broker_factory, proxies):
    east = region(broker_factory, "us-east", proxies, delay_ms=5)
    west = region(broker_factory, "eu-west", proxies, delay_ms=5)
    create_topic(east.bootstrap, "orders.one", 1)
    create_mirror(west, east, "east", "us-east", "--topics", "orders\\..*")
    wait_until(lambda: "us-east.orders.one" in quiver("topic", "list", "--bootstrap", west.bootstrap).stdout,
               30, "the first target topic")
    create_topic(east.bootstrap, "orders.two", 2)
    produce(east.bootstrap, "orders.two", [{"key": b"k", "value": b"v", "partition": 1}])
    wait_caught_up(west, "east", "orders.two", {0: 0, 1: 1}, timeout=30)
    assert read_topic(west.bootstrap, "us-east.orders.two", 2)[1][0][1:3] == (b"k", b"v")
    quiver("topic", "alter", "orders.two", "--partitions", "4", "--bootstrap", east.bootstrap)
    produce(east.bootstrap, "orders.two", [{"key": b"k3", "value": b"v3", "partition": 3}])
    wait_caught_up(west, "east", "orders.two", {3: 1}, timeout=30)
    assert read_topic(west.bootstrap, "us-east.orders.two", 4)[3][0][1:3] == (b"k3", b"v3")
    # A config changed at the source follows; one set only at the target stays.
    quiver("topic", "alter", "us-east.orders.two", "--config", "min.insync.replicas=1",
           "--bootstrap", west.bootstrap)
    quiver("topic", "alter", "orders.two", "--config", "retention.ms=3600000", "--bootstrap", east.bootstrap)

    def target_configs():
        return quiver("topic", "describe", "us-east.orders.two", "--bootstrap", west.bootstrap).stdout
    wait_until(lambda: "3600000" in target_configs(), 30, "the config change to reach the target")
    assert "min.insync.replicas" in target_configs()


def test_kill_the_source_then_the_target_mid_mirror_loses_and_repeats_nothing(broker_factory, proxies):
    east = region(broker_factory, "us-east", proxies, delay_ms=5)
    west = region(broker_factory, "eu-west", proxies, delay_ms=5)
    partitions = 4
    create_topic(east.bootstrap, "orders", partitions)
    produce(east.bootstrap, "orders", source_records(20_000, partitions, "a"))
    create_mirror(west, east, "east", "us-east", "--exactly-once")
    wait_until(lambda: (describe(west, "east").get("report") or {}).get("records", 0) > 0, 30, "copying to start")
    east.kill()
    east.start()
    produce(east.bootstrap, "orders", source_records(20_000, partitions, "b"))
    wait_until(lambda: (describe(west, "east").get("report") or {}).get("records", 0) > 0, 30, "copying again")
    west.kill()
    west.start()
    produce(east.bootstrap, "orders", source_records(4_000, partitions, "c"))
    per = 44_000 // partitions
    wait_caught_up(west, "east", "orders", {p: per for p in range(partitions)}, timeout=120)
    source = read_topic(east.bootstrap, "orders", partitions)
    target = read_topic(west.bootstrap, "us-east.orders", partitions)
    for p in range(partitions):
        assert [(k, v) for (_, k, v, _, _) in target[p]] == [(k, v) for (_, k, v, _, _) in source[p]], p


def test_bad_mirror_requests_are_refused_with_the_reason(broker_factory, proxies):
    east = region(broker_factory, "us-east", proxies, delay_ms=1)
    west = region(broker_factory, "eu-west", proxies, delay_ms=1)
    api = AdminApi(west.admin)
    r = api.request("POST", "/v1/mirrors", json.dumps({"name": "m", "source": east.link.address,
                                                        "source_alias": "e", "plugin": "nope"}).encode(),
                    {"Content-Type": "application/json"})
    assert (r.status, r.body["error"]) == (404, "unknown_plugin"), r
    deploy_mirror_plugin(west)
    quic = mirror_cli(west, "create", "m", "--source", east.link.address, "--source-alias", "e",
                      "--via", "quic", check=False)
    assert quic.returncode != 0 and "--source-ca" in quic.stderr, quic.stderr
    bad = mirror_cli(west, "create", "m", "--source", east.link.address, "--source-alias", "e",
                     "-c", "naming=sideways", check=False)
    assert bad.returncode != 0 and "naming" in bad.stderr and "prefix or identity" in bad.stderr, bad.stderr
    noport = mirror_cli(west, "create", "m", "--source", "localhost", "--source-alias", "e", check=False)
    assert noport.returncode != 0 and "not host:port" in noport.stderr, noport.stderr
    # Same cluster id at both ends: refused at run time, with the fix in the reason.
    twin = broker_factory(sets={"cluster.id": "eu-west"})
    mirror_cli(west, "create", "twin", "--source", twin.bootstrap, "--source-alias", "twin")
    wait_until(lambda: "same as this cluster" in (describe(west, "twin").get("report") or {}).get("reason", ""),
               30, "the twin mirror to explain why it does not run")


def test_a_mirror_into_three_brokers_moves_when_the_broker_running_it_dies(broker_factory, cluster_factory,
                                                                            proxies):
    east = region(broker_factory, "us-east", proxies, delay_ms=5)
    west = cluster_factory(3, cluster_id="eu-west")
    partitions = 6
    create_topic(east.bootstrap, "orders", partitions)
    produce(east.bootstrap, "orders", source_records(30_000, partitions, "a"))
    first = west.broker(1)
    deploy_mirror_plugin(first)
    mirror_cli(first, "create", "east", "--source", east.link.address, "--source-alias", "us-east",
               "--exactly-once", "--discovery-interval-ms", "500")

    def runner():
        leader = west.leader_of("__quiver_mirrors", 0)
        return leader if leader in west.live_ids() else None
    wait_until(runner, 30, "__quiver_mirrors to have a leader")
    running_on = runner()

    def copying():
        # The broker running it may not have applied the mirror's creation yet: 404.
        proc = mirror_cli(west.broker(running_on), "describe", "east", "--json", check=False)
        return proc.returncode == 0 and (json.loads(proc.stdout).get("report") or {}).get("records", 0) > 0
    wait_until(copying, 30, "copying to start")
    west.kill(running_on)
    produce(east.bootstrap, "orders", source_records(10_000, partitions, "b"))
    wait_until(lambda: runner() not in (None, running_on), 60, "the mirror to move to another broker")
    taken_over = west.broker(runner())
    wait_caught_up(taken_over, "east", "orders", {p: 40_000 // partitions for p in range(partitions)})
    assert west.replicas_of("us-east.orders", 0).__len__() == 3
    source = read_topic(east.bootstrap, "orders", partitions)
    target = read_topic(taken_over.bootstrap, "us-east.orders", partitions)
    for p in range(partitions):
        # Exactly-once across the move: every record once, in order.
        assert [(k, v) for (_, k, v, _, _) in target[p]] == [(k, v) for (_, k, v, _, _) in source[p]], p
