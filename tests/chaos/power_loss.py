#!/usr/bin/env python3
"""Whole-cluster power cuts: three brokers, a topic with RF 3 and
min.insync.replicas=2, idempotent acks=all producers and a consumer recording their
histories; then N times, at a random moment, every broker is SIGKILLed at once, each data
directory is rewritten as a power loss would have left it (powercut.py, from the sync
ledger every broker keeps under QUIVER_TEST_SYNC_LEDGER), and the cluster is started
again and waited for until it acknowledges writes on every partition. At the end: drain,
and print the history checker's counts, the acknowledged writes lost per cut, and a JSON
summary.

    python3 tests/chaos/power_loss.py --settings durable          # 50 cuts
    python3 tests/chaos/power_loss.py --settings default --cuts 50
    python3 tests/chaos/power_loss.py --seed 1234 ...              # replay a schedule

--settings durable: log.flush_interval_messages = 1 (every append fsynced before it
is acknowledged, on the leader and on every follower); the run passes only when every
safety count is 0. --settings default: the defaults (an fsync of each partition every
log.flush_interval_ms = 1000 ms); acknowledged writes are expected to be lost, the run
measures how many; it fails only on a panic, a cluster that does not come back, or a
failed drain. The binary must contain the sync ledger (any build of this tree does).
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

HERE = Path(__file__).resolve().parent
E2E = HERE.parent / "e2e"
sys.path.insert(0, str(E2E))
sys.path.insert(0, str(HERE))

import powercut  # noqa: E402
from cluster import Cluster  # noqa: E402
from faultkit import RF, recorded_run, sleep_until  # noqa: E402
from history import DESCRIPTIONS, SAFETY, load  # noqa: E402

SETTINGS = {
    "durable": {"log": {"flush_interval_messages": 1}},
    "default": {},
}

# The producers must outlive a cluster that is gone for a while: a record waits up to
# 10 minutes for its outcome (the whole cluster restarting takes ~10 s here).
PRODUCER_ARGS = ["--message-timeout-ms", "600000", "--request-timeout-ms", "10000", "--flush-timeout", "180"]


ACK_SLACK_S = 0.5


def log(msg: str):
    print(f"[power {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", type=int, default=50, help="whole-cluster power cuts")
    ap.add_argument("--settings", choices=sorted(SETTINGS), default="durable")
    ap.add_argument("--tail", choices=powercut.MODES, default="mixed",
                    help="what becomes of unsynced tails (see powercut.py)")
    ap.add_argument("--kill-only", action="store_true",
                    help="control run: SIGKILL every broker but keep the page cache (no power cut)")
    ap.add_argument("--uptime", default="1,4", help="seconds of acknowledged writes between cuts: MIN,MAX")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--rate", type=float, default=200, help="records/s over all producers")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--binary", default=None, help="quiver binary (default: $QUIVER_BIN or the release build)")
    ap.add_argument("--dir", default=None, help="where histories and broker data go")
    ap.add_argument("--keep", action="store_true", help="keep --dir even when the run passes")
    ap.add_argument("--json", default="target/chaos/power_loss.json")
    ap.add_argument("--recover-timeout", type=float, default=120, help="seconds a recovery step may take")
    args = ap.parse_args(argv)
    args.uptime = tuple(float(x) for x in args.uptime.split(","))
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


def ledger_of(b) -> Path:
    return b.workdir / "sync-ledger"


def make_cluster(workdir: Path, settings: str) -> Cluster:
    """Three brokers with the profile's settings, each keeping a sync ledger."""
    c = Cluster(workdir, n=3, extra=SETTINGS[settings])
    for b in c.brokers.values():
        b.env["QUIVER_TEST_SYNC_LEDGER"] = str(ledger_of(b))
    return c


def power_cut(c: Cluster, tail: str, rng: random.Random, kill_only: bool = False) -> list[powercut.CutReport]:
    """SIGKILL every broker at once (the signals first, then the waits), then rewrite each
    data directory as the power loss leaves it."""
    procs = [b.proc for b in c.brokers.values() if b.proc is not None and b.proc.poll() is None]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(30)
    if kill_only:
        return []
    return [powercut.cut(b.data_dir, ledger_of(b), tail, rng) for b in c.brokers.values()]


def power_on(c: Cluster, timeout: float):
    for b in c.brokers.values():
        b.spawn()
    for b in c.brokers.values():
        b.wait_ready(timeout)
    c.wait_formed(timeout)


def replace_dead_producers(wl, generation: dict) -> list[str]:
    """An idempotent producer that met a fatal error (its sequence numbers no longer match
    a log that lost acknowledged records) has exited; a new one takes its place, so the
    run goes on writing. Its history stays in the run's."""
    replaced = []
    for name, proc in list(wl.procs.items()):
        if not name.startswith("p") or proc.poll() is None or wl.producers_stop_file.exists():
            continue
        base = name.split("-")[0]
        generation[base] = generation.get(base, 0) + 1
        new = f"{base}-g{generation[base]}"
        wl.dead = getattr(wl, "dead", {})
        wl.dead[name] = wl.procs.pop(name)
        wl.add_producer(new, ["--rate", str(wl.rate / max(1, wl.n_producers)), *wl.producer_args])
        wl.fault("producer_replaced", old=name, new=new, exit=proc.returncode)
        replaced.append(name)
    return replaced


def wait_writes(c, wl, args, generation, what: str):
    """Until every partition acknowledged new writes, replacing producers that gave up."""
    deadline = time.monotonic() + args.recover_timeout
    while True:
        replace_dead_producers(wl, generation)
        try:
            wl.wait_acked(3, min(10.0, max(1.0, deadline - time.monotonic())), what=what)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def losses_per_cut(files, cut_times: list[float]) -> dict:
    """Acknowledged values missing from the drained log, each counted against the first
    cut after its acknowledgement. Returns per-cut counts and the totals."""
    events, _ = load(files)
    acked = {}
    drained = set()
    complete = True
    for ev in events:
        if ev["ev"] == "ack":
            acked[ev["v"]] = ev["t"]
        elif ev["ev"] == "drain":
            drained.add(ev["v"])
        elif ev["ev"] == "drain_end" and not ev.get("complete"):
            complete = False
    per_cut = [0] * len(cut_times)
    after_last = 0
    for v, t in acked.items():
        if v in drained:
            continue
        # An acknowledgement that reaches the client just after the kill was sent before
        # it; a cut's restart takes seconds, so the next acknowledgements come much later.
        i = next((k for k, ct in enumerate(cut_times) if ct + ACK_SLACK_S >= t), None)
        if i is None:
            after_last += 1
        else:
            per_cut[i] += 1
    return {"acked": len(acked), "lost": sum(per_cut) + after_last, "per_cut": per_cut,
            "after_last_cut": after_last, "drain_complete": complete}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.binary:
        os.environ["QUIVER_BIN"] = str(Path(args.binary).resolve())

    def on_term(signum, frame):  # run the finally blocks: kill brokers and workload
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    rng = random.Random(args.seed)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="quiver-power-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"seed={args.seed} cuts={args.cuts} settings={args.settings} tail={args.tail} uptime={args.uptime} "
        f"partitions={args.partitions} rate={args.rate} binary={os.environ.get('QUIVER_BIN')} dir={workdir}")
    result = {"seed": args.seed, "config": dict(vars(args)), "ok": False}
    t0 = time.monotonic()
    c = None
    code = 1
    cut_times: list[float] = []
    cut_reports = []
    try:
        c = make_cluster(workdir / "cluster", args.settings).start()
        silent = [i for i, b in c.brokers.items() if not ledger_of(b).exists() or ledger_of(b).stat().st_size == 0]
        if silent:
            raise RuntimeError(f"brokers {silent} keep no sync ledger: {os.environ.get('QUIVER_BIN')} is a build "
                               "without host/src/durability.rs, and a power cut would erase their data")
        generation: dict = {}
        with recorded_run(c, workdir / "history", args.seed, args.partitions, producers=args.producers,
                          consumers=args.consumers, rate=args.rate, producer_args=PRODUCER_ARGS,
                          prefix="power", max_seconds=args.cuts * (args.uptime[1] + args.recover_timeout) + 900
                          ) as (topic, wl):
            recover = []
            for k in range(1, args.cuts + 1):
                sleep_until(time.monotonic() + rng.uniform(*args.uptime))
                wl.fault("powercut", n=k, acked=wl.acked())
                cut_times.append(time.time())
                reps = power_cut(c, args.tail, rng, args.kill_only)
                cut_reports.append([r.__dict__ for r in reps])
                unsynced = sum(r.unsynced_bytes for r in reps)
                removed = sum(r.removed_files for r in reps)
                t_on = time.monotonic()
                power_on(c, args.recover_timeout)
                c.wait_topic(topic, args.partitions, RF, timeout=args.recover_timeout, full_isr=False)
                wait_writes(c, wl, args, generation, what=f"after power cut {k}")
                recover.append(time.monotonic() - t_on)
                wl.fault("recovered", n=k, seconds=round(recover[-1], 2))
                log(f"cut {k}/{args.cuts}: dropped {unsynced} unsynced bytes, removed {removed} files; "
                    f"writes acknowledged again after {recover[-1]:.1f}s; acked {wl.acked()}")
            c.wait_topic(topic, args.partitions, RF, timeout=args.recover_timeout)
            wait_writes(c, wl, args, generation, what="after the last cut")
            wl.stop(timeout=240)
            drain = wl.drain()
            report = wl.check()
            loss = losses_per_cut(wl.history_files(), cut_times)
            per = loss["per_cut"]
            with_loss = sum(1 for n in per if n)
            log(f"acknowledged writes: {loss['acked']} over {args.cuts} power cuts ({args.settings} settings)")
            log(f"acknowledged writes lost: {loss['lost']} of {loss['acked']}; cuts that lost any: "
                f"{with_loss} of {len(per)}; per cut max {max(per, default=0)}, "
                f"mean {sum(per) / max(1, len(per)):.1f}")
            for name in SAFETY:
                log(f"  {DESCRIPTIONS[name]}: {report.safety[name]}  (N={report.info.get('acked', 0)} acked, "
                    f"{report.info.get('sends', 0)} sent)")
            panics = c.panics()
            log(f"  broker panics: {len(panics)}  (N={3 * (args.cuts + 1)} broker starts)")
            log(f"  recovery (power on -> writes acknowledged on every partition): "
                f"median {sorted(recover)[len(recover) // 2]:.1f}s max {max(recover):.1f}s (N={len(recover)})")
            result.update(counts=report.safety, info=report.info, examples=report.examples, loss=loss,
                          cuts=args.cuts, cuts_with_loss=with_loss, panics=len(panics),
                          recovery_s={"median": sorted(recover)[len(recover) // 2], "max": max(recover)},
                          drain_ok=drain.returncode == 0, schedule=wl.schedule, cut_reports=cut_reports)
            if args.settings == "durable":
                result["ok"] = report.ok and loss["lost"] == 0 and drain.returncode == 0 and not panics
            else:
                result["ok"] = drain.returncode == 0 and not panics
            code = 0 if result["ok"] else 1
    except (AssertionError, RuntimeError, OSError) as e:
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
        summary = {k: result.get(k) for k in ("seed", "ok", "cuts", "cuts_with_loss", "counts", "panics",
                                              "recovery_s", "elapsed_s", "error")}
        summary["settings"] = args.settings
        summary["loss"] = {k: v for k, v in (result.get("loss") or {}).items() if k != "per_cut"}
        print(json.dumps(summary, default=str), flush=True)
        log(f"{'PASS' if code == 0 else 'FAIL'} seed={args.seed} elapsed={result['elapsed_s']:.0f}s json={out}")
        if code == 0 and not args.keep and not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif code != 0:
            log(f"kept {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
