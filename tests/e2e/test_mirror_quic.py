"""Mirroring over QUIC (`--via quic`): two one-broker clusters, each with its own CA
made by `quiver cluster certs`; the source trusts the target's CA for mirror clients
(cluster.mirror_clients_ca) and the mirror trusts the source's CA (--source-ca). The
records and group offsets must arrive exactly as over the Kafka protocol
(test_mirror.py); a target the source does not trust is refused, and says why."""

from __future__ import annotations

import json
import os
import random
import subprocess

import pytest

from clients import create_topic
from harness import PortSlot, quiver_bin, wait_until
from plugins_kit import quiver
from test_mirror import (PROVENANCE, deploy_mirror_plugin, describe, group_commit, mirror_cli,
                         source_records, wait_caught_up)
from transforms_kit import produce, read_topic


def certs(base, cluster_id: str):
    out = base / f"certs-{cluster_id}"
    quiver("cluster", "certs", "--cluster-id", cluster_id, "--brokers", "0", "--out", str(out))
    return out


def cluster(broker_factory, cluster_id: str, tls_dir, mirror_clients_ca=None):
    sets = {"cluster.id": cluster_id, "cluster.tls_dir": str(tls_dir)}
    if mirror_clients_ca is not None:
        sets["cluster.mirror_clients_ca"] = str(mirror_clients_ca)
    return broker_factory(sets=sets)


def create_quic_mirror(target, source, source_tls, name: str, *extra: str, check: bool = True):
    return mirror_cli(target, "create", name, "--source", f"127.0.0.1:{source.slot.cluster_port}",
                      "--source-alias", "us-east", "--via", "quic", "--source-ca", str(source_tls / "ca.pem"),
                      "--discovery-interval-ms", "500", "--checkpoint-interval-ms", "500", *extra,
                      check=check)


def assert_copied(east, west, partitions: int, per: int):
    """us-east.orders on west holds every record of orders on east: same offsets, keys,
    values and timestamps, in order, the headers with east's provenance appended."""
    source = read_topic(east.bootstrap, "orders", partitions)
    target = read_topic(west.bootstrap, "us-east.orders", partitions)
    for p in range(partitions):
        assert len(target[p]) == len(source[p]) == per, p
        for (so, sk, sv, sh, sts), (to, tk, tv, th, tts) in zip(source[p], target[p]):
            assert (to, tk, tv, tts) == (so, sk, sv, sts), (p, so)
            assert th == sh + [(PROVENANCE, b"us-east")], (p, so, th)


def test_mirror_over_quic_copies_records_and_translates_group_offsets(broker_factory, tmp_path):
    east_tls, west_tls = certs(tmp_path, "us-east"), certs(tmp_path, "eu-west")
    east = cluster(broker_factory, "us-east", east_tls, mirror_clients_ca=west_tls / "ca.pem")
    west = cluster(broker_factory, "eu-west", west_tls)
    partitions, n = 4, 4000
    create_topic(east.bootstrap, "orders", partitions, {"retention.ms": "86400000"})
    create_topic(east.bootstrap, "payments", 1)
    produce(east.bootstrap, "orders", source_records(n, partitions, "q"))
    per = n // partitions
    consumed = {p: int(per * 0.6) + p for p in range(partitions)}
    group_commit(east.bootstrap, "billing", "orders", consumed)

    deploy_mirror_plugin(west)
    create_quic_mirror(west, east, east_tls, "east", "--topics", "orders", "--groups", "billing")
    report = wait_caught_up(west, "east", "orders", {p: per for p in range(partitions)}, timeout=60)
    assert report["via"] == "quic", report
    assert report["status"] == "running", report
    assert report["report"]["source_cluster_id"] == "us-east"
    assert "payments" not in report["report"]["topics"], "a topic outside --topics was mirrored"

    assert_copied(east, west, partitions, per)
    described = quiver("topic", "describe", "us-east.orders", "--bootstrap", west.bootstrap).stdout
    assert "retention.ms" in described and "86400000" in described, described

    def checkpointed():
        out = json.loads(mirror_cli(west, "checkpoints", "east", "--json").stdout)
        return out["groups"].get("billing")
    wait_until(checkpointed, 30, "a checkpoint of group billing over QUIC")
    checkpoint = checkpointed()
    assert sorted((o["partition"], o["source_offset"]) for o in checkpoint["offsets"]) == \
        sorted(consumed.items()), checkpoint
    # The source's log names the mirror client, of the target cluster.
    assert "mirror client connected" in east.stderr_text() and "eu-west" in east.stderr_text()


def test_a_target_the_source_does_not_trust_is_refused_with_the_reason(broker_factory, tmp_path):
    east_tls, west_tls = certs(tmp_path, "us-east"), certs(tmp_path, "eu-west")
    # The source trusts no other cluster's brokers.
    east = cluster(broker_factory, "us-east", east_tls)
    west = cluster(broker_factory, "eu-west", west_tls)
    create_topic(east.bootstrap, "orders", 1)
    deploy_mirror_plugin(west)

    # Without the source's CA the mirror is refused at once.
    no_ca = mirror_cli(west, "create", "m", "--source", f"127.0.0.1:{east.slot.cluster_port}",
                       "--source-alias", "us-east", "--via", "quic", check=False)
    assert no_ca.returncode != 0 and "--source-ca" in no_ca.stderr, no_ca.stderr

    create_quic_mirror(west, east, east_tls, "east")
    last = {}

    def refused():
        nonlocal last
        last = describe(west, "east")
        return "mirror_clients_ca" in ((last.get("report") or {}).get("reason") or "")
    wait_until(refused, 30, "the mirror to report the source's refusal")
    reason = last["report"]["reason"]
    assert last["status"] == "retrying", last
    assert "not signed by this cluster's CA" in reason, reason
    assert f"127.0.0.1:{east.slot.cluster_port}" in reason, reason
    assert "cluster handshake failed" in east.stderr_text()

    # The wrong CA for the source: the mirror refuses the source, naming it.
    mirror_cli(west, "delete", "east")
    create_quic_mirror(west, east, west_tls, "wrong-ca")

    def distrusted():
        nonlocal last
        last = describe(west, "wrong-ca")
        return "source CA" in ((last.get("report") or {}).get("reason") or "")
    wait_until(distrusted, 30, "the mirror to refuse a source its CA did not sign")
    assert "not signed by the source CA" in last["report"]["reason"], last


def test_a_quic_mirror_crosses_a_lossy_long_link(broker_factory, tmp_path):
    """2 % of datagrams lost each way on an 80 ms round trip (quiver-netdelay in front of
    the source's QUIC port, which the source advertises): every record still arrives,
    in order. A loss-based controller gets ~0.2 MB/s on such a link, so the 16 MB here
    would take minutes and each multi-megabyte fetch answer would miss any fixed
    deadline; pacing at the measured bandwidth copies it in seconds."""
    netdelay = os.path.join(os.path.dirname(quiver_bin()), "quiver-netdelay")
    if not os.path.exists(netdelay):
        pytest.fail(f"quiver-netdelay not found next to {quiver_bin()} (build the workspace)")
    east_tls, west_tls = certs(tmp_path, "us-east"), certs(tmp_path, "eu-west")
    link_slot = PortSlot()
    link = None
    try:
        link_port = link_slot.cluster_port
        east = broker_factory(sets={"cluster.id": "us-east", "cluster.tls_dir": str(east_tls),
                                    "cluster.mirror_clients_ca": str(west_tls / "ca.pem"),
                                    "cluster.advertised": f"127.0.0.1:{link_port}"})
        west = cluster(broker_factory, "eu-west", west_tls)
        link_slot.release()  # the proxy takes the port now
        link = subprocess.Popen([netdelay, "--udp", "--listen", f"127.0.0.1:{link_port}",
                                 "--upstream", f"127.0.0.1:{east.slot.cluster_port}",
                                 "--delay-ms", "40", "--loss-pct", "2", "--seed", "11"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert link.stdout.readline().startswith("listening on "), link.stderr.read()

        partitions, n = 4, 4000
        rng = random.Random(5)
        # 4 KiB of noise per record: zstd cannot shrink what the link must carry.
        records = [{"key": f"k{i}".encode(), "value": rng.randbytes(4096),
                    "headers": [("seq", str(i).encode())], "partition": i % partitions}
                   for i in range(n)]
        create_topic(east.bootstrap, "orders", partitions)
        produce(east.bootstrap, "orders", records)
        deploy_mirror_plugin(west)
        mirror_cli(west, "create", "east", "--source", f"127.0.0.1:{link_port}",
                   "--source-alias", "us-east", "--via", "quic", "--source-ca", str(east_tls / "ca.pem"),
                   "--topics", "orders")
        per = n // partitions
        report = wait_caught_up(west, "east", "orders", {p: per for p in range(partitions)}, timeout=90)
        assert report["status"] == "running", report

        assert_copied(east, west, partitions, per)
    finally:
        link_slot.release()
        if link is not None:
            link.kill()
            _, err = link.communicate()
            print(f"quiver-netdelay: {err.strip()}")
