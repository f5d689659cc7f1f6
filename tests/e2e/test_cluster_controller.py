"""The controller killed (kill -9) in the middle of topic creation: afterwards
every broker gives the same Metadata, and each topic of the interrupted request
either exists whole (every partition with a live leader and three replicas) on
every broker or does not exist at all -- never half. A topic the client was told
is created exists; creating any of them again answers "created" or
TOPIC_ALREADY_EXISTS; every partition of every topic then takes acks=all writes."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewTopic

from clients import read_partitions, unique_topic

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 6
ROUNDS = 3


def new_topics(names):
    return [NewTopic(n, num_partitions=PARTITIONS, replication_factor=3, config={"min.insync.replicas": "2"})
            for n in names]


def outcomes_of(futs: dict, timeout: float = 60) -> dict:
    out = {}
    for name, fut in futs.items():
        try:
            fut.result(timeout)
            out[name] = "created"
        except KafkaException as e:
            out[name] = e.args[0].name()
    return out


def converged(c, names: list, timeout: float = 60) -> dict:
    """Waits until every live broker gives the same view of `names` and each topic
    is either absent or whole; returns {name: "absent" | "whole"}."""
    last_views = {}

    def views():
        live = set(c.live_ids())
        seen = last_views
        seen.clear()
        for i in sorted(live):
            md = c.metadata(via=i)
            view = {}
            for n in names:
                err, parts = md.topics.get(n, (3, {}))
                if err == 3:  # UNKNOWN_TOPIC_OR_PARTITION
                    view[n] = None
                else:
                    view[n] = (err, {p: (pm.leader, tuple(sorted(pm.replicas))) for p, pm in parts.items()})
            seen[i] = view
        first = next(iter(seen.values()))
        if any(v != first for v in seen.values()):
            return None
        state = {}
        for n, v in first.items():
            if v is None:
                state[n] = "absent"
                continue
            err, parts = v
            whole = err == 0 and sorted(parts) == list(range(PARTITIONS)) and all(
                leader in live and len(reps) == 3 for leader, reps in parts.values())
            if not whole:
                return None  # half-created (for now)
            state[n] = "whole"
        return state
    try:
        return c.wait(views, timeout, f"every broker to agree that each of {names} is whole or absent",
                      interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast views by broker: {last_views}") from None


def test_controller_killed_during_topic_creation_leaves_no_half_created_topic(cluster_factory, seed, rng):
    c = cluster_factory(3)
    admin = c.admin()
    names_all, told_created = [], set()
    for rnd in range(ROUNDS):
        ctrl = c.wait_controller()
        names = [unique_topic(f"ctl{rnd}") for _ in range(4)]
        names_all += names
        futs = admin.create_topics(new_topics(names), operation_timeout=20, request_timeout=30)
        delay = rng.uniform(0, 0.1)
        time.sleep(delay)  # the schedule: where in the creation the controller dies
        c.kill(ctrl)
        outcomes = outcomes_of(futs)
        print(f"seed={seed} round {rnd}: kill -9 controller {ctrl} {delay * 1000:.0f} ms after "
              f"CreateTopics; client saw {outcomes}", flush=True)
        new = c.wait_controller(exclude=[ctrl], timeout=30)
        state = converged(c, names)  # with the old controller still down
        print(f"  controller {new}; without {ctrl}: {state}", flush=True)
        told_created |= {n for n, o in outcomes.items() if o in ("created", "TOPIC_ALREADY_EXISTS")}
        c.restart(ctrl)
        c.wait_formed()
        assert converged(c, names) == state, "the restarted controller changed what the others agreed on"
        missing = [n for n in names if n in told_created and state[n] != "whole"]
        assert missing == [], f"topics the client was told exist are not whole: {missing} ({state})"

    # creating them all again: each is created or already exists, nothing else
    again = outcomes_of(admin.create_topics(new_topics(names_all), operation_timeout=30))
    assert set(again.values()) <= {"created", "TOPIC_ALREADY_EXISTS"}, again
    assert all(again[n] == "TOPIC_ALREADY_EXISTS" for n in told_created), again
    assert set(converged(c, names_all).values()) == {"whole"}
    for n in names_all:
        c.wait_topic(n, PARTITIONS, 3, timeout=60)

    # every partition of every topic takes an acks=all write and gives it back
    prod = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True})
    acked = {}
    for n in names_all:
        for p in range(PARTITIONS):
            prod.produce(n, key=b"k", value=f"{n}/{p}".encode(), partition=p,
                         on_delivery=lambda err, m, key=(n, p): acked.__setitem__(key, (err, m.offset())))
    assert prod.flush(60) == 0
    assert {k: v for k, v in acked.items() if v != (None, 0)} == {}, "writes failed or landed elsewhere"
    for n in names_all:
        got = read_partitions(c.bootstrap, n, {p: 1 for p in range(PARTITIONS)})
        assert {p: [(s.offset, s.value) for s in recs] for p, recs in got.items()} == {
            p: [(0, f"{n}/{p}".encode())] for p in range(PARTITIONS)}
