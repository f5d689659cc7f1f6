"""The cluster harness and the recorded workload on a one-broker "cluster" (a
single-node cluster started from a config file), on loopback and inside a
network namespace: config file, readiness, Metadata through the harness,
kill -9 / restart, SIGSTOP / SIGCONT, isolation, and the history checker over a
real run. The multi-broker tests stand on these pieces."""

from __future__ import annotations

import time

import pytest

import netns
from clients import unique_topic
from harness import ask_api_versions


def create_single(c, topic: str, partitions: int):
    c.create_topic(topic, partitions, rf=1, config={"min.insync.replicas": "1"})


@pytest.mark.timeout(180)
def test_single_node_cluster_from_config_file_crash_pause_and_history(cluster_factory, tmp_path):
    c = cluster_factory(n=1, racks={1: "rack-a"})
    b = c.broker(1)
    cfg = b.config_path.read_text()
    assert "node_id = 1" in cfg and 'rack = "rack-a"' in cfg and "session_timeout_ms = 1500" in cfg

    md = c.metadata()
    assert list(md.brokers) == [1]
    assert (md.brokers[1].host, md.brokers[1].port) == (b.host, b.port)
    topic = unique_topic("harness")
    create_single(c, topic, 3)
    assert [c.leader_of(topic, p) for p in range(3)] == [1, 1, 1]
    assert c.replicas_of(topic, 0) == [1] and c.isr_of(topic, 0) == [1]

    wl = c.workload(topic, 3, tmp_path / "wl", producers=2, consumers=1, rate=300)
    try:
        wl.start()
        wl.wait_acked(50, 60)

        # a paused broker answers nothing, and then resumes where it was
        wl.fault("pause", broker=1)
        c.pause(1)
        assert c.live_ids() == []
        assert ask_api_versions(b.host, b.port, timeout=0.5) is None
        wl.fault("resume", broker=1)
        c.resume(1)
        assert c.live_ids() == [1]
        wl.wait_acked(50, 60, what="after SIGCONT")

        wl.fault("kill", broker=1, topic=topic, p=0)
        c.kill(1)
        assert not b.alive()
        c.restart(1)
        wl.wait_acked(50, 60, what="after the restart")
        wl.stop()
        assert wl.drain().returncode == 0, wl.stderr_tail("drain")
        report = wl.check()
    finally:
        wl.close()
    assert report.ok, report.format()
    assert report.info["acked"] >= 150 and report.info["drain_incomplete"] == 0


@pytest.mark.timeout(180)
def test_single_node_consumer_reads_on_after_a_restart(cluster_factory, tmp_path):
    c = cluster_factory(n=1)
    topic = unique_topic("reads-on")
    create_single(c, topic, 3)
    wl = c.workload(topic, 3, tmp_path / "wl", producers=2, consumers=1, rate=300)
    try:
        wl.start()
        wl.wait_acked(50, 60)
        c.kill(1)
        c.restart(1)
        wl.wait_acked(50, 60, what="after the restart")
        # producers finish first; then the consumer must catch up with every ack
        wl.quiesce(60, what="after the restart")
        wl.stop()
        assert wl.drain().returncode == 0, wl.stderr_tail("drain")
        report = wl.check()
    finally:
        wl.close()
    assert report.ok, report.format()


@pytest.mark.timeout(180)
def test_single_node_cluster_in_a_namespace_isolated_and_healed(cluster_factory, tmp_path):
    c = cluster_factory(n=1, netns=True)
    topo = c.topology
    b = c.broker(1)
    assert b.host == topo.addr("b1") and netns.routes_for(topo.subnet)
    # from the root namespace the broker is unreachable (blackhole); from the
    # clients namespace the harness sees it
    assert ask_api_versions(b.host, b.port, timeout=0.5) is None
    assert list(c.metadata().brokers) == [1]
    topic = unique_topic("nsharness")
    create_single(c, topic, 2)

    wl = c.workload(topic, 2, tmp_path / "wl", producers=1, consumers=1, rate=200,
                    producer_args=["--message-timeout-ms", "60000"])
    try:
        wl.start()
        wl.wait_acked(50, 60)
        wl.fault("isolate", broker=1)
        topo.isolate("b1")
        cut = time.time()
        time.sleep(0.5)  # acks already on the wire may still land
        with pytest.raises(AssertionError):
            c.metadata()
        t_check = time.time()
        time.sleep(2.0)  # a window in which nothing may be acknowledged
        assert wl.acks_sent_after(t_check) == [], "a send made during isolation was acknowledged"
        wl.fault("heal", broker=1)
        topo.heal("b1")
        wl.wait_acked(50, 60, what="after healing")
        assert wl.acks_sent_after(cut), "nothing sent during the isolation was acknowledged after it"
        wl.stop()
        assert wl.drain().returncode == 0, wl.stderr_tail("drain")
        report = wl.check()
    finally:
        wl.close()
    assert report.ok, report.format()
    names = topo.namespaces()
    c.close()
    assert [ns for ns in netns.netns_list() if ns in names] == []
    assert netns.routes_for(topo.subnet) == []
