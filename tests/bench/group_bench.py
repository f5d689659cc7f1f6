#!/usr/bin/env python3
"""Consumer group benchmark for a single Quiver broker: rebalance time, OffsetCommit
throughput, and group read throughput against manual assignment of the same data.

Starts a broker of its own (through broker_bench.Broker: tempdir, reserved port, killed
on exit) or measures a running one (--bootstrap HOST:PORT [--broker-pid PID]). Every
client is a confluent-kafka (librdkafka) consumer in its own process. The figures are
printed (median and range, ratios side by side) and written to --out; nothing is
asserted about time. The exit code is non-zero only when the benchmark itself failed
(broker did not start or died, client errors, records lost or duplicated, a commit not
read back).

See tests/bench/README.md and docs/perf.md ("Consumer groups").
"""

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import sys
import time
import types
import uuid

import broker_bench as bb
from broker_bench import GIB, MB, BenchError, log

READ_RATIO_TARGET = 0.95


# --------------------------------------------------------------------------------------
# Client configuration


def group_conf(bootstrap, group, client, extra=None):
    """broker_bench's consumer settings (prefetch, fetch.queue.backoff.ms, ...) in a group;
    `client` holds the benchmark's own choices (heartbeat.interval.ms, fetch.wait.max.ms)."""
    conf = bb.consumer_conf(bootstrap)
    conf.update({
        "group.id": group,
        "client.id": "quiver-group-bench",
        "session.timeout.ms": 10_000,
        # librdkafka sends max.poll.interval.ms as the rebalance timeout: a member that
        # fails to rejoin would otherwise hold a rebalance for the default 300 s.
        "max.poll.interval.ms": 30_000,
        "partition.assignment.strategy": "range",   # eager: every member revokes and rejoins
    })
    conf.update(client)
    conf.update(extra or {})
    return conf


# --------------------------------------------------------------------------------------
# 1. Rebalance time: members report assignments and first records to the parent.
#    Timestamps are time.monotonic() (CLOCK_MONOTONIC: one clock for all processes).


class _Member:
    """A subscribed consumer that reports ("assign", idx, t, partitions) on each
    assignment and ("first", idx, t, partition) for the first record after it."""

    def __init__(self, conf, topic, idx, events):
        from confluent_kafka import Consumer
        self.c = Consumer(conf)
        self.c.list_topics(topic, timeout=30)          # connected before any clock starts
        self.topic, self.idx, self.events = topic, idx, events
        self.assigned = frozenset()
        self.waiting = False

    def _on_assign(self, consumer, parts):
        t = time.monotonic()
        self.assigned = frozenset(p.partition for p in parts)
        self.waiting = True
        self.events.put(("assign", self.idx, t, sorted(self.assigned)))

    def _on_revoke(self, consumer, parts):
        self.waiting = False
        self.events.put(("revoke", self.idx, time.monotonic(), len(parts)))

    def subscribe(self):
        t = time.monotonic()
        self.c.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        return t

    def step(self):
        if self.waiting:
            # poll() returns as soon as one record is there: the time is the first record's
            m = self.c.poll(0.01)
            if m is not None and m.error() is None and m.partition() in self.assigned:
                self.waiting = False
                self.events.put(("first", self.idx, time.monotonic(), m.partition()))
        else:
            self.c.consume(num_messages=1000, timeout=0.02)   # keep reading, drop the records

    def close(self):
        self.c.close()


def rebalance_member(bootstrap, group, topic, idx, client, events, stop_evt):
    bb._pdeathsig()
    try:
        m = _Member(group_conf(bootstrap, group, client), topic, idx, events)
        cpu0 = bb._worker_cpu()
        m.subscribe()
        while not stop_evt.is_set():
            m.step()
        m.close()
        events.put(("done", idx, time.monotonic(), bb._worker_cpu() - cpu0))
    except Exception as e:
        events.put(("error", idx, time.monotonic(), f"{type(e).__name__}: {e}"))


def rebalance_joiner(bootstrap, group, topic, idx, client, events, cmds):
    """The member that comes and goes: "join" subscribes, "leave" closes (LeaveGroup)."""
    bb._pdeathsig()
    try:
        conf = group_conf(bootstrap, group, client)
        m = _Member(conf, topic, idx, events)
        joined = False
        cpu0 = bb._worker_cpu()
        while True:
            try:
                cmd = cmds.get_nowait() if joined else cmds.get(timeout=0.5)
            except queue.Empty:
                cmd = None
            if cmd == "join":
                events.put(("join_called", idx, m.subscribe(), None))
                joined = True
            elif cmd == "leave":
                events.put(("leave_called", idx, time.monotonic(), None))
                m.close()
                joined = False
                m = _Member(conf, topic, idx, events)   # warm (connected) for the next join
            elif cmd == "stop":
                break
            if joined:
                m.step()
        m.close()
        events.put(("done", idx, time.monotonic(), bb._worker_cpu() - cpu0))
    except Exception as e:
        events.put(("error", idx, time.monotonic(), f"{type(e).__name__}: {e}"))


def _next_event(events, deadline, what):
    left = deadline - time.monotonic()
    if left <= 0:
        raise BenchError(f"rebalance: {what} did not happen in time")
    try:
        ev = events.get(timeout=min(left, 1.0))
    except queue.Empty:
        return None
    if ev[0] == "error":
        raise BenchError(f"rebalance member {ev[1]} failed: {ev[3]}")
    return ev


def wait_settled(events, members, partitions, t0, timeout_s, pending=()):
    """Consume events until every member in `members` has an assignment made after t0,
    the assignments cover all partitions once, and each member has fetched a record since
    its latest assignment. Returns (last assign time, last first-record time, assignments
    seen, the member that fetched last, each member's own assign → first-record time)."""
    latest, first, revoked = {}, {}, {}
    assigns = 0
    deadline = time.monotonic() + timeout_s
    pending = list(pending)
    while True:
        ev = pending.pop(0) if pending else _next_event(events, deadline,
                                                          f"a settled {len(members)}-member group")
        if ev is None:
            continue
        kind, idx, t = ev[0], ev[1], ev[2]
        if kind == "assign" and t >= t0 and idx in members:
            latest[idx] = (t, ev[3])
            first.pop(idx, None)
            assigns += 1
        elif kind == "first" and idx in latest and t >= latest[idx][0]:
            first[idx] = t
        elif kind == "revoke" and t >= t0 and idx in members:
            revoked[idx] = t       # eager: on_revoke runs when the member hears of the rebalance
        if set(latest) == members and set(first) == members:
            owned = [p for _, ps in latest.values() for p in ps]
            if len(owned) == len(set(owned)) == partitions:
                last = max(first, key=first.get)
                lag = {i: first[i] - latest[i][0] for i in members}   # own assign → own first record
                heard = max(revoked.values()) if revoked else None
                return (max(t for t, _ in latest.values()), max(first.values()), assigns, last, lag,
                        heard)


def drain_quiet(events, seconds):
    """Read events for `seconds`; count assignments (a further, unexpected rebalance)."""
    extra = 0
    end = time.monotonic() + seconds
    while True:
        ev = _next_event(events, end + 60, "quiet period")  # never times out here
        if ev is not None and ev[0] == "assign":
            extra += 1
        if time.monotonic() >= end:
            try:
                while True:
                    ev = events.get_nowait()
                    if ev[0] == "error":
                        raise BenchError(f"rebalance member {ev[1]} failed: {ev[3]}")
                    extra += ev[0] == "assign"
            except queue.Empty:
                return extra


def phase_rebalance(ctx, cfg, bootstrap, meter, topic):
    group = f"gbench-rebal-{uuid.uuid4().hex[:8]}"
    events, stop_evt, cmds = ctx.Queue(), ctx.Event(), ctx.Queue()
    n = cfg.members
    procs = [ctx.Process(target=rebalance_member,
                         args=(bootstrap, group, topic, i, cfg.client_conf, events, stop_evt),
                         daemon=True) for i in range(n)]
    procs.append(ctx.Process(target=rebalance_joiner,
                             args=(bootstrap, group, topic, n, cfg.client_conf, events, cmds),
                             daemon=True))
    for p in procs:
        p.start()
    standing = set(range(n))
    out = {"join": [], "leave": [], "extra_assignments": 0}
    try:
        log(f"rebalance: starting {n} members of {group} on {topic} ({cfg.rebalance_partitions} partitions)")
        wait_settled(events, standing, cfg.rebalance_partitions, 0.0, 120)
        drain_quiet(events, 1.0)
        rng = random.Random(cfg.seed)
        cpu0 = meter.cpu()
        for i in range(cfg.rebalances):
            for kind, cmd, members in (("join", "join", standing | {n}), ("leave", "leave", standing)):
                cmds.put(cmd)
                t0, seen = None, []          # events from other members may come first
                deadline = time.monotonic() + 30
                while t0 is None:
                    ev = _next_event(events, deadline, f"{cmd} command")
                    if ev is not None and ev[0] == f"{cmd}_called":
                        t0 = ev[2]
                    elif ev is not None:
                        seen.append(ev)
                t_assign, t_first, assigns, last, lag, t_heard = wait_settled(events, members, cfg.rebalance_partitions,
                                                          t0, cfg.phase_timeout, seen)
                sample = {"total_ms": (t_first - t0) * 1e3, "to_assign_ms": (t_assign - t0) * 1e3,
                          "assign_to_fetch_ms": (t_first - t_assign) * 1e3,
                          "assignments": assigns, "members": len(members),
                          "to_all_heard_ms": None if t_heard is None else (t_heard - t0) * 1e3,
                          "heard_to_assign_ms": None if t_heard is None else (t_assign - t_heard) * 1e3,
                          "last_to_fetch": "joiner" if last == n else "standing",
                          "own_assign_to_fetch_ms_standing_max": max(
                              v for i, v in lag.items() if i != n) * 1e3,
                          "own_assign_to_fetch_ms_joiner": lag[n] * 1e3 if n in lag else None}
                out[kind].append(sample)
                # The standing members heartbeat in step (their timers restart together at
                # each assignment): a fixed pause would always hit the same heartbeat phase.
                out["extra_assignments"] += drain_quiet(
                    events, cfg.settle_s + rng.uniform(0, cfg.heartbeat_ms / 1e3))
            j, l_ = out["join"][-1], out["leave"][-1]
            log(f"  rebalance {i + 1}/{cfg.rebalances}: join {j['total_ms']:.0f} ms, "
                f"leave {l_['total_ms']:.0f} ms")
        cpu1 = meter.cpu()
        out["broker_cpu_s"] = None if cpu0 is None else cpu1 - cpu0
        cmds.put("stop")
        stop_evt.set()
        cpu = 0.0
        done = 0
        deadline = time.monotonic() + 60
        while done < len(procs):
            ev = _next_event(events, deadline, "member shutdown")
            if ev is not None and ev[0] == "done":
                done += 1
                cpu += ev[3]
        out["client_cpu_s"] = cpu
        return out
    finally:
        stop_evt.set()
        cmds.put("stop")
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()


# --------------------------------------------------------------------------------------
# 2. OffsetCommit throughput


def _wait_for_share(c, assigned, share, deadline):
    while len(assigned) != share:
        c.poll(0.05)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no assignment of {share} partition(s) (have {sorted(assigned)})")


def commit_worker(bootstrap, group, topic, share, mode, seconds, warmup_s, client, barrier,
                  ready_q, start_evt, result_q, timeout_s):
    """A group member committing one partition's offset, changing every commit."""
    from confluent_kafka import Consumer, TopicPartition
    bb._pdeathsig()
    res = {"ok": False, "commits": 0, "errors": 0, "first_error": None}
    try:
        acked = [0]

        def on_commit(err, parts):
            if err is not None or any(p.error is not None for p in parts):
                res["errors"] += 1
                if res["first_error"] is None:
                    res["first_error"] = str(err or next(p.error for p in parts if p.error))
            else:
                acked[0] += 1

        extra = {"on_commit": on_commit} if mode == "async" else {}
        c = Consumer(group_conf(bootstrap, group, client, extra))
        assigned = []

        def on_assign(consumer, parts):
            assigned[:] = [p.partition for p in parts]

        c.subscribe([topic], on_assign=on_assign)
        _wait_for_share(c, assigned, share, time.monotonic() + 60)
        ready_q.put(os.getpid())
        while not start_evt.is_set():
            c.poll(0.02)                               # serve callbacks while waiting
        part = assigned[0]
        commit = c.commit
        off = 1
        if mode == "sync":
            t_warm = time.monotonic() + warmup_s
            while time.monotonic() < t_warm:
                commit(offsets=[TopicPartition(topic, part, off)], asynchronous=False)
                off += 1
            cpu0, t0 = bb._worker_cpu(), time.monotonic()
            end, n = t0 + seconds, 0
            while time.monotonic() < end:
                commit(offsets=[TopicPartition(topic, part, off)], asynchronous=False)
                off += 1
                n += 1
            t1 = time.monotonic()
        else:
            window = 1000                              # commits in flight at most
            issued = 0
            cpu0, t0 = bb._worker_cpu(), time.monotonic()
            end = t0 + seconds
            while time.monotonic() < end:
                commit(offsets=[TopicPartition(topic, part, off)], asynchronous=True)
                off += 1
                issued += 1
                c.poll(0)
                while issued - acked[0] - res["errors"] >= window:
                    c.poll(0.001)
            drain = time.monotonic() + 30
            while acked[0] + res["errors"] < issued and time.monotonic() < drain:
                c.poll(0.001)
            t1 = time.monotonic()
            n = acked[0]
            if acked[0] + res["errors"] < issued:
                raise TimeoutError(f"{issued - acked[0]} async commits not acknowledged after 30 s")
        cpu = bb._worker_cpu() - cpu0
        (got,) = c.committed([TopicPartition(topic, part)], timeout=30)
        res.update(commits=n, t0=t0, t1=t1, cpu=cpu, partition=part, last=off - 1,
                   read_back=got.offset)
        res["ok"] = res["errors"] == 0 and got.offset == off - 1
        if got.offset != off - 1 and res["first_error"] is None:
            res["first_error"] = f"committed offset read back {got.offset}, last committed {off - 1}"
        result_q.put(res)
        barrier.wait(timeout=timeout_s + 60)           # stay in the group until all are done
        c.close()
    except Exception as e:
        res["first_error"] = f"{type(e).__name__}: {e}"
        result_q.put(res)


def phase_commit(ctx, cfg, bootstrap, meter, topic, partitions, consumers, mode):
    group = f"gbench-commit-{uuid.uuid4().hex[:8]}"
    barrier = ctx.Barrier(consumers)
    share = partitions // consumers
    args = [(bootstrap, group, topic, share, mode, cfg.commit_seconds, cfg.commit_warmup,
             cfg.client_conf, barrier) for _ in range(consumers)]
    cpu0 = meter.cpu()
    res = bb.run_workers(ctx, commit_worker, args, cfg.phase_timeout)
    cpu1 = meter.cpu()
    bad = [r for r in res if not r["ok"]]
    if bad:
        raise BenchError(f"{mode} commits ({consumers} consumers) failed: {bad[0]['first_error']}")
    total = sum(r["commits"] for r in res)
    rate = sum(r["commits"] / (r["t1"] - r["t0"]) for r in res)
    return {"consumers": consumers, "mode": mode, "commits": total, "commits_s": rate,
            "per_consumer_commits_s": [r["commits"] / (r["t1"] - r["t0"]) for r in res],
            "read_back_ok": all(r["read_back"] == r["last"] for r in res),
            "broker_cpu_us_per_commit": None if cpu0 is None else (cpu1 - cpu0) / total * 1e6,
            "client_cpu_us_per_commit": sum(r["cpu"] for r in res) / total * 1e6}


# --------------------------------------------------------------------------------------
# 3. Group read throughput vs manual assignment of the same partitions


def read_worker(bootstrap, group, topic, mode, parts, share, ends, size, client, barrier,
                ready_q, start_evt, result_q, timeout_s):
    """mode "group": subscribe and take what the group assigns; "assign": assign `parts`.
    Both pause their partitions until the start, then read every offset up to `ends`."""
    from confluent_kafka import Consumer, TopicPartition
    bb._pdeathsig()
    res = {"ok": False, "count": 0, "bytes": 0, "errors": 0, "gaps": 0, "dups": 0,
           "bad_size": 0, "rebalances_during_read": 0, "first_error": None}
    try:
        c = Consumer(group_conf(bootstrap, group, client))
        c.list_topics(topic, timeout=30)
        assigned = []
        started = [False]

        def on_assign(consumer, tps):
            consumer.assign(tps)
            consumer.pause(tps)                        # no fetching before the clock starts
            assigned[:] = [tp.partition for tp in tps]
            if started[0]:
                res["rebalances_during_read"] += 1

        if mode == "group":
            c.subscribe([topic], on_assign=on_assign)
            _wait_for_share(c, assigned, share, time.monotonic() + 60)
        else:
            tps = [TopicPartition(topic, p) for p in parts]
            c.assign(tps)
            c.pause(tps)
            assigned[:] = list(parts)
        ready_q.put(os.getpid())
        while not start_evt.is_set():
            c.poll(0.02)
        started[0] = True
        mine = list(assigned)
        cpu0, t0 = bb._worker_cpu(), time.monotonic()
        deadline = t0 + timeout_s
        c.resume([TopicPartition(topic, p) for p in mine])
        nxt = {p: 0 for p in mine}
        want = sum(ends[p] for p in mine)
        count = nbytes = 0
        consume = c.consume
        while count < want:
            msgs = consume(num_messages=min(10000, want - count), timeout=0.5)
            if not msgs and time.monotonic() > deadline:
                raise TimeoutError(f"consumed {count} of {want} records before the deadline")
            for m in msgs:
                if m.error() is not None:
                    res["errors"] += 1
                    if res["first_error"] is None:
                        res["first_error"] = str(m.error())
                    continue
                p, o = m.partition(), m.offset()
                n = nxt.get(p)
                if n is None or o < n:
                    res["dups"] += 1
                    continue
                res["gaps"] += o - n
                nxt[p] = o + 1
                count += 1
                ln = len(m)
                nbytes += ln
                if ln != size:
                    res["bad_size"] += 1
        t1 = time.monotonic()
        cpu = bb._worker_cpu() - cpu0
        res.update(count=count, bytes=nbytes, t0=t0, t1=t1, cpu=cpu, partitions=mine,
                   next_offsets=nxt)
        res["ok"] = not (res["errors"] or res["gaps"] or res["dups"] or res["bad_size"]
                         or res["rebalances_during_read"])
        result_q.put(res)
        barrier.wait(timeout=timeout_s + 60)           # no member leaves while others read
        c.close()
    except Exception as e:
        res["first_error"] = f"{type(e).__name__}: {e}"
        result_q.put(res)


def phase_read(ctx, cfg, bootstrap, meter, topic, partitions, marks, mode):
    if any(lo != 0 for lo, _ in marks):
        raise BenchError(f"read topic {topic} does not start at offset 0: {marks}")
    ends = [hi for _, hi in marks]
    group = f"gbench-read-{mode}-{uuid.uuid4().hex[:8]}"
    k = cfg.readers
    barrier = ctx.Barrier(k)
    shares = [list(range(partitions))[i::k] for i in range(k)]   # used by "assign" only
    args = [(bootstrap, group, topic, mode, shares[i], partitions // k, ends, cfg.record_size,
             cfg.client_conf, barrier) for i in range(k)]
    cpu0 = meter.cpu()
    res = bb.run_workers(ctx, read_worker, args, cfg.phase_timeout)
    cpu1 = meter.cpu()
    consumed = sum(r["count"] for r in res)
    owned = sorted(p for r in res for p in r.get("partitions", []))
    stored = sum(ends)
    out = {"mode": mode, "stored": stored, "consumed": consumed, "partitions_read": owned,
           "gaps": sum(r["gaps"] for r in res), "dups": sum(r["dups"] for r in res),
           "bad_size": sum(r["bad_size"] for r in res), "errors": sum(r["errors"] for r in res),
           "rebalances_during_read": sum(r["rebalances_during_read"] for r in res)}
    bad = [r for r in res if not r["ok"]]
    if bad or consumed != stored or owned != list(range(partitions)):
        err = bad[0]["first_error"] if bad else None
        raise BenchError(f"{mode} read of {topic}: stored {stored}, consumed {consumed}, partitions "
                         f"{owned}, gaps {out['gaps']}, dups {out['dups']}, wrong size "
                         f"{out['bad_size']}, rebalances {out['rebalances_during_read']}, "
                         f"errors {out['errors']} ({err})")
    secs = max(r["t1"] for r in res) - min(r["t0"] for r in res)
    nbytes = sum(r["bytes"] for r in res)
    out.update(seconds=secs, mb_s=nbytes / MB / secs, msgs_s=consumed / secs,
               broker_cpu_s_per_gib=None if cpu0 is None else (cpu1 - cpu0) / (nbytes / GIB),
               client_cpu_s_per_gib=sum(r["cpu"] for r in res) / (nbytes / GIB))
    return out


# --------------------------------------------------------------------------------------
# Report


def pct(vals, q):
    return bb.percentile(sorted(vals), q)


def print_report(S, machine, cfg, broker_info):
    rows = []

    def row(label, med, lo=None, hi=None, digits=1, note=""):
        rng = "" if lo is None else f"{bb.fmt(lo, digits)} – {bb.fmt(hi, digits)}"
        rows.append((label, bb.fmt(med, digits), rng, note))

    def srow(label, s, digits=1, note=""):
        row(label, s["median"], s["min"], s["max"], digits, note)

    for kind, what in (("join", f"a member joins ({cfg.members} → {cfg.members + 1})"),
                       ("leave", f"a member leaves ({cfg.members + 1} → {cfg.members})")):
        r = S["rebalance"][kind]
        row(f"rebalance, {what}: p50 ms", r["total_ms"]["p50"], r["total_ms"]["min"],
            r["total_ms"]["max"], 0, f"n={r['n']}; range = min – max")
        row(f"  p99 ms", r["total_ms"]["p99"], digits=0)
        row(f"  change → last on_assign, p50 ms", r["to_assign_ms"]["p50"], r["to_assign_ms"]["min"],
            r["to_assign_ms"]["max"], 0)
        row(f"    change → every standing member heard (on_revoke)", r["to_all_heard_ms"]["p50"],
            r["to_all_heard_ms"]["min"], r["to_all_heard_ms"]["max"], 0, "client heartbeat timing")
        row(f"    last heard → last on_assign (JoinGroup+SyncGroup)", r["heard_to_assign_ms"]["p50"],
            r["heard_to_assign_ms"]["min"], r["heard_to_assign_ms"]["max"], 1)
        row(f"  last on_assign → every member fetched, p50 ms", r["assign_to_fetch_ms"]["p50"],
            r["assign_to_fetch_ms"]["min"], r["assign_to_fetch_ms"]["max"], 0)
    rb = S["rebalance"]
    if rb.get("broker_cpu_ms_per_rebalance") is not None:
        row("  broker CPU-ms per rebalance", rb["broker_cpu_ms_per_rebalance"], digits=1)
    row("  extra assignments after settling", rb["extra_assignments"], digits=0,
        note="0 = one rebalance per change")
    for key, label in (("sync1", "sync commits/s, 1 consumer"),
                       ("sync6", f"sync commits/s, {cfg.commit_consumers} consumers (sum)"),
                       ("async1", "async commits/s, 1 consumer")):
        srow(label, S["commit"][key]["commits_s"], 0)
    c = S["commit"]
    row(f"  {cfg.commit_consumers} consumers ÷ 1 (sync)", c["scale_sync"], digits=2)
    row("  async ÷ sync (1 consumer)", c["async_over_sync"], digits=2)
    for key, label in (("sync1", "sync 1"), ("sync6", f"sync {cfg.commit_consumers}"),
                       ("async1", "async 1")):
        if c[key]["broker_cpu_us_per_commit"] is not None:
            srow(f"  broker CPU-µs per commit, {label}", c[key]["broker_cpu_us_per_commit"], 1)
        srow(f"  client CPU-µs per commit, {label}", c[key]["client_cpu_us_per_commit"], 1)
    R = S["read"]
    srow(f"read MB/s, {cfg.readers}-member group (subscribe)", R["group"]["mb_s"])
    srow(f"read MB/s, {cfg.readers} consumers, manual assign", R["assign"]["mb_s"])
    srow("  group ÷ manual (per run pair)", R["ratio"], 3,
         f"{'✓' if R['ratio']['median'] >= READ_RATIO_TARGET else '✗'} ≥ {READ_RATIO_TARGET:g}")
    for mode, label in (("group", "group"), ("assign", "manual")):
        if R[mode]["broker_cpu_s_per_gib"] is not None:
            srow(f"  broker CPU-s/GiB, {label}", R[mode]["broker_cpu_s_per_gib"], 2)
        srow(f"  client CPU-s/GiB, {label}", R[mode]["client_cpu_s_per_gib"], 2)

    w = [max(len(r[i]) for r in rows + [("metric", "median", "range (min – max)", "")])
         for i in range(3)]
    print()
    print(f"Quiver consumer group benchmark — rebalance: {cfg.members}+1 members, "
          f"{cfg.rebalance_partitions} partitions, {cfg.rebalances} joins + {cfg.rebalances} leaves, "
          f"{', '.join(f'{k}={v}' for k, v in cfg.client_conf.items())}; commits: {cfg.runs} runs x {cfg.commit_seconds:g} s; "
          f"read: {cfg.runs} runs x {cfg.records:,} x {cfg.record_size} B on {cfg.read_partitions} partitions")
    print(f"machine: {machine['nproc']} CPUs ({machine.get('cpu_model')}), {machine['mem_gib']} GiB, "
          f"librdkafka {machine['librdkafka']}; broker {broker_info.get('where')}")
    print("load average (1/5/15 min) at start {:.2f}/{:.2f}/{:.2f}, at end {:.2f}/{:.2f}/{:.2f}".format(
        *machine["loadavg_start"], *machine["loadavg_end"]))
    hdr = f"{'metric':<{w[0]}}  {'median':>{w[1]}}  {'range (min – max)':>{w[2]}}  note"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]}")
    print()
    print("counts:")
    print(f"  rebalance: {S['rebalance']['join']['n']} joins and {S['rebalance']['leave']['n']} leaves, "
          f"each settled with all {cfg.rebalance_partitions} partitions assigned once and a record "
          f"fetched by every member")
    for key in ("sync1", "sync6", "async1"):
        print(f"  {key}: commits per run " + ", ".join(f"{n:,}" for n in S["commit"][key]["commits"])
              + "; last offset read back with OffsetFetch: all equal")
    for mode in ("group", "assign"):
        print(f"  read {mode}: stored / consumed per run " + "; ".join(
            f"{c['stored']:,} / {c['consumed']:,}" for c in R[mode]["counts"])
              + " (every offset once, no gaps, no duplicates)")
    print("targets are a report, not an assertion.")


# --------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one)")
    ap.add_argument("--broker-pid", type=int, help="pid of the running broker (CPU figures)")
    ap.add_argument("--binary", default=os.path.expanduser("~/.cache/quiver/target/release/quiver"),
                    help="quiver binary to start")
    ap.add_argument("--set", action="append", default=None, metavar="SECTION.KEY=VALUE",
                    help="broker setting passed as --set (repeatable; default "
                         "group.initial_rebalance_delay_ms=0)")
    ap.add_argument("--tmp-parent", default=None, help="where the broker's tempdir goes")
    ap.add_argument("--runs", type=int, help="runs of the commit and read phases (default 3; quick 2)")
    ap.add_argument("--members", type=int, default=6, help="standing members in the rebalance group")
    ap.add_argument("--rebalance-partitions", type=int, default=60)
    ap.add_argument("--rebalances", type=int, help="joins (and as many leaves) (default 20; quick 5)")
    ap.add_argument("--heartbeat-ms", type=int, default=500,
                    help="heartbeat.interval.ms of every member (how soon members hear of a rebalance)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random pauses between changes")
    ap.add_argument("--client-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka setting for every consumer (repeatable)")
    ap.add_argument("--fetch-wait-ms", type=int, default=100,
                    help="fetch.wait.max.ms of every consumer (broker_bench uses 100)")
    ap.add_argument("--settle-s", type=float, default=0.3,
                    help="quiet time after each rebalance (further assignments are counted)")
    ap.add_argument("--commit-seconds", type=float, help="measured seconds per commit run (default 3; quick 1.5)")
    ap.add_argument("--commit-warmup", type=float, default=0.3)
    ap.add_argument("--commit-consumers", type=int, default=6)
    ap.add_argument("--records", type=int, help="records in the read topic (default 1,000,000; quick 200,000)")
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--read-partitions", type=int, default=6)
    ap.add_argument("--readers", type=int, default=3, help="consumers on each side of the read test")
    ap.add_argument("--producers", type=int, default=2, help="producer processes filling the read topic")
    ap.add_argument("--linger-ms", type=float, default=5)
    ap.add_argument("--phase-timeout", type=float, default=120.0)
    ap.add_argument("--skip", default="", help="comma list of phases to skip: rebalance,commit,read")
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    ap.add_argument("--out", default="target/bench/groups.json", help="JSON file for the figures")
    cfg = ap.parse_args(argv)
    cfg.runs = cfg.runs or (2 if cfg.quick else 3)
    cfg.rebalances = cfg.rebalances or (5 if cfg.quick else 20)
    cfg.commit_seconds = cfg.commit_seconds or (1.5 if cfg.quick else 3.0)
    cfg.records = cfg.records or (200_000 if cfg.quick else 1_000_000)
    cfg.set = cfg.set if cfg.set is not None else ["group.initial_rebalance_delay_ms=0"]
    cfg.client_conf = {"heartbeat.interval.ms": cfg.heartbeat_ms,
                       "fetch.wait.max.ms": cfg.fetch_wait_ms}
    for kv in cfg.client_set:
        k, _, v = kv.partition("=")
        cfg.client_conf[k] = int(v) if v.lstrip("-").isdigit() else v
    cfg.skip = {s.strip() for s in cfg.skip.split(",") if s.strip()}
    if cfg.read_partitions % cfg.readers or cfg.read_partitions < cfg.readers:
        ap.error("--read-partitions must be a multiple of --readers")
    if cfg.commit_consumers > cfg.read_partitions:
        ap.error("--commit-consumers must be ≤ --read-partitions (one partition each)")
    return cfg


def summarize_samples(samples, key):
    vals = [s[key] for s in samples if s[key] is not None]
    if not vals:
        return {"p50": None, "p99": None, "min": None, "max": None, "mean": None}
    return {"p50": pct(vals, 50), "p99": pct(vals, 99), "min": min(vals), "max": max(vals),
            "mean": sum(vals) / len(vals)}


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    ctx = mp.get_context("spawn")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    machine = bb.machine_info()
    broker = None
    broker_info = {}
    result = {"config": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(cfg).items()},
              "machine": machine}
    t_start = time.monotonic()
    try:
        if cfg.bootstrap:
            bootstrap, pid = cfg.bootstrap, cfg.broker_pid
            host, port = bootstrap.rsplit(":", 1)
            try:
                if not bb.api_versions_probe(host, int(port), timeout=5):
                    raise BenchError(f"ApiVersions to {bootstrap} answered with an error")
            except OSError as e:
                raise BenchError(f"no ApiVersions answer from {bootstrap}: {e}")
            broker_info["where"] = f"at {bootstrap}" + (f" (pid {pid})" if pid else " (no pid: no CPU)")
        else:
            if not os.access(cfg.binary, os.X_OK):
                raise BenchError(f"broker binary {cfg.binary} not found (build it or pass --binary)")
            broker = bb.Broker(cfg.binary, cfg.set, cfg.tmp_parent)
            broker_info["startup_s"] = broker.start()
            bootstrap, pid = broker.bootstrap, broker.proc.pid
            broker_info["where"] = f"{cfg.binary} started by the benchmark (pid {pid})"
            broker_info["binary_mtime"] = time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(cfg.binary)))
        broker_info["sets"] = cfg.set
        meter = bb.Meter(pid)
        tag = uuid.uuid4().hex[:6]
        summary = {}

        # 1. rebalance
        if "rebalance" not in cfg.skip:
            topic = f"gbench-{tag}-rebal"
            bb.create_topic(bootstrap, topic, cfg.rebalance_partitions)
            per = 1024        # produce_worker switches partition every 1024 records
            fill = types.SimpleNamespace(producers=1, record_size=100, linger_ms=cfg.linger_ms,
                                         phase_timeout=cfg.phase_timeout)
            bb.phase_produce(ctx, fill, bootstrap, meter, topic, cfg.rebalance_partitions,
                             per * cfg.rebalance_partitions)
            marks = bb.watermarks(bootstrap, topic, cfg.rebalance_partitions)
            if any(hi - lo != per for lo, hi in marks):
                raise BenchError(f"rebalance topic: expected {per} records per partition, got {marks}")
            rb = phase_rebalance(ctx, cfg, bootstrap, meter, topic)
            if broker:
                broker.check_alive()
            result["rebalance_samples"] = rb
            summary["rebalance"] = {
                kind: {"n": len(rb[kind]),
                       **{k: summarize_samples(rb[kind], k)
                          for k in ("total_ms", "to_assign_ms", "assign_to_fetch_ms",
                                    "to_all_heard_ms", "heard_to_assign_ms")}}
                for kind in ("join", "leave")}
            summary["rebalance"]["extra_assignments"] = rb["extra_assignments"]
            nreb = len(rb["join"]) + len(rb["leave"])
            summary["rebalance"]["broker_cpu_ms_per_rebalance"] = (
                None if rb["broker_cpu_s"] is None else rb["broker_cpu_s"] / nreb * 1e3)
            summary["rebalance"]["client_cpu_s"] = rb["client_cpu_s"]
            bb.delete_topic(bootstrap, topic)

        # 2. commits (an empty topic: nothing to fetch, only OffsetCommit traffic)
        if "commit" not in cfg.skip:
            topic = f"gbench-{tag}-commit"
            bb.create_topic(bootstrap, topic, cfg.read_partitions)
            runs = {"sync1": [], "sync6": [], "async1": []}
            for run in range(cfg.runs):
                for key, n, mode in (("sync1", 1, "sync"), ("sync6", cfg.commit_consumers, "sync"),
                                     ("async1", 1, "async")):
                    r = phase_commit(ctx, cfg, bootstrap, meter, topic, cfg.read_partitions, n, mode)
                    runs[key].append(r)
                    log(f"commit run {run + 1}: {key} {r['commits_s']:,.0f} commits/s "
                        f"({r['commits']:,} commits)")
                if broker:
                    broker.check_alive()
            result["commit_runs"] = runs
            c = {key: {"commits_s": bb.summarize([r["commits_s"] for r in rs]),
                       "broker_cpu_us_per_commit": bb.summarize([r["broker_cpu_us_per_commit"] for r in rs]),
                       "client_cpu_us_per_commit": bb.summarize([r["client_cpu_us_per_commit"] for r in rs]),
                       "commits": [r["commits"] for r in rs]}
                 for key, rs in runs.items()}
            c["scale_sync"] = c["sync6"]["commits_s"]["median"] / c["sync1"]["commits_s"]["median"]
            c["async_over_sync"] = c["async1"]["commits_s"]["median"] / c["sync1"]["commits_s"]["median"]
            summary["commit"] = c
            bb.delete_topic(bootstrap, topic)

        # 3. read: the same data, group vs manual assignment, alternating which goes first
        if "read" not in cfg.skip:
            topic = f"gbench-{tag}-read"
            bb.create_topic(bootstrap, topic, cfg.read_partitions)
            log(f"read: producing {cfg.records:,} x {cfg.record_size} B to {topic}")
            prod = bb.phase_produce(ctx, cfg, bootstrap, meter, topic, cfg.read_partitions, cfg.records)
            log(f"  produce {prod['mb_s']:.1f} MB/s")
            marks = bb.watermarks(bootstrap, topic, cfg.read_partitions)
            if sum(hi - lo for lo, hi in marks) != cfg.records:
                raise BenchError(f"read topic holds {marks}, produced {cfg.records}")
            runs = {"group": [], "assign": []}
            for run in range(cfg.runs):
                order = ("group", "assign") if run % 2 == 0 else ("assign", "group")
                for mode in order:
                    r = phase_read(ctx, cfg, bootstrap, meter, topic, cfg.read_partitions, marks, mode)
                    runs[mode].append(r)
                    log(f"read run {run + 1}: {mode} {r['mb_s']:.1f} MB/s, consumed "
                        f"{r['consumed']:,} of {r['stored']:,}")
                if broker:
                    broker.check_alive()
            result["read_runs"] = runs
            R = {mode: {m: bb.summarize([r[m] for r in rs])
                        for m in ("mb_s", "msgs_s", "broker_cpu_s_per_gib", "client_cpu_s_per_gib")}
                 for mode, rs in runs.items()}
            for mode in runs:
                R[mode]["counts"] = [{"stored": r["stored"], "consumed": r["consumed"]} for r in runs[mode]]
            R["ratio"] = bb.summarize([g["mb_s"] / a["mb_s"] for g, a in zip(runs["group"], runs["assign"])])
            R["produce"] = prod
            summary["read"] = R
            bb.delete_topic(bootstrap, topic)

        if pid:
            broker_info["cpu_s_total"] = bb.proc_cpu_seconds(pid)
            broker_info["peak_rss_mib"] = bb.proc_status_kib(pid, "VmHWM") / 1024
        machine["loadavg_end"] = os.getloadavg()
        result.update(broker=broker_info, summary=summary, elapsed_s=time.monotonic() - t_start, ok=True)
        if not cfg.skip:
            print_report(summary, machine, cfg, broker_info)
        else:
            print(json.dumps(summary, indent=1, default=str))
        return 0
    except BenchError as e:
        log(f"BENCHMARK FAILED: {e}")
        result.update(ok=False, error=str(e), broker=broker_info)
        return 1
    except Exception as e:
        import traceback
        log("BENCHMARK FAILED (unexpected error):\n" + traceback.format_exc())
        result.update(ok=False, error=f"{type(e).__name__}: {e}", broker=broker_info)
        return 1
    finally:
        bb.finish(result, broker, broker_info, cfg.out, t_start)


if __name__ == "__main__":
    sys.exit(main())
