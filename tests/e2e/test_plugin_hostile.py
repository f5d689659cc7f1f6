"""Hostile and broken partitioner plugins. Deploys that cannot serve are refused with
the right code and a message naming the problem, and the version already serving
keeps serving. Plugins that misbehave when called (infinite loop, memory bomb,
panic, out-of-range partition, huge output) fail the produce with 503
partitioner_failed and the reason; repeated traps mark the plugin failed with the
reason in `plugin describe`; partitioner.fallback=murmur2 keeps the topic writable;
rollback brings the previous version back. Throughout, a Kafka producer/consumer and
a topic routed by a healthy plugin keep working, failed produces write nothing, no
acknowledged record is lost and the broker neither crashes nor panics."""

from __future__ import annotations

import random
import re

import pytest

from clients import unique_topic
from plugins_kit import (AdminApi, PluginTraffic, alter_topic, create_topic, deploy_cli, deployed_version,
                         Rec, expect_log, make_records, murmur2_partition, plugin_cli, produce_all, wasm_path)
from traffic import HealthyTraffic


def component(plugin: str) -> bytes:
    return wasm_path(plugin).read_bytes()


def patched_api_version(text: bytes) -> bytes:
    """The murmur2 component with its `quiver:api-version` custom section renamed or
    given another version (same length, so the binary stays valid)."""
    wasm = component("murmur2")
    section = b"\x12quiver:api-version0.1.0"
    assert wasm.count(section) == 1, "the murmur2 component's api-version section has an unexpected layout"
    return wasm.replace(section, text)


# name: (body, kind, config, HTTP status, code, what the message must say)
REFUSED = {
    "random-bytes": (lambda: random.Random(7).randbytes(4096), "partitioner", {}, 422, "not_a_component",
                     "not a WebAssembly component: the bytes do not start with the WebAssembly magic number"),
    "core-module": (lambda: b"\0asm\x01\0\0\0", "partitioner", {}, 422, "not_a_component",
                    "this is a core WebAssembly module, not a component"),
    "truncated-component": (lambda: component("murmur2")[:50_000], "partitioner", {}, 422, "not_a_component",
                            "not a WebAssembly component: unexpected end-of-file"),
    "no-api-version": (lambda: patched_api_version(b"\x12quiver:api-versioX0.1.0"), "partitioner", {}, 422,
                       "unsupported_api_version", "declares no plugin API version"),
    "future-api-version": (lambda: patched_api_version(b"\x12quiver:api-version9.9.9"), "partitioner", {}, 422,
                           "unsupported_api_version", "implements plugin API 9.9.9; this broker supports 0.1.0"),
    "wrong-kind": (lambda: component("wrong-kind"), "partitioner", {}, 422, "wrong_kind",
                   "does not implement the partitioner world"),
    "bad-import": (lambda: component("bad-import"), "partitioner", {}, 422, "unsatisfied_import",
                   "cannot be linked in the sandbox: component imports instance `quiver:evil/thing`"),
    "bad-config-missing-key": (lambda: component("bad-config"), "partitioner", {}, 422, "init_failed",
                               "init failed: invalid config: missing required config key `required.key`"),
    "bad-config-other-key": (lambda: component("bad-config"), "partitioner", {"other.key": "1"}, 422,
                             "init_failed", "missing required config key `required.key`"),
    "vip-bad-value": (lambda: component("vip"), "partitioner", {"vip.partitions": "x", "vip.keys": "a"}, 422,
                      "init_failed", "config key `vip.partitions` has invalid value \"x\""),
    "vip-unknown-key": (lambda: component("vip"), "partitioner", {"vip.partitions": "2", "vip.kyes": "a"}, 422,
                        "init_failed", "unknown config key `vip.kyes`"),
    "field-route-no-source": (lambda: component("field-route"), "partitioner", {"route.map": "a:0"}, 422,
                              "init_failed", "set `route.header` or `route.json-field`"),
    "wrong-kind-quota-policy": (lambda: component("wrong-kind"), "quota-policy", {}, 422, "wrong_kind",
                                "does not implement the quota-policy world"),
}


@pytest.mark.timeout(150)
def test_plugin_refused_deploys_keep_the_serving_version(broker_factory, tmp_path, rng):
    broker = broker_factory()
    api = AdminApi(broker.admin)
    topic = unique_topic("refused")
    assert deployed_version(deploy_cli(broker, "p", wasm_path("murmur2"))) == 1
    assert deployed_version(deploy_cli(broker, "good", wasm_path("murmur2"))) == 1
    create_topic(broker, topic, 6, {"partitioner": "p"})
    healthy_topic = unique_topic("healthy")
    create_topic(broker, healthy_topic, 4, {"partitioner": "good"})
    records = make_records(rng, 300)
    placements = produce_all(api, topic, records, batch=100)
    problems = []
    with HealthyTraffic(broker.bootstrap) as healthy, \
            PluginTraffic(broker, healthy_topic, 4, murmur2_partition) as plugin_traffic:
        for case, (body, kind, config, status, code, message) in REFUSED.items():
            wasm = body()
            replacing, replacing_code = message, code
            if kind != "partitioner":
                replacing = f"plugin 'p' is a partitioner; a {kind} cannot replace it"
                replacing_code = "unsupported_kind"
            # replace p; a first deploy
            for name, want, want_code in (("p", replacing, replacing_code), (f"new-{case}", message, code)):
                r = api.deploy(name, wasm, config, kind=kind)
                if (r.status, r.code) != (status, want_code) or want not in r.message:
                    problems.append(f"{case} ({name}) over HTTP: {r}")
            # the CLI: non-zero exit with the reason and the code on stderr
            f = tmp_path / f"{case}.wasm"
            f.write_bytes(wasm)
            args = ["deploy", "p", "--kind", kind, "--file", str(f)]
            for k, v in config.items():
                args += ["--config", f"{k}={v}"]
            proc = plugin_cli(broker, *args, check=False)
            if (proc.returncode == 0 or replacing not in proc.stderr
                    or f"({replacing_code}, HTTP {status})" not in proc.stderr):
                problems.append(f"{case} via CLI: exit {proc.returncode}, stderr {proc.stderr!r}")
            r = api.describe(f"new-{case}")
            if (r.status, r.code) != (404, "unknown_plugin"):
                problems.append(f"{case}: a refused first deploy left a plugin behind: {r}")
        healthy.wait_progress(10)
        plugin_traffic.wait_progress(3)
    assert not problems, "\n".join(problems)

    # nothing of the refused deploys was recorded; version 1 still serves
    d = api.describe("p").body
    assert (d["active_version"], [v["version"] for v in d["versions"]], d["status"]) == (1, [1], {"state": "active"})
    assert [p["name"] for p in api.plugins()] == ["good", "p"]

    # bad-config with its required key deploys, and puts everything on partition 0
    r = api.deploy("configured", component("bad-config"), {"required.key": "x"})
    assert r.status == 201 and (r.body["name"], r.body["version"]) == ("configured", 1), r
    configured = unique_topic("configured")
    create_topic(broker, configured, 3, {"partitioner": "configured"})
    assert {p for p, _ in produce_all(api, configured, make_records(rng, 100))} == {0}
    more = make_records(rng, 300)
    more_placements = produce_all(api, topic, more, batch=100)
    assert [p for p, _ in more_placements] == [murmur2_partition(r.key, 6) for r in more]
    expect_log(broker.bootstrap, topic, 6, records + more, placements + more_placements)
    assert broker.alive()


# plugin: (broker settings, deploy options, the trap's reason as produce and describe report it)
TRAPS = {
    "infinite-loop": ({"plugins.call_timeout_ms": "300", "plugins.max_traps": "2"}, [],
                      re.escape("exceeded its 300 ms call deadline")),
    "memory-bomb": ({}, ["--max-memory-bytes", str(8 << 20)],
                    r"forcing trap when growing memory to (\d+) bytes"),
    "panic": ({}, [], re.escape("hit an unreachable instruction (a panic in Rust guests)")),
}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("plugin", list(TRAPS))
def test_plugin_trapping_partitioner_is_contained(broker_factory, rng, plugin):
    sets, deploy_opts, reason = TRAPS[plugin]
    max_traps = int(sets.get("plugins.max_traps", "3"))
    broker = broker_factory(sets=sets)
    api = AdminApi(broker.admin)
    assert deployed_version(deploy_cli(broker, "good", wasm_path("murmur2"))) == 1
    healthy_topic = unique_topic("healthy")
    create_topic(broker, healthy_topic, 4, {"partitioner": "good"})

    topic = unique_topic(plugin)
    create_topic(broker, topic, 5, {"partitioner": "p"})
    assert deployed_version(deploy_cli(broker, "p", wasm_path("murmur2"))) == 1
    acked, acked_at = [], []

    def produce_ok(n):
        recs = make_records(rng, n)
        pl = produce_all(api, topic, recs, batch=n)
        acked.extend(recs)
        acked_at.extend(pl)
        return recs, pl

    recs, pl = produce_ok(200)
    assert [p for p, _ in pl] == [murmur2_partition(r.key, 5) for r in recs]

    with HealthyTraffic(broker.bootstrap) as healthy, \
            PluginTraffic(broker, healthy_topic, 4, murmur2_partition) as plugin_traffic:
        # version 2 is the hostile plugin: its init is fine, so the deploy succeeds
        assert deployed_version(deploy_cli(broker, "p", wasm_path(plugin), None, *deploy_opts)) == 2
        for i in range(max_traps):
            r = api.produce(topic, [x.json() for x in make_records(rng, 50)])
            assert (r.status, r.code) == (503, "partitioner_failed"), r
            assert re.fullmatch(f"partitioner plugin 'p' trapped: {reason}", r.message), r.message
            d = api.describe("p").body
            assert d["metrics"]["traps"] == i + 1, d["metrics"]
            assert d["status"]["state"] == ("failed" if i + 1 == max_traps else "active"), (i, d["status"])
        if plugin == "memory-bomb":
            assert int(re.search(reason, r.message).group(1)) > 8 << 20, r.message
        healthy.wait_progress(10)
        plugin_traffic.wait_progress(3)

        # marked failed with the reason; produce is refused without calling it
        failed_reason = f"{max_traps} consecutive traps; last: {reason}"
        d = api.describe("p").body
        assert d["status"]["state"] == "failed" and re.fullmatch(failed_reason, d["status"]["reason"]), d["status"]
        assert d["active_version"] == 2
        out = plugin_cli(broker, "describe", "p").stdout
        assert re.search(r"^status:\s+FAILED: " + failed_reason + "$", out, re.M), out
        r = api.produce(topic, [x.json() for x in make_records(rng, 50)])
        assert (r.status, r.code) == (503, "partitioner_failed"), r
        assert re.fullmatch(f"partitioner plugin 'p' is failed: {failed_reason}", r.message), r.message
        assert api.describe("p").body["metrics"]["traps"] == max_traps, "a failed plugin was called again"
        logs = [line["line"] for line in api.logs("p", 1000).body["lines"]]
        assert any(re.fullmatch(f"marked failed: {failed_reason}", line) for line in logs), logs[-10:]
        if plugin == "panic":  # the guest's stderr is captured into the plugin's log
            assert any("hostile test plugin: panic in partition" in line for line in logs), logs[-10:]

        # fallback: the topic stays writable, with murmur2 placement
        alter_topic(broker, topic, {"partitioner.fallback": "murmur2"})
        recs, pl = produce_ok(500)
        assert [p for p, _ in pl] == [murmur2_partition(r.key, 5) for r in recs]
        alter_topic(broker, topic, {"partitioner.fallback": "fail"})
        r = api.produce(topic, [x.json() for x in make_records(rng, 5)])
        assert (r.status, r.code) == (503, "partitioner_failed"), r

        # rollback serves version 1 again, active
        out = plugin_cli(broker, "rollback", "p").stdout
        assert out.strip() == "p now serves version 1", out
        d = api.describe("p").body
        assert (d["active_version"], d["status"]) == (1, {"state": "active"}), d
        recs, pl = produce_ok(300)
        assert [p for p, _ in pl] == [murmur2_partition(r.key, 5) for r in recs]
        healthy.wait_progress(10)
        plugin_traffic.wait_progress(3)

    # the topic holds exactly the acknowledged records: the refused produces wrote nothing
    expect_log(broker.bootstrap, topic, 5, acked, acked_at)
    assert broker.alive()


# plugin: (deploy options, message for a 1-record produce to a 3-partition topic)
BAD_OUTPUT = {
    "out-of-range": ([], "returned bad output: chose partition 3 for record 0, but the topic has 3 partitions"),
    "huge-output": ([], "returned bad output: returned 4194304 partitions for 1 records"),
    "huge-output-capped": (["--max-output-bytes", "4096"],
                           "returned bad output: returned 16777216 bytes of output, more than the 4096 allowed"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(BAD_OUTPUT))
def test_plugin_bad_output_fails_the_produce(broker_factory, rng, case):
    plugin = case.removesuffix("-capped")
    deploy_opts, message = BAD_OUTPUT[case]
    broker = broker_factory()
    api = AdminApi(broker.admin)
    assert deployed_version(deploy_cli(broker, "p", wasm_path(plugin), None, *deploy_opts)) == 1
    topic = unique_topic(plugin)
    create_topic(broker, topic, 3, {"partitioner": "p"})
    with HealthyTraffic(broker.bootstrap) as healthy:
        # plugins.max_traps (3) bad answers in a row mark the plugin failed; up to then
        # each produce gets the plugin's bad answer as the reason
        for i in range(3):
            r = api.produce(topic, [{"key": f"k{i}", "value": "v"}])
            assert (r.status, r.code, r.message) == (503, "partitioner_failed", f"partitioner plugin 'p' {message}")
        # records with a partition of their own do not need the partitioner
        r = api.produce(topic, [{"key": "k", "value": "placed", "partition": 2}])
        assert r.status == 200 and r.body["offsets"] == [{"partition": 2, "offset": 0}], r
        d = api.describe("p").body
        assert (d["metrics"]["calls"], d["metrics"]["errors"], d["metrics"]["traps"]) == (3, 3, 0), d["metrics"]
        assert d["status"]["state"] == "failed", d["status"]
        logs = [line["line"] for line in api.logs("p").body["lines"]]
        assert logs.count(f"call failed: {message}") == 3, logs[-10:]

        alter_topic(broker, topic, {"partitioner.fallback": "murmur2"})
        recs = make_records(rng, 400)
        pl = produce_all(api, topic, recs, batch=200)
        assert [p for p, _ in pl] == [murmur2_partition(r.key, 3) for r in recs]
        healthy.wait_progress(10)
    expect_log(broker.bootstrap, topic, 3, [Rec(b"k", b"placed", {})] + recs, [(2, 0)] + pl)
    assert broker.alive()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("plugin", ["out-of-range", "huge-output"])
def test_plugin_bad_output_marks_the_plugin_failed(broker_factory, plugin):
    broker = broker_factory()
    api = AdminApi(broker.admin)
    assert deployed_version(deploy_cli(broker, "p", wasm_path(plugin))) == 1
    topic = unique_topic(plugin)
    create_topic(broker, topic, 3, {"partitioner": "p"})
    for i in range(3):  # plugins.max_traps defaults to 3
        r = api.produce(topic, [{"key": f"k{i}", "value": "v"}])
        assert (r.status, r.code) == (503, "partitioner_failed"), r
    d = api.describe("p").body
    assert d["status"]["state"] == "failed", d["status"]
    assert re.fullmatch("3 consecutive failed calls; last: returned bad output: .+", d["status"]["reason"]), d["status"]
    # a failed plugin is not called again: produce is refused with the reason
    r = api.produce(topic, [{"key": "k", "value": "v"}])
    assert (r.status, r.code) == (503, "partitioner_failed") and " is failed: 3 consecutive failed calls" in r.message, r
    assert api.describe("p").body["metrics"]["calls"] == 3
