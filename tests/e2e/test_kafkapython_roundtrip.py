"""kafka-python 3.0 with its defaults (it infers the broker version from the
advertised API ranges, and its default producer is idempotent, so it sends
InitProducerId): produce, manual-assign consume, admin round trip."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from clients import unique_topic
from harness import wait_until

N = 5000


def admin_client(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)


@pytest.mark.timeout(120)
def test_kafkapython_default_producer_and_assigned_consumer(broker, rng):
    topic = unique_topic("kp")
    a = admin_client(broker.bootstrap)
    try:
        a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        a.close()

    prod = KafkaProducer(bootstrap_servers=broker.bootstrap)  # defaults on purpose
    base_ts = int(time.time() * 1000) - 60_000
    sent = []
    futures = []
    for i in range(N):
        key = f"k{rng.randrange(100)}".encode()
        value = f"kp-{i}-{rng.getrandbits(32):08x}".encode()
        headers = [("i", str(i).encode()), ("lib", b"kafka-python")]
        sent.append((key, value, headers, base_ts + i))
        futures.append(prod.send(topic, key=key, value=value, headers=headers, timestamp_ms=base_ts + i))
    prod.flush(timeout=60)
    metas = [f.get(timeout=30) for f in futures]
    prod.close(timeout=10)

    by_part = {}
    for i, m in enumerate(metas):
        by_part.setdefault(m.partition, []).append((m.offset, i))
    for part, rows in by_part.items():
        assert [o for o, _ in rows] == list(range(len(rows))), f"partition {part}: acked offsets not contiguous from 0"

    cons = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        cons.assign(tps)
        cons.seek_to_beginning(*tps)
        got = {p: [] for p in range(3)}
        want_n = {p: len(by_part.get(p, [])) for p in range(3)}
        deadline = time.monotonic() + 60
        while any(len(got[p]) < want_n[p] for p in range(3)):
            assert time.monotonic() < deadline, f"read {[len(v) for v in got.values()]} of {want_n}"
            for tp, recs in cons.poll(timeout_ms=500).items():
                got[tp.partition] += recs
    finally:
        cons.close()

    for part, rows in by_part.items():
        seen = got[part]
        assert len(seen) == len(rows), f"partition {part}: read {len(seen)} records, expected {len(rows)}"
        for r, (off, i) in zip(seen, rows):
            key, value, headers, ts = sent[i]
            assert (r.offset, r.key, r.value, list(r.headers), r.timestamp) == (off, key, value, headers, ts), (
                f"partition {part}: got {r}, want offset {off} {sent[i]}")


@pytest.mark.timeout(60)
def test_kafkapython_admin_create_list_delete(broker):
    a = admin_client(broker.bootstrap)
    try:
        names = [unique_topic("kpa"), unique_topic("kpa")]
        a.create_topics([NewTopic(n, num_partitions=2, replication_factor=1) for n in names])
        wait_until(lambda: set(names) <= set(a.list_topics()), 30, "created topics listed")
        described = {t.get("name", t.get("topic")): t for t in a.describe_topics(names)}
        for n in names:
            assert described[n]["error_code"] == 0, described[n]
            assert sorted(p.get("partition_index", p.get("partition")) for p in described[n]["partitions"]) == [0, 1]

        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([NewTopic(names[0], num_partitions=1, replication_factor=1)])

        a.delete_topics([names[0]])
        wait_until(lambda: names[0] not in a.list_topics(), 30, f"{names[0]} gone")
        assert names[1] in a.list_topics()

        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics([names[0]])
    finally:
        a.close()
