"""Log compaction on a real broker: a compacted topic keeps exactly the latest
value per key at its original offset, tombstoned keys disappear once
delete.retention.ms has passed, and a kill -9 while the cleaner is swapping
segments leaves a log that is readable and still exactly right."""

from __future__ import annotations

import os
import time

import pytest

from clients import DeliveryLog, create_topic, flush_all, producer, read_partitions, unique_topic, watermarks
from harness import wait_until

KEYS = 1000
UPDATES = 100_000
TOMBSTONED = 100
SEGMENT = 65536
DELETE_RETENTION_MS = 1500


def key(k: int) -> bytes:
    return b"key-%04d" % k


def produce(p, topic: str, dl: DeliveryLog, written: dict, items: list):
    """Produces (key, value) pairs (value None = tombstone) and records, for every
    acknowledged one, what was written at which offset."""
    start = len(written)
    for i, (k, v) in enumerate(items):
        p.produce(topic, key=k, value=v, partition=0, on_delivery=dl.callback(start + i))
        if i % 20000 == 19999:
            p.poll(0)
    flush_all(p)
    assert not dl.errors, f"delivery errors: {list(dl.errors.items())[:5]}"
    for i, (k, v) in enumerate(items):
        _, offset = dl.ok[start + i]
        written[offset] = (k, v)


def latest_model(written: dict) -> dict:
    """Key -> latest value, tombstoned keys absent."""
    model = {}
    for offset in sorted(written):
        k, v = written[offset]
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v
    return model


def read_all(b, topic):
    _, hi = watermarks(b.bootstrap, topic)
    got = read_partitions(b.bootstrap, topic, {0: hi}, timeout=60)[0]
    return got, hi


def check_log(b, topic, written: dict, tombstones_gone: bool, fully_compacted: bool = False) -> int:
    """Consumes the whole partition and compares it with what was written; returns how
    many records it holds. With fully_compacted, no key may appear twice below the
    active segment (the last segment file's base offset)."""
    active_base = int(b.segments(topic)[-1].stem)
    got, hi = read_all(b, topic)
    offsets = [s.offset for s in got]
    assert offsets == sorted(set(offsets)), "offsets must be unique and increasing"
    assert offsets[-1] == hi - 1
    for s in got:
        assert written[s.offset] == (s.key, s.value), f"offset {s.offset} holds something never written there"
    seen = {}
    for s in got:
        if s.value is None:
            seen.pop(s.key, None)
        else:
            seen[s.key] = s.value
    assert seen == latest_model(written)
    if tombstones_gone:
        dead = {k for k, v in written.values() if v is None}
        assert not [s.offset for s in got if s.key in dead], "tombstoned keys still present"
    if fully_compacted:
        below = [s.key for s in got if s.offset < active_base]
        assert len(below) == len(set(below)), "a key appears twice in compacted segments"
    return len(got)


def cleaner_files(b, topic) -> list:
    names = os.listdir(b.partition_dir(topic))
    return [n for n in names if n.endswith(".cleaned") or n.endswith(".swap")]


@pytest.mark.timeout(120)
def test_compaction_keeps_latest_per_key_and_survives_kill_during_cleaning(broker_factory, rng):
    b = broker_factory(sets={"log.retention_check_interval_ms": 200})
    topic = unique_topic("compact")
    create_topic(b.bootstrap, topic, 1, config={
        "cleanup.policy": "compact",
        "segment.bytes": str(SEGMENT),
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(DELETE_RETENTION_MS),
    })
    p = producer(b.bootstrap, **{"linger.ms": 20, "batch.num.messages": 500, "compression.codec": "lz4"})
    dl = DeliveryLog()
    written: dict = {}

    # 100k updates over 1k keys; 100 keys are tombstoned part way, and later updates
    # only touch the other keys, so the tombstones end up in closed segments.
    dead = set(rng.sample(range(KEYS), TOMBSTONED))
    live = [k for k in range(KEYS) if k not in dead]
    first = UPDATES * 9 // 10
    items = [(key(rng.randrange(KEYS)), b"v%06d" % i) for i in range(first)]
    items += [(key(k), None) for k in sorted(dead)]
    items += [(key(rng.choice(live)), b"v%06d" % i) for i in range(first + TOMBSTONED, UPDATES)]
    produce(p, topic, dl, written, items)
    # The cleaner may already be merging segments while the producer runs, so the
    # amount written is judged from what was produced, not from the segments left.
    raw = sum(len(k) + len(v or b"") for k, v in items)
    assert raw > 20 * SEGMENT, "the workload must span many segments uncompacted"

    # The cleaner catches up: few segments and one record per key below the active one,
    # and once delete.retention.ms has passed the tombstones are gone as well.
    def compacted():
        segs = b.segments(topic)
        total = sum(s.stat().st_size for s in segs)
        return len(segs) <= 6 and total < 4 * SEGMENT and (len(segs), total)

    wait_until(compacted, 30, "the cleaner to compact the log")
    time.sleep(DELETE_RETENTION_MS / 1000 + 0.5)

    def tombstones_removed():
        try:
            return check_log(b, topic, written, tombstones_gone=True, fully_compacted=True)
        except AssertionError:
            return None

    held = wait_until(tombstones_removed, 30, "tombstones to be removed after delete.retention.ms",
                      interval=0.5)
    print(f"{UPDATES} updates over {KEYS} keys compacted to {held} records")
    check_log(b, topic, written, tombstones_gone=True, fully_compacted=True)

    # Keep writing updates and kill -9 the broker while the cleaner is swapping segments.
    caught = None
    for round_ in range(40):
        more = [(key(rng.choice(live)), b"w%02d-%05d" % (round_, i)) for i in range(8000)]
        produce(p, topic, dl, written, more)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            files = cleaner_files(b, topic)
            if files:
                caught = files
                break
        if caught:
            break
    assert caught, "never saw the cleaner's .cleaned/.swap files"
    b.kill()
    print(f"killed the broker while these cleaner files existed: {caught}")

    b.start()
    assert cleaner_files(b, topic) == [], "recovery must complete or discard the interrupted swap"
    check_log(b, topic, written, tombstones_gone=True)

    # The cleaner carries on after the restart: new updates are compacted and the log
    # stays exact.
    more = [(key(rng.choice(live)), b"after-%05d" % i) for i in range(8000)]
    produce(p, topic, dl, written, more)

    def compacted_again():
        try:
            return check_log(b, topic, written, tombstones_gone=True, fully_compacted=True)
        except AssertionError:
            return None

    wait_until(compacted_again, 30, "the cleaner to compact again after the restart", interval=0.5)
    assert "compaction failed" not in b.stderr_text()
