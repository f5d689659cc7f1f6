#!/usr/bin/env python3
"""Throughput, latency and resource benchmark for a single Quiver broker.

Starts a broker of its own (tempdir, reserved port in 19900-19999, killed on exit)
or measures a running one (--bootstrap HOST:PORT [--broker-pid PID]), drives it with
librdkafka (confluent-kafka) from separate worker processes and prints the figures as
median and range over several runs, next to the project's targets. The targets are a
report, never an assertion: the exit code is non-zero only when the benchmark itself
failed (broker did not start or died, a client error, records lost or duplicated).

See tests/bench/README.md and docs/perf.md.
"""

import argparse
import ctypes
import errno
import fcntl
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid

MB = 1_000_000          # throughput is reported in MB/s (10^6 bytes), as dd does
GIB = 1 << 30           # CPU cost is per GiB (2^30 bytes) of record values
MIB = 1 << 20

PORT_BAND = range(19900, 20000)
PORT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "quiver-bench-ports")

TARGETS = {
    "produce_mb_s": (">=", 250.0, "MB/s"),
    "consume_mb_s": (">=", 500.0, "MB/s"),
    "latency_p99_ms": ("<=", 10.0, "ms"),
    "idle_rss_mib": ("<=", 50.0, "MiB"),
}


class BenchError(Exception):
    """The benchmark itself failed (not: the broker missed a target)."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# /proc readings for the broker process


def proc_cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def machine_info():
    mem_kib = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import confluent_kafka
    return {
        "nproc": os.cpu_count(),
        "loadavg_start": os.getloadavg(),   # the machine is shared: other work skews figures
        "mem_gib": round(mem_kib / MIB, 1) if mem_kib else None,
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
    }


# --------------------------------------------------------------------------------------
# Port reservation, readiness probe, broker process


def reserve_port():
    """Lock a port slot (lock file per port) and check that the port is free.

    Returns (port, lock_fd); the lock is held until the fd is closed (process exit)."""
    os.makedirs(PORT_LOCK_DIR, exist_ok=True)
    for port in PORT_BAND:
        fd = os.open(os.path.join(PORT_LOCK_DIR, f"{port}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            os.close(fd)
            continue
        finally:
            s.close()
        return port, fd
    raise BenchError(f"no free port in {PORT_BAND.start}-{PORT_BAND.stop - 1}")


def api_versions_probe(host, port, timeout=1.0):
    """Send ApiVersions v0 over a raw socket; True when the broker answers with error 0."""
    client_id = b"quiver-bench"
    body = struct.pack(">hhih", 18, 0, 0x5151, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        head = _recv_exact(s, 4)
        (size,) = struct.unpack(">i", head)
        if size < 6 or size > 1 << 20:
            return False
        resp = _recv_exact(s, size)
        corr, err = struct.unpack(">ih", resp[:6])
        return corr == 0x5151 and err == 0


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _pdeathsig():
    # Kill the broker if this benchmark process dies without cleaning up (e.g. SIGKILL).
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Broker:
    """A quiver broker started by the benchmark; stopped (SIGTERM, then SIGKILL) on close."""

    def __init__(self, binary, sets, parent_dir):
        self.binary = binary
        self.sets = sets
        self.tmp = tempfile.mkdtemp(prefix="quiver-bench-", dir=parent_dir)
        self.data_dir = os.path.join(self.tmp, "data")
        os.makedirs(self.data_dir)
        self.log_path = os.path.join(self.tmp, "broker.log")
        self.port, self._port_lock = reserve_port()
        self.proc = None
        self._log = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, deadline_s=60.0):
        # The admin API is not measured; off, it cannot collide with another broker's.
        cmd = [self.binary, "serve", "--data-dir", self.data_dir,
               "--kafka-listen", self.bootstrap, "--set", "admin.enabled=false"]
        for s in self.sets:
            cmd += ["--set", s]
        log("starting broker: " + " ".join(cmd))
        self._log = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig)
        last_err = None
        while time.monotonic() - t0 < deadline_s:
            if self.proc.poll() is not None:
                raise BenchError(f"broker exited with {self.proc.returncode} during startup\n"
                                 + self.log_tail())
            try:
                if api_versions_probe("127.0.0.1", self.port, timeout=1.0):
                    ready = time.monotonic() - t0
                    log(f"broker ready after {ready:.2f} s (pid {self.proc.pid})")
                    return ready
            except OSError as e:
                last_err = e
            time.sleep(0.05)
        raise BenchError(f"broker not ready after {deadline_s} s (last probe error: {last_err})\n"
                         + self.log_tail())

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"broker died with exit code {self.proc.returncode}\n" + self.log_tail())

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "--- broker log tail ---\n" + "\n".join(lines[-n:])
        except OSError:
            return "(no broker log)"

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log("broker did not stop on SIGTERM within 15 s; SIGKILL")
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.close(self._port_lock)


def data_dir_of_pid(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
        if "--data-dir" in argv:
            return argv[argv.index("--data-dir") + 1]
        for a in argv:
            if a.startswith("--data-dir="):
                return a.split("=", 1)[1]
            if a.startswith("broker.data_dir="):
                return a.split("=", 1)[1]
    except (OSError, IndexError):
        pass
    return None


# --------------------------------------------------------------------------------------
# Disk reference: dd


def dd_write_mb_s(directory, count_mib):
    path = os.path.join(directory, f".bench-dd-{uuid.uuid4().hex}.tmp")
    try:
        r = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={count_mib}",
                            "conv=fdatasync"], capture_output=True, text=True, timeout=300)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    if r.returncode != 0:
        raise BenchError(f"dd failed: {r.stderr.strip()}")
    # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.81 s, 382 MB/s"
    m = re.search(r"^(\d+) bytes.*copied, ([\d.,]+) s, ([\d.,]+) (\w?B)/s", r.stderr, re.M)
    if not m:
        raise BenchError(f"cannot parse dd output: {r.stderr.strip()}")
    nbytes, secs = int(m.group(1)), float(m.group(2).replace(",", "."))
    return nbytes / secs / MB


# --------------------------------------------------------------------------------------
# Client configuration and worker processes (spawned: librdkafka threads and fork do not mix)


def producer_conf(bootstrap, linger_ms, extra=None):
    conf = {
        "bootstrap.servers": bootstrap,
        "client.id": "quiver-bench",
        "acks": 1,
        "enable.idempotence": False,
        "linger.ms": linger_ms,
        "batch.size": 1 << 20,
        "batch.num.messages": 1_000_000,
        "compression.type": "none",
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 1 << 20,       # 1 GiB
        "message.timeout.ms": 120_000,
    }
    conf.update(extra or {})
    return conf


def consumer_conf(bootstrap):
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "quiver-bench",
        "group.id": f"quiver-bench-{uuid.uuid4().hex[:8]}",   # needed even with assign()
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 16 << 20,
        "receive.message.max.bytes": 100_000_000,
        "queued.max.messages.kbytes": 256 << 10,      # 256 MiB of prefetch
        # librdkafka >= 2.3 stops fetching a partition for fetch.queue.backoff.ms (default
        # 1000 ms) whenever its local queue passes queued.min.messages (default 100,000):
        # with the defaults a consumer that is a little slower than the broker stalls in
        # 1 s steps and the figure measures the backoff, not the broker.
        "queued.min.messages": 1_000_000,
        "fetch.queue.backoff.ms": 10,
        "fetch.wait.max.ms": 100,
    }


def _worker_cpu():
    t = os.times()
    return t.user + t.system


def produce_worker(bootstrap, topic, partitions, count, size, linger_ms, extra, ready_q, start_evt,
                   result_q, timeout_s):
    """`count` records of `size` bytes; `extra` is more librdkafka configuration
    (acks, security settings)."""
    from confluent_kafka import Producer
    res = {"ok": False, "count": count, "errors": 0, "first_error": None}
    _pdeathsig()                                      # die with the benchmark
    try:
        def on_delivery(err, msg):   # delivery.report.only.error: called for failures only
            if err is not None:
                res["errors"] += 1
                if res["first_error"] is None:
                    res["first_error"] = str(err)

        p = Producer(producer_conf(bootstrap, linger_ms, {
            **extra, "delivery.report.only.error": True, "on_delivery": on_delivery}))
        p.list_topics(topic, timeout=30)              # connect + metadata before the clock
        payload = os.urandom(size)
        nparts = len(partitions)
        produce, poll = p.produce, p.poll
        ready_q.put(os.getpid())
        start_evt.wait()
        cpu0, t0 = _worker_cpu(), time.monotonic()
        deadline = t0 + timeout_s
        chunk = 1024                                  # switch partition every 1024 records
        for i in range(count):
            part = partitions[(i // chunk) % nparts]
            while True:
                try:
                    produce(topic, payload, partition=part)
                    break
                except BufferError:
                    poll(0.01)
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"produce stalled: queue full after {i} records")
            poll(0)
        left = p.flush(max(1.0, deadline - time.monotonic()))
        t1 = time.monotonic()
        res.update(ok=left == 0 and res["errors"] == 0, undelivered=left, t0=t0, t1=t1,
                   cpu=_worker_cpu() - cpu0)
        if left:
            res["first_error"] = res["first_error"] or f"{left} records not delivered by the deadline"
    except Exception as e:  # reported to the parent, which fails the benchmark
        res["first_error"] = f"{type(e).__name__}: {e}"
    result_q.put(res)


def consume_worker(bootstrap, topic, ranges, size, ready_q, start_evt, result_q, timeout_s):
    """Read the offset ranges [(partition, start, end)] and check every offset once."""
    from confluent_kafka import Consumer, TopicPartition
    res = {"ok": False, "count": 0, "bytes": 0, "errors": 0, "gaps": 0, "dups": 0,
           "bad_size": 0, "first_error": None}
    _pdeathsig()                                      # die with the benchmark
    try:
        c = Consumer(consumer_conf(bootstrap))
        c.list_topics(topic, timeout=30)
        want = sum(e - s for _, s, e in ranges)
        nxt = {p: s for p, s, _ in ranges}
        end = {p: e for p, _, e in ranges}
        ready_q.put(os.getpid())
        start_evt.wait()
        cpu0, t0 = _worker_cpu(), time.monotonic()
        deadline = t0 + timeout_s
        c.assign([TopicPartition(topic, p, s) for p, s, e in ranges if e > s])
        count = nbytes = 0
        consume = c.consume
        while count < want:
            # never ask for more than is left: consume() waits for the full batch or timeout
            msgs = consume(num_messages=min(10000, want - count), timeout=0.5)
            if not msgs and time.monotonic() > deadline:
                raise TimeoutError(f"consumed {count} of {want} records before the deadline")
            for m in msgs:
                if m.error() is not None:
                    res["errors"] += 1
                    if res["first_error"] is None:
                        res["first_error"] = str(m.error())
                    continue
                p, o = m.partition(), m.offset()
                e = end[p]
                if o >= e:
                    continue                          # beyond our range: another worker's
                n = nxt[p]
                if o != n:
                    if o < n:
                        res["dups"] += 1
                        continue
                    res["gaps"] += o - n
                nxt[p] = o + 1
                count += 1
                ln = len(m)
                nbytes += ln
                if ln != size:
                    res["bad_size"] += 1
                if o + 1 == e:
                    c.pause([TopicPartition(topic, p)])
        t1 = time.monotonic()
        c.close()
        res.update(count=count, bytes=nbytes, t0=t0, t1=t1, cpu=_worker_cpu() - cpu0)
        res["ok"] = (res["errors"] == 0 and res["gaps"] == 0 and res["dups"] == 0
                     and res["bad_size"] == 0)
    except Exception as e:
        res["first_error"] = f"{type(e).__name__}: {e}"
    result_q.put(res)


def latency_worker(bootstrap, topic, size, rate_bytes_s, duration_s, warmup_s, linger_ms,
                   ready_q, start_evt, result_q, timeout_s):
    """Open-loop producer at a fixed rate; latency = delivery callback time - produce time."""
    from array import array
    from confluent_kafka import Producer
    res = {"ok": False, "errors": 0, "first_error": None}
    _pdeathsig()                                      # die with the benchmark
    try:
        rate = rate_bytes_s / size                    # records per second
        total = int(rate * (duration_s + warmup_s))
        sent_at = array("d", bytes(8 * total))
        lat = array("d", bytes(8 * total))
        done = [0]
        unpack = struct.Struct(">Q").unpack
        pack = struct.Struct(">Q").pack
        mono = time.monotonic

        def on_delivery(err, msg):
            now = mono()
            if err is not None:
                res["errors"] += 1
                if res["first_error"] is None:
                    res["first_error"] = str(err)
                return
            seq = unpack(msg.key())[0]
            lat[seq] = now - sent_at[seq]
            done[0] += 1

        p = Producer(producer_conf(bootstrap, linger_ms, {"on_delivery": on_delivery}))
        p.list_topics(topic, timeout=30)
        payload = os.urandom(size)
        produce, poll = p.produce, p.poll
        ready_q.put(os.getpid())
        start_evt.wait()
        cpu0 = _worker_cpu()
        t0 = mono()
        i = 0
        while i < total:
            due = min(total, int((mono() - t0) * rate) + 1)
            while i < due:
                sent_at[i] = mono()
                produce(topic, payload, key=pack(i), partition=0)
                i += 1
            # Wait in poll(): it returns as soon as delivery reports are served (so their
            # time is taken promptly) and otherwise after 1 ms, when more records are due.
            # Not a busy loop: on 2 cores a spinning client would take the broker's CPU.
            poll(0.001)
        t_sent = mono()
        left = p.flush(60)
        cpu = _worker_cpu() - cpu0
        skip = int(rate * warmup_s)
        samples = sorted(lat[skip:])
        res.update(ok=left == 0 and res["errors"] == 0 and done[0] == total, count=total,
                   delivered=done[0], undelivered=left, cpu=cpu,
                   achieved_mb_s=(total - skip) * size / MB / max(1e-9, t_sent - t0 - warmup_s),
                   p50_ms=percentile(samples, 50) * 1e3, p99_ms=percentile(samples, 99) * 1e3,
                   p999_ms=percentile(samples, 99.9) * 1e3, max_ms=samples[-1] * 1e3)
    except Exception as e:
        res["first_error"] = f"{type(e).__name__}: {e}"
    result_q.put(res)


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def run_workers(ctx, target, arg_lists, timeout_s):
    """Spawn workers, wait until all are connected, release them at once, collect results."""
    ready_q, result_q, start_evt = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    for args in arg_lists:
        pr = ctx.Process(target=target, args=args + (ready_q, start_evt, result_q, timeout_s),
                         daemon=True)
        pr.start()
        procs.append(pr)
    try:
        for _ in procs:
            try:
                ready_q.get(timeout=60)
            except Exception:
                raise BenchError(f"{target.__name__}: a worker did not connect within 60 s")
        start_evt.set()
        results = []
        limit = time.monotonic() + timeout_s + 120
        for _ in procs:
            try:
                results.append(result_q.get(timeout=max(1, limit - time.monotonic())))
            except Exception:
                raise BenchError(f"{target.__name__}: a worker did not finish in time")
        return results
    finally:
        for pr in procs:
            pr.join(timeout=5)
            if pr.is_alive():
                pr.kill()
                pr.join()


# --------------------------------------------------------------------------------------
# Topics


def admin(bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "quiver-bench"})


def create_topic(bootstrap, name, partitions):
    from confluent_kafka.admin import NewTopic
    a = admin(bootstrap)
    fut = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                          operation_timeout=30, request_timeout=30)
    try:
        fut[name].result(timeout=60)
    except Exception as e:
        raise BenchError(f"CreateTopics {name} ({partitions} partitions) failed: {e}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = a.list_topics(name, timeout=10).topics.get(name)
        if (md is not None and md.error is None and len(md.partitions) == partitions
                and all(p.leader >= 0 for p in md.partitions.values())):
            return
        time.sleep(0.1)
    raise BenchError(f"topic {name} has no leaders for all {partitions} partitions after 30 s")


def delete_topic(bootstrap, name):
    try:
        a = admin(bootstrap)
        a.delete_topics([name], operation_timeout=30, request_timeout=30)[name].result(timeout=60)
        return True
    except Exception as e:
        log(f"DeleteTopics {name} failed (ignored): {e}")
        return False


def watermarks(bootstrap, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(consumer_conf(bootstrap))
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in range(partitions)]
    finally:
        c.close()


def split_ranges(marks, workers):
    """Split the offsets of all partitions into `workers` contiguous shares of equal size."""
    segs = [(p, lo, hi) for p, (lo, hi) in enumerate(marks) if hi > lo]
    total = sum(hi - lo for _, lo, hi in segs)
    share = -(-total // workers) if total else 0
    out, cur, room = [], [], share
    for p, lo, hi in segs:
        while lo < hi:
            take = min(room, hi - lo)
            cur.append((p, lo, lo + take))
            lo += take
            room -= take
            if room == 0:
                out.append(cur)
                cur, room = [], share
    if cur:
        out.append(cur)
    return out


# --------------------------------------------------------------------------------------
# Phases


class Meter:
    """Broker CPU and peak RSS over a phase (when the broker pid is known)."""

    def __init__(self, pid):
        self.pid = pid

    def cpu(self):
        return proc_cpu_seconds(self.pid) if self.pid else None


def phase_produce(ctx, cfg, bootstrap, meter, topic, partitions, records):
    workers = min(cfg.producers, records) or 1
    per = [records // workers + (1 if w < records % workers else 0) for w in range(workers)]
    parts = list(range(partitions))
    # each worker spreads over all partitions (in chunks), as many independent producers would
    extra = getattr(cfg, "client_conf", None) or {}
    args = [(bootstrap, topic, parts[w % partitions:] + parts[:w % partitions], per[w],
             cfg.record_size, cfg.linger_ms, extra) for w in range(workers)]
    cpu0 = meter.cpu()
    res = run_workers(ctx, produce_worker, args, cfg.phase_timeout)
    cpu1 = meter.cpu()
    bad = [r for r in res if not r["ok"]]
    if bad:
        raise BenchError(f"produce to {topic} failed: {bad[0]['first_error']}")
    secs = max(r["t1"] for r in res) - min(r["t0"] for r in res)
    nbytes = records * cfg.record_size
    client_cpu = sum(r["cpu"] for r in res)
    return {
        "records": records, "seconds": secs, "msgs_s": records / secs, "mb_s": nbytes / MB / secs,
        "broker_cpu_s": None if cpu0 is None else cpu1 - cpu0,
        "broker_cpu_s_per_gib": None if cpu0 is None else (cpu1 - cpu0) / (nbytes / GIB),
        "client_cpu_s_per_gib": client_cpu / (nbytes / GIB),
    }


def phase_consume(ctx, cfg, bootstrap, meter, topic, partitions, produced):
    marks = watermarks(bootstrap, topic, partitions)
    stored = sum(hi - lo for lo, hi in marks)
    shares = split_ranges(marks, max(1, cfg.consumers))
    args = [(bootstrap, topic, share, cfg.record_size) for share in shares]
    cpu0 = meter.cpu()
    res = run_workers(ctx, consume_worker, args, cfg.phase_timeout)
    cpu1 = meter.cpu()
    consumed = sum(r["count"] for r in res)
    out = {
        "produced": produced, "stored": stored, "consumed": consumed,
        "per_partition_end_offsets": [hi for _, hi in marks],
        "gaps": sum(r["gaps"] for r in res), "dups": sum(r["dups"] for r in res),
        "bad_size": sum(r["bad_size"] for r in res), "errors": sum(r["errors"] for r in res),
    }
    bad = [r for r in res if not r["ok"]]
    if bad or not (produced == stored == consumed):
        err = bad[0]["first_error"] if bad else None
        raise BenchError(f"consume of {topic}: produced {produced}, stored (watermarks) {stored}, "
                         f"consumed {consumed}, gaps {out['gaps']}, dups {out['dups']}, "
                         f"wrong size {out['bad_size']}, errors {out['errors']} ({err})")
    secs = max(r["t1"] for r in res) - min(r["t0"] for r in res)
    nbytes = sum(r["bytes"] for r in res)
    client_cpu = sum(r["cpu"] for r in res)
    out.update({
        "seconds": secs, "msgs_s": consumed / secs, "mb_s": nbytes / MB / secs,
        "broker_cpu_s": None if cpu0 is None else cpu1 - cpu0,
        "broker_cpu_s_per_gib": None if cpu0 is None else (cpu1 - cpu0) / (nbytes / GIB),
        "client_cpu_s_per_gib": client_cpu / (nbytes / GIB),
    })
    return out


def phase_latency(ctx, cfg, bootstrap, meter, topic):
    args = [(bootstrap, topic, cfg.record_size, cfg.latency_rate_mb * MB, cfg.latency_seconds,
             cfg.latency_warmup, cfg.latency_linger_ms)]
    cpu0 = meter.cpu()
    (r,) = run_workers(ctx, latency_worker, args, cfg.phase_timeout)
    cpu1 = meter.cpu()
    if not r["ok"]:
        raise BenchError(f"latency run on {topic} failed: {r['first_error']} "
                         f"(delivered {r.get('delivered')} of {r.get('count')})")
    (lo, hi), = watermarks(bootstrap, topic, 1)
    if hi - lo != r["count"]:
        raise BenchError(f"latency topic {topic}: produced {r['count']}, stored {hi - lo}")
    nbytes = r["count"] * cfg.record_size
    return {
        "records": r["count"], "stored": hi - lo, "achieved_mb_s": r["achieved_mb_s"],
        "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "p999_ms": r["p999_ms"], "max_ms": r["max_ms"],
        "broker_cpu_s_per_gib": None if cpu0 is None else (cpu1 - cpu0) / (nbytes / GIB),
        "client_cpu_s_per_gib": r["cpu"] / (nbytes / GIB),
    }


# --------------------------------------------------------------------------------------
# Report


def summarize(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "runs": vals}


def fmt(v, digits=1):
    if v is None:
        return "-"
    if abs(v) >= 10000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def target_mark(key, value):
    if key not in TARGETS or value is None:
        return ""
    op, bound, unit = TARGETS[key]
    ok = value >= bound if op == ">=" else value <= bound
    return f"{'✓' if ok else '✗'} {op.replace('>=', '≥').replace('<=', '≤')} {bound:g} {unit}"


def print_report(summary, machine, cfg, broker_info):
    rows = []

    def row(label, s, digits=1, target=None):
        if s is None:
            rows.append((label, "-", "-", ""))
            return
        rows.append((label, fmt(s["median"], digits), f"{fmt(s['min'], digits)} – {fmt(s['max'], digits)}",
                     target_mark(target, s["median"]) if target else ""))

    S = summary
    for p in cfg.partitions:
        k = f"p{p}"
        row(f"produce {p}-partition MB/s", S[k]["produce_mb_s"], target="produce_mb_s")
        row(f"produce {p}-partition msgs/s", S[k]["produce_msgs_s"], 0)
    for p in cfg.partitions:
        k = f"p{p}"
        row(f"consume {p}-partition MB/s", S[k]["consume_mb_s"], target="consume_mb_s")
        row(f"consume {p}-partition msgs/s", S[k]["consume_msgs_s"], 0)
    lat = f"{cfg.latency_rate_mb:g} MB/s"
    row(f"produce latency p50 ms @ {lat}", S["latency"]["p50_ms"], 2)
    row(f"produce latency p99 ms @ {lat}", S["latency"]["p99_ms"], 2, target="latency_p99_ms")
    row(f"produce latency p99.9 ms @ {lat}", S["latency"]["p999_ms"], 2)
    row(f"  achieved rate MB/s", S["latency"]["achieved_mb_s"])
    for p in cfg.partitions:
        k = f"p{p}"
        row(f"broker CPU-s/GiB produce {p}p", S[k]["produce_broker_cpu_s_per_gib"], 2)
        row(f"client CPU-s/GiB produce {p}p", S[k]["produce_client_cpu_s_per_gib"], 2)
    for p in cfg.partitions:
        k = f"p{p}"
        row(f"broker CPU-s/GiB consume {p}p", S[k]["consume_broker_cpu_s_per_gib"], 2)
        row(f"client CPU-s/GiB consume {p}p", S[k]["consume_client_cpu_s_per_gib"], 2)
    one = lambda v: None if v is None else {"median": v, "min": v, "max": v}
    row("broker idle RSS MiB (after start)", one(broker_info.get("idle_rss_mib")), target="idle_rss_mib")
    row("broker peak RSS MiB (VmHWM)", one(broker_info.get("peak_rss_mib")))
    after = [v for v in S.get("rss_after_run_mib", []) if v is not None]
    if after:
        rows.append(("broker RSS MiB after each run", fmt(after[-1]),
                     " → ".join(fmt(v, 0) for v in after), ""))
    row("  at end: RssAnon MiB", one(broker_info.get("end_RssAnon_mib")))
    row("  at end: RssFile MiB", one(broker_info.get("end_RssFile_mib")))
    row("disk seq. write MB/s (dd fdatasync)", S["disk_mb_s"])
    for p in cfg.partitions:
        row(f"produce {p}p ÷ disk (median ratio)", one(S[f"p{p}"]["produce_over_disk"]), 2)

    w = [max(len(r[i]) for r in rows + [("metric", "median", "range (min – max)", "target")])
         for i in range(4)]
    print()
    print(f"Quiver broker benchmark — {cfg.runs} runs, {cfg.records:,} records x {cfg.record_size} B, "
          f"acks=1, {cfg.producers} producer / {cfg.consumers} consumer processes")
    print(f"machine: {machine['nproc']} CPUs ({machine.get('cpu_model')}), {machine['mem_gib']} GiB, "
          f"kernel {machine['kernel']}, librdkafka {machine['librdkafka']}; "
          f"broker {broker_info.get('where')}")
    print("load average (1/5/15 min) at start {:.2f}/{:.2f}/{:.2f}, at end {:.2f}/{:.2f}/{:.2f}".format(
        *machine["loadavg_start"], *machine["loadavg_end"]))
    hdr = ("metric", "median", "range (min – max)", "target")
    line = f"{hdr[0]:<{w[0]}}  {hdr[1]:>{w[1]}}  {hdr[2]:>{w[2]}}  {hdr[3]}"
    print(line)
    print("-" * len(line))
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]}")
    print()
    print("record counts (produced = stored = consumed, every offset read once):")
    for p in cfg.partitions:
        counts = S[f"p{p}"]["counts"]
        print(f"  {p}-partition: " + "; ".join(
            f"run {i + 1}: {c['produced']:,} / {c['stored']:,} / {c['consumed']:,}"
            for i, c in enumerate(counts)))
    lc = S["latency"]["counts"]
    print("  latency topic: " + "; ".join(
        f"run {i + 1}: {c['records']:,} / {c['stored']:,}" for i, c in enumerate(lc)))
    print("targets are a report, not an assertion.")


# --------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one)")
    ap.add_argument("--broker-pid", type=int, help="pid of the running broker (CPU and RSS figures)")
    ap.add_argument("--binary", default=os.path.expanduser("~/.cache/quiver/target/release/quiver"),
                    help="quiver binary to start")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="broker setting passed as --set (repeatable)")
    ap.add_argument("--tmp-parent", default=None, help="where the broker's tempdir goes")
    ap.add_argument("--data-dir", help="directory for the dd reference (default: the broker's)")
    ap.add_argument("--records", type=int, help="records per produce run (default 1,000,000; quick 150,000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--record-size", type=int, default=1024, help="value bytes per record")
    ap.add_argument("--partitions", default="1,6", help="partition counts of the throughput topics")
    ap.add_argument("--producers", type=int, default=2, help="producer worker processes")
    ap.add_argument("--consumers", type=int, default=2, help="consumer worker processes")
    ap.add_argument("--linger-ms", type=float, default=5)
    ap.add_argument("--latency-rate-mb", type=float, default=50.0, help="MB/s of the latency run")
    ap.add_argument("--latency-seconds", type=float, help="measured seconds per latency run (default 10; quick 3)")
    ap.add_argument("--latency-warmup", type=float, default=1.0, help="seconds discarded at the start")
    ap.add_argument("--latency-linger-ms", type=float, default=0)
    ap.add_argument("--dd-mib", type=int, help="MiB written by dd per run (default 1024; quick 256)")
    ap.add_argument("--phase-timeout", type=float, default=180.0, help="seconds a phase may take")
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke run with fewer records")
    ap.add_argument("--out", default="target/bench/broker.json", help="JSON file for the figures")
    cfg = ap.parse_args(argv)
    cfg.records = cfg.records or (150_000 if cfg.quick else 1_000_000)
    cfg.latency_seconds = cfg.latency_seconds or (3.0 if cfg.quick else 10.0)
    cfg.dd_mib = cfg.dd_mib or (256 if cfg.quick else 1024)
    cfg.partitions = [int(x) for x in cfg.partitions.split(",") if x.strip()]
    if cfg.runs < 1 or cfg.records < 1 or cfg.record_size < 8:
        ap.error("--runs and --records must be >= 1, --record-size >= 8")
    return cfg


def finish(result, broker, broker_info, out, t_start):
    """The end of every benchmark run, failed or not: keep the broker's log tail, stop
    the broker if the benchmark started it, and write the figures to `out`."""
    if broker:
        result.setdefault("broker", broker_info)["log_tail"] = broker.log_tail(20)
        broker.close()
    if out:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            with open(out, "w") as f:
                json.dump(result, f, indent=2, default=str)
            log(f"figures written to {out} ({time.monotonic() - t_start:.0f} s in all)")
        except OSError as e:
            log(f"could not write {out}: {e}")


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    ctx = mp.get_context("spawn")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    machine = machine_info()
    broker = None
    broker_info = {}
    result = {"config": {k: v for k, v in vars(cfg).items()}, "machine": machine,
              "targets": {k: {"op": v[0], "bound": v[1], "unit": v[2]} for k, v in TARGETS.items()}}
    t_start = time.monotonic()
    try:
        if cfg.bootstrap:
            bootstrap, pid = cfg.bootstrap, cfg.broker_pid
            host, port = bootstrap.rsplit(":", 1)
            try:
                answered = api_versions_probe(host, int(port), timeout=5)
            except OSError as e:
                raise BenchError(f"no ApiVersions answer from {bootstrap}: {e}")
            if not answered:
                raise BenchError(f"ApiVersions to {bootstrap} answered with an error")
            data_dir = cfg.data_dir or (data_dir_of_pid(pid) if pid else None) or os.getcwd()
            broker_info["where"] = f"at {bootstrap}" + (f" (pid {pid})" if pid else " (no pid: no CPU/RSS)")
            if pid:
                broker_info["idle_rss_mib"] = proc_status_kib(pid, "VmRSS") / 1024
                broker_info["idle_rss_note"] = "VmRSS when the benchmark started"
        else:
            if not os.access(cfg.binary, os.X_OK):
                raise BenchError(f"broker binary {cfg.binary} not found (build it or pass --binary)")
            broker = Broker(cfg.binary, cfg.set, cfg.tmp_parent)
            broker_info["startup_s"] = broker.start()
            bootstrap, pid = broker.bootstrap, broker.proc.pid
            broker_info["idle_rss_mib"] = proc_status_kib(pid, "VmRSS") / 1024
            data_dir = cfg.data_dir or broker.data_dir
            broker_info["where"] = f"{cfg.binary} started by the benchmark (pid {pid})"
            broker_info["binary_mtime"] = time.strftime("%Y-%m-%dT%H:%M:%S",
                                                        time.localtime(os.path.getmtime(cfg.binary)))
        broker_info["data_dir"] = data_dir
        meter = Meter(pid)
        tag = uuid.uuid4().hex[:6]
        runs = []
        for run in range(cfg.runs):
            rr = {"run": run + 1}
            log(f"run {run + 1}/{cfg.runs}: dd {cfg.dd_mib} MiB in {data_dir}")
            rr["disk_mb_s"] = dd_write_mb_s(data_dir, cfg.dd_mib)
            for p in cfg.partitions:
                topic = f"bench-{tag}-r{run + 1}-p{p}"
                create_topic(bootstrap, topic, p)
                log(f"run {run + 1}: produce {cfg.records:,} x {cfg.record_size} B to {topic}")
                prod = phase_produce(ctx, cfg, bootstrap, meter, topic, p, cfg.records)
                if broker:
                    broker.check_alive()
                log(f"  produce {prod['mb_s']:.1f} MB/s, {prod['msgs_s']:,.0f} msgs/s; consuming")
                cons = phase_consume(ctx, cfg, bootstrap, meter, topic, p, cfg.records)
                log(f"  consume {cons['mb_s']:.1f} MB/s; produced {cons['produced']:,} "
                    f"stored {cons['stored']:,} consumed {cons['consumed']:,}")
                rr[f"p{p}"] = {"topic": topic, "produce": prod, "consume": cons}
                delete_topic(bootstrap, topic)
            topic = f"bench-{tag}-r{run + 1}-lat"
            create_topic(bootstrap, topic, 1)
            log(f"run {run + 1}: latency at {cfg.latency_rate_mb:g} MB/s for {cfg.latency_seconds:g} s")
            rr["latency"] = phase_latency(ctx, cfg, bootstrap, meter, topic)
            log(f"  p50 {rr['latency']['p50_ms']:.2f} ms, p99 {rr['latency']['p99_ms']:.2f} ms, "
                f"achieved {rr['latency']['achieved_mb_s']:.1f} MB/s")
            delete_topic(bootstrap, topic)
            if broker:
                broker.check_alive()
            if pid:   # its topics are deleted by now: does the memory go back?
                rr["broker_rss_mib_after_run"] = proc_status_kib(pid, "VmRSS") / 1024
            runs.append(rr)
        if pid:
            broker_info["peak_rss_mib"] = proc_status_kib(pid, "VmHWM") / 1024
            for key in ("VmRSS", "RssAnon", "RssFile"):
                v = proc_status_kib(pid, key)
                broker_info[f"end_{key}_mib"] = None if v is None else v / 1024
            broker_info["cpu_s_total"] = proc_cpu_seconds(pid)

        summary = {"disk_mb_s": summarize([r["disk_mb_s"] for r in runs]),
                   "rss_after_run_mib": [r.get("broker_rss_mib_after_run") for r in runs]}
        for p in cfg.partitions:
            k = f"p{p}"
            s = {}
            for phase in ("produce", "consume"):
                for m in ("mb_s", "msgs_s", "broker_cpu_s_per_gib", "client_cpu_s_per_gib"):
                    s[f"{phase}_{m}"] = summarize([r[k][phase][m] for r in runs])
            s["produce_over_disk"] = s["produce_mb_s"]["median"] / summary["disk_mb_s"]["median"]
            s["counts"] = [{x: r[k]["consume"][x] for x in ("produced", "stored", "consumed")}
                           for r in runs]
            summary[k] = s
        summary["latency"] = {m: summarize([r["latency"][m] for r in runs])
                              for m in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "achieved_mb_s",
                                        "broker_cpu_s_per_gib", "client_cpu_s_per_gib")}
        summary["latency"]["counts"] = [{"records": r["latency"]["records"],
                                         "stored": r["latency"]["stored"]} for r in runs]
        marks = {
            "produce_mb_s": {f"p{p}": target_mark("produce_mb_s", summary[f"p{p}"]["produce_mb_s"]["median"])
                             for p in cfg.partitions},
            "consume_mb_s": {f"p{p}": target_mark("consume_mb_s", summary[f"p{p}"]["consume_mb_s"]["median"])
                             for p in cfg.partitions},
            "latency_p99_ms": target_mark("latency_p99_ms", summary["latency"]["p99_ms"]["median"]),
            "idle_rss_mib": target_mark("idle_rss_mib", broker_info.get("idle_rss_mib")),
        }
        machine["loadavg_end"] = os.getloadavg()
        result.update(broker=broker_info, runs=runs, summary=summary, target_marks=marks,
                      elapsed_s=time.monotonic() - t_start, ok=True)
        print_report(summary, machine, cfg, broker_info)
        return 0
    except BenchError as e:
        log(f"BENCHMARK FAILED: {e}")
        result.update(ok=False, error=str(e), broker=broker_info)
        return 1
    except Exception as e:
        import traceback
        log("BENCHMARK FAILED (unexpected error):\n" + traceback.format_exc())
        result.update(ok=False, error=f"{type(e).__name__}: {e}", broker=broker_info)
        return 1
    finally:
        finish(result, broker, broker_info, cfg.out, t_start)


if __name__ == "__main__":
    sys.exit(main())
