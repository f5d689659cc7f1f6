#!/usr/bin/env python3
"""The fault matrix: named fault scenarios against a real cluster, each a seeded,
replayable run (the same seed gives the same fault schedule) that prints the
history checker's counts with N beside them and writes a JSON summary.

    python3 tests/chaos/matrix.py ring                     # one scenario, 10 faults
    python3 tests/chaos/matrix.py loss --faults 20 --seed 7
    python3 tests/chaos/matrix.py every --faults 5         # every scenario once, in turn
    python3 tests/chaos/matrix.py --list

Scenarios (tests/e2e/faultsteps.py has the steps):
  leader-kill      kill -9 the leader of a random partition, restart it
  controller-kill  kill -9 the controller (the Raft leader), restart it
  pause            SIGSTOP a follower beyond the lag time, or a leader beyond its lease
  isolate-one      one broker (a partition leader or the controller) cut from everyone
  split-pair       {x} | {y, z} with clients reaching both sides (x a leader or the controller)
  ring             non-transitive: one link cut (1 <-> 2 <-> 3, not 1 <-> 3)
  loss             1, 5, 10 or 30 % random loss on every broker-to-broker link
  clock-skew       a broker restarted under libfaketime (wall clock +-1..10 min, rate 0.9..1.1)
  membership       a 4th broker joins, gets a new topic and a new partition, shuts down, is replaced
  all              a random mix of every fault above but membership

The network scenarios (and all) put brokers and clients in network namespaces
and need root, nftables and iproute2; clock-skew needs libfaketime (Debian's
faketime). Three brokers (four for membership), a topic with RF 3 and
min.insync.replicas=2, idempotent acks=all producers and consumers recording
their histories; every replica back in sync between faults. Exit code 0 only
when every run passed: every safety count 0, the drain complete, no broker
panic, and the cluster recovered after every fault.
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

from faultsteps import MESSAGE_TIMEOUT_MS, SCENARIOS, format_summary, run_scenario  # noqa: E402

ORDER = ["leader-kill", "controller-kill", "pause", "isolate-one", "split-pair", "ring", "loss", "clock-skew",
         "membership", "all"]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", help="a scenario name, or 'every' for each in turn")
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    ap.add_argument("--faults", type=int, default=10, help="faults per run")
    ap.add_argument("--interval", default="3,6", help="seconds between faults: MIN,MAX (uniform)")
    ap.add_argument("--seed", type=int, default=None, help="replay a run (with 'every': the first run's)")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--rate", type=float, default=200, help="records/s over all producers")
    ap.add_argument("--message-timeout-ms", type=int, default=MESSAGE_TIMEOUT_MS,
                    help="the producers' message.timeout.ms (60000 replays the client-side duplicates "
                         "described in docs/reliability.md)")
    ap.add_argument("--recover-timeout", type=float, default=90, help="seconds a recovery step may take")
    ap.add_argument("--binary", default=None, help="quiver binary (default: $QUIVER_BIN or the release build)")
    ap.add_argument("--dir", default=None, help="where histories and broker logs go (kept)")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory even when it passes")
    ap.add_argument("--json", default="target/chaos/matrix.json", help="summary (one JSON object per run)")
    ap.add_argument("--append", default=None, help="also append each run's summary as one line to this file")
    args = ap.parse_args(argv)
    if args.list:
        return args
    if args.scenario not in SCENARIOS and args.scenario != "every":
        ap.error(f"unknown scenario {args.scenario!r}; one of: {', '.join(ORDER)}, every")
    args.interval = tuple(float(x) for x in args.interval.split(","))
    if len(args.interval) != 2 or args.interval[0] > args.interval[1]:
        ap.error("--interval is MIN,MAX seconds")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


def run_one(name: str, seed: int, args) -> dict:
    workdir = Path(args.dir) / f"{name}-{seed}" if args.dir else Path(tempfile.mkdtemp(prefix=f"quiver-{name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[matrix] scenario={name} seed={seed} faults={args.faults} dir={workdir}", flush=True)
    r = run_scenario(name, seed, args.faults, workdir, interval=args.interval, partitions=args.partitions,
                     producers=args.producers, consumers=args.consumers, rate=args.rate,
                     recover_timeout=args.recover_timeout,
                     producer_args=("--message-timeout-ms", str(args.message_timeout_ms)))
    r["dir"] = str(workdir)
    print(format_summary(r), flush=True)
    if r["ok"] and not args.keep and not args.dir:
        shutil.rmtree(workdir, ignore_errors=True)
        r["dir"] = None
    else:
        print(f"[matrix] histories and broker logs kept in {workdir}", flush=True)
    return r


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name in ORDER:
            print(f"{name:<16} {SCENARIOS[name].doc}")
        return 0
    if args.binary:
        os.environ["QUIVER_BIN"] = str(Path(args.binary).resolve())

    def on_term(signum, frame):  # run the finally blocks: kill brokers, remove namespaces
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    names = ORDER if args.scenario == "every" else [args.scenario]
    seeds = random.Random(args.seed)
    results = []
    for k, name in enumerate(names):
        seed = args.seed if k == 0 else seeds.randrange(2**32)
        r = run_one(name, seed, args)
        r["binary"] = os.environ.get("QUIVER_BIN")
        r["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results.append(r)
        if args.append:
            with open(args.append, "a") as f:
                f.write(json.dumps(r, default=str) + "\n")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2, default=str))
    print(f"[matrix] summary in {out}", flush=True)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
