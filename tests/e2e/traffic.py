"""A healthy client that produces and consumes throughout a bad-input test.

It runs in a thread: every ~10 ms it produces one record "h-<n>" (acks=all)
and reads what has arrived.  check() stops it and asserts every record was
acknowledged and read back in order at offsets 0, 1, 2, ..."""

from __future__ import annotations

import threading
import time

from clients import consumer, create_topic, producer, unique_topic
from confluent_kafka import TopicPartition


class HealthyTraffic:
    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.topic = unique_topic("healthy")
        self.sent = 0
        self.acked = []  # (offset, value)
        self.errors = []
        self.read = []  # (offset, value)
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def __enter__(self):
        create_topic(self.bootstrap, self.topic, 1)
        self._p = producer(self.bootstrap, acks="all", **{"linger.ms": 0, "message.timeout.ms": 20000})
        self._c = consumer(self.bootstrap)
        self._c.assign([TopicPartition(self.topic, 0, 0)])
        self._thread = threading.Thread(target=self._run, name="healthy-traffic", daemon=True)
        self._thread.start()
        self.wait_progress(5)
        return self

    def __exit__(self, exc_type, *rest):
        self._stop.set()
        self._thread.join(30)
        if exc_type is None:
            self.check()
        self._c.close()

    def _cb(self, err, msg):
        with self._lock:
            if err is not None:
                self.errors.append(("produce", err))
            else:
                self.acked.append((msg.offset(), msg.value()))

    def _run(self):
        while not self._stop.is_set():
            self._p.produce(self.topic, value=b"h-%d" % self.sent, partition=0, on_delivery=self._cb)
            self.sent += 1
            self._p.poll(0)
            for m in self._c.consume(num_messages=100, timeout=0.01):
                with self._lock:
                    if m.error():
                        self.errors.append(("consume", m.error()))
                    else:
                        self.read.append((m.offset(), m.value()))
        self._p.flush(20)

    def wait_progress(self, n: int = 20, timeout: float = 30.0):
        """Wait until n more records have been both acknowledged and read."""
        with self._lock:
            a0, r0 = len(self.acked), len(self.read)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                a, r, errs = len(self.acked), len(self.read), list(self.errors)
            assert not errs, f"healthy client saw errors: {errs[:5]}"
            if a >= a0 + n and r >= r0 + n:
                return
            assert time.monotonic() < deadline, (
                f"healthy client stalled: acked {a - a0}, read {r - r0} of {n} in {timeout}s")
            time.sleep(0.02)

    def check(self):
        assert not self.errors, f"healthy client saw errors: {self.errors[:5]}"
        assert len(self.acked) == self.sent, f"{self.sent} sent, {len(self.acked)} acknowledged"
        want = [(i, b"h-%d" % i) for i in range(self.sent)]
        assert self.acked == want, "acknowledged offsets/values are not 0, 1, 2, ... in produce order"
        # drain what is still in flight to the consumer
        deadline = time.monotonic() + 30
        while len(self.read) < self.sent and time.monotonic() < deadline:
            for m in self._c.consume(num_messages=1000, timeout=0.2):
                assert not m.error(), m.error()
                self.read.append((m.offset(), m.value()))
        assert self.read == want, f"read {len(self.read)} of {self.sent}; first difference at " \
            f"{next((i for i, (a, b) in enumerate(zip(self.read, want)) if a != b), min(len(self.read), len(want)))}"
