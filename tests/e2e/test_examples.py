"""The example scenarios in examples/ run to completion as a new user runs them, and
show what their READMEs promise."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from harness import PortSlot, quiver_bin
from plugins_kit import murmur2_partition, plugins_dir

ROOT = Path(__file__).resolve().parents[2]


def test_two_regions_mirror_and_fail_a_group_over(tmp_path):
    slot = PortSlot()
    try:
        env = {**os.environ, "QUIVER": quiver_bin(), "QUIVER_PLUGINS": str(plugins_dir()),
               "PORT_BASE": str(slot.base), "DATA": str(tmp_path / "regions")}
        proc = subprocess.run(["bash", str(ROOT / "examples/two-regions/run.sh")], env=env,
                              capture_output=True, text=True, timeout=180)
    finally:
        slot.release()
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "created mirror from-us-east" in out, out
    # The mirrored records carry where they came from.
    assert re.search(r"^0 0 order-\S+ \{\"id\":\d+\} quiver\.provenance=us-east$", out, re.M), out
    # After failover the group resumes at 200 in every partition of the mirrored topic.
    after = out.split("== eu-west: group billing resumes", 1)[-1]
    resumed = re.findall(r"^us-east\.orders\s+(\d)\s+(\d+)\s", after, re.M)
    assert sorted(resumed) == [("0", "200"), ("1", "200"), ("2", "200")], out


def test_noisy_neighbour_is_held_to_its_quota_and_its_neighbour_is_not(tmp_path):
    slot = PortSlot()
    try:
        env = {**os.environ, "QUIVER": quiver_bin(), "PORT_BASE": str(slot.base),
               "DATA": str(tmp_path / "tenants")}
        proc = subprocess.run(["bash", str(ROOT / "examples/noisy-neighbour/run.sh")], env=env,
                              capture_output=True, text=True, timeout=180)
    finally:
        slot.release()
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Broker: Topic authorization failed" in out, out
    # acme got its quota: 20 MB, one second's burst of 2 MB, the rest at 2 MB/s, and
    # kcat's start counted in.
    rate = float(re.search(r"^acme: 20\.0 MB delivered in [\d.]+ s = ([\d.]+) MB/s", out, re.M).group(1))
    assert 1.6 <= rate <= 2.4, out
    assert int(re.search(r"^acme's client was throttled (\d+) times", out, re.M).group(1)) > 0, out
    # globex's orders all went through, and the broker metered acme as a tenant.
    assert re.search(r"^globex: 500 orders delivered in \d+ ms", out, re.M), out
    assert re.search(r"^tenant=acme\s+producer_byte_rate\s+[\d.]+", out, re.M), out


# Builds the example component as a user would; a no-op where plugins/build.sh already
# built it into $CARGO_TARGET_DIR (tests/run), a full wasm build of the SDK otherwise.
@pytest.mark.timeout(900)
def test_custom_partitioner_from_build_to_placed_traffic(tmp_path):
    slot = PortSlot()
    try:
        env = {**os.environ, "QUIVER": quiver_bin(), "QUIVER_PLUGINS": str(plugins_dir()),
               "PORT_BASE": str(slot.base), "DATA": str(tmp_path / "partitioner")}
        proc = subprocess.run(["bash", str(ROOT / "examples/custom-partitioner/run.sh")], env=env,
                              capture_output=True, text=True, timeout=840)
    finally:
        slot.release()
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert re.search(r"^deployed regions version 1 \(partitioner\)", out, re.M), out
    # The bad separator was refused with init's reason, and version 1 kept serving.
    assert ('init failed: invalid config: config key `separator` has invalid value "::": '
            "must be a single byte") in out, out
    assert re.search(r"^regions\s+partitioner\s+1\s+active\s", out, re.M), out
    # What kcat read back: each region's six orders (three sent over HTTP, three by kcat
    # through the transform) on the partition of murmur2(region), as src/lib.rs promises.
    listing = out.split("== orders, read back with kcat", 1)[-1]
    # run.sh keys order i of each dozen `<region>:<base + i>` with the regions in turn.
    for n, region in enumerate(("eu", "us", "apac", "latam")):
        partition = murmur2_partition(region.encode(), 6)
        assert re.search(rf"^{region}: 6 orders on partition {partition}$", out, re.M), out
        keys = re.search(rf"^partition {partition}: (.*)$", listing, re.M).group(1).split()
        expected = [f"{region}:{base + i}" for base in (1000, 3000) for i in range(n, 12, 4)]
        assert sorted(k for k in keys if k.startswith(region + ":")) == expected, listing
    assert "orders without a key: partitions [0, 1, 2, 3, 4, 5]" in out, out
    assert "OK: every region's orders are on one partition" in out, out
    assert re.search(r"^metrics:\s+\d+ calls, 30 records, 0 errors, 0 traps", out, re.M), out
