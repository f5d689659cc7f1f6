#!/usr/bin/env python3
"""Workload of the cluster fault tests: real confluent-kafka clients in their own
processes, each recording a history (history.py) of everything it did and was told.

  cluster_workload.py produce --bootstrap B --topic T --partitions N --worker p0 --out p0.jsonl --stop STOP
  cluster_workload.py consume --bootstrap B --topic T --partitions N --worker c0 --out c0.jsonl --stop STOP
  cluster_workload.py drain   --bootstrap B --topic T --partitions N --out drain.jsonl

produce   an idempotent producer (enable.idempotence=true, acks=all unless told
          otherwise) sending unique values "<worker>-<seq>" with key "k<seq % keys>"
          and headers w=<worker>, seq=<seq> to partition seq % N, paced to --rate
          records/s; stops at the stop file, --max-count or --max-seconds, then
          flushes for up to --flush-timeout. Records send / ack / fail.
consume   one consumer assigned every partition from the beginning, reading with
          auto.offset.reset=error so that a reset is an event the history sees (a
          new consumer session reading that partition from the start), never a
          silent jump. Records poll events.
drain     after the faults: reads every partition from the start up to the high
          watermark it finds at the start. Records drain / drain_end.

Exit codes: 0 done, 3 a fatal client error (recorded in the history), 2 bad usage.
QUIVER_WL_DEBUG=fetch,consumer (librdkafka `debug` contexts) makes the consumers log
their client's view into cN.stderr.

The Workload class starts and stops these processes for a test (through a
launcher, so that in a namespaced test they start inside the clients namespace)
and follows their progress by tailing the history files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from history import Recorder, check  # noqa: E402

# Errors after which the record is certainly not in the log -- only when the producer
# does not retry (a retried send may have been appended by an earlier attempt).
# librdkafka's names (NOT_LEADER_FOR_PARTITION is Kafka's NOT_LEADER_OR_FOLLOWER).
DEFINITE_ERRORS = {"NOT_ENOUGH_REPLICAS", "NOT_LEADER_FOR_PARTITION", "UNKNOWN_TOPIC_OR_PART",
                   "MSG_SIZE_TOO_LARGE"}

SCRIPT = str(Path(__file__).resolve())


# --------------------------------------------------------------------------------------
# the processes


def _stop_requested(args) -> bool:
    return os.path.exists(args.stop)


def run_produce(args) -> int:
    from confluent_kafka import KafkaException, Producer

    rec = Recorder(args.out, args.worker)
    fatal = []

    def on_error(err):
        rec.write("client_error", err=err.name(), fatal=err.fatal(), reason=err.str())
        if err.fatal():
            fatal.append(err)

    conf = {
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": args.idempotence,
        "acks": args.acks,
        "linger.ms": 5,
        "message.timeout.ms": args.message_timeout_ms,
        "request.timeout.ms": args.request_timeout_ms,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 500,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000,
        "error_cb": on_error,
    }
    if args.retries is not None:
        conf["retries"] = args.retries
    p = Producer(conf)
    rec.write("meta", role="producer", topic=args.topic, partitions=args.partitions,
              conf={k: v for k, v in conf.items() if k != "error_cb"})

    def report(seq: int, value: str, partition: int):
        def cb(err, msg):
            if err is None:
                rec.write("ack", s=seq, v=value, topic=args.topic, p=msg.partition(), o=msg.offset())
            else:
                name = err.name()
                rec.write("fail", s=seq, v=value, topic=args.topic, p=partition, err=name,
                          definite=args.retries == 0 and name in DEFINITE_ERRORS)
        return cb

    start = time.monotonic()
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    next_at = start
    seq = 0
    try:
        while (seq < args.max_count and time.monotonic() - start < args.max_seconds
               and not _stop_requested(args) and not fatal):
            now = time.monotonic()
            if now < next_at:
                p.poll(next_at - now)  # serve delivery reports while pacing
                rec.tick()
                continue
            value = f"{args.worker}-{seq:08d}"
            partition = seq % args.partitions if args.only_partition is None else args.only_partition
            key = f"k{seq % args.keys}"
            headers = [("w", args.worker), ("seq", str(seq))]
            rec.write("send", s=seq, topic=args.topic, p=partition, k=key, v=value,
                      h=[[k, v] for k, v in headers])
            while True:
                try:
                    p.produce(args.topic, value=value.encode(), key=key.encode(), partition=partition,
                              headers=headers, on_delivery=report(seq, value, partition))
                    break
                except BufferError:  # the local queue is full: wait for deliveries
                    p.poll(0.1)
            p.poll(0)
            seq += 1
            next_at += interval
            if now - next_at > 1.0:  # fell behind (a stall): do not burst to catch up
                next_at = now
    except KafkaException as e:
        # poll() and produce() raise a fatal error too (an idempotent producer whose
        # sequence numbers the log no longer matches): recorded, the producer ends
        err = e.args[0]
        rec.write("client_error", err=err.name(), fatal=True, reason=err.str())
        fatal.append(err)
    try:
        remaining = p.flush(5 if fatal else args.flush_timeout)
    except KafkaException as e:
        err = e.args[0]
        rec.write("client_error", err=err.name(), fatal=True, reason=err.str())
        fatal.append(err)
        remaining = len(p)
    rec.write("end", sent=seq, undelivered=remaining)
    rec.close()
    return 3 if fatal else 0


def _consumer(args, extra: dict, rec: Recorder):
    from confluent_kafka import Consumer

    def on_error(err):
        rec.write("client_error", err=err.name(), fatal=err.fatal(), reason=err.str())

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": f"history-{args.worker}-{uuid.uuid4().hex[:8]}",  # required, never joined
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 2000,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 500,
        "error_cb": on_error,
    }
    conf.update(extra)
    if os.environ.get("QUIVER_WL_DEBUG"):
        conf["debug"] = os.environ["QUIVER_WL_DEBUG"]
    return Consumer(conf)


def run_consume(args) -> int:
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

    rec = Recorder(args.out, args.worker)
    c = _consumer(args, {"auto.offset.reset": "error"}, rec)
    nxt = {p: OFFSET_BEGINNING for p in range(args.partitions)}
    sess = 0

    def new_session():
        nonlocal sess
        sess += 1
        rec.write("session", sess=sess, topic=args.topic, parts={str(p): o for p, o in nxt.items()})
        c.assign([TopicPartition(args.topic, p, o) for p, o in nxt.items()])

    new_session()
    start = time.monotonic()
    code = 0
    try:
        while time.monotonic() - start < args.max_seconds and not _stop_requested(args):
            rec.tick()  # what was read reaches the file even when nothing more comes
            for m in c.consume(num_messages=500, timeout=0.2):
                err = m.error()
                if err is not None:
                    rec.write("client_error", err=err.name(), fatal=err.fatal(), reason=err.str(),
                              p=m.partition())
                    if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE,
                                      KafkaError._LOG_TRUNCATION) and m.partition() in nxt:
                        # our position vanished (the log was truncated under us; the
                        # checker will say whether we had read lost data): read that
                        # partition again from the start, as a new session
                        nxt[m.partition()] = OFFSET_BEGINNING
                        new_session()
                        break
                    continue
                rec.write("poll", sess=sess, topic=args.topic, p=m.partition(), o=m.offset(),
                          k=m.key(), v=m.value(), h=m.headers() or [])
                nxt[m.partition()] = m.offset() + 1
    except KafkaException as e:
        err = e.args[0]
        rec.write("client_error", err=err.name(), fatal=True, reason=err.str())
        code = 3
    finally:
        c.close()
        rec.write("end", sessions=sess)
        rec.close()
    return code


def run_drain(args) -> int:
    from confluent_kafka import KafkaException, TopicPartition

    rec = Recorder(args.out, args.worker)
    c = _consumer(args, {"auto.offset.reset": "earliest"}, rec)
    deadline = time.monotonic() + args.timeout
    marks = {}
    try:
        for p in range(args.partitions):
            while p not in marks:
                try:
                    marks[p] = c.get_watermark_offsets(TopicPartition(args.topic, p), timeout=5, cached=False)
                except KafkaException as e:
                    if time.monotonic() > deadline:
                        rec.write("client_error", err=e.args[0].name(), fatal=False,
                                  reason=f"watermarks of partition {p}: {e.args[0].str()}")
                        break
                    time.sleep(0.2)
        nxt = {p: lo for p, (lo, hw) in marks.items()}
        pending = {p for p, (lo, hw) in marks.items() if hw > lo}
        c.assign([TopicPartition(args.topic, p, lo) for p, (lo, hw) in marks.items() if hw > lo])
        while pending and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is not None:
                    rec.write("client_error", err=m.error().name(), fatal=m.error().fatal(),
                              reason=m.error().str(), p=m.partition())
                    continue
                p = m.partition()
                rec.write("drain", topic=args.topic, p=p, o=m.offset(), k=m.key(), v=m.value(),
                          h=m.headers() or [])
                nxt[p] = max(nxt[p], m.offset() + 1)
                if nxt[p] >= marks[p][1]:
                    pending.discard(p)
        for p in range(args.partitions):
            if p in marks:
                lo, hw = marks[p]
                rec.write("drain_end", topic=args.topic, p=p, lo=lo, hw=hw, next=nxt[p], complete=nxt[p] >= hw)
            else:
                rec.write("drain_end", topic=args.topic, p=p, lo=0, hw=-1, next=0, complete=False)
    finally:
        c.close()
        rec.close()
    return 0 if not pending and len(marks) == args.partitions else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("produce", "consume", "drain"):
        sp = sub.add_parser(name)
        sp.add_argument("--bootstrap", required=True)
        sp.add_argument("--topic", required=True)
        sp.add_argument("--partitions", type=int, required=True)
        sp.add_argument("--out", required=True)
        sp.add_argument("--worker", default=name)
        if name != "drain":
            sp.add_argument("--stop", required=True, help="stop when this file exists")
            sp.add_argument("--max-seconds", type=float, default=600)
    pp = sub.choices["produce"]
    pp.add_argument("--rate", type=float, default=200, help="records per second (0: as fast as possible)")
    pp.add_argument("--max-count", type=int, default=1_000_000)
    pp.add_argument("--keys", type=int, default=16)
    pp.add_argument("--only-partition", type=int, default=None, help="send every record to this partition")
    pp.add_argument("--acks", default="all")
    pp.add_argument("--no-idempotence", dest="idempotence", action="store_false")
    pp.add_argument("--retries", type=int, default=None, help="librdkafka retries (default: its own)")
    pp.add_argument("--message-timeout-ms", type=int, default=60000)
    pp.add_argument("--request-timeout-ms", type=int, default=10000)
    pp.add_argument("--flush-timeout", type=float, default=90)
    sub.choices["drain"].add_argument("--timeout", type=float, default=90)
    args = ap.parse_args(argv)
    return {"produce": run_produce, "consume": run_consume, "drain": run_drain}[args.cmd](args)


# --------------------------------------------------------------------------------------
# the test side


Launcher = Callable[..., subprocess.Popen]


class _Tail:
    """Follows a growing JSONL file: only whole lines, only new ones."""

    def __init__(self, path: Path):
        self.path = path
        self.pos = 0

    def new_events(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.pos += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out


class Workload:
    """Producers and consumers of one topic in their own processes, plus a fault
    log, all recording into `dir`. Always call close() (kills what still runs)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, dir: Path, launcher: Launcher = None,
                 producers: int = 2, consumers: int = 1, rate: float = 200, producer_args: list = (),
                 consumer_args: list = (), max_seconds: float = 600):
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.launcher = launcher or subprocess.Popen
        self.n_producers, self.n_consumers, self.rate = producers, consumers, rate
        # every process stops by itself after max_seconds, whatever happens to the test
        limit = ["--max-seconds", str(max_seconds)]
        self.producer_args, self.consumer_args = limit + list(producer_args), limit + list(consumer_args)
        self.stop_file = self.dir / "stop"
        # Producers have their own stop file so that they can finish first and the
        # consumers then catch up with everything acknowledged (see quiesce()).
        self.producers_stop_file = self.dir / "stop-producers"
        self.procs: dict[str, subprocess.Popen] = {}
        self._tails: dict[str, _Tail] = {}
        self.acks = Counter()  # partition -> acks seen so far
        self.polled = Counter()  # consumer worker -> records it read so far
        self.errors = Counter()  # send error name -> count
        self.errors_by: dict[str, Counter] = defaultdict(Counter)  # worker -> error name -> count
        self.last_ack: dict[int, float] = {}  # partition -> wall time of the latest ack
        self.ack_times: list[tuple[float, float, int]] = []  # (send time, ack time, partition)
        self._sent_at: dict[str, float] = {}
        self.t0 = time.time()
        self.faults = Recorder(self.dir / "faults.jsonl", "faults", flush_every=0)
        self.schedule: list[str] = []

    # -- processes
    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        err = open(self.dir / f"{name}.stderr", "wb")
        try:
            proc = self.launcher([sys.executable, SCRIPT, *cmd], stdin=subprocess.DEVNULL,
                                 stdout=err, stderr=err, start_new_session=True)
        finally:
            err.close()
        self.procs[name] = proc
        return proc

    def _common(self, worker: str) -> list[str]:
        return ["--bootstrap", self.bootstrap, "--topic", self.topic, "--partitions", str(self.partitions),
                "--worker", worker, "--out", str(self.dir / f"{worker}.jsonl")]

    def start(self) -> "Workload":
        for i in range(self.n_producers):
            w = f"p{i}"
            self._spawn(w, ["produce", *self._common(w), "--stop", str(self.producers_stop_file),
                            "--rate", str(self.rate / max(1, self.n_producers)), *self.producer_args])
            self._tails[w] = _Tail(self.dir / f"{w}.jsonl")
        for i in range(self.n_consumers):
            w = f"c{i}"
            self._spawn(w, ["consume", *self._common(w), "--stop", str(self.stop_file), *self.consumer_args])
            self._tails[w] = _Tail(self.dir / f"{w}.jsonl")
        return self

    def add_producer(self, worker: str, extra: list[str]) -> subprocess.Popen:
        """Another producer (a probe with other settings); its history joins the run's."""
        proc = self._spawn(worker, ["produce", *self._common(worker), "--stop", str(self.producers_stop_file),
                                    *extra])
        self._tails[worker] = _Tail(self.dir / f"{worker}.jsonl")
        return proc

    def check_alive(self):
        for name, proc in self.procs.items():
            stopped = self.producers_stop_file.exists() and not name.startswith("c")
            if name != "drain" and not stopped and proc.poll() is not None:
                raise AssertionError(f"workload process {name} exited early with {proc.returncode}:\n"
                                     f"{self.stderr_tail(name)}")

    def stderr_tail(self, name: str, n: int = 20) -> str:
        try:
            return "\n".join((self.dir / f"{name}.stderr").read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    # -- progress
    def poll_progress(self):
        """Reads what the producers recorded since the last call."""
        for worker, tail in self._tails.items():
            for ev in tail.new_events():
                if ev["ev"] == "send":
                    self._sent_at[ev["v"]] = ev["t"]
                elif ev["ev"] == "ack":
                    self.acks[ev["p"]] += 1
                    self.last_ack[ev["p"]] = max(self.last_ack.get(ev["p"], 0), ev["t"])
                    self.ack_times.append((self._sent_at.pop(ev["v"], 0.0), ev["t"], ev["p"]))
                elif ev["ev"] == "poll":
                    self.polled[worker] += 1
                elif ev["ev"] == "fail":
                    self.errors[ev["err"]] += 1
                    self.errors_by[worker][ev["err"]] += 1
                    self._sent_at.pop(ev["v"], None)

    def acked(self) -> int:
        self.poll_progress()
        return sum(self.acks.values())

    def wait_acked(self, more: int, timeout: float, partitions=None, what: str = ""):
        """Wait until `more` acks beyond the current count (on the given partitions,
        or in total) have arrived; fails with the producers' stderr if not."""
        parts = list(range(self.partitions)) if partitions is None else list(partitions)
        self.poll_progress()
        base = {p: self.acks[p] for p in parts}
        deadline = time.monotonic() + timeout
        while True:
            self.poll_progress()
            if all(self.acks[p] - base[p] >= more for p in parts):
                return
            self.check_alive()
            if time.monotonic() > deadline:
                got = {p: self.acks[p] - base[p] for p in parts}
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {more} more acknowledged writes on partitions "
                    f"{parts}{' ' + what if what else ''}; got {got}; send errors so far {dict(self.errors)}\n"
                    + "\n".join(f"--- {w} stderr\n{self.stderr_tail(w)}" for w in self._tails))
            time.sleep(0.1)

    def quiesce(self, timeout: float, what: str = ""):
        """Stop the producers (they flush first), then wait until every consumer has
        read everything they had acknowledged; stop() then ends the consumers."""
        self.producers_stop_file.touch()
        deadline = time.monotonic() + timeout
        for name, proc in list(self.procs.items()):
            if name.startswith("c") or name == "drain":
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"producer {name} did not stop within {timeout}s") from None
        self.wait_consumed(max(1.0, deadline - time.monotonic()), what)

    def wait_consumed(self, timeout: float, what: str = ""):
        """Wait until every consumer has read at least as many records as have been
        acknowledged so far (consumers rejoin their group after faults at their own
        pace; a check that they kept up must first give them the chance)."""
        target = self.acked()
        deadline = time.monotonic() + timeout
        while True:
            self.poll_progress()
            behind = {w: n for w, n in self.polled.items() if n < target}
            missing = [f"c{i}" for i in range(self.n_consumers) if f"c{i}" not in self.polled]
            if not behind and not missing:
                return
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for the consumers to read {target} records"
                    f"{' ' + what if what else ''}; read so far {dict(self.polled)}\n"
                    + "\n".join(f"--- c{i} stderr\n{self.stderr_tail(f'c{i}')}" for i in range(self.n_consumers)))
            time.sleep(0.1)

    def acks_between(self, t0: float, t1: float, partitions=None) -> list[tuple[float, float, int]]:
        """Acks that arrived between wall times t0 and t1: (send time, ack time, partition)."""
        self.poll_progress()
        return [a for a in self.ack_times if t0 <= a[1] < t1 and (partitions is None or a[2] in partitions)]

    def acks_sent_after(self, t: float, partitions=None) -> list[tuple[float, float, int]]:
        """Acks of sends made at or after wall time t: (send time, ack time, partition)."""
        self.poll_progress()
        return [a for a in self.ack_times if a[0] >= t and (partitions is None or a[2] in partitions)]

    # -- the fault schedule
    def fault(self, action: str, **fields):
        """Record (and print) one step of the fault schedule."""
        self.faults.write("fault", action=action, **fields)
        line = f"[fault +{time.time() - self.t0:6.2f}s] {action} " + " ".join(
            f"{k}={v}" for k, v in fields.items())
        self.schedule.append(line)
        print(line, flush=True)

    # -- ending
    def stop(self, timeout: float = 120):
        """Stop producers and consumers (they flush first) and wait for them."""
        self.producers_stop_file.touch()
        self.stop_file.touch()
        deadline = time.monotonic() + timeout
        failed = []
        for name, proc in list(self.procs.items()):
            if name == "drain":
                continue
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
                failed.append(f"{name} did not stop within {timeout}s")
                continue
            if code not in (0, 3):  # 3: fatal client error, recorded in its history
                failed.append(f"{name} exited {code}:\n{self.stderr_tail(name)}")
        self.poll_progress()
        if failed:
            raise AssertionError("workload processes failed: " + "\n".join(failed))

    def drain(self, timeout: float = 90) -> subprocess.Popen:
        """Read every partition from the start to its high watermark (after stop())."""
        proc = self._spawn("drain", ["drain", *self._common("drain"), "--timeout", str(timeout)])
        try:
            proc.wait(timeout + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            raise AssertionError(f"the drain did not finish:\n{self.stderr_tail('drain')}")
        return proc

    def history_files(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("*.jsonl"))

    def check(self):
        """The checker's report over every history file of this run (printed)."""
        self.faults.flush()
        report = check(self.history_files())
        print(report.format(), flush=True)
        return report

    def close(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.wait(30)
        self.faults.close()


if __name__ == "__main__":
    sys.exit(main())
