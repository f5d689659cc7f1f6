#!/usr/bin/env python3
"""A power cut, after the fact: rewrites a killed broker's data directory as a power loss
would have left it, from the sync ledger the broker kept (QUIVER_TEST_SYNC_LEDGER, see
host/src/durability.rs).

A SIGKILL leaves everything the broker wrote in the page cache, so the files on disk hold
more than a power loss would leave. The ledger says what the broker had made durable: for
every fsync of a file, its identity (inode and birth time) and its length before the fsync
began; for every fsync of a directory, the entries it held before the fsync began. The cut
applies, to every entry under the data directory, top down:

1. A name is durable only if the last fsync of its directory listed it, pointing at this
   same file. Any other entry is removed (a directory with all it holds): files and
   directories created, and names given by rename, since the directory's last fsync. A
   file replaced by such a rename is not brought back (its contents are gone); a real
   disk could show the old file instead, which is no harder on the broker than nothing.
   Names removed since the last fsync stay removed. The data directory itself is kept.
2. A file whose name is durable keeps exactly the bytes covered by its last fsync: its
   length is cut to the synced length (0 if it was never fsynced under any name). Bytes
   appended before a fsync began are covered; bytes appended while it ran are not.
3. With a tail mode other than `truncate`, the unsynced tail is not simply cut:
   `zero` keeps the file's length with zeros past the synced length, `garbage` with random
   bytes, `prefix` keeps a random prefix of the unsynced bytes (pages the kernel happened
   to write back), and `mixed` picks one of the four per file. Every mode leaves the
   synced bytes untouched.

Files are never made shorter than their synced length and never longer than they are.
After the cut the ledger is compacted to the records that still describe something on
disk, so it stays small over many cuts.

    python3 tests/chaos/powercut.py --ledger L --data-dir D [--mode truncate] [--seed S]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

MODES = ("truncate", "zero", "garbage", "prefix", "mixed")

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_INO = 0x100
_STATX_BTIME = 0x800
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def identity(path: str) -> tuple[int, int]:
    """(inode, birth time in ns) as the broker's ledger records them (statx)."""
    buf = ctypes.create_string_buffer(256)
    rc = _libc.statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_INO | _STATX_BTIME, buf)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    raw = buf.raw
    mask = int.from_bytes(raw[0:4], "little")
    ino = int.from_bytes(raw[32:40], "little")
    if not mask & _STATX_BTIME:
        return ino, 0
    sec = int.from_bytes(raw[80:88], "little", signed=True)
    nsec = int.from_bytes(raw[88:92], "little")
    return ino, sec * 1_000_000_000 + nsec


@dataclass
class Ledger:
    files: dict = field(default_factory=dict)  # (ino, btime) -> synced length
    dirs: dict = field(default_factory=dict)  # normalised dir path -> {name: (ino, btime)}
    lines: int = 0


def read_ledger(path) -> Ledger:
    """The last record of every file and directory (a final partial line is ignored)."""
    led = Ledger()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return led
    for raw in data.split(b"\n")[:-1]:
        parts = raw.decode("utf-8", errors="surrogateescape").split("\t")
        led.lines += 1
        if parts[0] == "F" and len(parts) == 5:
            led.files[(int(parts[1]), int(parts[2]))] = int(parts[3])
        elif parts[0] == "D" and len(parts) >= 2:
            entries = {}
            for e in parts[2:]:
                name, ino, born = e.rsplit("/", 2)
                entries[name] = (int(ino), int(born))
            led.dirs[os.path.normpath(parts[1])] = entries
    return led


@dataclass
class CutReport:
    data_dir: str
    mode: str
    removed_files: int = 0
    removed_dirs: int = 0
    truncated_files: int = 0  # files that lost (or had damaged) an unsynced tail
    emptied_files: int = 0  # durable names whose contents were never fsynced
    unsynced_bytes: int = 0  # bytes past the synced length, over all kept files
    removed_bytes: int = 0  # bytes of removed files
    tails: dict = field(default_factory=dict)  # tail mode -> files

    def line(self) -> str:
        return (f"power cut {self.data_dir}: removed {self.removed_files} files and {self.removed_dirs} dirs "
                f"({self.removed_bytes} B), cut the unsynced tail of {self.truncated_files} files "
                f"({self.unsynced_bytes} B; {self.emptied_files} never synced), tails {self.tails}")


def _tree_bytes(path: str) -> tuple[int, int]:
    files, size = 0, 0
    for root, _, names in os.walk(path):
        for n in names:
            files += 1
            try:
                size += os.lstat(os.path.join(root, n)).st_size
            except FileNotFoundError:
                pass
    return files, size


def _damage_tail(path: str, synced: int, size: int, mode: str, rng: random.Random):
    if mode == "truncate":
        os.truncate(path, synced)
    elif mode == "prefix":
        os.truncate(path, rng.randint(synced, size))
    else:
        with open(path, "r+b") as f:
            f.seek(synced)
            n = size - synced
            f.write(bytes(n) if mode == "zero" else rng.randbytes(n))


def cut(data_dir, ledger_path, mode: str = "truncate", rng: Optional[random.Random] = None,
        compact: bool = True) -> CutReport:
    """Applies the power cut to `data_dir` (the broker must be dead). See the module doc."""
    if mode not in MODES:
        raise ValueError(f"unknown tail mode {mode!r} (one of {', '.join(MODES)})")
    rng = rng or random.Random(0)
    data_dir = os.path.normpath(os.path.abspath(data_dir))
    led = read_ledger(ledger_path)
    rep = CutReport(data_dir=data_dir, mode=mode)
    kept_files: dict = {}
    kept_dirs: dict = {}

    def walk(d: str):
        listing = led.dirs.get(d)
        if listing is not None:
            kept_dirs[d] = {}
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            ident = identity(p)
            is_dir = os.path.isdir(p) and not os.path.islink(p)
            if listing is None or listing.get(name) != ident:
                if is_dir:
                    n, size = _tree_bytes(p)
                    shutil.rmtree(p)
                    rep.removed_dirs += 1
                    rep.removed_files += n
                    rep.removed_bytes += size
                else:
                    rep.removed_bytes += os.lstat(p).st_size
                    os.remove(p)
                    rep.removed_files += 1
                continue
            kept_dirs[d][name] = ident
            if is_dir:
                walk(p)
                continue
            if not os.path.isfile(p):
                continue
            synced = led.files.get(ident, 0)
            size = os.path.getsize(p)
            if ident in led.files:
                kept_files[ident] = synced
            if size > synced:
                tail = rng.choice(MODES[:-1]) if mode == "mixed" else mode
                _damage_tail(p, synced, size, tail, rng)
                rep.truncated_files += 1
                rep.unsynced_bytes += size - synced
                rep.emptied_files += synced == 0
                rep.tails[tail] = rep.tails.get(tail, 0) + 1

    walk(data_dir)
    if compact:
        _rewrite_ledger(ledger_path, led, kept_files, kept_dirs, data_dir)
    return rep


def _rewrite_ledger(path, led: Ledger, files: dict, dirs: dict, data_dir: str):
    """The ledger reduced to what describes the data directory as the cut left it: each
    kept directory's listing as it now is, one record per kept file that was synced.
    Records of directories outside the data directory are kept as they were."""
    out = []
    for d, listing in led.dirs.items():
        if d != data_dir and not d.startswith(data_dir + os.sep):
            dirs[d] = listing
    for d, listing in dirs.items():
        out.append("\t".join(["D", d] + [f"{n}/{i}/{b}" for n, (i, b) in sorted(listing.items())]))
    for (ino, born), length in files.items():
        out.append(f"F\t{ino}\t{born}\t{length}\t-")
    tmp = Path(str(path) + ".compact")
    tmp.write_text("".join(line + "\n" for line in out))
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ledger", required=True, help="the broker's QUIVER_TEST_SYNC_LEDGER file")
    ap.add_argument("--data-dir", required=True, help="the broker's data directory (broker stopped)")
    ap.add_argument("--mode", choices=MODES, default="truncate", help="what becomes of unsynced tails")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compact", action="store_true", help="leave the ledger as it is")
    args = ap.parse_args(argv)
    rep = cut(args.data_dir, args.ledger, args.mode, random.Random(args.seed), compact=not args.no_compact)
    print(rep.line())
    print(json.dumps(asdict(rep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
