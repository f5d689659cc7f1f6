"""A producer that sends as fast as the broker lets it (librdkafka honours
throttle_time_ms), for the quota tests, and `Flood`, which runs it as its own process.

Run as `flood_producer.py CONF_JSON TOPIC SECONDS OUT [PARTITIONS]`: 1 KiB values to
partition 0, or round robin over the first PARTITIONS partitions, for SECONDS or until
SIGTERM (then what is still queued is dropped and what is in flight waited for). Writes
"start <t>", then "<t> <value bytes> <partition>" per delivered record and "err <code>"
per failed one, t being time.monotonic() (CLOCK_MONOTONIC, the tests' clock too)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional


def main():
    from confluent_kafka import KafkaError, Producer

    conf, topic, seconds, out_path = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    partitions = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    out = open(out_path, "w", buffering=1 << 16)

    def delivered(err, msg):
        if err is None:
            out.write(f"{time.monotonic():.4f} {len(msg.value())} {msg.partition()}\n")
        elif err.code() != KafkaError._PURGE_QUEUE:
            out.write(f"err {err.code()}\n")

    # Small batches, so deliveries are reported in small steps and a few seconds' sum
    # is accurate.
    p = Producer({"linger.ms": 5, "batch.size": 65536, "queue.buffering.max.kbytes": 32768,
                  "acks": "1", **conf})
    payload = bytes(1024)
    out.write(f"start {time.monotonic():.4f}\n")
    out.flush()  # read while the flood runs (`Flood.started`)
    end = time.monotonic() + seconds
    sent = 0
    while not stop and time.monotonic() < end:
        try:
            p.produce(topic, payload, partition=sent % partitions, on_delivery=delivered)
            sent += 1
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    p.purge(in_queue=True, in_flight=False)
    p.flush(60)
    out.close()


class Flood:
    """One flood producer process; `launcher` starts it (subprocess.Popen, or a
    cluster's client_popen)."""

    def __init__(self, log: Path, conf: dict, topic: str, seconds: float = 120, partitions: int = 1,
                 launcher: Optional[Callable] = None):
        self.log = log
        cmd = [sys.executable, str(Path(__file__)), json.dumps(conf), topic, str(seconds), str(log),
               str(partitions)]
        self.proc = (launcher or subprocess.Popen)(cmd)

    def wait(self, timeout: float):
        """Waits for it to end by itself."""
        assert self.proc.wait(timeout=timeout) == 0, f"flood producer exited {self.proc.returncode}"

    def stop(self):
        """SIGTERM, and wait for it to write out its deliveries and exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.wait(60)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def started(self) -> Optional[float]:
        """When the producer started (time.monotonic()), once it has."""
        try:
            first = self.log.read_text().split("\n", 1)[0].split()
        except FileNotFoundError:
            return None
        return float(first[1]) if first[:1] == ["start"] and len(first) == 2 else None

    def read(self):
        """(start time, [(delivery time, bytes, partition)], error codes); after it ended."""
        start, delivered, errors = None, [], []
        for line in self.log.read_text().splitlines():
            fields = line.split()
            if fields[0] == "start":
                start = float(fields[1])
            elif fields[0] == "err":
                errors.append(fields[1])
            else:
                delivered.append((float(fields[0]), int(fields[1]), int(fields[2])))
        return start, delivered, errors


def rate(delivered, a: float, b: float, partition: Optional[int] = None) -> float:
    """Bytes per second delivered in [a, b) (to one partition, if given)."""
    return sum(n for t, n, p in delivered if a <= t < b and partition in (None, p)) / (b - a)


if __name__ == "__main__":
    main()
