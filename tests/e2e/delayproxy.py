"""A userspace TCP proxy that adds a fixed latency to every byte, in each direction.

It owns the simulated wide-area link of the end-to-end tests and benchmarks: two
broker clusters on one machine, one reaching the other's Kafka listener only through
this proxy. The kernel here has no `tc netem`, so the delay is applied in user space.

The link adds latency without capping throughput, as a long fat pipe does: each
direction is a pipeline, not stop-and-wait. A chunk read at time t is written to the
other side at t + delay while later chunks are already queued behind it, so a round
trip costs 2 x delay however many requests are in flight. End of stream is delayed like
data and forwarded as a half-close, so request/response exchanges that end with
`shutdown(SHUT_WR)` still get their answer. `cut()` drops every open connection at once,
as a link failure would; new connections are still accepted afterwards.

The event loop runs on a daemon thread, so the proxy can sit inside a pytest process
next to blocking clients. As a script, for benchmark runs:

    python3 delayproxy.py --upstream 127.0.0.1:9092 --listen 127.0.0.1:19092 --delay-ms 40

prints `listening on HOST:PORT` once ready and runs until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import threading

CHUNK = 256 * 1024

# Bytes read but not yet written, per direction, before reading pauses. It bounds
# memory when a receiver is slow, and is far above any bandwidth-delay product met on
# loopback (64 MiB / 40 ms = 1.6 GB/s), so it does not bound throughput.
MAX_QUEUED = 64 * 1024 * 1024


class _Direction:
    """One direction of one connection: chunks waiting for their due time."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.queued = 0
        self.room = asyncio.Event()
        self.room.set()


class _Conn:
    def __init__(self, task: asyncio.Task, client: asyncio.StreamWriter):
        self.task = task
        self.writers = [client]

    def abort(self):
        for w in self.writers:
            w.transport.abort()


class DelayProxy:
    def __init__(self, upstream_host: str, upstream_port: int, delay_ms: float = 40.0,
                 listen_host: str = "127.0.0.1", listen_port: int = 0):
        self.upstream = (upstream_host, int(upstream_port))
        self.listen_host = listen_host
        self.listen_port = int(listen_port)
        self.delay_ms = float(delay_ms)
        self.port = 0
        # Bytes delivered client -> upstream and upstream -> client, and connections
        # accepted; written by the proxy's thread only, so reading them is safe.
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.port}"

    # --- control, from any thread -------------------------------------------------

    def start(self) -> "DelayProxy":
        with self._lock:
            if self._loop is not None:
                raise RuntimeError("the proxy is already started")
            # Bound here rather than on the loop thread so that a bind error reaches
            # the caller, and as one socket so that port 0 means one port (a host name
            # resolving to several addresses would get one ephemeral port each).
            sock = socket.create_server((self.listen_host, self.listen_port), backlog=128)
            self.port = sock.getsockname()[1]
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=self._run, args=(loop,), name=f"delayproxy:{self.port}",
                                      daemon=True)
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(10)
            except BaseException:
                sock.close()
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)
                raise
            self._loop, self._thread = loop, thread
        return self

    def set_delay(self, ms: float):
        """Applies to chunks read from now on; chunks already queued keep their due
        time, and order is kept either way."""
        if ms < 0:
            raise ValueError("delay_ms must be >= 0")
        self.delay_ms = float(ms)

    def cut(self):
        """Drops every open connection (both sides see a reset), as a link failure
        would; returns once they are dropped. New connections are still accepted."""
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._drop_all(), loop).result(10)

    def stop(self):
        """Closes the listener and every connection and joins the thread; idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    def __enter__(self) -> "DelayProxy":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- the loop thread ----------------------------------------------------------

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop):
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self, sock: socket.socket):
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=CHUNK)

    async def _drop_all(self):
        conns = list(self._conns)
        for c in conns:
            c.abort()
            c.task.cancel()
        await asyncio.gather(*(c.task for c in conns), return_exceptions=True)

    async def _shutdown(self):
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        self.connections += 1
        conn = _Conn(asyncio.current_task(), c_writer)
        self._conns.add(conn)
        clean = False
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK)
            conn.writers.append(u_writer)
            for w in conn.writers:
                # asyncio sets it already; set explicitly because a proxy that
                # coalesced small writes would add latency beyond the configured one.
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up, down = _Direction(), _Direction()
            tasks = [asyncio.ensure_future(t) for t in (
                self._read(c_reader, up), self._write(u_writer, up, "up"),
                self._read(u_reader, down), self._write(c_writer, down, "down"))]
            try:
                # Done when both ends of stream have been forwarded; the first error on
                # either side (reset, refused write) ends the pair at once.
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                clean = len(done) == len(tasks) and all(t.exception() is None for t in done)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # cut() or stop() drops this connection on purpose: not an error
        except Exception:
            # An unreachable upstream, a reset, or anything else: it ends this pair
            # only, never the proxy.
            pass
        finally:
            self._conns.discard(conn)
            if clean:
                for w in conn.writers:
                    w.close()
            else:
                conn.abort()

    async def _read(self, reader: asyncio.StreamReader, d: _Direction):
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(CHUNK)
            # End of stream is a packet on the wire too: it gets its due time and
            # queues behind the data before it.
            d.queue.put_nowait((loop.time() + self.delay_ms / 1000.0, data))
            if not data:
                return
            d.queued += len(data)
            if d.queued >= MAX_QUEUED:
                d.room.clear()
                await d.room.wait()

    async def _write(self, writer: asyncio.StreamWriter, d: _Direction, direction: str):
        loop = asyncio.get_running_loop()
        while True:
            due, data = await d.queue.get()
            # A loop, because a timer may fire a hair early and the delay is a floor.
            while (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            # Counted before the write, which may hand the bytes to the peer at once:
            # whoever has received them must find them counted.
            if direction == "up":
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            writer.write(data)
            d.queued -= len(data)
            if d.queued < MAX_QUEUED:
                d.room.set()
            # Backpressure from the receiver holds back this writer only; the reader
            # keeps timestamping, so a slow receiver never turns delay into queueing
            # of delays.
            await writer.drain()


def _host_port(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description="A TCP proxy that delays every byte in each direction.")
    ap.add_argument("--upstream", required=True, type=_host_port, help="HOST:PORT to forward to")
    ap.add_argument("--listen", default=("127.0.0.1", 0), type=_host_port,
                    help="HOST:PORT to listen on (port 0: any free port; default 127.0.0.1:0)")
    ap.add_argument("--delay-ms", type=float, default=40.0, help="one-way delay (default 40)")
    args = ap.parse_args(argv)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    proxy = DelayProxy(*args.upstream, delay_ms=args.delay_ms, listen_host=args.listen[0],
                       listen_port=args.listen[1]).start()
    try:
        print(f"listening on {proxy.address}", flush=True)
        # A timed wait so that the signal handler gets to run promptly on every
        # platform, whatever the lock implementation.
        while not stopping.wait(0.5):
            pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    main()
