"""confluent-kafka AdminClient: create / describe / alter / delete topics,
create partitions, describe configs, and the errors a client gets."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewPartitions,
                                   NewTopic)

from clients import admin, consumer, create_topic, flush_all, producer, read_partitions, unique_topic
from harness import wait_until

DEFAULTS = {
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "segment.bytes": "1073741824",
    "max.message.bytes": "1048588",
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "message.timestamp.type": "CreateTime",
}
TOPIC_KEYS = set(DEFAULTS) | {"segment.ms"}


def error_of(fut, timeout=30):
    with pytest.raises(KafkaException) as ei:
        fut.result(timeout=timeout)
    return ei.value.args[0]


def describe(a, topic) -> dict:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = a.describe_configs([res])[res].result(timeout=30)
    return entries


def source(entry) -> int:
    return int(getattr(entry.source, "value", entry.source))


DYNAMIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def values(entries) -> dict:
    return {k: e.value for k, e in entries.items()}


def topic_partitions(a, topic):
    md = a.list_topics(topic=topic, timeout=10)
    t = md.topics[topic]
    return t.error, sorted(t.partitions)


@pytest.mark.timeout(120)
def test_admin_topic_lifecycle(broker):
    a = admin(broker.bootstrap)
    topic = unique_topic("adm")

    # create with a config; the topic shows up with its partitions
    futs = a.create_topics([NewTopic(topic, 3, 1, config={"retention.ms": "3600000", "cleanup.policy": "delete"})])
    futs[topic].result(timeout=30)
    wait_until(lambda: topic_partitions(a, topic) == (None, [0, 1, 2]), 30, f"{topic} with 3 partitions")
    assert topic in a.list_topics(timeout=10).topics

    # creating it again: TOPIC_ALREADY_EXISTS
    err = error_of(a.create_topics([NewTopic(topic, 1, 1)])[topic])
    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS, err

    # describe configs: every documented key, the value we set, defaults for the rest
    entries = describe(a, topic)
    missing = TOPIC_KEYS - set(entries)
    assert not missing, f"DescribeConfigs lacks {sorted(missing)}; has {sorted(entries)}"
    got = values(entries)
    assert got["retention.ms"] == "3600000"
    assert source(entries["retention.ms"]) == DYNAMIC
    assert got["cleanup.policy"] == "delete"
    for k, v in DEFAULTS.items():
        if k not in ("retention.ms", "cleanup.policy"):  # the two set at creation
            assert got[k] == v, f"default {k}: got {got[k]!r}, want {v!r}"
            assert source(entries[k]) != DYNAMIC, (k, entries[k].source)

    # incremental alter: SET one key, others untouched
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res])[res].result(timeout=30)
    got = values(describe(a, topic))
    assert (got["retention.ms"], got["max.message.bytes"], got["cleanup.policy"]) == ("7200000", "2000000", "delete")

    # incremental DELETE reverts a key to its default
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([res])[res].result(timeout=30)
    got = values(describe(a, topic))
    assert got["retention.ms"] == DEFAULTS["retention.ms"]
    assert got["max.message.bytes"] == "2000000"

    # legacy AlterConfigs replaces the whole set of topic overrides (Kafka semantics)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"segment.bytes": "1048576"})
    a.alter_configs([res])[res].result(timeout=30)
    got = values(describe(a, topic))
    assert got["segment.bytes"] == "1048576"
    assert got["max.message.bytes"] == DEFAULTS["max.message.bytes"], "AlterConfigs must drop overrides not in the request"

    # create partitions 3 -> 6, and the new partitions take records
    a.create_partitions([NewPartitions(topic, 6)])[topic].result(timeout=30)
    wait_until(lambda: topic_partitions(a, topic) == (None, list(range(6))), 30, f"{topic} with 6 partitions")
    p = producer(broker.bootstrap)
    for part in range(6):
        p.produce(topic, key=b"k%d" % part, value=b"in-partition-%d" % part, partition=part)
    flush_all(p)
    got = read_partitions(broker.bootstrap, topic, {part: 1 for part in range(6)})
    assert {part: [(s.offset, s.value) for s in seen] for part, seen in got.items()} == {
        part: [(0, b"in-partition-%d" % part)] for part in range(6)}

    # fewer partitions than now: INVALID_PARTITIONS
    err = error_of(a.create_partitions([NewPartitions(topic, 2)])[topic])
    assert err.code() == KafkaError.INVALID_PARTITIONS, err

    # delete; it disappears from metadata and from disk
    a.delete_topics([topic], operation_timeout=30)[topic].result(timeout=30)
    wait_until(lambda: topic not in a.list_topics(timeout=10).topics, 30, f"{topic} gone from metadata")
    wait_until(lambda: not any(broker.partition_dir(topic, part).exists() for part in range(6)), 30,
               f"partition directories of {topic} removed")

    # deleting it again: UNKNOWN_TOPIC_OR_PARTITION
    err = error_of(a.delete_topics([topic], operation_timeout=30)[topic])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err

    # re-created under the same name it starts empty with default configs
    create_topic(broker.bootstrap, topic, 1)
    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 0)
    finally:
        c.close()
    assert values(describe(a, topic))["segment.bytes"] == DEFAULTS["segment.bytes"]


def test_admin_describe_configs_of_missing_topic(broker):
    a = admin(broker.bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, unique_topic("nope"))
    err = error_of(a.describe_configs([res])[res])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


def test_admin_create_topic_with_default_partitions(broker_factory):
    b = broker_factory(sets={"kafka.default_partitions": 4})
    a = admin(b.bootstrap)
    topic = unique_topic("defparts")
    # num_partitions=-1 asks for the broker default
    a.create_topics([NewTopic(topic, -1, -1)])[topic].result(timeout=30)
    wait_until(lambda: topic_partitions(a, topic) == (None, [0, 1, 2, 3]), 30, f"{topic} with 4 partitions")
    create_topic(b.bootstrap, unique_topic("explicit"), 2)


@pytest.mark.timeout(90)
def test_admin_topic_ids_are_stable_and_distinct(broker):
    """Fetch v13+ and Produce v13 address topics by ID: Metadata must give
    every topic a non-zero ID that stays the same, also across a restart."""
    from confluent_kafka import TopicCollection

    names = [unique_topic("tid"), unique_topic("tid")]
    for n in names:
        create_topic(broker.bootstrap, n, 2)

    def ids():
        a = admin(broker.bootstrap)
        futs = a.describe_topics(TopicCollection(names))
        return {n: str(futs[n].result(timeout=30).topic_id) for n in names}

    first = ids()
    zero = {"AAAAAAAAAAAAAAAAAAAAAA", "00000000-0000-0000-0000-000000000000", "None", ""}
    assert not set(first.values()) & zero, first
    assert len(set(first.values())) == len(names), first
    assert ids() == first
    broker.restart()
    assert ids() == first, "topic IDs changed across a restart"
