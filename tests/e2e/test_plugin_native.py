"""Native (C ABI) plugins: refused unless plugins.native.enabled, loaded only from
plugins.native.dirs, and then the murmur2 library places 100k records exactly like the
Java client's murmur2, readable at their acknowledged offsets; the json-redact library
runs a transform whose every output record is the redacted input."""

from __future__ import annotations

import json
import os
import random
import shutil
import time

import pytest

from clients import unique_topic
from plugins_kit import (AdminApi, create_topic, expect_log, make_records, murmur2_partition, native_murmur2_path,
                         native_path, plugin_cli, produce_all)

LIB = "libquiver_plugin_murmur2.so"
REDACT_LIB = "libquiver_plugin_json_redact.so"


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


@pytest.mark.timeout(180)
def test_plugin_native_transform_redacts_every_record(broker_factory, tmp_path):
    """The json-redact library built natively runs a transform as its WASM build does:
    every record comes out redacted, with its key, headers and timestamp, in input order,
    in the partition murmur2 of its key picks; a bad configuration is refused by the
    library's init; and a native library is only accepted as the kind it declares."""
    from test_transforms import assert_transformed, expected_outputs, order_records, redact
    from transforms_kit import TransformApi, counts_of, produce, read_topic, transform_cli, wait_caught_up

    libdir = tmp_path / "native"
    libdir.mkdir()
    shutil.copy(native_path(REDACT_LIB), libdir / REDACT_LIB)
    broker = broker_factory(sets={"plugins.native.enabled": "true",
                                  "plugins.native.dirs": json.dumps([str(libdir)])})
    api = TransformApi(broker.admin)

    r = api.request("PUT", f"/v1/plugins/nat?kind=partitioner&native={REDACT_LIB}")
    assert (r.status, r.code, r.message) == (
        422, "wrong_kind", f"{libdir / REDACT_LIB} is a 'transform' plugin, not a partitioner"), r
    r = api.request("PUT", f"/v1/plugins/nat?kind=quota-policy&native={REDACT_LIB}")
    assert (r.status, r.code, r.message) == (
        422, "unsupported_kind",
        "native plugins can be partitioners or transforms; a quota-policy must be a WASM component"), r
    out = json.loads(plugin_cli(broker, "deploy", "redact", "--kind", "transform", "--native", REDACT_LIB,
                                "--json").stdout)
    assert (out["name"], out["version"], out["kind"]) == ("redact", 1, "transform"), out
    assert api.describe("redact").body["versions"][0]["source"] == {"native": {"path": str(libdir / REDACT_LIB)}}

    src, dst = unique_topic("orders"), unique_topic("orders-clean")
    create_topic(broker, src, 3)
    create_topic(broker, dst, 4)
    proc = transform_cli(broker, "deploy", "--name", "bad", "--plugin", "redact", "--input", src,
                         "--output", dst, check=False)
    assert proc.returncode != 0, proc.stdout
    assert ("plugin 'redact' init failed: invalid config: set `paths` to the comma-separated JSON paths to "
            "redact, e.g. paths=customer.email (init_failed, HTTP 422)") in proc.stderr, proc.stderr

    records = order_records(0, 5000, int(time.time() * 1000) - 3_600_000)
    placed = produce(broker.bootstrap, src, records)
    transform_cli(broker, "deploy", "--name", "clean", "--plugin", "redact", "--input", src, "--output", dst,
                  "--config", "paths=user.email,card.number", "--config", "mask=<hidden>")
    counts = counts_of(placed, 3)
    body = wait_caught_up(api, "clean", counts, broker=broker)
    assert (body["status"], body["records_in"], body["records_out"], body["errors"]) == \
        ("running", 5000, 5000, 0), body
    clean = lambda v: redact(v, ["user.email", "card.number"], mask="<hidden>")  # noqa: E731
    assert_transformed(read_topic(broker.bootstrap, dst, 4), expected_outputs(records, placed, clean),
                       lambda rec: murmur2_partition(rec[0], 4), "native clean")
    assert broker.alive()
