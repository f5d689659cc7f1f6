"""Consumer groups with real clients as separate processes: confluent-kafka,
kafka-python and a mix of both share a 6-partition topic, commit as they go,
and survive a member killed with -9, a member leaving cleanly and static
members restarting.

Scale: 300k keyed records for the confluent group (~19 s here); the other
scenarios use fewer records to keep the suite short on a 2-core CI machine. The
workers pause briefly after each batch so a kill lands mid-consumption."""

from __future__ import annotations

import pytest

from clients import unique_topic
from groupkit import (Worker, assignment_covers, check_consumed, now, produce_keyed,
                      reread_bound, stop_all, wait_all_consumed)
from harness import wait_until

PARTITIONS = 6
GROUP_SETTINGS = {"group.initial_rebalance_delay_ms": 300}


def kill_one_mid_stream(broker, tmp_path, libs, records):
    topic, group = unique_topic("grp"), unique_topic("g")
    produced = produce_keyed(broker.bootstrap, topic, PARTITIONS, records)
    session_ms = 6000
    workers = [Worker(lib, broker.bootstrap, topic, group, tmp_path, f"{lib}-{i}",
                      session_ms=session_ms, batch_sleep=0.05).start()
               for i, lib in enumerate(libs)]
    try:
        wait_until(lambda: assignment_covers(workers, PARTITIONS) and all(w.assigned() for w in workers),
                   60, "three members sharing six partitions")
        wait_until(lambda: sum(w.records_read() for w in workers) >= records // 5, 60, "a fifth of the records consumed")
        victim, survivors = workers[0], workers[1:]
        orphaned = victim.assigned()
        victim.kill()
        killed_at = now()
        wait_until(lambda: assignment_covers(survivors, PARTITIONS), session_ms / 1000 + 15,
                   "the survivors to take over the killed member's partitions")
        moved_at = max(ev["t"] for w in survivors for ev in w.assign_events())
        # expiry after the session timeout, plus a heartbeat interval to rejoin
        assert moved_at - killed_at <= session_ms / 1000 + 5, f"took {moved_at - killed_at:.1f}s"
        wait_all_consumed(workers, produced, 120)
        rereads = check_consumed(workers, produced)
        bound = reread_bound(workers)
        assert rereads <= bound, f"{rereads} records read twice, but only {bound} were read after a commit"
        resumed = {ev["p"] for w in survivors for ev in w.events()
                   if ev["ev"] == "rec" and ev["p"] in orphaned}
        assert resumed, f"nobody consumed the killed member's partitions {orphaned} afterwards"
    finally:
        for w in workers[1:]:
            w.stop()
        stop_all(workers)


@pytest.mark.timeout(150)
def test_confluent_group_loses_a_member_to_kill_9(broker_factory, tmp_path):
    broker = broker_factory(sets=GROUP_SETTINGS)
    kill_one_mid_stream(broker, tmp_path, ["confluent"] * 3, 300_000)


@pytest.mark.timeout(150)
def test_kafka_python_group_loses_a_member_to_kill_9(broker_factory, tmp_path):
    broker = broker_factory(sets=GROUP_SETTINGS)
    kill_one_mid_stream(broker, tmp_path, ["kafka-python"] * 3, 12_000)


@pytest.mark.timeout(150)
def test_mixed_group_rebalances_at_once_on_a_clean_leave(broker_factory, tmp_path):
    broker = broker_factory(sets=GROUP_SETTINGS)
    topic, group = unique_topic("grp"), unique_topic("g")
    produced = produce_keyed(broker.bootstrap, topic, PARTITIONS, 6_000)
    # A long session: only a LeaveGroup can explain a quick rebalance.
    session_ms = 30_000
    workers = [Worker(lib, broker.bootstrap, topic, group, tmp_path, f"{lib}-{i}",
                      session_ms=session_ms, batch_sleep=0.02).start()
               for i, lib in enumerate(["confluent", "kafka-python", "confluent"])]
    try:
        wait_until(lambda: assignment_covers(workers, PARTITIONS) and all(w.assigned() for w in workers),
                   60, "a mixed group of three sharing six partitions")
        leaver, stayers = workers[1], [workers[0], workers[2]]
        leaver.stop()
        left_at = now()
        wait_until(lambda: assignment_covers(stayers, PARTITIONS), 15,
                   "the remaining members to take over after a clean leave")
        moved_at = max(ev["t"] for w in stayers for ev in w.assign_events())
        assert moved_at - left_at < 10, f"rebalance took {moved_at - left_at:.1f}s after a clean leave"
        more = produce_keyed(broker.bootstrap, topic, PARTITIONS, 3_000, start=6_000, create=False)
        for p, rows in more.items():
            produced.setdefault(p, []).extend(rows)
        wait_all_consumed(workers, produced, 90)
        rereads = check_consumed(workers, produced)
        assert rereads <= reread_bound(workers)
    finally:
        for w in workers:
            w.stop()


@pytest.mark.timeout(120)
def test_static_members_restart_without_a_rebalance(broker_factory, tmp_path):
    broker = broker_factory(sets=GROUP_SETTINGS)
    topic, group = unique_topic("grp"), unique_topic("g")
    produced = produce_keyed(broker.bootstrap, topic, PARTITIONS, 3_000)
    session_ms = 30_000

    def member(name, instance):
        return Worker("confluent", broker.bootstrap, topic, group, tmp_path, name,
                      instance=instance, session_ms=session_ms)

    a, b = member("a", "static-a").start(), member("b", "static-b").start()
    workers = [a, b]
    try:
        wait_until(lambda: assignment_covers(workers, PARTITIONS) and a.assigned() and b.assigned(),
                   60, "two static members sharing six partitions")
        wait_all_consumed(workers, produced, 60)
        before = b.assigned()
        a_assignments = len(a.assign_events())
        b.stop()  # a static member does not leave the group on close
        b2 = member("b2", "static-b").start()
        workers.append(b2)
        wait_until(lambda: b2.assigned(), 20, "the restarted static member to get its partitions")
        assert b2.assigned() == before
        more = produce_keyed(broker.bootstrap, topic, PARTITIONS, 1_000, start=3_000, create=False)
        for p, rows in more.items():
            produced.setdefault(p, []).extend(rows)
        wait_all_consumed(workers, produced, 60)
        assert len(a.assign_events()) == a_assignments, f"the other member was rebalanced: {a.assign_events()}"
        check_consumed(workers, produced)
    finally:
        for w in workers:
            w.stop()
