"""`/metrics`: Prometheus' text format, parsed by Prometheus' own Python parser, with
counters that move exactly as the test's traffic says."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from clients import consumer, create_topic, flush_all, producer, unique_topic
from harness import quiver_bin, wait_until
from plugins_kit import AdminApi, wasm_path
import subprocess


def scrape(broker) -> tuple[dict, dict]:
    """The exposition as ({(sample name, labels): value}, {family name: type})."""
    with urllib.request.urlopen(f"http://{broker.admin}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        text = r.read().decode()
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


def series(samples, name, **labels):
    """Every sample of `name` whose labels include `labels`, by its full label set."""
    want = {(k, str(v)) for k, v in labels.items()}
    return {dict(l).get("partition", l): v for (n, l), v in samples.items()
            if n == name and want <= set(l)}


@pytest.mark.timeout(120)
def test_metrics_parse_and_count_the_traffic_of_the_test(broker_factory):
    b = broker_factory()
    before, _ = scrape(b)
    assert value(before, "quiver_controller_active") == 1
    assert value(before, "quiver_cluster_brokers", state="active") == 1
    assert value(before, "quiver_cluster_brokers", state="fenced") == 0

    topic = unique_topic("metrics")
    create_topic(b.bootstrap, topic, partitions=3)
    p = producer(b.bootstrap, **{"linger.ms": 5})
    for i in range(300):
        p.produce(topic, value=b"v" * 100, key=b"k%d" % i, partition=i % 3,
                  headers=[("h", b"x")])
    flush_all(p)

    m, types = scrape(b)
    for family, kind in [("quiver_kafka_request_duration_seconds", "histogram"),
                         ("quiver_topic_bytes_in", "counter"),
                         ("quiver_partition_high_watermark", "gauge"),
                         ("quiver_cluster_partitions", "gauge")]:
        assert types.get(family) == kind, (family, types.get(family))
    assert value(m, "quiver_topic_records_in_total", topic=topic) == 300
    sizes = series(m, "quiver_partition_size_bytes", topic=topic)
    # Batches are stored exactly as produced: every byte in is a byte on disk.
    assert value(m, "quiver_topic_bytes_in_total", topic=topic) == sum(sizes.values()) > 300 * 100
    assert series(m, "quiver_partition_high_watermark", topic=topic) == {"0": 100, "1": 100, "2": 100}
    assert series(m, "quiver_partition_log_end_offset", topic=topic) == {"0": 100, "1": 100, "2": 100}
    assert series(m, "quiver_partition_leader", topic=topic) == {"0": 1, "1": 1, "2": 1}
    assert value(m, "quiver_cluster_partitions", state="offline") == 0
    assert value(m, "quiver_partitions_under_replicated") == 0
    produce_count = value(m, "quiver_kafka_request_duration_seconds_count", api="Produce")
    assert produce_count and produce_count >= 1
    assert value(m, "quiver_kafka_request_duration_seconds_bucket", api="Produce", le="+Inf") == produce_count
    assert value(m, "quiver_kafka_request_duration_seconds_sum", api="Produce") > 0
    assert value(m, "quiver_kafka_request_duration_seconds_count", api="Metadata") >= 1
    assert value(m, "quiver_kafka_connections_accepted_total") >= 1

    # A group reads everything, commits, and then falls 7 records behind on partition 1.
    group = unique_topic("metrics-group")
    c = consumer(b.bootstrap, **{"group.id": group, "enable.auto.commit": False})
    c.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 300 and time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is not None and msg.error() is None:
            seen += 1
    assert seen == 300
    c.commit(offsets=[TopicPartition(topic, p, 100) for p in range(3)], asynchronous=False)
    c.close()
    p = producer(b.bootstrap)
    for i in range(7):
        p.produce(topic, value=b"late", partition=1)
    flush_all(p)

    m, _ = scrape(b)
    assert series(m, "quiver_consumer_group_committed_offset", group=group) == {"0": 100, "1": 100, "2": 100}
    assert series(m, "quiver_consumer_group_lag", group=group) == {"0": 0, "1": 7, "2": 0}
    assert value(m, "quiver_consumer_group_members", group=group) == 0
    assert value(m, "quiver_consumer_group_state", group=group, state="Empty") == 1
    # Each batch was fetched once by the one consumer (and the late one perhaps by a
    # long poll the consumer left behind as it closed).
    now_stored = sum(series(m, "quiver_partition_size_bytes", topic=topic).values())
    assert sum(sizes.values()) <= value(m, "quiver_topic_bytes_out_total", topic=topic) <= now_stored
    assert value(m, "quiver_topic_records_in_total", topic=topic) == 307
    assert value(m, "quiver_kafka_request_duration_seconds_count", api="OffsetCommit") >= 1


@pytest.mark.timeout(120)
def test_plugin_and_throttle_metrics_follow_calls_and_quotas(broker_factory):
    b = broker_factory()
    api = AdminApi(b.admin)
    r = api.deploy("m2", wasm_path("murmur2").read_bytes())
    assert r.status in (200, 201), r
    topic = unique_topic("metrics-plugin")
    create_topic(b.bootstrap, topic, partitions=4, config={"partitioner": "m2"})
    for batch in range(5):
        r = api.produce(topic, [{"key": f"k{batch}-{i}", "value": "v"} for i in range(20)])
        assert r.status == 200, r

    m, _ = scrape(b)
    labels = {"plugin": "m2", "kind": "partitioner"}
    assert value(m, "quiver_plugin_records_total", **labels) == 100
    calls = value(m, "quiver_plugin_calls_total", **labels)
    assert calls >= 5
    assert value(m, "quiver_plugin_call_duration_seconds_count", **labels) == calls
    assert value(m, "quiver_plugin_call_duration_seconds_bucket", le="+Inf", **labels) == calls
    assert value(m, "quiver_plugin_errors_total", **labels) == 0
    assert value(m, "quiver_plugin_traps_total", **labels) == 0
    assert value(m, "quiver_plugin_version", **labels) == 1
    assert value(m, "quiver_plugin_failed", **labels) == 0

    # A client over its producer_byte_rate is throttled, and the time shows up under
    # its quota type (no tenant).
    subprocess.run([quiver_bin(), "quota", "set", "--client-id", "slow", "--producer-byte-rate", "20000",
                    "--admin", b.admin], check=True, capture_output=True, timeout=30)
    flood = unique_topic("metrics-flood")
    create_topic(b.bootstrap, flood, partitions=1)
    p = producer(b.bootstrap, **{"client.id": "slow", "linger.ms": 0})
    for _ in range(60):
        p.produce(flood, value=bytes(2000))
    flush_all(p)

    def throttled():
        m, _ = scrape(b)
        return value(m, "quiver_quota_throttle_seconds_total", tenant="", quota="producer_byte_rate")

    wait_until(lambda: (throttled() or 0) > 0.5, 30, "throttle time to be counted")
    m, _ = scrape(b)
    assert value(m, "quiver_quota_throttled_requests_total", tenant="", quota="producer_byte_rate") >= 1


def test_every_metric_is_documented(broker_factory):
    """docs/monitoring.md lists every family the broker exposes, so the reference
    cannot fall behind the code."""
    b = broker_factory()
    _, types = scrape(b)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    missing = [name for name, kind in types.items()
               if f"`{name}`" not in doc and f"`{name}_total`" not in doc]
    assert not missing, f"docs/monitoring.md does not describe: {missing}"
    assert len(types) >= 50, sorted(types)


@pytest.mark.timeout(180)
def test_transform_and_mirror_lag_and_latency(broker_factory):
    """A transform's and a mirror's lag and latency in /metrics: records stamped five
    seconds in the past come out with a latency of at least five seconds (it is measured
    from the record's timestamp), and the lag drops to 0 once everything is copied."""
    from transforms_kit import deploy_transform_plugin, transform_cli
    from plugins_kit import plugin_cli, quiver

    b = broker_factory(sets={"cluster.id": "metrics-target"})
    source = broker_factory(sets={"cluster.id": "metrics-source"})
    deploy_transform_plugin(b, "redact", "json-redact")
    plugin_cli(b, "deploy", "mirror", "--kind", "connector", "--file", str(wasm_path("mirror")))

    stamp = int(time.time() * 1000) - 5000
    t_in, t_out = unique_topic("metrics-raw"), unique_topic("metrics-clean")
    create_topic(b.bootstrap, t_in, partitions=2)
    create_topic(b.bootstrap, t_out, partitions=1)
    create_topic(source.bootstrap, "events", partitions=1)
    for bootstrap, topic, partitions in ((b.bootstrap, t_in, 2), (source.bootstrap, "events", 1)):
        p = producer(bootstrap)
        for i in range(30):
            p.produce(topic, key=b"k%d" % i, value=b'{"user": {"email": "a@b"}}', partition=i % partitions,
                      timestamp=stamp)
        flush_all(p)

    transform_cli(b, "deploy", "--name", "clean", "--plugin", "redact", "--input", t_in, "--output", t_out,
                  "--config", "paths=user.email")
    quiver("mirror", "create", "from-src", "--source", source.bootstrap, "--source-alias", "src",
           "--topics", "events", "--admin", b.admin)

    def done():
        m, _ = scrape(b)
        ins = series(m, "quiver_transform_records_in_total", transform="clean")
        mirrored = value(m, "quiver_mirror_records_total", mirror="from-src")
        return (sum(ins.values()) == 30 and mirrored == 30
                and set(series(m, "quiver_transform_lag", transform="clean").values()) == {0}
                and value(m, "quiver_mirror_lag", mirror="from-src", topic="events", partition="0") == 0)

    wait_until(done, 120, "the transform and the mirror to copy all 30 records and catch up")
    m, _ = scrape(b)
    assert series(m, "quiver_transform_lag", transform="clean") == {"0": 0, "1": 0}
    assert series(m, "quiver_transform_records_in_total", transform="clean") == {"0": 15, "1": 15}
    for partition in ("0", "1"):
        p50 = value(m, "quiver_transform_latency_seconds", transform="clean", partition=partition, quantile="0.5")
        p99 = value(m, "quiver_transform_latency_seconds", transform="clean", partition=partition, quantile="0.99")
        assert 5.0 <= p50 <= p99 < 60.0, (partition, p50, p99)
    assert value(m, "quiver_mirror_lag", mirror="from-src", topic="events", partition="0") == 0
    p50 = value(m, "quiver_mirror_latency_seconds", mirror="from-src", quantile="0.5")
    p99 = value(m, "quiver_mirror_latency_seconds", mirror="from-src", quantile="0.99")
    assert 5.0 <= p50 <= p99 < 60.0, (p50, p99)

    # The admin API shows the same figures, the transform's as its slowest partition's.
    described = AdminApi(b.admin).request("GET", "/v1/transforms/clean")
    assert described.status == 200, described
    body = described.body
    worst = max(p["latency_p99_ms"] for p in body["partitions"])
    assert body["latency_p99_ms"] == worst >= 5000, body
