"""Malformed traffic on one connection closes that connection (or gets the
Kafka error) and nothing else: a healthy client keeps producing and
consuming throughout and afterwards."""

from __future__ import annotations

import socket
import struct

import pytest

import kproto
from traffic import HealthyTraffic


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def raw_conn(broker) -> kproto.Conn:
    return kproto.Conn.to(broker.bootstrap, timeout=10)


@pytest.mark.timeout(120)
def test_badinput_random_bytes(broker, rng, seed):
    with HealthyTraffic(broker.bootstrap) as h:
        for round_ in range(40):
            if round_ % 2 == 0:
                # pure noise
                junk = rng.randbytes(rng.randrange(1, 4096))
            else:
                # a plausible frame: right length, a real API key and version, random body
                body = rng.randbytes(rng.randrange(0, 512))
                payload = struct.pack(">hhi", rng.randrange(0, 70), rng.randrange(0, 16), round_) + body
                junk = struct.pack(">i", len(payload)) + payload
            with raw_conn(broker) as c:
                try:
                    c.send_raw(junk)
                    c.sock.shutdown(socket.SHUT_WR)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # already closed by the broker: fine
                try:
                    c.wait_closed(10)
                except TimeoutError as e:
                    pytest.fail(f"seed={seed} round {round_}: broker kept the connection open after "
                                f"{len(junk)} junk bytes and EOF: {e}")
            assert broker.alive(), f"seed={seed} round {round_}: broker died"
        h.wait_progress(20)
    assert broker.alive()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("length", [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 100 * 1024 * 1024 + 1],
                         ids=["2GiB-1", "2GiB", "minus1", "max_frame+1"])
def test_badinput_huge_length_prefix_closes_without_allocating(broker, length):
    rss_before = rss_bytes(broker.proc.pid)
    with HealthyTraffic(broker.bootstrap) as h:
        with raw_conn(broker) as c:
            # a length prefix and the start of a request header, then nothing
            c.send_raw(struct.pack(">I", length) + struct.pack(">hhi", 18, 0, 1))
            try:
                c.wait_closed(5)
            except TimeoutError:
                pytest.fail(f"a frame announcing {length} bytes did not close the connection; "
                            "the broker is waiting for (or allocating) it")
        h.wait_progress(20)
        rss_after = rss_bytes(broker.proc.pid)
    assert rss_after - rss_before < 512 * 1024 * 1024, f"broker RSS grew from {rss_before} to {rss_after}"


@pytest.mark.timeout(60)
def test_badinput_truncated_frame_then_close(broker):
    with HealthyTraffic(broker.bootstrap) as h:
        full = kproto.request_frame(kproto.METADATA, 1, 1, kproto.i32(-1))
        for cut in [2, 4, 6, 10, len(full) - 1]:
            with raw_conn(broker) as c:
                c.send_raw(full[:cut])
            with raw_conn(broker) as c:
                # announces 1000 bytes, sends 20, then closes
                c.send_raw(struct.pack(">i", 1000) + full[4:24])
        h.wait_progress(20)
        # the listener still answers a correct request
        with raw_conn(broker) as c:
            assert kproto.api_versions(c, 0).error_code == 0
    assert broker.alive()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("api_key", [9999, 32767, -1])
def test_badinput_unknown_api_key_closes_connection(broker, api_key):
    with HealthyTraffic(broker.bootstrap) as h:
        with raw_conn(broker) as c:
            c.send_raw(kproto.request_frame(api_key, 0, 1, b"\x00" * 8))
            try:
                got = c.wait_closed(10)
            except TimeoutError:
                pytest.fail(f"request with unknown API key {api_key}: connection neither answered nor closed")
            # Kafka cannot parse a header with an unknown key and closes the connection
            assert got == b"", f"unknown API key {api_key}: expected the connection closed, got response {got[:64]!r}"
        h.wait_progress(20)


@pytest.mark.timeout(60)
def test_badinput_api_versions_v99_gets_unsupported_version(broker):
    with HealthyTraffic(broker.bootstrap) as h:
        with raw_conn(broker) as c:
            res = kproto.api_versions(c, 99)  # the answer uses the v0 layout
            assert res.error_code == kproto.UNSUPPORTED_VERSION, kproto.error_name(res.error_code)
            assert kproto.API_VERSIONS in res.ranges, f"no ApiVersions range in {res.ranges}"
            lo, hi = res.ranges[kproto.API_VERSIONS]
            assert lo == 0 and hi >= 3, (lo, hi)
            for key in (kproto.PRODUCE, kproto.FETCH, kproto.LIST_OFFSETS, kproto.METADATA):
                assert key in res.ranges, f"API {key} missing from {sorted(res.ranges)}"
            assert res.ranges[kproto.PRODUCE][0] == 0, "Produce must be advertised from v0"
            # the connection is still usable
            again = kproto.api_versions(c, 0)
            assert again.error_code == 0 and again.ranges == res.ranges
        h.wait_progress(20)


@pytest.mark.timeout(60)
def test_badinput_unsupported_metadata_version_closes_connection(broker):
    with HealthyTraffic(broker.bootstrap) as h:
        with raw_conn(broker) as c:
            c.send_raw(kproto.request_frame(kproto.METADATA, 99, 1, kproto.i32(-1)))
            try:
                got = c.wait_closed(10)
            except TimeoutError:
                pytest.fail("Metadata v99: connection neither answered nor closed")
            assert got == b"", f"Metadata v99: Kafka closes the connection; got {got[:64]!r}"
        h.wait_progress(20)
