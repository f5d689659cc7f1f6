"""Helpers for the consumer-group tests: member processes (group_worker.py),
keyed test data, and the checks every group scenario shares."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

from clients import DeliveryLog, create_topic, flush_all, producer
from harness import quiver_bin, wait_until

WORKER = str(Path(__file__).resolve().parent / "group_worker.py")


class Worker:
    """One group member in its own process, logging to a JSON-lines file."""

    def __init__(self, lib: str, bootstrap: str, topic: str, group: str, logdir: Path, name: str,
                 instance: Optional[str] = None, session_ms: int = 6000, batch_sleep: float = 0.0):
        self.name = name
        self.log = logdir / f"{name}.jsonl"
        self.args = [sys.executable, WORKER, lib, bootstrap, topic, group, str(self.log),
                     "--session-ms", str(session_ms), "--batch-sleep", str(batch_sleep)]
        if instance:
            self.args += ["--instance", instance]
        self.proc: Optional[subprocess.Popen] = None
        self.stderr = logdir / f"{name}.stderr"
        self._events: list = []
        self._read_to = 0
        self._records = 0

    def start(self) -> "Worker":
        err = open(self.stderr, "ab")
        try:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        finally:
            err.close()
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
                raise AssertionError(f"{self.name} did not stop within {timeout}s")

    def events(self) -> list:
        """Every event the worker has logged so far, parsed once: each call reads only
        what was appended since the last (tests poll this many times a second while
        hundreds of thousands of records are logged)."""
        if not self.log.exists():
            return self._events
        with open(self.log, "rb") as f:
            f.seek(self._read_to)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        self._read_to += complete
        for line in chunk[:complete].splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by kill -9, then continued by a restarted worker
            self._events.append(event)
            self._records += event["ev"] == "rec"
        return self._events

    def records_read(self) -> int:
        """How many records the worker has logged reading (re-reads included)."""
        self.events()
        return self._records

    def assigned(self) -> list:
        """Partitions currently owned according to the worker's own log."""
        owned = set()
        for ev in self.events():
            if ev["ev"] == "assign":
                owned = set(ev["parts"])
            elif ev["ev"] == "revoke":
                owned -= set(ev["parts"])
        return sorted(owned)

    def assign_events(self) -> list:
        return [ev for ev in self.events() if ev["ev"] in ("assign", "revoke")]

    def stderr_tail(self) -> str:
        try:
            return "\n".join(self.stderr.read_text(errors="replace").splitlines()[-20:])
        except FileNotFoundError:
            return ""


def stop_all(workers):
    for w in workers:
        try:
            w.kill()
        except Exception:  # keep stopping the others
            pass


def produce_keyed(bootstrap: str, topic: str, partitions: int, n: int, start: int = 0,
                  create: bool = True) -> dict:
    """n keyed records with values 'seq:<i>'; returns {partition: [(offset, key, value)]}."""
    if create:
        create_topic(bootstrap, topic, partitions)
    log = DeliveryLog()
    p = producer(bootstrap, acks="all")
    sent = {}
    for i in range(start, start + n):
        key, value = f"key-{i % 997}", f"seq:{i}"
        sent[i] = (key, value)
        while True:
            try:
                p.produce(topic, key=key.encode(), value=value.encode(), on_delivery=log.callback(i))
                break
            except BufferError:
                p.poll(0.1)
        if i % 5000 == 0:
            p.poll(0)
    flush_all(p)
    assert not log.errors, f"delivery errors: {list(log.errors.items())[:3]}"
    by_part = defaultdict(list)
    for i, (part, off) in log.ok.items():
        by_part[part].append((off, *sent[i]))
    return {part: sorted(rows) for part, rows in by_part.items()}


def records_seen(workers) -> list:
    """Every (worker, partition, offset, key, value) read, in each worker's order."""
    return [(w.name, ev["p"], ev["o"], ev["k"], ev["v"])
            for w in workers for ev in w.events() if ev["ev"] == "rec"]


def wait_all_consumed(workers, produced: dict, timeout: float):
    want = {(p, off) for p, rows in produced.items() for off, *_ in rows}

    def done():
        got = {(p, o) for _, p, o, _, _ in records_seen(workers)}
        missing = want - got
        return not missing or None

    try:
        wait_until(done, timeout, "every produced record to be consumed", interval=0.5)
    except AssertionError:
        got = {(p, o) for _, p, o, _, _ in records_seen(workers)}
        detail = "\n".join(f"--- {w.name}\n{w.stderr_tail()}" for w in workers)
        raise AssertionError(f"{len(want - got)} of {len(want)} records never consumed\n{detail}")


def check_consumed(workers, produced: dict):
    """Every record read with the key and value it was produced with; each
    worker read every partition in offset order (a restart from a committed
    offset may go back, never skip); returns the number of re-reads."""
    expected = {(p, off): (k, v) for p, rows in produced.items() for off, k, v in rows}
    seen = records_seen(workers)
    for _, p, o, k, v in seen:
        assert expected.get((p, o)) == (k, v), f"partition {p} offset {o}: read {(k, v)}, produced {expected.get((p, o))}"
    assert {(p, o) for _, p, o, _, _ in seen} == set(expected), "some records were never read"
    last = {}
    for w in workers:
        for ev in w.events():
            if ev["ev"] == "assign":
                # a new assignment may start wherever the group last committed
                last = {k: v for k, v in last.items() if k[0] != w.name}
            if ev["ev"] != "rec":
                continue
            key = (w.name, ev["p"])
            if key in last:
                assert ev["o"] > last[key], f"{w.name} read partition {ev['p']} out of order: {last[key]} then {ev['o']}"
            last[key] = ev["o"]
    return len(seen) - len(expected)


def reread_bound(workers) -> int:
    """Records read after the reader's last acknowledged commit of that
    partition: the most a crash or rebalance may make the group read again."""
    bound = 0
    for w in workers:
        committed = {}
        for ev in w.events():
            if ev["ev"] == "commit":
                for p, o in ev["offsets"].items():
                    committed[int(p)] = max(committed.get(int(p), 0), o)
        for ev in w.events():
            if ev["ev"] == "rec" and ev["o"] >= committed.get(ev["p"], 0):
                bound += 1
    return bound


def assignment_covers(workers, partitions: int):
    owned = [p for w in workers for p in w.assigned()]
    return sorted(owned) == list(range(partitions))


def quiver_cli(bootstrap: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([quiver_bin(), *args, "--bootstrap", bootstrap], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60, text=True,
                          env={k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")})
    if check and proc.returncode != 0:
        raise AssertionError(f"quiver {' '.join(args)} exited {proc.returncode}\n{proc.stderr}")
    return proc


def describe_rows(bootstrap: str, group: str) -> dict:
    """`quiver group describe` as {(topic, partition): (current, log_end, lag, member)}."""
    out = quiver_cli(bootstrap, "group", "describe", group).stdout
    rows = {}
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("TOPIC"))
    for line in lines[header + 1:]:
        cols = line.split()
        if len(cols) < 6 or not cols[1].isdigit():
            continue
        num = lambda s: None if s == "-" else int(s)  # noqa: E731
        rows[(cols[0], int(cols[1]))] = (num(cols[2]), num(cols[3]), num(cols[4]), cols[5])
    return rows


def now() -> float:
    return time.time()
