#!/usr/bin/env python3
"""Where each leader kill's failover time went, from a kept cluster bench run.

Reads the figures `cluster_bench.py --keep` wrote (the kill times on the wall clock and
the kept work directory) and the brokers' logs in that directory, and prints for every
kill, in seconds after it: when the controller fenced the dead broker (and whether the
lease ran out or the port probe found the process gone), when the new leader of the
partition started serving, and when the client's record was acknowledged; then the
medians and ranges, apart for kills of a leader that was also the controller.

    python3 tests/bench/cluster_bench.py --skip throughput,recovery --kills 20 --keep
    python3 tests/bench/failover_timeline.py target/bench/cluster.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
from pathlib import Path

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+(.*)$")
TOPIC = re.compile(r"topic=(bench-failover-\w+)")


def broker_events(workdir: Path):
    """(unix time, message) of every log line of every broker, in time order."""
    events = []
    for path in sorted(workdir.glob("cluster/broker-*/stderr.*.log")):
        for line in path.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            if m:
                t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
                events.append((t.timestamp(), m.group(2)))
    events.sort()
    return events


def timeline(sample, events, topic):
    """Seconds after the kill: fence, how it was decided, new leader serving, acknowledged."""
    kill, dead, part = sample["kill_unix_s"], sample["old_leader"], sample["partition"]
    fence = how = serving = None
    for t, msg in events:
        if t < kill:
            continue
        if fence is None and "fencing it" in msg and f"broker={dead} " in msg + " ":
            fence, how = t - kill, ("port probe" if "cluster port" in msg else "lease")
        if (fence is not None and serving is None
                and f"topic={topic} partition={part} role=Leader" in msg):
            serving = t - kill
        if serving is not None:
            break
    return fence, how, serving, sample["s"]


def spread(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f}, {values[0]:.2f}-{values[-1]:.2f} (n={len(values)})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("figures", help="the JSON cluster_bench.py wrote (--out)")
    args = ap.parse_args(argv)
    result = json.loads(Path(args.figures).read_text())
    samples = result.get("failover_samples") or []
    if not samples or "kept" not in result or "kill_unix_s" not in samples[0]:
        sys.exit(f"{args.figures} has no kept failover run: run cluster_bench.py with --keep")
    events = broker_events(Path(result["kept"]))
    topic = next((m.group(1) for _, msg in events if (m := TOPIC.search(msg))), None)
    rows = []
    print(f"{'kill':>4}  {'dead':>4}  {'controller':>10}  {'fence':>6}  {'by':<10}  {'serving':>7}  {'acked':>6}")
    for s in samples:
        fence, how, serving, acked = timeline(s, events, topic)
        rows.append((s["was_controller"], fence, serving, acked))
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{s['kill']:>4}  {s['old_leader']:>4}  {str(bool(s['was_controller'])):>10}  {f(fence):>6}  "
              f"{how or '-':<10}  {f(serving):>7}  {acked:>6.3f}")
    for label, ctrl in (("leader not the controller", False), ("leader also the controller", True)):
        sel = [r for r in rows if bool(r[0]) == ctrl]
        if not sel:
            continue
        print(f"\n{label}:")
        print(f"  kill -> fence            {spread(r[1] for r in sel)}")
        print(f"  fence -> serving         {spread(r[2] - r[1] for r in sel if None not in r[1:3])}")
        print(f"  serving -> acknowledged  {spread(r[3] - r[2] for r in sel if r[2] is not None)}")
        print(f"  kill -> acknowledged     {spread(r[3] for r in sel)}")


if __name__ == "__main__":
    main()
