#!/usr/bin/env python3
"""Hostile clients, live: while a healthy producer and consumer measure their own
latency, attack one broker with everything a client can do wrong on the wire, and
check that the broker stays up, closes every bad connection, keeps its memory bounded
by its settings and keeps serving the healthy client.

Phases:
  baseline  the healthy client alone: acks=all produce round trips at a fixed rate
            (--rate), each timed from produce() to its delivery report.
  attack    the healthy client goes on while, at the same time:
              random      random bytes, and plausible frames (a real API key and
                          version, the right length, a random body), left open
              huge        length prefixes 2^31-1, 2^31 (negative), -1, 0 and
                          max_frame_bytes+1, then a few bytes
              truncated   a valid request cut short, then the write side closed; and
                          a frame announcing 1,000 bytes that sends 20 and stays open
              slowloris   a frame trickled one byte per second
              unread      Fetch requests sent on and on without reading an answer
              idle        --idle connections (default 10,000) that send nothing,
                          opened --connect-rate a second (default 2,000)
              burst       once the idle ones are in, enough connections to go
                          --burst-over past kafka.max_connections, at the same rate
              absurd      valid requests at absurd sizes: a Produce of exactly
                          max_frame_bytes, a Fetch asking for 2 GiB, Metadata naming
                          100,000 topics (auto-creation off, as the request asks)
Every hostile connection must see the broker close it (EOF or reset) within the
deadline its kind allows: at once for what cannot be a request, the request timeout
for what trickles, the idle timeout for what waits. The absurd requests must be
answered (with Kafka's error where there is one) or closed.

Printed: broker panics, broker alive, bad connections closed N/N (per kind), the
broker's closed-connection counters by reason, peak broker RSS (VmHWM) against the
baseline and the bound the settings imply, healthy p50/p99 baseline vs under attack
and their ratio, and one JSON line (also written to --json). Exit code 1 when a safety
figure fails: a panic, a dead broker, a bad connection left open, RSS over the bound,
or healthy records lost. The p99 ratio is a goal (within 2x), reported, not enforced:
the machine is shared.

    python3 tests/chaos/hostile.py                      # full scale, ~2 min
    python3 tests/chaos/hostile.py --small              # CI scale, ~20 s
    python3 tests/chaos/hostile.py --bootstrap 127.0.0.1:9092 --admin 127.0.0.1:9644 \\
        --broker-pid PID --broker-log quiver.log --max-connections ... (the broker's settings)

The broker it starts itself runs with kafka.max_connections = --max-connections,
kafka.max_connections_per_ip = --max-connections-per-ip, connections_max_idle_ms =
--idle-ms and request_timeout_ms = --request-timeout-ms; against --bootstrap pass the
broker's values, as the deadlines are derived from them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

E2E = Path(__file__).resolve().parent.parent / "e2e"
sys.path.insert(0, str(E2E))

import kproto  # noqa: E402

# Memory an open connection may cost the broker: its 64 KiB read and 64 KiB write
# buffers, allocated as it is accepted, plus socket, task and session state.
PER_CONNECTION_BYTES = 160 * 1024
# Allocator and runtime slack over the baseline high-water mark.
SLACK_BYTES = 64 * 1024 * 1024


def log(msg: str):
    print(f"[hostile {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CI scale: 1,000 idle connections, a few of each attack, "
                    "short timeouts, max_connections 200 and 150 per address")
    ap.add_argument("--idle", type=int, default=None, help="idle connections (default 10000; --small 1000)")
    ap.add_argument("--burst-over", type=int, default=None, help="connections past the listener limit (default 500)")
    ap.add_argument("--rate", type=float, default=100, help="healthy produce rate, records/s")
    ap.add_argument("--connect-rate", type=float, default=2000,
                    help="idle and burst connections opened per second (default 2000)")
    ap.add_argument("--attacker-nice", type=int, default=19,
                    help="nice value this process takes once the broker and the healthy client run "
                         "(0: none), so that on one machine its own CPU use does not count as the "
                         "broker's slowness")
    ap.add_argument("--baseline-s", type=float, default=None, help="baseline phase (default 20; --small 4)")
    ap.add_argument("--max-connections", type=int, default=None, help="kafka.max_connections (default idle+1000)")
    ap.add_argument("--max-connections-per-ip", type=int, default=None, help="kafka.max_connections_per_ip (default 0)")
    ap.add_argument("--idle-ms", type=int, default=None, help="kafka.connections_max_idle_ms (default 30000)")
    ap.add_argument("--request-timeout-ms", type=int, default=None, help="kafka.request_timeout_ms (default 10000)")
    ap.add_argument("--max-frame-bytes", type=int, default=100 * 1024 * 1024, help="kafka.max_frame_bytes")
    ap.add_argument("--slack-s", type=float, default=None, help="grace over each deadline (default 10; --small 5)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--binary", default=None, help="quiver binary (default: $QUIVER_BIN or the release build)")
    ap.add_argument("--bootstrap", default=None, help="attack a running broker instead of starting one")
    ap.add_argument("--admin", default=None, help="its admin API host:port (for /metrics)")
    ap.add_argument("--broker-pid", type=int, default=None, help="its pid (for RSS and liveness)")
    ap.add_argument("--broker-log", default=None, help="its log (scanned for panics)")
    ap.add_argument("--idle-ip", default="127.0.0.2", help="source address of the idle connections")
    ap.add_argument("--attack-ip", default="127.0.0.3", help="source address of the other attacks")
    ap.add_argument("--burst-ip", default="127.0.0.4", help="source address of the burst")
    ap.add_argument("--dir", default=None, help="broker data and logs (default: a temporary directory, "
                    "removed when the run passes)")
    ap.add_argument("--json", default="target/chaos/hostile.json")
    ap.add_argument("--healthy-child", nargs=4, metavar=("BOOTSTRAP", "TOPIC", "RATE", "OUT"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    small = a.small
    a.idle = a.idle if a.idle is not None else (1000 if small else 10_000)
    a.burst_over = a.burst_over if a.burst_over is not None else (50 if small else 500)
    a.baseline_s = a.baseline_s if a.baseline_s is not None else (4 if small else 20)
    a.max_connections = a.max_connections or (200 if small else a.idle + 1000)
    if a.max_connections_per_ip is None:
        a.max_connections_per_ip = 150 if small else 0
    a.idle_ms = a.idle_ms or (3000 if small else 30_000)
    a.request_timeout_ms = a.request_timeout_ms or (2000 if small else 10_000)
    a.slack_s = a.slack_s if a.slack_s is not None else (5 if small else 10)
    a.counts = dict(random=5, plausible=5, huge_rounds=1, truncated=3, truncated_open=2, slowloris=3, unread=2) \
        if small else \
        dict(random=200, plausible=200, huge_rounds=4, truncated=50, truncated_open=20, slowloris=50, unread=5)
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(2**32)
    return a


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def percentile(values, q):
    vals = sorted(values)
    if not vals:
        return None
    rank = max(1, min(len(vals), int(-(-q * len(vals) // 100))))
    return vals[rank - 1]


# --- the healthy client (a child process, so the attack's event loop cannot delay it) --

def healthy_child(bootstrap: str, topic: str, rate: float, out: str) -> int:
    from confluent_kafka import Consumer, Producer, TopicPartition

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "message.timeout.ms": 60000, "enable.idempotence": False})
    # The group coordinator connection of a consumer that only assigns sits idle and
    # is closed by the broker's idle timeout, as Kafka's would be: not worth a log line.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "log_level": 3,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, 0, 0)])
    samples = []  # [wall time sent, round trip ms or None, error or None]
    consumed = []
    lock = threading.Lock()

    def consume():
        while not stop.is_set() or len(consumed) < len(samples):
            for m in consumer.consume(num_messages=500, timeout=0.1):
                if m.error() is None:
                    consumed.append((m.offset(), m.value()))
            if stop.is_set() and time.monotonic() > drain_deadline[0]:
                break
    drain_deadline = [float("inf")]
    reader = threading.Thread(target=consume, daemon=True)
    reader.start()

    def report(i, t0):
        def cb(err, msg):
            with lock:
                samples[i][1] = (time.perf_counter() - t0) * 1000
                samples[i][2] = None if err is None else str(err)
        return cb

    interval = 1.0 / rate
    next_at = time.perf_counter()
    n = 0
    ready = False
    while not stop.is_set():
        t0 = time.perf_counter()
        with lock:
            samples.append([time.time(), None, None])
        producer.produce(topic, value=b"h-%d" % n, partition=0, on_delivery=report(n, t0))
        n += 1
        next_at += interval
        while True:
            left = next_at - time.perf_counter()
            producer.poll(min(max(left, 0), 0.001))
            if left <= 0:
                break
        if not ready and any(s[1] is not None for s in samples):
            print("ready", flush=True)
            ready = True
    producer.flush(60)
    drain_deadline[0] = time.monotonic() + 30
    stop.set()
    reader.join(35)
    consumer.close()
    acked = [i for i, s in enumerate(samples) if s[1] is not None and s[2] is None]
    values = [v for _, v in consumed]
    in_order = values == [b"h-%d" % i for i in range(len(values))]
    with open(out, "w") as f:
        json.dump({"samples": samples, "sent": n, "acked": len(acked), "consumed": len(consumed),
                   "in_order": in_order}, f)
    return 0


# --- hostile connections -----------------------------------------------------------------

class Tally:
    """Every hostile connection's fate."""

    def __init__(self):
        self.rows = []  # (kind, closed: bool, seconds to close or None, note)

    def add(self, kind, closed, took, note=""):
        self.rows.append((kind, closed, took, note))

    def by_kind(self):
        out = {}
        for kind, closed, took, _ in self.rows:
            k = out.setdefault(kind, {"n": 0, "closed": 0, "max_close_s": 0.0})
            k["n"] += 1
            k["closed"] += int(closed)
            if closed and took is not None:
                k["max_close_s"] = round(max(k["max_close_s"], took), 2)
        return out


async def connect(host, port, source_ip, timeout=30.0):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source_ip, 0))
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


async def await_close(reader, deadline: float) -> bool:
    """True once the broker closes the connection (EOF or reset) before `deadline`
    (monotonic); what it sends meanwhile is read and dropped."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), left)
        except (asyncio.TimeoutError, TimeoutError):
            return False
        except OSError:
            return True
        if not data:
            return True


def close_writer(writer):
    try:
        writer.transport.abort()
    except Exception:
        pass


async def hostile(tally, kind, host, port, ip, send, wait_s, sem=None):
    """One hostile connection: connect, `send(writer)`, then wait up to wait_s for the
    broker to close it. A write that fails because the broker closed first counts as
    closed."""
    if sem is not None:
        await sem.acquire()
    start = time.monotonic()
    try:
        try:
            reader, writer = await connect(host, port, ip)
        except OSError as e:
            tally.add(kind, False, None, f"connect failed: {e}")
            return
    finally:
        if sem is not None:
            sem.release()
    try:
        try:
            await send(writer)
            sent_at = time.monotonic()
        except OSError:
            tally.add(kind, True, time.monotonic() - start, "closed while sending")
            return
        closed = await await_close(reader, sent_at + wait_s)
        tally.add(kind, closed, time.monotonic() - sent_at if closed else None)
    finally:
        close_writer(writer)


def frame(api_key, version, correlation, body, client_id="hostile"):
    return kproto.request_frame(api_key, version, correlation, body, client_id=client_id)


def fetch_v4_body(topic, max_bytes, partition_max_bytes, max_wait_ms=0):
    return (kproto.i32(-1) + kproto.i32(max_wait_ms) + kproto.i32(1) + kproto.i32(max_bytes) + kproto.i8(0)
            + kproto.array([kproto.string(topic) + kproto.array(
                [kproto.i32(0) + kproto.i64(0) + kproto.i32(partition_max_bytes)])]))


def big_produce_frame(topic: str, frame_bytes: int) -> bytes:
    """A Produce v3 frame of exactly `frame_bytes` bytes (prefix included) whose record
    set is one batch padded with zeros (its CRC is not computed: the point is the size)."""
    head = (kproto.i16(0) + kproto.i16(3) + kproto.i32(7) + kproto.string("hostile")
            + kproto.string(None) + kproto.i16(1) + kproto.i32(10000)
            + kproto.i32(1) + kproto.string(topic) + kproto.i32(1) + kproto.i32(0))
    records_len = frame_bytes - 4 - len(head) - 4
    batch_head = (kproto.i64(0) + kproto.i32(records_len - 12) + kproto.i32(-1) + kproto.i8(2) + kproto.u32(0)
                  + kproto.i16(0) + kproto.i32(0) + kproto.i64(0) + kproto.i64(0) + kproto.i64(-1)
                  + kproto.i16(-1) + kproto.i32(-1) + kproto.i32(1))
    payload = head + kproto.i32(records_len) + batch_head + bytes(records_len - len(batch_head))
    return kproto.i32(len(payload)) + payload


EVENTS = []  # (wall time, what): when each attack step began and ended, for the timeline


def event(what):
    EVENTS.append((time.time(), what))


def absurd_frames(fat_topic: str, max_frame: int) -> list:
    """The valid requests at absurd sizes, as (name, frame, parse the answer's body).
    Built before the attack, and their answers parsed after it: the attacking process
    shares the machine's two cores with the broker and the healthy client, while a
    client elsewhere would spend its own CPU on these, not the broker's machine's."""
    def produce_answer(r):
        r.i32()
        r.string()
        r.i32()
        r.i32()
        return f"answered, error {kproto.error_name(r.i16())}"

    def fetch_answer(r):
        r.i32()
        r.i32()
        r.string()
        r.i32()
        r.i32()
        err = r.i16()
        r.i64()
        r.i64()
        r.array(lambda a: (a.i64(), a.i64()))
        recs = r.bytes() or b""
        return f"answered, error {kproto.error_name(err)}, {len(recs)} record bytes"

    names = [f"absent-{i:06d}" for i in range(100_000)]
    body = kproto.array(kproto.string(n) for n in names) + kproto.i8(0)  # allow_auto_topic_creation

    def metadata_answer(r):
        r.i32()  # throttle
        r.array(lambda b: (b.i32(), b.string(), b.i32(), b.string()))
        r.string()  # cluster id
        r.i32()  # controller
        topics = r.array(lambda t: (t.i16(), t.string(), t.i8(), t.array(lambda p: None)))
        errors = {kproto.error_name(e) for e, *_ in topics}
        return f"answered, {len(topics)} topics, errors {sorted(errors)}"
    return [
        ("produce_max_frame", big_produce_frame(fat_topic, max_frame), produce_answer),
        ("fetch_2GiB", frame(kproto.FETCH, 4, 8, fetch_v4_body(fat_topic, 0x7FFFFFFF, 0x7FFFFFFF)),
         fetch_answer),
        ("metadata_100k_topics", frame(kproto.METADATA, 4, 9, body), metadata_answer),
    ]


def parse_absurd_answers(results: dict):
    """Turns the answers absurd_requests kept into what each said."""
    for name, v in list(results.items()):
        if isinstance(v, tuple):
            parse, body = v
            results[name] = parse(kproto.Reader(body[4:]))


async def absurd_requests(results, host, port, ip, frames, max_frame, slack, tally):
    """Valid requests at absurd sizes, one connection each; each must be answered or
    the connection closed. An answer is kept as (parse, body) for parse_absurd_answers."""
    async def ask(name, data, parse):
        started = time.monotonic()
        event(f"{name} sent")
        try:
            reader, writer = await connect(host, port, ip)
        except OSError as e:
            results[name] = f"connect failed: {e}"
            return
        try:
            writer.write(data)
            await writer.drain()
            size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 60))[0]
            body = await asyncio.wait_for(reader.readexactly(size), 60)
            results[name] = (parse, body)
        except (asyncio.TimeoutError, TimeoutError):
            results[name] = "NO ANSWER"
        except (asyncio.IncompleteReadError, OSError):
            results[name] = "closed"
        finally:
            results[name + "_s"] = round(time.monotonic() - started, 2)
            event(f"{name} done")
            close_writer(writer)

    for name, data, parse in frames:
        await ask(name, data, parse)

    # One byte over the frame limit: refused on its length prefix, before any of it is
    # read; a bad connection like the others.
    over = struct.pack(">i", max_frame + 1) + kproto.i16(0) + kproto.i16(3) + kproto.i32(10)

    async def send_over(w):
        w.write(over)
        await w.drain()
    await hostile(tally, "huge", host, port, ip, send_over, slack)


async def watch_closes(tally, kind, conns, wait_s, closed_hook=None):
    """Waits for the broker to close each of `conns` ((opened, (reader, writer)), which
    the broker sends nothing) within wait_s of its opening, looking at them all every
    0.2 s: a task and a timer for each of 10,000 connections would cost the attacking
    process a core's worth of bookkeeping as they start."""
    pending = list(conns)
    while pending:
        now = time.monotonic()
        left = []
        for opened, (reader, writer) in pending:
            if reader.at_eof() or reader.exception() is not None:
                tally.add(kind, True, now - opened)
                if closed_hook:
                    closed_hook(now - opened)
                close_writer(writer)
            elif now >= opened + wait_s:
                tally.add(kind, False, None)
                close_writer(writer)
            else:
                left.append((opened, (reader, writer)))
        pending = left
        if pending:
            await asyncio.sleep(0.2)


async def paced(factory, n: int, rate: float):
    """Starts `factory()` n times, `rate` a second, and waits for them all. A flood of
    connects as fast as one Python process can make them takes a whole core for its
    own bookkeeping; on a machine the broker shares with its attacker, that core is
    the broker's and the healthy client's, which a real flood from elsewhere would not
    take. Paced, the flood still brings its thousands of connections in seconds."""
    tasks = []
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0.005:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(factory()))
    await asyncio.gather(*tasks)


async def attack(args, host, port, admin, tally, absurd, marks, rng, fat_topic, frames):
    idle_s = args.idle_ms / 1000
    req_s = args.request_timeout_ms / 1000
    slack = args.slack_s
    c = args.counts
    tasks = []
    sem = asyncio.Semaphore(200)  # connects in flight: keeps under the accept backlog

    def spawn(coro):
        tasks.append(asyncio.create_task(coro))

    # random bytes, and plausible frames with random bodies; left open
    for i in range(c["random"]):
        junk = rng.randbytes(rng.randrange(1, 4096))

        async def send(w, junk=junk):
            w.write(junk)
            await w.drain()
        spawn(hostile(tally, "random", host, port, args.attack_ip, send, max(idle_s, req_s) + slack, sem))
    for i in range(c["plausible"]):
        body = rng.randbytes(rng.randrange(0, 512))
        payload = struct.pack(">hhi", rng.randrange(0, 70), rng.randrange(0, 16), i) + body

        async def send(w, data=struct.pack(">i", len(payload)) + payload):
            w.write(data)
            await w.drain()
        spawn(hostile(tally, "random", host, port, args.attack_ip, send, max(idle_s, req_s) + slack, sem))
    # huge and impossible length prefixes
    for length in [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0, args.max_frame_bytes + 1] * c["huge_rounds"]:
        async def send(w, data=struct.pack(">I", length) + struct.pack(">hhi", 18, 0, 1)):
            w.write(data)
            await w.drain()
        spawn(hostile(tally, "huge", host, port, args.attack_ip, send, slack, sem))
    # truncated then closed; truncated and left open
    full = frame(kproto.METADATA, 1, 1, kproto.i32(-1))
    for i in range(c["truncated"]):
        cut = rng.randrange(1, len(full))

        async def send(w, data=full[:cut]):
            w.write(data)
            await w.drain()
            w.write_eof()
        spawn(hostile(tally, "truncated", host, port, args.attack_ip, send, slack, sem))
    for i in range(c["truncated_open"]):
        async def send(w, data=struct.pack(">i", 1000) + full[4:24]):
            w.write(data)
            await w.drain()
        spawn(hostile(tally, "truncated", host, port, args.attack_ip, send, req_s + slack, sem))

    # slow-loris: one byte a second of a frame announcing 1,000 bytes, until closed
    async def slowloris():
        data = struct.pack(">i", 1000) + full[4:] + bytes(1000)
        start = time.monotonic()
        try:
            reader, writer = await connect(host, port, args.attack_ip)
        except OSError as e:
            tally.add("slowloris", False, None, f"connect failed: {e}")
            return
        closed = False
        first = time.monotonic()
        deadline = first + req_s + slack
        try:
            for b in data:
                writer.write(bytes([b]))
                await writer.drain()
                if await await_close(reader, min(time.monotonic() + 1.0, deadline)):
                    closed = True
                    break
                if time.monotonic() >= deadline:
                    break
        except OSError:
            closed = True
        finally:
            close_writer(writer)
        tally.add("slowloris", closed, time.monotonic() - first if closed else None,
                  "" if closed else f"still open {time.monotonic() - start:.1f}s after its first byte")
    for _ in range(c["slowloris"]):
        spawn(slowloris())

    # never reads: 20 Fetches of a topic with 4 MiB in it (80 MiB of answers, far more
    # than the socket buffers hold), then nothing read until the broker must have given
    # up on the stalled write; what it wrote before it did is read then, and the close
    # must follow it
    async def unread():
        request = frame(kproto.FETCH, 4, 5, fetch_v4_body(fat_topic, 4 << 20, 4 << 20))
        try:
            reader, writer = await connect(host, port, args.attack_ip)
        except OSError as e:
            tally.add("unread", False, None, f"connect failed: {e}")
            return
        writer.transport.pause_reading()
        closed = False
        sent_at = time.monotonic()
        got = 0
        asked = 20 * (4 << 20)
        try:
            writer.write(request * 20)
            await asyncio.sleep(idle_s + slack)
            event("unread resumes reading")
            writer.transport.resume_reading()
            deadline = time.monotonic() + slack
            while time.monotonic() < deadline:
                data = await asyncio.wait_for(reader.read(1 << 20), deadline - time.monotonic())
                if not data:
                    closed = True
                    break
                got += len(data)
        except (asyncio.TimeoutError, TimeoutError):
            pass
        except OSError:
            closed = True
        finally:
            close_writer(writer)
        # Closed having answered all 20 is an idle close after the answers were read,
        # not the stalled write given up on.
        gave_up = closed and got < asked
        tally.add("unread", gave_up, time.monotonic() - sent_at if gave_up else None,
                  f"read {got} of the {asked} bytes asked for before the close" if closed else "")
    for _ in range(c["unread"]):
        spawn(unread())

    # the absurd but valid requests, one after the other
    absurd_task = asyncio.create_task(absurd_requests(absurd, host, port, args.attack_ip, frames,
                                                      args.max_frame_bytes, slack, tally))

    # idle connections: all opened, then each must be closed within the idle timeout
    idle_conns = []

    async def open_idle():
        await sem.acquire()
        try:
            rw = await connect(host, port, args.idle_ip)
            idle_conns.append((time.monotonic(), rw))
        except OSError as e:
            tally.add("idle", False, None, f"connect failed: {e}")
        finally:
            sem.release()
    log(f"opening {args.idle} idle connections from {args.idle_ip}")
    event("idle opening")
    t0 = time.monotonic()
    await paced(open_idle, args.idle, args.connect_rate)
    marks["idle_open_s"] = round(time.monotonic() - t0, 1)
    event("idle opened")
    log(f"{len(idle_conns)} idle connections opened in {marks['idle_open_s']} s")

    idle_waits = [asyncio.create_task(watch_closes(tally, "idle", idle_conns, idle_s + slack))]
    await absurd_task

    # the burst: enough connections to pass the listener's limit by --burst-over
    metrics = scrape(admin)
    active = int(metrics.get("quiver_kafka_connections_active", 0))
    marks["active_before_burst"] = active
    burst = max(0, args.max_connections - active) + args.burst_over
    limit_before = metrics.get('quiver_kafka_connections_closed_total{reason="limit"}', 0)
    log(f"burst: {burst} connections from {args.burst_ip} with {active} of {args.max_connections} open")
    burst_conns = []

    async def open_burst():
        await sem.acquire()
        try:
            rw = await connect(host, port, args.burst_ip)
            burst_conns.append((time.monotonic(), rw))
        except OSError as e:
            tally.add("burst", False, None, f"connect failed: {e}")
        finally:
            sem.release()
    event("burst opening")
    await paced(open_burst, burst, args.connect_rate)
    event("burst opened")
    marks["flood_end"] = time.time()
    refused_at_once = 0

    def burst_closed(took):
        nonlocal refused_at_once
        if took < 1.0:
            refused_at_once += 1
    burst_waits = [asyncio.create_task(watch_closes(tally, "burst", burst_conns, idle_s + slack, burst_closed))]
    await asyncio.sleep(1.5)
    marks["burst"] = burst
    marks["burst_refused_within_1s"] = refused_at_once
    marks["limit_closes_during_burst"] = int(
        scrape(admin).get('quiver_kafka_connections_closed_total{reason="limit"}', 0) - limit_before)
    await asyncio.gather(*tasks, *idle_waits, *burst_waits)


def scrape(admin: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(quiver_kafka_connections_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Samples the broker's RSS and open connections while the attack runs."""

    def __init__(self, pid, admin):
        super().__init__(daemon=True)
        self.pid, self.admin = pid, admin
        self.stop = threading.Event()
        self.peak_rss_kib = 0
        self.peak_active = 0

    def run(self):
        while not self.stop.wait(0.5):
            self.peak_rss_kib = max(self.peak_rss_kib, status_kib(self.pid, "VmRSS"))
            active = scrape(self.admin).get("quiver_kafka_connections_active")
            if active is not None:
                self.peak_active = max(self.peak_active, int(active))


def alive(pid, host, port) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with kproto.Conn(host, port, timeout=10) as c:
            return kproto.api_versions(c, 0).error_code == 0
    except (OSError, ValueError, ConnectionError):
        return False


def fill_fat_topic(bootstrap: str, topic: str):
    """A topic with ~4 MiB in it, for fetches that answer with megabytes."""
    from clients import create_topic
    from confluent_kafka import Producer
    create_topic(bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(64):
        p.produce(topic, value=bytes([i % 256]) * 64 * 1024, partition=0)
    if p.flush(60) != 0:
        raise RuntimeError(f"could not fill {topic}")


def run(args) -> int:
    rng = random.Random(args.seed)
    fd_limit = raise_fd_limit()
    # the idle connections, the burst past the limit (at most max_connections more),
    # the other attacks
    need = max(args.idle, args.max_connections) + args.burst_over + 1000
    if fd_limit < need:
        log(f"warning: open-file limit {fd_limit} is below the {need} connections this run may hold")
    log(f"seed {args.seed}; open-file limit {fd_limit}")
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="quiver-hostile-"))
    broker = None
    if args.bootstrap:
        host, port = args.bootstrap.rsplit(":", 1)
        port = int(port)
        admin = args.admin or f"{host}:9644"
        pid = args.broker_pid
        broker_log = Path(args.broker_log) if args.broker_log else None
        if pid is None:
            raise SystemExit("--bootstrap needs --broker-pid (RSS and liveness are read from /proc)")
    else:
        from harness import Broker
        if args.binary:
            os.environ["QUIVER_BIN"] = str(Path(args.binary).resolve())  # the broker runs in its own directory
        broker = Broker(workdir, sets={
            "kafka.max_connections": args.max_connections,
            "kafka.max_connections_per_ip": args.max_connections_per_ip,
            "kafka.connections_max_idle_ms": args.idle_ms,
            "kafka.request_timeout_ms": args.request_timeout_ms,
            "kafka.max_frame_bytes": args.max_frame_bytes,
            "group.initial_rebalance_delay_ms": 0,
        }).start()
        host, port, admin, pid = broker.host, broker.port, broker.admin, broker.proc.pid
        broker_log = None
    bootstrap = f"{host}:{port}"
    log(f"broker {bootstrap} (pid {pid}); max_connections={args.max_connections} "
        f"per_ip={args.max_connections_per_ip} idle_ms={args.idle_ms} request_timeout_ms={args.request_timeout_ms} "
        f"max_frame_bytes={args.max_frame_bytes}")
    child = None
    try:
        from clients import create_topic, unique_topic
        topic = unique_topic("healthy")
        fat_topic = unique_topic("fat")
        create_topic(bootstrap, topic, 1)
        fill_fat_topic(bootstrap, fat_topic)
        out = workdir / "healthy.json"
        child = subprocess.Popen([sys.executable, __file__, "--healthy-child", bootstrap, topic, str(args.rate),
                                  str(out)], stdout=subprocess.PIPE, text=True)
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the healthy client never got a record acknowledged")
        frames = absurd_frames(fat_topic, args.max_frame_bytes)
        if args.attacker_nice:
            # From here on this process only attacks and samples. On one machine its
            # CPU is the broker's and the healthy client's; attackers elsewhere would
            # not take it. Niced, it runs whenever they do not (the broker and the
            # healthy client, started above, keep their priority). Both phases are
            # measured so.
            os.nice(args.attacker_nice)
        marks = {}
        # Sampling from the baseline on: the healthy client is measured the same way,
        # with the same scrapes of the broker, in both phases.
        sampler = Sampler(pid, admin)
        sampler.start()
        marks["baseline_start"] = time.time()
        log(f"baseline: healthy client alone for {args.baseline_s} s at {args.rate} records/s")
        time.sleep(args.baseline_s)
        marks["baseline_end"] = time.time()
        baseline_hwm = status_kib(pid, "VmHWM")
        baseline_rss = status_kib(pid, "VmRSS")
        closed_before = scrape(admin)
        tally = Tally()
        absurd = {}
        log("attack")
        marks["attack_start"] = time.time()
        asyncio.run(attack(args, host, port, admin, tally, absurd, marks, rng, fat_topic, frames))
        marks["attack_end"] = time.time()
        sampler.stop.set()
        sampler.join()
        parse_absurd_answers(absurd)
        time.sleep(1.0)  # the healthy client's in-flight records of the attack phase
        child.send_signal(signal.SIGTERM)
        child.wait(120)
        child = None
        healthy = json.loads(out.read_text())
        peak_hwm = status_kib(pid, "VmHWM")
        closed_after = scrape(admin)
        is_alive = alive(pid, host, port)
    finally:
        if child is not None:
            child.kill()
        if broker is not None:
            broker_text = broker.stderr_text()
            broker.close()
    if broker is None:
        broker_text = broker_log.read_text(errors="replace") if broker_log and broker_log.exists() else ""
    panics = [line for line in broker_text.splitlines() if "panicked" in line]

    def phase(lo, hi):
        lat = [s[1] for s in healthy["samples"] if lo <= s[0] < hi and s[1] is not None and s[2] is None]
        errors = sum(1 for s in healthy["samples"] if lo <= s[0] < hi and s[2] is not None)
        return {"n": len(lat), "errors": errors, "p50_ms": round(percentile(lat, 50) or 0, 2),
                "p99_ms": round(percentile(lat, 99) or 0, 2), "max_ms": round(max(lat or [0]), 2)}
    base = phase(marks["baseline_start"], marks["baseline_end"])
    under = phase(marks["attack_start"], marks["attack_end"])
    # After the flood of connects (the idle ones and the burst) and the absurd requests:
    # the broker holding thousands of idle connections while the trickling attacks go on.
    held = phase(marks["flood_end"] + 1, marks["attack_end"])
    held_ratio = round(held["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] else None
    # The attack phase in 2 s windows: where the healthy client's latency went, next to
    # what the attack was doing then.
    timeline = []
    t = marks["attack_start"]
    while t < marks["attack_end"]:
        w = phase(t, t + 2)
        what = sorted({e for at, e in EVENTS if t <= at < t + 2})
        timeline.append({"t_s": round(t - marks["attack_start"], 1), "n": w["n"], "p50_ms": w["p50_ms"],
                         "p99_ms": w["p99_ms"], "max_ms": w["max_ms"], "events": what})
        t += 2
    ratio = round(under["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] else None

    kinds = tally.by_kind()
    bad_n = sum(k["n"] for k in kinds.values())
    bad_closed = sum(k["closed"] for k in kinds.values())
    reasons = {}
    for key, v in closed_after.items():
        m = re.match(r'quiver_kafka_connections_closed_total\{reason="([a-z]+)"\}', key)
        if m:
            reasons[m.group(1)] = int(v - closed_before.get(key, 0))
    peak_conns = max(sampler.peak_active, marks.get("active_before_burst", 0))
    bound_kib = (baseline_hwm * 1024 + peak_conns * PER_CONNECTION_BYTES + 3 * args.max_frame_bytes
                 + SLACK_BYTES) // 1024
    unanswered = [k for k, v in absurd.items() if not k.endswith("_s") and not (
        str(v).startswith("answered") or v == "closed")]
    lost = healthy["acked"] - healthy["consumed"]
    summary = {
        "seed": args.seed,
        "settings": {"max_connections": args.max_connections, "max_connections_per_ip": args.max_connections_per_ip,
                     "connections_max_idle_ms": args.idle_ms, "request_timeout_ms": args.request_timeout_ms,
                     "max_frame_bytes": args.max_frame_bytes},
        "idle_connections": args.idle,
        "broker_panics": len(panics),
        "broker_alive": is_alive,
        "bad_connections": {"n": bad_n, "closed": bad_closed, "by_kind": kinds},
        "closed_by_reason": reasons,
        "burst": {k: marks.get(k) for k in ("burst", "active_before_burst", "burst_refused_within_1s",
                                             "limit_closes_during_burst")},
        "idle_open_s": marks.get("idle_open_s"),
        "absurd": absurd,
        "rss": {"baseline_hwm_kib": baseline_hwm, "baseline_rss_kib": baseline_rss, "peak_hwm_kib": peak_hwm,
                "peak_rss_sampled_kib": sampler.peak_rss_kib, "bound_kib": bound_kib,
                "peak_open_connections": peak_conns},
        "timeline": timeline,
        "events": [[round(at - marks["attack_start"], 3), what] for at, what in EVENTS],
        # The healthy round trips of the attack phase over twice the baseline p99, with
        # when each was sent (s from the attack's start): which attack step they meet.
        "slow": [[round(s[0] - marks["attack_start"], 3), round(s[1], 2)] for s in healthy["samples"]
                 if marks["attack_start"] <= s[0] < marks["attack_end"] and s[1] is not None
                 and s[1] > 2 * base["p99_ms"]],
        "healthy": {"baseline": base, "attack": under, "p99_ratio": ratio, "held": held,
                    "held_p99_ratio": held_ratio, "sent": healthy["sent"],
                    "acked": healthy["acked"], "consumed": healthy["consumed"], "in_order": healthy["in_order"]},
    }
    failures = []
    if panics:
        failures.append(f"{len(panics)} broker panics: {panics[:3]}")
    if not is_alive:
        failures.append("the broker is not alive (or not answering ApiVersions)")
    if bad_closed != bad_n:
        left = [r for r in tally.rows if not r[1]][:5]
        failures.append(f"{bad_n - bad_closed} bad connections not closed in time, e.g. {left}")
    if peak_hwm > bound_kib:
        failures.append(f"peak RSS {peak_hwm} KiB over the bound {bound_kib} KiB")
    if unanswered:
        failures.append(f"absurd requests neither answered nor closed: {unanswered}")
    if lost != 0 or not healthy["in_order"] or healthy["acked"] == 0:
        failures.append(f"healthy client: {healthy['acked']} acknowledged, {healthy['consumed']} read back, "
                        f"in order: {healthy['in_order']}")
    summary["failures"] = failures

    print()
    print(f"broker panics:            {len(panics)}")
    print(f"broker alive:             {is_alive}")
    print(f"bad connections closed:   {bad_closed} of {bad_n}")
    for kind, k in sorted(kinds.items()):
        print(f"  {kind:<12} {k['closed']:>6} of {k['n']:<6} slowest close {k['max_close_s']} s")
    print(f"closed by reason:         {reasons}")
    print(f"burst past the limit:     {summary['burst']}")
    for k, v in absurd.items():
        if not k.endswith("_s"):
            print(f"absurd {k:<20} {v} ({absurd.get(k + '_s')} s)")
    print(f"broker RSS:               baseline HWM {baseline_hwm / 1024:.0f} MiB, peak HWM {peak_hwm / 1024:.0f} MiB "
          f"(bound {bound_kib / 1024:.0f} MiB for {peak_conns} connections)")
    print(f"healthy p50/p99 baseline: {base['p50_ms']} / {base['p99_ms']} ms (n={base['n']}, errors {base['errors']})")
    print(f"healthy p50/p99 attack:   {under['p50_ms']} / {under['p99_ms']} ms (n={under['n']}, errors {under['errors']})")
    goal = "met" if ratio is not None and ratio <= 2 else "NOT met"
    print(f"healthy p99 ratio:        {ratio} (goal <= 2: {goal})")
    print(f"healthy p50/p99 held:     {held['p50_ms']} / {held['p99_ms']} ms (n={held['n']}, errors {held['errors']}; "
          f"from 1 s after the connection flood: ratio {held_ratio})")
    print("healthy latency under attack, 2 s windows (t from the attack's start):")
    for w in timeline:
        print(f"  t={w['t_s']:>5} s  n={w['n']:>4}  p50 {w['p50_ms']:>8} ms  p99 {w['p99_ms']:>8} ms  "
              f"max {w['max_ms']:>8} ms  {', '.join(w['events'])}")
    print(f"healthy records:          {healthy['acked']} acknowledged, {healthy['consumed']} read back, "
          f"in order {healthy['in_order']}")
    for f in failures:
        print(f"FAIL: {f}")
    # The events and slow samples only in the file: the printed line stays one screen.
    print(json.dumps({k: v for k, v in summary.items() if k not in ("events", "slow")}, sort_keys=True))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if not failures and not args.dir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif failures:
        log(f"broker data and logs kept in {workdir}")
    return 1 if failures else 0


def main(argv) -> int:
    args = parse_args(argv)
    if args.healthy_child:
        bootstrap, topic, rate, out = args.healthy_child
        return healthy_child(bootstrap, topic, float(rate), out)
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
