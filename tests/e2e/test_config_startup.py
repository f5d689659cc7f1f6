"""Broker configuration at startup: invalid values stop the broker before
any port opens, with the key and value named; file < env < --set
precedence; SIGTERM stops it cleanly with exit code 0."""

from __future__ import annotations

import socket
import time

import pytest

import kproto
from clients import create_topic, flush_all, producer, read_partitions, unique_topic

INVALID = [
    # (how, key, value)
    ("set", "log.segment_bytes", "-1"),
    ("set", "log.retention_ms", "abc"),
    ("set", "kafka.default_partitions", "0"),
    ("set", "kafka.auto_create_topics", "maybe"),
    ("set", "log.message_timestamp_type", "Sometime"),
    ("set", "log.compression_type", "brotli"),
    ("set", "log.max_message_bytes", "-5"),
    ("env", "log.segment_bytes", "notanumber"),
    ("file", "log.compression_type", "brotli"),
]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how,key,value", INVALID, ids=[f"{h}-{k}={v}" for h, k, v in INVALID])
def test_config_invalid_value_stops_startup(broker_factory, tmp_path, how, key, value):
    section, leaf = key.split(".", 1)
    if how == "set":
        b = broker_factory(sets={key: value}, start=False)
    elif how == "env":
        b = broker_factory(env={f"QUIVER_{section.upper()}__{leaf.upper()}": value}, start=False)
    else:
        cfg = tmp_path / "quiver.toml"
        cfg.write_text(f'[{section}]\n{leaf} = "{value}"\n')
        b = broker_factory(args=["--config", str(cfg)], start=False)
    proc = b.spawn()
    opened = False
    deadline = time.monotonic() + 30
    while proc.poll() is None:
        opened = opened or port_open(b.port)
        if time.monotonic() > deadline:
            pytest.fail(f"broker with {key}={value!r} ({how}) still running after 30s")
        time.sleep(0.01)
    err = b.stderr_text()
    assert proc.returncode != 0, f"{key}={value!r} ({how}): exit code 0\n{err}"
    assert not opened, f"{key}={value!r} ({how}): the Kafka port opened before the broker gave up"
    assert leaf.lower() in err.lower(), f"stderr does not name the key {key}:\n{err}"
    assert value in err, f"stderr does not name the value {value!r}:\n{err}"


@pytest.mark.timeout(60)
def test_config_file_env_and_set_precedence(broker_factory, tmp_path):
    """kafka.default_partitions from the file, overridden by env, overridden by
    --set; observed through the partition count of auto-created topics."""
    cfg = tmp_path / "quiver.toml"
    cfg.write_text("[kafka]\ndefault_partitions = 2\nauto_create_topics = true\n")

    def auto_created_partitions(b):
        name = unique_topic("prec")
        with kproto.Conn.to(b.bootstrap) as c:
            deadline = time.monotonic() + 30
            while True:
                md = kproto.metadata_v1(c, [name])[name]
                if md.error_code == 0 and md.partitions:
                    return len(md.partitions)
                assert time.monotonic() < deadline, md
                time.sleep(0.05)

    b = broker_factory(args=["--config", str(cfg)])
    assert auto_created_partitions(b) == 2
    b.close()
    b = broker_factory(args=["--config", str(cfg)], env={"QUIVER_KAFKA__DEFAULT_PARTITIONS": "3"})
    assert auto_created_partitions(b) == 3
    b.close()
    b = broker_factory(args=["--config", str(cfg)], env={"QUIVER_KAFKA__DEFAULT_PARTITIONS": "3"},
                       sets={"kafka.default_partitions": "5"})
    assert auto_created_partitions(b) == 5


@pytest.mark.timeout(90)
def test_sigterm_stops_cleanly_and_data_survives(broker):
    topic = unique_topic("term")
    create_topic(broker.bootstrap, topic, 2)
    p = producer(broker.bootstrap)
    for i in range(1000):
        p.produce(topic, key=b"%d" % i, value=b"term-%d" % i, partition=i % 2)
    flush_all(p)
    assert broker.stop() == 0, f"exit code on SIGTERM:\n{broker.stderr_text()[-3000:]}"
    assert not port_open(broker.port)
    broker.start()
    got = read_partitions(broker.bootstrap, topic, {0: 500, 1: 500})
    for part in (0, 1):
        assert [(s.offset, s.value) for s in got[part]] == [
            (j, b"term-%d" % (2 * j + part)) for j in range(500)]
    assert broker.stop() == 0
