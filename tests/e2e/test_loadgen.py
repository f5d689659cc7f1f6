"""quiver-loadgen (the benchmarks' load generator) against a real broker: what its
JSON line says it wrote and read is what the topic holds.

The binary is QUIVER_LOADGEN, else `quiver-loadgen` next to QUIVER_BIN (tests/run
builds the whole workspace in release, so it is there)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time

import pytest

from clients import read_partitions, unique_topic, watermarks
from harness import quiver_bin

N = 20_000
SIZE = 200
PARTITIONS = 3


def loadgen_bin() -> str:
    path = os.environ.get("QUIVER_LOADGEN") or os.path.join(os.path.dirname(quiver_bin()), "quiver-loadgen")
    if not os.access(path, os.X_OK):
        pytest.fail(f"quiver-loadgen not found at {path} (set QUIVER_LOADGEN or build the workspace)",
                    pytrace=False)
    return path


def run(*args: str) -> tuple[dict, str]:
    p = subprocess.run([loadgen_bin(), *args], capture_output=True, text=True, timeout=120)
    lines = p.stdout.strip().splitlines()
    assert lines, f"no output; exit {p.returncode}; stderr:\n{p.stderr}"
    line = json.loads(lines[-1])
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return line, p.stdout


def test_produce_then_consume_counts_match_the_topic(broker):
    topic = unique_topic("loadgen")
    t0 = time.time_ns()
    produced, text = run("produce", "--bootstrap", broker.bootstrap, "--topic", topic,
                         "--partitions", str(PARTITIONS), "--records", str(N), "--size", str(SIZE),
                         "--keys", "seq", "--acks", "all", "--producers", "2", "--compression", "lz4")
    t1 = time.time_ns()
    assert produced["mode"] == "produce" and produced["ok"] is True, produced
    assert produced["records"] == N and produced["requested"] == N and produced["errors"] == 0
    assert produced["bytes"] == N * SIZE
    assert produced["msgs_per_s"] > 0 and produced["mb_per_s"] > 0
    lat = produced["latency_ms"]
    assert lat["count"] == N and 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert "latency (send to ack" in text and "counts check: ok" in text

    ends = {p: watermarks(broker.bootstrap, topic, p) for p in range(PARTITIONS)}
    assert all(lo == 0 for lo, _ in ends.values())
    assert sum(hi for _, hi in ends.values()) == N
    assert all(hi > 0 for _, hi in ends.values()), f"keyed records all went to one partition: {ends}"

    # Every record is in the topic: keys 0..N-1 once each, every value SIZE bytes whose
    # header carries its sequence (= its key) and a send time within the run.
    got = read_partitions(broker.bootstrap, topic, {p: hi for p, (_, hi) in ends.items()})
    seen = {}
    for p, records in got.items():
        assert [r.offset for r in records] == list(range(ends[p][1]))
        for r in records:
            assert len(r.value) == SIZE
            ts, seq = struct.unpack(">QQ", r.value[:16])
            assert int(r.key) == seq
            assert t0 <= ts <= t1
            seen[seq] = seen.get(seq, 0) + 1
    assert sorted(seen) == list(range(N)) and set(seen.values()) == {1}

    consumed, _ = run("consume", "--bootstrap", broker.bootstrap, "--topic", topic, "--consumers", "2")
    assert consumed["mode"] == "consume" and consumed["ok"] is True, consumed
    assert consumed["records"] == N and consumed["requested"] == N and consumed["present_at_start"] == N
    assert consumed["bytes"] == N * SIZE
    assert consumed["duplicates"] == 0 and consumed["offset_gaps"] == 0
    assert consumed["partitions"] == PARTITIONS


def test_consume_reports_missing_records_instead_of_a_rate(broker):
    topic = unique_topic("loadgen-short")
    run("produce", "--bootstrap", broker.bootstrap, "--topic", topic, "--partitions", "1",
        "--records", "100", "--size", "50")
    p = subprocess.run([loadgen_bin(), "consume", "--bootstrap", broker.bootstrap, "--topic", topic,
                        "--records", "150", "--idle-timeout", "1"], capture_output=True, text=True, timeout=60)
    line = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 1, p.stdout
    assert line["ok"] is False and line["records"] == 100
    assert line["problems"] == ["read 100 of 150 records (no record for 1 s)"]
    assert "COUNTS CHECK FAILED: read 100 of 150 records" in p.stdout
