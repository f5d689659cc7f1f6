"""Transforms in a cluster. Each input partition's task runs on that partition's
leader and writes to output partitions led anywhere (over the Kafka protocol to other
brokers, acknowledged by their in-sync replicas). When the leader of an input partition
is killed -9 mid-stream, the partition's new leader takes the task over from the
position in its own replica of `__quiver_transforms`, and the output is still exactly
the redacted input: every record once, none missing.

When the leader of an input partition is frozen (SIGSTOP) mid-stream, another replica
leads and its task takes over with a higher producer epoch; the frozen one, woken up,
still believes it leads and may go on writing, but with the older epoch, which the
output partitions refuse. The output is exactly the redacted input and the epoch
describe shows went up."""

from __future__ import annotations

import json
import threading
import time

import pytest
from confluent_kafka.admin import NewTopic

from transforms_kit import TransformApi, produce, read_topic

pytestmark = pytest.mark.timeout(420)

RECORDS = 150_000


def doc(i: int) -> bytes:
    return json.dumps({"id": i, "user": {"email": f"u{i}@x.io"}}).encode()


def redacted(i: int) -> bytes:
    return json.dumps({"id": i, "user": {"email": "***"}}, separators=(",", ":")).encode()


def partitions_everywhere(c, apis: dict, name: str) -> dict:
    """Each input partition's report, from whichever live broker runs it."""
    out = {}
    for i in c.live_ids():
        r = apis[i].transform(name)
        if r.status == 200:
            for p in r.body["partitions"]:
                out[p["partition"]] = (i, p)
    return out


def assert_each_input_once(c, dst: str, n: int):
    """The output topic holds each of the n inputs exactly once, redacted."""
    got = read_topic(c.bootstrap, dst, 3)
    seen = {}
    for part, recs in got.items():
        for offset, key, value, *_ in recs:
            i = int(key[1:])
            assert i not in seen, f"record {i} written twice: {seen[i]} and {(part, offset)}"
            seen[i] = (part, offset)
            assert value == redacted(i), (i, value)
    missing = [i for i in range(n) if i not in seen]
    assert not missing, f"{len(missing)} records missing, first {missing[:10]}"


def test_input_leader_killed_mid_stream_exactly_once(cluster_factory):
    c = cluster_factory(3)
    apis = {i: TransformApi(c.broker(i).admin) for i in c.ids}
    from plugins_kit import wasm_path
    r = apis[1].deploy("redact", wasm_path("json-redact").read_bytes(), kind="transform")
    assert r.status == 201, r
    src, dst = "orders", "orders.clean"
    c.create_topic(src, 3, rf=3)
    c.create_topic(dst, 3, rf=3)
    r = apis[2].deploy_transform({"name": "clean", "plugin": "redact", "input": src, "outputs": [dst],
                                  "config": {"paths": "user.email"}})
    assert r.status == 201, r

    # input arrives while the transform runs: about 25k records a second for 6 s
    placed = []
    errors = []

    def feed():
        try:
            for start in range(0, RECORDS, 5000):
                t0 = time.monotonic()
                placed.extend(produce(c.bootstrap, src, [{"key": b"k%d" % i, "value": doc(i)}
                                                         for i in range(start, start + 5000)], acks="all"))
                time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))
        except Exception as e:  # reported by the test, not lost in the thread
            errors.append(e)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    # the task of each partition runs on its leader
    def running_on_leaders():
        seen = partitions_everywhere(c, apis, "clean")
        return len(seen) == 3 and all(seen[p][0] == c.leader_of(src, p) for p in range(3))
    c.wait(running_on_leaders, 60, "every input partition's task to run on its leader")
    c.wait(lambda: len(placed) >= RECORDS // 4, 60, "a quarter of the input to be written")
    victim = c.leader_of(src, 0)
    c.kill(victim)
    new_leader = c.wait_leader(src, 0, exclude=[victim])
    feeder.join(240)
    assert not feeder.is_alive() and not errors, errors
    assert len(placed) == RECORDS
    counts = {p: sum(1 for q, _ in placed if q == p) for p in range(3)}

    def caught_up():
        seen = partitions_everywhere(c, apis, "clean")
        return len(seen) == 3 and all(
            seen[p][1]["state"] == "running" and seen[p][1]["position"] == counts[p] for p in range(3))
    c.wait(caught_up, 240, "every input partition to be transformed to its end")
    assert partitions_everywhere(c, apis, "clean")[0][0] == new_leader

    c.restart(victim)
    c.wait_formed()
    assert_each_input_once(c, dst, RECORDS)


def test_input_leadership_moves_epoch_goes_up_outputs_exact(cluster_factory):
    c = cluster_factory(3)
    apis = {i: TransformApi(c.broker(i).admin) for i in c.ids}
    from plugins_kit import wasm_path
    r = apis[1].deploy("redact", wasm_path("json-redact").read_bytes(), kind="transform")
    assert r.status == 201, r
    src, dst = "moving", "moving.clean"
    c.create_topic(src, 1, rf=3)
    old = c.wait_leader(src, 0)
    # the outputs are led elsewhere: the frozen leader's task writes to them over the
    # network, as a task cut off from the cluster would to the partitions it still reaches
    others = [i for i in c.ids if i != old]
    futs = c.admin().create_topics([NewTopic(dst, num_partitions=3, replication_factor=-1,
                                             replica_assignment=[others, others[::-1], others],
                                             config={"min.insync.replicas": "2"})], operation_timeout=30)
    futs[dst].result(timeout=30)
    c.wait_topic(dst, 3, 2)
    n = 60_000
    placed = produce(c.bootstrap, src, [{"key": b"k%d" % i, "value": doc(i)} for i in range(n)], acks="all")
    assert [o for _, o in placed] == list(range(n))
    r = apis[2].deploy_transform({"name": "mv", "plugin": "redact", "input": src, "outputs": [dst],
                                  "config": {"paths": "user.email"}})
    assert r.status == 201, r

    # freeze the input's leader while its task is (most likely) mid-stream
    def started():
        seen = partitions_everywhere(c, apis, "mv")
        return 0 in seen and seen[0][1]["state"] == "running" and seen[0][1]["position"] > 0 and seen[0]
    old, first = c.wait(started, 60, "the task to start on the input's leader")
    c.pause(old)
    try:
        c.wait_leader(src, 0, exclude=[old], via=[i for i in c.ids if i != old][0])
    finally:
        c.resume(old)

    def caught_up():
        seen = partitions_everywhere(c, apis, "mv")
        return (0 in seen and seen[0][1]["state"] == "running" and seen[0][1]["position"] == n
                and seen[0][1]["producer_epoch"] > first["producer_epoch"] and seen[0])
    runner, p = c.wait(caught_up, 120, "a task of a later leadership to transform the input to its end")
    assert p["producer_epoch"] > first["producer_epoch"] >= 0, (first, p)
    # every other broker has given the partition up (it learnt it lost it) or was fenced
    c.wait(lambda: all(q["state"] == "fenced" for i in c.ids if i != runner
                       for q in apis[i].transform("mv").body["partitions"]), 30,
           f"brokers other than {runner} to give the partition up")

    assert_each_input_once(c, dst, n)
