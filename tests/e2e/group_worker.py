"""One consumer-group member as its own process, so a test can kill -9 it.

    python group_worker.py LIB BOOTSTRAP TOPIC GROUP LOGFILE [--instance ID]
        [--session-ms N] [--assignor NAME] [--batch-sleep S]

LIB is `confluent` (confluent-kafka/librdkafka) or `kafka-python`.  The worker
subscribes, and after every polled batch processes the records (logs them) and
commits synchronously, so at most the batch in hand is reprocessed after a
crash.  SIGTERM closes the consumer cleanly (a dynamic member leaves the group).

Every line of LOGFILE is JSON, flushed at once:
  {"ev": "assign", "t": <unix s>, "parts": [..]}     partitions now owned
  {"ev": "revoke", "t": ..., "parts": [..]}
  {"ev": "rec", "p": <partition>, "o": <offset>, "k": <key>, "v": <value>}
  {"ev": "commit", "t": ..., "offsets": {"<p>": <next offset>}}  acknowledged
  {"ev": "commit_error", "t": ..., "error": "..."}
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

stopping = False


def on_term(_sig, _frame):
    global stopping
    stopping = True


class Log:
    def __init__(self, path: str):
        self.f = open(path, "a", buffering=1)

    def write(self, **ev):
        self.f.write(json.dumps(ev) + "\n")


def run_confluent(args, log: Log):
    from confluent_kafka import Consumer, KafkaException

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": args.session_ms,
        "heartbeat.interval.ms": min(1000, args.session_ms // 3),
        "partition.assignment.strategy": args.assignor or "range,roundrobin",
        "client.id": f"ck-{args.instance or 'dyn'}",
    }
    if args.instance:
        conf["group.instance.id"] = args.instance
    c = Consumer(conf)

    def assigned(_c, parts):
        log.write(ev="assign", t=time.time(), parts=sorted(p.partition for p in parts))

    def revoked(_c, parts):
        log.write(ev="revoke", t=time.time(), parts=sorted(p.partition for p in parts))

    c.subscribe([args.topic], on_assign=assigned, on_revoke=revoked)
    try:
        while not stopping:
            msgs = c.consume(num_messages=1000, timeout=0.2)
            batch = {}
            for m in msgs:
                if m.error():
                    continue
                log.write(ev="rec", p=m.partition(), o=m.offset(), k=m.key().decode(),
                          v=m.value().decode())
                batch[m.partition()] = m.offset() + 1
            if batch:
                try:
                    done = c.commit(asynchronous=False)
                    log.write(ev="commit", t=time.time(),
                              offsets={str(tp.partition): tp.offset for tp in done
                                       if tp.partition in batch and tp.error is None})
                except KafkaException as e:
                    log.write(ev="commit_error", t=time.time(), error=str(e))
                time.sleep(args.batch_sleep)
    finally:
        c.close()


def run_kafka_python(args, log: Log):
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.errors import KafkaError

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            log.write(ev="revoke", t=time.time(), parts=sorted(p.partition for p in revoked))

        def on_partitions_assigned(self, assigned):
            log.write(ev="assign", t=time.time(), parts=sorted(p.partition for p in assigned))

    extra = {}
    if args.instance:
        extra["group_instance_id"] = args.instance
    c = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_ms,
        heartbeat_interval_ms=min(1000, args.session_ms // 3),
        client_id=f"kp-{args.instance or 'dyn'}",
        **extra,
    )
    c.subscribe([args.topic], listener=Listener())
    try:
        while not stopping:
            polled = c.poll(timeout_ms=200, max_records=200)
            batch = {}
            for tp, msgs in polled.items():
                for m in msgs:
                    log.write(ev="rec", p=m.partition, o=m.offset, k=m.key.decode(),
                              v=m.value.decode())
                    batch[m.partition] = m.offset + 1
            if batch:
                try:
                    c.commit()
                    log.write(ev="commit", t=time.time(), offsets={str(p): o for p, o in batch.items()})
                except KafkaError as e:
                    log.write(ev="commit_error", t=time.time(), error=repr(e))
                time.sleep(args.batch_sleep)
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib", choices=["confluent", "kafka-python"])
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("group")
    ap.add_argument("logfile")
    ap.add_argument("--instance")
    ap.add_argument("--session-ms", type=int, default=6000)
    ap.add_argument("--assignor")
    ap.add_argument("--batch-sleep", type=float, default=0.0,
                    help="seconds to pause after each batch, to make consumption take a while")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    log = Log(args.logfile)
    log.write(ev="start", t=time.time())
    if args.lib == "confluent":
        run_confluent(args, log)
    else:
        run_kafka_python(args, log)
    log.write(ev="stop", t=time.time())


if __name__ == "__main__":
    sys.exit(main())
