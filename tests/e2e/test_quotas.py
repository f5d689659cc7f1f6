"""Quotas with Kafka's semantics: a tenant producing far over its quota is held to it
while its neighbour's latency holds, a client that ignores throttle_time_ms is muted,
and quotas are managed through the Kafka API as well as `quiver quota`."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import kproto
import securitykit as sk
from clients import producer
from flood_producer import Flood
from harness import quiver_bin, wait_until
from test_disk_faults import metric
from test_tenants import cli, secured_broker, sasl_conf

QUOTA = 5_000_000  # bytes/s


def latencies(sasl, user, password, topic, seconds, rate=200):
    """Produce 1 KiB records at `rate`/s for `seconds`, each waited for; returns the
    delivery latencies in seconds."""
    conf = {k: v for k, v in sasl_conf(sasl, user, password).items() if k != "bootstrap.servers"}
    p = producer(sasl, **conf, **{"linger.ms": 0})
    out = []
    sent = {}

    def cb(i):
        def done(err, msg):
            assert err is None, err
            out.append(time.monotonic() - sent[i])
        return done

    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        sent[i] = time.monotonic()
        p.produce(topic, bytes(1024), partition=0, on_delivery=cb(i))
        p.poll(0)
        i += 1
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
    assert p.flush(30) == 0
    return out


def p99(values):
    return statistics.quantiles(values, n=100)[98]


@pytest.mark.timeout(240)
def test_a_noisy_tenant_is_held_to_its_quota_and_its_neighbour_keeps_its_latency(broker_factory, tmp_path):
    b, sasl = secured_broker(broker_factory)
    cli(b, "tenant", "create", "noisy", "--prefix", "noisy.", "--user", "noisy-app:pw1")
    cli(b, "tenant", "create", "quiet", "--prefix", "quiet.", "--user", "quiet-app:pw2")
    cli(b, "quota", "set", "--tenant", "noisy", "--producer-byte-rate", str(QUOTA))
    listed = json.loads(cli(b, "quota", "list", "--json").stdout)
    assert listed["quotas"] == [{"entity": {"tenant": "noisy"}, "values": {"producer_byte_rate": float(QUOTA)}}]
    cli(b, "user", "create", "admin", "--password", "pw-admin")
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient(sasl_conf(sasl, "admin", "pw-admin"))
    for t in ("noisy.flood", "quiet.orders"):
        admin.create_topics([NewTopic(t, 1)])[t].result(timeout=30)

    solo = latencies(sasl, "quiet-app", "pw2", "quiet.orders", 5)

    # The quota's token bucket lets one second's worth through at once; from then on the
    # tenant gets its quota. Its rate is measured over [2, 20) s of the flood.
    settle, seconds = 2, 20
    flood = Flood(tmp_path / "flood.log", sasl_conf(sasl, "noisy-app", "pw1"), "noisy.flood", seconds)
    try:
        # the neighbour is measured while the flood is throttled
        wait_until(lambda: metric(b, "quiver_quota_throttle_seconds_total", tenant="noisy",
                                  quota="producer_byte_rate"), 30, "the noisy tenant to be throttled")
        shared_from = time.monotonic()
        shared = latencies(sasl, "quiet-app", "pw2", "quiet.orders", 12)
        shared_to = time.monotonic()
        flood.wait(timeout=120)
    finally:
        flood.kill()
    start, records, errors = flood.read()
    assert not errors, f"the flood's records fail ({errors[:5]}); a quota throttles, it never refuses"
    assert shared_to - start <= seconds, \
        f"the neighbour was measured until {shared_to - start:.1f} s, after the flood ended ({seconds} s)"
    delivered = [(t - start, n) for t, n, _ in records]
    steady = [n for t, n in delivered if settle <= t < seconds]
    achieved = sum(steady) / (seconds - settle)
    total = sum(n for _, n in delivered) / seconds
    print(f"noisy tenant: {achieved / 1e6:.2f} MB/s steady, {total / 1e6:.2f} MB/s overall, quota {QUOTA / 1e6:.2f}; "
          f"quiet p99 solo {p99(solo) * 1000:.1f} ms, beside the flood {p99(shared) * 1000:.1f} ms "
          f"(measured over [{shared_from - start:.1f}, {shared_to - start:.1f}) s of the flood)")
    assert abs(achieved - QUOTA) <= 0.1 * QUOTA, achieved
    # Without the quota it would have sent far more: it tried at least 10x.
    assert len(delivered) < 10 * QUOTA * seconds / 1024
    assert p99(shared) <= 2 * max(p99(solo), 0.005), (p99(solo), p99(shared))


def produce_v3_throttled(conn, topic, records):
    """Produce v3 (throttle_time_ms follows the responses); returns (error, throttle ms)."""
    body = (kproto.string(None) + kproto.i16(1) + kproto.i32(10000)
            + kproto.array([kproto.string(topic) + kproto.array([kproto.i32(0) + kproto.kbytes(records)])]))
    r = conn.request(kproto.PRODUCE, 3, body)
    parts = r.array(lambda rr: (rr.string(), rr.array(lambda p: (p.i32(), p.i16(), p.i64(), p.i64()))))
    return parts[0][1][0][1], r.i32()


@pytest.mark.timeout(120)
def test_a_client_that_ignores_the_throttle_is_muted(broker_factory):
    b = broker_factory()
    subprocess.run([quiver_bin(), "quota", "set", "--default-user", "--producer-byte-rate", "1000000",
                    "--admin", b.admin], check=True, capture_output=True)
    records = kproto.encode_batch([kproto.Record(key=None, value=bytes(1000)) for _ in range(500)])
    with kproto.Conn.to(b.bootstrap) as conn:
        kproto.metadata_v1(conn, ["muted"])  # auto-creates the topic
        throttled = None
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < 20:
            t0 = time.monotonic()
            error, throttle = produce_v3_throttled(conn, "muted", records)
            if error != 0 and sent == 0:  # the new partition's leader is still starting
                time.sleep(0.05)
                continue
            assert error == 0, error
            sent += len(records)
            if throttled is not None:
                # The request after a throttled answer was not read before the throttle
                # had passed, although this client sent it at once.
                waited = time.monotonic() - t0
                assert waited >= throttled / 1000 * 0.9, (waited, throttled)
                break
            if throttle > 0:
                throttled = throttle
        assert throttled is not None, "never throttled: 1 MB/s was exceeded many times over"


@pytest.mark.timeout(60)
def test_quotas_through_the_kafka_api(broker_factory):
    b = broker_factory()
    with kproto.Conn.to(b.bootstrap) as conn:
        # AlterClientQuotas v0: set user=alice producer_byte_rate, and a bad key.
        def entry(entity, ops):
            return (kproto.array([kproto.string(t) + kproto.string(n) for t, n in entity])
                    + kproto.array([kproto.string(k) + struct_f64(v) + kproto.i8(1 if rm else 0)
                                    for k, v, rm in ops]))
        body = kproto.array([
            entry([("user", "alice")], [("producer_byte_rate", 2048.0, False)]),
            entry([("user", "bob")], [("bogus_rate", 1.0, False)]),
        ]) + kproto.i8(0)
        r = conn.request(49, 0, body)
        r.i32()  # throttle
        results = r.array(lambda rr: (rr.i16(), rr.string(), rr.array(lambda e: (e.string(), e.string()))))
        assert results[0][0] == 0 and results[0][2] == [("user", "alice")]
        assert results[1][0] == 42 and "bogus_rate" in results[1][1]
        # DescribeClientQuotas v0: user exact alice.
        body = kproto.array([kproto.string("user") + kproto.i8(0) + kproto.string("alice")]) + kproto.i8(0)
        r = conn.request(48, 0, body)
        r.i32()
        assert r.i16() == 0
        r.string()
        entries = r.array(lambda rr: (rr.array(lambda e: (e.string(), e.string())),
                                      rr.array(lambda v: (v.string(), struct_unpack_f64(v)))))
        assert entries == [([("user", "alice")], [("producer_byte_rate", 2048.0)])]
    listed = json.loads(subprocess.run([quiver_bin(), "quota", "list", "--json", "--admin", b.admin],
                                       check=True, capture_output=True, text=True).stdout)
    assert listed["quotas"] == [{"entity": {"user": "alice"}, "values": {"producer_byte_rate": 2048.0}}]


def struct_f64(v: float) -> bytes:
    import struct
    return struct.pack(">d", v)


def struct_unpack_f64(r) -> float:
    import struct
    return struct.unpack(">d", r.raw(8))[0]


def answered_after(bootstrap: str, source: str, started: float) -> float:
    """Opens a connection from `source` (a loopback address), sends ApiVersions and
    returns when, after `started`, the answer came."""
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(30)
    try:
        sock.bind((source, 0))
        sock.connect((host, int(port)))
        conn = kproto.Conn.__new__(kproto.Conn)
        conn.sock, conn._corr = sock, 0
        assert kproto.api_versions(conn, 0).error_code == 0
        return time.monotonic() - started
    finally:
        sock.close()


@pytest.mark.timeout(120)
def test_connections_from_one_address_are_held_to_its_creation_rate(broker_factory):
    """KIP-612: 5 connections per second from 127.0.0.1. Thirty at once: one second's
    worth is served at once, the rest at the quota's pace; another address (127.0.0.2,
    also loopback) is not held. Both kinds of entity mistakes are refused by name."""
    b = broker_factory()
    set_ip = [quiver_bin(), "quota", "set", "--ip", "127.0.0.1", "--connection-creation-rate", "5",
              "--admin", b.admin]
    subprocess.run(set_ip, check=True, capture_output=True, timeout=30)
    started = time.monotonic()
    with ThreadPoolExecutor(30) as pool:
        times = sorted(pool.map(lambda _: answered_after(b.bootstrap, "127.0.0.1", started), range(30)))
    other = answered_after(b.bootstrap, "127.0.0.2", time.monotonic())
    print(f"30 connections at 5/s: answered after {times[0]:.2f} .. {times[-1]:.2f} s "
          f"(6th {times[5]:.2f} s, 20th {times[19]:.2f} s); another address {other * 1000:.0f} ms")
    assert times[4] < 1.0, times  # the burst: one second's worth
    # The n-th connection past the burst waits for n/5 s of refill.
    for n in (10, 20, 29):
        assert times[n] >= (n + 1 - 5) / 5 * 0.9, (n, times)
    assert times[-1] <= 25 / 5 + 2, times
    assert other < 1.0, other

    bad = subprocess.run([quiver_bin(), "quota", "set", "--ip", "127.0.0.1", "--producer-byte-rate", "5",
                          "--admin", b.admin], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "an ip entity has only connection_creation_rate" in bad.stderr, bad.stderr
    bad = subprocess.run([quiver_bin(), "quota", "set", "--user", "alice", "--connection-creation-rate", "5",
                          "--admin", b.admin], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "connection_creation_rate is a quota of ip entities" in bad.stderr, bad.stderr
    bad = subprocess.run([quiver_bin(), "quota", "set", "--ip", "example.com", "--connection-creation-rate", "5",
                          "--admin", b.admin], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "ip `example.com` is not an IP address" in bad.stderr, bad.stderr


THROTTLING_QUOTA_EXCEEDED = 89


@pytest.mark.timeout(120)
def test_partition_mutations_are_held_to_the_controller_mutation_rate(broker_factory):
    """KIP-599 at 2 partitions per second: the request that takes the bucket below
    zero goes through, with a throttle time (and its connection is muted that long);
    while the debt lasts the same user's other connections are refused CreateTopics
    (v6+), CreatePartitions (v3+) and DeleteTopics (v5+) with THROTTLING_QUOTA_EXCEEDED
    and a throttle time; once it is paid they work again."""
    from kafka.protocol.admin.topics import CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest

    b = broker_factory()
    subprocess.run([quiver_bin(), "quota", "set", "--default-user", "--controller-mutation-rate", "2",
                    "--admin", b.admin], check=True, capture_output=True, timeout=30)
    # A throttled answer mutes its connection: each refusal is asked on a connection
    # of its own.
    conn, other, more = sk.connect(b.bootstrap), sk.connect(b.bootstrap), sk.connect(b.bootstrap)
    last = sk.connect(b.bootstrap)

    def create(name, partitions, conn=other):
        r = conn.call(CreateTopicsRequest, 6, topics=[{"name": name, "num_partitions": partitions,
                                                       "replication_factor": 1, "assignments": [],
                                                       "configs": []}], timeout_ms=30000, validate_only=False)
        return r.topics[0].error_code, r.topics[0].error_message, r.throttle_time_ms

    def grow(name, count, conn=other):
        r = conn.call(CreatePartitionsRequest, 3, topics=[{"name": name, "count": count, "assignments": None}],
                      timeout_ms=30000, validate_only=False)
        return r.results[0].error_code, r.results[0].error_message, r.throttle_time_ms

    def delete(name, conn=other):
        r = conn.call(DeleteTopicsRequest, 5, topic_names=[name], timeout_ms=30000)
        return r.responses[0].error_code, r.responses[0].error_message, r.throttle_time_ms

    try:
        assert create("m1", 2, conn)[0] == 0  # one second's worth
        code, _, throttle = create("m2", 4, conn)  # crosses into 2 s of debt: let through
        assert code == 0 and throttle > 1000, (code, throttle)
        started = time.monotonic()
        refusals = (("CreateTopics", create("m3", 1)), ("CreatePartitions", grow("m1", 3, more)),
                    ("DeleteTopics", delete("m1", last)))
        assert time.monotonic() - started < 1.0, "the refusals were not answered at once"
        for name, (code, message, throttle) in refusals:
            assert code == THROTTLING_QUOTA_EXCEEDED and "controller_mutation_rate" in message, (name, code, message)
            assert throttle > 0, (name, throttle)
        wait_until(lambda: create("m3", 1)[0] == 0, 10, "CreateTopics works once the debt is paid")
        wait_until(lambda: grow("m1", 3)[0] == 0, 10, "CreatePartitions works once the debt is paid")
        wait_until(lambda: delete("m2")[0] == 0, 10, "DeleteTopics works once the debt is paid")
    finally:
        for c in (conn, other, more, last):
            c.close()
