"""Transforms that fail. A plugin that traps on every 1000th record: with a
dead-letter topic, exactly those records land there (key, value and headers kept, the
error and where the record came from added) and every other record reaches the output
in order; with the stop policy the partition stops at the first one, keeps its
position there with the reason, and stops there again when resumed. Plugins that loop,
hoard memory or flood their output are contained — dead-lettered or stopped with a
reason naming the cause — while a Kafka producer and consumer on the same input topic
keep working and the broker neither exits nor panics."""

from __future__ import annotations

import pytest

from clients import unique_topic
from plugins_kit import create_topic
from traffic import HealthyTraffic
from transforms_kit import TransformApi, deploy_plugin, produce, read_topic, wait_caught_up, wait_state

pytestmark = pytest.mark.timeout(240)


def hostile_records(n: int) -> list:
    return [(b"k%d" % i, b"v%d" % i, [("n", b"%d" % i)]) for i in range(n)]


@pytest.mark.parametrize("behaviour", ["trap-every", "error-every"])
def test_failing_records_go_to_the_dead_letter_topic(broker_factory, behaviour):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst, dlq = unique_topic("in"), unique_topic("out"), unique_topic("dlq")
    create_topic(broker, src, 1)
    create_topic(broker, dst, 1)
    create_topic(broker, dlq, 1)
    deploy_plugin(broker, "hostile", "transform-hostile")
    records = hostile_records(10000)
    produce(broker.bootstrap, src, records)
    r = api.deploy_transform(name="dl", plugin="hostile", input=src, outputs=[dst], dead_letter=dlq,
                             config={"behaviour": behaviour, "every": "1000"})
    assert (r.status, r.body["on_error"], r.body["dead_letter"]) == (201, "dead-letter", dlq), r
    body = wait_caught_up(api, "dl", {0: 10000})
    assert (body["records_in"], body["records_out"], body["dead_letters"]) == (10000, 9990, 10), body

    failing = [i for i in range(10000) if (i + 1) % 1000 == 0]
    dead = read_topic(broker.bootstrap, dlq, 1)[0]
    assert [key for _, key, _, _ in dead] == [b"k%d" % i for i in failing]
    for (_, key, value, headers), i in zip(dead, failing):
        assert value == b"v%d" % i
        h = dict(headers)
        assert headers[0] == ("n", b"%d" % i), headers
        assert (h["quiver.transform"], h["quiver.input.topic"], h["quiver.input.partition"],
                h["quiver.input.offset"]) == (b"dl", src.encode(), b"0", b"%d" % i), headers
        cause = b"trapped: hit an unreachable instruction" if behaviour == "trap-every" else \
            b"error-every: offset %d" % i
        assert cause in h["quiver.error"], h["quiver.error"]
    out = read_topic(broker.bootstrap, dst, 1)[0]
    assert [key for _, key, _, _ in out] == [b"k%d" % i for i in range(10000) if i not in failing]
    assert all(headers == [("n", key[1:])] for _, key, _, headers in out)


@pytest.mark.parametrize("behaviour", ["trap-every", "error-every"])
def test_stop_policy_stops_at_the_failing_record_and_keeps_its_position(broker_factory, behaviour):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    src, dst = unique_topic("in"), unique_topic("out")
    create_topic(broker, src, 1)
    create_topic(broker, dst, 1)
    deploy_plugin(broker, "hostile", "transform-hostile")
    produce(broker.bootstrap, src, hostile_records(3000))
    r = api.deploy_transform(name="st", plugin="hostile", input=src, outputs=[dst],
                             config={"behaviour": behaviour, "every": "1000"})
    assert (r.status, r.body["on_error"]) == (201, "stop"), r
    stopped = wait_state(api, "st", "stopped")
    assert stopped["position"] == 999, stopped
    assert "input record at offset 999 failed" in stopped["reason"], stopped
    assert api.transform("st").body["status"] == "stopped"
    out = read_topic(broker.bootstrap, dst, 1)[0]
    assert [key for _, key, _, _ in out] == [b"k%d" % i for i in range(999)]

    r = api.resume("st")
    assert r.status == 200, r
    again = wait_state(api, "st", "stopped")
    assert again["position"] == 999 and "offset 999" in again["reason"], again
    assert len(read_topic(broker.bootstrap, dst, 1)[0]) == 999, "a resume wrote output twice"


HOSTILE = {
    # behaviour: (plugin deploy limits, transform settings, the cause the operator reads)
    "loop": (["--call-timeout-ms", "100"], {}, "exceeded its 100 ms call deadline"),
    "memory-bomb": (["--max-memory-bytes", str(16 << 20)], {}, "trapped"),
    "amplify": ([], {"max_amplification": 100}, "more than max_amplification 100x"),
}


@pytest.mark.parametrize("behaviour", sorted(HOSTILE))
def test_hostile_transforms_are_contained(broker_factory, behaviour):
    broker = broker_factory()
    api = TransformApi(broker.admin)
    limits, settings, cause = HOSTILE[behaviour]
    src, dst, dlq = unique_topic("in"), unique_topic("out"), unique_topic("dlq")
    create_topic(broker, src, 1)
    create_topic(broker, dst, 1)
    create_topic(broker, dlq, 1)
    deploy_plugin(broker, "hostile", "transform-hostile", *limits)
    with HealthyTraffic(broker.bootstrap) as healthy:
        produce(broker.bootstrap, src, hostile_records(40))
        r = api.deploy_transform(name="h", plugin="hostile", input=src, outputs=[dst],
                                 config={"behaviour": behaviour}, **settings)
        assert r.status == 201, r
        # the first record fails alone, retried; the stop policy stops there
        stopped = wait_state(api, "h", "stopped", timeout=120)
        assert "input record at offset 0 failed" in stopped["reason"], stopped
        assert cause in stopped["reason"], stopped
        assert stopped["position"] == 0, stopped
        # the input topic still takes and serves records from a Kafka client
        more = produce(broker.bootstrap, src, hostile_records(50))
        assert [o for _, o in more] == list(range(40, 90))
        assert len(read_topic(broker.bootstrap, src, 1)[0]) == 90
        healthy.wait_progress(20)
    assert read_topic(broker.bootstrap, dst, 1)[0] == []
    assert broker.alive(), "the broker exited"
    assert broker.panics() == []

    # with a dead-letter topic the same plugin cannot flood or hang anything either
    r = api.deploy_transform(name="h2", plugin="hostile", input=src, outputs=[dst], dead_letter=dlq,
                             config={"behaviour": behaviour}, **settings)
    assert r.status == 201, r
    # every record fails alone: nine go to the dead-letter topic, and after ten in a
    # row with no success between the partition is marked failed
    failed = wait_state(api, "h2", "failed", timeout=120)
    assert "10 input records in a row failed" in failed["reason"] and cause in failed["reason"], failed
    assert failed["position"] == 9, failed
    dead = read_topic(broker.bootstrap, dlq, 1)[0]
    assert [key for _, key, _, _ in dead] == [b"k%d" % i for i in range(9)], "9 dead letters, then failed"
    assert all(cause.encode() in dict(h)["quiver.error"] for _, _, _, h in dead)
