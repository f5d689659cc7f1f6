"""Hostile clients against a broker with small connection limits: the load program
tests/chaos/hostile.py at CI scale (1,000 idle connections, a few of each attack)
while a healthy client produces and consumes. The broker must not panic, must close
every bad connection (refusing those over kafka.max_connections and
kafka.max_connections_per_ip at once), must keep its memory within what its settings
allow, and must keep serving the healthy client. Malformed single frames are covered
one by one in test_badinput_frames.py; this is everything at once, plus the limits.

The new settings' validation errors are checked here too, by the message a user sees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource

from clients import admin

HOSTILE = Path(__file__).resolve().parent.parent / "chaos" / "hostile.py"

LIMITS = {
    "kafka.max_connections": 200,
    "kafka.max_connections_per_ip": 150,
    "kafka.connections_max_idle_ms": 3000,
    "kafka.request_timeout_ms": 2000,
    "group.initial_rebalance_delay_ms": 0,
}


@pytest.mark.timeout(120)
def test_hostile_clients_at_ci_scale(broker_factory, tmp_path):
    b = broker_factory(sets=LIMITS)
    out = tmp_path / "hostile.json"
    run = subprocess.run(
        [sys.executable, str(HOSTILE), "--small", "--bootstrap", b.bootstrap, "--admin", b.admin,
         "--broker-pid", str(b.proc.pid), "--broker-log", str(b.stderr_path),
         "--max-connections", "200", "--max-connections-per-ip", "150",
         "--idle-ms", "3000", "--request-timeout-ms", "2000", "--json", str(out)],
        capture_output=True, text=True, timeout=110)
    report = f"--- hostile.py stdout ---\n{run.stdout[-4000:]}\n--- stderr ---\n{run.stderr[-2000:]}"
    assert out.exists(), report
    r = json.loads(out.read_text())
    assert r["failures"] == [], report
    assert run.returncode == 0, report
    assert r["broker_panics"] == 0 and b.panics() == [], report
    assert r["broker_alive"] and b.alive(), report

    kinds = r["bad_connections"]["by_kind"]
    assert r["bad_connections"]["closed"] == r["bad_connections"]["n"], report
    # every attack ran, and each of its connections was closed by the broker
    for kind in ("random", "huge", "truncated", "slowloris", "unread", "idle", "burst"):
        assert kinds[kind]["n"] > 0 and kinds[kind]["closed"] == kinds[kind]["n"], (kind, report)
    assert kinds["idle"]["n"] == 1000, report
    # a trickled frame is cut off at the request timeout, not the idle timeout
    assert kinds["slowloris"]["max_close_s"] < 2.0 + 1.5, report

    reasons = r["closed_by_reason"]
    # 1,000 idle connections from one address, 150 allowed per address: some 850 are
    # refused as they arrive (a few more are let in when other attacks' connections
    # close meanwhile), and the burst's connections past 200 in all (checked below)
    assert reasons.get("limit", 0) >= 850, report
    assert r["burst"]["limit_closes_during_burst"] >= 50, report
    assert r["burst"]["burst_refused_within_1s"] >= 50, report
    assert reasons.get("idle", 0) >= 150, report  # the admitted idle ones, after 3 s
    assert reasons.get("slow", 0) >= 3, report  # the slow-loris connections at least

    # valid requests at absurd sizes get Kafka's answers
    absurd = r["absurd"]
    assert absurd["produce_max_frame"] == "answered, error MESSAGE_TOO_LARGE(10)", report
    assert absurd["fetch_2GiB"].startswith("answered, error NONE(0)"), report
    assert absurd["metadata_100k_topics"] == \
        "answered, 100000 topics, errors ['UNKNOWN_TOPIC_OR_PARTITION(3)']", report

    rss = r["rss"]
    assert rss["peak_hwm_kib"] <= rss["bound_kib"], report
    # the listener never held more than its limit
    assert rss["peak_open_connections"] <= 200, report

    healthy = r["healthy"]
    assert healthy["attack"]["n"] > 0 and healthy["attack"]["errors"] == 0, report
    assert healthy["baseline"]["errors"] == 0, report
    assert healthy["acked"] == healthy["sent"] == healthy["consumed"] and healthy["in_order"], report

    # the broker still serves a new client once the attack is over
    md = admin(b.bootstrap).list_topics(timeout=10)
    assert len(md.brokers) == 1


def test_hostile_limits_are_reported_by_describe_configs(broker_factory):
    b = broker_factory(sets=LIMITS)
    res = ConfigResource(ConfigResource.Type.BROKER, "0")
    client = admin(b.bootstrap)  # kept: the future fails if its client is collected
    configs = client.describe_configs([res])[res].result(timeout=10)
    assert configs["max.connections"].value == "200"
    assert configs["max.connections.per.ip"].value == "150"
    assert configs["connections.max.idle.ms"].value == "3000"


INVALID = [
    ("kafka.max_connections", "0", "must be between 1 and 1000000"),
    ("kafka.max_connections", "2000000", "must be between 1 and 1000000"),
    ("kafka.max_connections_per_ip", "20000",
     "must be 0 (no limit per address) or at most kafka.max_connections"),
    ("kafka.connections_max_idle_ms", "10", "must be between 100 (0.1 s) and 604800000 (7 days)"),
    ("kafka.request_timeout_ms", "0", "must be between 100 (0.1 s) and 3600000 (1 hour)"),
    ("kafka.request_timeout_ms", "soon", "request_timeout_ms"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key,value,reason", INVALID, ids=[f"{k}={v}" for k, v, _ in INVALID])
def test_hostile_limit_settings_are_validated(broker_factory, key, value, reason):
    b = broker_factory(sets={key: value}, start=False)
    proc = b.spawn()
    code = proc.wait(timeout=30)
    err = b.stderr_text()
    assert code != 0, err
    if value.isdigit():
        assert f'invalid value "{value}" for `{key}`: {reason}' in err, err
    else:
        assert reason in err, err
