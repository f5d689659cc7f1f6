"""Helpers for the transform end-to-end tests: the transforms admin API and CLI as a
user drives them, producing input with a Kafka client, reading whole topics back, and
waiting for a transform's partitions to reach a state. Every assertion on what the
user sees stays in the tests."""

from __future__ import annotations

import json
import time
from typing import Callable, Optional

from confluent_kafka import TopicPartition

from clients import consumer, producer
from harness import wait_until
from plugins_kit import AdminApi, Reply, plugin_cli, quiver, wasm_path


# --- driving the feature ---------------------------------------------------------------------


class TransformApi(AdminApi):
    """The admin API with the transform endpoints."""

    def deploy_transform(self, body: dict) -> Reply:
        return self.request("POST", "/v1/transforms", json.dumps(body).encode(),
                            {"Content-Type": "application/json"})

    def transform(self, name: str) -> Reply:
        return self.request("GET", f"/v1/transforms/{name}")

    def transforms(self) -> list:
        r = self.request("GET", "/v1/transforms")
        assert r.status == 200, r
        return r.body["transforms"]

    def pause(self, name: str) -> Reply:
        return self.request("POST", f"/v1/transforms/{name}/pause")

    def resume(self, name: str) -> Reply:
        return self.request("POST", f"/v1/transforms/{name}/resume")

    def remove_transform(self, name: str) -> Reply:
        return self.request("DELETE", f"/v1/transforms/{name}")


def transform_cli(broker, *args: str, check: bool = True):
    return quiver("transform", *args, "--admin", broker.admin, check=check)


def deploy_transform_plugin(broker, name: str, plugin: str, *extra: str) -> dict:
    """`quiver plugin deploy NAME --kind transform --file <plugin>.wasm [extra] --json`."""
    proc = plugin_cli(broker, "deploy", name, "--kind", "transform", "--file", str(wasm_path(plugin)), *extra,
                      "--json")
    out = json.loads(proc.stdout)
    assert (out["name"], out["kind"]) == (name, "transform"), out
    return out


def produce(bootstrap: str, topic: str, records: list, **conf) -> list:
    """Produces records with confluent-kafka (idempotent); each record is a dict with
    key, value and optionally headers, timestamp, partition. Every one must be
    acknowledged. Returns [(partition, offset)] in record order."""
    p = producer(bootstrap, **{"enable.idempotence": True, **conf})
    placed: list = [None] * len(records)
    errors = []

    def report(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                placed[i] = (msg.partition(), msg.offset())
        return cb

    for i, r in enumerate(records):
        kwargs = {"key": r.get("key"), "value": r.get("value"), "on_delivery": report(i)}
        if r.get("headers"):
            kwargs["headers"] = r["headers"]
        if r.get("timestamp") is not None:
            kwargs["timestamp"] = r["timestamp"]
        if r.get("partition") is not None:
            kwargs["partition"] = r["partition"]
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(120) == 0, "records still unacknowledged after 120 s"
    assert not errors, errors[:5]
    return placed


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict:
    c = consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(partitions)}
    finally:
        c.close()


def scan_topic(bootstrap: str, topic: str, partitions: int, visit: Callable, timeout: float = 180.0) -> dict:
    """Reads every record of every partition up to its end offset now, calling
    visit(partition, offset, key, value, headers, timestamp) in offset order per
    partition; fails on a consumer error or a gap in the offsets. Returns the end offsets."""
    ends = end_offsets(bootstrap, topic, partitions)
    c = consumer(bootstrap, **{"fetch.max.bytes": 16 << 20, "max.partition.fetch.bytes": 8 << 20})
    try:
        pending = {p for p, end in ends.items() if end > 0}
        nxt = {p: 0 for p in range(partitions)}
        if pending:
            c.assign([TopicPartition(topic, p, 0) for p in sorted(pending)])
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"reading {topic}: at {nxt}, want {ends}"
            for m in c.consume(num_messages=20000, timeout=0.5):
                assert not m.error(), f"consumer error: {m.error()!r}"
                p, o = m.partition(), m.offset()
                if o >= ends[p]:
                    continue
                assert o == nxt[p], f"{topic}/{p}: read offset {o}, expected {nxt[p]}"
                nxt[p] = o + 1
                visit(p, o, m.key(), m.value(), list(m.headers() or []), m.timestamp()[1])
                if nxt[p] >= ends[p]:
                    pending.discard(p)
        return ends
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, partitions: int) -> dict:
    """{partition: [(offset, key, value, headers, timestamp)]} of the whole topic now."""
    out = {p: [] for p in range(partitions)}
    scan_topic(bootstrap, topic, partitions, lambda p, *rest: out[p].append(rest))
    return out


def describe(api: TransformApi, name: str) -> dict:
    r = api.transform(name)
    assert r.status == 200, r
    return r.body


def try_describe(api: TransformApi, name: str) -> Optional[dict]:
    """describe, or None while the broker does not answer (restarting) or knows no such
    transform yet."""
    try:
        r = api.transform(name)
    except OSError:
        api.close()
        return None
    return r.body if r.status == 200 else None


def wait_caught_up(api: TransformApi, name: str, counts: dict, timeout: float = 120.0, broker=None) -> dict:
    """Waits until the transform runs on exactly the partitions of `counts` with every
    position == high watermark == the partition's input count; returns describe. With
    `broker`, fails at once if it exits."""
    last = {}

    def caught_up():
        if broker is not None:
            assert broker.alive(), "the broker exited:\n" + broker.stderr_text()[-1500:]
        body = last["body"] = try_describe(api, name)
        if body is None:
            return False
        parts = body["partitions"]
        return (sorted(p["partition"] for p in parts) == sorted(counts)
                and all(p["state"] == "running" and p["position"] == p["high_watermark"] == counts[p["partition"]]
                        for p in parts)) and body

    try:
        return wait_until(caught_up, timeout, f"transform {name} to catch up with {counts}", interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}; last describe: {last.get('body')}") from None


def wait_all_in_state(api: TransformApi, name: str, partitions: int, states: tuple,
                      timeout: float = 120.0, also: Callable = lambda p: True) -> dict:
    """Waits until all `partitions` partitions of the transform are in one of `states`
    (and satisfy `also`); returns describe."""
    last = {}

    def reached():
        body = last["body"] = try_describe(api, name)
        if body is None:
            return False
        parts = body["partitions"]
        return len(parts) == partitions and all(p["state"] in states and also(p) for p in parts) and body

    try:
        return wait_until(reached, timeout, f"transform {name}: every partition {states}", interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}; last describe: {last.get('body')}") from None


def counts_of(placed: list, partitions: int) -> dict:
    out = {p: 0 for p in range(partitions)}
    for p, _ in placed:
        out[p] += 1
    return out


def by_input_partition(records: list, placed: list) -> dict:
    """{input partition: [record, ...]} in offset order."""
    out: dict = {}
    for r, (p, o) in sorted(zip(records, placed), key=lambda x: x[1]):
        out.setdefault(p, []).append(r)
    return out
