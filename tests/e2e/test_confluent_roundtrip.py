"""confluent-kafka (librdkafka 2.16: Metadata v13, Produce v10, Fetch v16
with topic IDs): 100k keyed records with headers over 6 partitions read back
exactly; offsets by timestamp."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TopicPartition

from clients import DeliveryLog, consumer, create_topic, flush_all, producer, read_partitions, unique_topic

N = 100_000
PARTITIONS = 6


@pytest.mark.timeout(240)
def test_confluent_100k_keyed_records_over_6_partitions(broker, rng):
    topic = unique_topic("ck-6p")
    create_topic(broker.bootstrap, topic, PARTITIONS)

    base_ts = int(time.time() * 1000) - 3_600_000
    records = []
    for i in range(N):
        key = f"user-{rng.randrange(5000)}".encode()
        value = f"{i}:{rng.getrandbits(64):016x}".encode() * rng.randrange(1, 4)
        headers = [("seq", str(i).encode()), ("src", b"ck"), ("empty", b"")]
        records.append((key, value, headers, base_ts + i))

    log = DeliveryLog()
    p = producer(broker.bootstrap, acks="all", **{"compression.codec": "lz4"})
    for i, (k, v, h, ts) in enumerate(records):
        while True:
            try:
                p.produce(topic, key=k, value=v, headers=h, timestamp=ts, on_delivery=log.callback(i))
                break
            except BufferError:
                p.poll(0.1)
        if i % 5000 == 0:
            p.poll(0)
    flush_all(p)
    assert not log.errors, f"{len(log.errors)} delivery errors, e.g. {list(log.errors.items())[:3]}"
    assert len(log.ok) == N

    # the producer partitions by key: one key, one partition
    part_of_key = {}
    for i, (k, *_rest) in enumerate(records):
        part = log.ok[i][0]
        assert part_of_key.setdefault(k, part) == part, f"key {k} went to partitions {part_of_key[k]} and {part}"
    used = {part for part, _ in log.ok.values()}
    assert used == set(range(PARTITIONS)), f"records landed only in partitions {used}"

    # per partition, acknowledged offsets are 0..n-1 in produce order
    expected = {part: [] for part in range(PARTITIONS)}
    for i in range(N):
        part, off = log.ok[i]
        expected[part].append((off, i))
    for part, rows in expected.items():
        offs = [off for off, _ in rows]
        assert offs == list(range(len(offs))), f"partition {part}: acked offsets not 0..{len(offs) - 1} in produce order"

    got = read_partitions(broker.bootstrap, topic, {part: len(rows) for part, rows in expected.items()})
    for part, rows in expected.items():
        seen = got[part]
        assert [s.offset for s in seen] == [off for off, _ in rows], f"partition {part}: offsets differ"
        for s, (off, i) in zip(seen, rows):
            k, v, h, ts = records[i]
            assert (s.key, s.value, s.headers, s.timestamp, s.timestamp_type) == (k, v, h, ts, TIMESTAMP_CREATE_TIME), (
                f"partition {part} offset {off}: got {s}, want record #{i} {(k, v, h, ts)}")


@pytest.mark.timeout(120)
def test_confluent_offsets_for_times(broker):
    topic = unique_topic("ck-times")
    create_topic(broker.bootstrap, topic, 2)
    base = 1_650_000_000_000
    n = 3000
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    for i in range(n):
        # partition 0: base + 10*i; partition 1: base + 10*i + 5
        p.produce(topic, value=b"%d" % i, partition=0, timestamp=base + 10 * i)
        p.produce(topic, value=b"%d" % i, partition=1, timestamp=base + 10 * i + 5)
        if i % 100 == 99:
            p.flush(30)  # several batches per partition
    flush_all(p)

    c = consumer(broker.bootstrap)
    try:
        cases = [
            (0, base, 0), (0, base - 1, 0), (0, base + 10 * 1234, 1234), (0, base + 10 * 1234 + 1, 1235),
            (1, base + 10 * 1234, 1234), (1, base + 10 * 1234 + 5, 1234), (1, base + 10 * 1234 + 6, 1235),
            (0, base + 10 * (n - 1), n - 1),
            (0, base + 10 * n, -1),  # after the last record: no offset (end)
        ]
        for part, ts, want in cases:
            (tp,) = c.offsets_for_times([TopicPartition(topic, part, ts)], timeout=10)
            assert tp.error is None, f"p{part} ts={ts}: {tp.error}"
            assert tp.offset == want, f"partition {part} timestamp {ts}: offset {tp.offset}, want {want}"
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
        assert (lo, hi) == (0, n)
    finally:
        c.close()
