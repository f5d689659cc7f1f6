"""Background idempotent producer for the exactly-once crash test (its own process).

Usage: idem_producer.py confluent|kafka-python BOOTSTRAP TOPIC PARTITIONS OUT STOP
Produces values "<client>-<index>" with each client's defaults for idempotence
(confluent-kafka: enable.idempotence=true; kafka-python: its default idempotent
producer) and acks=all, retrying through broker restarts as the clients do, and records
every outcome, one line each:  ok <index> <partition> <offset>  |  err <index> <error>
then "done". Stops when the stop file appears (after flushing) or at the time limit."""

import os
import sys
import time


def main():
    lib, bootstrap, topic, partitions, out_path, stop_path = sys.argv[1:7]
    partitions = int(partitions)
    out = open(out_path, "w", buffering=1)
    deadline = time.monotonic() + 150
    i = 0
    if lib == "confluent":
        from confluent_kafka import Producer

        p = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
        })

        def report(index):
            def cb(err, msg):
                if err is None:
                    out.write(f"ok {index} {msg.partition()} {msg.offset()}\n")
                else:
                    out.write(f"err {index} {err.code()}\n")
            return cb

        while not os.path.exists(stop_path) and time.monotonic() < deadline:
            try:
                p.produce(topic, value=b"%s-%08d" % (lib.encode(), i), partition=i % partitions,
                          on_delivery=report(i))
                i += 1
            except BufferError:
                p.poll(0.05)
            p.poll(0)
            if i % 200 == 0:
                time.sleep(0.002)
        remaining = p.flush(120)
        out.write(f"done {remaining}\n")
    else:
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                          request_timeout_ms=30000, delivery_timeout_ms=120000,
                          reconnect_backoff_ms=20, reconnect_backoff_max_ms=200)

        def on_ok(index):
            return lambda md: out.write(f"ok {index} {md.partition} {md.offset}\n")

        def on_err(index):
            return lambda exc: out.write(f"err {index} {type(exc).__name__}\n")

        while not os.path.exists(stop_path) and time.monotonic() < deadline:
            fut = p.send(topic, value=b"%s-%08d" % (lib.encode(), i), partition=i % partitions)
            fut.add_callback(on_ok(i))
            fut.add_errback(on_err(i))
            i += 1
            if i % 200 == 0:
                time.sleep(0.01)
        p.flush(timeout=120)
        out.write("done 0\n")
    out.close()


if __name__ == "__main__":
    main()
