"""Admin requests with invalid names and config values get the exact Kafka
error through a real AdminClient, and change nothing."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

import kproto
from clients import admin, create_topic, unique_topic
from traffic import HealthyTraffic

BAD_NAMES = ["bad/name", "bad name", ".", "..", "x" * 250, "tab\tname", "ünïcode"]


def create_error(a, topic: NewTopic):
    fut = a.create_topics([topic], operation_timeout=30)[topic.topic]
    with pytest.raises(KafkaException) as ei:
        fut.result(timeout=30)
    return ei.value.args[0]


@pytest.mark.timeout(90)
def test_badinput_invalid_topic_names(broker):
    with HealthyTraffic(broker.bootstrap) as h:
        a = admin(broker.bootstrap)
        for name in BAD_NAMES:
            err = create_error(a, NewTopic(name, 1, 1))
            assert err.code() == KafkaError.TOPIC_EXCEPTION, f"{name!r}: {err!r}"
        # the same through a raw CreateTopics, to see the broker's own code
        with kproto.Conn.to(broker.bootstrap) as c:
            code, msg = kproto.create_topics_v2(c, "bad/name")
            assert code == kproto.INVALID_TOPIC_EXCEPTION, (kproto.error_name(code), msg)
        # the longest legal name works
        create_topic(broker.bootstrap, "n" * 249, 1)
        listed = set(a.list_topics(timeout=10).topics)
        assert not listed & set(BAD_NAMES), listed & set(BAD_NAMES)
        h.wait_progress(20)


BAD_CONFIGS = [
    ("retention.ms", "-5"),
    ("retention.ms", "soon"),
    ("segment.bytes", "1"),
    ("segment.ms", "0"),
    ("max.message.bytes", "-1"),
    ("cleanup.policy", "shred"),
    ("compression.type", "brotli"),
    ("message.timestamp.type", "WhenEver"),
]


@pytest.mark.timeout(90)
def test_badinput_config_values_out_of_range(broker):
    with HealthyTraffic(broker.bootstrap) as h:
        a = admin(broker.bootstrap)
        for key, value in BAD_CONFIGS:
            name = unique_topic("badcfg")
            err = create_error(a, NewTopic(name, 1, 1, config={key: value}))
            assert err.code() == KafkaError.INVALID_CONFIG, f"create with {key}={value}: {err!r}"
            assert name not in a.list_topics(timeout=10).topics, f"{name} created despite {key}={value}"

        # altering an existing topic: rejected, old value kept
        topic = unique_topic("badcfg-alter")
        create_topic(broker.bootstrap, topic, 1, config={"segment.bytes": "1048576"})
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        for key, value in BAD_CONFIGS:
            alter = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
            with pytest.raises(KafkaException) as ei:
                a.incremental_alter_configs([alter])[alter].result(timeout=30)
            assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG, f"alter {key}={value}: {ei.value!r}"
        entries = a.describe_configs([res])[res].result(timeout=30)
        assert entries["segment.bytes"].value == "1048576"
        assert entries["retention.ms"].value == "604800000"
        # an unknown key is INVALID_CONFIG too
        alter = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("no.such.key", "1", incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(KafkaException) as ei:
            a.incremental_alter_configs([alter])[alter].result(timeout=30)
        assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG, repr(ei.value)
        h.wait_progress(20)
