"""A producer that sends as fast as it can for a while (run as its own process), for
the quota tests: 1 KiB values to one partition, its client configuration from a JSON
argument. Writes one line per delivered record, "<seconds since start> <value bytes>",
and "err <code>" for failures."""

import json
import sys
import time

from confluent_kafka import Producer


def main():
    conf, topic, seconds, out_path = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    out = open(out_path, "w", buffering=1 << 16)
    start = time.monotonic()

    def delivered(err, msg):
        if err is None:
            out.write(f"{time.monotonic() - start:.4f} {len(msg.value())}\n")
        else:
            out.write(f"err {err.code()}\n")

    p = Producer({"linger.ms": 5, "queue.buffering.max.kbytes": 32768, "acks": "1", **conf})
    payload = bytes(1024)
    while time.monotonic() - start < seconds:
        try:
            p.produce(topic, payload, partition=0, on_delivery=delivered)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    p.flush(60)
    out.close()


if __name__ == "__main__":
    main()
