"""Helpers for the plugin end-to-end tests: where the built plugins are, the
admin API and CLI as a user drives them, HTTP produce, and the partitioners'
functions computed independently in Python (from their documented rules, not
from the broker's code) so a test can predict every record's partition.

The helpers only drive the broker and compute expectations; every assertion
on what the user saw stays in the tests (except `expect_log`, whose whole job
is comparing what a Kafka consumer reads with what HTTP produce acknowledged)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import subprocess
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from clients import admin, consumer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import OffsetSpec
from harness import quiver_bin

# --- where the plugins are ----------------------------------------------------------

WASM = {
    "murmur2": "quiver_plugin_murmur2.wasm",
    "vip": "quiver_plugin_vip.wasm",
    "hash": "quiver_plugin_hash.wasm",
    "field-route": "quiver_plugin_field_route.wasm",
    "infinite-loop": "quiver_test_plugin_infinite_loop.wasm",
    "memory-bomb": "quiver_test_plugin_memory_bomb.wasm",
    "panic": "quiver_test_plugin_panic.wasm",
    "out-of-range": "quiver_test_plugin_out_of_range.wasm",
    "huge-output": "quiver_test_plugin_huge_output.wasm",
    "bad-import": "quiver_test_plugin_bad_import.wasm",
    "wrong-kind": "quiver_test_plugin_wrong_kind.wasm",
    "bad-config": "quiver_test_plugin_bad_config.wasm",
    "json-redact": "quiver_plugin_json_redact.wasm",
    "filter": "quiver_plugin_filter.wasm",
    "split": "quiver_plugin_split.wasm",
    "repartition": "quiver_plugin_repartition.wasm",
    "mirror": "quiver_plugin_mirror.wasm",
    "transform-hostile": "quiver_test_plugin_transform_hostile.wasm",
}
NATIVE_MURMUR2 = "libquiver_plugin_murmur2.so"


def plugins_dir() -> Path:
    """$QUIVER_PLUGINS (tests/run sets it to <target>/wasm32-wasip2/release)."""
    d = os.environ.get("QUIVER_PLUGINS")
    if not d:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/quiver/target"))
        d = os.path.join(target, "wasm32-wasip2", "release")
    return Path(d)


def wasm_path(plugin: str) -> Path:
    p = plugins_dir() / WASM[plugin]
    if not p.is_file():
        pytest.fail(f"plugin {plugin!r} not built: {p} is missing (QUIVER_PLUGINS={plugins_dir()}); "
                    f"run `bash plugins/build.sh`", pytrace=False)
    return p


def native_path(lib: str) -> Path:
    """A native library that plugins/build.sh builds (murmur2 and the built-in
    transforms): in $QUIVER_NATIVE_PLUGINS, or <target>/native-plugins next to the
    wasm32-wasip2 directory of $QUIVER_PLUGINS."""
    d = os.environ.get("QUIVER_NATIVE_PLUGINS")
    p = Path(d) / lib if d else plugins_dir().parent.parent / "native-plugins" / lib
    if not p.is_file():
        pytest.fail(f"native plugin not built: {p} is missing; run `bash plugins/build.sh`", pytrace=False)
    return p


def native_murmur2_path() -> Path:
    return native_path(NATIVE_MURMUR2)


# --- the admin API -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: object  # parsed JSON, or the raw bytes when the body is not JSON

    @property
    def code(self) -> Optional[str]:
        return self.body.get("error") if isinstance(self.body, dict) else None

    @property
    def message(self) -> str:
        return self.body.get("message", "") if isinstance(self.body, dict) else ""


class AdminApi:
    """The broker's HTTP admin API; one keep-alive connection per thread."""

    def __init__(self, address: str, timeout: float = 60.0):
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = c
        return c

    def request(self, method: str, path: str, body: bytes = b"", headers: Optional[dict] = None) -> Reply:
        for attempt in (0, 1):
            c = self._conn()
            try:
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                raw = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # a kept-alive connection the server closed: only ever retried before
                # any answer, and only for a fresh connection once
                c.close()
                self._local.conn = None
                if attempt:
                    raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return Reply(r.status, parsed)

    def close(self):
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    # plugins
    def deploy(self, name: str, wasm: bytes, config: Optional[dict] = None, kind: str = "partitioner",
               **params) -> Reply:
        q = [("kind", kind)] + [("config", f"{k}={v}") for k, v in (config or {}).items()]
        q += [(k, str(v)) for k, v in params.items()]
        return self.request("PUT", f"/v1/plugins/{name}?{urllib.parse.urlencode(q)}", wasm,
                            {"Content-Type": "application/wasm"})

    def describe(self, name: str) -> Reply:
        return self.request("GET", f"/v1/plugins/{name}")

    def plugins(self) -> list:
        r = self.request("GET", "/v1/plugins")
        assert r.status == 200, r
        return r.body["plugins"]

    def logs(self, name: str, lines: int = 100) -> Reply:
        return self.request("GET", f"/v1/plugins/{name}/logs?lines={lines}")

    def rollback(self, name: str) -> Reply:
        return self.request("POST", f"/v1/plugins/{name}/rollback")

    def remove(self, name: str) -> Reply:
        return self.request("DELETE", f"/v1/plugins/{name}")

    # HTTP produce
    def produce(self, topic: str, records: list, **query) -> Reply:
        qs = ("?" + urllib.parse.urlencode(query)) if query else ""
        return self.request("POST", f"/v1/topics/{topic}/records{qs}",
                            json.dumps({"records": records}).encode(), {"Content-Type": "application/json"})


# --- the CLI ---------------------------------------------------------------------------------


def quiver(*args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
    cmd = [quiver_bin(), *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\n"
                             f"stderr:\n{proc.stderr[-2000:]}")
    return proc


def plugin_cli(broker, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return quiver("plugin", *args, "--admin", broker.admin, check=check)


def topic_cli(broker, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return quiver("topic", *args, "-b", broker.bootstrap, check=check)


def deploy_cli(broker, name: str, file, config: Optional[dict] = None, *extra: str,
               check: bool = True) -> subprocess.CompletedProcess:
    """`quiver plugin deploy NAME --kind partitioner --file FILE --config k=v... --json`."""
    args = ["deploy", name, "--kind", "partitioner", "--file", str(file)]
    for k, v in (config or {}).items():
        args += ["--config", f"{k}={v}"]
    return plugin_cli(broker, *args, *extra, "--json", check=check)


def deployed_version(proc: subprocess.CompletedProcess) -> int:
    out = json.loads(proc.stdout)
    assert out["kind"] == "partitioner", out
    return out["version"]


def create_topic(broker, topic: str, partitions: int, config: Optional[dict] = None):
    args = ["create", topic, "--partitions", str(partitions)]
    for k, v in (config or {}).items():
        args += ["--config", f"{k}={v}"]
    topic_cli(broker, *args)


def alter_topic(broker, topic: str, config: Optional[dict] = None, delete: tuple = ()):
    args = ["alter", topic]
    for k, v in (config or {}).items():
        args += ["--config", f"{k}={v}"]
    for k in delete:
        args += ["--delete-config", k]
    topic_cli(broker, *args)


# --- the partitioners' functions, independently ---------------------------------------------

M32 = 0xFFFFFFFF


def java_murmur2(data: bytes) -> int:
    """org.apache.kafka.common.utils.Utils.murmur2: the signed 32-bit hash."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & M32
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & M32
        k ^= k >> r
        k = (k * m) & M32
        h = (h * m) & M32
        h ^= k
    rest = length % 4
    tail = 4 * n4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & M32
    h ^= h >> 13
    h = (h * m) & M32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(key: bytes, n: int) -> int:
    """The Java client: toPositive(murmur2(key)) % n."""
    return (java_murmur2(key) & 0x7FFFFFFF) % n


def fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & M32
    return h


def fnv1a_partition(key: bytes, n: int) -> int:
    """Sarama's hash partitioner: the FNV-1a hash as int32, absolute value, mod n."""
    h = fnv1a32(key)
    if h & 0x80000000:
        h -= 1 << 32
    return abs(h) % n


def crc32_partition(key: bytes, n: int) -> int:
    """librdkafka `consistent`: zlib CRC-32 of the key, unsigned, mod n."""
    return zlib.crc32(key) % n


HASHES: dict[str, Callable[[bytes, int], int]] = {
    "murmur2": murmur2_partition,
    "fnv1a": fnv1a_partition,
    "crc32": crc32_partition,
}


def vip_partition(key: bytes, n: int, reserved: int, keys: set, prefixes: tuple) -> int:
    """vip: VIP keys (listed, or with a listed prefix) over 0..reserved by murmur2,
    other keys over reserved..n."""
    if key in keys or any(key.startswith(p) for p in prefixes):
        return murmur2_partition(key, reserved)
    return reserved + murmur2_partition(key, n - reserved)


def parse_set(text: str) -> list:
    out = set()
    for item in text.split(","):
        lo, _, hi = item.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


@dataclass
class FieldRoute:
    """field-route: the routing value (a header, or a top-level JSON field of the value:
    strings by their text, numbers/booleans by their JSON text) picks a set from
    route.map (or route.default / every partition); a keyed record goes to
    set[murmur2(key) % len(set)]."""
    route_map: str
    header: Optional[str] = None
    json_field: Optional[str] = None
    default: Optional[str] = None
    routes: dict = field(init=False)

    def __post_init__(self):
        self.routes = {}
        for entry in self.route_map.split(";"):
            name, _, s = entry.partition(":")
            self.routes[name.strip().encode()] = parse_set(s)

    def config(self) -> dict:
        c = {"route.map": self.route_map}
        if self.header is not None:
            c["route.header"] = self.header
        if self.json_field is not None:
            c["route.json-field"] = self.json_field
        if self.default is not None:
            c["route.default"] = self.default
        return c

    def routing_value(self, value: Optional[bytes], headers: dict) -> Optional[bytes]:
        if self.header is not None:
            v = headers.get(self.header)
            return None if v is None else v.encode()
        if value is None:
            return None
        try:
            doc = json.loads(value)
        except ValueError:
            return None
        if not isinstance(doc, dict) or doc.get(self.json_field) is None:
            return None
        v = doc[self.json_field]
        if isinstance(v, str):
            return v.encode()
        if isinstance(v, bool) or isinstance(v, int):
            return json.dumps(v).encode()
        return json.dumps(v, separators=(",", ":")).encode()  # objects/arrays: never a route name here

    def partition(self, key: bytes, value: Optional[bytes], headers: dict, n: int) -> int:
        rv = self.routing_value(value, headers)
        s = self.routes.get(rv) if rv is not None else None
        if s is None:
            s = parse_set(self.default) if self.default is not None else list(range(n))
        return s[murmur2_partition(key, len(s))]


# --- records ---------------------------------------------------------------------------------------


@dataclass
class Rec:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: dict  # name -> str, names in sorted order (HTTP headers are a JSON object)

    def json(self) -> dict:
        def enc(b: Optional[bytes]):
            if b is None:
                return None
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return {"base64": base64.b64encode(b).decode()}
        d = {"key": enc(self.key), "value": enc(self.value)}
        if self.headers:
            d["headers"] = dict(self.headers)
        return d


_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/ "
_UNICODE = "äöüßéñ漢字🙂Ωж"


def make_key(rng: random.Random, i: int) -> bytes:
    """Keys of every length class (0..3 tail bytes, short and long), ASCII, multi-byte
    UTF-8 and raw binary (sent as base64); unique through the index."""
    kind = i % 10
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24))) + b"#%d" % i
    if kind == 1:
        return ("".join(rng.choice(_UNICODE) for _ in range(rng.randrange(1, 6))) + f"-{i}").encode()
    n = rng.choice([0, 1, 2, 3, 5, 8, 13, 31, 64])
    return (f"{i}:" + "".join(rng.choice(_ALPHABET) for _ in range(n))).encode()


def make_records(rng: random.Random, count: int, key_fn: Optional[Callable[[random.Random, int], bytes]] = None,
                 value_fn=None, headers_fn=None) -> list:
    out = []
    for i in range(count):
        key = (key_fn or make_key)(rng, i)
        value = value_fn(rng, i) if value_fn else f"value-{i}-{rng.randrange(1 << 30)}".encode()
        headers = headers_fn(rng, i) if headers_fn else {"idx": str(i), "src": "e2e"}
        out.append(Rec(key, value, dict(sorted(headers.items()))))
    return out


def produce_all(api: AdminApi, topic: str, records: list, batch: int = 5000) -> list:
    """HTTP-produces `records` in requests of `batch`; every request must succeed.
    Returns [(partition, offset)] in record order."""
    placements = []
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        r = api.produce(topic, [x.json() for x in chunk])
        assert r.status == 200, f"produce of records {start}..{start + len(chunk)} to {topic}: {r}"
        offs = r.body["offsets"]
        assert len(offs) == len(chunk), f"{len(chunk)} records, {len(offs)} placements"
        placements += [(o["partition"], o["offset"]) for o in offs]
    return placements


def expect_log(bootstrap: str, topic: str, partitions: int, records: list, placements: list,
               timeout: float = 120.0):
    """Reads the whole topic with a Kafka consumer (manual assignment) and checks it
    holds exactly `records`, each at its acknowledged (partition, offset), with its key,
    value and headers; offsets in a partition are 0, 1, 2, ... in produce order and
    nothing else is there (high watermarks equal the counts)."""
    want: dict = {p: [] for p in range(partitions)}
    for rec, (p, o) in zip(records, placements):
        want[p].append((o, rec))
    for p, lst in want.items():
        offs = [o for o, _ in lst]
        assert offs == list(range(len(lst))), \
            f"{topic}/{p}: acknowledged offsets are not 0..{len(lst) - 1} in produce order: {offs[:10]}..."
    c = consumer(bootstrap, **{"fetch.max.bytes": 16 << 20, "max.partition.fetch.bytes": 4 << 20})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: dict = {p: [] for p in range(partitions)}
        pending = {p for p in range(partitions) if want[p]}
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, \
                f"{topic}: read {[(p, len(got[p]), len(want[p])) for p in sorted(pending)]} (partition, read, want)"
            for m in c.consume(num_messages=20000, timeout=0.5):
                assert not m.error(), f"consumer error: {m.error()!r}"
                got[m.partition()].append(m)
                if len(got[m.partition()]) >= len(want[m.partition()]):
                    pending.discard(m.partition())
        # (the admin client asks on its own connection: the consumer's sits in a fetch)
        a = admin(bootstrap)
        ends = {}
        for spec in (OffsetSpec.earliest(), OffsetSpec.latest()):
            futs = a.list_offsets({TopicPartition(topic, p): spec for p in range(partitions)}, request_timeout=30)
            for tp, f in futs.items():
                ends.setdefault(tp.partition, []).append(f.result().offset)
        for p in range(partitions):
            assert ends[p] == [0, len(want[p])], f"{topic}/{p}: watermarks {ends[p]}, want [0, {len(want[p])}]"
            assert len(got[p]) == len(want[p]), f"{topic}/{p}: read {len(got[p])} records, want {len(want[p])}"
            for m, (o, rec) in zip(got[p], want[p]):
                seen = (m.offset(), m.key(), m.value(), [(k, v) for k, v in (m.headers() or [])])
                exp = (o, rec.key, rec.value, [(k, v.encode()) for k, v in rec.headers.items()])
                assert seen == exp, f"{topic}/{p}@{o}: read {seen!r}, produced {exp!r}"
    finally:
        c.close()


class PluginTraffic:
    """A healthy HTTP producer in a thread: requests of `batch` keyed records to a topic
    routed by a healthy plugin, each checked against `expected_fn(key, partitions)`.
    check() stops it and asserts every request succeeded, every placement was right
    and the topic holds exactly the acknowledged records."""

    def __init__(self, broker, topic: str, partitions: int, expected_fn, batch: int = 100):
        self.broker, self.topic, self.partitions = broker, topic, partitions
        self.expected_fn, self.batch = expected_fn, batch
        self.api = AdminApi(broker.admin)
        self.records, self.placements, self.failures = [], [], []
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"plugin-traffic-{topic}", daemon=True)

    def __enter__(self):
        self._thread.start()
        self.wait_progress(3)
        return self

    def __exit__(self, exc_type, *rest):
        self._stop.set()
        self._thread.join(60)
        if exc_type is None:
            self.check()

    def _run(self):
        rng = random.Random(self.topic)
        n = 0
        while not self._stop.is_set():
            recs = [Rec(b"healthy-%d-%d" % (i, rng.randrange(1 << 30)), b"v%d" % i, {"n": str(i)})
                    for i in range(n, n + self.batch)]
            n += self.batch
            try:
                r = self.api.produce(self.topic, [x.json() for x in recs])
            except OSError as e:
                self.failures.append(repr(e))
                continue
            if r.status != 200:
                self.failures.append(r)
                continue
            self.records += recs
            self.placements += [(o["partition"], o["offset"]) for o in r.body["offsets"]]
            self.requests += 1
            time.sleep(0.005)  # pace: bounded load

    def wait_progress(self, n: int = 5, timeout: float = 30.0):
        """Wait until n more requests have succeeded."""
        want = self.requests + n
        deadline = time.monotonic() + timeout
        while self.requests < want:
            assert not self.failures, f"healthy plugin topic {self.topic}: {self.failures[:3]}"
            assert time.monotonic() < deadline, f"healthy plugin traffic stalled at {self.requests} requests"
            time.sleep(0.02)

    def check(self):
        assert not self.failures, f"healthy plugin topic {self.topic}: {len(self.failures)} failed requests: " \
                                  f"{self.failures[:3]}"
        wrong = [(r.key, p) for r, (p, _) in zip(self.records, self.placements)
                 if p != self.expected_fn(r.key, self.partitions)]
        assert not wrong, f"healthy plugin topic {self.topic}: {len(wrong)} misplaced: {wrong[:5]}"
        expect_log(self.broker.bootstrap, self.topic, self.partitions, self.records, self.placements)
