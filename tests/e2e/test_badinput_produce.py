"""Produce requests with bad record batches, built by hand, get the exact
Kafka error and append nothing; a correct hand-built batch is accepted and
reads back through a real client (so the bad cases differ only in the flaw)."""

from __future__ import annotations

import time

import pytest

import kproto
from clients import create_topic, read_partitions, unique_topic, watermarks
from traffic import HealthyTraffic


def records(n, tag):
    now = int(time.time() * 1000)
    return [kproto.Record(b"key-%d" % i, b"%s-%d" % (tag, i), [("h", b"v%d" % i)], now + i) for i in range(n)]


@pytest.fixture
def topic(broker):
    name = unique_topic("raw")
    create_topic(broker.bootstrap, name, 1)
    return name


@pytest.mark.timeout(60)
def test_badinput_valid_handmade_batch_is_accepted(broker, topic):
    recs = records(5, b"good")
    with kproto.Conn.to(broker.bootstrap) as c:
        res = kproto.produce_v3(c, topic, 0, kproto.encode_batch(recs))
        assert (res.error_code, res.base_offset) == (0, 0), kproto.error_name(res.error_code)
        res = kproto.produce_v3(c, topic, 0, kproto.encode_batch(recs))
        assert (res.error_code, res.base_offset) == (0, 5), kproto.error_name(res.error_code)
        fetched = kproto.fetch_v4(c, topic, 0, 0)
        assert fetched.error_code == 0 and fetched.high_watermark == 10
        batches, _ = kproto.scan_batches(fetched.records)
        assert [(b.base_offset, b.records_count, b.crc_ok) for b in batches] == [(0, 5, True), (5, 5, True)]
    got = read_partitions(broker.bootstrap, topic, {0: 10})[0]
    assert [(s.offset, s.key, s.value, s.headers, s.timestamp) for s in got] == [
        (j * 5 + i, r.key, r.value, r.headers, r.timestamp) for j in range(2) for i, r in enumerate(recs)]


@pytest.mark.timeout(60)
def test_badinput_wrong_crc_is_corrupt_message(broker, topic):
    with HealthyTraffic(broker.bootstrap) as h:
        with kproto.Conn.to(broker.bootstrap) as c:
            res = kproto.produce_v3(c, topic, 0, kproto.encode_batch(records(3, b"bad-crc"), corrupt_crc=True))
            assert res.error_code == kproto.CORRUPT_MESSAGE, kproto.error_name(res.error_code)
            # same connection, correct batch: accepted at offset 0 (nothing was appended before)
            res = kproto.produce_v3(c, topic, 0, kproto.encode_batch(records(3, b"ok")))
            assert (res.error_code, res.base_offset) == (0, 0), kproto.error_name(res.error_code)
        h.wait_progress(20)
    assert watermarks(broker.bootstrap, topic) == (0, 3)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("delta", [1, -1, 1000])
def test_badinput_lying_record_count_is_rejected(broker, topic, delta):
    with HealthyTraffic(broker.bootstrap) as h:
        recs = records(4, b"lie")
        batch = kproto.encode_batch(recs, records_count=len(recs) + delta)  # CRC valid over the lie
        with kproto.Conn.to(broker.bootstrap) as c:
            res = kproto.produce_v3(c, topic, 0, batch)
            print(f"record count {len(recs) + delta} for {len(recs)} records -> {kproto.error_name(res.error_code)}")
            assert res.error_code in (kproto.CORRUPT_MESSAGE, kproto.INVALID_RECORD), kproto.error_name(res.error_code)
        h.wait_progress(20)
    assert watermarks(broker.bootstrap, topic) == (0, 0), "a rejected batch must not be appended"


@pytest.mark.timeout(60)
def test_badinput_produce_to_missing_topic_without_auto_create(broker_factory):
    b = broker_factory(sets={"kafka.auto_create_topics": "false"})
    missing = unique_topic("missing")
    with HealthyTraffic(b.bootstrap) as h:
        with kproto.Conn.to(b.bootstrap) as c:
            res = kproto.produce_v3(c, missing, 0, kproto.encode_batch(records(2, b"x")))
            assert res.error_code == kproto.UNKNOWN_TOPIC_OR_PARTITION, kproto.error_name(res.error_code)
            md = kproto.metadata_v1(c, [missing])
            assert md[missing].error_code == kproto.UNKNOWN_TOPIC_OR_PARTITION, md
            assert missing not in kproto.metadata_v1(c, None), "metadata with auto-create off created the topic"
            # a partition that does not exist of a topic that does
            res = kproto.produce_v3(c, h.topic, 7, kproto.encode_batch(records(2, b"x")))
            assert res.error_code == kproto.UNKNOWN_TOPIC_OR_PARTITION, kproto.error_name(res.error_code)
        h.wait_progress(20)
    assert not b.partition_dir(missing).exists()


@pytest.mark.timeout(60)
def test_auto_create_on_metadata_when_enabled(broker):
    name = unique_topic("auto")
    with kproto.Conn.to(broker.bootstrap) as c:
        deadline = time.monotonic() + 30
        while True:
            md = kproto.metadata_v1(c, [name])
            if md[name].error_code == 0 and md[name].partitions:
                break
            # LEADER_NOT_AVAILABLE while the topic is being created is what Kafka answers
            assert md[name].error_code in (0, 5), kproto.error_name(md[name].error_code)
            assert time.monotonic() < deadline, md
            time.sleep(0.05)
        assert [p for _e, p in md[name].partitions] == [0]
        res = kproto.produce_v3(c, name, 0, kproto.encode_batch(records(1, b"auto")))
        assert (res.error_code, res.base_offset) == (0, 0)
