#!/usr/bin/env python3
"""The long cluster fault run (issue 5): three brokers, a topic with RF 3 and
min.insync.replicas=2, idempotent acks=all producers and consumers recording
their histories, and at least 50 leader kills (kill -9 the leader of a random
partition every 10-20 s, restart it once writes go on and every replica is back
in sync). At the end: heal, drain, and print the history checker's counts and
the failover times (kill -> first acknowledged acks=all write made after the
kill, on the partition whose leader died) as p50/p99.

    python3 tests/chaos/long_run.py                         # 50 kills, ~15 min
    python3 tests/chaos/long_run.py --kills 100 --interval 5,10 --mix
    python3 tests/chaos/long_run.py --seed 1234              # replay a schedule

--mix also kills the controller and pauses followers (SIGSTOP beyond
replica.lag.time.max.ms) in between leader kills; --netns puts the brokers and
clients in network namespaces and adds leader isolation (nftables) to the mix.
Exit code 0 only when every safety count is 0 and the cluster recovered after
every fault. Writes a JSON summary (--json, default target/chaos/long_run.json)
and keeps the histories and broker logs under --dir (default: a temporary
directory, removed on success unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

E2E = Path(__file__).resolve().parent.parent / "e2e"
sys.path.insert(0, str(E2E))

from cluster import Cluster  # noqa: E402
from faultkit import failovers, recorded_run, sleep_until, summarize_failovers  # noqa: E402
from faultsteps import controller_kill, follower_pause, leader_isolation, leader_kill  # noqa: E402
from history import percentile  # noqa: E402


def log(msg: str):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=50, help="leader kills (the issue asks for >= 50)")
    ap.add_argument("--interval", default="10,20", help="seconds between faults: MIN,MAX (uniform)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=200, help="records/s over all producers (bounded load)")
    ap.add_argument("--mix", action="store_true", help="also kill the controller and pause followers")
    ap.add_argument("--netns", action="store_true", help="brokers in namespaces; adds leader isolation")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--binary", default=None, help="quiver binary (default: $QUIVER_BIN or the release build)")
    ap.add_argument("--dir", default=None, help="where histories and broker data go")
    ap.add_argument("--keep", action="store_true", help="keep --dir even when the run passes")
    ap.add_argument("--json", default="target/chaos/long_run.json")
    ap.add_argument("--recover-timeout", type=float, default=90, help="seconds a recovery step may take")
    args = ap.parse_args(argv)
    args.interval = tuple(float(x) for x in args.interval.split(","))
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.binary:
        os.environ["QUIVER_BIN"] = str(Path(args.binary).resolve())
    def on_term(signum, frame):  # run the finally blocks: kill brokers, remove namespaces
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    rng = random.Random(args.seed)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="quiver-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"seed={args.seed} kills={args.kills} interval={args.interval} partitions={args.partitions} "
        f"mix={args.mix} netns={args.netns} dir={workdir}")
    others = []  # faults mixed in between leader kills (half of all faults)
    if args.mix:
        others += [controller_kill, follower_pause]
    if args.netns:
        others += [leader_isolation]

    result = {"seed": args.seed, "config": {k: v for k, v in vars(args).items()}, "ok": False}
    t0 = time.monotonic()
    c = None
    code = 1
    try:
        c = Cluster(workdir / "cluster", n=3, netns=args.netns).start()
        with recorded_run(c, workdir / "history", args.seed, args.partitions, producers=args.producers,
                          consumers=args.consumers, rate=args.rate, prefix="chaos",
                          max_seconds=args.kills * (args.interval[1] + args.recover_timeout) + 600) as (topic, wl):
            kills = 0
            faults = 0
            next_at = time.monotonic()
            while kills < args.kills:
                sleep_until(next_at)
                step = rng.choice(others) if others and rng.random() < 0.5 else leader_kill
                faults += 1
                log(f"fault {faults} ({step.__name__}); leader kills so far {kills}/{args.kills}; "
                    f"acked {wl.acked()}")
                step(c, wl, topic, args, rng)
                if step is leader_kill:
                    kills += 1
                next_at = time.monotonic() + rng.uniform(*args.interval)
                # every replica back in sync before the next fault: each must be survivable
                c.wait_topic(topic, args.partitions, 3, timeout=args.recover_timeout)

            c.wait_topic(topic, args.partitions, 3, timeout=args.recover_timeout)
            wl.wait_acked(5, args.recover_timeout, what="after the last fault")
            wl.stop()
            drain = wl.drain()
            report = wl.check()
            times = failovers(wl)
            secs = [t["seconds"] for t in times if t["seconds"] is not None]
            print(summarize_failovers(times), flush=True)
            result.update(
                counts=report.safety, info=report.info, examples=report.examples,
                failover={"n": len(secs), "p50_s": percentile(secs, 50), "p99_s": percentile(secs, 99),
                          "max_s": max(secs) if secs else None,
                          "never": sum(1 for t in times if t["seconds"] is None), "all": times},
                schedule=wl.schedule, faults=faults, leader_kills=kills,
                drain_ok=drain.returncode == 0)
            result["ok"] = report.ok and drain.returncode == 0
            code = 0 if result["ok"] else 1
    except (AssertionError, RuntimeError) as e:
        log(f"RUN FAILED (seed={args.seed}): {e}")
        result["error"] = str(e)
        if c is not None:
            try:
                log(c.describe())
            except Exception:
                pass
            log(c.log_tails(30))
    except KeyboardInterrupt:
        result["error"] = "interrupted"
    finally:
        if c is not None:
            panics = c.panics()
            if panics:
                result["panics"] = panics[:20]
                result["ok"] = False
                code = 1
                log("broker panics:\n" + "\n".join(panics[:20]))
            c.close()
        result["elapsed_s"] = time.monotonic() - t0
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        log(f"seed={args.seed}: {'PASSED' if code == 0 else 'FAILED'} in {result['elapsed_s']:.0f} s; "
            f"summary in {out}")
        if code == 0 and not args.keep and not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"histories and broker logs kept in {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
