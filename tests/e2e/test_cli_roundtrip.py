"""The quiver CLI as a Kafka client: topic create/list/describe/alter/delete,
produce lines with keys and headers, consume them back with a format."""

from __future__ import annotations

import subprocess

import pytest
from confluent_kafka.admin import ConfigResource

import kproto
from clients import admin, read_partitions, unique_topic
from harness import quiver_bin, wait_until


def cli(broker, *args, input: bytes | None = None, check: bool = True, timeout: float = 60):
    cmd = [quiver_bin(), *args, "--bootstrap", broker.bootstrap]
    proc = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout.decode()[-2000:]}\n"
                             f"stderr:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


@pytest.mark.timeout(60)
def test_cli_topic_create_list_describe_alter_delete(broker):
    topic = unique_topic("cli")
    cli(broker, "topic", "create", topic, "--partitions", "3", "--config", "retention.ms=86400000")
    assert topic in cli(broker, "topic", "list").stdout.decode().split()
    a = admin(broker.bootstrap)  # keep the client alive until its futures resolve
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    assert a.describe_configs([res])[res].result(timeout=30)["retention.ms"].value == "86400000"
    md = a.list_topics(topic=topic, timeout=10).topics[topic]
    assert sorted(md.partitions) == [0, 1, 2]

    described = cli(broker, "topic", "describe", topic).stdout.decode()
    assert "00000000-0000-0000-0000-000000000000" not in described, f"describe shows a zero topic id:\n{described}"
    assert "retention.ms" in described and "86400000" in described, f"describe lacks the topic's config:\n{described}"

    cli(broker, "topic", "alter", topic, "--config", "retention.ms=3600000")
    assert a.describe_configs([res])[res].result(timeout=30)["retention.ms"].value == "3600000"

    cli(broker, "topic", "delete", topic)
    wait_until(lambda: topic not in cli(broker, "topic", "list").stdout.decode().split(), 30, f"{topic} deleted")


@pytest.mark.timeout(120)
def test_cli_produce_consume_round_trip(broker):
    topic = unique_topic("cli")
    cli(broker, "topic", "create", topic, "--partitions", "3")

    # produce to one partition: keys, values and headers come back exactly
    lines = [f"key{i},value {i} with spaces" for i in range(200)]
    cli(broker, "produce", topic, "--key-separator", ",", "--header", "source=cli", "--header", "run=1",
        "--partition", "1", input=("\n".join(lines) + "\n").encode())
    out = cli(broker, "consume", topic, "--partition", "1", "--from-beginning",
              "--format", r"%p/%o %k=%v %h\n").stdout.decode()
    assert out.splitlines() == [f"1/{i} key{i}=value {i} with spaces source=cli,run=1" for i in range(200)]

    out = cli(broker, "consume", topic, "--partition", "1", "--offset", "50", "--max-messages", "5",
              "--format", r"%o %v\n").stdout.decode()
    assert out.splitlines() == [f"{i} value {i} with spaces" for i in range(50, 55)]

    # a real client sees the same records
    got = read_partitions(broker.bootstrap, topic, {1: 200})[1]
    assert [(s.offset, s.key, s.value, s.headers) for s in got] == [
        (i, b"key%d" % i, b"value %d with spaces" % i, [("source", b"cli"), ("run", b"1")]) for i in range(200)]

    # without --partition, keyed lines land where the Java client's partitioner puts them
    keys = [f"user-{i}" for i in range(60)]
    cli(broker, "produce", topic, "--key-separator", ":", input="".join(f"{k}:v-{k}\n" for k in keys).encode())
    out = cli(broker, "consume", topic, "--from-beginning", "--format", r"%p %k %v\n").stdout.decode()
    placed = {k: int(p) for p, k, v in (line.split(" ", 2) for line in out.splitlines()) if k.startswith("user-")}
    assert placed == {k: kproto.java_partition(k.encode(), 3) for k in keys}

    # a partition that does not exist is an error that names it
    bad = cli(broker, "produce", topic, "--partition", "7", input=b"x\n", check=False)
    assert bad.returncode != 0 and b"7" in bad.stderr, bad


@pytest.mark.timeout(60)
def test_cli_output_into_a_closed_pipe_ends_quietly(broker):
    """`quiver topic list | head -1` where head has gone: the command ends by SIGPIPE
    like any Unix tool, with no panic on stderr."""
    import os
    import signal

    topic = unique_topic("pipe")
    cli(broker, "topic", "create", topic, "--partitions", "1")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command prints anything
    try:
        proc = subprocess.run([quiver_bin(), "topic", "list", "--bootstrap", broker.bootstrap],
                              stdout=write_end, stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(write_end)
    assert proc.returncode == -signal.SIGPIPE, (proc.returncode, proc.stderr.decode(errors="replace"))
    assert b"panicked" not in proc.stderr, proc.stderr.decode(errors="replace")
