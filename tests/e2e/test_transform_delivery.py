"""What a transform delivers. Exactly-once: a million records through json-redact
while the broker is killed -9 twice mid-stream, and the output is exactly the redacted
input — every record once, none missing, in input order per partition. At-least-once
(a transform deployed as not deterministic): after the same kills nothing is missing
and order per key holds, duplicates allowed. `split` routes every record to the output
its header names; `repartition` lets the output topic's `vip` partitioner place every
record a Kafka producer wrote to an ingest topic."""

from __future__ import annotations

import json
import os

import pytest

from clients import unique_topic
from harness import wait_until
from plugins_kit import create_topic, deploy_cli, vip_partition, wasm_path
from transforms_kit import TransformApi, deploy_plugin, produce, read_topic, wait_caught_up

RECORDS = int(os.environ.get("QUIVER_TRANSFORM_RECORDS", "1000000"))


def doc(i: int) -> bytes:
    return json.dumps({"id": i, "user": {"email": f"u{i}@x.io", "n": i}}).encode()


def redacted(i: int) -> bytes:
    return json.dumps({"id": i, "user": {"email": "***", "n": i}}, separators=(",", ":")).encode()


def kill_twice_while_running(broker, api: TransformApi, name: str, total: int):
    """Kills the broker -9 once the transform has done a fifth of the input and again
    after the restart once it has done more, so both crashes land mid-stream."""
    for share in (0.2, 0.6):
        def progressed():
            r = api.transform(name)
            return r.status == 200 and sum(p["position"] for p in r.body["partitions"]) >= share * total
        wait_until(progressed, 120, f"the transform to pass {share:.0%} of the input", interval=0.01)
        broker.kill()
        broker.start()


@pytest.mark.timeout(600)
def test_exactly_once_through_two_kills(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst = unique_topic("eos-in"), unique_topic("eos-out")
    create_topic(broker, src, 4)
    create_topic(broker, dst, 4)
    deploy_plugin(broker, "redact", "json-redact")
    placed = produce(broker.bootstrap, src, [(b"k%d" % i, doc(i), None) for i in range(RECORDS)])
    r = api.deploy_transform(name="eos", plugin="redact", input=src, outputs=[dst], config={"paths": "user.email"})
    assert r.status == 201, r
    kill_twice_while_running(broker, api, "eos", RECORDS)
    counts = {p: sum(1 for q, _ in placed if q == p) for p in range(4)}
    wait_caught_up(api, "eos", counts, timeout=300)

    got = read_topic(broker.bootstrap, dst, 4, timeout=300)
    seen = {}
    for p, recs in got.items():
        for offset, key, value, _ in recs:
            i = int(key[1:])
            assert i not in seen, f"record {i} written twice: {seen[i]} and {(p, offset)}"
            seen[i] = (p, offset)
            assert value == redacted(i), (i, value)
    missing = [i for i in range(RECORDS) if i not in seen]
    assert not missing, f"{len(missing)} records missing, first {missing[:10]}"
    # per input partition, input order survives in every output partition
    for src_p in range(4):
        ids = [i for i, (p, _) in enumerate(placed) if p == src_p]
        for dst_p in range(4):
            offsets = [seen[i][1] for i in ids if seen[i][0] == dst_p]
            assert offsets == sorted(offsets), (src_p, dst_p)


@pytest.mark.timeout(600)
def test_at_least_once_through_two_kills(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    total = max(RECORDS // 4, 1000)
    src, dst = unique_topic("alo-in"), unique_topic("alo-out")
    create_topic(broker, src, 2)
    create_topic(broker, dst, 2)
    deploy_plugin(broker, "redact", "json-redact")
    # 100 keys, each written in order: order per key must hold in the output
    placed = produce(broker.bootstrap, src, [(b"k%d" % (i % 100), doc(i), None) for i in range(total)])
    r = api.deploy_transform(name="alo", plugin="redact", input=src, outputs=[dst],
                             config={"paths": "user.email"}, deterministic=False)
    assert (r.status, r.body["delivery"]) == (201, "at-least-once"), r
    kill_twice_while_running(broker, api, "alo", total)
    counts = {p: sum(1 for q, _ in placed if q == p) for p in range(2)}
    wait_caught_up(api, "alo", counts, timeout=300)
    got = read_topic(broker.bootstrap, dst, 2, timeout=300)
    ids = []
    last_per_key = {}
    for recs in got.values():
        for _, key, value, _ in recs:
            i = json.loads(value)["id"]
            assert value == redacted(i)
            ids.append(i)
            # a replay restarts a key's run from an earlier record, never skips ahead
            prev = last_per_key.get(key, -1)
            assert i > prev or i in ids[:-1], (key, prev, i)
            last_per_key[key] = i
    assert set(ids) == set(range(total)), f"{total - len(set(ids))} records missing"


@pytest.mark.timeout(180)
def test_split_routes_each_record_to_the_output_its_header_names(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src = unique_topic("orders")
    outs = {name: unique_topic(f"orders-{name}") for name in ("eu", "us", "other")}
    create_topic(broker, src, 2)
    for t in outs.values():
        create_topic(broker, t, 3)
    deploy_plugin(broker, "split", "split")
    regions = ["eu", "us", "apac", None]
    records = []
    for i in range(4000):
        region = regions[i % 4]
        headers = [("region", region.encode())] if region else []
        headers.append(("seq", b"%d" % i))
        records.append((b"k%d" % i, b"v%d" % i, headers))
    placed = produce(broker.bootstrap, src, records)
    r = api.deploy_transform(name="split", plugin="split", input=src,
                             outputs=[outs["eu"], outs["us"], outs["other"]],
                             config={"header": "region", "route.eu": outs["eu"], "route.us": outs["us"],
                                     "default": outs["other"]})
    assert r.status == 201, r
    wait_caught_up(api, "split", {p: sum(1 for q, _ in placed if q == p) for p in range(2)})
    for name, topic in outs.items():
        got = read_topic(broker.bootstrap, topic, 3)
        keys = set()
        for recs in got.values():
            seqs = []
            for _, key, value, headers in recs:
                i = int(key[1:])
                region = regions[i % 4]
                want = name if region in ("eu", "us") else "other"
                assert want == name, (key, name)
                assert value == b"v%d" % i and headers == records[i][2], (key, headers)
                keys.add(key)
                seqs.append(i)
            # each output partition holds its records in input order per input partition
            for src_p in range(2):
                mine = [i for i in seqs if placed[i][0] == src_p]
                assert mine == sorted(mine)
        expected = {b"k%d" % i for i in range(4000)
                    if (regions[i % 4] if regions[i % 4] in ("eu", "us") else "other") == name}
        assert keys == expected, (name, len(keys), len(expected))


@pytest.mark.timeout(180)
def test_repartition_lets_the_output_partitioner_place_kafka_records(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    ingest, placed_topic = unique_topic("ingest"), unique_topic("placed")
    create_topic(broker, ingest, 3)
    deploy_cli(broker, "vip", wasm_path("vip"), {"vip.partitions": "2", "vip.keys": "acme,globex",
                                                 "vip.prefixes": "gold-"})
    create_topic(broker, placed_topic, 6, {"partitioner": "vip"})
    deploy_plugin(broker, "repartition", "repartition")
    keys = [b"acme", b"globex", b"gold-1", b"gold-22"] + [b"cust-%d" % i for i in range(300)]
    records = [(keys[i % len(keys)], b"v%d" % i, [("n", b"%d" % i)]) for i in range(3000)]
    placed = produce(broker.bootstrap, ingest, records)
    r = api.deploy_transform(name="place", plugin="repartition", input=ingest, outputs=[placed_topic])
    assert r.status == 201, r
    wait_caught_up(api, "place", {p: sum(1 for q, _ in placed if q == p) for p in range(3)})
    got = read_topic(broker.bootstrap, placed_topic, 6)
    n = 0
    for p, recs in got.items():
        for _, key, value, headers in recs:
            want = vip_partition(key, 6, 2, {b"acme", b"globex"}, (b"gold-",))
            assert p == want, (key, p, want)
            i = int(value[1:])
            assert headers == [("n", b"%d" % i)] and key == keys[i % len(keys)]
            n += 1
    assert n == 3000
