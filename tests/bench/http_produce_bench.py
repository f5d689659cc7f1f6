#!/usr/bin/env python3
"""HTTP produce throughput: built-in murmur2 vs the murmur2 WASM partitioner plugin.

Starts one broker (broker_bench.Broker: tempdir, reserved Kafka port, killed on exit)
with the admin API on a second reserved port, deploys the murmur2 component, creates two
topics with the same partition count — one routed by the built-in murmur2, one with
`partitioner=<plugin>` — and, in each run, drives both with the same load (client
processes, each POSTing a pre-encoded JSON body of N keyed records over one keep-alive
connection, one request in flight per client) for a fixed time. The order of the two
phases alternates between runs. It prints records/s, MB/s of record values and broker
CPU-µs per record for each topic, and the plugin/built-in ratio per run (median and
range over --runs). Figures, not assertions: the exit code is non-zero only when the
benchmark itself failed (broker died, an HTTP error, acknowledged records missing from
the log, the two partitioners placing a request's records differently).

See tests/bench/README.md and docs/perf.md ("Plugins").
"""

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import string
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import broker_bench as bb  # noqa: E402  (broker start, port reservation, readiness, topics)

MB = bb.MB
TARGET_RATIO = 0.90


def parse_args(argv):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/quiver/target"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(target, "release", "quiver"))
    ap.add_argument("--wasm", default=os.path.join(target, "wasm32-wasip2", "release",
                                                   "quiver_plugin_murmur2.wasm"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured time per phase")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured time before each phase")
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--records", type=int, default=1000, help="records per request")
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--acks", default="1", choices=["0", "1", "all"])
    ap.add_argument("--set", action="append", default=[], help="broker setting section.key=value")
    ap.add_argument("--tmp-parent", default=None)
    ap.add_argument("--out", default="target/bench/http_produce.json")
    ap.add_argument("--quick", action="store_true", help="1 run of 3 s per phase")
    cfg = ap.parse_args(argv)
    if cfg.quick:
        cfg.runs, cfg.seconds = 1, 3.0
    return cfg


# --------------------------------------------------------------------------------------


def request_bodies(count, records, value_bytes, seed=7):
    """Distinct JSON bodies: keys of 16-32 printable characters, values of value_bytes."""
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    bodies = []
    for _ in range(count):
        recs = [{"key": "".join(rnd.choices(alphabet, k=rnd.randint(16, 32))),
                 "value": "".join(rnd.choices(alphabet, k=value_bytes))} for _ in range(records)]
        bodies.append(json.dumps({"records": recs}, separators=(",", ":")).encode())
    return bodies


def http_call(port, method, path, body=None, headers=None, timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data
    finally:
        conn.close()


def wait_admin_ready(port, proc, deadline_s=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        if proc.poll() is not None:
            raise bb.BenchError(f"broker exited with {proc.returncode}")
        try:
            status, _ = http_call(port, "GET", "/health", timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise bb.BenchError(f"admin API on {port} not ready after {deadline_s} s")


def create_topic_with_config(bootstrap, name, partitions, config):
    from confluent_kafka.admin import NewTopic
    a = bb.admin(bootstrap)
    fut = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                    config=config)], operation_timeout=30, request_timeout=30)
    try:
        fut[name].result(timeout=60)
    except Exception as e:
        raise bb.BenchError(f"CreateTopics {name} {config} failed: {e}")


def client_worker(port, topic, acks, bodies, records, stop_at, measure_from, ready_q,
                  start_evt, result_q, timeout_s):
    """POST bodies in turn until stop_at; count requests completed after measure_from."""
    bb._pdeathsig()
    res = {"ok": False, "requests": 0, "records": 0, "errors": 0, "first_error": None}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        path = f"/v1/topics/{topic}/records?acks={acks}"
        hdrs = {"Content-Type": "application/json"}
        ready_q.put(os.getpid())
        start_evt.wait()
        cpu0 = bb._worker_cpu()
        i = 0
        acked_total = 0
        latencies = []
        while True:
            t = time.monotonic()
            if t >= stop_at.value:
                break
            conn.request("POST", path, body=bodies[i % len(bodies)], headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            t1 = time.monotonic()
            i += 1
            if resp.status not in (200, 202):
                res["errors"] += 1
                if res["first_error"] is None:
                    res["first_error"] = f"HTTP {resp.status}: {data[:300]!r}"
                continue
            acked_total += records
            if t >= measure_from.value and t1 <= stop_at.value:
                res["requests"] += 1
                res["records"] += records
                latencies.append(t1 - t)
        conn.close()
        res.update(ok=res["errors"] == 0, acked_total=acked_total, sent_total=i,
                   cpu=bb._worker_cpu() - cpu0, latencies=latencies)
    except Exception as e:
        res["first_error"] = f"{type(e).__name__}: {e}"
    result_q.put(res)


def phase(ctx, cfg, broker, admin_port, topic, bodies, value_bytes_per_req):
    """One timed phase against `topic`; returns its figures."""
    per_client = [bodies[c::cfg.clients] or bodies for c in range(cfg.clients)]
    stop_at = ctx.Value("d", float("inf"))
    measure_from = ctx.Value("d", float("inf"))
    ready_q, result_q, start_evt = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=client_worker, daemon=True,
                         args=(admin_port, topic, cfg.acks, per_client[c], cfg.records, stop_at,
                               measure_from, ready_q, start_evt, result_q, cfg.seconds))
             for c in range(cfg.clients)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready_q.get(timeout=60)
        now = time.monotonic()
        measure_from.value = now + cfg.warmup
        stop_at.value = now + cfg.warmup + cfg.seconds
        start_evt.set()
        time.sleep(max(0.0, measure_from.value - time.monotonic()))
        cpu0, t0 = bb.proc_cpu_seconds(broker.proc.pid), time.monotonic()
        time.sleep(max(0.0, stop_at.value - time.monotonic()))
        cpu1, t1 = bb.proc_cpu_seconds(broker.proc.pid), time.monotonic()
        results = [result_q.get(timeout=cfg.seconds + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    broker.check_alive()
    bad = [r for r in results if not r["ok"]]
    if bad:
        raise bb.BenchError(f"{topic}: client failed: {bad[0]['first_error']}")
    wall = t1 - t0
    recs = sum(r["records"] for r in results)
    lat = sorted(x for r in results for x in r["latencies"])
    return {
        "topic": topic,
        "seconds": wall,
        "requests": sum(r["requests"] for r in results),
        "records": recs,
        "records_s": recs / wall,
        "mb_s": recs * value_bytes_per_req / cfg.records / wall / MB,
        "broker_cpu_s": cpu1 - cpu0,
        "broker_cpu_us_per_record": (cpu1 - cpu0) / recs * 1e6 if recs else None,
        "client_cpu_s": sum(r["cpu"] for r in results),
        "request_ms_p50": bb.percentile(lat, 50) * 1e3 if lat else None,
        "request_ms_p99": bb.percentile(lat, 99) * 1e3 if lat else None,
        "acked_total": sum(r["acked_total"] for r in results),
    }


def stored(bootstrap, topic, partitions):
    return sum(hi - lo for lo, hi in bb.watermarks(bootstrap, topic, partitions))


def summ(values):
    return bb.summarize(values)


def fmt_s(s, digits=1, scale=1.0):
    if s is None:
        return "-"
    return (f"{bb.fmt(s['median'] * scale, digits)} "
            f"({bb.fmt(s['min'] * scale, digits)}–{bb.fmt(s['max'] * scale, digits)})")


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    ctx = mp.get_context("spawn")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    for path, what in ((cfg.binary, "broker binary (cargo build --release -p quiver)"),
                       (cfg.wasm, "murmur2 component (bash plugins/build.sh)")):
        if not os.path.isfile(path):
            print(f"http_produce_bench: {what} not found at {path}", file=sys.stderr)
            return 2
    machine = bb.machine_info()
    admin_port, admin_lock = bb.reserve_port()
    broker = bb.Broker(cfg.binary, ["admin.enabled=true", f"admin.listen=127.0.0.1:{admin_port}"]
                       + cfg.set, cfg.tmp_parent)
    result = {"config": vars(cfg), "machine": machine}
    t_start = time.monotonic()
    try:
        result["startup_s"] = broker.start()
        wait_admin_ready(admin_port, broker.proc)
        with open(cfg.wasm, "rb") as f:
            wasm = f.read()
        status, data = http_call(admin_port, "PUT", "/v1/plugins/murmur2?kind=partitioner", body=wasm,
                            headers={"Content-Type": "application/wasm"})
        if status != 201:
            raise bb.BenchError(f"deploy failed: HTTP {status} {data[:300]!r}")
        result["deploy"] = json.loads(data)
        bb.log(f"murmur2 deployed: {result['deploy']}")
        tag = os.urandom(3).hex()
        topics = {"builtin": f"http-builtin-{tag}", "plugin": f"http-plugin-{tag}"}
        create_topic_with_config(broker.bootstrap, topics["builtin"], cfg.partitions, {})
        create_topic_with_config(broker.bootstrap, topics["plugin"], cfg.partitions,
                                 {"partitioner": "murmur2"})
        bodies = request_bodies(max(8, cfg.clients * 2), cfg.records, cfg.value_bytes)
        value_bytes_per_req = cfg.records * cfg.value_bytes
        result["request_body_bytes"] = statistics.median(len(b) for b in bodies)

        # Same body to both topics: the placements must agree record for record.
        placed = {}
        for kind, topic in topics.items():
            status, data = http_call(admin_port, "POST", f"/v1/topics/{topic}/records?acks=1",
                                body=bodies[0], headers={"Content-Type": "application/json"})
            if status != 200:
                raise bb.BenchError(f"produce to {topic}: HTTP {status} {data[:300]!r}")
            placed[kind] = [o["partition"] for o in json.loads(data)["offsets"]]
        if placed["builtin"] != placed["plugin"]:
            diff = sum(a != b for a, b in zip(placed["builtin"], placed["plugin"]))
            raise bb.BenchError(f"plugin and built-in murmur2 placed {diff} records differently")
        bb.log("plugin and built-in place the same body identically")
        acked = {k: cfg.records for k in topics}

        runs = []
        for run in range(cfg.runs):
            order = ["builtin", "plugin"] if run % 2 == 0 else ["plugin", "builtin"]
            figs = {}
            for kind in order:
                figs[kind] = phase(ctx, cfg, broker, admin_port, topics[kind], bodies,
                                   value_bytes_per_req)
                acked[kind] += figs[kind]["acked_total"]
                bb.log(f"run {run + 1}/{cfg.runs} {kind}: {figs[kind]['records_s']:,.0f} records/s, "
                       f"{figs[kind]['mb_s']:.1f} MB/s, broker "
                       f"{figs[kind]['broker_cpu_us_per_record']:.2f} CPU-µs/record")
            figs["ratio"] = figs["plugin"]["records_s"] / figs["builtin"]["records_s"]
            figs["cpu_ratio"] = (figs["plugin"]["broker_cpu_us_per_record"]
                                 / figs["builtin"]["broker_cpu_us_per_record"])
            figs["order"] = order
            runs.append(figs)

        # Every acknowledged record is in the log (acks=0 is not checked).
        counts = {}
        for kind, topic in topics.items():
            counts[kind] = stored(broker.bootstrap, topic, cfg.partitions)
            if cfg.acks != "0" and counts[kind] != acked[kind]:
                raise bb.BenchError(f"{topic}: {acked[kind]} records acknowledged, "
                                    f"{counts[kind]} stored")
        status, data = http_call(admin_port, "GET", "/v1/plugins/murmur2")
        metrics = json.loads(data).get("metrics", {}) if status == 200 else {}
        result.update(runs=runs, stored=counts, acknowledged=acked, plugin_metrics=metrics)
        broker.check_alive()
    except bb.BenchError as e:
        print(f"http_produce_bench: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        broker.close()
        os.close(admin_lock)

    summary = {}
    for kind in ("builtin", "plugin"):
        summary[kind] = {f: summ([r[kind][f] for r in runs])
                         for f in ("records_s", "mb_s", "broker_cpu_us_per_record",
                                   "request_ms_p50", "request_ms_p99")}
    summary["ratio"] = summ([r["ratio"] for r in runs])
    summary["cpu_ratio"] = summ([r["cpu_ratio"] for r in runs])
    result["summary"] = summary
    result["loadavg_end"] = os.getloadavg()
    result["seconds"] = time.monotonic() - t_start

    print()
    print(f"## HTTP produce: built-in murmur2 vs murmur2 plugin — median (min–max) of {cfg.runs} runs")
    print()
    print(f"{cfg.clients} client processes, 1 request in flight each; {cfg.records} records/request "
          f"(keys 16–32 B, values {cfg.value_bytes} B; JSON body ~{result['request_body_bytes'] / 1e3:.0f} kB), "
          f"acks={cfg.acks}, {cfg.partitions} partitions, {cfg.seconds:g} s per phase after "
          f"{cfg.warmup:g} s warm-up; MB/s counts record values.")
    print()
    print("| topic | records/s | MB/s | broker CPU-µs/record | request p50 ms | request p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in ("builtin", "plugin"):
        s = summary[kind]
        print(f"| {kind} | {fmt_s(s['records_s'], 0)} | {fmt_s(s['mb_s'], 2)} | "
              f"{fmt_s(s['broker_cpu_us_per_record'], 2)} | {fmt_s(s['request_ms_p50'], 1)} | "
              f"{fmt_s(s['request_ms_p99'], 1)} |")
    r = summary["ratio"]
    mark = "✓" if r["median"] >= TARGET_RATIO else "✗"
    print()
    print(f"plugin ÷ built-in throughput (per run): {fmt_s(r, 3)}  {mark} target ≥ {TARGET_RATIO:.2f}")
    print(f"plugin ÷ built-in broker CPU per record (per run): {fmt_s(summary['cpu_ratio'], 3)}")
    if metrics.get("calls"):
        print(f"plugin metrics: {metrics['calls']:,} calls, {metrics['records']:,} records, "
              f"{metrics['call_time_us'] / metrics['calls']:.0f} µs mean per call "
              f"({metrics['call_time_us'] * 1e3 / metrics['records']:.0f} ns/record), "
              f"errors {metrics['errors']}, traps {metrics['traps']}")
    print(f"stored = acknowledged: {counts}")
    la = machine["loadavg_start"]
    print(f"load average {la[0]:.2f} at start, {result['loadavg_end'][0]:.2f} at end; "
          f"{result['seconds']:.0f} s")
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    with open(cfg.out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"figures written to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
