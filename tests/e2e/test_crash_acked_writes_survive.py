"""kill -9 of the broker in the middle of an acks=1 stream: after a restart
every acknowledged record is there, at its acknowledged offset, in order,
exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clients import ack_log, create_topic, read_partitions, unique_topic, watermarks
from harness import wait_until

PARTITIONS = 3


def outcomes(path: Path):
    return ack_log(path)


@pytest.mark.timeout(240)
def test_crash_kill9_mid_stream_keeps_every_acked_record(broker, tmp_path):
    topic = unique_topic("crash")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    out_path, stop_path = tmp_path / "acks.txt", tmp_path / "stop"

    prod = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bg_producer.py")), broker.bootstrap,
                             topic, str(PARTITIONS), str(out_path), str(stop_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(outcomes(out_path)[0]) >= 20_000, 60, "20000 acknowledged records before the crash")
        broker.kill()
        acked_at_kill = len(outcomes(out_path)[0])
        broker.start()
        wait_until(lambda: len(outcomes(out_path)[0]) >= acked_at_kill + 20_000, 90,
                   "20000 more acknowledged records after the restart")
        stop_path.touch()
        prod_out, _ = prod.communicate(timeout=60)
        assert prod.returncode == 0, prod_out.decode(errors="replace")
    finally:
        if prod.poll() is None:
            prod.kill()
            prod.wait()

    ok, errs, done = outcomes(out_path)
    assert done, "background producer did not finish cleanly"
    print(f"acked={len(ok)} failed={len(errs)} acked_at_kill={acked_at_kill}")

    ends = {p: watermarks(broker.bootstrap, topic, p)[1] for p in range(PARTITIONS)}
    log = read_partitions(broker.bootstrap, topic, ends)

    lost, inconsistent, dups, gaps, unordered = [], [], [], [], []
    at = {}
    seen_values = {}
    for p, recs in log.items():
        offs = [r.offset for r in recs]
        if offs != list(range(len(offs))):
            gaps.append((p, offs[:3], len(offs)))
        for r in recs:
            at[(p, r.offset)] = r.value
            seen_values.setdefault(r.value, []).append((p, r.offset))
    dups = {v: where for v, where in seen_values.items() if len(where) > 1}
    for i, (p, off) in ok.items():
        want = b"crash-%08d" % i
        got = at.get((p, off))
        if got is None:
            lost.append((i, p, off))
        elif got != want:
            inconsistent.append((i, p, off, got))
    for p in range(PARTITIONS):
        acked = sorted((i, off) for i, (pp, off) in ok.items() if pp == p)
        offs = [off for _, off in acked]
        if offs != sorted(offs) or len(set(offs)) != len(offs):
            unordered.append(p)
    counts = dict(lost=len(lost), inconsistent=len(inconsistent), duplicates=len(dups),
                  offset_gaps=len(gaps), unordered_partitions=len(unordered))
    print("checker:", counts)
    assert counts == dict(lost=0, inconsistent=0, duplicates=0, offset_gaps=0, unordered_partitions=0), (
        f"{counts}; lost e.g. {lost[:5]}; inconsistent e.g. {inconsistent[:5]}; duplicates e.g. "
        f"{list(dups.items())[:5]}; gaps {gaps[:3]}; unordered partitions {unordered}")
    # every value in the log is one the producer sent
    assert all(v.startswith(b"crash-") for v in seen_values)
