"""kcat (librdkafka 2.0.2): metadata listing, and for every codec a 100k
record produce that reads back identical and in order, from the beginning,
from an offset inside a batch, from the end, and by timestamp."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time

import pytest

import kproto
from clients import create_topic, flush_all, kcat, producer, unique_topic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
N = 100_000
HEADERS = [("trace", "t-1"), ("app", "quiver-e2e")]
FMT = r"%o\t%k\t%s\t%h\t%T\n"


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def make_records(rng, n, prefix="v"):
    """[(key, value)] with unique values of varying length (no tab/newline/colon).
    Values are words from a small vocabulary, so every codec really compresses
    them (librdkafka sends a batch uncompressed when compressing does not help)."""
    out = []
    for i in range(n):
        pad = "-".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 12)))
        out.append((f"key-{i % 997}", f"{prefix}{i:06d}-{pad}"))
    return out


def produce_kcat(bootstrap, topic, records, codec):
    data = "".join(f"{k}:{v}\n" for k, v in records).encode()
    args = ["-P", "-t", topic, "-p", "0", "-K", ":", "-X", f"compression.codec={codec}",
            "-X", "linger.ms=20"]
    for hk, hv in HEADERS:
        args += ["-H", f"{hk}={hv}"]
    return kcat(bootstrap, *args, input=data)


def parse(out: bytes):
    """kcat -f FMT output -> [(offset, key, value, headers, ts)]."""
    rows = []
    for line in out.decode().split("\n"):
        if not line:
            continue
        off, key, value, headers, ts = line.split("\t")
        rows.append((int(off), key, value, headers, int(ts)))
    return rows


def check_rows(rows, records, first_offset, t_lo=None, t_hi=None):
    want_headers = ",".join(f"{k}={v}" for k, v in HEADERS)
    expect = records[first_offset:]
    assert len(rows) == len(expect), f"read {len(rows)} records from offset {first_offset}, expected {len(expect)}"
    for i, ((off, key, value, headers, ts), (k, v)) in enumerate(zip(rows, expect)):
        want = (first_offset + i, k, v, want_headers)
        assert (off, key, value, headers) == want, f"record #{i}: got {(off, key, value, headers)}, want {want}"
        if t_lo is not None:
            assert t_lo <= ts <= t_hi, f"record at offset {off}: timestamp {ts} outside [{t_lo}, {t_hi}]"


def test_kcat_metadata_lists_broker_and_topics(broker):
    topics = {unique_topic("list-a"): 1, unique_topic("list-b"): 3}
    for name, parts in topics.items():
        create_topic(broker.bootstrap, name, parts)

    listing = json.loads(kcat(broker.bootstrap, "-L", "-J").stdout)
    assert [(b["id"], b["name"]) for b in listing["brokers"]] == [(0, broker.bootstrap)]
    seen = {t["topic"]: t for t in listing["topics"]}
    for name, parts in topics.items():
        assert name in seen, f"kcat -L does not list {name}: {sorted(seen)}"
        t = seen[name]
        assert "error" not in t, t
        assert sorted(p["partition"] for p in t["partitions"]) == list(range(parts))
        for p in t["partitions"]:
            assert p["leader"] == 0, p
            assert [r["id"] for r in p["replicas"]] == [0], p
            assert [r["id"] for r in p["isrs"]] == [0], p

    text = kcat(broker.bootstrap, "-L").stdout.decode()
    assert f"broker 0 at {broker.bootstrap}" in text, text
    for name, parts in topics.items():
        assert f'topic "{name}" with {parts} partitions' in text, text


@pytest.mark.timeout(240)
@pytest.mark.parametrize("codec", CODECS)
def test_kcat_roundtrip_every_record_in_order(broker, rng, codec):
    topic = unique_topic(f"kcat-{codec}")
    records = make_records(rng, N)

    t_lo = int(time.time() * 1000) - 1000
    produce_kcat(broker.bootstrap, topic, records, codec)  # auto-creates the topic
    t_hi = int(time.time() * 1000) + 1000

    # everything, from the beginning
    out = kcat(broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", FMT).stdout
    check_rows(parse(out), records, 0, t_lo, t_hi)

    # from an offset inside a batch
    out = kcat(broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "12345", "-e", "-f", FMT).stdout
    check_rows(parse(out), records, 12345)

    # the stored batches are the producer's: compressed as produced, CRCs intact, contiguous
    batches = []
    for seg in broker.segments(topic):
        found, left = kproto.scan_batches(seg.read_bytes())
        assert left == 0, f"{seg} has {left} trailing bytes that are not a whole batch"
        batches += found
    assert batches, f"no segment files under {broker.partition_dir(topic)}"
    assert all(b.crc_ok for b in batches)
    assert batches[0].base_offset == 0 and batches[-1].last_offset == N - 1
    for a, b in zip(batches, batches[1:]):
        assert b.base_offset == a.last_offset + 1, f"gap/overlap between batches {a} and {b}"
    # librdkafka sends a batch uncompressed when compressing does not shrink it
    # (tiny batches), so: only this codec or none, and most records compressed
    codecs_on_disk = {b.compression for b in batches}
    compressed = sum(b.records_count for b in batches if b.compression == codec)
    assert codecs_on_disk <= {codec, "none"} and compressed >= N // 2, (
        f"kcat produced with compression.codec={codec}; the log holds batches with {codecs_on_disk}, "
        f"{compressed} of {N} records in {codec} batches (librdkafka silently stops compressing when the "
        f"advertised APIs lack what it checks for a codec, e.g. LZ4 needs FindCoordinator v0, and every "
        f"codec needs Produce advertised from v0)")

    # from the end: kcat -o end prints only records produced after it started.
    # Fresh records are produced one at a time until kcat prints the first one
    # (that is how we know it sits at the end), then three more.
    check_from_end(broker.bootstrap, topic, codec)


def check_from_end(bootstrap, topic, codec):
    cons = subprocess.Popen(["kcat", "-b", bootstrap, "-C", "-t", topic, "-p", "0", "-o", "end", "-u", "-f", FMT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p = producer(bootstrap, **{"compression.codec": codec, "linger.ms": 0})
    sent = 0
    out = bytearray()

    def send(value):
        nonlocal sent
        p.produce(topic, key=b"fresh", value=value.encode(), partition=0)
        flush_all(p, 30)
        sent += 1

    def read_for(seconds):
        ready, _, _ = select.select([cons.stdout], [], [], seconds)
        if ready:
            out.extend(os.read(cons.stdout.fileno(), 1 << 20))

    try:
        deadline = time.monotonic() + 30
        while not out:
            assert cons.poll() is None, f"kcat -o end exited: {cons.stderr.read().decode(errors='replace')}"
            assert time.monotonic() < deadline, "kcat -o end printed nothing while fresh records arrived"
            send(f"fresh-{sent}")
            read_for(0.3)
        tail = [f"fresh-{sent + i}" for i in range(3)]
        for v in tail:
            send(v)
        deadline = time.monotonic() + 30
        while (tail[-1] + "\t").encode() not in out or not out.endswith(b"\n"):
            assert time.monotonic() < deadline, f"kcat -o end did not print the last fresh records: {bytes(out)!r}"
            read_for(0.3)
    finally:
        cons.kill()
        cons.wait()
    rows = parse(bytes(out))
    assert rows, "kcat -o end printed nothing"
    first = rows[0][0]
    assert N <= first < N + sent, f"kcat -o end started at offset {first}; the log ended at {N} before it started"
    assert [(o, k, v) for o, k, v, _h, _t in rows] == [
        (N + i, "fresh", f"fresh-{i}") for i in range(first - N, sent)], rows


@pytest.mark.timeout(180)
@pytest.mark.parametrize("codec", CODECS)
def test_kcat_consume_from_timestamp(broker, codec):
    """Records with timestamps we set (base + 10 ms * i); kcat -o s@T starts at
    the first record whose timestamp is >= T."""
    topic = unique_topic(f"kcat-ts-{codec}")
    create_topic(broker.bootstrap, topic, 1)
    n = 20_000
    base = 1_600_000_000_000
    p = producer(broker.bootstrap, **{"compression.codec": codec})
    for i in range(n):
        p.produce(topic, value=f"ts-{i}".encode(), key=b"k", partition=0, timestamp=base + 10 * i)
        if i % 10000 == 9999:
            p.poll(0)
    flush_all(p)

    for target, first in [(base + 10 * 12345 - 5, 12345), (base + 10 * 12345, 12345), (base, 0),
                          (base - 99_999, 0), (base + 10 * (n - 1), n - 1)]:
        out = kcat(broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", f"s@{target}", "-e",
                   "-f", r"%o\t%T\t%s\n").stdout.decode().split("\n")
        rows = [line.split("\t") for line in out if line]
        assert len(rows) == n - first, f"s@{target}: read {len(rows)} records, expected {n - first}"
        assert rows[0] == [str(first), str(base + 10 * first), f"ts-{first}"], f"s@{target}: first row {rows[0]}"
        assert rows[-1] == [str(n - 1), str(base + 10 * (n - 1)), f"ts-{n - 1}"]
