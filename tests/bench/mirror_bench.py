#!/usr/bin/env python3
"""Mirror benchmark: two one-broker regions joined by a delayed link; prints figures,
asserts nothing.

The source region's Kafka address is advertised through a user-space proxy that delays
each direction by --delay-ms (40 ms: an 80 ms round trip, as between continents), so the
mirror in the target region crosses it for every fetch. The proxy is
`quiver-netdelay` (tests/netdelay, built with the workspace; --netdelay PATH, by default
next to --binary); `--proxy python` uses tests/e2e/delayproxy.py instead, the end-to-end
tests' proxy, which spends more CPU on the same traffic. In one run, --runs times each:

1. Local produce: N records of --size bytes produced into the target region by a
   librdkafka producer on this machine (20 partitions) — what the target can take in.
2. Mirror: the same N records already in the source; a mirror created on the target;
   records per second from its first copied record until it has copied all of them.
   The ratio mirror / local produce is the figure the target is set against (>= 0.8).
3. Latency: records produced into the source at half of the mirror's peak rate, then
   at --modest-rate (5,000/s), for --seconds each, the source stamping its append time
   (`LogAppendTime`); the replication latency (source append to target append) p50/p99
   of a mirror of each phase's own, as it reports it.

    python3 tests/bench/mirror_bench.py --binary target/release/quiver --runs 3

Each latency phase also prints the cores each process used meanwhile (the producer is
this program) and how busy the whole machine was: on one machine the brokers, the proxy
and the producer share the cores, and a saturated machine queues every step.
--sweep 0.1,0.2,0.3 adds latency phases at those shares of the peak, to find where the
tail starts to grow.

Options: --records, --size, --delay-ms, --seconds, --sweep, --plugins DIR, --out FILE
(JSON, default target/bench/mirror.json). Figures go in docs/perf.md.

--transports compares the two ways a mirror reaches a Quiver source, --via kafka and
--via quic, at 0% and then --loss % (1) packet loss, instead of the above. It needs root:
the two regions are network namespaces (tests/e2e/netns.py) and the loss is cut into the
source region with nftables (Topology.loss: that share of the packets crossing its
interface, each way), inside namespaces the script made and removes. The delay
(--link, default `proxy`) comes from two quiver-netdelay processes in the source region,
--delay-ms each way: one for TCP in front of its Kafka listener, one for UDP in front of
its cluster (QUIC) port; the source advertises both, so every connection of either
transport crosses them. The loss is the network's, not the proxy's, for both transports
alike; a QUIC connection runs end to end through the UDP proxy, so it sees the loss on an
80 ms round trip, while the TCP proxy ends each TCP connection, so TCP recovers from a
loss on its sub-millisecond hop to the proxy (the Kafka figures under loss are a best
case). `--link netem` is the older mode: netem delay on the source region's egress when
the kernel has it, none otherwise. Every phase mirrors the same --transport-records
records of --size bytes (JSON-like text, so compression has something to do; 20
partitions, produced once) into a target topic of its own (a source alias per phase,
deleted after the phase), and reports MB/s from mirror creation until every record is
copied, the bytes the source region sent for it, and the target broker's CPU.

    sudo python3 tests/bench/mirror_bench.py --transports --binary target/release/quiver
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from broker_bench import _pdeathsig, log, machine_info, proc_cpu_seconds  # noqa: E402
from transform_bench import Broker  # noqa: E402
from delayproxy import DelayProxy  # noqa: E402

PARTITIONS = 20


class NetDelay:
    """A quiver-netdelay process: forwards to `upstream` (HOST:PORT) after `delay_ms`
    each way; ready once it has printed its address. `popen` starts it (a namespace's
    popen in --transports)."""

    def __init__(self, binary: str, upstream: str, delay_ms: float, listen: str = "127.0.0.1:0",
                 udp: bool = False, popen=subprocess.Popen):
        cmd = [binary, "--listen", listen, "--upstream", upstream, "--delay-ms", f"{delay_ms:g}"]
        if udp:
            cmd.append("--udp")
        self.proc = popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise SystemExit(f"quiver-netdelay did not start: {self.proc.stderr.read().strip()}")
        self.address = line.split()[-1]
        self.port = int(self.address.rsplit(":", 1)[1])

    def stop(self) -> str:
        """Stops the proxy; returns what it forwarded (its last words on stderr)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return (err or "").strip()


def create(bootstrap: str, name: str, config: dict | None = None):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(name, PARTITIONS, 1, config=config or {})])[name].result(30)


def produce(bootstrap: str, topic: str, n: int, size: int) -> float:
    """Produces n records round-robin over the partitions; returns the seconds taken."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                  "batch.num.messages": 100000, "queue.buffering.max.messages": 1000000,
                  "queue.buffering.max.kbytes": 2097151, "acks": "all"})
    payload = os.urandom(size)
    t0 = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=payload, key=b"k%d" % i, partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.01)
    if p.flush(600):
        raise SystemExit("records not acknowledged")
    return time.monotonic() - t0


def produce_at_rate(bootstrap: str, topic: str, rate: float, seconds: float, size: int):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    payload = os.urandom(size)
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < seconds:
        due = int((time.monotonic() - t0) * rate)
        while sent < due:
            try:
                p.produce(topic, value=payload, partition=sent % PARTITIONS)
                sent += 1
            except BufferError:
                p.poll(0.005)
        p.poll(0)
        time.sleep(0.002)
    p.flush(60)
    return sent


def mirror_report(target: Broker, name: str) -> dict:
    status, body = target.api("GET", f"/v1/mirrors/{name}")
    if status != 200:
        raise SystemExit(f"describe failed: {status} {body}")
    return body


def cpu_ticks() -> tuple[int, int]:
    """(busy, all) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_shares(procs: dict) -> "tuple[dict, callable]":
    """Starts measuring the CPU of `procs` (name -> pid; None for this process, the
    producer) and of the machine; the returned function gives cores used by each, and
    `machine` (busy cores, whatever ran) over the time since."""
    t0 = time.monotonic()
    this = time.process_time()
    start = {n: proc_cpu_seconds(pid) for n, pid in procs.items() if pid is not None}
    busy0, all0 = cpu_ticks()

    def done() -> dict:
        wall = max(time.monotonic() - t0, 1e-3)
        out = {n: (proc_cpu_seconds(pid) - start[n]) / wall for n, pid in procs.items() if pid is not None}
        out.update({n: (time.process_time() - this) / wall for n, pid in procs.items() if pid is None})
        busy1, all1 = cpu_ticks()
        out["machine"] = (busy1 - busy0) / max(all1 - all0, 1) * os.cpu_count()
        return out
    return done


def latency_phase(args, source: Broker, target: Broker, topic: str, name: str, rate: float) -> dict:
    """Produces into `topic` at `rate` for --seconds through a mirror of its own; returns
    the mirror's replication latency figures and the cores each process used meanwhile
    (the producer is this process: with `--proxy python` the proxy's threads too)."""
    body = {"name": name, "source": source.link.address, "source_alias": "us-east",
            "topics": topic, "discovery_interval_ms": 500}
    status, reply = target.api("POST", "/v1/mirrors", json.dumps(body).encode())
    if status != 201:
        raise SystemExit(f"mirror create failed: {status} {reply}")
    while not (mirror_report(target, name).get("report") or {}).get("topics"):
        time.sleep(0.05)
    link = getattr(getattr(source.link, "proc", None), "pid", None)
    procs = {"producer": None, "source": source.proc.pid, "target": target.proc.pid}
    if link is not None:
        procs["proxy"] = link
    shares = cpu_shares(procs)
    produce_at_rate(source.bootstrap, topic, rate, args.seconds, args.size)
    cores = shares()
    time.sleep(1)
    report = mirror_report(target, name).get("report") or {}
    target.api("DELETE", f"/v1/mirrors/{name}")
    return {"latency_p50_ms": report.get("latency_p50_ms"), "latency_p99_ms": report.get("latency_p99_ms"),
            "cores": cores}


def one_run(args, source: Broker, target: Broker) -> dict:
    tag = uuid.uuid4().hex[:6]
    load_start = os.getloadavg()[0]
    local, topic, lat = f"local-{tag}", f"orders-{tag}", f"lat-{tag}"
    create(target.bootstrap, local)
    create(source.bootstrap, topic)
    create(source.bootstrap, lat, {"message.timestamp.type": "LogAppendTime"})
    create(source.bootstrap, f"{lat}-b", {"message.timestamp.type": "LogAppendTime"})
    mb = args.records * args.size / 1e6

    local_s = produce(target.bootstrap, local, args.records, args.size)
    produce(source.bootstrap, topic, args.records, args.size)

    name = f"m-{tag}"
    body = {"name": name, "source": source.link.address, "source_alias": "us-east",
            "topics": topic, "discovery_interval_ms": 500}
    status, reply = target.api("POST", "/v1/mirrors", json.dumps(body).encode())
    if status != 201:
        raise SystemExit(f"mirror create failed: {status} {reply}")
    cpu0 = proc_cpu_seconds(target.proc.pid)
    first = None
    deadline = time.monotonic() + 900
    while True:
        report = mirror_report(target, name).get("report") or {}
        copied = sum(p["position"] for p in report.get("topics", {}).get(topic, {}).get("partitions", []))
        now = time.monotonic()
        if first is None and copied > 0:
            first = (now, copied)
        if copied >= args.records:
            break
        if now > deadline:
            raise SystemExit(f"the mirror did not finish: {report}")
        time.sleep(0.02)
    cpu = proc_cpu_seconds(target.proc.pid) - cpu0
    t_first, c_first = first
    elapsed = max(now - t_first, 1e-3)
    mirror_rate = (args.records - c_first) / elapsed
    local_rate = args.records / local_s

    target.api("DELETE", f"/v1/mirrors/{name}")

    # Latency at half of the mirror's peak, and at a fixed modest rate, each through a
    # mirror of its own: its latency samples are of that phase only, not of the backlog
    # copied above.
    rate = mirror_rate / 2
    half = latency_phase(args, source, target, lat, f"l-{tag}", rate)
    modest = latency_phase(args, source, target, f"{lat}-b", f"lb-{tag}", args.modest_rate)
    sweep = {}
    for i, share in enumerate(args.sweep):
        topic_i = f"{lat}-s{i}"
        create(source.bootstrap, topic_i, {"message.timestamp.type": "LogAppendTime"})
        r = latency_phase(args, source, target, topic_i, f"ls{i}-{tag}", mirror_rate * share)
        sweep.update({f"sweep_{share:g}_p50_ms": r["latency_p50_ms"], f"sweep_{share:g}_p99_ms": r["latency_p99_ms"],
                      f"sweep_{share:g}_cores_machine": r["cores"]["machine"],
                      f"sweep_{share:g}_cores_target": r["cores"]["target"]})
    for b, topics in ((target, [local, f"us-east.{topic}", f"us-east.{lat}", f"us-east.{lat}-b"]),
                      (source, [topic, lat, f"{lat}-b"] + [f"{lat}-s{i}" for i in range(len(args.sweep))])):
        a = AdminClient({"bootstrap.servers": b.bootstrap})
        for f in a.delete_topics(topics).values():
            try:
                f.result(30)
            except Exception:
                pass
    return {
        "local_produce_rec_s": local_rate, "local_produce_mb_s": local_rate * args.size / 1e6,
        "mirror_rec_s": mirror_rate, "mirror_mb_s": mirror_rate * args.size / 1e6,
        "ratio": mirror_rate / local_rate, "mirror_cpu_s_per_gib": cpu / (mb / 1073.741824),
        "latency_rate_rec_s": rate, "latency_p50_ms": half["latency_p50_ms"],
        "latency_p99_ms": half["latency_p99_ms"],
        **{f"half_cores_{k}": v for k, v in half["cores"].items()},
        "modest_p50_ms": modest["latency_p50_ms"], "modest_p99_ms": modest["latency_p99_ms"],
        **sweep,
        "load_start": load_start, "load_end": os.getloadavg()[0],
    }


WORDS = ("paid shipped pending refunded express standard gift fragile warehouse north south east west "
         "blue red green large small medium priority returned customer merchant invoice coupon "
         "berlin lisbon dublin oslo madrid vienna prague warsaw boston denver austin seattle").split()


def text_payload(i: int, size: int) -> bytes:
    """An order-like JSON record of `size` bytes, its words and numbers drawn at random
    (seeded by i): compressible as real records are, not as a repeated string is. Every
    third word is a number; drawn in bulk, as a million of them are made per run."""
    rng = random.Random(i)
    base = (f'{{"order":{i},"customer":"c-{rng.randrange(10**6)}","total":"{rng.random() * 1000:.2f}",'
            f'"ts":{1_700_000_000_000 + rng.randrange(10**9)},"note":"').encode()
    words = rng.choices(WORDS, k=size // 5 + 1)
    for j in range(0, len(words), 3):
        words[j] = str(rng.randrange(10**6))
    return (base + " ".join(words).encode())[:size - 2] + b'"}'


def transports(args):
    """--via kafka vs --via quic, at 0 % and --loss % packet loss, in network namespaces."""
    import tempfile
    import http.client
    from netns import Topology

    binary = os.path.abspath(args.binary)
    proxied = args.link == "proxy"
    tmp = tempfile.mkdtemp(prefix="quiver-mirror-transports-")
    topo = Topology(["east", "west"])
    procs, proxies = {}, {}
    try:
        ea, wa = topo.addr("east"), topo.addr("west")
        # The source's addresses as the target reaches them: its own, or the proxies'.
        kafka_at, quic_at = (f"{ea}:19092", f"{ea}:19093") if proxied else (f"{ea}:9092", f"{ea}:9093")
        for cid in ("us-east", "eu-west"):
            subprocess.run([binary, "cluster", "certs", "--cluster-id", cid, "--brokers", "0",
                            "--out", f"{tmp}/{cid}"], check=True, capture_output=True)

        def serve(host, cid, addr, extra):
            cmd = [binary, "serve", "--data-dir", f"{tmp}/{cid}-data", "--kafka-listen", f"{addr}:9092",
                   "--admin-listen", f"{addr}:9094"]
            for k, v in {"cluster.id": cid, "cluster.listen": f"{addr}:9093",
                         "cluster.tls_dir": f"{tmp}/{cid}", **extra}.items():
                cmd += ["--set", f"{k}={v}"]
            out = open(f"{tmp}/{cid}.log", "wb")
            return topo.popen(host, cmd, stdout=out, stderr=subprocess.STDOUT)

        def link(delay_ms):
            """(Re)starts the source region's proxies with `delay_ms` each way."""
            for p in proxies.values():
                p.stop()
            popen = lambda cmd, **kw: topo.popen("east", cmd, **kw)  # noqa: E731
            proxies["tcp"] = NetDelay(args.netdelay, f"{ea}:9092", delay_ms, kafka_at, popen=popen)
            proxies["udp"] = NetDelay(args.netdelay, f"{ea}:9093", delay_ms, quic_at, udp=True, popen=popen)

        east_sets = {"cluster.mirror_clients_ca": f"{tmp}/eu-west/ca.pem"}
        if args.congestion:
            # The source sends the answers, so its controller is the one that counts.
            east_sets["cluster.congestion_control"] = args.congestion
        if proxied:
            # Metadata and the mirror channel's broker list then name the proxies, so a
            # mirror never learns a way around the link.
            east_sets.update({"kafka.advertised_port": "19092", "cluster.advertised": quic_at})
            link(0)
        procs["east"] = serve("east", "us-east", ea, east_sets)
        procs["west"] = serve("west", "eu-west", wa, {})
        clients = topo.thread()

        def api(addr, method, path, body=b"", ctype="application/json"):
            def call():
                c = http.client.HTTPConnection(addr, 9094, timeout=60)
                c.request(method, path, body=body, headers={"Content-Type": ctype})
                r = c.getresponse()
                data = r.read()
                c.close()
                return r.status, (json.loads(data) if data else None)
            return clients.run(call, timeout=90)

        def ready(addr):
            deadline = time.monotonic() + 120
            while True:
                try:
                    if api(addr, "GET", "/v1/mirrors")[0] == 200:
                        return
                except OSError:
                    pass
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                    raise SystemExit(f"a broker did not start; logs in {tmp}")
                time.sleep(0.2)
        ready(ea)
        ready(wa)
        wasm = open(os.path.join(args.plugins, "quiver_plugin_mirror.wasm"), "rb").read()
        status, body = api(wa, "PUT", "/v1/plugins/mirror?kind=connector", wasm, "application/wasm")
        if status not in (200, 201):
            raise SystemExit(f"plugin deploy failed: {status} {body}")

        n, size = args.transport_records, args.size
        phases = [(via, loss, run) for run in range(args.runs) for loss in (0, args.loss)
                  for via in ("kafka", "quic")]
        topic = "orders"

        def fill():
            create(f"{ea}:9092", topic)
            p = Producer({"bootstrap.servers": f"{ea}:9092", "linger.ms": 20, "batch.size": 1 << 20,
                          "queue.buffering.max.messages": 1000000, "acks": "all",
                          "compression.type": "none"})
            for i in range(n):
                while True:
                    try:
                        p.produce(topic, value=text_payload(i, size), key=b"k%d" % i, partition=i % PARTITIONS)
                        break
                    except BufferError:
                        p.poll(0.01)
            if p.flush(600):
                raise SystemExit("records not acknowledged")
        log(f"producing {n} records into the source")
        # Through the proxies without delay: the source advertises them.
        clients.run(fill, timeout=3600)
        if proxied:
            link(args.delay_ms)
            added_rtt, how = 2 * args.delay_ms, "quiver-netdelay, TCP and UDP"
        else:
            netem = topo.run("east", ["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
                                      f"{2 * args.delay_ms:g}ms", "limit", "100000"], check=False)
            added_rtt, how = (2 * args.delay_ms if netem.returncode == 0 else 0), "netem"
            if netem.returncode != 0:
                log(f"no delay added (netem: {netem.stderr.strip()}): the regions are one bridge apart")
        ca = open(f"{tmp}/us-east/ca.pem").read()

        def tx_bytes():
            out = topo.run("east", ["ip", "-s", "-j", "link", "show", "eth0"]).stdout
            return json.loads(out)[0]["stats64"]["tx"]["bytes"]

        def drop_target(name):
            a = AdminClient({"bootstrap.servers": f"{wa}:9092"})
            for f in a.delete_topics([name]).values():
                try:
                    f.result(60)
                except Exception:
                    pass

        results = []
        current_loss = 0
        for i, (via, loss, run) in enumerate(phases):
            if loss != current_loss:
                if loss:
                    topo.loss("east", loss)
                else:
                    topo.heal("east")
                current_loss = loss
            # A source alias per phase: each phase copies the whole topic into a target
            # topic of its own.
            alias, name = f"p{i}", f"m-{via}-{loss}-{run}"
            body = {"name": name, "source_alias": alias, "topics": topic, "via": via,
                    "discovery_interval_ms": 500, "source": quic_at if via == "quic" else kafka_at}
            if via == "quic":
                body["source_ca"] = ca
            tx0, cpu0 = tx_bytes(), proc_cpu_seconds(procs["west"].pid)
            # The link's own CPU: on a real network, this work is the NICs' and routers'.
            link_cpu0 = sum(proc_cpu_seconds(p.proc.pid) for p in proxies.values())
            t0 = time.monotonic()
            status, reply = api(wa, "POST", "/v1/mirrors", json.dumps(body).encode())
            if status != 201:
                raise SystemExit(f"mirror create failed: {status} {reply}")
            deadline = t0 + args.phase_timeout
            while True:
                report = (api(wa, "GET", f"/v1/mirrors/{name}")[1] or {}).get("report") or {}
                parts = report.get("topics", {}).get(topic, {}).get("partitions", [])
                if sum(p["position"] for p in parts) >= n:
                    break
                if time.monotonic() > deadline:
                    # Figures of what it copied: a mirror that stalls is a result too.
                    log(f"{name} did not finish in {args.phase_timeout:g} s")
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            copied = min(n, sum(p["position"] for p in parts))
            r = {"via": via, "loss_percent": loss, "run": run + 1, "seconds": elapsed,
                 "copied": copied, "finished": copied >= n, "mb_s": copied * size / 1e6 / elapsed, "source_tx_mb": (tx_bytes() - tx0) / 1e6,
                 "target_cpu_s": proc_cpu_seconds(procs["west"].pid) - cpu0,
                 "link_cpu_s": sum(proc_cpu_seconds(p.proc.pid) for p in proxies.values()) - link_cpu0,
                 "restarts": report.get("restarts"), "load_avg": os.getloadavg()[0]}
            log(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
            results.append(r)
            api(wa, "DELETE", f"/v1/mirrors/{name}")
            clients.run(drop_target, f"{alias}.{topic}", timeout=120)
    finally:
        for name, p in proxies.items():
            log(f"proxy ({name}): {p.stop()}")
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(30)
        topo.close()
        # The regions' data (gigabytes with the default record count); the logs stay.
        for cid in ("us-east", "eu-west"):
            shutil.rmtree(f"{tmp}/{cid}-data", ignore_errors=True)
    print(f"\nmirror transports: {n} records of {size} B (JSON-like text) per phase, {PARTITIONS} partitions, "
          f"{added_rtt:g} ms added round trip ({how}), loss by nftables, median (min..max) of {args.runs}")
    print(f"  {'transport':<10} {'loss':>5} {'MB/s':>22} {'source sent, MB':>22} {'target CPU s':>22}"
          f" {'proxy CPU s':>22} {'seconds':>22}")
    for loss in (0, args.loss):
        for via in ("kafka", "quic"):
            rs = [r for r in results if (r["via"], r["loss_percent"]) == (via, loss)]

            def fmt(k):
                v = [r[k] for r in rs]
                return f"{statistics.median(v):.3g} ({min(v):.3g}..{max(v):.3g})"
            unfinished = sum(not r["finished"] for r in rs)
            print(f"  {via:<10} {loss:>4}% {fmt('mb_s'):>22} {fmt('source_tx_mb'):>22} {fmt('target_cpu_s'):>22}"
                  f" {fmt('link_cpu_s'):>22} {fmt('seconds'):>22}" + (f"  {unfinished} of {len(rs)} did not finish" if unfinished else ""))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine_info(), "args": vars(args), "added_rtt_ms": added_rtt, "link": how,
                   "phases": results}, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description="mirror benchmark (prints figures)")
    ap.add_argument("--binary", default="target/release/quiver")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--delay-ms", type=float, default=40.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--modest-rate", type=float, default=5000.0)
    ap.add_argument("--sweep", type=lambda v: [float(x) for x in v.split(",") if x], default=[],
                    help="more latency phases, each at this share of the mirror's peak (e.g. 0.1,0.2,0.3)")
    ap.add_argument("--plugins", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"),
                                                       "wasm32-wasip2", "release"))
    ap.add_argument("--out", default="target/bench/mirror.json")
    ap.add_argument("--transports", action="store_true",
                    help="compare --via kafka and --via quic at 0%% and --loss %% packet loss (root)")
    ap.add_argument("--loss", type=int, default=1)
    ap.add_argument("--congestion", choices=("cubic", "bbr", "new_reno"), default=None,
                    help="the source broker's cluster.congestion_control (default: the broker's)")
    ap.add_argument("--transport-records", type=int, default=1_000_000)
    ap.add_argument("--phase-timeout", type=float, default=300.0,
                    help="--transports: a phase ends after this long, finished or not")
    ap.add_argument("--link", choices=("proxy", "netem"), default="proxy",
                    help="--transports: the delay from quiver-netdelay (TCP and UDP), or from netem")
    ap.add_argument("--proxy", choices=("rust", "python"), default="rust",
                    help="the delaying proxy of the default mode: quiver-netdelay or delayproxy.py")
    ap.add_argument("--netdelay", default=None,
                    help="the quiver-netdelay binary (default: next to --binary)")
    args = ap.parse_args()
    if args.netdelay is None:
        args.netdelay = os.path.join(os.path.dirname(os.path.abspath(args.binary)), "quiver-netdelay")
    args.netdelay = os.path.abspath(args.netdelay)
    if (args.proxy == "rust" or args.transports) and not os.access(args.netdelay, os.X_OK):
        raise SystemExit(f"no quiver-netdelay at {args.netdelay} (cargo build; or --netdelay PATH)")
    if args.transports:
        if args.out == "target/bench/mirror.json":
            args.out = "target/bench/mirror-transports.json"
        transports(args)
        return

    proxies = []

    def linked(b):
        if args.proxy == "rust":
            # Dies with the benchmark, also when a broker fails to start.
            proxy = NetDelay(args.netdelay, f"127.0.0.1:{b.port}", args.delay_ms,
                             popen=lambda cmd, **kw: subprocess.Popen(cmd, preexec_fn=_pdeathsig, **kw))
        else:
            proxy = DelayProxy("127.0.0.1", b.port, args.delay_ms).start()
        proxies.append(proxy)
        b.link = proxy
        return {"kafka.advertised_port": str(proxy.port)}

    source = Broker(args.binary, sets={"cluster.id": "us-east"}, before_start=linked)
    target = Broker(args.binary, sets={"cluster.id": "eu-west"})
    try:
        wasm = open(os.path.join(args.plugins, "quiver_plugin_mirror.wasm"), "rb").read()
        status, body = target.api("PUT", "/v1/plugins/mirror?kind=connector", wasm, "application/wasm")
        if status not in (200, 201):
            raise SystemExit(f"plugin deploy failed: {status} {body}")
        runs = []
        for i in range(args.runs):
            r = one_run(args, source, target)
            log(f"run {i + 1}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in r.items()))
            runs.append(r)
    finally:
        source.close()
        target.close()
        for p in proxies:
            said = p.stop()
            if said:
                log(f"proxy: {said}")

    def med(k):
        vals = [r[k] for r in runs if r[k] is not None]
        return statistics.median(vals), min(vals), max(vals)
    rtt = 2 * args.delay_ms
    print(f"\nmirror over a {rtt:.0f} ms round trip, {args.records} records of {args.size} B, "
          f"{PARTITIONS} partitions, median (min..max) of {args.runs}")
    for key, what in (("local_produce_mb_s", "local produce, MB/s"), ("mirror_mb_s", "mirror, MB/s"),
                      ("ratio", "mirror / local produce (target >= 0.8)"),
                      ("mirror_cpu_s_per_gib", "target broker CPU s per GiB mirrored"),
                      ("latency_rate_rec_s", "latency phase rate, records/s (half of peak)"),
                      ("latency_p50_ms", "replication latency p50, ms"),
                      ("latency_p99_ms", f"replication latency p99, ms (target <= {rtt + 50:.0f})"),
                      ("modest_p50_ms", f"latency p50 at {args.modest_rate:.0f} records/s, ms"),
                      ("modest_p99_ms", f"latency p99 at {args.modest_rate:.0f} records/s, ms"),
                      ("half_cores_machine", f"cores busy at half of peak (of {os.cpu_count()}), all work"),
                      ("half_cores_producer", "  of which the producer (this program)"),
                      ("half_cores_source", "  the source broker"),
                      ("half_cores_proxy", "  the delay proxy"),
                      ("half_cores_target", "  the target broker (the mirror)"),
                      *((f"sweep_{share:g}_{k}", f"at {share:g} of peak: {what}")
                        for share in args.sweep
                        for k, what in (("p50_ms", "latency p50, ms"), ("p99_ms", "latency p99, ms"),
                                        ("cores_machine", "cores busy, all work"),
                                        ("cores_target", "cores of the target broker")))):
        if not any(key in r for r in runs):
            continue
        m, lo, hi = med(key)
        print(f"  {what:<50} {m:>10.3g}  ({lo:.3g}..{hi:.3g})")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine_info(), "args": vars(args), "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
