"""Transforms as an operator drives them: deploy a transform plugin and a transform
with the CLI, see every input record come out redacted in the output topic with its
key, headers and timestamp, list and describe it, pause it (its position stops while
input keeps arriving), resume it (it catches up), remove it; and every deploy the
broker must refuse, refused with the right code and a message naming the problem."""

from __future__ import annotations

import json

import pytest

from clients import unique_topic
from plugins_kit import create_topic, deploy_cli, plugin_cli, wasm_path
from transforms_kit import (TransformApi, deploy_plugin, produce, read_topic, transform_cli, wait_caught_up)

pytestmark = pytest.mark.timeout(180)


def redacted(value: bytes) -> bytes:
    """json-redact's function with paths=user.email, computed independently: the field
    masked, key order kept, compact JSON."""
    doc = json.loads(value)
    if "user" in doc and "email" in doc["user"]:
        doc["user"]["email"] = "***"
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def records(start: int, n: int) -> list:
    out = []
    for i in range(start, start + n):
        doc = {"id": i, "user": {"name": f"n{i}", "email": f"u{i}@example.com"}, "amount": i * 3}
        if i % 7 == 0:
            del doc["user"]["email"]  # a missing path leaves the record as it is
        out.append((f"k{i}".encode(), json.dumps(doc).encode(), [("trace", f"t{i}".encode())]))
    return out


def test_deploy_describe_pause_resume_and_remove_with_the_cli(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst = unique_topic("orders"), unique_topic("orders-clean")
    create_topic(broker, src, 3)
    create_topic(broker, dst, 2)
    deploy_plugin(broker, "redact", "json-redact")

    first = records(0, 3000)
    placed = produce(broker.bootstrap, src, first)
    out = transform_cli(broker, "deploy", "--name", "clean", "--plugin", "redact", "--input", src,
                        "--output", dst, "--config", "paths=user.email", "--json")
    deployed = json.loads(out.stdout)
    assert (deployed["name"], deployed["input"], deployed["outputs"], deployed["delivery"], deployed["on_error"]) == \
        ("clean", src, [dst], "exactly-once", "stop"), deployed
    counts = {p: sum(1 for q, _ in placed if q == p) for p in range(3)}
    body = wait_caught_up(api, "clean", counts)
    assert (body["status"], body["records_in"], body["records_out"], body["lag"]) == ("running", 3000, 3000, 0), body

    # every input record, redacted, in the output partition murmur2 of its key picks,
    # in input order per input partition, with key and headers intact
    got = read_topic(broker.bootstrap, dst, 2)
    by_key = {}
    for p, recs in got.items():
        for offset, key, value, headers in recs:
            assert key not in by_key, f"{key} written twice"
            by_key[key] = (p, offset, value, headers)
    assert len(by_key) == 3000
    for key, value, headers in first:
        p, _, got_value, got_headers = by_key[key]
        assert got_value == redacted(value), (key, got_value)
        assert got_headers == headers, (key, got_headers)
    for src_p in range(3):
        keys = [r[0] for r, (p, _) in zip(first, placed) if p == src_p]
        for dst_p in range(2):
            order = [by_key[k][1] for k in keys if by_key[k][0] == dst_p]
            assert order == sorted(order), f"input partition {src_p} reordered in output partition {dst_p}"

    listed = transform_cli(broker, "list").stdout
    assert "clean" in listed and "redact" in listed and src in listed, listed
    described = transform_cli(broker, "describe", "clean").stdout
    assert "delivery:   exactly-once" in described and "status:     running" in described, described

    # paused: positions stay while input arrives; resumed: it catches up
    transform_cli(broker, "pause", "clean")
    assert api.transform("clean").body["status"] == "paused"
    before = {p["partition"]: p["position"] for p in api.transform("clean").body["partitions"]}
    more = records(3000, 600)
    placed += produce(broker.bootstrap, src, more)
    paused = api.transform("clean").body
    assert all(p["state"] == "paused" for p in paused["partitions"]), paused
    assert {p["partition"]: p["position"] for p in paused["partitions"]} == before
    assert len([v for recs in read_topic(broker.bootstrap, dst, 2).values() for v in recs]) == 3000
    transform_cli(broker, "resume", "clean")
    counts = {p: sum(1 for q, _ in placed if q == p) for p in range(3)}
    wait_caught_up(api, "clean", counts)
    got = read_topic(broker.bootstrap, dst, 2)
    values = sorted(v for recs in got.values() for _, _, v, _ in recs)
    assert values == sorted(redacted(v) for _, v, _ in first + more)

    # a plugin a transform runs cannot be removed; the transform can
    r = plugin_cli(broker, "remove", "redact", check=False)
    assert r.returncode != 0 and "is run by transform(s) clean; remove them first" in r.stderr, r.stderr
    transform_cli(broker, "remove", "clean")
    r = api.transform("clean")
    assert (r.status, r.code, r.message) == (404, "unknown_transform", "transform 'clean' does not exist")
    assert api.transforms() == []
    plugin_cli(broker, "remove", "redact")


REFUSED = [
    # body changes, status, code, message fragment
    ({"name": "bad name"}, 400, "invalid_transform", "invalid transform name 'bad name'"),
    ({"outputs": ["IN"]}, 400, "invalid_transform", "is the input topic; a transform cannot feed itself"),
    ({"outputs": ["OUT", "OUT"]}, 400, "invalid_transform", "' is listed twice"),
    ({"outputs": []}, 400, "invalid_transform", "needs at least one output topic"),
    ({"config": {"quiver.outputs": "x"}}, 400, "invalid_transform", "config key 'quiver.outputs' is reserved"),
    ({"from": "yesterday"}, 400, "invalid_transform",
     "'yesterday' is not a start position: expected earliest, latest, offset:N or timestamp:MS"),
    ({"on_error": "dead-letter"}, 400, "invalid_transform", "needs a dead-letter topic"),
    ({"colour": "red"}, 400, "invalid_transform", "unknown field `colour`"),
    ({"plugin": "nope"}, 404, "unknown_plugin", "plugin 'nope' is not deployed"),
    ({"plugin": "part"}, 422, "wrong_kind", "plugin 'part' is a partitioner, not a transform"),
    ({"input": "missing-in"}, 404, "unknown_topic",
     "topic 'missing-in' does not exist; create it before deploying the transform"),
    ({"outputs": ["missing-out"]}, 404, "unknown_topic", "topic 'missing-out' does not exist"),
    ({"dead_letter": "missing-dlq"}, 404, "unknown_topic", "topic 'missing-dlq' does not exist"),
    ({"config": {}}, 422, "init_failed", "init failed: invalid config: set `paths`"),
    ({"config": {"paths": "a", "mode": "hide"}}, 422, "init_failed", "mode"),
]


def test_refused_deploys_name_the_problem(broker_factory):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst = unique_topic("in"), unique_topic("out")
    create_topic(broker, src, 1)
    create_topic(broker, dst, 1)
    deploy_plugin(broker, "redact", "json-redact")
    deploy_cli(broker, "part", wasm_path("murmur2"))
    base = {"name": "t", "plugin": "redact", "input": src, "outputs": [dst], "config": {"paths": "a"}}
    problems = []
    for change, status, code, fragment in REFUSED:
        body = {**base, **change}
        body["outputs"] = [{"IN": src, "OUT": dst}.get(o, o) for o in body["outputs"]]
        r = api.deploy_transform(**body)
        if (r.status, r.code) != (status, code) or fragment not in r.message:
            problems.append((change, r.status, r.body))
    assert not problems, problems
    assert api.transforms() == [], "a refused deploy left a transform behind"

    r = api.deploy_transform(**base)
    assert r.status == 201, r
    r = api.deploy_transform(**base)
    assert (r.status, r.code) == (409, "transform_exists"), r
    assert "transform 't' already exists" in r.message
    for path in ("/v1/transforms/nope", "/v1/transforms/nope/pause"):
        r = api.request("GET" if path.endswith("nope") else "POST", path)
        assert (r.status, r.code) == (404, "unknown_transform"), (path, r)
    r = transform_cli(broker, "deploy", "--name", "t2", "--plugin", "nope", "--input", src, "--output", dst,
                      check=False)
    assert r.returncode != 0 and "plugin 'nope' is not deployed" in r.stderr and "unknown_plugin" in r.stderr
