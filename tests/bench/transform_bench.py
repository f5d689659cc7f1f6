#!/usr/bin/env python3
"""Transform benchmark through a running broker: prints figures, asserts nothing.

1. Throughput: N records already in a one-partition input topic; a transform deployed
   from `earliest`; the time until its position reaches the input's end, and the
   broker's CPU time meanwhile (utime + stime from /proc). One input partition is one
   runner task, so records per CPU second is the per-core figure. For `repartition`
   (pass-through) and `json-redact`, with 100 B and 1 KiB JSON values; each run once
   with the WASM component and once with the same plugin crate built as a native
   library (the C ABI of `plugins.native`, no sandbox), alternating, so the ratio WASM
   ÷ native is the sandbox's cost in what a transform delivers.
2. Latency: `repartition` between two topics that stamp records with the broker's
   append time (`message.timestamp.type=LogAppendTime`), input produced at a fixed rate;
   latency is the output record's append time minus its input record's, matched by key.

    python3 tests/bench/transform_bench.py --binary /tmp/quiver --runs 3

Options: `--records-100` / `--records-1k` (input sizes), `--rate` and `--seconds` (the
latency phase), `--plugins DIR` (wasm files), `--native DIR` (the native libraries
plugins/build.sh puts in <target>/native-plugins), `--out FILE` (JSON, default
target/bench/transform.json). Figures go in docs/perf.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(__file__))
from broker_bench import (_pdeathsig, api_versions_probe, log, machine_info,  # noqa: E402
                          proc_cpu_seconds, reserve_port)


class Broker:
    def __init__(self, binary: str, sets: dict | None = None, before_start=None):
        self.dir = tempfile.mkdtemp(prefix="quiver-tbench-")
        self.port, self._lock1 = reserve_port()
        self.admin_port, self._lock2 = reserve_port()
        self.cluster_port, self._lock3 = reserve_port()
        cmd = [binary, "serve", "--data-dir", os.path.join(self.dir, "data"),
               "--kafka-listen", f"127.0.0.1:{self.port}", "--admin-listen", f"127.0.0.1:{self.admin_port}",
               "--set", f"cluster.listen=127.0.0.1:{self.cluster_port}"]
        if before_start is not None:
            # e.g. a proxy in front of the Kafka port, whose address is then advertised
            sets = {**(sets or {}), **before_start(self)}
        for k, v in (sets or {}).items():
            cmd += ["--set", f"{k}={v}"]
        self.log = open(os.path.join(self.dir, "broker.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"broker did not start; log in {self.dir}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            return bool(api_versions_probe("127.0.0.1", self.port, timeout=1.0))
        except OSError:
            return False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: bytes = b"", ctype: str = "application/json"):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=60)
        c.request(method, path, body=body, headers={"Content-Type": ctype})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, (json.loads(data) if data else None)

    def close(self):
        if self.proc.poll() is not None:
            log(f"the broker exited with {self.proc.returncode}; its log: {self.dir}/broker.log")
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run(["rm", "-rf", self.dir])


def create(b: Broker, name: str, config: dict | None = None):
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    a.create_topics([NewTopic(name, 1, 1, config=config or {})])[name].result(30)


def drop(b: Broker, *topics: str):
    """Deletes a run's topics: the disk holds a few runs' worth, not all of them."""
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in a.delete_topics(list(topics)).values():
        f.result(30)


def value(i: int, size: int) -> bytes:
    base = {"id": i, "user": {"email": f"u{i}@example.com", "n": i}, "pad": ""}
    pad = max(0, size - len(json.dumps(base)))
    base["pad"] = "x" * pad
    return json.dumps(base).encode()


def fill(b: Broker, topic: str, n: int, size: int):
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1000000, "queue.buffering.max.kbytes": 2097151})
    template = [value(i, size) for i in range(1000)]
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=b"k%d" % i, value=template[i % 1000])
                break
            except BufferError:
                p.poll(0.01)
    if p.flush(300):
        raise SystemExit("input not acknowledged")


def throughput(b: Broker, plugin: str, config: dict, size: int, n: int) -> dict:
    tag = uuid.uuid4().hex[:6]
    src, dst = f"in-{tag}", f"out-{tag}"
    create(b, src)
    create(b, dst)
    fill(b, src, n, size)
    cpu0, t0 = proc_cpu_seconds(b.proc.pid), time.monotonic()
    status, body = b.api("POST", "/v1/transforms", json.dumps(
        {"name": f"t-{tag}", "plugin": plugin, "input": src, "outputs": [dst], "config": config}).encode())
    if status != 201:
        raise SystemExit(f"deploy failed: {status} {body}")
    while True:
        _, body = b.api("GET", f"/v1/transforms/t-{tag}")
        parts = body["partitions"]
        if parts and parts[0]["position"] >= n:
            break
        if time.monotonic() - t0 > 600:
            raise SystemExit(f"transform did not finish: {body}")
        time.sleep(0.02)
    wall, cpu = time.monotonic() - t0, proc_cpu_seconds(b.proc.pid) - cpu0
    b.api("DELETE", f"/v1/transforms/t-{tag}")
    drop(b, src, dst)
    return {"records_per_s": n / wall, "records_per_cpu_s": n / cpu, "mb_per_s": n * size / wall / 1e6,
            "wall_s": wall, "cpu_s": cpu}


def latency(b: Broker, rate: int, seconds: float) -> dict:
    tag = uuid.uuid4().hex[:6]
    src, dst = f"lin-{tag}", f"lout-{tag}"
    stamp = {"message.timestamp.type": "LogAppendTime"}
    create(b, src, stamp)
    create(b, dst, stamp)
    status, body = b.api("POST", "/v1/transforms", json.dumps(
        {"name": f"l-{tag}", "plugin": "repartition", "input": src, "outputs": [dst]}).encode())
    if status != 201:
        raise SystemExit(f"deploy failed: {status} {body}")
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    n = int(rate * seconds)
    start = time.monotonic()
    for i in range(n):
        due = start + i / rate
        while time.monotonic() < due:
            p.poll(0)
        p.produce(src, key=b"k%d" % i, value=value(i, 100))
    p.flush(60)
    stamps = {}
    for topic in (src, dst):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"b-{tag}", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0)])
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            for m in c.consume(10000, 1.0):
                if m.error() is None:
                    got[m.key()] = m.timestamp()[1]
        c.close()
        stamps[topic] = got
    b.api("DELETE", f"/v1/transforms/l-{tag}")
    drop(b, src, dst)
    lat = sorted(stamps[dst][k] - stamps[src][k] for k in stamps[dst] if k in stamps[src])
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]  # noqa: E731
    return {"records": len(lat), "rate": rate, "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": lat[-1]}


def traffic_p99(b: Broker, topic: str, rate: int, seconds: float) -> dict:
    """Produces to `topic` at `rate` (acks=all, no linger) while a consumer reads it;
    returns the p99 of produce latency (send to acknowledgement) and of end-to-end
    latency (send to consumed), in ms."""
    import threading
    sent, acked, seen = {}, [], []
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"n-{topic}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, 0, 0)])
    n = int(rate * seconds)
    done = threading.Event()

    def consume():
        while not done.is_set() or len(seen) < len(acked):
            for m in c.consume(1000, 0.1):
                if m.error() is None and m.key() in sent:
                    seen.append((time.monotonic() - sent[m.key()]) * 1000)
            if done.is_set() and len(seen) >= n:
                break
    t = threading.Thread(target=consume, daemon=True)
    t.start()
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "acks": "all"})
    start = time.monotonic()
    for i in range(n):
        due = start + i / rate
        while time.monotonic() < due:
            p.poll(0)
        key = b"n%d" % i
        sent[key] = time.monotonic()
        p.produce(topic, key=key, value=value(i, 100),
                  on_delivery=lambda err, msg, k=key: acked.append((time.monotonic() - sent[k]) * 1000))
    p.flush(60)
    done.set()
    t.join(60)
    c.close()
    q = lambda v: sorted(v)[min(len(v) - 1, int(0.99 * len(v)))]  # noqa: E731
    return {"produce_p99_ms": q(acked), "e2e_p99_ms": q(seen), "records": n}


def hostile_neighbour(b: Broker, behaviour: str, rate: int, seconds: float) -> dict:
    """Produce and consume p99 on a topic alone, then with a hostile transform reading
    it (deployed as the traffic starts, with a dead-letter topic)."""
    tag = uuid.uuid4().hex[:6]
    base, busy, out, dlq = f"nb-{tag}", f"nh-{tag}", f"no-{tag}", f"nd-{tag}"
    for t in (base, busy, out, dlq):
        create(b, t)
    alone = traffic_p99(b, base, rate, seconds)
    status, body = b.api("POST", "/v1/transforms", json.dumps(
        {"name": f"h-{tag}", "plugin": "hostile", "input": busy, "outputs": [out], "dead_letter": dlq,
         "config": {"behaviour": behaviour, "every": "2"}}).encode())
    if status != 201:
        raise SystemExit(f"deploy failed: {status} {body}")
    beside = traffic_p99(b, busy, rate, seconds)
    b.api("DELETE", f"/v1/transforms/h-{tag}")
    drop(b, base, busy, out, dlq)
    return {"behaviour": behaviour, "alone": alone, "beside": beside}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/quiver/target"))
    ap.add_argument("--binary", default=os.path.join(target, "release", "quiver"))
    ap.add_argument("--plugins", default=os.path.join(target, "wasm32-wasip2", "release"))
    ap.add_argument("--native", default=os.path.join(target, "native-plugins"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--records-100", type=int, default=1_000_000)
    ap.add_argument("--records-1k", type=int, default=300_000)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default="target/bench/transform.json")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: throughput, latency, neighbours")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    native_dir = os.path.abspath(args.native)
    b = Broker(args.binary, {"plugins.native.enabled": "true", "plugins.native.dirs": json.dumps([native_dir])})
    try:
        for name, lib in (("repartition", "quiver_plugin_repartition"),
                          ("json-redact", "quiver_plugin_json_redact")):
            with open(os.path.join(args.plugins, f"{lib}.wasm"), "rb") as f:
                status, body = b.api("PUT", f"/v1/plugins/{name}?kind=transform", f.read(), "application/wasm")
            if status != 201:
                raise SystemExit(f"plugin deploy failed: {status} {body}")
            if not os.path.isfile(os.path.join(native_dir, f"lib{lib}.so")):
                raise SystemExit(f"{native_dir}/lib{lib}.so is missing: run `bash plugins/build.sh`")
            status, body = b.api("PUT", f"/v1/plugins/{name}-native?kind=transform&native=lib{lib}.so")
            if status != 201:
                raise SystemExit(f"native plugin deploy failed: {status} {body}")
        results = {"machine": machine_info(), "throughput": [], "latency": []}
        cases = [("repartition", {}, 100, args.records_100), ("repartition", {}, 1024, args.records_1k),
                 ("json-redact", {"paths": "user.email"}, 100, args.records_100),
                 ("json-redact", {"paths": "user.email"}, 1024, args.records_1k)]
        print(f"{'plugin':<12} {'value':>6} {'runtime':>8} {'records/s':>22} {'per CPU s':>22} {'MB/s':>16}"
              f" {'WASM ÷ native: rec/s, rec/CPU s':>32}")
        for plugin, config, size, n in ([] if "throughput" in skip else cases):
            runs = {"wasm": [], "native": []}
            for _ in range(args.runs):
                # alternating, so a drift of the machine meets both alike
                for runtime in ("wasm", "native"):
                    name = plugin if runtime == "wasm" else f"{plugin}-native"
                    r = throughput(b, name, config, size, n)
                    log(f"{plugin} {size} B {runtime}: {r}")
                    runs[runtime].append(r)

            def fig(rs, key, digits=0):
                vals = sorted(r[key] for r in rs)
                return f"{statistics.median(vals):.{digits}f} ({vals[0]:.{digits}f}–{vals[-1]:.{digits}f})"

            def ratio(key):
                return statistics.median(w[key] / nat[key] for w, nat in zip(runs["wasm"], runs["native"]))
            for runtime in ("wasm", "native"):
                rs = runs[runtime]
                ratios = f"{ratio('records_per_s'):.2f}x, {ratio('records_per_cpu_s'):.2f}x" \
                    if runtime == "native" else ""
                print(f"{plugin:<12} {size:>5}B {runtime:>8} {fig(rs, 'records_per_s'):>22} "
                      f"{fig(rs, 'records_per_cpu_s'):>22} {fig(rs, 'mb_per_s', 1):>16} {ratios:>32}")
            results["throughput"].append({"plugin": plugin, "value_bytes": size, "records": n, "runs": runs["wasm"],
                                          "native_runs": runs["native"],
                                          "wasm_over_native": {"records_per_s": ratio("records_per_s"),
                                                               "records_per_cpu_s": ratio("records_per_cpu_s")}})
        lats = [] if "latency" in skip else [latency(b, args.rate, args.seconds) for _ in range(args.runs)]
        if lats:
            p50 = sorted(x["p50_ms"] for x in lats)
            p99 = sorted(x["p99_ms"] for x in lats)
            print(f"latency input append -> output append at {args.rate} records/s (repartition, 100 B): "
                  f"p50 {statistics.median(p50)} ms ({p50[0]}–{p50[-1]}), p99 {statistics.median(p99)} ms "
                  f"({p99[0]}–{p99[-1]})")
        results["latency"] = lats
        if "neighbours" in skip:
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
            return
        with open(os.path.join(args.plugins, "quiver_test_plugin_transform_hostile.wasm"), "rb") as f:
            status, body = b.api("PUT", "/v1/plugins/hostile?kind=transform", f.read(), "application/wasm")
        if status != 201:
            raise SystemExit(f"plugin deploy failed: {status} {body}")
        results["neighbours"] = []
        for behaviour in ("loop", "trap-every", "memory-bomb", "amplify"):
            runs = [hostile_neighbour(b, behaviour, args.rate // 2, args.seconds) for _ in range(args.runs)]
            results["neighbours"].append(runs)
            for key in ("produce_p99_ms", "e2e_p99_ms"):
                alone = statistics.median(r["alone"][key] for r in runs)
                beside = statistics.median(r["beside"][key] for r in runs)
                print(f"hostile {behaviour:<11} {key:<15} alone {alone:7.1f} ms  beside it {beside:7.1f} ms  "
                      f"ratio {beside / alone:5.2f}x")
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    finally:
        b.close()


if __name__ == "__main__":
    main()
