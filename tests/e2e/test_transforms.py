"""In-broker record transforms, as a user drives and sees them.

- lifecycle: a transform plugin and a transform deployed with the CLI; list and describe
  show them; every record produced with confluent-kafka comes out redacted exactly as
  computed here independently, with its key, headers and timestamp, in input order, in
  the partition murmur2 of its key picks; pause (the position stays while input keeps
  arriving), resume (it catches up), remove (204; then 404), a plugin in use cannot be
  removed (409); once pause/remove have answered nothing more is written; a removed
  name deployed again starts afresh; repeated header names survive a transform;
- every refused deploy, with its code and exact message (API and CLI);
- start positions: latest, offset:N, timestamp:MS;
- exactly-once through two kill -9s (a million records by default), and at-least-once
  through two kill -9s (nothing missing, order per key kept, duplicates allowed);
- split to three outputs by a header (and by a JSON field, without a default); filter;
- repartition into a topic placed by the `vip` partitioner;
- failing records: dead-letter topic (trap and plugin-reported failure) with the
  quiver.* headers, a run of records the plugin rejects, and the stop policy (stops at
  the record, position stays, resume stops there again);
- hostile plugins (loop, memory bomb, amplification) end in a defined state naming the
  cause, while a Kafka producer and consumer on the same input topic keep working and
  the broker neither exits nor panics;
- limits per transform: two transforms of one plugin with different memory or output
  caps get their own (one stops at its cap, the other writes every record), describe
  shows each limit and whose setting it is, and out-of-range limits are refused.

Every assertion is on what a client or the operator sees: the records in the topics and
what the admin API / CLI report. Record counts: QUIVER_TRANSFORM_RECORDS (default
1,000,000) for the two delivery tests under kill -9.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from array import array
from typing import Callable

import pytest
from confluent_kafka import TopicPartition

from clients import consumer, producer, unique_topic
from harness import wait_until
from plugins_kit import create_topic, deploy_cli, murmur2_partition, plugin_cli, vip_partition, wasm_path

from transforms_kit import (TransformApi, transform_cli, deploy_transform_plugin, produce, end_offsets, scan_topic, read_topic, describe, try_describe, wait_caught_up, wait_all_in_state, counts_of, by_input_partition)

RECORDS = int(os.environ.get("QUIVER_TRANSFORM_RECORDS", "1000000"))


def assert_transformed(got: dict, expected_per_input: dict, out_partition: Callable, what: str,
                       ident: Callable = lambda rec: rec[0]):
    """`got` ({output partition: [(offset, key, value, headers, ts)]}) holds exactly the
    expected outputs: every expected record once, each in the output partition
    out_partition(record) names (an int, or a collection of allowed ones), and the
    records of each input partition in input order within every output partition.
    expected_per_input maps an input partition to its expected outputs (key, value,
    headers, timestamp) in input order; ident(record) is unique per record (the key by
    default)."""
    where = {}
    for p, recs in got.items():
        for idx, (offset, key, value, headers, ts) in enumerate(recs):
            rec = (key, value, headers, ts)
            i = ident(rec)
            assert i not in where, f"{what}: {i!r} written twice: {where[i][:2]} and {(p, offset)}"
            where[i] = (p, idx, rec)
    wanted = set()
    for src_p, expected in expected_per_input.items():
        last = {}
        for rec in expected:
            i = ident(rec)
            wanted.add(i)
            assert i in where, f"{what}: the output of {i!r} (input partition {src_p}) is missing"
            p, idx, seen = where[i]
            assert seen == rec, f"{what}: {i!r}: read {seen!r}, expected {rec!r}"
            allowed = out_partition(rec)
            assert p == allowed if isinstance(allowed, int) else p in allowed, \
                f"{what}: {i!r} in partition {p}, expected {allowed}"
            assert idx > last.get(p, -1), f"{what}: input partition {src_p} reordered in output partition {p} at {i!r}"
            last[p] = idx
    extra = set(where) - wanted
    assert not extra, f"{what}: {len(extra)} unexpected records, e.g. {sorted(extra)[:3]}"


# --- json-redact's function, independently ------------------------------------------------------


def redact(value: bytes, paths: list, mode: str = "mask", mask: str = "***") -> bytes:
    """json-redact as documented: for each dotted path whose parents are objects and whose
    field exists, replace its value by the mask string (mask) or remove it (drop); key
    order kept; compact JSON, non-ASCII as is."""
    doc = json.loads(value)
    for path in paths:
        *parents, last = path.split(".")
        current = doc
        for part in parents:
            current = current.get(part) if isinstance(current, dict) else None
        if isinstance(current, dict) and last in current:
            if mode == "mask":
                current[last] = mask
            else:
                del current[last]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def order_doc(i: int) -> dict:
    """JSON documents of several shapes: nested fields to redact, key orders that are not
    sorted, missing paths, parents that are not objects, fields that are objects,
    escapes and non-ASCII text."""
    kind = i % 6
    if kind == 0:
        return {"id": i, "user": {"name": f"n{i}", "email": f"u{i}@example.com", "tags": ["a", "b"]},
                "card": {"number": f"4111-{i:08d}", "exp": "12/29"}, "total": i * 3}
    if kind == 1:
        return {"zeta": True, "user": {"email": f"z{i}@example.org", "name": "Zoë 漢字 🙂"}, "alpha": None, "id": i}
    if kind == 2:
        return {"id": i, "user": {"name": "no email here"}, "card": {"exp": "01/30"}}
    if kind == 3:
        return {"id": i, "user": "bob", "card": {"number": i}}
    if kind == 4:
        return {"user": {"email": {"primary": "p@x", "alt": ["a@x", "b@x"]}}, "card": {"number": [1, 2]}, "id": i}
    return {"id": i, "note": "line1\nline2\t\"q\" \\ \u0001 / é", "user": {"email": "e@x"},
            "n": [1, -2, 0, 1.5, {"x": None}], "card": None}


def order_records(start: int, n: int, base_ts: int) -> list:
    out = []
    for i in range(start, start + n):
        headers = [("trace", b"t-%d" % i), ("hop", b"a")]
        if i % 5 == 0:
            headers.append(("empty", None))
        if i % 3 == 0:
            headers.append(("binary", bytes(range(256))))
        # input JSON with spaces, and half of it with \u escapes: the output is compact UTF-8
        value = json.dumps(order_doc(i), ensure_ascii=(i % 2 == 0)).encode()
        out.append({"key": b"order-%d" % i, "value": value, "headers": headers, "timestamp": base_ts + i})
    return out


def expected_outputs(records: list, placed: list, fn: Callable[[bytes], bytes]) -> dict:
    return {p: [(r["key"], fn(r["value"]), r["headers"], r["timestamp"]) for r in recs]
            for p, recs in by_input_partition(records, placed).items()}


# --- 1. lifecycle -----------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_lifecycle_with_the_cli_and_the_api(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst, dst2 = unique_topic("orders"), unique_topic("orders-clean"), unique_topic("orders-slim")
    create_topic(broker, src, 3)
    create_topic(broker, dst, 4)
    create_topic(broker, dst2, 2)
    out = deploy_transform_plugin(broker, "redact", "json-redact")
    assert out["version"] == 1, out
    # a record's output partition: murmur2 of its key, like the Java client
    clean_partition = lambda rec: murmur2_partition(rec[0], 4)  # noqa: E731
    slim_partition = lambda rec: murmur2_partition(rec[0], 2)  # noqa: E731
    clean = lambda v: redact(v, ["user.email", "card.number"], mask="<hidden>")  # noqa: E731
    slim = lambda v: redact(v, ["user.email", "card"], mode="drop")  # noqa: E731

    base_ts = int(time.time() * 1000) - 3_600_000
    records = order_records(0, 3000, base_ts)
    placed = produce(broker.bootstrap, src, records)

    before = int(time.time() * 1000)
    proc = transform_cli(broker, "deploy", "--name", "clean", "--plugin", "redact", "--input", src,
                         "--output", dst, "--config", "paths=user.email,card.number", "--config", "mask=<hidden>",
                         "--json")
    deployed = json.loads(proc.stdout)
    after = int(time.time() * 1000)
    created = deployed.pop("created_ms")
    assert before <= created <= after, (before, created, after)
    spec = {k: deployed[k] for k in ("name", "plugin", "input", "outputs", "from", "config", "deterministic",
                                     "delivery", "on_error", "dead_letter", "max_amplification", "paused")}
    assert spec == {"name": "clean", "plugin": "redact", "input": src, "outputs": [dst], "from": "earliest",
                    "config": {"paths": "user.email,card.number", "mask": "<hidden>"}, "deterministic": True,
                    "delivery": "exactly-once", "on_error": "stop", "dead_letter": None, "max_amplification": 100,
                    "paused": False}, deployed
    # a second transform on the same input (over the API): a witness that input is processed
    r = api.deploy_transform({"name": "slim", "plugin": "redact", "input": src, "outputs": [dst2],
                              "config": {"paths": "user.email,card", "mode": "drop"}})
    assert r.status == 201 and r.body["name"] == "slim", r

    counts = counts_of(placed, 3)
    body = wait_caught_up(api, "clean", counts)
    assert (body["status"], body["records_in"], body["records_out"], body["lag"], body["errors"]) == \
        ("running", 3000, 3000, 0, 0), body
    for p in body["partitions"]:
        n = counts[p["partition"]]
        assert (p["records_in"], p["records_out"], p["lag"], p["errors"], p["plugin_version"]) == (n, n, 0, 0, 1), p
    wait_caught_up(api, "slim", counts)
    assert_transformed(read_topic(broker.bootstrap, dst, 4), expected_outputs(records, placed, clean),
                       clean_partition, "clean")
    assert_transformed(read_topic(broker.bootstrap, dst2, 2), expected_outputs(records, placed, slim),
                       slim_partition, "slim")

    # list and describe, as JSON and as text
    listed = json.loads(transform_cli(broker, "list", "--json").stdout)["transforms"]
    assert [(t["name"], t["plugin"], t["input"], t["outputs"], t["status"]) for t in listed] == \
        [("clean", "redact", src, [dst], "running"), ("slim", "redact", src, [dst2], "running")], listed
    text = transform_cli(broker, "list").stdout
    assert re.search(rf"^clean\s+redact\s+{re.escape(src)}\s+running\s+3000\s+3000\s+0$", text, re.M), text
    described = json.loads(transform_cli(broker, "describe", "clean", "--json").stdout)
    assert (described["name"], described["status"], described["records_in"]) == ("clean", "running", 3000)
    text = transform_cli(broker, "describe", "clean").stdout
    for line in ("transform:  clean", "plugin:     redact", f"input:      {src}", f"outputs:    {dst}",
                 "delivery:   exactly-once", "on error:   stop", "status:     running",
                 "records:    3000 in, 3000 out, 0 dead letters, 0 errors, lag 0"):
        assert line in text.splitlines(), (line, text)
    for p in range(3):
        # ... EPOCH: the input partition's first leader epoch, 0
        assert re.search(rf"^\s+{p} running\s+{counts[p]}\s+{counts[p]}\s+0\s+\d+\s+{counts[p]}\s+{counts[p]}\s+0\s*$",
                         text, re.M), text
    assert re.search(r"^latency:    p50 \d+ ms, p99 \d+ ms \(", text, re.M), text

    # paused: the state says so, and the position stays while input arrives (the witness
    # shows that input was there to process)
    proc = transform_cli(broker, "pause", "clean")
    assert proc.stdout.strip() == "paused transform 'clean'", proc.stdout
    paused = wait_all_in_state(api, "clean", 3, ("paused",))
    assert (paused["paused"], paused["status"]) == (True, "paused"), paused
    positions = {p["partition"]: p["position"] for p in paused["partitions"]}
    assert positions == counts, paused
    dst_ends = end_offsets(broker.bootstrap, dst, 4)
    more = order_records(3000, 900, base_ts)
    placed_more = produce(broker.bootstrap, src, more)
    counts = counts_of(placed + placed_more, 3)
    wait_caught_up(api, "slim", counts)
    paused = describe(api, "clean")
    assert paused["status"] == "paused" and all(p["state"] == "paused" for p in paused["partitions"]), paused
    assert {p["partition"]: p["position"] for p in paused["partitions"]} == positions, paused
    assert end_offsets(broker.bootstrap, dst, 4) == dst_ends, "a paused transform wrote output"
    assert "status:     paused" in transform_cli(broker, "describe", "clean").stdout.splitlines()

    proc = transform_cli(broker, "resume", "clean")
    assert proc.stdout.strip() == "resumed transform 'clean'", proc.stdout
    body = wait_caught_up(api, "clean", counts)
    assert (body["paused"], body["status"]) == (False, "running"), body
    everything, at = records + more, placed + placed_more
    assert_transformed(read_topic(broker.bootstrap, dst, 4), expected_outputs(everything, at, clean),
                       clean_partition, "clean after resume")

    # a plugin in use cannot be removed
    proc = plugin_cli(broker, "remove", "redact", check=False)
    message = "plugin 'redact' is run by transform(s) clean, slim; remove them first"
    assert proc.returncode != 0 and f"{message} (plugin_in_use, HTTP 409)" in proc.stderr, proc.stderr
    r = api.remove("redact")
    assert (r.status, r.code, r.message) == (409, "plugin_in_use", message), r

    # removed: 204, then unknown; its output stays
    r = api.remove_transform("clean")
    assert (r.status, r.body) == (204, None), r
    r = api.transform("clean")
    assert (r.status, r.code, r.message) == (404, "unknown_transform", "transform 'clean' does not exist"), r
    proc = transform_cli(broker, "describe", "clean", check=False)
    assert proc.returncode != 0 and \
        "transform 'clean' does not exist (unknown_transform, HTTP 404)" in proc.stderr, proc.stderr
    assert [t["name"] for t in api.transforms()] == ["slim"]
    assert sum(end_offsets(broker.bootstrap, dst, 4).values()) == 3900, "the output did not stay"

    proc = transform_cli(broker, "remove", "slim")
    assert proc.stdout.strip() == "removed transform 'slim'", proc.stdout
    assert api.transforms() == []
    assert json.loads(transform_cli(broker, "list", "--json").stdout) == {"transforms": []}
    plugin_cli(broker, "remove", "redact")
    assert api.describe("redact").status == 404
    assert broker.alive()


@pytest.mark.timeout(120)
def test_pause_and_remove_take_effect_when_acknowledged(broker_factory):
    """Once `pause` or `remove` has answered, the transform writes nothing more: records
    produced right after are not transformed (a third transform on the same input shows
    they were there to be processed)."""
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, paused_out, removed_out, witness_out = (unique_topic(n) for n in ("in", "paused", "removed", "witness"))
    for t in (src, paused_out, removed_out, witness_out):
        create_topic(broker, t, 2)
    deploy_transform_plugin(broker, "redact", "json-redact")
    # one producer, connected and warm, so the records after the pause/remove go out at once
    p = producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 0})
    acked = []

    def send(records):
        for r in records:
            p.produce(src, key=r["key"], value=r["value"], partition=int(r["key"].split(b"-")[1]) % 2,
                      on_delivery=lambda err, msg: acked.append((err, msg.partition())))
        assert p.flush(30) == 0

    try:
        send(order_records(0, 200, int(time.time() * 1000)))
        for name, out in (("p", paused_out), ("r", removed_out), ("w", witness_out)):
            r = api.deploy_transform({"name": name, "plugin": "redact", "input": src, "outputs": [out],
                                      "config": {"paths": "user.email"}})
            assert r.status == 201, r
        for name in ("p", "r", "w"):
            wait_caught_up(api, name, {0: 100, 1: 100})
        r = api.pause("p")
        assert (r.status, r.body["paused"], r.body["status"]) == (200, True, "paused"), r
        r = api.remove_transform("r")
        assert r.status == 204, r
        send(order_records(200, 2000, int(time.time() * 1000)))
        assert [e for e, _ in acked] == [None] * 2200
        wait_caught_up(api, "w", {0: 1100, 1: 1100})
        wait_all_in_state(api, "p", 2, ("paused",))
        written = {name: sum(end_offsets(broker.bootstrap, out, 2).values())
                   for name, out in (("paused", paused_out), ("removed", removed_out))}
        assert written == {"paused": 200, "removed": 200}, \
            f"output records after the acknowledged pause/remove (200 before): {written}"
    finally:
        p = None  # the producer goes before the broker does


@pytest.mark.timeout(120)
def test_a_removed_transform_name_deployed_again_starts_afresh(broker_factory):
    """Removing a transform and deploying one under the same name right away (what an
    operator does to change its outputs) starts the new one from its `from`, not from
    the old one's position."""
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, first, second = unique_topic("in"), unique_topic("first"), unique_topic("second")
    for t in (src, first, second):
        create_topic(broker, t, 1)
    deploy_transform_plugin(broker, "redact", "json-redact")
    records = order_records(0, 1000, int(time.time() * 1000))
    placed = produce(broker.bootstrap, src, records)
    body = {"name": "t", "plugin": "redact", "input": src, "outputs": [first], "config": {"paths": "user.email"}}
    assert api.deploy_transform(body).status == 201
    wait_caught_up(api, "t", {0: 1000})
    assert api.remove_transform("t").status == 204
    r = api.deploy_transform({**body, "outputs": [second]})
    assert r.status == 201, r
    fn = lambda v: redact(v, ["user.email"])  # noqa: E731
    try:
        described = wait_caught_up(api, "t", {0: 1000}, timeout=30)
        got = read_topic(broker.bootstrap, second, 1)
        assert_transformed(got, expected_outputs(records, placed, fn), lambda rec: 0,
                           "the transform deployed again")
    except AssertionError as e:
        raise AssertionError(f"{e}\n(describe after the redeploy: {describe(api, 't')})") from None
    assert (described["records_in"], described["records_out"]) == (1000, 1000), described


@pytest.mark.timeout(60)
def test_records_keep_repeated_headers(broker_factory):
    """Kafka headers are a list: a name may repeat, each value in its place. A transform
    that forwards a record (repartition) or rewrites its value (json-redact) keeps them
    all, in order, and so does the dead-letter topic."""
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, out1, out2, dlq = (unique_topic(n) for n in ("in", "redacted", "forwarded", "dlq"))
    for t in (src, out1, out2, dlq):
        create_topic(broker, t, 1)
    deploy_transform_plugin(broker, "redact", "json-redact")
    deploy_transform_plugin(broker, "repartition", "repartition")
    headers = [[("x", b"1"), ("hop", b"a"), ("hop", b"b"), ("y", None), ("hop", b"c")],
               [("same", b"v"), ("same", b"v")],
               [("hop", b"a"), ("x", b"1"), ("hop", None)]]
    records = [{"key": b"k%d" % i, "value": b'{"secret":%d}' % i if i < 3 else b"not json", "headers": h}
               for i, h in enumerate(headers + headers[:1])]
    produce(broker.bootstrap, src, records)
    seen = read_topic(broker.bootstrap, src, 1)[0]
    assert [h for *_, h, _ in seen] == [r["headers"] for r in records], "the input itself lost headers"
    assert api.deploy_transform({"name": "r", "plugin": "redact", "input": src, "outputs": [out1], "dead_letter": dlq,
                                 "config": {"paths": "secret"}}).status == 201
    assert api.deploy_transform({"name": "f", "plugin": "repartition", "input": src, "outputs": [out2]}).status == 201
    wait_caught_up(api, "r", {0: 4})
    wait_caught_up(api, "f", {0: 4})
    problems = []
    for topic, want in ((out1, headers), (out2, headers + headers[:1])):
        got = [h for *_, h, _ in read_topic(broker.bootstrap, topic, 1)[0]]
        if got != want:
            problems.append(f"{topic}: read headers {got}, produced {want}")
    dead = read_topic(broker.bootstrap, dlq, 1)[0]
    got = [h for *_, h, _ in dead][0][:len(headers[0])] if dead else None
    if got != headers[0]:
        problems.append(f"dead-letter topic: read headers {got}, produced {headers[0]}")
    assert not problems, "\n".join(problems)


# --- refused deploys ----------------------------------------------------------------------------

# body changes: (HTTP status, code, exact message); IN, OUT, DLQ stand for the test's topics
REFUSED = [
    ({"name": "bad name"}, 400, "invalid_transform",
     "invalid transform name 'bad name': use 1-100 characters from [a-zA-Z0-9._-]"),
    ({"name": "x" * 101}, 400, "invalid_transform",
     f"invalid transform name '{'x' * 101}': use 1-100 characters from [a-zA-Z0-9._-]"),
    ({"outputs": ["IN"]}, 400, "invalid_transform", "output topic 'IN' is the input topic; a transform cannot feed itself"),
    ({"outputs": ["OUT", "IN"]}, 400, "invalid_transform",
     "output topic 'IN' is the input topic; a transform cannot feed itself"),
    ({"outputs": ["OUT", "OUT"]}, 400, "invalid_transform", "output topic 'OUT' is listed twice"),
    ({"outputs": []}, 400, "invalid_transform", "a transform needs at least one output topic"),
    ({"config": {"paths": "a", "quiver.outputs": "x"}}, 400, "invalid_transform",
     "config key 'quiver.outputs' is reserved for the host (quiver.*)"),
    ({"config": {"paths": 5}}, 400, "invalid_transform", "config 'paths' must be a string, not 5"),
    ({"from": "yesterday"}, 400, "invalid_transform",
     "'yesterday' is not a start position: expected earliest, latest, offset:N or timestamp:MS"),
    ({"from": "offset:-1"}, 400, "invalid_transform", "'offset:-1': the offset must be a non-negative integer"),
    ({"from": "timestamp:x"}, 400, "invalid_transform",
     "'timestamp:x': the timestamp (ms since the epoch) must be a non-negative integer"),
    ({"on_error": "dead-letter"}, 400, "invalid_transform",
     "on_error dead-letter needs a dead-letter topic (dead_letter)"),
    ({"on_error": "stop", "dead_letter": "DLQ"}, 400, "invalid_transform",
     "on_error stop and a dead-letter topic contradict each other"),
    ({"on_error": "skip"}, 400, "invalid_transform", "on_error 'skip' is not a policy: expected stop or dead-letter"),
    ({"dead_letter": "IN"}, 400, "invalid_transform",
     "output topic 'IN' is the input topic and cannot be the dead-letter topic"),
    ({"max_amplification": 0}, 400, "invalid_transform", "max_amplification must be at least 1"),
    ({"max_memory_bytes": 0}, 400, "invalid_transform",
     "max_memory_bytes 0 is out of range: must be between 1048576 and 4294967296"),
    ({"max_memory_bytes": 128 << 20}, 400, "invalid_transform",
     "max_memory_bytes 134217728 is out of range: more than this broker's plugins.max_memory_bytes (67108864)"),
    ({"call_timeout_ms": 0}, 400, "invalid_transform", "call_timeout_ms 0 is out of range: must be between 1 and 600000"),
    ({"call_timeout_ms": 600_001}, 400, "invalid_transform",
     "call_timeout_ms 600001 is out of range: must be between 1 and 600000"),
    ({"max_output_bytes": 0}, 400, "invalid_transform",
     "max_output_bytes 0 is out of range: must be between 1 and 1073741824"),
    # the broker's [plugins] values are the most a deploy may ask for
    ({"call_timeout_ms": 501}, 400, "invalid_transform",
     "call_timeout_ms 501 is out of range: more than this broker's plugins.call_timeout_ms (500)"),
    ({"max_output_bytes": (16 << 20) + 1}, 400, "invalid_transform",
     "max_output_bytes 16777217 is out of range: more than this broker's plugins.max_output_bytes (16777216)"),
    ({"plugin": "nope"}, 404, "unknown_plugin",
     "plugin 'nope' is not deployed; deploy it with `quiver plugin deploy nope --kind transform --file …`"),
    ({"plugin": "part"}, 422, "wrong_kind", "plugin 'part' is a partitioner, not a transform"),
    ({"input": "missing-in"}, 404, "unknown_topic",
     "topic 'missing-in' does not exist; create it before deploying the transform"),
    ({"outputs": ["OUT", "missing-out"]}, 404, "unknown_topic",
     "topic 'missing-out' does not exist; create it before deploying the transform"),
    ({"dead_letter": "missing-dlq"}, 404, "unknown_topic",
     "topic 'missing-dlq' does not exist; create it before deploying the transform"),
    ({"config": {}}, 422, "init_failed",
     "plugin 'redact' init failed: invalid config: set `paths` to the comma-separated JSON paths to redact, "
     "e.g. paths=customer.email"),
    ({"config": {"paths": "a", "mode": "hide"}}, 422, "init_failed",
     "plugin 'redact' init failed: invalid config: config key `mode` has invalid value \"hide\": expected mask or drop"),
    ({"config": {"paths": "a", "pahts": "b"}}, 422, "init_failed",
     "plugin 'redact' init failed: invalid config: unknown config key `pahts` (known keys: paths, mode, mask, "
     "on-invalid)"),
    ({"plugin": "split", "config": {"header": "region", "route.eu": "asia"}}, 422, "init_failed",
     "plugin 'split' init failed: invalid config: config key `route.eu` has invalid value \"asia\": "
     "not one of the transform's outputs (OUT)"),
]

# messages of serde's that only need their gist checked
REFUSED_BODIES = [
    (b'{"name":"t","plugin":"redact","input":"IN","outputs":["OUT"],"colour":"red"}',
     "the request body: Failed to deserialize the JSON body into the target type: colour: unknown field `colour`"),
    (b'{"name":"t","plugin":"redact","input":"IN"}',
     "the request body: Failed to deserialize the JSON body into the target type: missing field `outputs`"),
    (b'{"name":"t","plugin":"redact","input":"IN","outputs":["OUT"],"max_amplification":-1}',
     "the request body: Failed to deserialize the JSON body into the target type: max_amplification: "
     "invalid value: integer `-1`, expected u32"),
    (b"not json", "the request body: Failed to parse the request body as JSON"),
]


@pytest.mark.timeout(120)
def test_refused_deploys_say_why(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst, dlq = unique_topic("in"), unique_topic("out"), unique_topic("dlq")
    for t in (src, dst, dlq):
        create_topic(broker, t, 1)
    deploy_transform_plugin(broker, "redact", "json-redact")
    deploy_transform_plugin(broker, "split", "split")
    deploy_cli(broker, "part", wasm_path("murmur2"))
    names = {"IN": src, "OUT": dst, "DLQ": dlq}

    def sub(v):
        if isinstance(v, str):
            for k, t in names.items():
                v = v.replace(f"'{k}'", f"'{t}'").replace(f"({k})", f"({t})")
            return names.get(v, v)
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v

    base = {"name": "t", "plugin": "redact", "input": src, "outputs": [dst], "config": {"paths": "a"}}
    problems = []
    for change, status, code, message in REFUSED:
        body = {**base, **{k: sub(v) for k, v in change.items()}}
        r = api.deploy_transform(body)
        if (r.status, r.code, r.message) != (status, code, sub(message)):
            problems.append(f"{change}: got {r.status} {r.body}, want {status} {code} {sub(message)!r}")
    for raw, prefix in REFUSED_BODIES:
        r = api.request("POST", "/v1/transforms", raw.replace(b'"IN"', json.dumps(src).encode())
                        .replace(b'"OUT"', json.dumps(dst).encode()), {"Content-Type": "application/json"})
        if (r.status, r.code) != (400, "invalid_transform") or not r.message.startswith(prefix):
            problems.append(f"{raw!r}: got {r.status} {r.body}, want 400 invalid_transform {prefix!r}...")
    assert not problems, "\n".join(problems)
    assert api.transforms() == [], "a refused deploy left a transform behind"

    # the CLI prints the API's message and code and exits non-zero
    cli_cases = [
        (["--name", "t", "--plugin", "nope", "--input", src, "--output", dst],
         "plugin 'nope' is not deployed; deploy it with `quiver plugin deploy nope --kind transform --file …` "
         "(unknown_plugin, HTTP 404)"),
        (["--name", "t", "--plugin", "part", "--input", src, "--output", dst],
         "plugin 'part' is a partitioner, not a transform (wrong_kind, HTTP 422)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", src, "--config", "paths=a"],
         f"output topic '{src}' is the input topic; a transform cannot feed itself (invalid_transform, HTTP 400)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", "missing-out", "--config", "paths=a"],
         "topic 'missing-out' does not exist; create it before deploying the transform (unknown_topic, HTTP 404)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", dst, "--dead-letter", "missing-dlq",
          "--config", "paths=a"],
         "topic 'missing-dlq' does not exist; create it before deploying the transform (unknown_topic, HTTP 404)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", dst, "--from", "yesterday",
          "--config", "paths=a"],
         "'yesterday' is not a start position: expected earliest, latest, offset:N or timestamp:MS "
         "(invalid_transform, HTTP 400)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", dst],
         "plugin 'redact' init failed: invalid config: set `paths` to the comma-separated JSON paths to redact, "
         "e.g. paths=customer.email (init_failed, HTTP 422)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", dst, "--config", "paths=a",
          "--max-amplification", "0"],
         "max_amplification must be at least 1 (invalid_transform, HTTP 400)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", dst, "--config", "paths=a",
          "--max-memory-bytes", "0"],
         "max_memory_bytes 0 is out of range: must be between 1048576 and 4294967296 (invalid_transform, HTTP 400)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", dst, "--config", "paths=a",
          "--max-memory-bytes", str(128 << 20)],
         "max_memory_bytes 134217728 is out of range: more than this broker's plugins.max_memory_bytes (67108864) "
         "(invalid_transform, HTTP 400)"),
        (["--name", "t", "--plugin", "redact", "--input", src, "--output", dst, "--config", "paths=a",
          "--call-timeout-ms", "0"],
         "call_timeout_ms 0 is out of range: must be between 1 and 600000 (invalid_transform, HTTP 400)"),
    ]
    for args, message in cli_cases:
        proc = transform_cli(broker, "deploy", *args, check=False)
        if proc.returncode == 0 or message not in proc.stderr:
            problems.append(f"CLI {args}: exit {proc.returncode}, stderr {proc.stderr!r}, want {message!r}")
    # a plugin deploy is held to the same ceilings, and to the same ranges
    component = wasm_path("murmur2").read_bytes()
    for query, message in [
        ("max_memory_bytes=134217728",
         "max_memory_bytes 134217728 is out of range: more than this broker's plugins.max_memory_bytes (67108864)"),
        ("call_timeout_ms=501",
         "call_timeout_ms 501 is out of range: more than this broker's plugins.call_timeout_ms (500)"),
        ("max_output_bytes=16777217",
         "max_output_bytes 16777217 is out of range: more than this broker's plugins.max_output_bytes (16777216)"),
        ("call_timeout_ms=0", "call_timeout_ms 0 is out of range: must be between 1 and 600000"),
    ]:
        r = api.request("PUT", f"/v1/plugins/part?kind=partitioner&{query}", component)
        if (r.status, r.code, r.message) != (400, "invalid_limit", message):
            problems.append(f"plugin deploy {query}: got {r.status} {r.body}, want 400 invalid_limit {message!r}")
    assert not problems, "\n".join(problems)
    assert api.transforms() == [], "a refused deploy left a transform behind"

    # a name in use
    r = api.deploy_transform(base)
    assert r.status == 201, r
    r = api.deploy_transform({**base, "outputs": [dlq]})
    assert (r.status, r.code, r.message) == \
        (409, "transform_exists", "transform 't' already exists; remove it first or pick another name"), r
    proc = transform_cli(broker, "deploy", "--name", "t", "--plugin", "redact", "--input", src, "--output", dst,
                         "--config", "paths=a", check=False)
    assert proc.returncode != 0 and "(transform_exists, HTTP 409)" in proc.stderr, proc.stderr
    assert describe(api, "t")["outputs"] == [dst], "a refused deploy changed the transform"

    # transforms that do not exist
    for method, path in (("GET", "/v1/transforms/nope"), ("POST", "/v1/transforms/nope/pause"),
                         ("POST", "/v1/transforms/nope/resume"), ("DELETE", "/v1/transforms/nope")):
        r = api.request(method, path)
        assert (r.status, r.code, r.message) == (404, "unknown_transform", "transform 'nope' does not exist"), \
            (method, path, r)
    for verb in ("describe", "pause", "resume", "remove"):
        proc = transform_cli(broker, verb, "nope", check=False)
        assert proc.returncode != 0 and \
            "transform 'nope' does not exist (unknown_transform, HTTP 404)" in proc.stderr, (verb, proc.stderr)

    # the plugin kinds: a partitioner component is not a transform, and vice versa
    r = api.deploy("x", wasm_path("murmur2").read_bytes(), kind="transform")
    assert (r.status, r.code) == (422, "wrong_kind") and "does not implement the transform world" in r.message, r
    r = api.deploy("x", wasm_path("json-redact").read_bytes(), kind="partitioner")
    assert (r.status, r.code) == (422, "wrong_kind") and "does not implement the partitioner world" in r.message, r
    assert api.describe("x").status == 404
    assert broker.alive()


# --- start positions --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_start_positions(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src = unique_topic("in")
    create_topic(broker, src, 2)
    outs = {name: unique_topic(name) for name in ("latest", "offset", "far", "ts")}
    for t in outs.values():
        create_topic(broker, t, 1)
    deploy_transform_plugin(broker, "redact", "json-redact")
    base_ts = int(time.time() * 1000) - 100_000
    # partition p gets records 0..999 with timestamps base_ts + 10 * index
    records = []
    for p in range(2):
        for i in range(1000):
            records.append({"key": b"%d-%d" % (p, i), "value": json.dumps({"p": p, "i": i}).encode(),
                            "timestamp": base_ts + 10 * i, "partition": p})
    placed = produce(broker.bootstrap, src, records)
    assert all(o == int(r["key"].split(b"-")[1]) for r, (_, o) in zip(records, placed))

    def deploy(name, start):
        r = api.deploy_transform({"name": name, "plugin": "redact", "input": src, "outputs": [outs[name]],
                                  "from": start, "config": {"paths": "x"}})
        assert r.status == 201 and r.body["from"] == start, r

    deploy("offset", "offset:700")
    deploy("far", "offset:5000")  # clamped to the end
    deploy("ts", f"timestamp:{base_ts + 10 * 250 - 5}")
    deploy("latest", "latest")
    for name in ("offset", "far", "ts", "latest"):
        wait_caught_up(api, name, {0: 1000, 1: 1000})
    later = [{"key": b"%d-%d" % (p, i), "value": json.dumps({"p": p, "i": i}).encode(),
              "timestamp": base_ts + 10 * i, "partition": p} for p in range(2) for i in range(1000, 1100)]
    produce(broker.bootstrap, src, later)
    for name in ("offset", "far", "ts", "latest"):
        wait_caught_up(api, name, {0: 1100, 1: 1100})

    def indices(name):
        got = read_topic(broker.bootstrap, outs[name], 1)[0]
        per = {0: [], 1: []}
        for _, key, value, _, ts in got:
            p, i = (int(x) for x in key.split(b"-"))
            assert value == json.dumps({"p": p, "i": i}, separators=(",", ":")).encode() and ts == base_ts + 10 * i
            per[p].append(i)
        return per

    assert indices("offset") == {p: list(range(700, 1100)) for p in range(2)}
    assert indices("far") == {p: list(range(1000, 1100)) for p in range(2)}
    assert indices("ts") == {p: list(range(250, 1100)) for p in range(2)}
    assert indices("latest") == {p: list(range(1000, 1100)) for p in range(2)}


# --- 2. delivery through kill -9 ----------------------------------------------------------------

EOS_OUT_PARTITIONS = 6


def eos_doc(i: int) -> bytes:
    return json.dumps({"id": i, "user": {"name": f"n{i}", "email": f"user{i}@example.com"},
                       "pad": "x" * 16}).encode()


def eos_redacted(i: int) -> bytes:
    return b'{"id":%d,"user":{"name":"n%d","email":"***"},"pad":"xxxxxxxxxxxxxxxx"}' % (i, i)


def kill_twice_while_running(broker, api: TransformApi, name: str, total: int, output: str,
                             partitions: int) -> list:
    """kill -9 the broker twice while the transform runs, and restart it: once past a
    fifth of the input and once past three fifths, each time at a moment the output
    holds records the transform has not recorded progress for yet (read the output's
    end offsets, then describe: more output than the positions cover means a step's
    outputs are written and its progress is not), so the restart replays them. Returns,
    per kill, (positions, output records) as seen just before it."""
    kills = []
    for share in (0.2, 0.6):
        c = consumer(broker.bootstrap)
        seen = {}

        def mid_step():
            try:
                written = sum(c.get_watermark_offsets(TopicPartition(output, p), timeout=5, cached=False)[1]
                              for p in range(partitions))
            except Exception:  # noqa: BLE001 - a broker restarting or a metadata refresh
                return False
            body = try_describe(api, name)
            if body is None:
                return False
            position = sum(p["position"] for p in body["partitions"])
            seen.update(position=position, written=written)
            # past the share with output ahead of progress; or nearly done without having
            # caught a step in the middle: kill anyway
            return position >= share * total and (written > position or position >= 0.95 * total)

        try:
            wait_until(mid_step, 120, f"the transform to pass {share:.0%} of the input mid-step", interval=0)
        finally:
            c.close()
        broker.kill()
        api.close()
        kills.append((seen["position"], seen["written"]))
        broker.restart()
    return kills


def produce_many(bootstrap: str, topic: str, total: int, key: Callable[[int], bytes],
                 partition: Callable[[int], int]):
    """Produces records 0..total-1 (value eos_doc(i)) with an idempotent producer; every
    one must be acknowledged."""
    p = producer(bootstrap, **{"enable.idempotence": True, "linger.ms": 20})
    outcome = {"acked": 0, "errors": []}

    def cb(err, msg):
        if err is not None:
            outcome["errors"].append(err)
        else:
            outcome["acked"] += 1

    for i in range(total):
        while True:
            try:
                p.produce(topic, key=key(i), value=eos_doc(i), partition=partition(i), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(180) == 0, "records still unacknowledged"
    assert (outcome["acked"], outcome["errors"][:5]) == (total, []), outcome["errors"][:5]


@pytest.mark.timeout(300)
def test_exactly_once_through_two_kills(broker_factory):
    total = RECORDS
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst = unique_topic("eos-in"), unique_topic("eos-out")
    create_topic(broker, src, 4)
    create_topic(broker, dst, EOS_OUT_PARTITIONS)
    deploy_transform_plugin(broker, "redact", "json-redact")
    t0 = time.monotonic()
    # record i goes to input partition i % 4: each partition's records in increasing i
    produce_many(broker.bootstrap, src, total, lambda i: b"k%d" % i, lambda i: i % 4)
    counts = {q: len(range(q, total, 4)) for q in range(4)}
    assert end_offsets(broker.bootstrap, src, 4) == counts
    produced_s = time.monotonic() - t0

    r = api.deploy_transform({"name": "eos", "plugin": "redact", "input": src, "outputs": [dst],
                              "config": {"paths": "user.email"}})
    assert (r.status, r.body["delivery"]) == (201, "exactly-once"), r
    t1 = time.monotonic()
    kills = kill_twice_while_running(broker, api, "eos", total, dst, EOS_OUT_PARTITIONS)
    wait_caught_up(api, "eos", counts, timeout=240)
    transformed_s = time.monotonic() - t1

    seen = bytearray(total)
    last = {}
    problems = []

    def visit(p, offset, key, value, headers, ts):
        i = int(key[1:])
        if seen[i]:
            problems.append(f"record {i} written twice (again at {p}@{offset})")
        seen[i] = 1
        if value != eos_redacted(i):
            problems.append(f"record {i} at {p}@{offset}: {value!r}")
        if p != murmur2_partition(key, EOS_OUT_PARTITIONS):
            problems.append(f"record {i} in partition {p}")
        if last.get((i % 4, p), -1) > i:
            problems.append(f"record {i} after record {last[(i % 4, p)]} in partition {p}")
        last[(i % 4, p)] = i
        assert len(problems) < 20, problems

    t2 = time.monotonic()
    ends = scan_topic(broker.bootstrap, dst, EOS_OUT_PARTITIONS, visit, timeout=240)
    assert not problems, problems
    missing = seen.count(0)
    assert missing == 0, f"{missing} records missing, first {seen.index(0)}"
    assert sum(ends.values()) == total
    print(f"\nexactly-once: {total} records, produced in {produced_s:.1f}s, transformed with two kill -9s "
          f"(positions, output records at each: {kills}) in {transformed_s:.1f}s, read back in "
          f"{time.monotonic() - t2:.1f}s")
    assert broker.alive()


@pytest.mark.timeout(300)
def test_at_least_once_through_two_kills(broker_factory):
    total = RECORDS
    keys = 1000
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst = unique_topic("alo-in"), unique_topic("alo-out")
    create_topic(broker, src, 4)
    create_topic(broker, dst, EOS_OUT_PARTITIONS)
    deploy_transform_plugin(broker, "redact", "json-redact")
    # record i has key u<i % keys>; a key's records all go to one input partition, in order
    produce_many(broker.bootstrap, src, total, lambda i: b"u%d" % (i % keys), lambda i: (i % keys) % 4)
    counts = {q: sum(len(range(k, total, keys)) for k in range(q, keys, 4)) for q in range(4)}
    assert end_offsets(broker.bootstrap, src, 4) == counts

    proc = transform_cli(broker, "deploy", "--name", "alo", "--plugin", "redact", "--input", src, "--output", dst,
                         "--config", "paths=user.email", "--at-least-once", "--json")
    body = json.loads(proc.stdout)
    assert (body["deterministic"], body["delivery"]) == (False, "at-least-once"), body
    kills = kill_twice_while_running(broker, api, "alo", total, dst, EOS_OUT_PARTITIONS)
    wait_caught_up(api, "alo", counts, timeout=240)

    # per key, the output is the key's input records in order, where a replay may go
    # back and repeat some, but never skips one: each record's index among its key's
    # records is at most one past the highest seen so far
    highest = array("q", [-1]) * keys
    problems = []
    stats = {"records": 0, "replayed": 0}

    def visit(p, offset, key, value, headers, ts):
        k = int(key[1:])
        i = json.loads(value)["id"]
        stats["records"] += 1
        if i % keys != k or value != eos_redacted(i):
            problems.append(f"{p}@{offset}: key {key!r}, value {value!r}")
        if p != murmur2_partition(key, EOS_OUT_PARTITIONS):
            problems.append(f"key {key!r} in partition {p}")
        idx = i // keys
        if idx > highest[k] + 1:
            problems.append(f"key {key!r}: record {i} (#{idx} of the key) follows #{highest[k]}: a gap")
        elif idx <= highest[k]:
            stats["replayed"] += 1
        highest[k] = max(highest[k], idx)
        assert len(problems) < 20, problems

    scan_topic(broker.bootstrap, dst, EOS_OUT_PARTITIONS, visit, timeout=240)
    assert not problems, problems
    short = [k for k in range(keys) if highest[k] != len(range(k, total, keys)) - 1]
    assert not short, f"{len(short)} keys lack their last records, e.g. key u{short[0]} ends at #{highest[short[0]]}"
    assert stats["records"] == total + stats["replayed"]
    print(f"\nat-least-once: {total} records, {stats['replayed']} written again after the kills "
          f"(positions, output records at each: {kills})")
    assert broker.alive()


# --- 3. split ---------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_split_routes_every_record_by_its_header(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src = unique_topic("orders")
    sizes = {"eu": 3, "us": 2, "other": 1}
    outs = {name: unique_topic(f"orders-{name}") for name in sizes}
    create_topic(broker, src, 2)
    for name, t in outs.items():
        create_topic(broker, t, sizes[name])
    deploy_transform_plugin(broker, "split", "split")
    regions = [b"eu", b"us", b"apac", None, b"EU", b""]
    base_ts = int(time.time() * 1000) - 60_000
    records = []
    for i in range(6000):
        region = regions[i % len(regions)]
        headers = [("seq", b"%d" % i)]
        if region is not None:
            headers.insert(i % 2, ("region", region))
        records.append({"key": b"k%d" % i, "value": b"v%d" % i if i % 7 else None, "headers": headers,
                        "timestamp": base_ts + i})
    placed = produce(broker.bootstrap, src, records)
    proc = transform_cli(broker, "deploy", "--name", "split", "--plugin", "split", "--input", src,
                         "--output", outs["eu"], "--output", outs["us"], "--output", outs["other"],
                         "--config", "header=region", "--config", f"route.eu={outs['eu']}",
                         "--config", f"route.us={outs['us']}", "--config", f"default={outs['other']}", "--json")
    assert json.loads(proc.stdout)["outputs"] == [outs["eu"], outs["us"], outs["other"]]
    body = wait_caught_up(api, "split", counts_of(placed, 2))
    assert (body["records_in"], body["records_out"]) == (6000, 6000), body

    def route(r):
        h = dict(r["headers"]).get("region")
        return {b"eu": "eu", b"us": "us"}.get(h, "other")

    for name, topic in outs.items():
        mine = [(r, at) for r, at in zip(records, placed) if route(r) == name]
        expected = expected_outputs([r for r, _ in mine], [at for _, at in mine], lambda v: v)
        assert_transformed(read_topic(broker.bootstrap, topic, sizes[name]), expected,
                           lambda rec: murmur2_partition(rec[0], sizes[name]), f"split to {name}")


@pytest.mark.timeout(120)
def test_split_by_a_json_field_drops_unrouted_records(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, seven, gold = unique_topic("ship"), unique_topic("ship-7"), unique_topic("ship-gold")
    create_topic(broker, src, 1)
    create_topic(broker, seven, 1)
    create_topic(broker, gold, 1)
    deploy_transform_plugin(broker, "split", "split")
    shapes = [{"ship": {"country": 7}}, {"ship": {"country": "7"}}, {"ship": {"country": "gold"}},
              {"ship": {"country": True}}, {"ship": {}}, {"ship": {"country": None}}, "not an object", None]
    records = []
    for i in range(800):
        shape = shapes[i % len(shapes)]
        value = None if shape is None else (json.dumps(shape).encode() if i % len(shapes) != 6 else b"{nope")
        records.append({"key": b"k%d" % i, "value": value, "timestamp": 1_700_000_000_000 + i})
    produce(broker.bootstrap, src, records)
    r = api.deploy_transform({"name": "ship", "plugin": "split", "input": src, "outputs": [seven, gold],
                              "config": {"field": "ship.country", "route.7": seven, "route.gold": gold}})
    assert r.status == 201, r
    body = wait_caught_up(api, "ship", {0: 800})
    # a number routes by its JSON text, a string by its text: 7 and "7" both go to route.7
    want7 = [r["key"] for i, r in enumerate(records) if i % len(shapes) in (0, 1)]
    want_gold = [r["key"] for i, r in enumerate(records) if i % len(shapes) == 2]
    assert [k for _, k, *_ in read_topic(broker.bootstrap, seven, 1)[0]] == want7
    assert [k for _, k, *_ in read_topic(broker.bootstrap, gold, 1)[0]] == want_gold
    assert (body["records_in"], body["records_out"], body["errors"]) == (800, 300, 0), body


@pytest.mark.timeout(120)
def test_filter_keeps_what_matches(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src = unique_topic("events")
    create_topic(broker, src, 2)
    deploy_transform_plugin(broker, "filter", "filter")
    tiers = [b"gold", b"silver", None, b"golden", b""]
    regions = ["eu", "us", None, 7, "eu-west"]
    records = []
    for i in range(3000):
        tier = tiers[i % 5]
        headers = [("tier", tier)] if i % 7 != 3 else []
        region = regions[(i // 5) % 5]
        doc = {"n": i} if region is None else {"n": i, "geo": {"region": region}}
        value = json.dumps(doc).encode() if i % 11 != 5 else b"not json"
        records.append({"key": b"e%d" % i, "value": value, "headers": headers, "timestamp": 1_700_000_000_000 + i})
    placed = produce(broker.bootstrap, src, records)

    def header(r):
        return dict(r["headers"]).get("tier") if r["headers"] else None

    def field(r):
        try:
            geo = json.loads(r["value"]).get("geo")
        except ValueError:
            return None
        v = geo.get("region") if isinstance(geo, dict) else None
        return None if v is None else v if isinstance(v, str) else json.dumps(v)

    cases = {
        "gold": ({"header": "tier", "equals": "gold"}, lambda r: header(r) == b"gold"),
        "eu": ({"field": "geo.region", "prefix": "eu"}, lambda r: (field(r) or "").startswith("eu")),
        "seven": ({"field": "geo.region", "equals": "7"}, lambda r: field(r) == "7"),
        "untiered": ({"header": "tier", "exists": "true", "invert": "true"}, lambda r: header(r) is None),
    }
    outs = {name: unique_topic(f"events-{name}") for name in cases}
    for name, (config, _) in cases.items():
        create_topic(broker, outs[name], 3)
        r = api.deploy_transform({"name": name, "plugin": "filter", "input": src, "outputs": [outs[name]],
                                  "config": config})
        assert r.status == 201, r
    for name, (_, keep) in cases.items():
        wait_caught_up(api, name, counts_of(placed, 2))
        mine = [(r, at) for r, at in zip(records, placed) if keep(r)]
        assert mine, name
        expected = expected_outputs([r for r, _ in mine], [at for _, at in mine], lambda v: v)
        assert_transformed(read_topic(broker.bootstrap, outs[name], 3), expected,
                           lambda rec: murmur2_partition(rec[0], 3), f"filter {name}")


# --- 4. repartition by the output topic's partitioner ---------------------------------------


@pytest.mark.timeout(120)
def test_repartition_places_records_with_the_output_topics_partitioner(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    ingest, placed_topic = unique_topic("ingest"), unique_topic("placed")
    create_topic(broker, ingest, 3)
    deploy_cli(broker, "vip", wasm_path("vip"), {"vip.partitions": "2", "vip.keys": "acme,globex",
                                                 "vip.prefixes": "gold-"})
    create_topic(broker, placed_topic, 7, {"partitioner": "vip"})
    deploy_transform_plugin(broker, "repartition", "repartition")
    base_ts = int(time.time() * 1000) - 60_000
    # VIP by name (acme, globex) or prefix (gold-), others, and null keys; written by the
    # Kafka producer to whichever ingest partition (here: spread round the three)
    kinds = [b"acme", b"globex", b"gold-%d", b"golden-%d", None, b"cust-%d", b"cust-%d", b"acme-%d"]
    records = []
    for i in range(8000):
        kind = kinds[i % len(kinds)]
        key = kind % i if kind is not None and b"%d" in kind else kind
        records.append({"key": key, "value": b"v%d" % i, "headers": [("n", b"%d" % i)],
                        "timestamp": base_ts + i, "partition": (i * 7 + i // 8) % 3})
    placed = produce(broker.bootstrap, ingest, records)

    def vip(rec):
        if rec[0] is None:
            return range(2, 7)  # null keys: round-robin over the partitions not reserved
        return vip_partition(rec[0], 7, 2, {b"acme", b"globex"}, (b"gold-",))

    assert vip((b"gold-1", None)) < 2 and vip((b"golden-1", None)) >= 2 and vip((b"acme-3", None)) >= 2
    r = api.deploy_transform({"name": "place", "plugin": "repartition", "input": ingest, "outputs": [placed_topic]})
    assert r.status == 201, r
    wait_caught_up(api, "place", counts_of(placed, 3))
    got = read_topic(broker.bootstrap, placed_topic, 7)
    expected = expected_outputs(records, placed, lambda v: v)
    assert_transformed(got, expected, vip, "repartition to the vip topic", ident=lambda rec: rec[2][0])
    assert sum(len(v) for v in got.values()) == 8000
    assert {p for p, recs in got.items() if recs} == set(range(7)), "not every partition used"
    assert {p for p, recs in got.items() for _, k, *_ in recs if k in (b"acme", b"globex")} <= {0, 1}


# --- 5. failing records ---------------------------------------------------------------------------

TRAP_CAUSE = "plugin 'hostile' trapped: hit an unreachable instruction (a panic in Rust guests)"


def failure_cause(behaviour: str, offset: int) -> str:
    return TRAP_CAUSE if behaviour == "trap-every" else f"invalid input: error-every: offset {offset}"


def numbered_records(per_partition: int, partitions: int, base_ts: int) -> list:
    """Records whose offset in partition p is i: key p-i, value v-p-i, a header."""
    return [{"key": b"%d-%d" % (p, i), "value": b"v-%d-%d" % (p, i), "headers": [("n", b"%d" % i), ("p", b"%d" % p)],
             "timestamp": base_ts + i, "partition": p}
            for p in range(partitions) for i in range(per_partition)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("behaviour", ["trap-every", "error-every"])
def test_failing_records_go_to_the_dead_letter_topic(broker_factory, behaviour):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst, dlq = unique_topic("in"), unique_topic("out"), unique_topic("dlq")
    create_topic(broker, src, 2)
    create_topic(broker, dst, 3)
    create_topic(broker, dlq, 1)
    deploy_transform_plugin(broker, "hostile", "transform-hostile")
    base_ts = int(time.time() * 1000) - 60_000
    records = numbered_records(5000, 2, base_ts)
    placed = produce(broker.bootstrap, src, records)
    assert placed == [(r["partition"], int(r["key"].split(b"-")[1])) for r in records]
    proc = transform_cli(broker, "deploy", "--name", "dl", "--plugin", "hostile", "--input", src, "--output", dst,
                         "--dead-letter", dlq, "--config", f"behaviour={behaviour}", "--config", "every=1000", "--json")
    body = json.loads(proc.stdout)
    assert (body["on_error"], body["dead_letter"]) == ("dead-letter", dlq), body
    body = wait_caught_up(api, "dl", {0: 5000, 1: 5000})
    assert (body["status"], body["records_in"], body["records_out"], body["dead_letters"]) == \
        ("running", 10000, 9990, 10), body
    assert "dead-letter to " + dlq in transform_cli(broker, "describe", "dl").stdout

    def failing(r):
        return (int(r["key"].split(b"-")[1]) + 1) % 1000 == 0

    # the dead-letter topic: exactly the failing records, in input order per partition,
    # key, value, timestamp and headers kept, the error and the coordinates added
    dead = read_topic(broker.bootstrap, dlq, 1)[0]
    want = []
    for r in records:
        if failing(r):
            p, i = r["partition"], int(r["key"].split(b"-")[1])
            want.append((r["key"], r["value"], r["headers"] + [
                ("quiver.transform", b"dl"), ("quiver.error", failure_cause(behaviour, i).encode()),
                ("quiver.input.topic", src.encode()), ("quiver.input.partition", b"%d" % p),
                ("quiver.input.offset", b"%d" % i)], r["timestamp"]))
    got = [(k, v, h, ts) for _, k, v, h, ts in dead]
    assert sorted(got) == sorted(want), (got[:3], want[:3])
    for p in range(2):
        mine = [g for g in got if g[0].startswith(b"%d-" % p)]
        assert mine == [w for w in want if w[0].startswith(b"%d-" % p)], f"partition {p}'s dead letters reordered"

    # the output: every other record, in order, placed by murmur2
    ok = [(r, at) for r, at in zip(records, placed) if not failing(r)]
    expected = expected_outputs([r for r, _ in ok], [at for _, at in ok], lambda v: v)
    assert_transformed(read_topic(broker.bootstrap, dst, 3), expected,
                       lambda rec: murmur2_partition(rec[0], 3), "the output")


@pytest.mark.timeout(120)
def test_a_run_of_records_the_plugin_rejects_goes_to_the_dead_letter_topic(broker_factory):
    """json-redact (on-invalid=fail) rejects values that are not JSON objects: with a
    dead-letter topic each one goes there and the transform goes on, also through a long
    run of them (a topic that received garbage for a while)."""
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst, dlq = unique_topic("in"), unique_topic("out"), unique_topic("dlq")
    for t in (src, dst, dlq):
        create_topic(broker, t, 1)
    deploy_transform_plugin(broker, "redact", "json-redact")
    bad = set(range(100, 5100)) | {5200, 5202}
    records = []
    for i in range(5300):
        value = (b"garbage %d" % i if i % 2 else b"[%d]" % i) if i in bad else json.dumps({"i": i, "s": "x"}).encode()
        records.append({"key": b"k%d" % i, "value": value, "timestamp": 1_700_000_000_000 + i})
    produce(broker.bootstrap, src, records)
    r = api.deploy_transform({"name": "r", "plugin": "redact", "input": src, "outputs": [dst], "dead_letter": dlq,
                              "config": {"paths": "s"}})
    assert r.status == 201, r
    body = wait_caught_up(api, "r", {0: 5300}, timeout=60, broker=broker)
    assert (body["records_in"], body["records_out"], body["dead_letters"]) == (5300, 5300 - len(bad), len(bad)), body
    out = read_topic(broker.bootstrap, dst, 1)[0]
    assert [(k, v) for _, k, v, _, _ in out] == \
        [(b"k%d" % i, b'{"i":%d,"s":"***"}' % i) for i in range(5300) if i not in bad]
    dead = read_topic(broker.bootstrap, dlq, 1)[0]
    assert [(k, v) for _, k, v, _, _ in dead] == [(b"k%d" % i, records[i]["value"]) for i in sorted(bad)]
    assert all(dict(h)["quiver.error"] == b"invalid input: the value is not a JSON object (on-invalid=fail)"
               for *_, h, _ in dead)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("behaviour", ["trap-every", "error-every"])
def test_stop_policy_stops_at_the_failing_record(broker_factory, behaviour):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst = unique_topic("in"), unique_topic("out")
    create_topic(broker, src, 2)
    create_topic(broker, dst, 2)
    deploy_transform_plugin(broker, "hostile", "transform-hostile")
    base_ts = int(time.time() * 1000) - 60_000
    records = numbered_records(2500, 2, base_ts)
    placed = produce(broker.bootstrap, src, records)
    r = api.deploy_transform({"name": "st", "plugin": "hostile", "input": src, "outputs": [dst],
                              "config": {"behaviour": behaviour, "every": "1000"}})
    assert (r.status, r.body["on_error"], r.body["dead_letter"]) == (201, "stop", None), r
    reason = f"input record at offset 999 failed: {failure_cause(behaviour, 999)}"
    body = wait_all_in_state(api, "st", 2, ("stopped",))
    assert body["status"] == "stopped", body
    for p in body["partitions"]:
        assert (p["reason"], p["position"], p["high_watermark"], p["lag"], p["records_in"], p["records_out"]) == \
            (reason, 999, 2500, 1501, 999, 999), p
    text = transform_cli(broker, "describe", "st").stdout
    assert "status:     stopped" in text and reason in text, text

    # the output holds exactly the records before the failing one
    before = [(r, at) for r, at in zip(records, placed) if int(r["key"].split(b"-")[1]) < 999]
    expected = expected_outputs([r for r, _ in before], [at for _, at in before], lambda v: v)
    assert_transformed(read_topic(broker.bootstrap, dst, 2), expected,
                       lambda rec: murmur2_partition(rec[0], 2), "the output of a stopped transform")
    ends = end_offsets(broker.bootstrap, dst, 2)

    # resumed: it tries the record again and stops there again, writing nothing twice
    errors = {p["partition"]: p["errors"] for p in body["partitions"]}
    proc = transform_cli(broker, "resume", "st")
    assert proc.stdout.strip() == "resumed transform 'st'"
    body = wait_all_in_state(api, "st", 2, ("stopped",),
                             also=lambda p: p["errors"] > errors[p["partition"]])
    for p in body["partitions"]:
        assert (p["reason"], p["position"]) == (reason, 999), p
    assert end_offsets(broker.bootstrap, dst, 2) == ends, "a resume wrote output again"
    assert broker.alive()


# --- 6. hostile transforms are contained ------------------------------------------------------


class InputTraffic:
    """A Kafka producer (acks=all) and consumer on one partition of a transform's input
    topic, in a thread: every ~10 ms one record, read back as it arrives. check() stops
    it and asserts every record was acknowledged, in order, and read back."""

    def __init__(self, bootstrap: str, topic: str, partition: int):
        self.bootstrap, self.topic, self.partition = bootstrap, topic, partition
        self.sent, self.acked, self.read, self.errors = 0, [], [], []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self):
        self.start = end_offsets(self.bootstrap, self.topic, self.partition + 1)[self.partition]
        self._p = producer(self.bootstrap, acks="all", **{"linger.ms": 0, "message.timeout.ms": 20000})
        self._c = consumer(self.bootstrap)
        self._c.assign([TopicPartition(self.topic, self.partition, self.start)])
        self._thread = threading.Thread(target=self._run, name="input-traffic", daemon=True)
        self._thread.start()
        self.wait_progress(5)
        return self

    def __exit__(self, exc_type, *rest):
        self._stop.set()
        self._thread.join(30)
        try:
            if exc_type is None:
                self.check()
        finally:
            self._c.close()

    def _cb(self, err, msg):
        with self._lock:
            if err is not None:
                self.errors.append(("produce", err))
            else:
                self.acked.append((msg.offset(), msg.value()))

    def _run(self):
        while not self._stop.is_set():
            self._p.produce(self.topic, key=b"traffic", value=b"t-%d" % self.sent, partition=self.partition,
                            on_delivery=self._cb)
            self.sent += 1
            self._p.poll(0)
            for m in self._c.consume(num_messages=100, timeout=0.01):
                with self._lock:
                    if m.error():
                        self.errors.append(("consume", m.error()))
                    else:
                        self.read.append((m.offset(), m.value()))
        self._p.flush(20)

    def wait_progress(self, n: int = 20, timeout: float = 30.0):
        with self._lock:
            a0, r0 = len(self.acked), len(self.read)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                a, r, errs = len(self.acked), len(self.read), list(self.errors)
            assert not errs, f"input traffic saw errors: {errs[:5]}"
            if a >= a0 + n and r >= r0 + n:
                return
            assert time.monotonic() < deadline, f"input traffic stalled: acked {a - a0}, read {r - r0} of {n}"
            time.sleep(0.02)

    def check(self):
        assert not self.errors, f"input traffic saw errors: {self.errors[:5]}"
        want = [(self.start + i, b"t-%d" % i) for i in range(self.sent)]
        assert self.acked == want, f"{self.sent} sent; acknowledged {len(self.acked)}, not in order at offsets " \
                                   f"{self.start}.."
        deadline = time.monotonic() + 30
        while len(self.read) < len(want) and time.monotonic() < deadline:
            for m in self._c.consume(num_messages=1000, timeout=0.2):
                assert not m.error(), m.error()
                self.read.append((m.offset(), m.value()))
        assert self.read == want, f"read {len(self.read)} of {len(want)} acknowledged records"


# behaviour: (plugin deploy limits, transform settings, regex of the cause after "plugin 'h' ")
HOSTILE = {
    "loop": (["--call-timeout-ms", "100"], {}, re.escape("trapped: exceeded its 100 ms call deadline")),
    "memory-bomb": (["--max-memory-bytes", str(16 << 20)], {},
                    r"trapped: forcing trap when growing memory to \d+ bytes"),
    "amplify": ([], {"max_amplification": 100},
                re.escape("wrote 1000 records for 1 input records, more than max_amplification 100x")),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("policy", ["stop", "dead-letter"])
@pytest.mark.parametrize("behaviour", list(HOSTILE))
def test_hostile_transforms_are_contained(broker_factory, behaviour, policy):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    limits, settings, cause = HOSTILE[behaviour]
    src, dst, dlq = unique_topic("in"), unique_topic("out"), unique_topic("dlq")
    for t in (src, dst, dlq):
        create_topic(broker, t, 1)
    deploy_transform_plugin(broker, "h", "transform-hostile", *limits)
    records = numbered_records(40, 1, int(time.time() * 1000))
    produce(broker.bootstrap, src, records, **{"linger.ms": 1000})  # one batch: the transform's first step
    body = {"name": "x", "plugin": "h", "input": src, "outputs": [dst], "config": {"behaviour": behaviour}, **settings}
    if policy == "dead-letter":
        body["dead_letter"] = dlq
    with InputTraffic(broker.bootstrap, src, 0) as traffic:
        r = api.deploy_transform(body)
        assert r.status == 201, r
        if policy == "stop":
            # the first record fails alone (three attempts): the partition stops there
            state = wait_all_in_state(api, "x", 1, ("stopped", "failed"))
            p = state["partitions"][0]
            assert p["state"] == "stopped" and p["position"] == 0, p
            assert re.fullmatch(f"input record at offset 0 failed: plugin 'h' {cause}", p["reason"]), p
        else:
            # every record fails alone and goes to the dead-letter topic; ten in a row mark
            # the partition failed
            state = wait_all_in_state(api, "x", 1, ("stopped", "failed"))
            p = state["partitions"][0]
            assert p["state"] == "failed", p
            assert re.fullmatch(f"10 input records in a row failed with no success between; last: plugin 'h' {cause}",
                                p["reason"]), p
        assert state["status"] == p["state"]
        assert re.fullmatch(f"plugin 'h' {cause}", p["last_error"]), p
        traffic.wait_progress(20)
    assert read_topic(broker.bootstrap, dst, 1)[0] == [], "a failing call wrote output"
    assert broker.alive(), "the broker exited"
    assert broker.panics() == []

    dead = read_topic(broker.bootstrap, dlq, 1)[0]
    if policy == "stop":
        assert dead == []
        return
    # what describe counts as dead letters is what the dead-letter topic holds: the input
    # records before the position, each with the cause
    p = describe(api, "x")["partitions"][0]
    assert (p["dead_letters"], p["position"]) == (len(dead), len(dead)), \
        f"describe says {p['dead_letters']} dead letters and position {p['position']}; the dead-letter topic " \
        f"holds {len(dead)} records"
    assert len(dead) == 9, f"{len(dead)} dead letters, expected the 9 records before the 10th failure in a row"
    for (offset, key, value, headers, ts), r in zip(dead, records):
        assert (key, value, ts) == (r["key"], r["value"], r["timestamp"]), (offset, key)
        h = dict(headers)
        assert re.fullmatch(f"plugin 'h' {cause}", h["quiver.error"].decode()), h
        assert h["quiver.input.offset"] == key.split(b"-")[1], h


# --- 7. limits per transform --------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_limits_are_per_transform(broker_factory):
    """Three transforms of one plugin deployment (its deadline raised to 2000 ms): one
    with a 16 MiB memory cap of its own runs a memory bomb and stops at the cap; one
    with a 1 KiB output cap of its own writes 50 copies of each record and stops at
    the cap; one with the same config and the plugin's limits writes every copy.
    describe shows each limit in force and whose setting it is. (The broker allows a
    deadline of 2000 ms: no deploy may ask for more than its [plugins] values.)"""
    broker = broker_factory(sets={"plugins.call_timeout_ms": "2000"})
    api = TransformApi(broker.admin)
    src, small_mem, small_out, full = (unique_topic(t) for t in ("in", "mem", "out", "full"))
    for t in (src, small_mem, small_out, full):
        create_topic(broker, t, 1)
    deploy_transform_plugin(broker, "h", "transform-hostile", "--call-timeout-ms", "2000")
    records = numbered_records(40, 1, int(time.time() * 1000))
    produce(broker.bootstrap, src, records)

    proc = transform_cli(broker, "deploy", "--name", "mem", "--plugin", "h", "--input", src, "--output", small_mem,
                         "--config", "behaviour=memory-bomb", "--max-memory-bytes", str(16 << 20), "--json")
    assert json.loads(proc.stdout)["limits"] == {
        "max_memory_bytes": {"value": 16 << 20, "source": "transform"},
        "call_timeout_ms": {"value": 2000, "source": "plugin"},
        "max_output_bytes": {"value": 16 << 20, "source": "broker"}}, proc.stdout
    amplify = {"behaviour": "amplify", "factor": "50"}
    r = api.deploy_transform({"name": "out", "plugin": "h", "input": src, "outputs": [small_out], "config": amplify,
                              "max_output_bytes": 1024})
    assert r.status == 201, r
    assert r.body["limits"]["max_output_bytes"] == {"value": 1024, "source": "transform"}, r.body
    r = api.deploy_transform({"name": "full", "plugin": "h", "input": src, "outputs": [full], "config": amplify})
    assert r.status == 201, r
    assert r.body["limits"] == {
        "max_memory_bytes": {"value": 64 << 20, "source": "broker"},
        "call_timeout_ms": {"value": 2000, "source": "plugin"},
        "max_output_bytes": {"value": 16 << 20, "source": "broker"}}, r.body

    # the memory bomb traps at its own cap (well under the broker's 64 MiB) and stops
    p = wait_all_in_state(api, "mem", 1, ("stopped", "failed"), timeout=60)["partitions"][0]
    m = re.fullmatch(r"input record at offset 0 failed: plugin 'h' trapped: forcing trap when growing memory to "
                     r"(\d+) bytes", p.get("reason", ""))
    assert p["state"] == "stopped" and m, p
    assert (16 << 20) < int(m.group(1)) <= (32 << 20), p
    # 50 copies of one record are more than 1 KiB of output
    p = wait_all_in_state(api, "out", 1, ("stopped", "failed"), timeout=60)["partitions"][0]
    assert p["state"] == "stopped" and re.fullmatch(
        r"input record at offset 0 failed: plugin 'h' returned bad output: returned \d+ bytes of output, "
        r"more than the 1024 allowed", p.get("reason", "")), p
    # the same plugin and config with the plugin's limits: every copy, in order
    body = wait_caught_up(api, "full", {0: 40}, timeout=60, broker=broker)
    assert (body["status"], body["records_in"], body["records_out"]) == ("running", 40, 2000), body
    got = [(k, v, h, ts) for _, k, v, h, ts in read_topic(broker.bootstrap, full, 1)[0]]
    assert got == [(r["key"], r["value"], r["headers"], r["timestamp"]) for r in records for _ in range(50)]
    for topic in (small_mem, small_out):
        assert read_topic(broker.bootstrap, topic, 1)[0] == [], f"{topic}: a stopped transform wrote output"

    text = transform_cli(broker, "describe", "mem").stdout
    assert f"limits:     memory {16 << 20} bytes (transform), call timeout 2000 ms (plugin), output {16 << 20} " \
           "bytes (broker)" in text, text
    assert broker.alive() and broker.panics() == []
