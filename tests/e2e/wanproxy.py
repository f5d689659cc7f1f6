"""A TCP proxy that delays every byte by a fixed time in each direction: the wide-area
link between two regions, simulated in user space because this kernel has no netem.

Each direction is a pipeline, not a stop-and-wait: a chunk read at time t is written at
t + delay while later chunks are already on their way, so the link adds latency without
capping throughput (as a long fat pipe does). Runs its own event loop on a daemon
thread; `cut()` drops every open connection, as a link failure would.

As a script: `python3 wanproxy.py --upstream HOST:PORT --listen HOST:PORT --delay-ms 40`
prints `listening on HOST:PORT` once ready and runs until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import threading
import time

CHUNK = 256 * 1024


class WanProxy:
    def __init__(self, upstream_host: str, upstream_port: int, delay_ms: float = 40.0,
                 listen_host: str = "127.0.0.1", listen_port: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.delay_ms = delay_ms
        self.listen = (listen_host, listen_port)
        self.port = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._writers: set = set()

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.port}"

    def start(self) -> "WanProxy":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve():
            self._server = await asyncio.start_server(self._accept, *self.listen)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="wanproxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def set_delay(self, ms: float):
        self.delay_ms = ms

    def cut(self):
        """Closes every open connection (new ones are still accepted)."""
        def close_all():
            for w in list(self._writers):
                w.transport.abort()
        self._loop.call_soon_threadsafe(close_all)

    def stop(self):
        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def shutdown():
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def _accept(self, reader, writer):
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        for w in (writer, up_writer):
            w.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writers.add(w)
        await asyncio.gather(self._pipe(reader, up_writer, "up"), self._pipe(up_reader, writer, "down"),
                             return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader, writer, direction: str):
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await queue.get()
                if data is None:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if direction == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                queue.put_nowait((time.monotonic() + self.delay_ms / 1000.0, data))
                # Backpressure: a slow receiver holds the reader back, not memory.
                while queue.qsize() > 256 and not sender.done():
                    await asyncio.sleep(0.001)
        finally:
            queue.put_nowait((0, None))
            try:
                await sender
            finally:
                writer.transport.abort()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--delay-ms", type=float, default=40.0)
    args = ap.parse_args()
    uh, up = args.upstream.rsplit(":", 1)
    lh, lp = args.listen.rsplit(":", 1)
    proxy = WanProxy(uh, int(up), args.delay_ms, lh, int(lp)).start()
    print(f"listening on {proxy.address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    proxy.stop()


if __name__ == "__main__":
    main()
