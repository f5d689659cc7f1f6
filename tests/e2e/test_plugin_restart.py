"""Plugin deployments are durable: after a clean stop (SIGTERM) or a crash (kill -9)
the broker lists the same plugins and versions, each serving the same version with
the same placement, and rollback and further deploys continue from there. A plugin
used by a topic cannot be removed until no topic names it."""

from __future__ import annotations

import json

import pytest

from clients import unique_topic
from plugins_kit import (AdminApi, FieldRoute, HASHES, alter_topic, create_topic, deploy_cli, deployed_version,
                         expect_log, make_records, murmur2_partition, plugin_cli, produce_all, vip_partition,
                         wasm_path)


def snapshot(api: AdminApi) -> list:
    """What `GET /v1/plugins` says about each plugin, less the counters of this run."""
    return [(p["name"], p["kind"], p["active_version"], p["status"], p["limits"],
             [(v["version"], v["config"], v["source"], v["api_version"], v["limits"], v["deployed_at_ms"])
              for v in p["versions"]])
            for p in api.plugins()]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_plugin_deployments_survive_restart(broker, rng, how):
    api = AdminApi(broker.admin)
    route = FieldRoute("gold:0-3;silver:4-5", header="tier", default="6-7")
    vip1 = {"vip.partitions": "2", "vip.keys": "a,b"}
    vip2 = {"vip.partitions": "3", "vip.prefixes": "1,2"}
    assert deployed_version(deploy_cli(broker, "vip", wasm_path("vip"), vip1)) == 1
    assert deployed_version(deploy_cli(broker, "vip", wasm_path("vip"), vip2)) == 2
    assert deployed_version(deploy_cli(broker, "hash", wasm_path("hash"), {"hash.algorithm": "fnv1a"})) == 1
    assert deployed_version(deploy_cli(broker, "route", wasm_path("field-route"), route.config())) == 1
    assert deployed_version(deploy_cli(broker, "m2", wasm_path("murmur2"), None, "--call-timeout-ms", "250",
                                       "--max-memory-bytes", str(16 << 20))) == 1
    vip_fn = lambda k, keys=set(), prefixes=(b"1", b"2"): vip_partition(k, 6, 3, keys, prefixes)  # noqa: E731
    topics = {  # name -> (partitions, plugin, placement of a record)
        "vip": (6, "vip", lambda r: vip_fn(r.key)),
        "hash": (5, "hash", lambda r: HASHES["fnv1a"](r.key, 5)),
        "route": (8, "route", lambda r: route.partition(r.key, r.value, r.headers, 8)),
        "m2": (7, "m2", lambda r: murmur2_partition(r.key, 7)),
    }
    names = {t: unique_topic(t) for t in topics}
    headers_fn = lambda rng, i: {"tier": ["gold", "silver", "x"][i % 3]}  # noqa: E731
    sent = {}
    for t, (n, plugin, fn) in topics.items():
        create_topic(broker, names[t], n, {"partitioner": plugin})
        recs = make_records(rng, 3000, headers_fn=headers_fn)
        pl = produce_all(api, names[t], recs, batch=1000)
        assert [p for p, _ in pl] == [fn(r) for r in recs], t
        sent[t] = (recs, pl)
    before = snapshot(api)
    listed = plugin_cli(broker, "list").stdout

    if how == "sigterm":
        assert broker.stop() == 0, "the broker did not exit cleanly on SIGTERM"
    else:
        broker.kill()
    broker.start()

    assert snapshot(api) == before
    assert [line.split()[:4] for line in plugin_cli(broker, "list").stdout.splitlines()] == \
        [line.split()[:4] for line in listed.splitlines()]
    d = api.describe("m2").body
    assert (d["limits"]["call_timeout_ms"], d["limits"]["max_memory_bytes"]) == (250, 16 << 20), d["limits"]

    # the same records again: the same partitions
    for t, (n, plugin, fn) in topics.items():
        recs, pl = sent[t]
        again = produce_all(api, names[t], recs, batch=1000)
        assert [p for p, _ in again] == [p for p, _ in pl], f"{t}: placement changed across the restart"
        expect_log(broker.bootstrap, names[t], n, recs + recs, pl + again)

    # rollback and deploy carry on from the stored versions
    assert plugin_cli(broker, "rollback", "vip").stdout.strip() == "vip now serves version 1"
    recs = make_records(rng, 1000, key_fn=lambda rng, i: [b"a", b"b", b"1%d" % i, b"x%d" % i][i % 4])
    pl = produce_all(api, names["vip"], recs)
    assert [p for p, _ in pl] == [vip_partition(r.key, 6, 2, {b"a", b"b"}, ()) for r in recs]
    out = json.loads(deploy_cli(broker, "hash", wasm_path("hash"), {"hash.algorithm": "crc32"}).stdout)
    assert (out["version"], out["cached"]) == (2, True), out  # the compiled code was kept on disk
    recs = make_records(rng, 1000)
    pl = produce_all(api, names["hash"], recs)
    assert [p for p, _ in pl] == [HASHES["crc32"](r.key, 5) for r in recs]


@pytest.mark.timeout(60)
def test_plugin_failed_state_survives_restart(broker):
    api = AdminApi(broker.admin)
    assert deployed_version(deploy_cli(broker, "p", wasm_path("panic"))) == 1
    topic = unique_topic("failed")
    create_topic(broker, topic, 3, {"partitioner": "p"})
    for _ in range(3):
        assert api.produce(topic, [{"key": "k", "value": "v"}]).code == "partitioner_failed"
    reason = api.describe("p").body["status"]
    assert reason["state"] == "failed", reason
    broker.restart()
    d = api.describe("p").body
    assert d["status"]["state"] == "failed", d["status"]
    r = api.produce(topic, [{"key": "k", "value": "v"}])
    assert (r.status, r.code) == (503, "partitioner_failed") and " is failed: " in r.message, r


@pytest.mark.timeout(90)
def test_plugin_remove_refused_while_a_topic_uses_it(broker, rng):
    api = AdminApi(broker.admin)
    assert deployed_version(deploy_cli(broker, "p", wasm_path("hash"), {"hash.algorithm": "crc32"})) == 1
    a, b, c = unique_topic("a"), unique_topic("b"), unique_topic("c")
    create_topic(broker, a, 4, {"partitioner": "p"})
    create_topic(broker, b, 4, {"partitioner": "p", "partitioner.fallback": "murmur2"})
    create_topic(broker, c, 4)

    r = api.remove("p")
    assert (r.status, r.code) == (409, "plugin_in_use"), r
    assert r.message.startswith("plugin 'p' is used by topic(s) ") and a in r.message and b in r.message \
        and c not in r.message, r.message
    proc = plugin_cli(broker, "remove", "p", check=False)
    assert proc.returncode != 0 and "(plugin_in_use, HTTP 409)" in proc.stderr and a in proc.stderr, proc.stderr
    # still there and serving
    recs = make_records(rng, 500)
    pl = produce_all(api, a, recs)
    assert [p for p, _ in pl] == [HASHES["crc32"](r.key, 4) for r in recs]

    alter_topic(broker, a, delete=("partitioner",))
    r = api.remove("p")
    assert (r.status, r.code) == (409, "plugin_in_use") and b in r.message and a not in r.message, r
    alter_topic(broker, b, {"partitioner": ""})  # empty: the built-in partitioner
    r = api.remove("p")
    assert r.status == 204, r
    assert [p["name"] for p in api.plugins()] == []
    r = api.describe("p")
    assert (r.status, r.code, r.message) == (404, "unknown_plugin", "no plugin named 'p'"), r
    proc = plugin_cli(broker, "remove", "p", check=False)
    assert proc.returncode != 0 and "no plugin named 'p' (unknown_plugin, HTTP 404)" in proc.stderr, proc.stderr

    # both topics now use the built-in murmur2, also after a restart
    more = {}
    for t in (a, b):
        more[t] = make_records(rng, 500)
        placed = produce_all(api, t, more[t])
        assert [p for p, _ in placed] == [murmur2_partition(r.key, 4) for r in more[t]]
    broker.restart()
    assert api.plugins() == []
    for t in (a, b):
        placed = produce_all(api, t, more[t])
        assert [p for p, _ in placed] == [murmur2_partition(r.key, 4) for r in more[t]]
    # the name is free again: a new deploy starts at version 1
    assert deployed_version(deploy_cli(broker, "p", wasm_path("murmur2"))) == 1
