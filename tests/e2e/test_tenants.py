"""Tenants: `quiver tenant create` makes a namespace with principals and limits; the
tenant's clients (confluent-kafka over SASL_PLAINTEXT/SCRAM) work inside it and are
refused outside it and past its limits, each with the Kafka error and a message naming
the limit."""

from __future__ import annotations

import json
import subprocess

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

import securitykit as sk
from clients import DeliveryLog, consumer, producer
from harness import quiver_bin, wait_until

def cli(broker, *args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([quiver_bin(), *args, "--admin", broker.admin], capture_output=True,
                          text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"quiver {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def secured_broker(broker_factory, **sets):
    """A broker with the authorizer on, a SASL_PLAINTEXT listener (returned as the
    second value) and the harness's PLAINTEXT listener for readiness."""
    b = broker_factory(start=False)
    sasl = f"127.0.0.1:{b.slot.base + 3}"
    b.sets.update({
        "kafka.listeners.sasl.listen": sasl,
        "kafka.listeners.sasl.security_protocol": "SASL_PLAINTEXT",
        "security.authorizer": "true",
        "security.super_users": "User:admin",
        **sets,
    })
    b.start()
    return b, sasl


def sasl_conf(bootstrap, user, password, mechanism="SCRAM-SHA-512"):
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password,
            "socket.timeout.ms": 10000}


def failure(fut):
    with pytest.raises(KafkaException) as ei:
        fut.result(timeout=30)
    return ei.value.args[0]


@pytest.mark.timeout(180)
def test_a_tenant_works_inside_its_namespace_and_is_refused_outside_and_past_limits(broker_factory):
    b, sasl = secured_broker(broker_factory)
    cli(b, "tenant", "create", "acme", "--prefix", "acme.", "--user", "acme-app:pw-acme",
        "--max-partitions", "4", "--max-retention-ms", "3600000")
    cli(b, "tenant", "create", "globex", "--prefix", "globex.", "--user", "globex-app:pw-globex")
    acme = AdminClient(sasl_conf(sasl, "acme-app", "pw-acme"))

    acme.create_topics([NewTopic("acme.orders", 3)])["acme.orders"].result(timeout=30)
    # The tenant's retention limit is the topic's default.
    res = ConfigResource(ConfigResource.Type.TOPIC, "acme.orders")
    configs = acme.describe_configs([res])[res].result(timeout=30)
    assert configs["retention.ms"].value == "3600000"

    err = failure(acme.create_topics([NewTopic("acme.more", 2)])["acme.more"])
    assert err.code() == KafkaError.POLICY_VIOLATION
    assert "max_partitions" in err.str() and "at most 4" in err.str(), err.str()

    err = failure(acme.create_topics([NewTopic("globex.steal", 1)])["globex.steal"])
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert "tenant acme" in err.str() and "acme." in err.str(), err.str()

    err = failure(acme.create_topics([NewTopic("acme.forever", 1, config={"retention.ms": "-1"})])
                  ["acme.forever"])
    assert err.code() == KafkaError.POLICY_VIOLATION
    assert "max_retention_ms" in err.str(), err.str()

    err = failure(acme.create_partitions([NewPartitions("acme.orders", 5)])["acme.orders"])
    assert err.code() == KafkaError.POLICY_VIOLATION, err

    # Inside its namespace the tenant produces and consumes as usual.
    p = producer(sasl, **{k: v for k, v in sasl_conf(sasl, "acme-app", "pw-acme").items()
                          if k != "bootstrap.servers"})
    log = DeliveryLog()
    for i in range(30):
        p.produce("acme.orders", key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % 3,
                  headers=[("n", str(i).encode())], on_delivery=log.callback(i))
    assert p.flush(30) == 0 and not log.errors, log.errors
    c = consumer(sasl, **{k: v for k, v in sasl_conf(sasl, "acme-app", "pw-acme").items()
                          if k != "bootstrap.servers"}, **{"group.id": "acme.readers"})
    try:
        c.subscribe(["acme.orders"])
        seen = {}
        def read_all():
            for m in c.consume(100, timeout=0.5):
                assert m.error() is None, m.error()
                seen[int(m.headers()[0][1])] = (m.partition(), m.offset(), m.key(), m.value())
            return len(seen) == 30
        wait_until(read_all, 60, "the tenant's consumer group reads its 30 records")
    finally:
        c.close()
    for i in range(30):
        assert seen[i] == (i % 3, log.ok[i][1], f"k{i}".encode(), f"v{i}".encode())
    # Offsets per partition are 0..9, in produce order.
    for part in range(3):
        assert sorted(o for (pp, o, _, _) in seen.values() if pp == part) == list(range(10))

    # The other tenant sees nothing of it and cannot touch it.
    globex = AdminClient(sasl_conf(sasl, "globex-app", "pw-globex"))
    assert not [t for t in globex.list_topics(timeout=10).topics if t.startswith("acme.")]
    gp = producer(sasl, **{k: v for k, v in sasl_conf(sasl, "globex-app", "pw-globex").items()
                           if k != "bootstrap.servers"})
    glog = DeliveryLog()
    gp.produce("acme.orders", value=b"x", partition=0, on_delivery=glog.callback(0))
    gp.flush(30)
    assert glog.errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    described = json.loads(cli(b, "tenant", "describe", "acme", "--json").stdout)
    assert described["usage"]["partitions"] == 3
    assert described["usage"]["topics"] == ["acme.orders"]
    assert described["principals"] == ["User:acme-app"]


def scram_login(bootstrap, user, password):
    """A SCRAM-SHA-256 login over a raw connection; returns the connection and the error
    code and message of the step that refused it (0 and None when admitted)."""
    conn = sk.KConn(bootstrap)
    try:
        conn.login("SCRAM-SHA-256", user, password)
    except sk.LoginRefused as refused:
        return conn, refused.code, refused.message
    return conn, 0, None


@pytest.mark.timeout(120)
def test_stored_bytes_and_connections_limits_refuse_with_the_limit_named(broker_factory):
    b, sasl = secured_broker(broker_factory)
    cli(b, "tenant", "create", "small", "--prefix", "small.", "--user", "small-app:pw",
        "--max-stored-bytes", "50000", "--max-connections", "2")
    conf = {k: v for k, v in sasl_conf(sasl, "small-app", "pw").items() if k != "bootstrap.servers"}
    # The super user makes the topic: an admin client of the tenant would hold two of its
    # connections.
    cli(b, "user", "create", "admin", "--password", "pw-admin")
    admin = AdminClient(sasl_conf(sasl, "admin", "pw-admin"))
    admin.create_topics([NewTopic("small.data", 1)])["small.data"].result(timeout=30)

    # Connections: two logins are admitted, the third is refused and says why; closing
    # one makes room again.
    first, code, _ = scram_login(sasl, "small-app", "pw")
    assert code == 0
    second, code, _ = scram_login(sasl, "small-app", "pw")
    assert code == 0
    third, code, message = scram_login(sasl, "small-app", "pw")
    assert code == 58 and "max_connections" in message, (code, message)
    third.wait_closed()
    first.close()
    def admitted():
        conn, code, _ = scram_login(sasl, "small-app", "pw")
        conn.close()
        return code == 0
    wait_until(admitted, 10, "a login is admitted once a connection closed")
    second.close()

    # Stored bytes: under the limit produce works; once the tenant holds more, produce is
    # refused with POLICY_VIOLATION until room is made.
    p = producer(sasl, **conf)
    log = DeliveryLog()
    for i in range(60):
        p.produce("small.data", value=bytes(1000), partition=0, on_delivery=log.callback(i))
    assert p.flush(30) == 0 and not log.errors, log.errors
    def over_limit():
        usage = json.loads(cli(b, "tenant", "describe", "small", "--json").stdout)["usage"]
        return usage["stored_bytes_here"] >= 50000
    wait_until(over_limit, 10, "the tenant's stored bytes pass its limit")
    refused = DeliveryLog()
    def refused_now():
        p.produce("small.data", value=b"more", partition=0, on_delivery=refused.callback(len(refused.errors)))
        p.flush(30)
        return bool(refused.errors)
    wait_until(refused_now, 10, "produce is refused past max_stored_bytes")
    assert all(e.code() == KafkaError.POLICY_VIOLATION for e in refused.errors.values())
    # A topic outside every tenant is not affected (the super user writes it).
    ap = producer(sasl, **{k: v for k, v in sasl_conf(sasl, "admin", "pw-admin").items()
                           if k != "bootstrap.servers"})
    alog = DeliveryLog()
    ap.produce("shared", value=b"ok", on_delivery=alog.callback(0))
    assert ap.flush(30) == 0 and not alog.errors and alog.ok[0] == (0, 0), (alog.errors, alog.ok)
