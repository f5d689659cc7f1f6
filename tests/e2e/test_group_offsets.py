"""Committed offsets are durable and the group tools read them: the broker is
killed with -9 while a group consumes and commits, and after the restart the
group resumes from its committed offsets; `quiver group` lists, describes (lag),
resets and deletes groups."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from clients import consumer, unique_topic
from groupkit import (Worker, check_consumed, describe_rows, produce_keyed, quiver_cli,
                      reread_bound, stop_all, wait_all_consumed)
from harness import wait_until

PARTITIONS = 6
GROUP_SETTINGS = {"group.initial_rebalance_delay_ms": 300}


@pytest.mark.timeout(150)
def test_group_resumes_from_committed_offsets_after_broker_kill_9(broker_factory, tmp_path):
    broker = broker_factory(sets=GROUP_SETTINGS)
    topic, group = unique_topic("grp"), unique_topic("g")
    produced = produce_keyed(broker.bootstrap, topic, PARTITIONS, 12_000)
    workers = [Worker("confluent", broker.bootstrap, topic, group, tmp_path, f"c{i}",
                      session_ms=10_000, batch_sleep=0.1).start() for i in range(3)]
    try:
        wait_until(lambda: sum(w.records_read() for w in workers) >= 3_000, 60, "a quarter of the records consumed")
        broker.kill()
        broker.start()
        wait_all_consumed(workers, produced, 90)
        rereads = check_consumed(workers, produced)
        assert rereads <= reread_bound(workers)
        # every worker's last commit has been acknowledged once all is read
        wait_until(lambda: all(r[0] == r[1] for r in describe_rows(broker.bootstrap, group).values()),
                   30, "committed offsets to reach the log end")
    finally:
        for w in workers:
            w.stop()
        stop_all(workers)
    # restart once more with nobody connected: offsets come back from the log alone
    broker.kill()
    broker.start()
    rows = describe_rows(broker.bootstrap, group)
    assert sorted(p for t, p in rows if t == topic) == list(range(PARTITIONS))
    for (t, p), (current, end, lag, _member) in rows.items():
        assert end == len(produced[p]), f"{t}-{p}: log end {end}"
        assert lag == end - current, f"{t}-{p}: lag {lag} != {end} - {current}"
        assert current == end
    c = consumer(broker.bootstrap, **{"group.id": group})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {p: len(produced[p]) for p in range(PARTITIONS)}
    finally:
        c.close()


@pytest.mark.timeout(120)
def test_group_cli_lists_describes_resets_and_deletes(broker_factory):
    broker = broker_factory(sets=GROUP_SETTINGS)
    topic, group = unique_topic("cli"), unique_topic("g")
    produced = produce_keyed(broker.bootstrap, topic, 2, 200)
    ends = {p: len(rows) for p, rows in produced.items()}
    c = consumer(broker.bootstrap, **{"group.id": group, "client.id": "cli-test-client",
                                      "enable.auto.offset.store": True})
    try:
        c.subscribe([topic])
        seen = 0
        for _ in range(200):
            seen += len([m for m in c.consume(500, timeout=0.2) if not m.error()])
            if seen >= 200:
                break
        assert seen == 200
        c.commit(asynchronous=False)

        listed = quiver_cli(broker.bootstrap, "group", "list").stdout
        assert any(line.split()[:2] == [group, "Stable"] for line in listed.splitlines()), listed
        rows = describe_rows(broker.bootstrap, group)
        for p in range(2):
            current, end, lag, member = rows[(topic, p)]
            assert (current, end, lag) == (ends[p], ends[p], 0)
            assert member.startswith("cli-test-client-")

        refused = quiver_cli(broker.bootstrap, "group", "reset-offsets", group, "--topic", topic,
                             "--to-earliest", "--execute", check=False)
        assert refused.returncode != 0
        assert "active member" in refused.stderr, refused.stderr
    finally:
        c.close()

    wait_until(lambda: "Empty" in quiver_cli(broker.bootstrap, "group", "describe", group).stdout,
               15, "the group to be empty after its consumer closed")
    plan = quiver_cli(broker.bootstrap, "group", "reset-offsets", group, "--topic", topic,
                      "--to-offset", "10").stdout
    assert "dry run" in plan
    assert describe_rows(broker.bootstrap, group)[(topic, 0)][0] == ends[0], "a dry run changed offsets"

    def reset(*how):
        quiver_cli(broker.bootstrap, "group", "reset-offsets", group, "--topic", topic, *how, "--execute")
        return {p: describe_rows(broker.bootstrap, group)[(topic, p)] for p in range(2)}

    assert {p: r[0] for p, r in reset("--to-offset", "10").items()} == {0: 10, 1: 10}
    after = reset("--shift-by", "-4")
    assert {p: (r[0], r[2]) for p, r in after.items()} == {p: (6, ends[p] - 6) for p in range(2)}
    assert {p: r[0] for p, r in reset("--to-earliest").items()} == {0: 0, 1: 0}
    assert {p: r[0] for p, r in reset("--to-latest").items()} == ends
    # every record was produced moments ago: a date long past means the start
    assert {p: r[0] for p, r in reset("--to-datetime", "2001-01-01T00:00:00Z").items()} == {0: 0, 1: 0}
    assert {p: r[0] for p, r in reset("--to-datetime", "2999-01-01T00:00:00.000+02:00").items()} == ends

    quiver_cli(broker.bootstrap, "group", "delete", group)
    assert group not in quiver_cli(broker.bootstrap, "group", "list").stdout
    gone = quiver_cli(broker.bootstrap, "group", "describe", group, check=False)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
