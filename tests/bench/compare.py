#!/usr/bin/env python3
"""Quiver side by side with peer brokers, under one load generator.

Starts each broker in turn on 127.0.0.1 (its own temp directory, a reserved port,
readiness asked, never slept for), runs the same scenarios against it with
`quiver-loadgen` (librdkafka for every Kafka-API broker, async-nats for NATS JetStream),
samples the broker's CPU time (utime+stime of /proc/PID/stat) and peak RSS (VmHWM of a
broker started fresh for the run) and prints one table: median, range, broker CPU-s per
GiB, peak RSS and the ratio Quiver/peer. Writes every run's raw figures as JSON, and a
Markdown section (`--markdown`, or in place between the markers of `--doc`).

Brokers and their durability (all three acknowledge a write once it is in the
operating system's page cache, none fsyncs before acknowledging):
- quiver: release binary, default settings (`log.flush_interval_ms` = 1000);
- tansu: `cargo install tansu --locked --features libsql`, storage `sqlite://` in the
  run's directory (SQLite in WAL mode, `synchronous = NORMAL`: no fsync per commit);
- nats: Debian's nats-server with JetStream file storage (no fsync per message).
Peers missing from the machine are installed when `--install-peers` is given (tansu with
cargo into `--peers-root`, nats-server with apt-get); they are benchmark peers, not test
dependencies, so tests/run does not install them.

Each (scenario, run) starts every broker fresh and interleaves the brokers, so a slow
minute on this shared machine falls on all of them. A run whose record counts do not
check out (loadgen exit 1) is reported as failed and excluded from the figures; the
exit code is then 1.

See tests/bench/README.md and docs/perf.md ("Side by side with peers").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "e2e"))

import broker_bench as bb  # noqa: E402
from broker_bench import GIB, BenchError, log  # noqa: E402

ROOT = HERE.parent.parent
DOC_BEGIN = "<!-- compare.py: begin generated section -->"
DOC_END = "<!-- compare.py: end generated section -->"


# --------------------------------------------------------------------------------------
# brokers


class Proc:
    """A broker process started for one run: temp dir, reserved ports, readiness."""

    name = "?"

    def __init__(self, parent_dir: str):
        self.tmp = tempfile.mkdtemp(prefix=f"compare-{self.name}-", dir=parent_dir)
        self.port, self._lock = bb.reserve_port()
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        self.idle_rss_kib = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list:
        raise NotImplementedError

    def ready(self) -> bool:
        return bb.api_versions_probe("127.0.0.1", self.port, timeout=1.0)

    def pids(self) -> list:
        return [self.proc.pid]

    def start(self, deadline_s: float = 60.0):
        self._log = open(os.path.join(self.tmp, "broker.log"), "wb")
        self.proc = subprocess.Popen(self.command(), cwd=self.tmp, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=bb._pdeathsig)
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < deadline_s:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} during startup\n{self.log_tail()}")
            try:
                if self.ready():
                    self.idle_rss_kib = bb.proc_status_kib(self.proc.pid, "VmRSS")
                    return time.monotonic() - t0
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise BenchError(f"{self.name} not ready after {deadline_s} s ({last})\n{self.log_tail()}")

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.name} died with exit code {self.proc.returncode}\n{self.log_tail()}")

    def cpu_s(self) -> float:
        return sum(bb.proc_cpu_seconds(p) for p in self.pids())

    def peak_rss_kib(self) -> int:
        return sum(bb.proc_status_kib(p, "VmHWM") or 0 for p in self.pids())

    def log_tail(self, n=30) -> str:
        try:
            lines = Path(self.tmp, "broker.log").read_text(errors="replace").splitlines()
            return f"--- {self.name} log tail ---\n" + "\n".join(lines[-n:])
        except OSError:
            return f"(no {self.name} log)"

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.close(self._lock)


class QuiverProc(Proc):
    name = "quiver"

    def __init__(self, parent_dir, binary):
        super().__init__(parent_dir)
        self.binary = binary

    def command(self):
        return [self.binary, "serve", "--data-dir", os.path.join(self.tmp, "data"),
                "--kafka-listen", self.bootstrap, "--set", "admin.enabled=false"]


class TansuProc(Proc):
    name = "tansu"

    def __init__(self, parent_dir, binary):
        super().__init__(parent_dir)
        self.binary = binary

    def command(self):
        url = f"tcp://127.0.0.1:{self.port}"
        # sqlite://tansu.db is relative to the working directory (the run's temp dir)
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "sqlite://tansu.db", "--silent"]


class NatsProc(Proc):
    name = "nats"

    def __init__(self, parent_dir, binary):
        super().__init__(parent_dir)
        self.binary = binary
        self.monitor_port, self._lock2 = bb.reserve_port()

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def command(self):
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
                "-js", "-sd", os.path.join(self.tmp, "js")]

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true",
                                        timeout=1.0) as r:
                return r.status == 200
        except OSError:
            return False

    def close(self):
        super().close()
        os.close(self._lock2)


class QuiverCluster:
    """Three Quiver brokers on loopback (tests/e2e/cluster.py), driven as one."""

    name = "quiver-rf3"

    def __init__(self, parent_dir, binary):
        os.environ["QUIVER_BIN"] = binary
        from cluster import Cluster
        self.tmp = tempfile.mkdtemp(prefix="compare-cluster-", dir=parent_dir)
        self.c = Cluster(Path(self.tmp) / "cluster", n=3)
        self.idle_rss_kib = None

    @property
    def bootstrap(self):
        return self.c.bootstrap

    def start(self):
        t0 = time.monotonic()
        try:
            self.c.start()
        except AssertionError as e:
            raise BenchError(f"the cluster did not form: {e}")
        self.idle_rss_kib = max(bb.proc_status_kib(p, "VmRSS") or 0 for p in self.pids())
        return time.monotonic() - t0

    def pids(self):
        return [b.proc.pid for b in self.c.brokers.values()]

    def cpu_s(self):
        return sum(bb.proc_cpu_seconds(p) for p in self.pids())

    def peak_rss_kib(self):
        # the largest of the three: each is a machine of its own in a real cluster
        return max(bb.proc_status_kib(p, "VmHWM") or 0 for p in self.pids())

    def check_alive(self):
        dead = [i for i, b in self.c.brokers.items() if not b.alive()]
        if dead:
            raise BenchError(f"cluster brokers {dead} died")

    def create_topic(self, name, partitions):
        self.c.create_topic(name, partitions, rf=3, config={"min.insync.replicas": "2"}, timeout=60)

    def close(self):
        self.c.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------
# scenarios


@dataclass
class Scenario:
    id: str
    title: str
    brokers: tuple
    # metric: "mb_s" (throughput, higher is better) or "p99_ms" (latency, lower is better)
    metric: str = "mb_s"
    run: Optional[Callable] = None
    params: dict = field(default_factory=dict)


def loadgen(cfg, args: list, timeout: float) -> dict:
    cmd = [cfg.loadgen] + args
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"loadgen timed out after {timeout:.0f} s: {' '.join(cmd)}")
    lines = p.stdout.strip().splitlines()
    if p.returncode == 2 or not lines:
        raise BenchError(f"loadgen failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()[-2000:]}")
    try:
        res = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise BenchError(f"loadgen printed no JSON line: {' '.join(cmd)}\n{p.stdout[-2000:]}")
    res["_cmd"] = " ".join(cmd[1:])
    return res


def kafka_produce(cfg, broker, topic, size, acks, partitions, seconds, linger=5, producers=None, create=True):
    args = ["produce", "--bootstrap", broker.bootstrap, "--topic", topic, "--size", str(size),
            "--acks", acks, "--linger-ms", str(linger), "--seconds", str(seconds),
            "--producers", str(producers or cfg.producers)]
    if create:
        args += ["--partitions", str(partitions)]
    return loadgen(cfg, args, timeout=seconds + 240)


def run_produce(cfg, sc, broker):
    p = sc.params
    if broker.name == "nats":
        n = p["nats_records"]
        return loadgen(cfg, ["nats-publish", "--server", broker.url, "--records", str(n),
                             "--size", str(p["size"]), "--publishers", str(cfg.producers)], timeout=600)
    if broker.name == "quiver-rf3":
        broker.create_topic("bench", p["partitions"])
        return kafka_produce(cfg, broker, "bench", p["size"], p["acks"], p["partitions"], p["seconds"], create=False)
    return kafka_produce(cfg, broker, "bench", p["size"], p["acks"], p["partitions"], p["seconds"])


def run_consume(cfg, sc, broker):
    """Writes first (not measured), then reads everything back from the beginning."""
    p = sc.params
    if broker.name == "nats":
        w = loadgen(cfg, ["nats-publish", "--server", broker.url, "--records", str(p["nats_records"]),
                          "--size", str(p["size"])], timeout=600)
        if not w["ok"]:
            return w
        return loadgen(cfg, ["nats-consume", "--server", broker.url], timeout=600), w
    w = kafka_produce(cfg, broker, "bench", p["size"], "1", p["partitions"], p["seconds"])
    if not w["ok"]:
        return w
    args = ["consume", "--bootstrap", broker.bootstrap, "--topic", "bench",
            "--consumers", str(cfg.consumers)]
    return loadgen(cfg, args, timeout=600), w


def run_e2e(cfg, sc, broker):
    p = sc.params
    rate = p["rate"]
    if rate == "half-peak":
        peak = cfg.peaks.get(broker.name)
        if not peak:
            raise BenchError(f"no produce peak for {broker.name} (run produce-1k-acks1-p1 first)")
        rate = max(1000, int(peak / 2))
    args = ["e2e", "--bootstrap", broker.bootstrap, "--topic", "bench", "--size", str(p["size"]),
            "--acks", "1", "--partitions", "1", "--rate", str(rate), "--seconds", str(p["seconds"]),
            "--warmup", "1", "-X", "fetch.wait.max.ms=100"]
    return loadgen(cfg, args, timeout=p["seconds"] + 120)


def scenarios(quick: bool) -> list:
    secs = 3 if quick else 8
    e2e_secs = 4 if quick else 10
    nats_1k = 100_000 if quick else 500_000
    nats_100 = 200_000 if quick else 2_000_000
    out = []
    for size, label, nats_n in ((1024, "1k", nats_1k), (100, "100b", nats_100)):
        for acks in ("1", "all"):
            for parts in (1, 6, 24):
                brokers = ("quiver", "tansu")
                # JetStream acknowledges each publish once stored (R1): one row, beside acks=1 1p
                if acks == "1" and parts == 1:
                    brokers += ("nats",)
                out.append(Scenario(
                    f"produce-{label}-acks{acks}-p{parts}",
                    f"produce {size} B, acks={acks}, {parts} partition{'s' if parts > 1 else ''}",
                    brokers, "mb_s", run_produce,
                    {"size": size, "acks": acks, "partitions": parts, "seconds": secs, "nats_records": nats_n}))
    for parts in (1, 6):
        out.append(Scenario(f"consume-1k-p{parts}", f"consume 1 KiB from the beginning, {parts} partition"
                            + ("s" if parts > 1 else ""),
                            ("quiver", "tansu") + (("nats",) if parts == 1 else ()), "mb_s", run_consume,
                            {"size": 1024, "partitions": parts, "seconds": secs, "nats_records": nats_1k}))
    out.append(Scenario("e2e-1k-5k", "end-to-end latency, 1 KiB at 5,000 msgs/s", ("quiver", "tansu"),
                        "p99_ms", run_e2e, {"size": 1024, "rate": 5000, "seconds": e2e_secs}))
    out.append(Scenario("e2e-1k-half-peak", "end-to-end latency, 1 KiB at half of the broker's peak",
                        ("quiver", "tansu"), "p99_ms", run_e2e,
                        {"size": 1024, "rate": "half-peak", "seconds": e2e_secs}))
    out.append(Scenario("rf3-1k-acksall-p6", "3 brokers, RF=3, acks=all, 1 KiB, 6 partitions",
                        ("quiver-rf3",), "mb_s", run_produce,
                        {"size": 1024, "acks": "all", "partitions": 6, "seconds": secs}))
    return out


# --------------------------------------------------------------------------------------
# running


def make_broker(cfg, name):
    if name == "quiver":
        return QuiverProc(cfg.workdir, cfg.quiver)
    if name == "tansu":
        return TansuProc(cfg.workdir, cfg.tansu)
    if name == "nats":
        return NatsProc(cfg.workdir, cfg.nats_server)
    if name == "quiver-rf3":
        return QuiverCluster(cfg.workdir, cfg.quiver)
    raise BenchError(f"unknown broker {name}")


def one_run(cfg, sc, name) -> dict:
    broker = make_broker(cfg, name)
    try:
        ready_s = broker.start()
        cpu0 = broker.cpu_s()
        out = sc.run(cfg, sc, broker)
        write = None
        if isinstance(out, tuple):
            out, write = out
        cpu1 = broker.cpu_s()
        broker.check_alive()
        rec = {
            "broker": name, "ok": bool(out.get("ok")), "problems": out.get("problems", []),
            "records": out.get("records"), "bytes": out.get("bytes"), "seconds": out.get("seconds"),
            "mb_s": out.get("mb_per_s"), "msgs_s": out.get("msgs_per_s"), "latency_ms": out.get("latency_ms"),
            "broker_cpu_s": round(cpu1 - cpu0, 3), "peak_rss_mib": round(broker.peak_rss_kib() / 1024, 1),
            "idle_rss_mib": round((broker.idle_rss_kib or 0) / 1024, 1), "ready_s": round(ready_s, 3),
            "loadgen": out, "write": write,
        }
        # CPU over everything the broker did in the run (for consume: the write too)
        if out.get("bytes"):
            nbytes = out["bytes"] + ((write or {}).get("bytes") or 0)
            rec["cpu_s_per_gib"] = round((cpu1 - cpu0) / (nbytes / GIB), 3)
        if rec["latency_ms"]:
            rec["p99_ms"] = rec["latency_ms"]["p99"]
        return rec
    finally:
        broker.close()


def summarize(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def run_all(cfg, todo):
    results = {}
    for sc in todo:
        brokers = [b for b in sc.brokers if b in cfg.brokers]
        if not brokers:
            continue
        log(f"scenario {sc.id}: {sc.title} ({', '.join(brokers)})")
        runs = {b: [] for b in brokers}
        for i in range(cfg.runs):
            order = brokers if i % 2 == 0 else list(reversed(brokers))
            for b in order:
                try:
                    rec = one_run(cfg, sc, b)
                except BenchError as e:
                    log(f"  {b} run {i + 1}: FAILED: {e}")
                    rec = {"broker": b, "ok": False, "problems": [str(e)[:2000]]}
                runs[b].append(rec)
                if rec.get("ok"):
                    lat = rec.get("latency_ms") or {}
                    log(f"  {b} run {i + 1}: {rec['mb_s']:.1f} MB/s, {rec['msgs_s']:.0f} msgs/s, "
                        f"p99 {lat.get('p99', float('nan')):.2f} ms, CPU {rec['broker_cpu_s']:.2f} s, "
                        f"peak RSS {rec['peak_rss_mib']:.0f} MiB")
                else:
                    log(f"  {b} run {i + 1}: counts did not check out: {rec.get('problems')}")
        summary = {}
        for b, rs in runs.items():
            good = [r for r in rs if r.get("ok")]
            summary[b] = {
                "runs_ok": len(good), "runs": len(rs),
                "mb_s": summarize([r["mb_s"] for r in good]),
                "msgs_s": summarize([r["msgs_s"] for r in good]),
                "p99_ms": summarize([r.get("p99_ms") for r in good]),
                "p50_ms": summarize([(r.get("latency_ms") or {}).get("p50") for r in good]),
                "p999_ms": summarize([(r.get("latency_ms") or {}).get("p999") for r in good]),
                "cpu_s_per_gib": summarize([r.get("cpu_s_per_gib") for r in good]),
                "peak_rss_mib": summarize([r["peak_rss_mib"] for r in good]),
                "idle_rss_mib": summarize([r["idle_rss_mib"] for r in good]),
            }
        if sc.id == "produce-1k-acks1-p1":
            for b, s in summary.items():
                if s["msgs_s"]:
                    cfg.peaks[b] = s["msgs_s"]["median"]
        results[sc.id] = {"title": sc.title, "metric": sc.metric, "params": sc.params, "runs": runs,
                          "summary": summary}
    return results


# --------------------------------------------------------------------------------------
# report


def f(v, d=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{d}f}"


def table_rows(results):
    rows = []
    for sid, r in results.items():
        metric = r["metric"]
        q = r["summary"].get("quiver") or r["summary"].get("quiver-rf3")
        for b, s in r["summary"].items():
            m = s[metric]
            if m is None:
                rows.append([sid, b, f"FAILED ({s['runs_ok']}/{s['runs']} runs ok)", "", "", "", "", ""])
                continue
            unit = "MB/s" if metric == "mb_s" else "ms p99"
            main = f"{f(m['median'])} {unit}"
            if metric == "mb_s" and s["msgs_s"]:
                main += f" ({f(s['msgs_s']['median'], 0)} msgs/s)"
            elif s["p50_ms"]:
                main += f" (p50 {f(s['p50_ms']['median'], 2)}, p99.9 {f(s['p999_ms']['median'], 2)})"
            rng = f"{f(m['min'])} – {f(m['max'])}"
            ratio = ""
            if b not in ("quiver", "quiver-rf3") and q and q[metric] and m["median"]:
                ratio = f"{q[metric]['median'] / m['median']:.3g}"
            cpu = f(s["cpu_s_per_gib"]["median"], 2) if s["cpu_s_per_gib"] else "–"
            rss = f(s["peak_rss_mib"]["median"], 0) if s["peak_rss_mib"] else "–"
            n = f"{s['runs_ok']}/{s['runs']}"
            rows.append([sid, b, main, rng, cpu, rss, ratio, n])
    return rows


HEAD = ["scenario", "broker", "median", "min – max", "CPU-s/GiB", "peak RSS MiB", "Quiver/peer", "runs ok"]


def print_table(rows):
    widths = [max(len(str(x)) for x in col) for col in zip(HEAD, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEAD, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


def get(results, sid, broker, key="mb_s"):
    try:
        return results[sid]["summary"][broker][key]["median"]
    except (KeyError, TypeError):
        return None


def targets(results):
    """(target, measured, met) for every target of the comparison."""
    out = []

    def add(name, measured, met):
        out.append((name, measured, None if met is None else bool(met)))

    for p in (1, 6, 24):
        sid = f"produce-1k-acks1-p{p}"
        q, t = get(results, sid, "quiver"), get(results, sid, "tansu")
        add(f"1 KiB acks=1 produce, {p}p: ≥ 300 MB/s", f"{f(q)} MB/s" if q else "–", q and q >= 300)
        add(f"1 KiB acks=1 produce, {p}p: ≥ 6x Tansu", f"{q / t:.2f}x ({f(q)} vs {f(t)} MB/s)" if q and t else "–",
            (q / t >= 6) if q and t else None)
    for p in (1, 6):
        q = get(results, f"consume-1k-p{p}", "quiver")
        add(f"consume 1 KiB, {p}p: ≥ 800 MB/s", f"{f(q)} MB/s" if q else "–", q and q >= 800)
    best = None
    for p in (1, 6, 24):
        v = get(results, f"produce-100b-acks1-p{p}", "quiver", "msgs_s")
        if v and (best is None or v > best[0]):
            best = (v, p)
    add("100 B produce with batching: ≥ 1,000,000 msgs/s",
        f"{f(best[0], 0)} msgs/s ({best[1]}p)" if best else "–", best and best[0] >= 1e6)
    v = get(results, "e2e-1k-5k", "quiver", "p99_ms")
    add("e2e latency at 5k msgs/s: p99 ≤ 5 ms", f"{f(v, 2)} ms" if v is not None else "–",
        None if v is None else v <= 5)
    rf3, single = get(results, "rf3-1k-acksall-p6", "quiver-rf3"), get(results, "produce-1k-acks1-p6", "quiver")
    add("3 brokers RF=3 acks=all ≥ 0.5x single acks=1 (6p)",
        f"{rf3 / single:.2f}x ({f(rf3)} vs {f(single)} MB/s)" if rf3 and single else "–",
        (rf3 / single >= 0.5) if rf3 and single else None)
    idle = [r.get("idle_rss_mib") for res in results.values() for r in res["runs"].get("quiver", [])
            if r.get("idle_rss_mib")]
    add("idle broker RSS ≤ 50 MiB", f"{max(idle):.1f} MiB (largest of {len(idle)} starts)" if idle else "–",
        (max(idle) <= 50) if idle else None)
    return out


def markdown(results, machine, cfg, rows):
    mark = {True: "✓", False: "✗", None: "not measured"}
    lines = [DOC_BEGIN, ""]
    lines.append(f"Measured {machine['date']} with `{' '.join(machine['argv'])}`: {cfg.runs} runs per scenario, "
                 f"{'quick' if cfg.quick else 'full'} mode, every broker started fresh for every run, brokers "
                 "interleaved per run.")
    lines.append("")
    lines.append(f"Machine: {machine['nproc']} vCPUs ({machine['cpu_model']}), {machine['mem_gib']} GiB, kernel "
                 f"{machine['kernel']}; shared with other work: load average {machine['loadavg_start'][0]:.1f} at "
                 f"the start, {machine['loadavg_end'][0]:.1f} at the end. Quiver {machine['quiver']}, "
                 f"{machine['tansu']}, {machine['nats']}; quiver-loadgen (librdkafka {machine['librdkafka']}) "
                 "runs on the same two cores as the broker.")
    lines.append("")
    lines.append("| " + " | ".join(HEAD) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * 6) + "|")
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in r) + " |")
    lines.append("")
    lines.append("| target | measured (median) | |")
    lines.append("|---|---|---|")
    for name, measured, met in targets(results):
        lines.append(f"| {name} | {measured} | {mark[met]} |")
    lines.append("")
    lines.append(DOC_END)
    return "\n".join(lines)


def write_doc(path, section):
    text = Path(path).read_text()
    if DOC_BEGIN in text and DOC_END in text:
        a, rest = text.split(DOC_BEGIN, 1)
        _, b = rest.split(DOC_END, 1)
        text = a + section + b
    else:
        raise BenchError(f"{path} has no {DOC_BEGIN!r} … {DOC_END!r} markers to write between")
    Path(path).write_text(text)


# --------------------------------------------------------------------------------------
# tools


def version_of(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def find_tools(cfg):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/quiver/target"))
    cfg.quiver = cfg.quiver or os.path.join(target, "release", "quiver")
    cfg.loadgen = cfg.loadgen or os.path.join(os.path.dirname(cfg.quiver), "quiver-loadgen")
    # brokers run in their own directories: every path absolute
    cfg.quiver, cfg.loadgen = os.path.abspath(cfg.quiver), os.path.abspath(cfg.loadgen)
    for what, path in (("quiver", cfg.quiver), ("quiver-loadgen", cfg.loadgen)):
        if not os.access(path, os.X_OK):
            raise BenchError(f"{what} not found at {path} (cargo build --release -p quiver -p quiver-loadgen)")
    cfg.tansu = os.path.abspath(cfg.tansu or shutil.which("tansu") or os.path.join(cfg.peers_root, "bin", "tansu"))
    if "tansu" in cfg.brokers and not os.access(cfg.tansu, os.X_OK):
        if not cfg.install_peers:
            raise BenchError(f"tansu not found at {cfg.tansu}: --install-peers installs it "
                             f"(cargo install tansu --locked --features libsql --root {cfg.peers_root}), "
                             "or leave it out with --brokers")
        log("installing tansu with cargo (takes a while)")
        subprocess.run(["cargo", "install", "tansu", "--locked", "--features", "libsql", "--root", cfg.peers_root],
                       check=True)
        cfg.tansu = os.path.join(cfg.peers_root, "bin", "tansu")
    cfg.nats_server = cfg.nats_server or shutil.which("nats-server") or "/usr/sbin/nats-server"
    if "nats" in cfg.brokers and not os.access(cfg.nats_server, os.X_OK):
        if not cfg.install_peers:
            raise BenchError("nats-server not found: --install-peers installs it (apt-get install -y nats-server), "
                             "or leave it out with --brokers")
        log("installing nats-server with apt-get")
        subprocess.run(["apt-get", "install", "-y", "-qq", "nats-server"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        cfg.nats_server = shutil.which("nats-server") or "/usr/sbin/nats-server"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quiver", help="quiver release binary (default $CARGO_TARGET_DIR/release/quiver)")
    ap.add_argument("--loadgen", help="quiver-loadgen binary (default: next to --quiver)")
    ap.add_argument("--tansu", help="tansu binary (default: on PATH, else PEERS_ROOT/bin/tansu)")
    ap.add_argument("--nats-server", help="nats-server binary (default: on PATH)")
    ap.add_argument("--peers-root", default=os.path.expanduser("~/.cache/quiver/peers"),
                    help="where --install-peers puts tansu (cargo install --root)")
    ap.add_argument("--install-peers", action="store_true", help="install missing peers (cargo, apt-get)")
    ap.add_argument("--brokers", default="quiver,tansu,nats,quiver-rf3",
                    help="comma list of quiver, tansu, nats, quiver-rf3 (default all)")
    ap.add_argument("--scenarios", default="", help="regular expression on scenario ids (default all)")
    ap.add_argument("--list", action="store_true", help="list scenario ids and exit")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short runs (3 s produce, fewer NATS messages)")
    ap.add_argument("--producers", type=int, default=1, help="producer threads of loadgen per run")
    ap.add_argument("--consumers", type=int, default=1,
                    help="consumer threads of loadgen per consume run (partitions split among them)")
    ap.add_argument("--workdir", default=None, help="parent of the brokers' temp directories")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench" / "compare.json"))
    ap.add_argument("--markdown", default=None, help="write the Markdown section to this file")
    ap.add_argument("--doc", default=None,
                    help="replace the generated section of this Markdown file (e.g. docs/perf.md)")
    cfg = ap.parse_args(argv)
    cfg.brokers = [b for b in cfg.brokers.split(",") if b]
    cfg.peaks = {}
    return cfg


def main(argv=None):
    cfg = parse_args(argv if argv is not None else sys.argv[1:])
    todo = [s for s in scenarios(cfg.quick) if re.search(cfg.scenarios, s.id)]
    if cfg.list:
        for s in todo:
            print(f"{s.id:28} {s.title}  [{', '.join(s.brokers)}]")
        return 0
    # half of peak needs the peak: run the 1 KiB acks=1 1p produce first when it is asked for
    if any(s.params.get("rate") == "half-peak" for s in todo) and not any(s.id == "produce-1k-acks1-p1"
                                                                         for s in todo):
        todo.insert(0, next(s for s in scenarios(cfg.quick) if s.id == "produce-1k-acks1-p1"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        find_tools(cfg)
        cfg.workdir = cfg.workdir or tempfile.gettempdir()
        t0 = time.time()
        machine = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "argv": ["python3", "tests/bench/compare.py"] + (argv if argv is not None else sys.argv[1:]),
            "nproc": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "quiver": version_of([cfg.quiver, "--version"]),
            "tansu": version_of([cfg.tansu, "--version"]) if "tansu" in cfg.brokers else "-",
            "nats": version_of([cfg.nats_server, "--version"]) if "nats" in cfg.brokers else "-",
        }
        info = bb.machine_info()
        machine.update({k: info[k] for k in ("mem_gib", "cpu_model", "kernel")})
        machine["librdkafka"] = "2.10.0 (rdkafka-sys 4.9.0, built with cmake)"
        results = run_all(cfg, todo)
        machine["loadavg_end"] = os.getloadavg()
        machine["seconds"] = round(time.time() - t0, 1)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 2
    rows = table_rows(results)
    print()
    print_table(rows)
    print()
    for name, measured, met in targets(results):
        print(f"{'✓' if met else ('✗' if met is False else '?')} {name}: {measured}")
    print(f"\nload average {machine['loadavg_start'][0]:.1f} → {machine['loadavg_end'][0]:.1f}, "
          f"{machine['seconds']:.0f} s")
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    with open(cfg.out, "w") as fh:
        json.dump({"machine": machine, "results": results}, fh, indent=1)
    log(f"wrote {cfg.out}")
    section = markdown(results, machine, cfg, rows)
    if cfg.markdown:
        Path(cfg.markdown).write_text(section + "\n")
        log(f"wrote {cfg.markdown}")
    if cfg.doc:
        write_doc(cfg.doc, section)
        log(f"updated {cfg.doc}")
    failed = [(sid, b) for sid, r in results.items() for b, s in r["summary"].items() if s["runs_ok"] < s["runs"]]
    if failed:
        log(f"runs whose counts did not check out or that failed: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
