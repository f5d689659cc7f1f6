"""Startup recovery of a damaged active segment: the last batch is cut in
the middle and a byte of the batch before it is flipped while the broker is
down.  After a restart everything before the damage is served, nothing
after, and the broker takes new writes at the right offset."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition

import kproto
from clients import consumer, create_topic, flush_all, producer, read_partitions, unique_topic, watermarks


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_recovery_truncated_and_corrupted_tail(broker, how):
    topic = unique_topic(f"recov-{how}")
    create_topic(broker.bootstrap, topic, 1)
    base_ts = 1_700_000_000_000
    n, chunk = 2000, 50
    p = producer(broker.bootstrap, **{"linger.ms": 1000, "batch.num.messages": chunk})
    for i in range(n):
        p.produce(topic, key=b"k%d" % (i % 7), value=b"recov-%06d" % i, headers=[("i", b"%d" % i)],
                  partition=0, timestamp=base_ts + i)
        if i % chunk == chunk - 1:
            flush_all(p)  # one batch per chunk
    flush_all(p)
    assert watermarks(broker.bootstrap, topic) == (0, n)

    if how == "sigterm":
        assert broker.stop() == 0, "SIGTERM must stop the broker with exit code 0"
    else:
        broker.kill()

    seg = broker.segments(topic)[-1]
    data = seg.read_bytes()
    batches, left = kproto.scan_batches(data)
    assert left == 0 and len(batches) >= 3, f"{seg}: {len(batches)} batches, {left} stray bytes"
    last, victim = batches[-1], batches[-2]
    # cut the last batch in half, then flip one byte inside the records of the batch before it
    damaged = bytearray(data[:last.position + last.size // 2])
    flip_at = victim.position + kproto.BATCH_HEADER_BYTES + (victim.size - kproto.BATCH_HEADER_BYTES) // 2
    damaged[flip_at] ^= 0x40
    seg.write_bytes(bytes(damaged))
    good_end = victim.base_offset  # first offset that must be gone
    print(f"segment {seg.name}: {len(batches)} batches; cut batch {last.base_offset}..{last.last_offset} at "
          f"byte {last.position + last.size // 2}, flipped byte {flip_at} in batch "
          f"{victim.base_offset}..{victim.last_offset}; expect offsets 0..{good_end - 1}")

    broker.start()

    assert watermarks(broker.bootstrap, topic) == (0, good_end)
    got = read_partitions(broker.bootstrap, topic, {0: good_end})[0]
    assert [(s.offset, s.key, s.value, s.headers, s.timestamp) for s in got] == [
        (i, b"k%d" % (i % 7), b"recov-%06d" % i, [("i", b"%d" % i)], base_ts + i) for i in range(good_end)]

    # nothing is served at or after the damage
    with kproto.Conn.to(broker.bootstrap) as c:
        res = kproto.fetch_v4(c, topic, 0, good_end)
        assert res.error_code == kproto.NONE and res.high_watermark == good_end and res.records == b"", res

    # new writes continue at the first lost offset and read back; lookups by
    # the timestamp of a lost record find the new record, not the lost one
    p = producer(broker.bootstrap)
    now = int(time.time() * 1000)
    for j in range(10):
        p.produce(topic, key=b"new", value=b"after-%d" % j, partition=0, timestamp=now + j)
    flush_all(p)
    got = read_partitions(broker.bootstrap, topic, {0: good_end + 10}, start={0: good_end})[0]
    assert [(s.offset, s.value) for s in got] == [(good_end + j, b"after-%d" % j) for j in range(10)]
    c = consumer(broker.bootstrap)
    try:
        (tp,) = c.offsets_for_times([TopicPartition(topic, 0, base_ts + good_end)], timeout=10)
        assert tp.error is None and tp.offset == good_end, tp
        (tp,) = c.offsets_for_times([TopicPartition(topic, 0, base_ts + good_end - 1)], timeout=10)
        assert tp.error is None and tp.offset == good_end - 1, tp
    finally:
        c.close()

    # on disk: whole batches only, all CRCs valid, offsets contiguous
    all_batches = []
    for s in broker.segments(topic):
        bs, left = kproto.scan_batches(s.read_bytes())
        assert left == 0, f"{s.name} keeps {left} bytes of a torn batch"
        all_batches += bs
    assert all(b.crc_ok for b in all_batches), [b for b in all_batches if not b.crc_ok][:3]
    offs = [(b.base_offset, b.last_offset) for b in all_batches]
    assert offs[0][0] == 0 and offs[-1][1] == good_end + 9
    assert all(b[0] == a[1] + 1 for a, b in zip(offs, offs[1:])), offs
