"""Built-in partitioner plugins, deployed through the CLI: 100k keyed records per
plugin through HTTP produce land exactly where the plugin's documented function
(computed here in Python) puts them, and a Kafka consumer reads every record back
at its acknowledged partition and offset with its key, value and headers.
murmur2 agrees with what librdkafka's murmur2_random chose through the Kafka API."""

from __future__ import annotations

import json

import pytest

from clients import DeliveryLog, flush_all, producer, unique_topic
from plugins_kit import (AdminApi, FieldRoute, HASHES, create_topic, deploy_cli, deployed_version, expect_log,
                         make_key, make_records, murmur2_partition, plugin_cli, produce_all, vip_partition,
                         wasm_path)

TOTAL = 100_000


def check_placement(records, placements, expected_fn, what):
    wrong = [(i, r.key, p, expected_fn(r)) for i, (r, (p, _)) in enumerate(zip(records, placements))
             if p != expected_fn(r)]
    assert not wrong, (f"{what}: {len(wrong)} of {len(records)} records misplaced; first "
                       f"(index, key, partition, expected): {wrong[:5]}")


def deploy(broker, name, plugin, config=None):
    proc = deploy_cli(broker, name, wasm_path(plugin), config)
    assert deployed_version(proc) == 1
    return proc


def run_case(broker, api, rng, plugin, name, config, partitions, count, expected_fn, **gen):
    deploy(broker, name, plugin, config)
    topic = unique_topic(name)
    create_topic(broker, topic, partitions, {"partitioner": name})
    records = make_records(rng, count, **gen)
    placements = produce_all(api, topic, records)
    check_placement(records, placements, expected_fn, f"{name} on {topic}")
    # every partition the function can choose was chosen: the test exercised the spread
    want_used = {expected_fn(r) for r in records}
    assert {p for p, _ in placements} == want_used
    expect_log(broker.bootstrap, topic, partitions, records, placements)
    return topic, records, placements


@pytest.mark.timeout(150)
def test_plugin_murmur2_places_100k_records(broker, rng):
    api = AdminApi(broker.admin)
    run_case(broker, api, rng, "murmur2", "m2", None, 12, TOTAL, lambda r: murmur2_partition(r.key, 12))
    d = api.describe("m2").body
    assert d["status"] == {"state": "active"} and d["metrics"]["records"] == TOTAL, d
    assert d["metrics"]["errors"] == 0 and d["metrics"]["traps"] == 0, d["metrics"]


VIP_KEYS = {b"acme", b"globex", b"initech", "ünïcode".encode()}
VIP_PREFIXES = (b"gold-", b"vip:")


def vip_key(rng, i):
    k = i % 8
    if k == 0:
        return rng.choice(sorted(VIP_KEYS))  # repeated VIP keys
    if k == 1:
        return b"gold-%d" % i
    if k == 2:
        return b"vip:%d" % i
    if k == 3:  # near misses: a VIP key plus a suffix, a prefix without its separator
        return rng.choice([b"acme2", b"gold", b"gold%d" % i, b"VIP:%d" % i, b"xacme", b""])
    return make_key(rng, i)


@pytest.mark.timeout(150)
def test_plugin_vip_places_100k_records(broker, rng):
    api = AdminApi(broker.admin)
    config = {"vip.partitions": "8", "vip.keys": ",".join(k.decode() for k in sorted(VIP_KEYS)),
              "vip.prefixes": ",".join(p.decode() for p in VIP_PREFIXES)}
    fn = lambda r: vip_partition(r.key, 10, 8, VIP_KEYS, VIP_PREFIXES)  # noqa: E731
    topic, records, placements = run_case(broker, api, rng, "vip", "vip", config, 10, TOTAL, fn, key_fn=vip_key)
    vip = sum(1 for p, _ in placements if p < 8)
    assert 0.3 * TOTAL < vip < 0.6 * TOTAL, f"{vip} VIP records: the key mix did not exercise both sets"

    # null keys are never VIP: they rotate over the non-reserved partitions 8, 9
    r = api.produce(topic, [{"key": None, "value": f"n{i}"} for i in range(6)])
    assert r.status == 200, r
    parts = [o["partition"] for o in r.body["offsets"]]
    assert all(p in (8, 9) for p in parts) and all(a != b for a, b in zip(parts, parts[1:])), parts


@pytest.mark.timeout(150)
def test_plugin_hash_algorithms_place_100k_records(broker, rng):
    """One deployment per hash.algorithm (plus the default, murmur2), each on its own
    topic; 100k records in all."""
    api = AdminApi(broker.admin)
    per = TOTAL // 4
    for name, config, algorithm, partitions in [("hash-default", None, "murmur2", 16),
                                               ("hash-murmur2", {"hash.algorithm": "murmur2"}, "murmur2", 7),
                                               ("hash-fnv1a", {"hash.algorithm": "fnv1a"}, "fnv1a", 16),
                                               ("hash-crc32", {"hash.algorithm": "crc32"}, "crc32", 9)]:
        fn = HASHES[algorithm]
        run_case(broker, api, rng, "hash", name, config, partitions, per,
                 lambda r, fn=fn, n=partitions: fn(r.key, n))
    listed = {p["name"]: p for p in api.plugins()}
    assert {n: [v["config"] for v in p["versions"]] for n, p in listed.items()} == {
        "hash-default": [[]],
        "hash-murmur2": [[["hash.algorithm", "murmur2"]]],
        "hash-fnv1a": [[["hash.algorithm", "fnv1a"]]],
        "hash-crc32": [[["hash.algorithm", "crc32"]]],
    }


TIERS = ["gold", "silver", "bronze", "7", "true"]


def route_headers(rng, i):
    h = {"idx": str(i)}
    k = i % 6
    if k < 4:
        h["tier"] = rng.choice(TIERS + ["GOLD", "gold ", ""])
    elif k == 4:
        h["tier-x"] = "gold"  # a different header: no routing value
    return h


def route_value(rng, i):
    k = i % 10
    tier = [rng.choice(["gold", "silver", "bronze", "GOLD"]), 7, 8, True, False, None,
            {"tier": "gold"}, ["gold"]][k % 8]
    if k == 8:
        return b"not json " + str(i).encode()
    if k == 9:
        return json.dumps(["gold", i]).encode()  # JSON, but not an object
    doc = {"id": i, "nested": {"tier": "gold"}}
    if tier is not None or i % 20 == 5:  # sometimes the field is null, sometimes missing
        doc["tier"] = tier
    return json.dumps(doc).encode()


@pytest.mark.timeout(150)
def test_plugin_field_route_places_100k_records(broker, rng):
    """By header (with a route.default) on one topic, by JSON field (default: every
    partition) on another; 50k records each."""
    api = AdminApi(broker.admin)
    by_header = FieldRoute("gold:0-3;silver:4,5;7:6", header="tier", default="6-7")
    run_case(broker, api, rng, "field-route", "route-header", by_header.config(), 8, TOTAL // 2,
             lambda r: by_header.partition(r.key, r.value, r.headers, 8), headers_fn=route_headers)
    by_field = FieldRoute("gold:0-2;silver:3;7:4;true:5", json_field="tier")
    run_case(broker, api, rng, "field-route", "route-json", by_field.config(), 9, TOTAL // 2,
             lambda r: by_field.partition(r.key, r.value, r.headers, 9), value_fn=route_value)


@pytest.mark.timeout(150)
def test_plugin_murmur2_agrees_with_librdkafka_murmur2_random(broker, rng):
    """The same 100k keys: produced through the Kafka API by confluent-kafka with
    partitioner=murmur2_random to one topic; through HTTP produce to a topic routed by
    the murmur2 plugin and to one with the built-in partitioner. Every key lands on the
    same partition in all three."""
    partitions = 24
    api = AdminApi(broker.admin)
    deploy(broker, "m2", "murmur2")
    t_kafka, t_plugin, t_builtin = unique_topic("kafka"), unique_topic("plugin"), unique_topic("builtin")
    create_topic(broker, t_kafka, partitions)
    create_topic(broker, t_plugin, partitions, {"partitioner": "m2"})
    create_topic(broker, t_builtin, partitions)
    # librdkafka's murmur2_random hashes only non-empty keys: empty keys are left out here
    records = make_records(rng, TOTAL, key_fn=lambda rng, i: make_key(rng, i) or b"k%d" % i)
    keys = [r.key for r in records]

    p = producer(broker.bootstrap, partitioner="murmur2_random", acks="all")
    log = DeliveryLog()
    for i, k in enumerate(keys):
        while True:
            try:
                p.produce(t_kafka, key=k, value=b"v%d" % i, on_delivery=log.callback(i))
                break
            except BufferError:
                p.poll(0.05)
        if i % 5000 == 0:
            p.poll(0)
    flush_all(p)
    assert not log.errors, list(log.errors.items())[:5]
    assert len(log.ok) == TOTAL
    by_kafka = [log.ok[i][0] for i in range(TOTAL)]

    by_plugin = [pt for pt, _ in produce_all(api, t_plugin, records)]
    by_builtin = [pt for pt, _ in produce_all(api, t_builtin, records)]
    differ = [(keys[i], by_kafka[i], by_plugin[i], by_builtin[i]) for i in range(TOTAL)
              if not by_kafka[i] == by_plugin[i] == by_builtin[i]]
    assert not differ, f"{len(differ)} keys placed differently (key, kafka client, plugin, built-in): {differ[:5]}"
    assert len(set(by_kafka)) == partitions
    # and all three are the Java client's function
    check_placement(records, [(pt, 0) for pt in by_kafka], lambda r: murmur2_partition(r.key, partitions),
                    "librdkafka murmur2_random")
    out = plugin_cli(broker, "list").stdout
    assert "m2" in out and "active" in out, out
