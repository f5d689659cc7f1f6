"""Helpers for the transform end-to-end tests: the transforms admin API and CLI as a
user drives them, producing input with a Kafka client, reading whole topics back, and
waiting until a transform has caught up. Every assertion on what the user sees stays
in the tests."""

from __future__ import annotations

import json
import time
from typing import Optional

from confluent_kafka import Consumer, TopicPartition

from clients import consumer, producer
from harness import wait_until
from plugins_kit import AdminApi, Reply, plugin_cli, quiver, wasm_path


class TransformApi(AdminApi):
    """The admin API with the transform endpoints."""

    def deploy_transform(self, **body) -> Reply:
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


def deploy_plugin(broker, name: str, plugin: str, *extra: str):
    """`quiver plugin deploy NAME --kind transform --file <plugin>.wasm`."""
    proc = plugin_cli(broker, "deploy", name, "--kind", "transform", "--file", str(wasm_path(plugin)),
                      *extra, "--json")
    out = json.loads(proc.stdout)
    assert out["kind"] == "transform", out
    return out


def produce(bootstrap: str, topic: str, records: list, **conf) -> list:
    """Produces (key, value, headers[, partition]) tuples with confluent-kafka; every
    one must be acknowledged. Returns (partition, offset) per record, in order."""
    p = producer(bootstrap, **{"enable.idempotence": True, **conf})
    placed: list = [None] * len(records)
    errors = []

    def done(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                placed[i] = (msg.partition(), msg.offset())
        return cb

    for i, r in enumerate(records):
        key, value, headers = r[0], r[1], r[2]
        kwargs = {"key": key, "value": value, "headers": headers or None, "on_delivery": done(i)}
        if len(r) > 3:
            kwargs["partition"] = r[3]
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


def read_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 120.0) -> dict:
    """Every record of every partition up to its current end, as
    {partition: [(offset, key, value, headers)]}, in offset order."""
    c: Consumer = consumer(bootstrap)
    try:
        ends = {}
        for p in range(partitions):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        out = {p: [] for p in range(partitions)}
        wanted = [TopicPartition(topic, p, 0) for p in range(partitions) if ends[p] > 0]
        if not wanted:
            return out
        c.assign(wanted)
        deadline = time.monotonic() + timeout
        done = {p for p in range(partitions) if ends[p] == 0}
        while len(done) < partitions:
            assert time.monotonic() < deadline, f"reading {topic}: {len(done)}/{partitions} partitions done"
            for m in c.consume(10000, 1.0):
                assert m.error() is None, m.error()
                if m.offset() < ends[m.partition()]:
                    out[m.partition()].append((m.offset(), m.key(), m.value(), m.headers() or []))
                if m.offset() + 1 >= ends[m.partition()]:
                    done.add(m.partition())
        return out
    finally:
        c.close()


def wait_caught_up(api: TransformApi, name: str, input_counts: Optional[dict] = None,
                   timeout: float = 120.0) -> dict:
    """Waits until every partition of the transform runs with its position at the high
    watermark (and, with `input_counts`, that watermark is the input's count); returns
    the describe body."""
    last = {}

    def caught_up():
        r = api.transform(name)
        if r.status != 200:
            return False
        last["body"] = r.body
        parts = r.body["partitions"]
        if not parts or any(p["state"] != "running" or p["position"] != p["high_watermark"] for p in parts):
            return False
        if input_counts is not None:
            return {p["partition"]: p["high_watermark"] for p in parts} == input_counts
        return True

    try:
        wait_until(caught_up, timeout, f"transform {name} to catch up", interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; last describe: {last.get('body')}") from None
    return last["body"]


def wait_state(api: TransformApi, name: str, state: str, timeout: float = 60.0) -> dict:
    """Waits until some partition of the transform is in `state`; returns that partition."""
    found = {}

    def reached():
        r = api.transform(name)
        for p in (r.body or {}).get("partitions", []) if r.status == 200 else []:
            if p["state"] == state:
                found["p"] = p
                return True
        found["last"] = r.body
        return False

    try:
        wait_until(reached, timeout, f"transform {name} to have a partition {state}", interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; last describe: {found.get('last')}") from None
    return found["p"]
