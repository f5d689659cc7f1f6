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


# The first of the producer ids the broker keeps for its own writers (transform outputs).
INTERNAL_PRODUCER_IDS = 1 << 62


@pytest.mark.timeout(60)
def test_badinput_forged_internal_producer_id_is_refused(broker):
    """A batch carrying one of the broker's own producer ids (which InitProducerId never
    hands out) is refused per partition with INVALID_REQUEST and its reason, and nothing
    of that partition's records is written; the other partitions of the request are
    written as usual."""
    name = unique_topic("forged")
    create_topic(broker.bootstrap, name, 3)
    forged = INTERNAL_PRODUCER_IDS + 1
    client = INTERNAL_PRODUCER_IDS - 1  # the highest id a client may write with

    def batch(tag, producer_id):
        return kproto.encode_batch(records(2, tag), producer_id=producer_id, producer_epoch=0, base_sequence=0)

    with kproto.Conn.to(broker.bootstrap) as c:
        before = kproto.produce_v8(c, name, {0: batch(b"before", client)})
        assert [(p.partition, p.error_code, p.base_offset) for p in before] == [(0, 0, 0)], before
        got = kproto.produce_v8(c, name, {
            0: batch(b"forged", forged),
            # a client's batch followed by a forged one: the partition's records are refused whole
            1: batch(b"mixed", client) + batch(b"forged", forged),
            2: batch(b"fine", client),
        })
        reason = (f"producer id {forged} is reserved for the broker's own writers (ids from "
                  f"{INTERNAL_PRODUCER_IDS} on); a producer id comes from InitProducerId")
        assert [(p.partition, p.error_code, p.base_offset, p.error_message) for p in got] == [
            (0, kproto.INVALID_REQUEST, -1, reason),
            (1, kproto.INVALID_REQUEST, -1, reason),
            (2, kproto.NONE, 0, None),
        ], got
        ends = [kproto.list_offsets_v1(c, name, p, kproto.LATEST) for p in range(3)]
    assert [(err, offset) for err, _, offset in ends] == [(0, 2), (0, 0), (0, 2)], ends
    got = read_partitions(broker.bootstrap, name, {0: 2, 2: 2})
    assert {p: [s.value for s in got[p]] for p in (0, 2)} == {
        0: [b"before-0", b"before-1"], 2: [b"fine-0", b"fine-1"]}


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
