"""Power loss (docs/reliability.md, "Power loss").

- The CI cut of tests/chaos/power_loss.py: three whole-cluster power cuts (every broker
  SIGKILLed at once, each data directory rewritten from its sync ledger as a power loss
  leaves it, the cluster started again) with the durable settings
  (log.flush_interval_messages = 1): no acknowledged write lost, every safety count 0,
  and writes acknowledged again after every cut.
- The power cut itself: a single broker with the default settings and no periodic fsync
  during the test, records acknowledged with acks=1 after the last fsync; SIGKILL and a
  power cut drop exactly them. A consumer then sees exactly the records from before the
  last fsync, and the log takes new writes at the next offset. Each way the unsynced tail
  can be left (cut off, zeroed, garbage) is recovered from.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from clients import create_topic, flush_all, producer, read_partitions, unique_topic, watermarks

CHAOS = Path(__file__).resolve().parent.parent / "chaos"
sys.path.insert(0, str(CHAOS))

import powercut  # noqa: E402

CUTS = 3


@pytest.mark.timeout(150)
def test_durable_settings_lose_no_acknowledged_write_over_whole_cluster_power_cuts(tmp_path):
    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, str(CHAOS / "power_loss.py"), "--cuts", str(CUTS), "--settings",
                          "durable", "--seed", "20261207", "--dir", str(tmp_path / "run"), "--json", str(out)],
                         capture_output=True, text=True, timeout=140)
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    print(tail)
    result = json.loads(out.read_text())
    assert result.get("error") is None, tail
    assert result["counts"] == {k: 0 for k in result["counts"]}, tail
    assert result["loss"]["lost"] == 0 and result["loss"]["drain_complete"], tail
    assert result["loss"]["acked"] > 0 and result["panics"] == 0, tail
    assert result["cuts"] == CUTS and len(result["cut_reports"]) == CUTS, tail
    assert run.returncode == 0 and result["ok"], tail


def produce(bootstrap: str, topic: str, values: list[bytes]) -> list[int]:
    """acks=1, one partition; returns the acknowledged offsets in order."""
    acked = {}

    def cb(i):
        def done(err, msg):
            assert err is None, f"record {i} failed: {err}"
            acked[i] = msg.offset()
        return done
    p = producer(bootstrap, acks="1", **{"enable.idempotence": False})
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=0, on_delivery=cb(i))
    flush_all(p, 30)
    return [acked[i] for i in range(len(values))]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("tail_mode", ["truncate", "zero", "garbage"])
def test_power_cut_drops_exactly_what_was_not_fsynced(broker_factory, tmp_path, tail_mode):
    ledger = tmp_path / "sync-ledger"
    # fsync by time only, and not within the test: what is acknowledged after the last
    # clean shutdown is only in the page cache
    b = broker_factory(sets={"log.flush_interval_ms": 3600000},
                       env={"QUIVER_TEST_SYNC_LEDGER": str(ledger)})
    topic = unique_topic("powercut")
    create_topic(b.bootstrap, topic, 1)
    synced = [b"synced-%03d" % i for i in range(20)]
    assert produce(b.bootstrap, topic, synced) == list(range(20))
    assert b.stop() == 0  # a clean shutdown fsyncs everything
    segment = b.segments(topic)[-1]
    durable = segment.read_bytes()

    b.start()
    unsynced = [b"unsynced-%03d" % i for i in range(30)]
    assert produce(b.bootstrap, topic, unsynced) == list(range(20, 50))
    assert watermarks(b.bootstrap, topic) == (0, 50)
    b.kill()
    killed = segment.read_bytes()
    assert killed.startswith(durable) and b"unsynced-029" in killed  # a SIGKILL alone keeps them
    rep = powercut.cut(b.data_dir, ledger, tail_mode, random.Random(7))
    print(rep.line())
    after_cut = segment.read_bytes()
    assert after_cut[:len(durable)] == durable, "the cut touched fsynced bytes"
    if tail_mode == "truncate":
        assert after_cut == durable
    else:
        assert len(after_cut) == len(killed)
        assert after_cut[len(durable):] != killed[len(durable):]
        if tail_mode == "zero":
            assert after_cut[len(durable):] == bytes(len(killed) - len(durable))
    assert rep.truncated_files >= 1 and rep.unsynced_bytes >= len(killed) - len(durable)

    b.start()
    assert watermarks(b.bootstrap, topic) == (0, 20)
    seen = read_partitions(b.bootstrap, topic, {0: 20})[0]
    assert [(r.offset, r.value) for r in seen] == list(enumerate(synced))
    # the log recovered cleanly: new writes go on at the next offset and read back
    after = [b"after-%03d" % i for i in range(5)]
    assert produce(b.bootstrap, topic, after) == list(range(20, 25))
    seen = read_partitions(b.bootstrap, topic, {0: 25})[0]
    assert [(r.offset, r.value) for r in seen] == list(enumerate(synced + after))
