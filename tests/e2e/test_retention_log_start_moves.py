"""Retention by size deletes whole old segments; the log start offset moves
and consumers asking for deleted offsets are reset (earliest) or get
OFFSET_OUT_OF_RANGE (auto.offset.reset=error)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

import kproto
from clients import admin, consumer, create_topic, flush_all, producer, read_partitions, unique_topic, watermarks
from harness import wait_until

SEGMENT = 16384
RETAIN = 65536


def log_sizes(broker, topic):
    segs = broker.segments(topic)
    return [(int(s.stem), s.stat().st_size) for s in segs]


@pytest.mark.timeout(180)
def test_retention_bytes_deletes_old_segments_and_moves_log_start(broker_factory):
    b = broker_factory(sets={"log.retention_check_interval_ms": 200})
    topic = unique_topic("ret")
    create_topic(b.bootstrap, topic, 1, config={"segment.bytes": str(SEGMENT), "retention.bytes": str(RETAIN)})

    n = 4000
    p = producer(b.bootstrap, **{"linger.ms": 1000, "batch.num.messages": 20})
    for i in range(n):
        p.produce(topic, value=b"ret-%06d-" % i + b"x" * 180, partition=0)
        if i % 20 == 19:
            flush_all(p)  # ~4 KB batches, several per segment
    flush_all(p)

    def retained():
        sizes = log_sizes(b, topic)
        total = sum(size for _, size in sizes)
        lo, hi = watermarks(b.bootstrap, topic)
        if lo > 0 and total <= RETAIN + SEGMENT and sizes and sizes[0][0] == lo:
            return lo, hi, len(sizes), total
        return None

    lo, hi, nsegs, total = wait_until(retained, 30, "retention to delete old segments")
    print(f"log start {lo}, end {hi}, {nsegs} segments, {total} bytes")
    assert hi == n
    assert nsegs >= 2  # the active segment and at least one closed one are left
    with kproto.Conn.to(b.bootstrap) as c:
        assert kproto.list_offsets_v1(c, topic, 0, kproto.EARLIEST)[::2] == (0, lo)
        assert kproto.list_offsets_v1(c, topic, 0, kproto.LATEST)[::2] == (0, n)
        # the broker's own answer for a deleted offset
        res = kproto.fetch_v4(c, topic, 0, 0)
        assert res.error_code == kproto.OFFSET_OUT_OF_RANGE, f"fetch at 0: {kproto.error_name(res.error_code)}"
        res = kproto.fetch_v4(c, topic, 0, n + 100)
        assert res.error_code == kproto.OFFSET_OUT_OF_RANGE, f"fetch past the end: {kproto.error_name(res.error_code)}"

    # auto.offset.reset=earliest: assigned at 0, reset to the log start and read to the end
    got = read_partitions(b.bootstrap, topic, {0: n}, start={0: 0}, **{"auto.offset.reset": "earliest"})[0]
    assert [s.offset for s in got] == list(range(lo, n))
    assert [s.value for s in got] == [b"ret-%06d-" % i + b"x" * 180 for i in range(lo, n)]

    # auto.offset.reset=error: the consumer reports the out-of-range error
    c = consumer(b.bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        err = None
        while err is None:
            assert time.monotonic() < deadline, "no error from a consumer positioned before the log start"
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is not None, f"consumer at a deleted offset got a record at {m.offset()}"
            err = m.error()
        # librdkafka reports a broker OFFSET_OUT_OF_RANGE under auto.offset.reset=error as
        # _AUTO_OFFSET_RESET carrying the broker's error text
        assert err.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET), repr(err)
        assert "Offset out of range" in err.str(), repr(err)
    finally:
        c.close()


@pytest.mark.timeout(120)
def test_retention_ms_deletes_old_segments(broker_factory):
    b = broker_factory(sets={"log.retention_check_interval_ms": 200})
    topic = unique_topic("ret-ms")
    create_topic(b.bootstrap, topic, 1, config={"segment.bytes": str(SEGMENT)})
    old = int(time.time() * 1000) - 3_600_000  # an hour ago
    p = producer(b.bootstrap, **{"linger.ms": 1000, "batch.num.messages": 20})
    for i in range(400):
        p.produce(topic, value=b"old-%04d-" % i + b"y" * 180, partition=0, timestamp=old + i)
        if i % 20 == 19:
            flush_all(p)
    flush_all(p)
    assert len(b.segments(topic)) >= 3
    # nothing expires while retention.ms is the default (7 days)
    assert watermarks(b.bootstrap, topic) == (0, 400)

    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)])
    a = admin(b.bootstrap)  # keep the client alive until its futures resolve
    a.incremental_alter_configs([res])[res].result(timeout=30)

    # every closed segment is older than a minute: all but the active one go
    def moved():
        lo = watermarks(b.bootstrap, topic)[0]
        segs = b.segments(topic)
        return lo > 0 and segs and lo == int(segs[0].stem) and lo

    # the log start offset moves to the base offset of the first remaining segment
    wait_until(moved, 30, "log start offset to move to the first remaining segment")
    assert watermarks(b.bootstrap, topic)[1] == 400
