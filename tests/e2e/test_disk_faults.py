"""Disk faults under a real producer (confluent-kafka, acks=all) with an fsync per
record (`log.flush_interval_messages = 1`, the durable setting):

- fsync fails with EIO (strace fault injection into the running broker, on one
  partition's segment file only): the produce that hit it and every later one to
  that partition get KAFKA_STORAGE_ERROR, none is acknowledged, fetches of it get
  KAFKA_STORAGE_ERROR, the broker logs the storage error naming the partition's
  directory and the OS error, /metrics shows the partition offline for storage, and
  the other partition goes on. Removing the fault does not bring the log back (a
  second fsync would report success for pages the kernel dropped); a restart does,
  with every acknowledged record in place.
- the disk fills up (a 64 MiB loop-mounted ext4 holding the data directory): produce
  fails with KAFKA_STORAGE_ERROR and the broker logs "No space left on device" with
  the partition's directory, consumers still read everything acknowledged, and once
  space is freed produce succeeds again without a restart.

Both need root (ptrace of the broker, mount); CI runs as root. They are skipped with
the reason when the machine cannot do either.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

import kproto
from clients import create_topic, read_partitions, unique_topic, watermarks

DURABLE = {"log.flush_interval_messages": "1"}
BURST = 300


def acks_all_producer(bootstrap: str) -> Producer:
    # No retries and no idempotence: the first error a record meets is the one its
    # delivery report carries, which is what the test asserts on.
    return Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "retries": 0,
        "linger.ms": 0,
        "message.timeout.ms": 30000,
    })


def send_one(p: Producer, topic: str, partition: int, key: bytes, value: bytes):
    """Produces one record and waits for its delivery report: (offset, None) when
    acknowledged, (None, KafkaError) when not."""
    out = {}

    def cb(err, msg):
        out["r"] = (None, err) if err is not None else (msg.offset(), None)

    p.produce(topic, key=key, value=value, partition=partition, on_delivery=cb)
    left = p.flush(60)
    assert left == 0 and "r" in out, f"no delivery report for {key!r} within 60s"
    return out["r"]


def metric(broker, name: str, **labels) -> float | None:
    with urllib.request.urlopen(f"http://{broker.admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return None


def check_log(bootstrap: str, topic: str, partition: int, acked: dict):
    """Every acknowledged record (offset -> (key, value)) is in the partition, at its
    offset, in order, with its key. Returns the records read."""
    end = watermarks(bootstrap, topic, partition)[1]
    assert end >= (max(acked) + 1 if acked else 0), f"high watermark {end} is below an acknowledged offset"
    got = read_partitions(bootstrap, topic, {partition: end})[partition] if end else []
    offsets = [s.offset for s in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), "offsets out of order or repeated"
    at = {s.offset: (s.key, s.value) for s in got}
    lost = {o: kv for o, kv in acked.items() if at.get(o) != kv}
    assert not lost, f"{len(lost)} acknowledged records lost or changed, e.g. {sorted(lost.items())[:5]}"
    return got


# --- fsync returning EIO --------------------------------------------------------------

@contextmanager
def fdatasync_eio(pid: int, path: Path, log: Path):
    """Makes the first fdatasync each broker thread makes on `path` fail with EIO (the
    later ones succeed, as a real kernel reports the next fsync after a failed one),
    from now until the block exits and strace detaches. Waits until strace is
    attached. The segment is fsynced with fdatasync (`File::sync_data`)."""
    cmd = ["strace", "-f", "-p", str(pid), "-P", str(path), "-e", "trace=fdatasync",
           "-e", "inject=fdatasync:error=EIO:when=1", "-o", str(log)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        # strace reports the attach on stderr ("Process N attached with M threads")
        line = proc.stderr.readline().decode(errors="replace")
        if "attached" not in line:
            rest = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            raise AssertionError(f"strace did not attach to {pid}: {line}{rest}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def can_ptrace() -> str | None:
    if shutil.which("strace") is None:
        return "strace is not installed (tests/run installs it)"
    probe = subprocess.run(["strace", "-f", "-e", "trace=none", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()}"
    return None


@pytest.mark.timeout(240)
def test_fsync_eio_takes_the_partition_offline_until_restart(broker_factory, tmp_path):
    why = can_ptrace()
    if why:
        pytest.skip(why)
    b = broker_factory(sets=DURABLE)
    topic = unique_topic("fsync-eio")
    create_topic(b.bootstrap, topic, 2)
    p = acks_all_producer(b.bootstrap)
    acked = {0: {}, 1: {}}
    errors = []  # (partition, offset the record would have had at the earliest, error)

    def produce(partition: int, i: int):
        key, value = b"k%d" % (i % 5), b"v-%d-%06d" % (partition, i)
        off, err = send_one(p, topic, partition, key, value)
        if err is None:
            acked[partition][off] = (key, value)
        else:
            errors.append((partition, i, err))
        return off, err

    for i in range(20):
        for part in (0, 1):
            assert produce(part, i)[1] is None
    first_failure = max(acked[0]) + 1  # the first offset whose fsync fails
    seg = b.segments(topic, 0)[-1]

    strace_log = tmp_path / "strace.log"
    with fdatasync_eio(b.proc.pid, seg, strace_log):
        # the produce whose fsync fails, and every later one
        for i in range(20, 30):
            off, err = produce(0, i)
            assert err is not None, f"record {i} acknowledged at offset {off} after the fsync failed"
            assert err.code() == KafkaError.KAFKA_STORAGE_ERROR, f"record {i}: {err!r}"
        # concurrent producers, many requests in flight: fsync would succeed again
        # now, and still nothing is acknowledged
        burst = [acks_all_producer(b.bootstrap) for _ in range(3)]
        outcomes = []
        for n in range(BURST):
            burst[n % 3].produce(topic, key=b"burst", value=b"burst-%d" % n, partition=0,
                                 on_delivery=lambda err, msg: outcomes.append((err, msg.offset())))
        for q in burst:
            assert q.flush(60) == 0
        del burst
        for err, off in outcomes:
            if err is None:
                acked[0][off] = (b"burst", None)
            else:
                errors.append((0, off, err))
        assert len(outcomes) == BURST
        assert {e.code() for e, _ in outcomes if e is not None} == {KafkaError.KAFKA_STORAGE_ERROR}
        # the other partition is untouched and keeps acknowledging
        for i in range(20, 30):
            assert produce(1, i)[1] is None
    injected = strace_log.read_text()
    assert "EIO (Input/output error) (INJECTED)" in injected, injected[-2000:]

    # The fault is gone, but fsync would now report success for pages the kernel may
    # have dropped: the log stays offline and nothing more is acknowledged.
    for i in range(30, 35):
        off, err = produce(0, i)
        assert err is not None and err.code() == KafkaError.KAFKA_STORAGE_ERROR, (i, off, err)
    assert produce(1, 30)[1] is None
    late_acks = [o for o in acked[0] if o >= first_failure]
    print(f"partition 0: acked={len(acked[0])} refused={len(errors)} acks at or after offset "
          f"{first_failure} (the first failed fsync)={len(late_acks)}")
    assert late_acks == []

    with kproto.Conn.to(b.bootstrap) as c:
        res = kproto.fetch_v4(c, topic, 0, 0)
        assert res.error_code == 56 and res.records == b"", res  # KAFKA_STORAGE_ERROR
        res = kproto.fetch_v4(c, topic, 1, 0)
        assert res.error_code == 0 and res.high_watermark == 31, res
    assert metric(b, "quiver_partition_storage_offline", topic=topic, partition="0") == 1
    assert metric(b, "quiver_partition_storage_offline", topic=topic, partition="1") == 0
    assert metric(b, "quiver_partitions_storage_offline") == 1
    err_lines = [line for line in b.stderr_text().splitlines()
                 if "ERROR" in line and "storage failure" in line]
    assert len(err_lines) == 1, err_lines
    assert str(b.partition_dir(topic, 0)) in err_lines[0] and "Input/output error" in err_lines[0], err_lines[0]
    assert b.alive()

    # A restart recovers the log from what is on disk: every acknowledged record is
    # there, and the partition takes writes again.
    assert b.stop() == 0
    b.start()
    for part in (0, 1):
        check_log(b.bootstrap, topic, part, acked[part])
    p = acks_all_producer(b.bootstrap)
    off, err = produce(0, 100)
    assert err is None and off >= first_failure, (off, err)
    check_log(b.bootstrap, topic, 0, acked[0])
    assert metric(b, "quiver_partitions_storage_offline") == 0


# --- disk full --------------------------------------------------------------------------

def mount_error() -> str | None:
    if os.geteuid() != 0:
        return "mounting a loop file system needs root"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@contextmanager
def small_ext4(image: Path, at: Path, size_mb: int = 64):
    subprocess.run(["truncate", "-s", f"{size_mb}M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    at.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-o", "loop", str(image), str(at)], capture_output=True, text=True)
    if r.returncode != 0:
        image.unlink()
        pytest.skip(f"cannot loop-mount an ext4 image here: {r.stderr.strip()}")
    try:
        yield at
    finally:
        subprocess.run(["umount", str(at)], check=False)
        image.unlink(missing_ok=True)


def fill(directory: Path) -> Path:
    """Writes a file until the file system refuses more (as root, which also uses the
    blocks ext4 reserves for root); returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == 28, e  # ENOSPC
        os.fsync(fd)
    finally:
        os.close(fd)
    return filler


@pytest.mark.timeout(240)
def test_disk_full_refuses_produce_and_recovers_when_space_returns(broker_factory, tmp_path):
    why = mount_error()
    if why:
        pytest.skip(why)
    b = broker_factory(sets=DURABLE, start=False)
    with small_ext4(tmp_path / "disk.img", b.data_dir):
        try:
            b.start()
            topic = unique_topic("diskfull")
            create_topic(b.bootstrap, topic, 1)
            p = acks_all_producer(b.bootstrap)
            acked = {}
            value = b"x" * 1000

            def produce(i: int):
                key = b"k%06d" % i
                off, err = send_one(p, topic, 0, key, value + key)
                if err is None:
                    acked[off] = (key, value + key)
                return off, err

            for i in range(200):
                assert produce(i)[1] is None
            filler = fill(b.data_dir)

            # The last block of the segment may still take a few records; after that
            # every produce is refused.
            refused = []
            for i in range(200, 400):
                off, err = produce(i)
                if err is not None:
                    refused.append((i, err))
                    if len(refused) >= 5:
                        break
            assert refused, "the full disk never refused a produce"
            assert all(e.code() == KafkaError.KAFKA_STORAGE_ERROR for _, e in refused), refused
            acked_while_full = len(acked) - 200
            print(f"acked before filling: 200; acked while filling the last blocks: {acked_while_full}; "
                  f"refused: {len(refused)}")
            text = b.stderr_text()
            assert "No space left on device" in text and str(b.partition_dir(topic, 0)) in text, text[-3000:]
            # consumers read everything acknowledged, the log stays online
            check_log(b.bootstrap, topic, 0, acked)
            assert metric(b, "quiver_partition_storage_offline", topic=topic, partition="0") == 0
            assert b.alive()

            # space returns: produce succeeds again, no restart
            filler.unlink()
            os.sync()
            for i in range(400, 450):
                off, err = produce(i)
                assert err is None, f"record {i} refused after space returned: {err!r}"
            got = check_log(b.bootstrap, topic, 0, acked)
            assert [s.offset for s in got] == list(range(len(got)))
            assert len(acked) == 250 + acked_while_full
            # and a restart finds the same log
            assert b.stop() == 0
            b.start()
            check_log(b.bootstrap, topic, 0, acked)
        finally:
            b.kill()
