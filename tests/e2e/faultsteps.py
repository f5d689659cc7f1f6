"""The fault steps of the long cluster runs and the fault matrix, and the loop
that drives a named scenario (tests/chaos/long_run.py, tests/chaos/matrix.py and
the CI test test_fault_matrix.py all go through here).

A step is one fault, start to finish: it hurts the cluster, waits until the
cluster has done what it must (elected another leader, shrunk an ISR, kept
acknowledging writes), and heals what it did before it returns. Every choice it
makes (which partition, which broker, how long, how much loss, how much skew)
comes from the run's seeded random generator, so the same seed gives the same
fault schedule (which broker is hit still depends on where the cluster put its
leaders). A step is `step(c, wl, topic, args, rng)`: the Cluster, the recorded
Workload, the workload's topic, the run's settings (`partitions`,
`recover_timeout`, and `state`, a dict for steps that span several faults) and
the generator.

run_scenario() starts a cluster for the scenario, records a workload, applies
`faults` steps drawn from the scenario, heals, drains, runs the history checker
and returns a summary: the checker's safety counts with the number of
operations and faults beside them, broker panics, and the fault schedule.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

from faultkit import MIN_ISR, RF, failovers, pick_follower, recorded_run, sleep_until
from history import SAFETY, percentile

LIBFAKETIME = os.environ.get("QUIVER_LIBFAKETIME", "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
LOSS_PERCENTS = (1, 5, 10, 30)
# librdkafka's own default. With less, a fault that holds a producer's requests in
# flight for its socket.timeout.ms (60 s: a blackholed connection, or an isolated
# leader answering each of five pipelined requests only at its timeout) lets queued
# messages expire; the idempotent producer then bumps its epoch and sends again,
# under new sequence numbers, records the broker had already appended -- duplicates
# no broker can recognise (see docs/reliability.md, "Fault matrix").
MESSAGE_TIMEOUT_MS = 300_000
PRODUCER_ARGS = ("--message-timeout-ms", str(MESSAGE_TIMEOUT_MS))


def _log(msg: str):
    print(f"[matrix {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# process faults


def leader_kill(c, wl, topic, args, rng):
    """kill -9 the leader of a random partition; restart it once another leader
    acknowledges writes on that partition."""
    p = rng.randrange(args.partitions)
    leader = c.wait_leader(topic, p, timeout=args.recover_timeout)
    wl.fault("kill", broker=leader, topic=topic, p=p, role="leader")
    c.kill(leader)
    new = c.wait_leader(topic, p, exclude=[leader], timeout=args.recover_timeout)
    wl.fault("elected", broker=new, topic=topic, p=p)
    wl.wait_acked(5, args.recover_timeout, partitions=[p], what=f"on {p} after killing its leader {leader}")
    c.restart(leader)
    wl.fault("restart", broker=leader)


def controller_kill(c, wl, topic, args, rng):
    """kill -9 the controller (the Raft leader); restart it once another one is
    elected and every partition takes writes again."""
    ctrl = c.wait_controller(timeout=args.recover_timeout)
    wl.fault("kill", broker=ctrl, role="controller")
    c.kill(ctrl)
    new = c.wait_controller(exclude=[ctrl], timeout=args.recover_timeout)
    wl.fault("elected_controller", broker=new)
    wl.wait_acked(5, args.recover_timeout, what=f"after controller {ctrl} was killed")
    c.restart(ctrl)
    wl.fault("restart", broker=ctrl)


def follower_pause(c, wl, topic, args, rng):
    """SIGSTOP a follower beyond replica.lag.time.max.ms: the ISR drops it, writes go
    on; SIGCONT."""
    p = rng.randrange(args.partitions)
    f = pick_follower(c, topic, p)
    wl.fault("pause", broker=f, topic=topic, p=p, role="follower")
    c.pause(f)
    c.wait_isr(topic, p, lambda isr: f not in isr, args.recover_timeout, f"to drop paused {f}")
    wl.wait_acked(5, args.recover_timeout, what=f"with {f} paused")
    wl.fault("resume", broker=f)
    c.resume(f)


def leader_pause(c, wl, topic, args, rng):
    """SIGSTOP the leader of a partition: its lease runs out, another replica leads;
    after SIGCONT the old leader (which still believes it leads until told) must
    acknowledge nothing and truncate to the new leader's log."""
    p = rng.randrange(args.partitions)
    leader = c.wait_leader(topic, p, timeout=args.recover_timeout)
    wl.fault("pause", broker=leader, topic=topic, p=p, role="leader")
    c.pause(leader)
    try:
        new = c.wait_leader(topic, p, exclude=[leader], timeout=args.recover_timeout)
        wl.fault("elected", broker=new, topic=topic, p=p)
        wl.wait_acked(5, args.recover_timeout, partitions=[p], what=f"on {p} with its leader {leader} paused")
        sleep_until(time.monotonic() + rng.uniform(0, 3))  # the schedule: how long it stays frozen
    finally:
        wl.fault("resume", broker=leader)
        c.resume(leader)


# --------------------------------------------------------------------------------------
# network faults (brokers in namespaces)


def _others(c, broker: int) -> list[int]:
    return [i for i in c.ids if i != broker and c.brokers[i].alive()]


def _hold_cut(c, wl, topic, args, rng, what: str, partitions=None):
    """While a cut stands: writes must go on (on the given partitions, or all), then
    the cut lasts a while longer (the schedule's clock)."""
    wl.wait_acked(5, args.recover_timeout, partitions=partitions, what=what)
    sleep_until(time.monotonic() + rng.uniform(1, 4))


def _cut_then_heal(c, wl, args, rng, victim: int, cut_at: float, acked_at_cut: int):
    """The end of a cut that clients may not get through (see split_pair): hold it a
    while, heal, then writes must be acknowledged on every partition again. Records
    how many writes were acknowledged during the cut and how long after the cut
    writes went on everywhere (the stall a client saw)."""
    sleep_until(time.monotonic() + rng.uniform(1, 4))
    during = wl.acked() - acked_at_cut
    wl.fault("heal", broker=victim, acked_during_cut=during, cut_s=round(time.monotonic() - cut_at, 1))
    c.topology.heal(f"b{victim}")
    wl.wait_acked(5, args.recover_timeout, what=f"after healing broker {victim}")
    wl.fault("resumed", broker=victim, after_cut_s=round(time.monotonic() - cut_at, 1))


def _victim(c, topic, args, rng) -> tuple[int, dict]:
    """The broker a partition fault hits: the leader of a random partition, or the
    controller (half of the time each)."""
    if rng.random() < 0.5:
        p = rng.randrange(args.partitions)
        return c.wait_leader(topic, p, timeout=args.recover_timeout), {"role": "leader", "topic": topic, "p": p}
    return c.wait_controller(timeout=args.recover_timeout), {"role": "controller"}


def leader_isolation(c, wl, topic, args, rng):
    """Cut the leader of a partition off from the other brokers (clients still reach
    it): the majority elects another leader and goes on."""
    p = rng.randrange(args.partitions)
    leader = c.wait_leader(topic, p, timeout=args.recover_timeout)
    others = _others(c, leader)
    wl.fault("isolate", broker=leader, topic=topic, p=p, cut_from=others)
    c.topology.isolate(f"b{leader}", peers=[f"b{i}" for i in others])
    try:
        c.wait_leader(topic, p, exclude=[leader], via=others[0], timeout=args.recover_timeout)
        wl.wait_acked(5, args.recover_timeout, partitions=[p], what="on the majority side")
        time.sleep(rng.uniform(1, 4))  # the schedule: how long the cut lasts beyond failover
    finally:
        wl.fault("heal", broker=leader)
        c.topology.heal(f"b{leader}")


def isolate_one(c, wl, topic, args, rng):
    """One broker (a partition leader or the controller) cut from everyone, clients
    included: the others elect a new leader or controller. A producer with requests
    in flight to the cut broker waits for them (librdkafka: up to socket.timeout.ms,
    60 s) before it sends that partition's records elsewhere, so writes are required
    only after healing; the summary records what was acknowledged meanwhile."""
    victim, what = _victim(c, topic, args, rng)
    _cut_step(c, wl, topic, args, rng, victim, what, peers=None)


def split_pair(c, wl, topic, args, rng):
    """A majority/minority split, {x} | {y, z}, that clients see both sides of: x is
    the controller or a partition leader, and still answers clients (with what it
    last knew). The majority must elect a leader / controller without x; writes are
    required after healing (see isolate_one), and the summary records what was
    acknowledged during the cut."""
    victim, what = _victim(c, topic, args, rng)
    _cut_step(c, wl, topic, args, rng, victim, what, peers=_others(c, victim))


def _cut_step(c, wl, topic, args, rng, victim: int, what: dict, peers):
    others = _others(c, victim)
    if peers is None:
        wl.fault("isolate", broker=victim, cut_from="all", **what)
    else:
        wl.fault("split", minority=[victim], majority=others, **what)
    acked = wl.acked()
    cut_at = time.monotonic()
    c.topology.isolate(f"b{victim}", peers=None if peers is None else [f"b{i}" for i in peers])
    healed = False
    try:
        if what["role"] == "controller":
            ctrl = c.wait(lambda: _controller_seen_by(c, others, exclude=victim), args.recover_timeout,
                          f"brokers {others} to elect a controller other than {victim}")
            wl.fault("elected_controller", broker=ctrl, after_s=round(time.monotonic() - cut_at, 1))
        else:
            new = c.wait_leader(topic, what["p"], exclude=[victim], via=others[0], timeout=args.recover_timeout)
            wl.fault("elected", broker=new, topic=topic, p=what["p"], after_s=round(time.monotonic() - cut_at, 1))
        _cut_then_heal(c, wl, args, rng, victim, cut_at, acked)
        healed = True
    finally:
        if not healed:
            wl.fault("heal", broker=victim)
            c.topology.heal(f"b{victim}")


def _controller_seen_by(c, ids: list[int], exclude: int) -> Optional[int]:
    seen = {c.status(via=i).get("controller") for i in ids}
    ctrl = seen.pop() if len(seen) == 1 else None
    return ctrl if ctrl is not None and ctrl != exclude else None


def ring(c, wl, topic, args, rng):
    """A non-transitive partition: one link cut, every broker still reaches the one
    in the middle (1 <-> 2 <-> 3, not 1 <-> 3). Which link is cut is chosen so that
    half of the time the controller is an end of it. No broker is down: writes
    must go on on every partition throughout."""
    ctrl = c.wait_controller(timeout=args.recover_timeout)
    ids = list(c.ids)
    rest = [i for i in ids if i != ctrl]
    if rng.random() < 0.5:
        a, b = ctrl, rng.choice(rest)
    else:
        a, b = rng.sample(rest, 2)
    middle = [i for i in ids if i not in (a, b)]
    wl.fault("ring", cut=[a, b], middle=middle, controller=ctrl)
    c.topology.isolate(f"b{a}", peers=[f"b{b}"])
    try:
        _hold_cut(c, wl, topic, args, rng, f"with the link {a} <-> {b} cut")
        wl.wait_acked(5, args.recover_timeout, what=f"at the end of the cut {a} <-> {b}")
    finally:
        wl.fault("heal", cut=[a, b])
        c.topology.heal(f"b{a}")


def loss(c, wl, topic, args, rng):
    """Random packet loss on every QUIC link between the brokers (1, 5, 10 or 30 %
    of the packets each broker sends to the others, in turn from a seeded start, so
    that every run of four faults or more has each; client traffic is spared):
    writes must go on throughout."""
    turn = args.state.setdefault("loss_turn", rng.randrange(len(LOSS_PERCENTS)))
    args.state["loss_turn"] = turn + 1
    pct = LOSS_PERCENTS[turn % len(LOSS_PERCENTS)]
    wl.fault("loss", percent=pct, brokers=list(c.ids))
    for i in c.ids:
        c.topology.loss(f"b{i}", pct, peers=[f"b{j}" for j in c.ids if j != i])
    try:
        wl.wait_acked(20, args.recover_timeout, what=f"with {pct} % loss on the broker links")
        sleep_until(time.monotonic() + rng.uniform(3, 8))
        wl.wait_acked(5, args.recover_timeout, what=f"at the end of {pct} % loss")
    finally:
        wl.fault("heal", loss=pct)
        for i in c.ids:
            c.topology.heal(f"b{i}")


# --------------------------------------------------------------------------------------
# clock skew


def faketime_wrapper(offset_s: float, rate: float, monotonic: bool) -> list[str]:
    """The command prefix that runs a process on a skewed clock: libfaketime with
    the wall clock `offset_s` seconds off and running at `rate`; with
    monotonic=False (what an NTP step or a wrong time zone does) the monotonic
    clock stays true."""
    spec = f"{offset_s:+.0f} x{rate:.3f}"
    env = ["env", f"LD_PRELOAD={LIBFAKETIME}", f"FAKETIME={spec}", "FAKETIME_NO_CACHE=0"]
    if not monotonic:
        env.append("FAKETIME_DONT_FAKE_MONOTONIC=1")
    return env


def clock_skew(c, wl, topic, args, rng):
    """Restart a broker on a skewed clock (libfaketime): the wall clock minutes ahead
    or behind and drifting (rate 0.9-1.1); half of the time its monotonic clock
    runs skewed too. Then kill the leader of a partition it replicates, so that the
    skewed broker may lead. The broker stays skewed until a later skew step
    restarts it otherwise."""
    if not os.path.exists(LIBFAKETIME):
        raise RuntimeError(f"{LIBFAKETIME} is missing (apt-get install faketime)")
    b = rng.choice(c.ids)
    offset = rng.choice([-1, 1]) * rng.uniform(60, 600)
    rate = rng.uniform(0.9, 1.1)
    monotonic = rng.random() < 0.5
    c.kill(b)
    c.brokers[b].wrapper = faketime_wrapper(offset, rate, monotonic)
    wl.fault("skew", broker=b, offset_s=round(offset), rate=round(rate, 3), monotonic_skewed=monotonic)
    c.start_broker(b)
    c.wait_formed(args.recover_timeout)
    c.wait_topic(topic, args.partitions, RF, timeout=args.recover_timeout)
    wl.wait_acked(5, args.recover_timeout, what=f"with broker {b} skewed")
    led = [p for p in range(args.partitions) if c.leader_of(topic, p) not in (None, b)]
    if led:
        p = rng.choice(led)
        leader = c.leader_of(topic, p)
        wl.fault("kill", broker=leader, topic=topic, p=p, role="leader")
        c.kill(leader)
        new = c.wait_leader(topic, p, exclude=[leader], timeout=args.recover_timeout)
        wl.fault("elected", broker=new, topic=topic, p=p, skewed=new == b)
        wl.wait_acked(5, args.recover_timeout, partitions=[p], what=f"on {p} after killing {leader}")
        c.restart(leader)
        wl.fault("restart", broker=leader)


# --------------------------------------------------------------------------------------
# membership (4 brokers, the 4th joins later)


MEMBER = 4  # the broker that joins, leaves and is replaced


def membership(c, wl, topic, args, rng):
    """Each call is the next phase of the 4th broker's life:
    join     it starts and joins the running cluster; a second topic is created
             with a replica on it in every partition, grown by CreatePartitions by
             a partition it leads, and a second recorded workload writes to it;
    leave    controlled shutdown (SIGTERM, exit 0), writes go on without it, then
             it starts again and rejoins every ISR;
    replace  kill -9, its data directory wiped (a new disk), started again under
             the same id: it must copy every replica back before it is in sync.
    Then leave and replace alternate."""
    st = args.state
    phase = st.get("phase", "join")
    b = c.brokers[MEMBER]
    if phase == "join":
        wl.fault("join", broker=MEMBER)
        c.start_broker(MEMBER)
        c.wait_formed(args.recover_timeout)
        topic2 = _second_topic(c, args, rng)
        wl2 = c.workload(topic2, args.partitions + 1, wl.dir.parent / "history-joined", producers=1,
                         consumers=1, rate=60, producer_args=list(PRODUCER_ARGS), max_seconds=wl.max_seconds)
        wl2.fault("start", topic=topic2, partitions=args.partitions + 1, brokers=len(c.ids))
        st["extra"] = [(topic2, args.partitions + 1, wl2)]
        wl2.start()
        wl2.wait_acked(5, args.recover_timeout, what=f"on {topic2}, placed on broker {MEMBER}")
        wl.fault("joined", broker=MEMBER, topic=topic2)
        st["phase"] = "leave"
        return
    topic2, parts2, wl2 = st["extra"][0]
    if phase == "leave":
        wl.fault("shutdown", broker=MEMBER)
        code = c.stop(MEMBER, timeout=args.recover_timeout)
        if code != 0:
            raise AssertionError(f"broker {MEMBER} exited {code} after SIGTERM")
        for t, n, w in ((topic, args.partitions, wl), (topic2, parts2, wl2)):
            w.wait_acked(5, args.recover_timeout, what=f"on {t} with broker {MEMBER} shut down")
        sleep_until(time.monotonic() + rng.uniform(1, 4))
        c.start_broker(MEMBER)
        wl.fault("restart", broker=MEMBER)
        st["phase"] = "replace"
    else:
        wl.fault("replace", broker=MEMBER, wiped=str(b.data_dir))
        c.kill(MEMBER)
        shutil.rmtree(b.data_dir, ignore_errors=True)
        for t, n, w in ((topic, args.partitions, wl), (topic2, parts2, wl2)):
            w.wait_acked(5, args.recover_timeout, what=f"on {t} with broker {MEMBER} gone")
        c.start_broker(MEMBER)
        wl.fault("replaced", broker=MEMBER)
        st["phase"] = "leave"
    c.wait_formed(args.recover_timeout)
    c.wait_topic(topic2, parts2, RF, timeout=args.recover_timeout)
    wl2.wait_acked(5, args.recover_timeout, what=f"on {topic2} with broker {MEMBER} back")


def _second_topic(c, args, rng) -> str:
    """A topic with broker MEMBER in every replica set, then one more partition
    that MEMBER leads (CreatePartitions with an explicit assignment)."""
    from confluent_kafka.admin import NewPartitions, NewTopic

    from clients import unique_topic
    name = unique_topic("joined")
    originals = [i for i in c.ids if i != MEMBER]
    assignment = []
    for p in range(args.partitions):
        two = rng.sample(originals, RF - 1)
        r = [MEMBER, *two]
        assignment.append(r[p % RF:] + r[:p % RF])  # MEMBER first (preferred) in some partitions only
    futs = c.admin().create_topics([NewTopic(name, len(assignment), replica_assignment=assignment,
                                             config={"min.insync.replicas": str(MIN_ISR)})],
                                   operation_timeout=30)
    futs[name].result(timeout=30)
    c.wait_topic(name, args.partitions, RF, timeout=args.recover_timeout)
    extra = [[MEMBER, *rng.sample(originals, RF - 1)]]
    futs = c.admin().create_partitions([NewPartitions(name, args.partitions + 1, replica_assignment=extra)],
                                       operation_timeout=30)
    futs[name].result(timeout=30)
    c.wait_topic(name, args.partitions + 1, RF, timeout=args.recover_timeout)
    return name


# --------------------------------------------------------------------------------------
# scenarios


@dataclass
class Scenario:
    name: str
    steps: list
    doc: str
    netns: bool = False
    brokers: int = 3
    start: Optional[list] = None  # brokers started at the beginning (default: all)
    cluster: dict = field(default_factory=dict)


SCENARIOS = {s.name: s for s in [
    Scenario("leader-kill", [leader_kill], "kill -9 the leader of a random partition, restart it"),
    Scenario("controller-kill", [controller_kill], "kill -9 the controller, restart it"),
    Scenario("pause", [follower_pause, leader_pause],
             "SIGSTOP a follower or a leader beyond the lag time / lease, then SIGCONT"),
    Scenario("isolate-one", [isolate_one], "one broker (a leader or the controller) cut from everyone",
             netns=True),
    Scenario("split-pair", [split_pair],
             "{x} | {y, z}, clients reach both sides; x a leader or the controller", netns=True),
    Scenario("ring", [ring], "one link cut, 1 <-> 2 <-> 3 but not 1 <-> 3", netns=True),
    Scenario("loss", [loss], "1/5/10/30 % packet loss on every broker-to-broker link", netns=True),
    Scenario("clock-skew", [clock_skew],
             "restart a broker under libfaketime: wall clock +-1..10 min, rate 0.9..1.1"),
    Scenario("membership", [membership],
             "a 4th broker joins (new topic + CreatePartitions on it), shuts down, is replaced",
             brokers=4, start=[1, 2, 3]),
]}
SCENARIOS["all"] = Scenario(
    "all", [leader_kill, controller_kill, follower_pause, leader_pause, isolate_one, split_pair, ring, loss,
            clock_skew],
    "a random mix of every scenario's fault (membership excepted: it needs a 4th broker)", netns=True)


def run_scenario(name: str, seed: int, faults: int, workdir: Path, interval=(3.0, 6.0), partitions: int = 3,
                 producers: int = 2, consumers: int = 1, rate: float = 200, recover_timeout: float = 90,
                 producer_args=PRODUCER_ARGS, on_cluster: Optional[Callable] = None) -> dict:
    """One seeded run of scenario `name` with `faults` faults (see the module doc).
    Never raises for what the cluster did: a run that could not finish has ok=False
    and an "error"; the summary always carries the panics found in broker logs."""
    from cluster import Cluster

    sc = SCENARIOS[name]
    rng = random.Random(seed)
    args = SimpleNamespace(partitions=partitions, recover_timeout=recover_timeout, state={})
    result = {"scenario": name, "seed": seed, "faults_planned": faults, "ok": False,
              "config": {"interval": list(interval), "partitions": partitions, "producers": producers,
                         "consumers": consumers, "rate": rate, "brokers": sc.brokers, "netns": sc.netns,
                         "producer_args": list(producer_args)}}
    workdir = Path(workdir)
    t0 = time.monotonic()
    c = None
    wl = None
    done = 0
    try:
        c = Cluster(workdir / "cluster", n=sc.brokers, netns=sc.netns, cluster=sc.cluster or None)
        if on_cluster is not None:
            on_cluster(c)
        c.start(only=sc.start)
        max_seconds = faults * (interval[1] + 4 * recover_timeout) + 600
        with recorded_run(c, workdir / "history", seed, partitions, producers=producers, consumers=consumers,
                          rate=rate, producer_args=producer_args, prefix=f"matrix-{name}",
                          max_seconds=max_seconds) as (topic, wl):
            wl.max_seconds = max_seconds
            try:
                next_at = time.monotonic()
                for _ in range(faults):
                    sleep_until(next_at)
                    step = rng.choice(sc.steps)
                    done += 1
                    _log(f"{name} fault {done}/{faults}: {step.__name__}; acked {wl.acked()}")
                    step(c, wl, topic, args, rng)
                    next_at = time.monotonic() + rng.uniform(*interval)
                    # every replica back in sync before the next fault: each must be survivable
                    c.wait_topic(topic, partitions, RF, timeout=recover_timeout)
                runs = [(topic, partitions, wl)] + args.state.get("extra", [])
                for t, n, w in runs:
                    c.wait_topic(t, n, RF, timeout=recover_timeout)
                    w.wait_acked(5, recover_timeout, what="after the last fault")
                counts = {k: 0 for k in SAFETY}
                info = {"acked": 0, "sends": 0, "polls": 0, "drained": 0}
                drain_ok = True
                examples = {}
                for t, n, w in runs:
                    w.stop()
                    drain = w.drain()
                    drain_ok &= drain.returncode == 0
                    report = w.check()
                    for k, v in report.safety.items():
                        counts[k] += v
                    for k in info:
                        info[k] += report.info.get(k, 0)
                    for k, v in report.examples.items():
                        examples.setdefault(k, []).extend(v)
                    if not report.ok:
                        print(f"seed={seed} scenario={name}\nfault schedule:\n" + "\n".join(wl.schedule),
                              flush=True)
                cuts = _cut_figures(wl.schedule)
                if cuts:
                    result["cuts"] = cuts
                times = [f for f in failovers(wl) if f["seconds"] is not None]
                secs = [f["seconds"] for f in times]
                result.update(counts=counts, info=info, examples=examples, drain_ok=drain_ok,
                              failover={"n": len(secs), "p50_s": percentile(secs, 50),
                                        "p99_s": percentile(secs, 99)})
                result["ok"] = drain_ok and all(v == 0 for v in counts.values())
            finally:
                result["schedule"] = list(wl.schedule)
                for _, _, w in args.state.get("extra", []):
                    w.close()
    except Exception as e:  # noqa: BLE001 -- whatever ended the run, the summary says it
        result["error"] = f"{type(e).__name__}: {e}"
        _log(f"{name} seed={seed}: RUN FAILED after {done} faults: {str(e)[:4000]}")
        if c is not None:
            try:
                _log(c.describe())
            except Exception:  # the description is a courtesy
                pass
            _log(c.log_tails(30))
    finally:
        if c is not None:
            panics = c.panics()
            result["panics"] = len(panics)
            if panics:
                result["panic_lines"] = panics[:20]
                result["ok"] = False
                _log("broker panics:\n" + "\n".join(panics[:20]))
            try:
                c.close()
            except AssertionError as e:
                result.setdefault("error", str(e))
                result["ok"] = False
        result["faults"] = done
        result["elapsed_s"] = round(time.monotonic() - t0, 1)
    return result


def _cut_figures(schedule: list[str]) -> Optional[dict]:
    """What clients saw of the cuts of isolate_one / split_pair: writes acknowledged
    during each cut, and how long after each cut writes went on on every partition."""
    during = [int(m.group(1)) for ln in schedule for m in [re.search(r" acked_during_cut=(\d+)", ln)] if m]
    resumed = [float(m.group(1)) for ln in schedule for m in [re.search(r" after_cut_s=([\d.]+)", ln)] if m]
    if not resumed:
        return None
    return {"n": len(resumed), "cuts_with_no_ack": sum(1 for d in during if d == 0),
            "resumed_p50_s": percentile(resumed, 50), "resumed_max_s": max(resumed),
            "acked_during_cut": during, "resumed_after_s": resumed}


def format_summary(r: dict) -> str:
    """The checker's counts of one run, each with N (operations, faults) beside it."""
    info = r.get("info", {})
    n = (f"N: {info.get('acked', 0)} acknowledged writes of {info.get('sends', 0)} sends, "
         f"{info.get('polls', 0)} reads, {info.get('drained', 0)} drained; {r.get('faults', 0)} faults")
    counts = r.get("counts")
    lines = [f"scenario={r['scenario']} seed={r['seed']} {'PASSED' if r['ok'] else 'FAILED'} "
             f"in {r.get('elapsed_s', 0):.0f} s", f"  {n}"]
    labels = [("lost", "acknowledged writes lost"), ("duplicates", "duplicates"),
              ("inconsistent_offsets", "inconsistent offsets"), ("non_monotonic_reads", "non-monotonic reads"),
              ("unseen", "unseen writes")]
    if counts is not None:
        for k, label in labels:
            lines.append(f"  {label:<28} {counts[k]}")
        rest = {k: v for k, v in counts.items() if k not in dict(labels)}
        lines.append("  other safety counts         " + ", ".join(f"{k}={v}" for k, v in rest.items()))
    else:
        lines.append("  (no checker counts: the run did not reach the check)")
    lines.append(f"  {'broker panics':<28} {r.get('panics', 'unknown')}")
    if r.get("cuts"):
        k = r["cuts"]
        lines.append(f"  cuts: {k['n']}, {k['cuts_with_no_ack']} with no write acknowledged while they lasted; "
                     f"writes on every partition again {k['resumed_p50_s']:.1f} s (median), "
                     f"{k['resumed_max_s']:.1f} s (max) after the cut")
    if r.get("error"):
        lines.append(f"  error: {r['error'][:500]}")
    lines.append(f"  replay: python3 tests/chaos/matrix.py {r['scenario']} --seed {r['seed']} "
                 f"--faults {r.get('faults_planned')}")
    return "\n".join(lines)
