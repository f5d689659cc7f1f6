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
describe shows went up.

When the leader of an input partition is cut off from the controller by the network
(nftables in network namespaces) but still reaches the brokers that lead the outputs,
it keeps running as a zombie: it cannot learn that it lost the partition, and goes on
writing with its old epoch until the new leader's task has written with a newer one;
then the outputs refuse it and it stops, still cut off. The output holds every input
exactly once."""

from __future__ import annotations

import json
import re
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


def numbered(i: int) -> dict:
    # ~10 KiB values: a runner step (1 MiB of input) holds ~100 records, so the task
    # moves in many steps and a cut lands mid-stream
    return {"key": b"k%d" % i, "value": b"%d:" % i + b"x" * 10_000}


def test_a_leader_cut_off_from_the_controller_is_fenced_by_the_outputs(cluster_factory):
    c = cluster_factory(3, netns=True)
    topo = c.topology
    ctl = c.wait_controller()
    cut_off, out_leader = [i for i in c.ids if i != ctl]
    apis = {i: TransformApi(c.broker(i).admin) for i in c.ids}
    from plugins_kit import wasm_path
    r = c.call(apis[ctl].deploy, "hostile", wasm_path("transform-hostile").read_bytes(), kind="transform")
    assert r.status == 201, r
    src, dst, dlq = "zombie-in", "zombie-out", "zombie-dlq"
    # the input led by the broker to be cut off; the outputs led by the third broker
    # and replicated away from it, so the cut-off broker still reaches their leader
    # and nothing of theirs depends on it
    topics = [NewTopic(src, num_partitions=1, replication_factor=-1,
                       replica_assignment=[[cut_off, ctl, out_leader]], config={"min.insync.replicas": "2"})]
    for t in (dst, dlq):
        topics.append(NewTopic(t, num_partitions=1, replication_factor=-1,
                               replica_assignment=[[out_leader, ctl]], config={"min.insync.replicas": "2"}))
    for f in c.admin().create_topics(topics, operation_timeout=30).values():
        f.result(timeout=30)
    c.wait_topic(src, 1, 3)
    for t in (dst, dlq):
        c.wait_topic(t, 1, 2)
    assert c.wait_leader(src, 0) == cut_off
    n = 3000
    placed = c.call(produce, c.bootstrap, src, [numbered(i) for i in range(n)], acks="all")
    assert [o for _, o in placed] == list(range(n))
    # every 50th record traps: the task retries it with backoff before it goes to the
    # dead-letter topic, so each step takes a while
    r = c.call(apis[ctl].deploy_transform, {"name": "z", "plugin": "hostile", "input": src, "outputs": [dst],
                                            "dead_letter": dlq, "config": {"behaviour": "trap-every", "every": "50"}})
    assert r.status == 201, r

    def report(i):
        reply = c.call(apis[i].transform, "z")
        return reply.body["partitions"][0] if reply.status == 200 and reply.body["partitions"] else None

    def mid_stream():
        p = report(cut_off)
        return p and p["state"] == "running" and 300 <= p["position"] < n // 2 and p
    first = c.wait(mid_stream, 60, f"the task on broker {cut_off} to be mid-stream")

    topo.isolate(f"b{cut_off}", peers=[f"b{ctl}"])
    try:
        new = c.wait_leader(src, 0, exclude=[cut_off], via=ctl, timeout=30)
        # still cut off, the old leader is stopped by the outputs: the new leader's
        # task wrote with a newer producer epoch, and the output partitions refused
        # the old one's next write
        zombie = c.wait(lambda: (p := report(cut_off)) and p["state"] == "fenced" and p, 60,
                        f"the task on the cut-off broker {cut_off} to be fenced")
        assert c.leader_of(src, 0, via=cut_off) == cut_off, "the cut-off broker learnt it lost the partition"
        assert zombie["producer_epoch"] == first["producer_epoch"], (first, zombie)
        print(f"cut-off task fenced at position {zombie['position']} (epoch {zombie['producer_epoch']}): "
              f"{zombie.get('reason')}")
        # by an output partition, not by news of the leadership it cannot receive
        assert re.search(rf"of '({dst}|{dlq})' holds producer \d+'s epoch \d+, newer than this writer's "
                         rf"{first['producer_epoch']}$", zombie["reason"] or ""), zombie

        def done():
            p = report(new)
            return p and p["state"] == "running" and p["position"] == n and p
        p = c.wait(done, 120, f"the task on the new leader {new} to reach the end")
        assert p["producer_epoch"] > first["producer_epoch"], (first, p)
    finally:
        topo.heal(f"b{cut_off}")
    c.wait_isr(src, 0, lambda isr: cut_off in isr, 60, f"to take {cut_off} back")

    def failing(i):
        return (i + 1) % 50 == 0
    out = c.call(read_topic, c.bootstrap, dst, 1)[0]
    assert [k for _, k, *_ in out] == [b"k%d" % i for i in range(n) if not failing(i)]
    assert all(v == numbered(int(k[1:]))["value"] for _, k, v, *_ in out)
    dead = c.call(read_topic, c.bootstrap, dlq, 1)[0]
    assert [k for _, k, *_ in dead] == [b"k%d" % i for i in range(n) if failing(i)]
