#!/usr/bin/env python3
"""The soak: the fault matrix's scenarios round-robin, each run with a fresh seed,
for a given number of hours. Every run's JSON summary is appended as one line to
--out; the soak stops at the first safety violation (a safety count above 0 or a
broker panic) and prints the command that replays that run; at the end it
prints a table per scenario (runs, faults, acknowledged writes, and the safety
counts summed over the runs).

    sudo python3 tests/chaos/soak.py --hours 8                  # every scenario, 10 faults a run
    python3 tests/chaos/soak.py --hours 1 --scenarios leader-kill,pause,clock-skew
    python3 tests/chaos/soak.py --summary target/chaos/soak.jsonl  # the table of an earlier soak

A run that could not finish (the cluster did not recover from a fault within
--recover-timeout: a liveness failure, not a safety one) is counted, its
directory kept, and the soak goes on; --stop-on-failure stops there too.
Each run is a tests/chaos/matrix.py process, so a replay is exactly that command.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "e2e"))

from matrix import ORDER  # noqa: E402

SAFETY_SHOWN = [("lost", "lost"), ("duplicates", "dup"), ("inconsistent_offsets", "incons"),
                ("non_monotonic_reads", "nonmono"), ("unseen", "unseen")]


def safety_violated(r: dict) -> bool:
    return any(v for v in (r.get("counts") or {}).values()) or bool(r.get("panics"))


def table(runs: list[dict]) -> str:
    by = defaultdict(list)
    for r in runs:
        by[r["scenario"]].append(r)
    head = f"{'scenario':<16}{'runs':>5}{'ok':>5}{'faults':>8}{'acked':>10}" + "".join(
        f"{s:>8}" for _, s in SAFETY_SHOWN) + f"{'other':>7}{'panics':>8}{'stuck':>7}"
    lines = [head, "-" * len(head)]
    total = defaultdict(int)
    for name in [n for n in ORDER if n in by] + sorted(set(by) - set(ORDER)):
        rs = by[name]
        row = {
            "runs": len(rs), "ok": sum(1 for r in rs if r.get("ok")),
            "faults": sum(r.get("faults", 0) for r in rs),
            "acked": sum((r.get("info") or {}).get("acked", 0) for r in rs),
            "panics": sum(r.get("panics") or 0 for r in rs),
            "stuck": sum(1 for r in rs if r.get("error")),
        }
        for k, _ in SAFETY_SHOWN:
            row[k] = sum((r.get("counts") or {}).get(k, 0) for r in rs)
        row["other"] = sum(v for r in rs for k, v in (r.get("counts") or {}).items()
                           if k not in dict(SAFETY_SHOWN))
        for k, v in row.items():
            total[k] += v
        lines.append(_row(name, row))
    lines.append("-" * len(head))
    lines.append(_row("total", total))
    return "\n".join(lines)


def _row(name: str, row: dict) -> str:
    return (f"{name:<16}{row['runs']:>5}{row['ok']:>5}{row['faults']:>8}{row['acked']:>10}"
            + "".join(f"{row[k]:>8}" for k, _ in SAFETY_SHOWN)
            + f"{row['other']:>7}{row['panics']:>8}{row['stuck']:>7}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--scenarios", default=",".join(ORDER), help="comma-separated, in round-robin order")
    ap.add_argument("--faults", type=int, default=10, help="faults per run")
    ap.add_argument("--out", default="target/chaos/soak.jsonl", help="one JSON line per run (appended)")
    ap.add_argument("--dir", default="target/chaos/soak", help="where each run's histories and logs go")
    ap.add_argument("--binary", default=None, help="quiver binary (default: $QUIVER_BIN or the release build)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the seeds (the runs' seeds are printed)")
    ap.add_argument("--stop-on-failure", action="store_true", help="also stop at a run that did not finish")
    ap.add_argument("--summary", default=None, metavar="JSONL", help="only print the table of a soak's file")
    ap.add_argument("matrix_args", nargs="*", help="more matrix.py options, after --")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)

    if args.summary:
        runs = [json.loads(line) for line in Path(args.summary).read_text().splitlines() if line.strip()]
        print(table(runs))
        return 0 if not any(safety_violated(r) for r in runs) else 1

    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        ap.error(f"unknown scenarios {unknown}; one of {ORDER}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    seeds = random.Random(seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"[soak] {args.hours} h of {names}, {args.faults} faults a run; seed of seeds {seed}; runs -> {out}",
          flush=True)

    stop = {"now": False}

    def on_signal(signum, frame):  # finish the table; the running matrix.py gets the signal too
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    deadline = time.monotonic() + args.hours * 3600
    runs: list[dict] = []
    code = 0
    k = 0
    while time.monotonic() < deadline and not stop["now"]:
        name = names[k % len(names)]
        k += 1
        run_seed = seeds.randrange(2**32)
        run_json = Path(args.dir) / f"run-{k}.json"
        cmd = [sys.executable, str(HERE / "matrix.py"), name, "--seed", str(run_seed), "--faults", str(args.faults),
               "--json", str(run_json), "--dir", args.dir, *args.matrix_args]
        if args.binary:
            cmd += ["--binary", args.binary]
        print(f"[soak] run {k}: {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd)
        try:
            r = json.loads(run_json.read_text())
        except (OSError, ValueError):
            r = {"scenario": name, "seed": run_seed, "ok": False,
                 "error": f"matrix.py exited {proc.returncode} without a summary"}
        r.setdefault("scenario", name)
        with open(out, "a") as f:
            f.write(json.dumps(r, default=str) + "\n")
        runs.append(r)
        if r.get("ok") and r.get("dir"):
            shutil.rmtree(r["dir"], ignore_errors=True)  # only failed runs keep their histories
        if safety_violated(r):
            print(f"[soak] SAFETY VIOLATION in run {k} (scenario {name}, seed {run_seed}); replay with:\n"
                  f"    python3 tests/chaos/matrix.py {name} --seed {run_seed} --faults {args.faults}\n"
                  f"histories and logs: {r.get('dir')}", flush=True)
            code = 1
            break
        if not r.get("ok"):
            print(f"[soak] run {k} ({name}, seed {run_seed}) did not finish: {str(r.get('error'))[:300]}",
                  flush=True)
            if args.stop_on_failure:
                code = 1
                break
    print(table(runs), flush=True)
    if any(not r.get("ok") for r in runs) and code == 0:
        code = 2  # no safety violation, but a run did not finish
    return code


if __name__ == "__main__":
    sys.exit(main())
