"""Native (C ABI) partitioner plugins: refused unless plugins.native.enabled, loaded
only from plugins.native.dirs, and then the murmur2 library places 100k records
exactly like the Java client's murmur2, readable at their acknowledged offsets."""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from clients import unique_topic
from plugins_kit import (AdminApi, create_topic, expect_log, make_records, murmur2_partition, native_murmur2_path,
                         plugin_cli, produce_all)

LIB = "libquiver_plugin_murmur2.so"


def deploy_native(broker, name: str, file: str, check: bool = True):
    return plugin_cli(broker, "deploy", name, "--kind", "partitioner", "--native", file, "--json", check=check)


@pytest.mark.timeout(60)
def test_plugin_native_refused_when_disabled(broker_factory, tmp_path):
    libdir = tmp_path / "native"
    libdir.mkdir()
    shutil.copy(native_murmur2_path(), libdir / LIB)
    # the directory is configured, but native plugins are not enabled
    broker = broker_factory(sets={"plugins.native.dirs": json.dumps([str(libdir)])})
    api = AdminApi(broker.admin)
    r = api.request("PUT", f"/v1/plugins/nat?kind=partitioner&native={LIB}")
    assert (r.status, r.code, r.message) == \
        (403, "native_not_allowed", "native plugins: disabled (set plugins.native.enabled = true)"), r
    proc = deploy_native(broker, "nat", LIB, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "native plugins: disabled (set plugins.native.enabled = true) (native_not_allowed, HTTP 403)" \
        in proc.stderr, proc.stderr
    assert api.plugins() == []


@pytest.mark.timeout(150)
def test_plugin_native_murmur2_places_100k_records(broker_factory, tmp_path, rng):
    libdir = tmp_path / "native"
    libdir.mkdir()
    shutil.copy(native_murmur2_path(), libdir / LIB)
    shutil.copy(native_murmur2_path(), tmp_path / "x.so")  # a real library, outside the directory
    os.symlink(tmp_path / "x.so", libdir / "link.so")  # inside by name, outside in fact
    (libdir / "notalib.so").write_bytes(random.Random(3).randbytes(4096))
    broker = broker_factory(sets={"plugins.native.enabled": "true",
                                  "plugins.native.dirs": json.dumps([str(libdir)])})
    api = AdminApi(broker.admin)

    for file in ["../x.so", str(tmp_path / "x.so"), "link.so", "missing.so", "."]:
        r = api.request("PUT", f"/v1/plugins/nat?kind=partitioner&native={file}")
        assert (r.status, r.code, r.message) == (
            403, "native_not_allowed",
            f"native plugins: '{file}' is not a file inside plugins.native.dirs ({libdir})"), (file, r)
        proc = deploy_native(broker, "nat", file, check=False)
        assert proc.returncode != 0 and "(native_not_allowed, HTTP 403)" in proc.stderr, (file, proc.stderr)
    r = api.request("PUT", "/v1/plugins/nat?kind=partitioner&native=notalib.so")
    assert (r.status, r.code) == (422, "native_load_failed"), r
    assert r.message.startswith(f"native plugin: {libdir / 'notalib.so'}: cannot load"), r.message
    assert api.plugins() == [], "a refused native deploy left a plugin behind"

    out = json.loads(deploy_native(broker, "nat", LIB).stdout)
    assert (out["name"], out["version"], out["kind"]) == ("nat", 1, "partitioner"), out
    d = api.describe("nat").body
    assert [v["source"] for v in d["versions"]] == [{"native": {"path": str(libdir / LIB)}}], d["versions"]
    assert d["status"] == {"state": "active"}, d

    partitions = 12
    topic = unique_topic("native")
    create_topic(broker, topic, partitions, {"partitioner": "nat"})
    records = make_records(rng, 100_000)
    placements = produce_all(api, topic, records)
    wrong = [(r.key, p) for r, (p, _) in zip(records, placements) if p != murmur2_partition(r.key, partitions)]
    assert not wrong, f"{len(wrong)} records misplaced by the native murmur2; first: {wrong[:5]}"
    expect_log(broker.bootstrap, topic, partitions, records, placements)
    d = api.describe("nat").body
    assert (d["metrics"]["records"], d["metrics"]["errors"]) == (100_000, 0), d["metrics"]

    # the deployment survives a restart and places the same keys the same way
    broker.restart()
    again = produce_all(api, topic, records[:2000])
    assert [p for p, _ in again] == [p for p, _ in placements[:2000]]


def native_broker_with_plugin(broker_factory, tmp_path):
    libdir = tmp_path / "native"
    libdir.mkdir()
    shutil.copy(native_murmur2_path(), libdir / LIB)
    enabled = {"plugins.native.enabled": "true", "plugins.native.dirs": json.dumps([str(libdir)])}
    broker = broker_factory(sets=enabled)
    deploy_native(broker, "nat", LIB)
    topic = unique_topic("native")
    create_topic(broker, topic, 3, {"partitioner": "nat"})
    # restarted with native plugins disabled: the stored deployment cannot load
    broker.stop()
    broker.sets = {"plugins.native.dirs": enabled["plugins.native.dirs"]}
    broker.start()
    return broker, topic, enabled


@pytest.mark.timeout(90)
def test_plugin_native_deployment_that_no_longer_loads_is_failed(broker_factory, tmp_path, rng):
    broker, topic, enabled = native_broker_with_plugin(broker_factory, tmp_path)
    api = AdminApi(broker.admin)
    d = api.describe("nat").body
    assert (d["active_version"], d["status"]["state"]) == (1, "failed"), d
    assert [p["name"] for p in api.plugins()] == ["nat"]
    r = api.produce(topic, [{"key": "k", "value": "v"}])
    assert (r.status, r.code) == (503, "partitioner_failed"), r
    # enabled again: it serves again, with murmur2 placement
    broker.stop()
    broker.sets = enabled
    broker.start()
    assert api.describe("nat").body["status"] == {"state": "active"}
    records = make_records(rng, 1000)
    placements = produce_all(api, topic, records)
    assert [p for p, _ in placements] == [murmur2_partition(r.key, 3) for r in records]
    expect_log(broker.bootstrap, topic, 3, records, placements)


@pytest.mark.timeout(90)
def test_plugin_native_deployment_that_no_longer_loads_explains_itself(broker_factory, tmp_path):
    broker, topic, _ = native_broker_with_plugin(broker_factory, tmp_path)
    api = AdminApi(broker.admin)
    r = api.logs("nat")
    assert r.status == 200, r
    r = api.produce(topic, [{"key": "k", "value": "v"}])
    assert "not deployed" not in r.message, r.message
