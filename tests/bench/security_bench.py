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

Two more brokers, measured through their PLAINTEXT listener only, are set up as `on` and
then given quotas that meter every request but never throttle (quotas are cluster state,
so each needs its own broker):

  authz+quotas  a configured default-user quota, `quiver quota set --default-user
                --producer-byte-rate 1e12` (1 TB/s): every produce request is metered
                against it (User:ANONYMOUS resolves to it).
  authz+policy  the `tiers` quota-policy plugin (--plugins) deployed with one tier, `gold`,
                of 1e12 bytes/s produce, as the tier of every client (`default=gold`), and
                bound cluster-wide with `quiver quota policy set tiers`.

After every phase of those two the broker's `GET /v1/quotas` must show the producer's key
metered (and the policy not failed), else the benchmark fails.

Every run produces N records of --record-size bytes to a fresh topic of --partitions
partitions from --producers librdkafka processes (acks=1), once per scenario, the
scenarios interleaved so drift of the machine hits all alike. It prints the median MB/s
and range per scenario and the ratios against PLAINTEXT with the authorizer off; targets:
authorization on, authz+quotas and authz+policy each >= 0.95 of off. It asserts nothing.

    python3 tests/bench/security_bench.py                 # 5 runs
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
# A rate no producer here comes near: the quotas meter every request and never throttle.
HUGE_RATE = "1e12"
POLICY = "tiers"


class SecureBroker:
    """A bb.Broker with four listeners and the admin API on."""

    def __init__(self, binary, certs, authorizer, parent, quotas=None, plugins=None):
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
        self.binary = binary
        self.authorizer = authorizer
        self.quotas = quotas      # None, "quotas" or "policy"
        self.plugins = plugins

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
        if self.quotas == "quotas":
            self.cli("quota", "set", "--default-user", "--producer-byte-rate", HUGE_RATE)
        elif self.quotas == "policy":
            wasm = os.path.join(self.plugins, "quiver_plugin_tiers.wasm")
            if not os.path.exists(wasm):
                raise BenchError(f"no {wasm}; build the plugins with bash plugins/build.sh")
            self.cli("plugin", "deploy", POLICY, "--kind", "quota-policy", "--file", wasm,
                     "--config", f"tier.gold.producer_byte_rate={HUGE_RATE}", "--config", "default=gold")
            self.cli("quota", "policy", "set", POLICY)

    def cli(self, *args):
        """Runs a `quiver` admin command against this broker."""
        cmd = [self.binary, *args, "--admin", f"127.0.0.1:{self.port('admin')}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        log(f"quiver {' '.join(args[:3])}: {r.stdout.strip()}")

    def check_metered(self):
        """Fails the benchmark unless this broker metered the producer (User:ANONYMOUS)
        against its quota or policy: otherwise the scenario measured nothing."""
        if self.quotas is None:
            return
        view = self.admin("GET", "/v1/quotas")
        if self.quotas == "quotas":
            key = "user=ANONYMOUS"
        else:
            policies = view["policies"]
            if len(policies) != 1 or policies[0]["plugin"] != POLICY or policies[0]["failed"]:
                raise BenchError(f"the {POLICY} policy is not in force as expected: {policies}")
            key = f"policy={POLICY},key=user:ANONYMOUS"
        rates = [u["rate"] for u in view["usage_here"]
                 if u["key"] == key and u["type"] == "producer_byte_rate"]
        if not rates or rates[0] <= 0:
            raise BenchError(f"no producer_byte_rate metered under {key}: {view['usage_here']}")

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
        if b.quotas is not None:
            out.append((f"PLAINTEXT, authz+{b.quotas}", b, b.broker.bootstrap, {}))
            continue
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
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/quiver/target"))
    ap.add_argument("--binary", default=os.path.expanduser("~/.cache/quiver/target/release/quiver"))
    ap.add_argument("--plugins", default=os.path.join(target, "wasm32-wasip2", "release"),
                    help="directory of quiver_plugin_tiers.wasm (bash plugins/build.sh)")
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
               "on": SecureBroker(cfg.binary, certs, True, work),
               "quotas": SecureBroker(cfg.binary, certs, True, work, quotas="quotas"),
               "policy": SecureBroker(cfg.binary, certs, True, work, quotas="policy",
                                      plugins=cfg.plugins)}
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
                b.check_metered()
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
    authz = summary["PLAINTEXT, authorizer on"]
    for what in ("quotas", "policy"):
        s = summary[f"PLAINTEXT, authz+{what}"]
        ratio = s["median"] / base
        verdict = "met" if ratio >= 0.95 else "MISSED"
        print(f"{f'authz+{what} / off (PLAINTEXT):':<35} {ratio:.2f}x (target >= 0.95: {verdict}); "
              f"vs authorizer on {s['median'] / authz['median']:.2f}x; broker CPU per GiB vs off "
              f"{s['cpu_median'] / summary['PLAINTEXT, authorizer off']['cpu_median']:.2f}x, "
              f"vs on {s['cpu_median'] / authz['cpu_median']:.2f}x")
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
