"""Idempotent producers (confluent-kafka and kafka-python, with their default
idempotence) keep producing while the broker is killed with kill -9 and restarted
twice: afterwards the log holds every acknowledged record exactly once, at its
acknowledged offset, and no record twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clients import ack_log, create_topic, read_partitions, unique_topic, watermarks
from harness import wait_until

PARTITIONS = 3


def outcomes(path: Path):
    return ack_log(path, err_as_int=False)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("lib", ["confluent", "kafka-python"])
def test_idempotent_producer_survives_two_broker_kills_exactly_once(broker, tmp_path, lib):
    topic = unique_topic("idem")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    out_path, stop_path = tmp_path / "acks.txt", tmp_path / "stop"
    prod = subprocess.Popen([sys.executable, str(Path(__file__).with_name("idem_producer.py")), lib,
                             broker.bootstrap, topic, str(PARTITIONS), str(out_path), str(stop_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        target = 3_000
        for _ in range(2):
            wait_until(lambda: len(outcomes(out_path)[0]) >= target, 90,
                       f"{target} acknowledged records before the kill")
            broker.kill()
            broker.start()
            target = len(outcomes(out_path)[0]) + 3_000
        wait_until(lambda: len(outcomes(out_path)[0]) >= target, 120,
                   f"{target} acknowledged records after the second restart")
        stop_path.touch()
        prod_out, _ = prod.communicate(timeout=150)
        assert prod.returncode == 0, prod_out.decode(errors="replace")
    finally:
        if prod.poll() is None:
            prod.kill()
            prod.wait()

    ok, errs, done = outcomes(out_path)
    assert done, "the producer did not finish"
    ends = {p: watermarks(broker.bootstrap, topic, p)[1] for p in range(PARTITIONS)}
    log = read_partitions(broker.bootstrap, topic, ends)
    where = {}
    duplicates = []
    for p, recs in log.items():
        assert [r.offset for r in recs] == list(range(len(recs))), f"offsets of partition {p} have gaps"
        for r in recs:
            if r.value in where:
                duplicates.append((r.value, where[r.value], (p, r.offset)))
            where[r.value] = (p, r.offset)
    lost = [i for i, at in ok.items() if where.get(b"%s-%08d" % (lib.encode(), i)) != at]
    print(f"{lib}: acked={len(ok)} failed={len(errs)} log={len(where)} "
          f"duplicates={len(duplicates)} lost_or_moved={len(lost)}")
    assert duplicates == [], f"records written twice, e.g. {duplicates[:5]}"
    assert lost == [], f"acknowledged records missing or elsewhere, e.g. {lost[:5]}"
    # Every record in the log is one the producer sent.
    assert all(v.startswith(lib.encode() + b"-") for v in where)
