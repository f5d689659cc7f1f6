"""The admin API's topics and groups: what `quiver topic describe` and `quiver group
describe` show, as JSON, and the errors an operator's script gets."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import TopicPartition

from clients import consumer, flush_all, producer, unique_topic
from plugins_kit import AdminApi


def post_json(api: AdminApi, path: str, body) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.request("POST", path, raw, {"Content-Type": "application/json"})


@pytest.mark.timeout(120)
def test_topics_are_created_described_and_deleted_through_the_admin_api(broker_factory):
    b = broker_factory()
    api = AdminApi(b.admin)
    topic = unique_topic("admin-topics")
    r = post_json(api, "/v1/topics", {"name": topic, "partitions": 3,
                                      "configs": {"retention.ms": "3600000"}})
    assert r.status == 201, r
    assert r.body["name"] == topic and r.body["partitions"] == 3 and r.body["replication_factor"] == 1
    assert r.body["configs"] == {"retention.ms": "3600000"}

    p = producer(b.bootstrap)
    for i in range(10):
        p.produce(topic, value=b"x" * 50, key=b"k", partition=i % 2)
    flush_all(p)

    r = api.request("GET", f"/v1/topics/{topic}")
    assert r.status == 200, r
    details = r.body["partition_details"]
    assert [(d["partition"], d["leader"], d["replicas"], d["isr"], d["under_replicated"]) for d in details] == [
        (0, 0, [0], [0], False), (1, 0, [0], [0], False), (2, 0, [0], [0], False)]
    assert [(d["log_start_offset"], d["high_watermark"], d["log_end_offset"]) for d in details] == [
        (0, 5, 5), (0, 5, 5), (0, 0, 0)]
    assert details[0]["size_bytes"] > 5 * 50 and details[2]["size_bytes"] == 0
    assert r.body["local_size_bytes"] == sum(d["size_bytes"] for d in details)

    listed = {t["name"]: t for t in api.request("GET", "/v1/topics").body["topics"]}
    assert listed[topic]["partitions"] == 3 and listed[topic]["offline_partitions"] == 0
    assert listed["__consumer_offsets"]["internal"] is True

    # Mistakes are answered with a code and a message naming what was wrong.
    r = post_json(api, "/v1/topics", {"name": topic, "partitions": 1})
    assert (r.status, r.code) == (409, "topic_exists") and topic in r.message, r
    r = post_json(api, "/v1/topics", {"name": "bad/name"})
    assert (r.status, r.code) == (422, "invalid_topic") and "bad/name" in r.message, r
    r = post_json(api, "/v1/topics", {"name": unique_topic("x"), "partitions": 1, "colour": "red"})
    assert (r.status, r.code) == (400, "bad_request") and "colour" in r.message, r
    r = post_json(api, "/v1/topics", b"{not json")
    assert (r.status, r.code) == (400, "bad_request"), r
    r = post_json(api, "/v1/topics", {"name": unique_topic("x"), "configs": {"cleanup.policy": "sometimes"}})
    assert (r.status, r.code) == (422, "invalid_topic") and "cleanup.policy" in r.message, r
    r = api.request("GET", "/v1/topics/nope")
    assert (r.status, r.code) == (404, "unknown_topic") and "'nope'" in r.message, r
    r = api.request("DELETE", "/v1/topics/__consumer_offsets")
    assert (r.status, r.code) == (403, "internal_topic"), r

    r = api.request("DELETE", f"/v1/topics/{topic}")
    assert r.status == 204, r
    assert api.request("GET", f"/v1/topics/{topic}").status == 404
    r = api.request("DELETE", f"/v1/topics/{topic}")
    assert (r.status, r.code) == (404, "unknown_topic"), r


@pytest.mark.timeout(120)
def test_groups_show_members_assignments_offsets_and_lag(broker_factory):
    b = broker_factory()
    api = AdminApi(b.admin)
    topic = unique_topic("admin-groups")
    assert post_json(api, "/v1/topics", {"name": topic, "partitions": 2}).status == 201
    p = producer(b.bootstrap)
    for i in range(20):
        p.produce(topic, value=b"v%d" % i, partition=i % 2)
    flush_all(p)

    group = unique_topic("admin-group")
    c = consumer(b.bootstrap, **{"group.id": group, "client.id": "lag-reader"})
    c.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 20 and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            seen += 1
    assert seen == 20
    # Commit 7 of partition 0's 10 and all of partition 1's: lag 3.
    c.commit(offsets=[TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 10)], asynchronous=False)
    try:
        r = api.request("GET", f"/v1/groups/{group}")
        assert r.status == 200, r
        g = r.body
        assert (g["group"], g["state"], g["protocol_type"], g["coordinator"]) == (group, "Stable", "consumer", 0)
        assert len(g["members"]) == 1
        member = g["members"][0]
        assert member["client_id"] == "lag-reader"
        assert sorted((a["topic"], a["partition"]) for a in member["assignment"]) == [(topic, 0), (topic, 1)]
        assert [(o["topic"], o["partition"], o["committed_offset"], o["high_watermark"], o["lag"])
                for o in g["offsets"]] == [(topic, 0, 7, 10, 3), (topic, 1, 10, 10, 0)]
        assert g["lag"] == 3

        listed = {x["group"]: x for x in api.request("GET", "/v1/groups").body["groups"]}
        assert (listed[group]["state"], listed[group]["members"], listed[group]["lag"]) == ("Stable", 1, 3)
    finally:
        c.close()

    r = api.request("GET", "/v1/groups/no-such-group")
    assert (r.status, r.code) == (404, "unknown_group") and "no-such-group" in r.message, r
