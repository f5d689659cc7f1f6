"""What an operator sees from the quiver CLI: `--output table|json` on the Kafka and the
admin commands (exact JSON fields and table headers), consume as JSON lines, errors
that say what to do next, `--wait` on transforms and mirrors, shell completions, and
the configuration reference that docs/configuration.md is generated from."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from clients import producer, unique_topic
from harness import quiver_bin, wait_until
from plugins_kit import wasm_path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, check: bool = True, input: bytes | None = None, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """`quiver ARGS` with no QUIVER_* variables from the caller's environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
    proc = subprocess.run([quiver_bin(), *args], input=input, capture_output=True, timeout=timeout,
                          env={**base, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"quiver {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout.decode(errors='replace')[-2000:]}\n"
                             f"stderr:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def kafka(broker, *args: str, **kw) -> subprocess.CompletedProcess:
    return run(*args, "--bootstrap", broker.bootstrap, **kw)


def admin(broker, *args: str, **kw) -> subprocess.CompletedProcess:
    return run(*args, "--admin", broker.admin, **kw)


def as_json(proc: subprocess.CompletedProcess):
    return json.loads(proc.stdout)


def header(proc: subprocess.CompletedProcess, first: str) -> list[str]:
    """The words of the table header line that starts with `first`."""
    line = next(line for line in proc.stdout.decode().splitlines() if line.startswith(first))
    return line.split()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.timeout(120)
def test_topic_commands_print_a_table_or_one_json_document(broker):
    topic = unique_topic("out")
    created = as_json(kafka(broker, "topic", "create", topic, "--partitions", "3", "--config",
                            "retention.ms=86400000", "--output", "json"))
    assert created == {"name": topic, "partitions": 3, "replication_factor": 1, "validate_only": False}

    table = kafka(broker, "topic", "list")
    assert header(table, "TOPIC") == ["TOPIC", "PARTITIONS", "ID"]
    row = next(line.split() for line in table.stdout.decode().splitlines() if line.startswith(topic + " "))
    listed = {t["name"]: t for t in as_json(kafka(broker, "topic", "list", "--output", "json"))["topics"]}
    assert set(listed[topic]) == {"name", "partitions", "id"}
    assert row == [topic, "3", listed[topic]["id"]]
    assert listed[topic]["partitions"] == 3 and listed[topic]["id"] != "00000000-0000-0000-0000-000000000000"
    # --json is the older spelling and still works
    assert as_json(kafka(broker, "topic", "list", "--json")) == as_json(kafka(broker, "topic", "list", "--output", "json"))

    lines = "".join(f"k{i},v{i}\n" for i in range(30)).encode()
    kafka(broker, "produce", topic, "--key-separator", ",", "--partition", "1", input=lines)
    described = as_json(kafka(broker, "topic", "describe", topic, "--output", "json"))
    assert (described["name"], described["id"]) == (topic, listed[topic]["id"])
    assert described["partitions"] == [
        {"partition": p, "leader": 0, "leader_epoch": described["partitions"][p]["leader_epoch"],
         "replicas": [0], "isr": [0], "start_offset": 0, "end_offset": n, "records": n}
        for p, n in [(0, 0), (1, 30), (2, 0)]]
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"] == {"name": "retention.ms", "value": "86400000", "source": "topic"}
    assert configs["cleanup.policy"] == {"name": "cleanup.policy", "value": "delete", "source": "default"}
    text = kafka(broker, "topic", "describe", topic)
    assert header(text, "PARTITION") == ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "START", "END", "RECORDS"]
    assert header(text, "CONFIG") == ["CONFIG", "VALUE", "SOURCE"]
    assert ["1", "0"] == [line.split() for line in text.stdout.decode().splitlines()
                          if line.split()[:1] == ["1"]][0][:2]

    altered = as_json(kafka(broker, "topic", "alter", topic, "--config", "retention.ms=3600000",
                            "--partitions", "4", "--output", "json"))
    assert altered == {"name": topic, "configs_set": ["retention.ms"], "configs_deleted": [], "partitions": 4}
    assert as_json(kafka(broker, "topic", "delete", topic, "--output", "json")) == {"deleted": topic}


@pytest.mark.timeout(120)
def test_produce_and_consume_speak_json(broker, tmp_path):
    topic = unique_topic("out")
    kafka(broker, "topic", "create", topic, "--partitions", "2")
    data = tmp_path / "records.txt"
    data.write_text("".join(f"key-{i}:value {i}\n" for i in range(100)))

    # json: the summary is the only thing on stdout; stderr has no progress bar (not a terminal)
    proc = kafka(broker, "produce", topic, "--file", str(data), "--key-separator", ":",
                 "--header", "source=cli", "--output", "json")
    produced = as_json(proc)
    assert proc.stderr == b""
    assert (produced["topic"], produced["records"]) == (topic, 100)
    assert set(produced["partitions"]) <= {"0", "1"} and sum(produced["partitions"].values()) == 100
    # table: the sentence goes to stderr, stdout stays free for a pipeline
    proc = kafka(broker, "produce", topic, "--partition", "0", input=b"plain\n")
    assert (proc.stdout, proc.stderr.decode()) == (b"", f"produced 1 records to '{topic}'\n")

    p = producer(broker.bootstrap)
    p.produce(topic, value=b"\xff\x00", partition=1, headers=[("bin", b"\xfe")])
    assert p.flush(30) == 0

    out = kafka(broker, "consume", topic, "--from-beginning", "--output", "json").stdout.decode()
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 102
    for r in records:
        assert list(r) == ["topic", "partition", "offset", "timestamp", "key", "value", "headers"]
    first = next(r for r in records if r["key"] == "key-0")
    assert first["topic"] == topic and first["value"] == "value 0"
    assert first["headers"] == [{"key": "source", "value": "cli"}]
    assert isinstance(first["timestamp"], int) and first["timestamp"] > 1_600_000_000_000
    plain = next(r for r in records if r["value"] == "plain")
    assert (plain["partition"], plain["key"], plain["headers"]) == (0, None, [])
    [binary] = [r for r in records if isinstance(r["value"], dict)]
    assert binary == {"topic": topic, "partition": 1, "offset": binary["offset"], "timestamp": binary["timestamp"],
                      "key": None, "value": {"base64": "/wA="}, "headers": [{"key": "bin", "value": {"base64": "/g=="}}]}
    # offsets per partition are consecutive from 0
    for part in (0, 1):
        offsets = [r["offset"] for r in records if r["partition"] == part]
        assert offsets == list(range(len(offsets)))


@pytest.mark.timeout(120)
def test_group_commands_print_a_table_or_one_json_document(broker):
    topic, group = unique_topic("out"), unique_topic("grp")
    kafka(broker, "topic", "create", topic, "--partitions", "2")
    kafka(broker, "produce", topic, "--partition", "0", input=b"".join(b"r%d\n" % i for i in range(10)))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "client.id": "cli-output-test"})
    try:
        c.subscribe([topic])
        seen = []
        wait_until(lambda: len(seen) >= 10 or seen.extend(m for m in c.consume(100, timeout=0.2) if not m.error()),
                   30, "the consumer to read 10 records")
        c.commit(asynchronous=False)
        described = as_json(kafka(broker, "group", "describe", group, "--output", "json"))
        assert (described["group_id"], described["state"], described["protocol_type"]) == (group, "Stable", "consumer")
        assert described["protocol"] == "range"
        [member] = described["members"]
        assert member["client_id"] == "cli-output-test"
        assert sorted((tp["topic"], tp["partition"]) for tp in member["partitions"]) == [(topic, 0), (topic, 1)]
        lag = {o["partition"]: o for o in described["offsets"]}
        assert lag[0] == {"topic": topic, "partition": 0, "current_offset": 10, "log_end_offset": 10, "lag": 0,
                          "member_id": member["member_id"], "client_id": "cli-output-test", "host": member["host"]}
        assert (lag[1]["current_offset"], lag[1]["log_end_offset"], lag[1]["lag"]) == (None, 0, None)
    finally:
        c.close()

    wait_until(lambda: any(g == {"group_id": group, "state": "Empty", "protocol_type": "consumer"}
                           for g in as_json(kafka(broker, "group", "list", "--output", "json"))["groups"]),
               30, "the group to be listed as Empty")
    assert header(kafka(broker, "group", "list"), "GROUP") == ["GROUP", "STATE", "PROTOCOL-TYPE"]

    plan = as_json(kafka(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest",
                         "--output", "json"))
    assert plan == {"group_id": group, "executed": False, "offsets": [
        {"topic": topic, "partition": 0, "current_offset": 10, "new_offset": 0},
        {"topic": topic, "partition": 1, "current_offset": None, "new_offset": 0}]}
    done = as_json(kafka(broker, "group", "reset-offsets", group, "--topic", topic, "--to-offset", "4",
                         "--execute", "--output", "json"))
    assert done["executed"] is True
    assert [(o["partition"], o["new_offset"]) for o in done["offsets"]] == [(0, 4), (1, 0)]
    after = as_json(kafka(broker, "group", "describe", group, "--output", "json"))
    assert {o["partition"]: (o["current_offset"], o["lag"]) for o in after["offsets"]} == {0: (4, 6), 1: (0, 0)}
    table = kafka(broker, "group", "reset-offsets", group, "--topic", topic, "--to-latest")
    assert header(table, "TOPIC") == ["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]
    assert "dry run: nothing changed" in table.stdout.decode()
    assert as_json(kafka(broker, "group", "delete", group, "--output", "json")) == {"deleted": group}


@pytest.mark.timeout(120)
def test_errors_name_the_address_and_what_to_do_next(broker):
    port = free_port()
    refused = run("topic", "list", "--bootstrap", f"127.0.0.1:{port}", check=False)
    assert refused.returncode == 1 and refused.stdout == b""
    lines = refused.stderr.decode().splitlines()
    assert lines[0].startswith(f"error: cannot reach a Kafka broker at 127.0.0.1:{port}: "), lines
    assert lines[1] == ("hint: is a broker running there? `quiver serve` starts one; point the CLI at yours "
                        "with --bootstrap HOST:PORT or QUIVER_BOOTSTRAP"), lines
    # the same address from the environment
    from_env = run("group", "list", env={"QUIVER_BOOTSTRAP": f"127.0.0.1:{port}"}, check=False)
    assert f"cannot reach a Kafka broker at 127.0.0.1:{port}" in from_env.stderr.decode()

    no_admin = run("plugin", "list", "--admin", f"127.0.0.1:{port}", check=False)
    lines = no_admin.stderr.decode().splitlines()
    assert no_admin.returncode == 1
    assert lines[0].startswith(f"error: cannot reach the admin API at 127.0.0.1:{port}: "), lines
    assert lines[1].startswith("hint: is a broker running there with its admin API on?") and "--admin HOST:PORT" in lines[1]

    # the two ports of a broker, swapped
    wrong = run("topic", "list", "--bootstrap", broker.admin, check=False)
    lines = wrong.stderr.decode().splitlines()
    assert wrong.returncode == 1
    assert lines[0].startswith(f"error: cannot reach a Kafka broker at {broker.admin}: it answered, but not as a "
                               "Kafka broker"), lines
    assert lines[1].startswith("hint: is that the Kafka listener?"), lines
    wrong = run("plugin", "list", "--admin", broker.bootstrap, check=False)
    assert wrong.stderr.decode().splitlines() == [
        f"error: {broker.bootstrap} did not answer as the admin API (no HTTP response)",
        "hint: is that the admin API? It is the broker's admin.listen (127.0.0.1:9644 by default), not its Kafka "
        "port; point the CLI at it with --admin HOST:PORT or QUIVER_ADMIN (https://HOST:PORT when it has "
        "admin.tls on)"]

    missing = kafka(broker, "topic", "describe", "no-such-topic", check=False)
    assert missing.returncode == 1
    assert missing.stderr.decode().splitlines() == [
        "error: topic 'no-such-topic': UnknownTopicOrPartition",
        "hint: `quiver topic list` shows the topics there are; `quiver topic create NAME` makes one"]

    topic = unique_topic("out")
    kafka(broker, "topic", "create", topic)
    again = kafka(broker, "topic", "create", topic, check=False)
    assert again.returncode == 1
    err = again.stderr.decode()
    assert f"error: creating topic '{topic}': TopicAlreadyExists" in err
    assert "hint: `quiver topic describe NAME` shows it; `quiver topic alter NAME` changes it" in err
    bad_partition = kafka(broker, "consume", topic, "--partition", "5", check=False)
    assert bad_partition.stderr.decode().splitlines() == [
        f"error: topic '{topic}' has partitions 0..1; there is no partition 5",
        f"hint: `quiver topic describe {topic}` lists them"]

    no_group = kafka(broker, "group", "describe", "no-such-group", check=False)
    assert no_group.stderr.decode().splitlines() == [
        "error: group 'no-such-group' does not exist", "hint: `quiver group list` shows the groups there are"]

    no_plugin = admin(broker, "plugin", "describe", "no-such-plugin", check=False)
    lines = no_plugin.stderr.decode().splitlines()
    assert no_plugin.returncode == 1 and "HTTP 404" in lines[0], lines
    assert lines[1] == "hint: `quiver plugin list` shows the plugins there are"
    for proc in (refused, no_admin, missing, again, no_group, no_plugin):
        assert b"panicked" not in proc.stderr


@pytest.mark.timeout(120)
def test_admin_commands_take_output_json(broker):
    assert as_json(admin(broker, "plugin", "list", "--output", "json")) == {"plugins": []}
    assert as_json(admin(broker, "transform", "list", "--output", "json")) == {"transforms": []}
    assert as_json(admin(broker, "mirror", "list", "--output", "json")) == {"mirrors": []}
    assert header(admin(broker, "plugin", "list"), "NAME") == ["NAME", "KIND", "VERSION", "STATE", "CALLS",
                                                              "ERRORS", "TRAPS"]
    assert header(admin(broker, "transform", "list"), "NAME") == ["NAME", "PLUGIN", "INPUT", "STATUS", "IN", "OUT",
                                                                 "LAG"]
    status = as_json(admin(broker, "cluster", "status", "--output", "json"))
    assert status["cluster_id"] == "quiver-dev" and [b["id"] for b in status["brokers"]] == [0]
    table = admin(broker, "cluster", "status")
    assert header(table, "BROKER") == ["BROKER", "KAFKA", "CLUSTER", "RACK", "STATE"]

    created = as_json(admin(broker, "tenant", "create", "acme", "--prefix", "acme.", "--max-partitions", "10",
                            "--output", "json"))
    assert (created["name"], created["prefix"], created["limits"]["max_partitions"]) == ("acme", "acme.", 10)
    assert header(admin(broker, "tenant", "list"), "TENANT") == ["TENANT", "PREFIX", "PARTITIONS", "STORED(here)",
                                                                "CONNS(here)"]
    assert as_json(admin(broker, "tenant", "delete", "acme", "--output", "json")) == {"deleted": "acme"}


@pytest.mark.timeout(240)
def test_transform_deploy_waits_until_it_has_caught_up(broker):
    src, dst = unique_topic("in"), unique_topic("out")
    kafka(broker, "topic", "create", src, "--partitions", "2")
    kafka(broker, "topic", "create", dst, "--partitions", "2")
    lines = "".join(json.dumps({"user": {"email": f"u{i}@x"}, "n": i}) + "\n" for i in range(3000))
    kafka(broker, "produce", src, input=lines.encode())
    admin(broker, "plugin", "deploy", "redact", "--kind", "transform", "--file", str(wasm_path("json-redact")))

    proc = admin(broker, "transform", "deploy", "--name", "clean", "--plugin", "redact", "--input", src,
                 "--output", dst, "--config", "paths=user.email", "--wait", "--json")
    done = as_json(proc)
    assert (done["name"], done["status"], done["lag"], done["records_in"]) == ("clean", "running", 0, 3000)
    assert proc.stderr == b""
    # caught up means the output holds every record already
    described = as_json(kafka(broker, "topic", "describe", dst, "--output", "json"))
    assert sum(p["records"] for p in described["partitions"]) == 3000
    assert as_json(admin(broker, "transform", "remove", "clean", "--output", "json")) == {"removed": "clean"}


@pytest.mark.timeout(240)
def test_mirror_create_waits_for_the_initial_sync(broker_factory):
    source = broker_factory(sets={"cluster.id": "east"})
    target = broker_factory(sets={"cluster.id": "west"})
    kafka(source, "topic", "create", "orders", "--partitions", "3")
    run("produce", "orders", "--key-separator", ",", "--bootstrap", source.bootstrap,
        input=b"".join(b"k%d,v%d\n" % (i, i) for i in range(2000)))
    admin(target, "plugin", "deploy", "mirror", "--kind", "connector", "--file", str(wasm_path("mirror")))

    proc = admin(target, "mirror", "create", "east", "--source", source.bootstrap, "--source-alias", "east",
                 "--topics", "orders", "--discovery-interval-ms", "500", "--wait", "--output", "json")
    synced = as_json(proc)
    assert (synced["name"], synced["status"], synced["behind"]) == ("east", "running", 0)
    assert synced["report"]["records"] == 2000
    described = as_json(kafka(target, "topic", "describe", "east.orders", "--output", "json"))
    assert sum(p["records"] for p in described["partitions"]) == 2000
    listed = admin(target, "mirror", "list")
    assert header(listed, "NAME") == ["NAME", "ALIAS", "SOURCE", "STATUS", "RECORDS", "BEHIND"]


def test_completions_for_every_shell():
    bash = run("completions", "bash").stdout.decode()
    assert "_quiver()" in bash and "complete -F _quiver" in bash
    for word in ("topic", "reset-offsets", "--bootstrap", "--output"):
        assert word in bash, word
    assert run("completions", "zsh").stdout.startswith(b"#compdef quiver")
    assert b"complete -c quiver" in run("completions", "fish").stdout
    assert run("completions", "elvish").stdout
    assert b"Register-ArgumentCompleter" in run("completions", "powershell").stdout
    bad = run("completions", "tcsh", check=False)
    assert bad.returncode == 2 and b"possible values: bash, elvish, fish, powershell, zsh" in bad.stderr


def test_config_reference_is_the_checked_in_documentation(tmp_path):
    reference = run("config", "reference").stdout.decode()
    assert reference == (REPO / "docs" / "configuration.md").read_text()
    settings = {s["key"]: s for s in as_json(run("config", "reference", "--output", "json"))["settings"]}
    assert settings["log.retention_ms"] == {
        "section": "log", "key": "log.retention_ms", "type": "integer", "default": 604800000, "required": False,
        "env": "QUIVER_LOG__RETENTION_MS",
        "description": "Delete segments whose newest record is older than this (ms); -1 keeps forever."}
    assert "| `kafka.listen` | string | `\"127.0.0.1:9092\"` | `QUIVER_KAFKA__LISTEN` |" in reference

    # config show: file < environment < flags, printed as TOML or JSON
    config = tmp_path / "quiver.toml"
    config.write_text("[log]\nretention_ms = 1000\nsegment_bytes = 4096\n")
    shown = run("config", "show", "--config", str(config), "--set", "log.segment_bytes=8192",
                env={"QUIVER_LOG__RETENTION_MS": "2000"}).stdout.decode()
    assert "[log]\n" in shown and "retention_ms = 2000\n" in shown and "segment_bytes = 8192\n" in shown
    as_doc = as_json(run("config", "show", "--config", str(config), "--kafka-listen", "127.0.0.1:19092",
                         "--output", "json"))
    assert (as_doc["log"]["retention_ms"], as_doc["kafka"]["listen"]) == (1000, "127.0.0.1:19092")
    bad = run("config", "show", "--set", "log.segment_bytes=3", check=False)
    assert bad.returncode == 1
    assert "log.segment_bytes" in bad.stderr.decode() and "invalid configuration" in bad.stderr.decode()


def test_help_reads_as_a_guide():
    top = run("--help").stdout.decode()
    for workflow in ("Start a broker", "Create a topic, produce and consume", "Deploy a partitioner plugin",
                     "Mirror another cluster", "Tenants and quotas", "quiver completions bash"):
        assert workflow in top, workflow
    for command in (["topic", "create"], ["produce"], ["consume"], ["group", "reset-offsets"],
                    ["plugin", "deploy"], ["transform", "deploy"], ["mirror", "create"], ["tenant", "create"],
                    ["quota", "set"], ["config", "show"]):
        text = run(*command, "--help").stdout.decode()
        examples = text.split("\nExamples:\n", 1)[1]
        assert f"quiver {' '.join(command)} " in examples, (command, examples)
    assert "--output <FORMAT>" in run("topic", "list", "--help").stdout.decode()
