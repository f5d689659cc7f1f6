#!/usr/bin/env python3
"""What security costs a producer: produce throughput through each kind of listener, with
the ACL authorizer off and on, side by side on one machine.

Two brokers run at once, each with a PLAINTEXT, an SSL, a SASL_PLAINTEXT and a SASL_SSL
listener (SCRAM-SHA-256 user, server certificate from `quiver tls certs`):

  off  security.authorizer = false
  on   security.authorizer = true, 1,000 ACLs of other principals plus an ALLOW ALL on the
       `bench.` prefix for the principals the benchmark uses (User:ANONYMOUS and the SCRAM
       user), so every request is checked against a realistic ACL set and none passes as a
       super user.

Every run produces N records of --record-size bytes to a fresh topic of --partitions
partitions from --producers librdkafka processes (acks=1), once per scenario, the
scenarios interleaved so drift of the machine hits all alike. It prints the median MB/s
and range per scenario and the ratios against PLAINTEXT with the authorizer off; targets:
authorization on >= 0.95 of off. It asserts nothing.

    python3 tests/bench/security_bench.py                 # 3 runs
    python3 tests/bench/security_bench.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import broker_bench as bb  # noqa: E402
from broker_bench import MB, BenchError, log  # noqa: E402

USER, PASSWORD = "bench", "bench-password"
FILLER_ACLS = 1000


class SecureBroker:
    """A bb.Broker with four listeners and the admin API on."""

    def __init__(self, binary, certs, authorizer, parent):
        self.ports = {name: bb.reserve_port() for name in ("ssl", "sasl", "sasl_ssl", "admin", "cluster")}
        sets = [
            "admin.enabled=true",
            # Two brokers run at once: their QUIC endpoints must not share the default.
            f"cluster.listen=127.0.0.1:{self.port('cluster')}",
            f"admin.listen=127.0.0.1:{self.port('admin')}",
            f"kafka.listeners.ssl.listen=127.0.0.1:{self.port('ssl')}",
            "kafka.listeners.ssl.security_protocol=SSL",
            f"kafka.listeners.sasl.listen=127.0.0.1:{self.port('sasl')}",
            "kafka.listeners.sasl.security_protocol=SASL_PLAINTEXT",
            f"kafka.listeners.sasl_ssl.listen=127.0.0.1:{self.port('sasl_ssl')}",
            "kafka.listeners.sasl_ssl.security_protocol=SASL_SSL",
            f"security.tls.cert_file={certs}/server.pem",
            f"security.tls.key_file={certs}/server.key",
            f"security.authorizer={'true' if authorizer else 'false'}",
            "security.super_users=User:admin",
        ]
        self.broker = bb.Broker(binary, sets, parent)
        self.authorizer = authorizer

    def port(self, name):
        return self.ports[name][0]

    def start(self):
        self.broker.start()
        self.admin("PUT", f"/v1/users/{USER}", {"password": PASSWORD, "mechanisms": ["SCRAM-SHA-256"]})
        if self.authorizer:
            filler = [{"resource_type": "topic", "name": f"tenant{i}.", "pattern": "prefixed",
                       "principal": f"User:tenant{i}", "operation": "all"} for i in range(FILLER_ACLS)]
            mine = [{"resource_type": "topic", "name": "bench.", "pattern": "prefixed",
                     "principal": p, "operation": "all"} for p in ("User:ANONYMOUS", f"User:{USER}")]
            self.admin("POST", "/v1/acls", filler + mine)
            count = len(self.admin("GET", "/v1/acls")["acls"])
            log(f"authorizer on with {count} ACLs")

    def admin(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port('admin')}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def close(self):
        self.broker.close()
        for port, lock in self.ports.values():
            os.close(lock)


def scenarios(brokers, certs):
    """(label, broker, bootstrap, client config)."""
    scram = {"sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": USER, "sasl.password": PASSWORD}
    tls = {"ssl.ca.location": f"{certs}/ca.pem"}
    out = []
    for state, b in brokers.items():
        out += [
            (f"PLAINTEXT, authorizer {state}", b, b.broker.bootstrap, {}),
            (f"SSL, authorizer {state}", b, f"127.0.0.1:{b.port('ssl')}", {"security.protocol": "SSL", **tls}),
            (f"SASL_PLAINTEXT SCRAM, authorizer {state}", b, f"127.0.0.1:{b.port('sasl')}",
             {"security.protocol": "SASL_PLAINTEXT", **scram}),
            (f"SASL_SSL SCRAM, authorizer {state}", b, f"127.0.0.1:{b.port('sasl_ssl')}",
             {"security.protocol": "SASL_SSL", **scram, **tls}),
        ]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.expanduser("~/.cache/quiver/target/release/quiver"))
    ap.add_argument("--records", type=int, help="records per run (default 1,000,000; quick 60,000)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--linger-ms", type=float, default=5)
    ap.add_argument("--phase-timeout", type=float, default=300)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="target/bench/security.json")
    cfg = ap.parse_args(argv)
    if cfg.records is None:
        cfg.records = 60_000 if cfg.quick else 1_000_000
    if cfg.quick:
        cfg.runs = 1
    if not os.path.exists(cfg.binary):
        raise SystemExit(f"no broker binary at {cfg.binary}; build it with cargo build --release")
    ctx = mp.get_context("spawn")
    work = tempfile.mkdtemp(prefix="quiver-security-bench-")
    certs = os.path.join(work, "certs")
    subprocess.run([cfg.binary, "tls", "certs", certs], check=True, stdout=subprocess.DEVNULL)
    brokers = {"off": SecureBroker(cfg.binary, certs, False, work),
               "on": SecureBroker(cfg.binary, certs, True, work)}
    results: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        for b in brokers.values():
            b.start()
        plan = scenarios(brokers, certs)
        for run in range(cfg.runs):
            for i, (label, b, bootstrap, conf) in enumerate(plan):
                meter = bb.Meter(b.broker.proc.pid)
                topic = f"bench.r{run}s{i}"
                bb.create_topic(b.broker.bootstrap, topic, cfg.partitions)
                cfg.client_conf = conf
                r = bb.phase_produce(ctx, cfg, bootstrap, meter, topic, cfg.partitions, cfg.records)
                b.broker.check_alive()
                results.setdefault(label, []).append(r["mb_s"])
                cpu.setdefault(label, []).append(r["broker_cpu_s_per_gib"])
                log(f"run {run + 1}/{cfg.runs} {label}: {r['mb_s']:.1f} MB/s, "
                    f"broker {r['broker_cpu_s_per_gib']:.2f} CPU-s/GiB")
                bb.delete_topic(b.broker.bootstrap, topic)
    finally:
        for b in brokers.values():
            b.close()
    base = statistics.median(results["PLAINTEXT, authorizer off"])
    print()
    print(f"produce {cfg.records:,} x {cfg.record_size} B, {cfg.partitions} partitions, "
          f"{cfg.producers} librdkafka producers, acks=1; median of {cfg.runs} run(s)")
    print(f"{'scenario':<40} {'MB/s':>8} {'range':>17} {'vs PLAINTEXT off':>17} {'broker CPU-s/GiB':>17}")
    summary = {}
    for label, values in results.items():
        med = statistics.median(values)
        ratio = med / base if base else float("nan")
        cpu_med = statistics.median(cpu[label])
        summary[label] = {"mb_s": values, "median": med, "ratio": ratio,
                          "broker_cpu_s_per_gib": cpu[label], "cpu_median": cpu_med}
        print(f"{label:<40} {med:8.1f} {min(values):8.1f}-{max(values):<8.1f} {ratio:16.2f}x "
              f"{cpu_med:17.2f}")
    on = summary["PLAINTEXT, authorizer on"]["median"] / base
    verdict = "met" if on >= 0.95 else "MISSED"
    print(f"\nauthorization on / off (PLAINTEXT): {on:.2f}x (target >= 0.95: {verdict})")
    cpu_ratio = summary["PLAINTEXT, authorizer on"]["cpu_median"] / summary["PLAINTEXT, authorizer off"]["cpu_median"]
    print(f"broker CPU per GiB, authorizer on / off (PLAINTEXT): {cpu_ratio:.2f}x")
    sasl_on = summary["SASL_SSL SCRAM, authorizer on"]["median"] / summary["SASL_SSL SCRAM, authorizer off"]["median"]
    print(f"authorization on / off (SASL_SSL):  {sasl_on:.2f}x")
    tls = summary["SSL, authorizer off"]["median"] / base
    print(f"TLS / plaintext:                    {tls:.2f}x")
    os.makedirs(os.path.dirname(cfg.out) or ".", exist_ok=True)
    with open(cfg.out, "w") as f:
        json.dump({"config": {k: v for k, v in vars(cfg).items() if k != "client_conf"},
                   "machine": bb.machine_info(), "results": summary}, f, indent=2)
    print(f"wrote {cfg.out}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        sys.exit(1)
