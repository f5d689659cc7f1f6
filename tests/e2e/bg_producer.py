"""Background producer for the crash test (run as its own process).

Produces values "crash-<index>" with acks=1 and no client retries (so every
value is sent at most once) to partition index % partitions, and records every
outcome, one line each:  ok <index> <partition> <offset>  |  err <index> <code>
Stops when the stop file appears, at max_count, or at the time limit."""

import os
import sys
import time

from confluent_kafka import Producer


def main():
    bootstrap, topic, partitions, out_path, stop_path = sys.argv[1:6]
    partitions = int(partitions)
    max_count = int(sys.argv[6]) if len(sys.argv) > 6 else 1_000_000
    time_limit = float(sys.argv[7]) if len(sys.argv) > 7 else 90.0
    out = open(out_path, "w", buffering=1 << 16)

    def report(index):
        def cb(err, msg):
            if err is None:
                out.write(f"ok {index} {msg.partition()} {msg.offset()}\n")
            else:
                out.write(f"err {index} {err.code()}\n")
        return cb

    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "1",
        "retries": 0,
        "enable.idempotence": False,
        "linger.ms": 2,
        "message.timeout.ms": 15000,
        "queue.buffering.max.messages": 20000,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
    })
    start = time.monotonic()
    i = 0
    while i < max_count and time.monotonic() - start < time_limit and not os.path.exists(stop_path):
        try:
            p.produce(topic, value=b"crash-%08d" % i, partition=i % partitions, on_delivery=report(i))
            i += 1
        except BufferError:
            p.poll(0.05)
            continue
        if i % 200 == 0:
            p.poll(0)
            out.flush()
            time.sleep(0.002)  # pace: bounded load
    p.flush(30)
    out.write(f"done {i}\n")
    out.close()


if __name__ == "__main__":
    main()
