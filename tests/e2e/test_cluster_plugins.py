"""Plugins in a cluster: a deploy, rollback or removal through any broker's admin
API is kept in the controller's metadata, so every broker serves the same versions,
a broker that was down catches up when it returns, and a plugin a topic anywhere
in the cluster uses cannot be removed."""

from __future__ import annotations

import pytest

from plugins_kit import AdminApi, wasm_path

pytestmark = pytest.mark.timeout(240)


def serving(api: AdminApi, name: str):
    """(active version, state, [versions]) as one broker describes the plugin, or
    None when it does not know it."""
    r = api.describe(name)
    if r.status == 404:
        return None
    assert r.status == 200, r
    return r.body["active_version"], r.body["status"]["state"], [v["version"] for v in r.body["versions"]]


def wait_everywhere(c, apis: dict, name: str, want, what: str):
    c.wait(lambda: all(serving(apis[i], name) == want for i in c.live_ids()), 30,
           f"every broker to show plugin {name} as {want} ({what})")


def test_deploy_rollback_and_remove_through_any_broker_reach_every_broker(cluster_factory):
    c = cluster_factory(3)
    apis = {i: AdminApi(c.broker(i).admin) for i in c.ids}
    murmur2 = wasm_path("murmur2").read_bytes()
    hashing = wasm_path("hash").read_bytes()

    r = apis[1].deploy("route", murmur2)
    assert (r.status, r.body["version"]) == (201, 1), r
    wait_everywhere(c, apis, "route", (1, "active", [1]), "deployed through broker 1")

    r = apis[2].deploy("route", hashing, config={"hash.algorithm": "fnv1a"})
    assert (r.status, r.body["version"]) == (201, 2), r
    wait_everywhere(c, apis, "route", (2, "active", [1, 2]), "v2 through broker 2")
    for i in c.ids:
        v2 = apis[i].describe("route").body["versions"][1]
        assert v2["config"] == [["hash.algorithm", "fnv1a"]], (i, v2)

    # a broker that is down misses a rollback and a new deploy, and catches up on return
    c.kill(3)
    r = apis[1].rollback("route")
    assert (r.status, r.body) == (200, {"active_version": 1}), r
    r = apis[2].deploy("other", murmur2)
    assert r.status == 201, r
    c.restart(3)
    c.wait_formed()
    wait_everywhere(c, apis, "route", (1, "active", [1, 2]), "rolled back while broker 3 was down")
    wait_everywhere(c, apis, "other", (1, "active", [1]), "deployed while broker 3 was down")

    # in use by a topic (hosted or not on the broker asked): refused everywhere
    topic = "uses-route"
    c.create_topic(topic, 1, rf=1, config={"partitioner": "route", "min.insync.replicas": "1"})
    for i in c.ids:
        r = apis[i].remove("route")
        assert (r.status, r.code) == (409, "plugin_in_use"), (i, r)
        assert topic in r.message, r
    c.admin().delete_topics([topic])[topic].result(30)

    r = apis[3].remove("route")
    assert r.status == 204, r
    wait_everywhere(c, apis, "route", None, "removed through broker 3")
    assert sorted(p["name"] for p in apis[1].plugins()) == ["other"]
    r = apis[1].rollback("route")
    assert (r.status, r.code) == (404, "unknown_plugin"), r

    # a whole-cluster restart keeps what the metadata says
    for i in c.ids:
        c.kill(i)
    c.start()  # all processes first: none is ready before a quorum is back
    wait_everywhere(c, apis, "other", (1, "active", [1]), "after a full restart")
    assert all(serving(apis[i], "route") is None for i in c.ids)


def test_a_bad_deploy_is_refused_before_any_broker_sees_it(cluster_factory):
    c = cluster_factory(3)
    apis = {i: AdminApi(c.broker(i).admin) for i in c.ids}
    r = apis[2].deploy("broken", wasm_path("bad-config").read_bytes(), config={"unknown.key": "x"})
    assert (r.status, r.code) == (422, "init_failed"), r
    r = apis[2].deploy("not-wasm", b"\0asm but not really")
    assert r.status == 422, r
    for i in c.ids:
        assert apis[i].plugins() == [], i
