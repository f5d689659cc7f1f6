"""The delayed link (delayproxy.py) tested on its own, against small local servers (no
broker): the delay is a floor in each direction, it does not serialise a pipeline,
large streams arrive intact both ways, cut() drops connections without losing the
proxy, set_delay() applies to what follows, and the script form works.

Only lower bounds are asserted on elapsed time, except for the pipelining bound, which
is a factor of 4 away from what a serialising proxy would take."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from delayproxy import CHUNK, DelayProxy

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).resolve().parent
IO_TIMEOUT = 10.0


class Server:
    """A TCP server on 127.0.0.1 running `handler(conn)` on a thread per connection;
    close() shuts every connection it still has."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    @property
    def active(self) -> int:
        with self.lock:
            return len(self.conns)

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            conn.settimeout(IO_TIMEOUT)
            with self.lock:
                self.conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket):
        try:
            self.handler(conn)
        except OSError:
            pass  # the client or the proxy went away: the point of some tests
        finally:
            with self.lock:
                self.conns.discard(conn)
            conn.close()

    def close(self):
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown does.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.accepter.join(5)
        for t in self.threads:
            t.join(5)


def echo(conn: socket.socket):
    while data := conn.recv(65536):
        conn.sendall(data)


def sink_hash(conn: socket.socket):
    """Reads to end of stream, then answers with the byte count and sha256 of it."""
    h, n = hashlib.sha256(), 0
    while data := conn.recv(1 << 20):
        h.update(data)
        n += len(data)
    conn.sendall(struct.pack(">Q", n) + h.digest())


@pytest.fixture
def servers():
    started: list[Server] = []

    def make(handler) -> Server:
        s = Server(handler)
        started.append(s)
        return s
    yield make
    for s in started:
        s.close()


@pytest.fixture
def proxies():
    started: list[DelayProxy] = []

    def make(port: int, delay_ms: float = 40.0) -> DelayProxy:
        p = DelayProxy("127.0.0.1", port, delay_ms)
        started.append(p)
        return p.start()
    yield make
    for p in started:
        p.stop()


@pytest.fixture
def echo_proxy(servers, proxies) -> DelayProxy:
    return proxies(servers(echo).port, 40.0)


def connect(proxy: DelayProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = s.recv(min(n - len(buf), 1 << 20))
        if not data:
            raise EOFError(f"end of stream after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def round_trip(s: socket.socket, msg: bytes) -> tuple[bytes, float]:
    t0 = time.monotonic()
    s.sendall(msg)
    got = recv_exactly(s, len(msg))
    return got, time.monotonic() - t0


def wait_until(cond, timeout: float = IO_TIMEOUT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_round_trip_costs_twice_the_delay(echo_proxy):
    with connect(echo_proxy) as s:
        for i in range(3):
            msg = f"ping {i}".encode()
            got, elapsed = round_trip(s, msg)
            assert got == msg
            assert elapsed >= 0.080, f"round trip {i} took {elapsed * 1000:.1f} ms, under 2 x 40 ms"
    assert echo_proxy.connections == 1
    assert echo_proxy.bytes_up == echo_proxy.bytes_down == 3 * len(b"ping 0")


@pytest.mark.parametrize("pace_ms", [0, 1], ids=["back_to_back", "paced"])
def test_pipeline_is_not_serialised_by_the_delay(echo_proxy, pace_ms):
    # Back to back, the messages merge into a few reads at the proxy; paced 1 ms apart
    # (still never waiting for an echo) each one is read, queued and delayed on its own,
    # which is what exposes a proxy paying the delay once per chunk.
    msgs = [(f"{i:06d}".encode() * 200)[:1024] for i in range(200)]
    with connect(echo_proxy) as s:
        t0 = time.monotonic()
        for m in msgs:
            s.sendall(m)
            if pace_ms:
                time.sleep(pace_ms / 1000)
        got = recv_exactly(s, 200 * 1024)
        elapsed = time.monotonic() - t0
    assert got == b"".join(msgs), "echoes corrupted or out of order"
    # Serialised per message this would take 200 x 80 ms = 16 s; pipelined it takes
    # the sending time plus about one round trip.
    assert elapsed >= 0.080
    assert elapsed < 200 * 0.080 / 4, f"200 pipelined messages took {elapsed:.2f} s"


def test_bulk_throughput_is_not_capped_by_the_delay(servers, proxies):
    # A proxy that waits out the delay before reading again moves at most one read
    # (CHUNK bytes) per delay: 8 MiB at 200 ms would take at least 6.4 s. Pipelined,
    # it takes one delay each way plus the transfer itself.
    delay_ms, size = 200.0, 8 << 20
    proxy = proxies(servers(sink_hash).port, delay_ms)
    data = os.urandom(size)
    with connect(proxy) as s:
        t0 = time.monotonic()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        n, digest = struct.unpack(">Q32s", recv_exactly(s, 40))
        elapsed = time.monotonic() - t0
    assert (n, digest) == (size, hashlib.sha256(data).digest())
    serialised_floor = size / CHUNK * delay_ms / 1000
    assert elapsed >= 2 * delay_ms / 1000
    assert elapsed < serialised_floor / 4, f"8 MiB took {elapsed:.2f} s"


def test_large_stream_up_arrives_intact(servers, proxies):
    proxy = proxies(servers(sink_hash).port)
    data = os.urandom(8 << 20)
    with connect(proxy) as s:
        s.sendall(data)
        # The half-close must cross the proxy for the sink to answer at all.
        s.shutdown(socket.SHUT_WR)
        n, digest = struct.unpack(">Q32s", recv_exactly(s, 40))
        assert s.recv(1) == b"", "the proxy did not forward the upstream's close"
    assert n == len(data)
    assert digest == hashlib.sha256(data).digest()
    assert proxy.bytes_up == len(data)
    assert proxy.bytes_down == 40


def test_large_stream_down_arrives_intact(servers, proxies):
    data = os.urandom(8 << 20)

    def source(conn: socket.socket):
        conn.sendall(data)
    proxy = proxies(servers(source).port)
    h, n = hashlib.sha256(), 0
    with connect(proxy) as s:
        while chunk := s.recv(1 << 20):
            h.update(chunk)
            n += len(chunk)
    assert n == len(data)
    assert h.digest() == hashlib.sha256(data).digest()
    assert proxy.bytes_down == len(data)


def test_cut_drops_open_connections_and_new_ones_work(servers, proxies):
    server = servers(echo)
    proxy = proxies(server.port)
    with connect(proxy) as old:
        # A round trip first, so the proxy has surely paired this connection.
        assert round_trip(old, b"before")[0] == b"before"
        proxy.cut()
        try:
            assert old.recv(1) == b""
        except ConnectionResetError:
            pass  # a reset is what a cut link looks like too
        wait_until(lambda: server.active == 0, what="the upstream side of the cut connection to close")
    with connect(proxy) as new:
        got, elapsed = round_trip(new, b"after")
        assert got == b"after"
        assert elapsed >= 0.080
    assert proxy.connections == 2


def test_set_delay_applies_to_what_follows(echo_proxy):
    with connect(echo_proxy) as s:
        assert round_trip(s, b"at 40")[1] >= 0.080
        echo_proxy.set_delay(100)
        assert echo_proxy.delay_ms == 100
        got, elapsed = round_trip(s, b"at 100")
        assert got == b"at 100"
        assert elapsed >= 0.200, f"round trip took {elapsed * 1000:.1f} ms, under 2 x 100 ms"
        echo_proxy.set_delay(0)
        assert echo_proxy.delay_ms == 0
        assert round_trip(s, b"at 0")[0] == b"at 0"
    with pytest.raises(ValueError):
        echo_proxy.set_delay(-1)


def test_a_failing_connection_does_not_hurt_the_others(echo_proxy):
    with connect(echo_proxy) as healthy, connect(echo_proxy) as doomed:
        assert round_trip(doomed, b"x")[0] == b"x"
        # Close with a reset (linger 0) while data is in flight towards it.
        doomed.sendall(b"y" * 4096)
        doomed.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        doomed.close()
        assert round_trip(healthy, b"still here")[0] == b"still here"


def test_unreachable_upstream_closes_only_that_connection(servers, proxies):
    # A port that was free a moment ago: connections to it are refused.
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead_port = probe.getsockname()[1]
    proxy = proxies(dead_port)
    for _ in range(2):
        with connect(proxy) as s:
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
    assert proxy.connections == 2


def test_stop_closes_connections_and_is_idempotent(servers):
    server = servers(echo)
    with DelayProxy("127.0.0.1", server.port, delay_ms=10) as proxy:
        assert proxy.address == f"127.0.0.1:{proxy.port}" and proxy.port > 0
        s = connect(proxy)
        try:
            assert round_trip(s, b"hi")[0] == b"hi"
            proxy.stop()
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
        finally:
            s.close()
        proxy.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()


def test_script_prints_its_address_and_stops_on_sigterm(servers):
    server = servers(echo)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "delayproxy.py"), "--upstream", f"127.0.0.1:{server.port}",
         "--listen", "127.0.0.1:0", "--delay-ms", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
            got, elapsed = round_trip(s, b"via the script")
            assert got == b"via the script"
            assert elapsed >= 0.080
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
