"""Shared steps of the cluster fault runs (the CI smoke tests in
test_cluster_faults.py and the long run in tests/chaos/long_run.py): a topic
with RF 3 and min.insync.replicas=2, a recorded workload on it, and the end of
every run -- heal, wait until every replica is back in sync, stop, drain, check."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from clients import unique_topic
from history import failover_times, load, percentile

RF = 3
MIN_ISR = 2


@contextmanager
def recorded_run(c, dir: Path, seed: int, partitions: int = 3, producers: int = 2, consumers: int = 1,
                 rate: float = 300, producer_args=(), prefix: str = "faults", max_seconds: float = 600):
    """Creates the topic, starts the workload and waits for it to be acknowledged
    on every partition; yields (topic, workload); kills the workload's processes
    on the way out whatever happened."""
    topic = unique_topic(prefix)
    c.create_topic(topic, partitions, rf=RF, config={"min.insync.replicas": str(MIN_ISR)})
    wl = c.workload(topic, partitions, dir, producers=producers, consumers=consumers, rate=rate,
                    producer_args=list(producer_args), max_seconds=max_seconds)
    wl.fault("start", seed=seed, topic=topic, partitions=partitions, brokers=len(c.ids))
    try:
        wl.start()
        wl.wait_acked(10, 60, what="before the first fault")
        yield topic, wl
    finally:
        wl.close()


def finish_and_check(c, wl, topic: str, partitions: int, seed: int, settle_timeout: float = 60):
    """After the last fault is healed: every replica back in the ISR, writes
    acknowledged on every partition again, then stop, drain and judge the history.
    Returns the checker's report; fails with the seed and the fault schedule if any
    safety count is not 0."""
    c.wait_topic(topic, partitions, RF, timeout=settle_timeout)
    wl.wait_acked(10, settle_timeout, what="after the faults were healed")
    wl.stop()
    drain = wl.drain()
    report = wl.check()
    schedule = "\n".join(wl.schedule)
    print(f"seed={seed}\nfault schedule:\n{schedule}", flush=True)
    assert drain.returncode == 0, f"the final drain did not read every partition to its high watermark:\n" \
                                  f"{wl.stderr_tail('drain')}"
    assert report.ok, f"seed={seed}\nfault schedule:\n{schedule}\n{report.format()}"
    assert report.info["acked"] > 0 and report.info["drain_incomplete"] == 0
    return report


def failovers(wl) -> list[dict]:
    """Failover time of every recorded leader kill (kill -> first acks=all write
    made after it acknowledged on that partition)."""
    events, _ = load(wl.history_files())
    return failover_times(events)


def summarize_failovers(times: list[dict]) -> str:
    secs = [t["seconds"] for t in times if t["seconds"] is not None]
    if not secs:
        return "failover: no kills measured"
    p50, p99 = percentile(secs, 50), percentile(secs, 99)
    never = sum(1 for t in times if t["seconds"] is None)
    return (f"failover (kill -9 -> first acks=all write acknowledged): n={len(secs)} p50={p50:.2f}s "
            f"p99={p99:.2f}s max={max(secs):.2f}s" + (f" never={never}" if never else ""))


def pick_follower(c, topic: str, p: int) -> int:
    """A follower of topic/p, preferring one that is not the controller (so the
    fault hits replication, not the controller)."""
    leader = c.leader_of(topic, p)
    followers = [r for r in c.replicas_of(topic, p) if r != leader]
    try:
        ctrl = c.controller()
    except AssertionError:
        ctrl = None
    followers.sort(key=lambda r: r == ctrl)
    return followers[0]


def sleep_until(t: float):
    """Waits for a point of the fault schedule (not for readiness: the schedule is
    the experiment's clock)."""
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)
