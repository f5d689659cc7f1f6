"""Short (CI) versions of the cluster fault runs (issue 5, tests (a)-(e)).

Each run: three brokers, a topic with RF 3 and min.insync.replicas=2, two
idempotent confluent-kafka producers (acks=all) and a consumer recording their
histories (cluster_workload.py), one kind of fault, then heal, drain and check:
the history checker must count 0 acknowledged writes lost, 0 duplicates, 0
inconsistent offsets, 0 non-monotonic reads and 0 unseen writes (history.py).
Each run prints its seed (QUIVER_E2E_SEED=<n> replays it) and fault schedule.
Phases are bounded; a whole test takes about a minute.

(a) kill -9 the leader of a partition every 10-20 s (restarted once writes go on)
(b) kill -9 the controller
(c) cut the leader off from the other brokers (nftables, namespaces) while
    clients can still reach it: it acknowledges nothing, the others elect a
    leader, and after healing its log agrees with theirs
(d) SIGSTOP a follower beyond replica.lag.time.max.ms: the ISR shrinks, writes
    go on, it rejoins after SIGCONT
(e) two of three brokers down: acks=all fails with NOT_ENOUGH_REPLICAS, nothing
    is acknowledged, everything resumes when one returns
"""

from __future__ import annotations

import os
import time

import pytest

import kproto
from faultkit import (failovers, finish_and_check, pick_follower, recorded_run, sleep_until,
                      summarize_failovers)
from history import Recorder
from test_metrics import scrape, value

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 3
KILLS = int(os.environ.get("QUIVER_E2E_SMOKE_KILLS", "2"))
KILL_INTERVAL = tuple(float(x) for x in os.environ.get("QUIVER_E2E_KILL_INTERVAL", "10,20").split(","))
LAG_MS = 3000  # cluster.FAST_TIMING replica_lag_time_max_ms


def test_a_leader_killed_every_10_to_20_seconds(cluster_factory, tmp_path, seed, rng):
    c = cluster_factory(3)
    with recorded_run(c, tmp_path / "history", seed, PARTITIONS) as (topic, wl):
        next_kill = time.monotonic()
        for k in range(KILLS):
            sleep_until(next_kill)
            p = rng.randrange(PARTITIONS)
            leader = c.wait_leader(topic, p)
            wl.fault("kill", broker=leader, topic=topic, p=p, role="leader")
            c.kill(leader)
            next_kill = time.monotonic() + rng.uniform(*KILL_INTERVAL)
            new = c.wait_leader(topic, p, exclude=[leader], timeout=30)
            wl.fault("elected", broker=new, topic=topic, p=p)
            wl.wait_acked(10, 30, partitions=[p], what=f"on partition {p} after its leader {leader} was killed")
            c.restart(leader)
            wl.fault("restart", broker=leader)
            # every replica back in sync before the next kill: the next one must be survivable
            c.wait_topic(topic, PARTITIONS, 3, timeout=60)
        finish_and_check(c, wl, topic, PARTITIONS, seed)
        times = failovers(wl)
        print(summarize_failovers(times))
        assert len(times) == KILLS and all(t["seconds"] is not None for t in times), times


def test_b_controller_killed(cluster_factory, tmp_path, seed, rng):
    c = cluster_factory(3)
    with recorded_run(c, tmp_path / "history", seed, PARTITIONS) as (topic, wl):
        for k in range(2):
            ctrl = c.wait_controller()
            wl.fault("kill", broker=ctrl, role="controller")
            c.kill(ctrl)
            new = c.wait_controller(exclude=[ctrl], timeout=30)
            wl.fault("elected_controller", broker=new)
            # the killed broker also led partitions: all of them must take writes again
            wl.wait_acked(10, 30, what=f"after controller {ctrl} was killed")
            time.sleep(rng.uniform(0, 2))  # schedule: vary how long the old controller stays down
            c.restart(ctrl)
            wl.fault("restart", broker=ctrl)
            c.wait_formed()
            c.wait_topic(topic, PARTITIONS, 3, timeout=60)
        finish_and_check(c, wl, topic, PARTITIONS, seed)


def _probe_produce(host: str, port: int, topic: str, p: int, value: bytes):
    """One acks=all Produce v3 straight to one broker: (error code or the exception
    that ended the attempt, base offset); error code 0 means acknowledged."""
    batch = kproto.encode_batch([kproto.Record(b"probe", value, headers=[("w", b"probe")])])
    try:
        with kproto.Conn(host, port, timeout=12) as conn:
            res = kproto.produce_v3(conn, topic, p, batch, acks=-1, timeout_ms=5000)
            return res.error_code, res.base_offset
    except (OSError, ConnectionError, ValueError) as e:
        return repr(e), -1


def test_c_isolated_leader_acknowledges_nothing_and_truncates_after_healing(cluster_factory, tmp_path, seed, rng):
    # a short preferred-leader rebalance so that after healing leadership goes back to
    # the old leader, and the final drain reads the partition from its (truncated) log
    c = cluster_factory(3, netns=True, cluster={"leader_rebalance_interval_ms": 2000})
    topo = c.topology
    with recorded_run(c, tmp_path / "history", seed, PARTITIONS) as (topic, wl):
        p = rng.randrange(PARTITIONS)
        leader = c.leader_of(topic, p)
        preferred = c.replicas_of(topic, p)[0]
        others = [i for i in c.ids if i != leader]
        wl.fault("isolate", broker=leader, topic=topic, p=p, cut_from=others)
        topo.isolate(f"b{leader}", peers=[f"b{i}" for i in others])
        cut = time.time()

        # the majority side elects another leader and goes on
        new = c.wait_leader(topic, p, exclude=[leader], via=others[0], timeout=30)
        wl.fault("elected", broker=new, topic=topic, p=p)
        # (clients that still ask the old leader for metadata take a while to learn of this)
        wl.wait_acked(10, 60, partitions=[p], what=f"on partition {p} on the majority side")

        # the old leader, still reachable by clients, must not acknowledge an acks=all
        # write; the probe's record goes into the history like any other send
        probe = Recorder(wl.dir / "probe.jsonl", "probe")
        value = "probe-00000000"
        probe.write("send", s=0, topic=topic, p=p, k="probe", v=value, h=[["w", "probe"]])
        b = c.broker(leader)
        code, offset = c.call(_probe_produce, b.host, b.port, topic, p, value.encode())
        if code == 0:
            probe.write("ack", s=0, v=value, topic=topic, p=p, o=offset)
        else:
            probe.write("fail", s=0, v=value, topic=topic, p=p, err=str(code), definite=False)
        probe.close()
        wl.fault("probe", broker=leader, result=kproto.error_name(code) if isinstance(code, int) else code)
        assert code != 0, f"the isolated leader {leader} acknowledged an acks=all write"

        # hold the partition well past the lease and lag timeouts (the schedule's clock)
        sleep_until(time.monotonic() + rng.uniform(2, 5))
        wl.fault("heal", broker=leader, isolated_for=round(time.time() - cut, 1))
        topo.heal(f"b{leader}")
        c.wait_isr(topic, p, lambda isr: leader in isr, 60, f"to include {leader} again")
        if leader == preferred:
            back = c.wait_leader(topic, p, exclude=[i for i in c.ids if i != leader], timeout=60)
            wl.fault("leader_again", broker=back, topic=topic, p=p)
            wl.wait_acked(10, 30, partitions=[p], what=f"with {leader} leading {p} again")
        finish_and_check(c, wl, topic, PARTITIONS, seed)


def test_d_paused_follower_leaves_and_rejoins_the_isr(cluster_factory, tmp_path, seed, rng):
    c = cluster_factory(3)
    with recorded_run(c, tmp_path / "history", seed, PARTITIONS) as (topic, wl):
        p = rng.randrange(PARTITIONS)
        follower = pick_follower(c, topic, p)
        wl.fault("pause", broker=follower, topic=topic, p=p)
        c.pause(follower)
        paused_at = time.monotonic()
        isr = c.wait_isr(topic, p, lambda isr: follower not in isr and len(isr) >= 2, 30,
                         f"to drop the paused follower {follower}")
        wl.fault("isr_shrunk", topic=topic, p=p, isr=isr, after=round(time.monotonic() - paused_at, 1))
        c.wait(lambda: {"topic": topic, "partition": p} in c.status()["under_replicated"], 10,
               f"/v1/cluster to list {topic}/{p} as under-replicated")
        # The leader counts the shrink once it applies it, and /metrics shows the
        # partition under-replicated as /v1/cluster does.
        leader = c.leader_of(topic, p)
        metric = lambda name, **labels: value(scrape(c.broker(leader))[0], name, **labels)  # noqa: E731
        c.wait(lambda: metric("quiver_isr_shrinks_total") >= 1, 10, f"broker {leader} to count the ISR shrink")
        c.wait(lambda: metric("quiver_partition_isr_size", topic=topic, partition=p) == len(isr), 10,
               f"broker {leader} to report {topic}/{p}'s ISR as {isr}")
        assert metric("quiver_cluster_partitions", state="under_replicated") >= 1
        expands_before = metric("quiver_isr_expands_total")
        # min.insync.replicas=2 still holds: writes go on, on every partition (the
        # paused broker's own leaderships move away once its lease runs out)
        wl.wait_acked(10, 30, what="with the follower paused")
        sleep_until(paused_at + LAG_MS / 1000 + rng.uniform(1, 3))
        wl.fault("resume", broker=follower)
        c.resume(follower)
        c.wait_isr(topic, p, lambda isr: follower in isr, 60, f"to take {follower} back")
        c.wait(lambda: not any(u["topic"] == topic for u in c.status()["under_replicated"]), 60,
               f"{topic} to be fully replicated again")
        if c.leader_of(topic, p) == leader:
            c.wait(lambda: metric("quiver_isr_expands_total") > expands_before, 10,
                   f"broker {leader} to count the ISR expansion")
        finish_and_check(c, wl, topic, PARTITIONS, seed)


def test_e_two_of_three_down_refuse_acks_all_then_resume(cluster_factory, tmp_path, seed, rng):
    c = cluster_factory(3)
    with recorded_run(c, tmp_path / "history", seed, PARTITIONS) as (topic, wl):
        p = rng.randrange(PARTITIONS)
        survivor = c.leader_of(topic, p)
        down = [i for i in c.ids if i != survivor]
        rng.shuffle(down)
        # both at once, so that the ISR has no time to shrink between the two
        for i in down:
            wl.fault("kill", broker=i)
            c.kill(i)
        t_down = time.time()

        # a producer without retries on the survivor's partition sees the refusal itself
        wl.add_producer("probe", ["--no-idempotence", "--retries", "0", "--rate", "5",
                                  "--only-partition", str(p), "--message-timeout-ms", "10000",
                                  "--request-timeout-ms", "5000"])

        def refused():
            wl.poll_progress()
            return wl.errors_by["probe"]["NOT_ENOUGH_REPLICAS"]
        c.wait(refused, 30, f"a NOT_ENOUGH_REPLICAS answer on partition {p} led by {survivor}")
        wl.fault("refused", broker=survivor, topic=topic, p=p, errors=dict(wl.errors_by["probe"]))
        sleep_until(time.monotonic() + rng.uniform(1, 3))  # the outage goes on a while

        # nothing acknowledged while two of three were down (1 s for acks already on the wire)
        t_return = time.time()
        during = wl.acks_between(t_down + 1.0, t_return)
        assert during == [], f"{len(during)} writes acknowledged with two of three brokers down, e.g. {during[:5]}"

        back = down[0]
        c.start_broker(back)
        wl.fault("restart", broker=back)
        wl.wait_acked(10, 60, what=f"after broker {back} returned")
        c.start_broker(down[1])
        wl.fault("restart", broker=down[1])
        c.wait_formed()
        finish_and_check(c, wl, topic, PARTITIONS, seed)
