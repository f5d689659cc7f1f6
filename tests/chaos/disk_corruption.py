#!/usr/bin/env python3
"""Damaged segment tails over kill/restart cycles: one broker that fsyncs every
record (`log.flush_interval_messages = 1`), small segments (so logs roll and index
files fill). Each cycle:

1. produces a few batches (acks=all, raw Produce v3) and records every acknowledged
   record's offset, key and value;
2. kills the broker with SIGKILL;
3. damages the newest segment while the broker is down: truncates it at a random
   point of its tail, or flips random bits in its tail, and sometimes (also, or
   instead) truncates, flips bytes in or deletes its `.index` / `.timeindex`;
4. restarts it and waits for readiness (ApiVersions, then a Fetch that answers);
5. reads the whole partition with raw Fetch v4 requests and checks every batch's
   CRC-32C itself, then every acknowledged record.

What is counted (each safety count must be 0):

- broker panics: a "panicked" line in the broker's stderr, or a broker that exited
  on its own (any exit but our SIGKILL);
- restarts that failed: the broker did not become ready (or did not serve the
  partition) within --ready-timeout;
- bad-CRC batches served: batches in Fetch responses whose CRC-32C does not match;
- acknowledged writes lost: acknowledged records that lay wholly before the damaged
  region (every one was fsynced before its ack, and the damage starts after it) and
  are not served at their offset with their key and value after the restart.
  Records in or after the damaged region may be lost (recovery cuts the log at the
  first invalid batch); they are counted as "exposed", not lost, and drop out of
  the expectation unless they are served intact;
- records served at an offset they were not acknowledged at (another value there,
  or an offset nothing was acknowledged at), and gaps in the offsets served.

Prints the figures with N and one JSON line (also written to --json); exits
non-zero on any safety failure.

    python3 tests/chaos/disk_corruption.py                  # 200 cycles
    python3 tests/chaos/disk_corruption.py --cycles 15 --seed 7
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

E2E = Path(__file__).resolve().parent.parent / "e2e"
sys.path.insert(0, str(E2E))

import kproto  # noqa: E402
from harness import Broker, BrokerFailed  # noqa: E402

SETS = {
    "log.flush_interval_messages": "1",
    "log.segment_bytes": str(64 * 1024),
    "log.index_interval_bytes": "512",
    # one offsets partition instead of 50 keeps each restart short
    "group.offsets_topic_partitions": "1",
}
TOPIC = "corrupt"
TAIL_BYTES = 4096  # how far back from the end of the newest segment damage may start
KAFKA_STORAGE_ERROR = 56


def log(msg: str):
    print(f"[disk-corruption {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--binary", default=None, help="quiver binary (default: $QUIVER_BIN or the release build)")
    ap.add_argument("--dir", default=None, help="where the broker's data and logs go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep --dir even when the run passes")
    ap.add_argument("--json", default="target/chaos/disk_corruption.json")
    ap.add_argument("--ready-timeout", type=float, default=30.0)
    return ap.parse_args(argv)


class Run:
    def __init__(self, broker: Broker, rng: random.Random):
        self.b = broker
        self.rng = rng
        # offset -> (key, value) of every acknowledged record still expected to be served
        self.acked: dict[int, tuple[bytes, bytes]] = {}
        # acknowledged records in or after a damaged region: may be gone
        self.exposed: dict[int, tuple[bytes, bytes]] = {}
        self.figures = dict(cycles=0, acked_records=0, produce_errors=0, truncations=0, bit_flips=0,
                            index_damage=0, nothing_to_damage=0, exposed_records=0, exposed_lost=0,
                            batches_served=0, records_checked=0,
                            panics=0, restarts_failed=0, bad_crc_batches=0, acked_lost=0,
                            misplaced_records=0, offset_gaps=0)
        self.examples: list[str] = []

    def note(self, what: str):
        if len(self.examples) < 20:
            self.examples.append(what)
        log(what)

    # -- one cycle ---------------------------------------------------------------------
    def produce(self, cycle: int):
        with kproto.Conn.to(self.b.bootstrap) as c:
            for j in range(self.rng.randint(1, 6)):
                n = self.rng.randint(1, 20)
                recs = [kproto.Record(b"k%d" % self.rng.randrange(100),
                                      b"c%04d-b%d-r%02d-" % (cycle, j, k) + os.urandom(self.rng.randint(0, 200)).hex().encode())
                        for k in range(n)]
                res = kproto.produce_v3(c, TOPIC, 0, kproto.encode_batch(recs), acks=-1)
                if res.error_code != 0:
                    self.figures["produce_errors"] += 1
                    continue
                for k, r in enumerate(recs):
                    self.acked[res.base_offset + k] = (r.key, r.value)
                self.figures["acked_records"] += n

    def damage(self):
        """Damages the newest segment (and/or its indexes); moves the records the
        damage may take into `exposed`."""
        segs = self.b.segments(TOPIC, 0)
        if not segs:
            self.figures["nothing_to_damage"] += 1
            return "none"
        seg = segs[-1]
        original = seg.read_bytes()
        data = bytearray(original)
        roll = self.rng.random()
        kinds = []
        region = None
        if roll < 0.8 and data:
            lo = max(0, len(data) - TAIL_BYTES)
            if roll < 0.35:
                region = self.rng.randrange(lo, len(data))
                seg.write_bytes(bytes(data[:region]))
                kinds.append(f"truncate {seg.name} {len(data)}->{region}")
                self.figures["truncations"] += 1
            else:
                spots = sorted(self.rng.randrange(lo, len(data)) for _ in range(self.rng.randint(1, 8)))
                for at in spots:
                    data[at] ^= 1 << self.rng.randrange(8)
                seg.write_bytes(bytes(data))
                region = spots[0]
                kinds.append(f"flip {len(spots)} bits of {seg.name} from byte {region} (size {len(data)})")
                self.figures["bit_flips"] += 1
        if roll >= 0.8 or self.rng.random() < 0.25:
            kinds.append(self.damage_index(seg))
            self.figures["index_damage"] += 1
        if region is not None:
            batches, _ = kproto.scan_batches(original)
            base = int(seg.stem)
            # the first offset of the first batch that reaches into the damaged region
            first_exposed = None
            for bi in batches:
                if bi.position + bi.size > region:
                    first_exposed = bi.base_offset
                    break
            if first_exposed is None:
                # the damage hit bytes after the last whole batch (or the file had none)
                first_exposed = max([bi.last_offset + 1 for bi in batches] or [base])
            for off in [o for o in self.acked if o >= first_exposed]:
                self.exposed[off] = self.acked.pop(off)
                self.figures["exposed_records"] += 1
        return "; ".join(kinds) or "none"

    def damage_index(self, seg: Path) -> str:
        which = seg.with_suffix(self.rng.choice([".index", ".timeindex"]))
        if not which.exists():
            return f"{which.name} missing"
        data = bytearray(which.read_bytes())
        how = self.rng.choice(["truncate", "flip", "delete", "garbage"])
        if how == "delete":
            which.unlink()
        elif how == "truncate":
            which.write_bytes(bytes(data[:self.rng.randrange(len(data) + 1)]))
        elif how == "flip" and data:
            for _ in range(self.rng.randint(1, 4)):
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
            which.write_bytes(bytes(data))
        else:
            which.write_bytes(bytes(data) + os.urandom(self.rng.randint(1, 24)))
        return f"{how} {which.name} ({len(data)} bytes)"

    def wait_serving(self, timeout: float):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with kproto.Conn.to(self.b.bootstrap) as c:
                    last = kproto.fetch_v4(c, TOPIC, 0, 0, max_bytes=1)
                    if last.error_code in (0, 1):  # NONE or OFFSET_OUT_OF_RANGE: the partition is served
                        return
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.05)
        raise BrokerFailed(f"partition not served within {timeout}s (last: {last})")

    def read_all(self) -> dict[int, tuple[bytes, bytes]]:
        """Every record the partition serves, by raw Fetch; counts bad-CRC batches."""
        served: dict[int, tuple[bytes, bytes]] = {}
        with kproto.Conn.to(self.b.bootstrap) as c:
            offset = 0
            while True:
                res = kproto.fetch_v4(c, TOPIC, 0, offset, max_bytes=256 * 1024)
                if res.error_code == 1 and offset == 0:
                    return served  # log start moved (not expected without retention)
                if res.error_code != 0:
                    raise AssertionError(f"fetch at {offset}: {kproto.error_name(res.error_code)}")
                if offset >= res.high_watermark or not res.records:
                    return served
                batches, left = kproto.scan_batches(res.records)
                if left:
                    self.note(f"fetch at {offset}: {left} stray bytes after {len(batches)} whole batches")
                for bi in batches:
                    self.figures["batches_served"] += 1
                    if not bi.crc_ok:
                        self.figures["bad_crc_batches"] += 1
                        self.note(f"bad CRC served: batch {bi.base_offset}..{bi.last_offset}")
                        continue
                    for r in kproto.decode_records(res.records, bi):
                        served[r.offset] = (r.key, r.value)
                if not batches:
                    raise AssertionError(f"fetch at {offset} returned no whole batch")
                offset = batches[-1].last_offset + 1

    def check(self, served: dict[int, tuple[bytes, bytes]]):
        f = self.figures
        offs = sorted(served)
        if offs and offs != list(range(offs[0], offs[-1] + 1)):
            f["offset_gaps"] += 1
            self.note(f"gaps in the offsets served: {offs[:3]}..{offs[-3:]} ({len(offs)} records)")
        for off, kv in self.acked.items():
            f["records_checked"] += 1
            if served.get(off) != kv:
                f["acked_lost"] += 1
                self.note(f"acknowledged record lost: offset {off} {kv[1][:20]!r}, served {served.get(off)!r}")
        for off, kv in served.items():
            if off in self.acked:
                continue
            if self.exposed.get(off) == kv:
                self.acked[off] = self.exposed.pop(off)  # survived the damage intact
            else:
                f["misplaced_records"] += 1
                self.note(f"record served at offset {off} that was not acknowledged there: {kv[1][:20]!r}")
        f["exposed_lost"] += len(self.exposed)
        self.exposed.clear()

    def cycle(self, n: int):
        self.produce(n)
        if not self.b.alive():
            self.figures["panics"] += 1
            self.note(f"cycle {n}: the broker exited on its own (code {self.b.proc.returncode})")
        self.b.kill()
        what = self.damage()
        try:
            self.b.start(timeout=args.ready_timeout)
            self.wait_serving(args.ready_timeout)
        except BrokerFailed as e:
            self.figures["restarts_failed"] += 1
            self.note(f"cycle {n}: restart failed after damage [{what}]: {str(e)[-1500:]}")
            raise
        served = self.read_all()
        self.check(served)
        self.figures["cycles"] += 1
        if n % 20 == 0 or n < 3:
            log(f"cycle {n}: {what}; log end {max(served) + 1 if served else 0}, "
                f"{len(self.acked)} acknowledged records expected")


def main(argv) -> int:
    global args
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    if args.binary:
        os.environ["QUIVER_BIN"] = str(Path(args.binary).resolve())
    rng = random.Random(seed)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="disk-corruption-"))
    log(f"seed={seed} cycles={args.cycles} dir={workdir}")
    broker = Broker(workdir / "broker", sets=SETS)
    run = Run(broker, rng)
    started = time.monotonic()
    aborted = None
    try:
        broker.start(timeout=args.ready_timeout)
        with kproto.Conn.to(broker.bootstrap) as c:
            err, msg = kproto.create_topics_v2(c, TOPIC, 1, 1)
            assert err == 0, f"create topic: {err} {msg}"
        run.wait_serving(args.ready_timeout)
        for n in range(args.cycles):
            run.cycle(n)
    except (BrokerFailed, AssertionError, OSError, ValueError) as e:
        aborted = f"{type(e).__name__}: {str(e)[-500:]}"
        log(f"aborted: {aborted}")
    finally:
        broker.close()
    panics = broker.panics()
    run.figures["panics"] += len(panics)
    for line in panics[:5]:
        run.note(f"panic: {line}")
    f = run.figures
    elapsed = time.monotonic() - started
    n = args.cycles
    safety = ["acked_lost", "bad_crc_batches", "panics", "restarts_failed", "misplaced_records", "offset_gaps"]
    ok = aborted is None and f["cycles"] == n and all(f[k] == 0 for k in safety)
    print(f"\ndisk corruption: N={n} kill/damage/restart cycles, seed {seed}, {elapsed:.0f}s "
          f"({f['cycles']} completed)")
    print(f"  damage: {f['truncations']} tail truncations, {f['bit_flips']} tail bit flips, "
          f"{f['index_damage']} damaged index files")
    print(f"  acknowledged writes lost (wholly before the damaged region): {f['acked_lost']} "
          f"(N={f['records_checked']} record checks, {f['acked_records']} records acknowledged)")
    print(f"  bad-CRC batches served: {f['bad_crc_batches']} (N={f['batches_served']} batches served)")
    print(f"  broker panics: {f['panics']} (N={f['cycles']} restarts)")
    print(f"  restarts that failed: {f['restarts_failed']} (N={f['cycles']} restarts)")
    print(f"  records served at an offset they were not acknowledged at: {f['misplaced_records']}; "
          f"cycles with offset gaps: {f['offset_gaps']}")
    print(f"  exposed (in or after a damaged region, may be lost): {f['exposed_records']} records, "
          f"{f['exposed_lost']} of them gone after recovery")
    if run.examples:
        print("  examples:\n    " + "\n    ".join(run.examples))
    if aborted:
        print(f"  ABORTED: {aborted}")
    result = dict(kind="disk_corruption", ok=ok, n=n, seed=seed, seconds=round(elapsed, 1), aborted=aborted,
                  **f)
    line = json.dumps(result, sort_keys=True)
    print(line)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(line + "\n")
    if ok and not args.keep and not args.dir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not ok:
        print(f"broker data and logs kept in {workdir}")
    return 0 if ok else 1


args = None

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
