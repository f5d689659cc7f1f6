"""A tenant's quota is cluster-wide: brokers report their tenant usage to the
controller with their heartbeats and each enforces its share, so a tenant producing
to partitions led by three brokers gets its quota in total, not three times it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import securitykit as sk
from flood_producer import Flood, rate

QUOTA = 30_000_000  # bytes per second, the tenant's in total


def flood(c, topic: str, partitions: int, seconds: float, log: Path):
    """Runs a flood producer over `partitions` partitions for `seconds`; returns each
    delivered record's (seconds since start, bytes, partition)."""
    f = Flood(log, {"bootstrap.servers": c.bootstrap}, topic, seconds, partitions, launcher=c.client_popen)
    try:
        f.wait(timeout=seconds + 90)
    finally:
        f.kill()
    start, delivered, errors = f.read()
    assert not errors, f"records failed ({errors[:5]}); a quota throttles, it never refuses"
    return [(t - start, n, p) for t, n, p in delivered]


@pytest.mark.timeout(300)
def test_a_tenant_gets_its_quota_in_total_across_three_brokers(cluster_factory, tmp_path):
    c = cluster_factory(3)
    admin = c.broker(1)
    # Without authentication every client is User:ANONYMOUS: make that the tenant's.
    sk.cli(admin, "tenant", "create", "acme", "--prefix", "acme.", "--principal", "User:ANONYMOUS")
    topic = "acme.events"
    c.create_topic(topic, 3, rf=1, config={"min.insync.replicas": "1"})
    leaders = {p: c.leader_of(topic, p) for p in range(3)}
    assert sorted(leaders.values()) == [1, 2, 3], f"each partition led by its own broker: {leaders}"

    # What the producer does unthrottled, so the quota below is known to bind.
    free = flood(c, topic, 3, 6, tmp_path / "free.log")
    unthrottled = rate(free, 1, 6)
    assert unthrottled >= 1.5 * QUOTA, (
        f"the producer reaches only {unthrottled / 1e6:.1f} MB/s unthrottled; the test needs more than "
        f"{1.5 * QUOTA / 1e6:.0f} MB/s to show the quota")

    sk.cli(admin, "quota", "set", "--tenant", "acme", "--producer-byte-rate", str(QUOTA))
    c.wait(lambda: all(
        json.loads(sk.cli(c.broker(i), "quota", "list", "--json").stdout)["quotas"]
        == [{"entity": {"tenant": "acme"}, "values": {"producer_byte_rate": float(QUOTA)}}] for i in c.ids),
        30, "every broker to know the tenant quota")

    # The first seconds go to the brokers learning each other's usage (they report it with
    # their heartbeats, every 250 ms); the total is measured over the 17 s after.
    settle, seconds = 3, 20
    delivered = flood(c, topic, 3, seconds, tmp_path / "quota.log")
    achieved = rate(delivered, settle, seconds)
    per_partition = {p: rate(delivered, settle, seconds, p) for p in range(3)}
    print(f"tenant over 3 brokers: unthrottled {unthrottled / 1e6:.1f} MB/s; with a {QUOTA / 1e6:.0f} MB/s "
          f"cluster-wide quota {achieved / 1e6:.2f} MB/s in total "
          f"({', '.join(f'broker {leaders[p]} {r / 1e6:.1f}' for p, r in per_partition.items())})")
    assert abs(achieved - QUOTA) <= 0.15 * QUOTA, f"{achieved / 1e6:.2f} MB/s, quota {QUOTA / 1e6:.0f} MB/s in total"
    # The share follows the traffic: each broker enforces about a third.
    for p, r in per_partition.items():
        assert 0.2 * QUOTA <= r <= 0.5 * QUOTA, (p, r / 1e6)
