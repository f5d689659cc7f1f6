"""Small helpers around the real Kafka clients used by the tests
(confluent-kafka / librdkafka, kcat).  They only drive the clients; every
assertion on what the client saw stays in the tests."""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: Optional[dict] = None,
                 timeout: float = 30.0):
    a = admin(bootstrap)
    fut = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                    config=config or {})], operation_timeout=timeout)[name]
    fut.result(timeout=timeout)
    # the topic is usable once metadata shows every partition with a leader
    deadline = time.monotonic() + timeout
    while True:
        md = a.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 for p in t.partitions.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {name} not visible with {partitions} partitions: {t}")
        time.sleep(0.05)


@dataclass
class Seen:
    """One record as a consumer saw it."""
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list
    timestamp: int
    timestamp_type: int


def consumer(bootstrap: str, **extra) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"e2e-{uuid.uuid4().hex[:8]}",  # required by librdkafka, never joined
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    conf.update(extra)
    return Consumer(conf)


def read_partitions(bootstrap: str, topic: str, until: dict, start: Optional[dict] = None,
                    timeout: float = 120.0, **extra) -> dict:
    """Manually assign partitions and read until each partition p has
    delivered a record at offset until[p]-1 (i.e. up to end offset until[p]).
    start maps partition -> first offset (default: beginning).  Returns
    {partition: [Seen, ...]} in delivery order.  Fails on any consumer error."""
    c = consumer(bootstrap, **extra)
    try:
        tps = []
        for p, end in until.items():
            off = (start or {}).get(p, -2)  # OFFSET_BEGINNING
            tps.append(TopicPartition(topic, p, off))
        c.assign(tps)
        got = {p: [] for p in until}
        pending = {p for p, end in until.items() if end > (start or {}).get(p, 0)}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"read timed out; have {[(p, len(v), v[-1].offset if v else None) for p, v in got.items()]}, "
                    f"want end offsets {until}")
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"consumer error: {m.error()!r}")
                ts_type, ts = m.timestamp()
                got[m.partition()].append(Seen(m.partition(), m.offset(), m.key(), m.value(),
                                               list(m.headers() or []), ts, ts_type))
                if m.offset() >= until[m.partition()] - 1:
                    pending.discard(m.partition())
        return got
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def kcat(bootstrap: str, *args: str, input: Optional[bytes] = None, timeout: float = 120.0,
         check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["kcat", "-b", bootstrap, *args]
    proc = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstderr:\n"
                             f"{proc.stderr.decode(errors='replace')[-4000:]}")
    return proc


class DeliveryLog:
    """Collects delivery reports of a confluent-kafka producer."""

    def __init__(self):
        self.ok = {}  # index -> (partition, offset)
        self.errors = {}  # index -> KafkaError

    def callback(self, index):
        def cb(err, msg):
            if err is not None:
                self.errors[index] = err
            else:
                self.ok[index] = (msg.partition(), msg.offset())
        return cb


def producer(bootstrap: str, **extra) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "queue.buffering.max.messages": 500000,
        "queue.buffering.max.kbytes": 1048576,
        "batch.num.messages": 10000,
        "message.timeout.ms": 60000,
    }
    conf.update(extra)
    return Producer(conf)


def flush_all(p: Producer, timeout: float = 120.0):
    left = p.flush(timeout)
    if left:
        raise AssertionError(f"{left} records still undelivered after {timeout}s")


__all__ = ["KafkaError", "KafkaException", "TopicPartition"]


def ack_log(path, err_as_int: bool = True):
    """Reads a background producer's outcome file (lines `ok <i> <partition> <offset>`,
    `err <i> <code>`, `done ...`): returns ({i: (partition, offset)}, {i: error}, done)."""
    ok, errs, done = {}, {}, False
    if not path.exists():
        return ok, errs, done
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "ok" and len(parts) == 4:
            ok[int(parts[1])] = (int(parts[2]), int(parts[3]))
        elif parts[0] == "err" and len(parts) == 3:
            errs[int(parts[1])] = int(parts[2]) if err_as_int else parts[2]
        elif parts[0] == "done":
            done = True
    return ok, errs, done
