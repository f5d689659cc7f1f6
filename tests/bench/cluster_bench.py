#!/usr/bin/env python3
"""Benchmark of a three-broker Quiver cluster on one machine (issue 5).

Prints figures (median and range over runs, or p50/p99 over samples) next to the
targets, writes them as JSON, and asserts nothing: the exit code is non-zero
only when the benchmark itself failed (a broker did not start or died, the
cluster did not form, a client error, a fault that did not recover).

1. throughput   acks=all produce to an RF=3 topic (min.insync.replicas=2) on three
                brokers, as a ratio of acks=1 produce to a single broker (RF 1) in the
                same run with the same load generator (librdkafka workers in their own
                processes; the order alternates between runs). Target: ratio >= 0.5.
                Also broker CPU-seconds per GiB: the three brokers together vs the one.
2. failover     kill -9 the leader of a partition, then time until an acks=all record
                sent right after the kill is acknowledged (what a client waits); the
                broker is restarted and every replica back in sync before the next kill.
                p50/p99 over --kills (20). Target: p99 <= 3 s.
3. recovery     kill -9 a follower, produce --catchup-bytes (1 GiB) with acks=all while
                it is down, restart it and time until it is back in the ISR of every
                partition and /v1/cluster lists nothing under-replicated.

Not measured here: replication CPU over QUIC vs the same bytes over TCP. That is
host/examples/transport_bench.rs (replication-shaped request/answer traffic over the
cluster endpoint, TCP with the same TLS, and plain TCP; figures in docs/perf.md).

    python3 tests/bench/cluster_bench.py --binary /tmp/quiver
    python3 tests/bench/cluster_bench.py --quick                  # smoke run, small numbers
    python3 tests/bench/cluster_bench.py --skip recovery --kills 50
    python3 tests/bench/cluster_bench.py --skip throughput,recovery --keep   # then:
    python3 tests/bench/failover_timeline.py target/bench/cluster.json        # where each kill's time went

The brokers run with the test clusters' timing (tests/e2e/cluster.py FAST_TIMING:
heartbeat 250 ms, session 1500 ms, replica lag 3000 ms, election 300 ms) unless
--cluster-set key=value says otherwise; the figures depend on them and the JSON
records them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "e2e"))

import broker_bench as bb  # noqa: E402
from broker_bench import GIB, MB, BenchError, log  # noqa: E402
from harness import PortSlot  # noqa: E402

TARGETS = {
    "acks_all_rf3_over_single_acks1": (">=", 0.5, "x"),
    "failover_p99_s": ("<=", 3.0, "s"),
}


# --------------------------------------------------------------------------------------
# load generator (spawned processes; librdkafka threads and fork do not mix)


def produce(ctx, cfg, bootstrap, topic, partitions, records, acks, pids):
    """records x cfg.record_size to topic from cfg.producers workers; MB/s and the
    CPU-seconds the broker processes `pids` spent meanwhile."""
    workers = max(1, min(cfg.producers, records))
    per = [records // workers + (1 if w < records % workers else 0) for w in range(workers)]
    parts = list(range(partitions))
    args = [(bootstrap, topic, parts[w % partitions:] + parts[:w % partitions], per[w], cfg.record_size,
             cfg.linger_ms, {"acks": acks}) for w in range(workers)]
    cpu0 = sum(bb.proc_cpu_seconds(pid) for pid in pids)
    res = bb.run_workers(ctx, bb.produce_worker, args, cfg.phase_timeout)
    cpu1 = sum(bb.proc_cpu_seconds(pid) for pid in pids)
    bad = [r for r in res if not r["ok"]]
    if bad:
        raise BenchError(f"produce (acks={acks}) to {topic} failed: {bad[0]['first_error']}")
    secs = max(r["t1"] for r in res) - min(r["t0"] for r in res)
    nbytes = records * cfg.record_size
    return {"records": records, "seconds": secs, "mb_s": nbytes / MB / secs, "msgs_s": records / secs,
            "broker_cpu_s_per_gib": (cpu1 - cpu0) / (nbytes / GIB),
            "client_cpu_s_per_gib": sum(r["cpu"] for r in res) / (nbytes / GIB)}


# --------------------------------------------------------------------------------------
# the cluster


def start_cluster(cfg, workdir):
    from cluster import Cluster
    settings = {}
    for item in cfg.cluster_set:
        k, v = item.split("=", 1)
        settings[k] = int(v) if v.lstrip("-").isdigit() else v
    try:
        c = Cluster(workdir / "cluster", n=3, cluster=settings)
    except AssertionError as e:
        raise BenchError(f"could not set up the cluster: {e}")
    try:
        c.start()
    except AssertionError as e:
        tails = c.log_tails(20)
        c.close()
        raise BenchError(f"the cluster did not form: {e}\n{tails}")
    return c


def cluster_pids(c):
    return [b.proc.pid for b in c.brokers.values() if b.alive()]


def cluster_topic(c, name, partitions, timeout=60):
    try:
        c.create_topic(name, partitions, rf=3, config={"min.insync.replicas": "2"}, timeout=timeout)
    except Exception as e:
        raise BenchError(f"creating {name} on the cluster: {e}")


def check_cluster(c):
    dead = [i for i, b in c.brokers.items() if not b.alive()]
    if dead:
        raise BenchError(f"brokers {dead} died\n{c.log_tails(30)}")


def phase_throughput(ctx, cfg, c, single, runs_out):
    tag = uuid.uuid4().hex[:6]
    for run in range(cfg.runs):
        # deleted topics free their space (if DeleteTopics works): check before every run
        need, free = cfg.records * cfg.record_size * 4 * 1.3, shutil.disk_usage(single.tmp).free
        if need > free:
            raise BenchError(f"run {run + 1} needs about {need / GIB:.1f} GiB of disk, {free / GIB:.1f} GiB free")
        rr = {"run": run + 1}
        order = ["single", "cluster"] if run % 2 == 0 else ["cluster", "single"]
        for which in order:
            topic = f"bench-{tag}-r{run + 1}-{which}"
            if which == "single":
                bb.create_topic(single.bootstrap, topic, cfg.partitions)
                log(f"run {run + 1}: single broker acks=1: {cfg.records:,} x {cfg.record_size} B")
                rr[which] = produce(ctx, cfg, single.bootstrap, topic, cfg.partitions, cfg.records, 1,
                                    [single.proc.pid])
                bb.delete_topic(single.bootstrap, topic)
                single.check_alive()
            else:
                cluster_topic(c, topic, cfg.partitions)
                log(f"run {run + 1}: three brokers acks=all RF 3: {cfg.records:,} x {cfg.record_size} B")
                rr[which] = produce(ctx, cfg, c.bootstrap, topic, cfg.partitions, cfg.records, "all",
                                    cluster_pids(c))
                bb.delete_topic(c.bootstrap, topic)
                check_cluster(c)
            log(f"  {which}: {rr[which]['mb_s']:.1f} MB/s, broker CPU "
                f"{rr[which]['broker_cpu_s_per_gib']:.2f} s/GiB")
        rr["ratio"] = rr["cluster"]["mb_s"] / rr["single"]["mb_s"]
        log(f"  ratio acks=all RF3 / single acks=1: {rr['ratio']:.2f}")
        runs_out.append(rr)


def phase_failover(cfg, c):
    """Samples of kill -9 leader -> acks=all record acknowledged, in seconds."""
    from confluent_kafka import Producer
    topic = f"bench-failover-{uuid.uuid4().hex[:6]}"
    parts = 3
    cluster_topic(c, topic, parts)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 0, "message.timeout.ms": 60000, "retry.backoff.ms": 20,
                  "retry.backoff.max.ms": 100, "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100})

    def send_one(part, deadline):
        """Produce one record and wait for its outcome; (ok, error)."""
        out = []
        p.produce(topic, value=b"failover", partition=part, on_delivery=lambda err, m: out.append(err))
        while not out and time.monotonic() < deadline:
            p.poll(0.005)
        return (bool(out) and out[0] is None), (out[0] if out else "no answer")

    for part in range(parts):  # connections and metadata before the clock
        ok, err = send_one(part, time.monotonic() + 30)
        if not ok:
            raise BenchError(f"warm-up produce to partition {part} failed: {err}")
    samples = []
    for k in range(cfg.kills):
        part = k % parts
        leader = c.wait_leader(topic, part, timeout=60)
        try:
            was_controller = c.controller() == leader
        except AssertionError:
            was_controller = None
        t_kill, t_kill_wall = time.monotonic(), time.time()
        c.kill(leader)
        deadline = t_kill + 60
        ok, err = send_one(part, deadline)
        while not ok and time.monotonic() < deadline:  # a failed record: the client tries again
            ok, err = send_one(part, deadline)
        if not ok:
            raise BenchError(f"kill {k + 1}: no acks=all write acknowledged on partition {part} within 60 s "
                             f"of killing leader {leader}: {err}")
        secs = time.monotonic() - t_kill
        new = c.leader_of(topic, part)
        samples.append({"kill": k + 1, "partition": part, "old_leader": leader, "new_leader": new, "s": secs,
                        "was_controller": was_controller, "kill_unix_s": t_kill_wall})
        log(f"kill {k + 1}/{cfg.kills} at {time.strftime('%H:%M:%S', time.gmtime(t_kill_wall))}"
            f"{f'{t_kill_wall % 1:.3f}'[1:]}Z: leader {leader} of {part} -> {new}: {secs:.3f} s"
            f"{' (it was the controller)' if was_controller else ''}")
        c.restart(leader)
        c.wait_topic(topic, parts, 3, timeout=120)
        check_cluster(c)
    p.flush(10)
    bb.delete_topic(c.bootstrap, topic)
    return samples


def phase_recovery(ctx, cfg, c):
    topic = f"bench-recovery-{uuid.uuid4().hex[:6]}"
    cluster_topic(c, topic, cfg.partitions)
    try:
        ctrl = c.controller()
    except AssertionError:
        ctrl = None
    follower = next(i for i in reversed(c.ids) if i != ctrl)
    records = max(1, cfg.catchup_bytes // cfg.record_size)
    log(f"recovery: kill -9 broker {follower}, then {records:,} x {cfg.record_size} B with acks=all")
    c.kill(follower)
    prod = produce(ctx, cfg, c.bootstrap, topic, cfg.partitions, records, "all", cluster_pids(c))
    log(f"  produced {records * cfg.record_size / MB:.0f} MB at {prod['mb_s']:.1f} MB/s with {follower} down")
    t0 = time.monotonic()
    c.start_broker(follower)
    t_ready = time.monotonic()

    def recovered():
        if any(follower not in c.isr_of(topic, p) for p in range(cfg.partitions)):
            return False
        return not any(u["topic"] == topic for u in c.status()["under_replicated"])
    try:
        c.wait(recovered, cfg.phase_timeout, f"broker {follower} back in the ISR of every partition",
               interval=0.05)
    except AssertionError as e:
        raise BenchError(str(e))
    t_done = time.monotonic()
    nbytes = records * cfg.record_size
    res = {"bytes": nbytes, "follower": follower, "ready_s": t_ready - t0, "recovery_s": t_done - t0,
           "catchup_mb_s": nbytes / MB / max(1e-9, t_done - t_ready), "produce_while_down": prod}
    log(f"  back in sync {res['recovery_s']:.2f} s after restart (ready after {res['ready_s']:.2f} s; "
        f"catch-up {res['catchup_mb_s']:.0f} MB/s)")
    bb.delete_topic(c.bootstrap, topic)
    return res


# --------------------------------------------------------------------------------------
# report


def mark(key, value):
    if key not in TARGETS or value is None:
        return ""
    op, bound, unit = TARGETS[key]
    ok = value >= bound if op == ">=" else value <= bound
    return f"{'✓' if ok else '✗'} {op.replace('>=', '≥').replace('<=', '≤')} {bound:g} {unit}"


def print_report(summary, cfg, machine):
    rows = []

    def row(label, s, digits=2, target=None):
        if s is None:
            return
        if isinstance(s, dict):
            rows.append((label, bb.fmt(s["median"], digits), f"{bb.fmt(s['min'], digits)} – {bb.fmt(s['max'], digits)}",
                         mark(target, s["median"]) if target else ""))
        else:
            rows.append((label, bb.fmt(s, digits), "", mark(target, s) if target else ""))

    t = summary.get("throughput")
    if t:
        row("single broker acks=1 MB/s", t["single_mb_s"], 1)
        row("3 brokers acks=all RF3 MB/s", t["cluster_mb_s"], 1)
        row("ratio acks=all RF3 / single acks=1", t["ratio"], 2, "acks_all_rf3_over_single_acks1")
        row("broker CPU-s/GiB single", t["single_cpu_s_per_gib"], 2)
        row("broker CPU-s/GiB 3 brokers (sum)", t["cluster_cpu_s_per_gib"], 2)
    f = summary.get("failover")
    if f:
        row(f"failover p50 s ({f['n']} kills)", f["p50_s"], 3)
        row(f"failover p99 s ({f['n']} kills)", f["p99_s"], 3, "failover_p99_s")
        row("failover max s", f["max_s"], 3)
    r = summary.get("recovery")
    if r:
        row(f"URP recovery s ({r['bytes'] / MB:.0f} MB behind)", r["recovery_s"], 2)
        row("  restart to ready s", r["ready_s"], 2)
        row("  catch-up MB/s", r["catchup_mb_s"], 0)
    w = max(len(x[0]) for x in rows) if rows else 10
    print()
    print(f"Quiver three-broker cluster benchmark ({machine['nproc']} CPUs, load {machine['loadavg_start'][0]:.1f}; "
          f"{cfg.runs} runs, {cfg.records:,} x {cfg.record_size} B, {cfg.partitions} partitions)")
    print(f"{'figure':<{w}}  {'median':>10}  {'range':>20}  target")
    for label, med, rng, tgt in rows:
        print(f"{label:<{w}}  {med:>10}  {rng:>20}  {tgt}")
    print()


def parse_size(s: str) -> int:
    """"1G", "256MiB", "64m", "1000000" -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", s.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {s!r}")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)])


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--binary", default=os.environ.get("QUIVER_BIN")
                    or os.path.expanduser("~/.cache/quiver/target/release/quiver"))
    ap.add_argument("--runs", type=int, help="throughput runs, median and range (default 3; quick 1)")
    ap.add_argument("--records", type=int, help="records per throughput run (default 300,000; quick 50,000)")
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--producers", type=int, default=2, help="producer worker processes")
    ap.add_argument("--linger-ms", type=float, default=5)
    ap.add_argument("--kills", type=int, help="leader kills for the failover figure (default 20; quick 5)")
    ap.add_argument("--catchup-bytes", help="bytes the restarted follower must catch up (default 1G; quick 64M)")
    ap.add_argument("--cluster-set", action="append", default=[], metavar="KEY=VALUE",
                    help="[cluster] setting of every broker (repeatable), e.g. session_timeout_ms=3000")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: throughput,failover,recovery")
    ap.add_argument("--phase-timeout", type=float, default=300.0)
    ap.add_argument("--tmp-parent", default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run with small numbers")
    ap.add_argument("--keep", action="store_true", help="keep the brokers' data and logs (the work directory)")
    ap.add_argument("--out", default="target/bench/cluster.json")
    cfg = ap.parse_args(argv)
    cfg.records = cfg.records or (50_000 if cfg.quick else 300_000)
    cfg.kills = cfg.kills or (5 if cfg.quick else 20)
    cfg.catchup_bytes = parse_size(cfg.catchup_bytes or ("64M" if cfg.quick else "1G"))
    cfg.skip = {x.strip() for x in cfg.skip.split(",") if x.strip()}
    cfg.runs = cfg.runs or (1 if cfg.quick else 3)
    return cfg


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    ctx = mp.get_context("spawn")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    machine = bb.machine_info()
    result = {"config": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(cfg).items()},
              "machine": machine, "targets": {k: {"op": v[0], "bound": v[1], "unit": v[2]}
                                              for k, v in TARGETS.items()}}
    t_start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="quiver-cluster-bench-", dir=cfg.tmp_parent))
    single = c = single_slot = None
    try:
        if not os.access(cfg.binary, os.X_OK):
            raise BenchError(f"broker binary {cfg.binary} not found (build it or pass --binary)")
        # The cluster's brokers start in their own directories: a relative path would
        # not find the binary there.
        cfg.binary = os.path.abspath(cfg.binary)
        os.environ["QUIVER_BIN"] = cfg.binary
        # three replicas of the largest phase, plus the single broker's copy, plus slack
        need = max(cfg.records * cfg.record_size * 4 if "throughput" not in cfg.skip else 0,
                   cfg.catchup_bytes * 3 if "recovery" not in cfg.skip else 0) * 1.3
        free = shutil.disk_usage(workdir).free
        if need > free:
            raise BenchError(f"needs about {need / GIB:.1f} GiB of disk in {workdir}, {free / GIB:.1f} GiB free "
                             f"(lower --records / --catchup-bytes)")
        from cluster import FAST_TIMING
        result["cluster_timing"] = {**FAST_TIMING, **dict(x.split("=", 1) for x in cfg.cluster_set)}
        summary = {}
        if "throughput" not in cfg.skip:
            # its own UDP port for the QUIC endpoint every broker opens
            single_slot = PortSlot()
            single = bb.Broker(cfg.binary, [f"cluster.listen=127.0.0.1:{single_slot.cluster_port}"],
                               str(workdir))
            single.start()
        c = start_cluster(cfg, workdir)
        log(f"cluster formed: controller {c.controller()}")
        if "throughput" not in cfg.skip:
            runs = []
            result["throughput_runs"] = runs
            phase_throughput(ctx, cfg, c, single, runs)
            summary["throughput"] = {
                "single_mb_s": bb.summarize([r["single"]["mb_s"] for r in runs]),
                "cluster_mb_s": bb.summarize([r["cluster"]["mb_s"] for r in runs]),
                "ratio": bb.summarize([r["ratio"] for r in runs]),
                "single_cpu_s_per_gib": bb.summarize([r["single"]["broker_cpu_s_per_gib"] for r in runs]),
                "cluster_cpu_s_per_gib": bb.summarize([r["cluster"]["broker_cpu_s_per_gib"] for r in runs]),
            }
            single.close()
            single = None
        if "failover" not in cfg.skip:
            samples = phase_failover(cfg, c)
            secs = sorted(s["s"] for s in samples)
            result["failover_samples"] = samples
            summary["failover"] = {"n": len(secs), "p50_s": bb.percentile(secs, 50),
                                   "p99_s": bb.percentile(secs, 99), "max_s": secs[-1],
                                   "mean_s": statistics.mean(secs)}
        if "recovery" not in cfg.skip:
            summary["recovery"] = phase_recovery(ctx, cfg, c)
        machine["loadavg_end"] = os.getloadavg()
        result.update(summary=summary, ok=True, elapsed_s=time.monotonic() - t_start)
        print_report(summary, cfg, machine)
        return 0
    except BenchError as e:
        log(f"BENCHMARK FAILED: {e}")
        result.update(ok=False, error=str(e))
        return 1
    except Exception as e:
        import traceback
        log("BENCHMARK FAILED (unexpected error):\n" + traceback.format_exc())
        result.update(ok=False, error=f"{type(e).__name__}: {e}")
        return 1
    finally:
        if c is not None:
            result["panics"] = c.panics()[:20]
            try:
                c.close()
            except AssertionError as e:
                log(f"cluster teardown: {e}")
        if single is not None:
            single.close()
        if single_slot is not None:
            single_slot.release()
        if cfg.keep:
            result["kept"] = str(workdir)
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        out = Path(cfg.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2, default=str))
            log(f"figures written to {out} ({time.monotonic() - t_start:.0f} s in all)")
        except OSError as e:
            log(f"could not write {out}: {e}")


if __name__ == "__main__":
    sys.exit(main())
