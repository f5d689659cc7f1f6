"""The CI cut of tests/chaos/disk_corruption.py: 15 cycles of produce (fsync per
record), SIGKILL, a truncated or bit-flipped tail of the newest segment (sometimes
a damaged index file), restart, and a raw read of the whole partition that checks
every batch's CRC-32C. Every safety count must be 0: acknowledged records lost from
before the damage, bad-CRC batches served, panics, failed restarts, records served
at an offset they were not acknowledged at. The 200-cycle run and its figures are
in docs/reliability.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "chaos" / "disk_corruption.py"
CYCLES = 15


@pytest.mark.timeout(120)
def test_damaged_tails_over_kill_restart_cycles(tmp_path):
    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--cycles", str(CYCLES), "--seed", "20261207",
                          "--dir", str(tmp_path / "run"), "--json", str(out)],
                         capture_output=True, text=True, timeout=110)
    print(run.stdout[-4000:], run.stderr[-2000:])
    result = json.loads(out.read_text())
    figures = {k: result[k] for k in ("acked_lost", "bad_crc_batches", "panics", "restarts_failed",
                                      "misplaced_records", "offset_gaps")}
    assert figures == dict(acked_lost=0, bad_crc_batches=0, panics=0, restarts_failed=0,
                           misplaced_records=0, offset_gaps=0), run.stdout[-4000:]
    assert result["cycles"] == CYCLES and result["aborted"] is None, run.stdout[-4000:]
    assert result["acked_records"] > 0 and result["records_checked"] > 0
    assert result["truncations"] + result["bit_flips"] > 0
    assert run.returncode == 0, run.stdout[-4000:]
