"""Operation histories of fault tests, and the checker that judges them.

Every client process of a fault test (cluster_workload.py) records what it did
and what it was told, one JSON object per line, in a file of its own:

  {"ev": "send", "w": "p0", "s": 17, "topic": T, "p": 2, "k": "k1", "v": "p0-00000017",
   "h": [["w", "p0"], ["seq", "17"]], "t": 1700000000.1}     before produce()
  {"ev": "ack",  "w": "p0", "s": 17, "v": ..., "topic": T, "p": 2, "o": 1234, "t": ...}
  {"ev": "fail", "w": "p0", "s": 17, "v": ..., "topic": T, "p": 2, "err": "_MSG_TIMED_OUT",
   "definite": false, "t": ...}
  {"ev": "session", "w": "c0", "sess": 1, "topic": T, "parts": {"0": -2, ...}, "t": ...}
  {"ev": "poll", "w": "c0", "sess": 1, "topic": T, "p": 2, "o": 1234, "k": ..., "v": ...,
   "h": [...], "t": ...}
  {"ev": "drain", "w": "drain", "topic": T, "p": 2, "o": 1234, "k": ..., "v": ..., "h": [...]}
  {"ev": "drain_end", "w": "drain", "topic": T, "p": 2, "lo": 0, "hw": 5000, "next": 5000,
   "complete": true}
  {"ev": "client_error", "w": "p0", "err": "...", "fatal": false, "reason": "..."}
  {"ev": "fault", ...}  (the test's fault schedule; the checker only reads kills for
                         failover times)

A send's value is unique in the whole run (worker id + sequence number), so a
value names one send wherever it shows up. "definite" marks a failure that
guarantees the record was not written (e.g. NOT_ENOUGH_REPLICAS to a producer
without retries); a timeout or a retried error is not definite.

The checker (check(), or `python3 history.py FILE...`) reports these safety
counts; a run passes only when every one is 0:

  lost                  acknowledged writes missing from the final log although the
                        drain read past their acknowledged offset, or a consumer had
                        read them earlier (the log moved on without them)
  unseen                acknowledged writes that nobody ever read: not in the final
                        log, not read by any consumer, and the drain did not reach
                        their offset (the high watermark ended below it)
  duplicates            extra copies: a value stored at more than one offset
  inconsistent_offsets  offsets for which two values were observed (ack, consumer
                        reads, drain), or an acknowledged/read offset whose value the
                        final log holds somewhere else
  non_monotonic_reads   reads whose offset is not above the previous read of the
                        same partition in the same consumer session
  vanished_reads        values a consumer read that are missing from a final log
                        that covers them (reads of data that was later lost)
  phantoms              values read or stored that no one sent
  corrupted             records whose key or headers differ from what was sent
  out_of_order          a producer's records of one partition stored out of the
                        order it sent them (idempotent producers keep order)
  failed_visible        definitely failed sends that were read or stored anyway
  fatal_errors          fatal client errors (an idempotent producer gave up)

and, for information, counts of sends, acks, failures by error, indeterminate
sends (no outcome), polls, consumer sessions, skipped offsets within a session
and drained records.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

SAFETY = (
    "lost",
    "unseen",
    "duplicates",
    "inconsistent_offsets",
    "non_monotonic_reads",
    "vanished_reads",
    "phantoms",
    "corrupted",
    "out_of_order",
    "failed_visible",
    "fatal_errors",
)

DESCRIPTIONS = {
    "lost": "acknowledged writes lost",
    "unseen": "acknowledged writes unseen after the final drain",
    "duplicates": "duplicates",
    "inconsistent_offsets": "inconsistent offsets (two values at one offset)",
    "non_monotonic_reads": "non-monotonic reads within a consumer session",
    "vanished_reads": "reads of values later missing from the log",
    "phantoms": "values no one sent",
    "corrupted": "records with another key or headers than sent",
    "out_of_order": "producer order violations within a partition",
    "failed_visible": "definitely failed writes that became visible",
    "fatal_errors": "fatal client errors",
}

EXAMPLES = 5  # examples kept per count


class HistoryError(ValueError):
    """The history itself is unusable (e.g. a value sent twice): the workload is broken."""


# --------------------------------------------------------------------------------------
# recording


def text(b: Union[bytes, str, None]) -> Optional[str]:
    """Keys, values and header values as JSON strings; bytes that are not UTF-8
    stay distinguishable (backslash escapes) so a corrupted value is never
    mistaken for a sent one."""
    if b is None or isinstance(b, str):
        return b
    return b.decode("utf-8", errors="backslashreplace")


def headers_json(headers) -> list:
    return [[k, text(v)] for k, v in (headers or [])]


class Recorder:
    """Appends one worker's events to its JSONL file.

    Lines are buffered and written out on close() and, while the worker runs, once
    they are `flush_every` seconds old: a worker calls tick() from its idle loop,
    so its last events reach the file while it waits for more (a test watching the
    file for progress must not wait on a buffer). A workload process is never
    killed (only brokers are), so the buffer is not where history gets lost."""

    def __init__(self, path: Union[str, Path], worker: str, flush_every: float = 0.2):
        self.path = Path(path)
        self.worker = worker
        self._f = open(self.path, "a", buffering=1 << 16)
        self._flush_every = flush_every
        self._last_flush = time.monotonic()
        self._pending = False

    def write(self, ev: str, **fields):
        rec = {"ev": ev, "w": self.worker}
        rec.update(fields)
        for k in ("k", "v"):
            if isinstance(rec.get(k), bytes):
                rec[k] = text(rec[k])
        if "h" in rec:
            rec["h"] = headers_json(rec["h"])
        rec.setdefault("t", time.time())
        self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._pending = True
        self.tick()

    def tick(self):
        """Writes buffered lines out if the last write-out is `flush_every` seconds ago."""
        now = time.monotonic()
        if self._pending and now - self._last_flush >= self._flush_every:
            self._f.flush()
            self._pending = False
            self._last_flush = now

    def flush(self):
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self):
        if not self._f.closed:
            self.flush()
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load(paths: Iterable[Union[str, Path]]) -> tuple[list[dict], int]:
    """All events of the given files, each file in its own order, and the number
    of lines that were not JSON objects (a line cut short by a crash)."""
    events, bad = [], 0
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if isinstance(ev, dict) and "ev" in ev:
                    events.append(ev)
                else:
                    bad += 1
    return events, bad


# --------------------------------------------------------------------------------------
# checking


@dataclass
class Report:
    counts: dict = field(default_factory=dict)  # SAFETY name -> int
    examples: dict = field(default_factory=dict)  # SAFETY name -> [str]
    info: dict = field(default_factory=dict)

    @property
    def safety(self) -> dict:
        return {k: self.counts.get(k, 0) for k in SAFETY}

    @property
    def ok(self) -> bool:
        return all(v == 0 for v in self.safety.values())

    def format(self) -> str:
        i = self.info
        lines = [
            f"history: {i.get('sends', 0)} sends ({i.get('acked', 0)} acknowledged, "
            f"{i.get('failed', 0)} failed, {i.get('indeterminate', 0)} indeterminate), "
            f"{i.get('polls', 0)} reads in {i.get('sessions', 0)} consumer sessions, "
            f"{i.get('drained', 0)} records drained from {i.get('drained_partitions', 0)} partitions"
            f" ({i.get('drain_incomplete', 0)} incomplete)",
        ]
        if i.get("errors"):
            lines.append("  send errors: " + ", ".join(f"{k}={v}" for k, v in sorted(i["errors"].items())))
        if i.get("client_errors"):
            lines.append("  client errors: " + ", ".join(f"{k}={v}" for k, v in sorted(i["client_errors"].items())))
        for k in ("skipped_reads", "bad_lines", "below_log_start", "reads_beyond_drain", "acked_without_offset"):
            if i.get(k):
                lines.append(f"  {k.replace('_', ' ')}: {i[k]}")
        width = max(len(d) for d in DESCRIPTIONS.values())
        for k in SAFETY:
            n = self.counts.get(k, 0)
            lines.append(f"  {DESCRIPTIONS[k]:<{width}}  {n}" + ("" if n == 0 else "   <-- FAIL"))
            for ex in self.examples.get(k, [])[:EXAMPLES]:
                lines.append(f"      e.g. {ex}")
        lines.append("  checker: " + ("OK (every safety count is 0)" if self.ok else "FAILED"))
        return "\n".join(lines)

    def __str__(self):
        return self.format()


class _Counter:
    def __init__(self):
        self.counts = Counter()
        self.examples = defaultdict(list)

    def add(self, name: str, example, n: int = 1):
        self.counts[name] += n
        if len(self.examples[name]) < EXAMPLES:
            self.examples[name].append(example)


def check(history: Union[Iterable[Union[str, Path]], list[dict]]) -> Report:
    """Judge a history: a list of events, or paths of JSONL files."""
    history = list(history)
    if history and not isinstance(history[0], dict):
        events, bad_lines = load(history)
    else:
        events, bad_lines = history, 0
    c = _Counter()

    sends: dict[str, dict] = {}
    outcome: dict[str, dict] = {}  # value -> ack or fail event (the last one wins)
    drained: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    drain_end: dict[tuple, dict] = {}
    polls: list[dict] = []
    client_errors = Counter()
    for ev in events:
        kind = ev["ev"]
        if kind == "send":
            v = ev["v"]
            if v in sends:
                raise HistoryError(f"value {v!r} was sent twice ({sends[v]} and {ev}): values must be unique")
            sends[v] = ev
        elif kind in ("ack", "fail"):
            prev = outcome.get(ev["v"])
            if prev is not None and prev["ev"] == "ack" and kind == "ack" and \
                    (prev["p"], prev["o"]) != (ev["p"], ev["o"]):
                c.add("inconsistent_offsets", f"{ev['v']} acknowledged twice: at {prev['p']}/{prev['o']} "
                                              f"and {ev['p']}/{ev['o']}")
            outcome[ev["v"]] = ev
        elif kind == "poll":
            polls.append(ev)
        elif kind == "drain":
            drained[(ev["topic"], ev["p"])][ev["o"]].append(ev)
        elif kind == "drain_end":
            drain_end[(ev["topic"], ev["p"])] = ev
        elif kind == "client_error":
            client_errors[ev.get("err", "?")] += 1
            if ev.get("fatal"):
                c.add("fatal_errors", f"{ev['w']}: {ev.get('err')} {ev.get('reason', '')}".strip())

    # the final log: (topic, p) -> offset -> value (one per offset; a second value at
    # the same offset is an inconsistency, a second read of the same one is not)
    log: dict[tuple, dict[int, dict]] = {}
    where: dict[str, list[tuple]] = defaultdict(list)  # value -> [(topic, p, o)] in the log
    slots: dict[tuple, set] = defaultdict(set)  # (topic, p, o) -> values observed there
    for tp, offsets in drained.items():
        log[tp] = {}
        for o, recs in offsets.items():
            log[tp][o] = recs[0]
            for r in recs:
                slots[(*tp, o)].add(r["v"])
            for v in {r["v"] for r in recs}:
                where[v].append((*tp, o))

    def reached(tp: tuple, o: int) -> bool:
        """Did the final drain read up to and past offset o of partition tp?"""
        end = drain_end.get(tp)
        if end is None:
            return False
        upto = end.get("hw", 0) if end.get("complete") else end.get("next", 0)
        return end.get("lo", 0) <= o < upto

    def complete(tp: tuple) -> bool:
        """A complete drain vouches for the whole committed log of tp: whatever is
        not in it is not in the log, whatever the offset."""
        return bool(drain_end.get(tp, {}).get("complete"))

    # --- values nobody sent, and records that differ from what was sent
    stored_or_read = [r for offs in log.values() for r in offs.values()] + polls
    phantom_values = set()
    corrupted_values = set()
    for r in stored_or_read:
        s = sends.get(r["v"])
        if s is None:
            if r["v"] not in phantom_values:
                phantom_values.add(r["v"])
                c.add("phantoms", f"{r['v']!r} at {r['topic']}/{r['p']}/{r['o']} ({r['ev']} by {r['w']})")
        elif (r.get("k"), r.get("h", [])) != (s.get("k"), s.get("h", [])) and r["v"] not in corrupted_values:
            corrupted_values.add(r["v"])
            c.add("corrupted", f"{r['v']} at {r['topic']}/{r['p']}/{r['o']}: key/headers "
                               f"{r.get('k')!r} {r.get('h')} but sent {s.get('k')!r} {s.get('h')}")

    # --- duplicates: a value at more than one offset of the final log
    for v, positions in where.items():
        if len(positions) > 1:
            c.add("duplicates", f"{v} at {sorted(positions)}", n=len(positions) - 1)

    # --- acknowledged writes: present where acknowledged?
    polled_values = {r["v"] for r in polls}
    below_log_start = 0
    acked_without_offset = 0
    for v, res in outcome.items():
        if res["ev"] != "ack":
            continue
        tp, o = (res["topic"], res["p"]), res["o"]
        if o is None:
            # acknowledged without an offset (a broker answering a retried duplicate
            # with offset -1): it must be stored, wherever that is
            acked_without_offset += 1
            if v in where:
                continue
            if complete(tp) or v in polled_values:
                c.add("lost", f"{v} acknowledged (no offset) on {tp[0]}/{tp[1]}, not in the final log")
            else:
                c.add("unseen", f"{v} acknowledged (no offset) on {tp[0]}/{tp[1]}, never read")
            continue
        slots[(*tp, o)].add(v)
        if v in where:
            if (*tp, o) not in where[v] and o not in log.get(tp, {}):
                c.add("inconsistent_offsets", f"{v} acknowledged at {tp[0]}/{tp[1]}/{o}, stored at {where[v]}")
            continue
        end = drain_end.get(tp)
        if end is not None and o < end.get("lo", 0):
            below_log_start += 1  # deleted by retention, not by a fault
            continue
        if reached(tp, o) or v in polled_values:
            c.add("lost", f"{v} acknowledged at {tp[0]}/{tp[1]}/{o}"
                          + (f", read by a consumer" if v in polled_values else "")
                          + (f", final log has {log[tp][o]['v']} there" if o in log.get(tp, {}) else ""))
        else:
            c.add("unseen", f"{v} acknowledged at {tp[0]}/{tp[1]}/{o}; drain of that partition: "
                            + (json.dumps({k: end.get(k) for k in ('lo', 'hw', 'next', 'complete')})
                               if end else "none"))

    # --- consumer reads: order within a session, and whether they survived
    last: dict[tuple, int] = {}
    skipped = 0
    vanished = set()
    reads_beyond_drain = 0
    for r in polls:
        tp = (r["topic"], r["p"])
        key = (r["w"], r.get("sess"), *tp)
        if key in last:
            if r["o"] <= last[key]:
                c.add("non_monotonic_reads", f"{r['w']} session {r.get('sess')} read {tp[0]}/{tp[1]} "
                                             f"offset {r['o']} after {last[key]}")
            elif r["o"] > last[key] + 1:
                skipped += r["o"] - last[key] - 1
        last[key] = max(r["o"], last.get(key, -1))
        slots[(*tp, r["o"])].add(r["v"])
        if r["v"] in where:
            if (*tp, r["o"]) not in where[r["v"]] and r["o"] not in log.get(tp, {}):
                c.add("inconsistent_offsets", f"{r['v']} read at {tp[0]}/{tp[1]}/{r['o']} by {r['w']}, "
                                              f"stored at {where[r['v']]}")
        elif reached(tp, r["o"]) or complete(tp):
            if r["v"] not in vanished:
                vanished.add(r["v"])
                c.add("vanished_reads", f"{r['v']} read at {tp[0]}/{tp[1]}/{r['o']} by {r['w']}, "
                                        f"not in the final log")
        else:
            reads_beyond_drain += 1

    # --- two values at one offset
    for slot, values in sorted(slots.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        if len(values) > 1:
            c.add("inconsistent_offsets", f"{slot[0]}/{slot[1]}/{slot[2]} holds {sorted(values)}")

    # --- producer order within each partition of the final log
    for tp, offsets in log.items():
        prev: dict[str, tuple] = {}
        for o in sorted(offsets):
            s = sends.get(offsets[o]["v"])
            if s is None or len(where[offsets[o]["v"]]) > 1:
                continue  # a phantom, or a duplicate (counted as such)
            w, seq = s["w"], s["s"]
            if w in prev and seq < prev[w][0]:
                c.add("out_of_order", f"{tp[0]}/{tp[1]}: {offsets[o]['v']} at {o} after "
                                      f"{w} seq {prev[w][0]} at {prev[w][1]}")
            prev[w] = (max(seq, prev.get(w, (seq,))[0]), o)

    # --- definite failures that became visible anyway
    for v, res in outcome.items():
        if res["ev"] == "fail" and res.get("definite") and (v in where or v in polled_values):
            c.add("failed_visible", f"{v} failed with {res.get('err')} but is "
                                    + (f"stored at {where[v]}" if v in where else "read by a consumer"))

    errors = Counter(res.get("err", "?") for res in outcome.values() if res["ev"] == "fail")
    acked = sum(1 for res in outcome.values() if res["ev"] == "ack")
    info = {
        "sends": len(sends),
        "acked": acked,
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "indeterminate": sum(1 for v in sends if v not in outcome),
        "polls": len(polls),
        "sessions": len({(r["w"], r.get("sess")) for r in polls}),
        "skipped_reads": skipped,
        "drained": sum(len(offs) for offs in log.values()),
        "drained_partitions": len(drain_end),
        "drain_incomplete": sum(1 for e in drain_end.values() if not e.get("complete")),
        "client_errors": dict(client_errors),
        "bad_lines": bad_lines,
        "below_log_start": below_log_start,
        "reads_beyond_drain": reads_beyond_drain,
        "acked_without_offset": acked_without_offset,
    }
    return Report(counts={k: c.counts.get(k, 0) for k in SAFETY}, examples=dict(c.examples), info=info)


# --------------------------------------------------------------------------------------
# failover times


def failover_times(events: list[dict]) -> list[dict]:
    """For each fault event {"action": "kill", "topic": T, "p": P, "t": kill time}: how
    long until partition P accepted an acks=all write again, measured as the first
    acknowledgement of a send made after the kill (a send made before it could have
    been acknowledged by the old leader). None when no such write was acknowledged."""
    sent_at = {ev["v"]: ev["t"] for ev in events if ev["ev"] == "send"}
    acks = defaultdict(list)  # (topic, p) -> [(send time, ack time)]
    for ev in events:
        if ev["ev"] == "ack" and ev["v"] in sent_at:
            acks[(ev["topic"], ev["p"])].append((sent_at[ev["v"]], ev["t"]))
    out = []
    for ev in events:
        if ev["ev"] != "fault" or ev.get("action") != "kill" or "p" not in ev:
            continue
        after = [acked for sent, acked in acks[(ev["topic"], ev["p"])] if sent >= ev["t"]]
        out.append({"broker": ev.get("broker"), "topic": ev["topic"], "p": ev["p"], "t": ev["t"],
                    "seconds": (min(after) - ev["t"]) if after else None})
    return out


def percentile(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in 0..100) of the values, None if there are none."""
    vals = sorted(values)
    if not vals:
        return None
    rank = max(1, min(len(vals), int(-(-q * len(vals) // 100))))
    return vals[rank - 1]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: history.py FILE.jsonl...   (prints the checker's counts; exit 1 if any safety count > 0)")
        return 2
    report = check(argv)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
