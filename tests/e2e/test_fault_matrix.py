"""The fault matrix's CI sample: one short `ring` run (tests/chaos/matrix.py ring)
through the same code as the long runs (faultsteps.run_scenario).

Three brokers in network namespaces, a topic with RF 3 and min.insync.replicas=2,
idempotent acks=all producers and a consumer recording their histories; two
non-transitive partitions (one broker-to-broker link cut while both ends still
reach the third broker, half of the time with the controller at one end). Writes
must go on on every partition during each cut, and after healing the checker
must count 0 on every safety count, with no broker panic.
QUIVER_E2E_SEED=<n> replays a run (the same fault schedule).
"""

from __future__ import annotations

import pytest

from faultsteps import format_summary, run_scenario
from history import SAFETY

pytestmark = pytest.mark.timeout(240)

FAULTS = 2


def test_ring_partitions_lose_nothing(tmp_path, seed):
    r = run_scenario("ring", seed, FAULTS, tmp_path, interval=(1.0, 2.0), recover_timeout=60)
    print(format_summary(r))
    print("fault schedule:\n" + "\n".join(r.get("schedule", [])))
    assert r.get("error") is None, r["error"]
    assert r["faults"] == FAULTS
    assert [ln for ln in r["schedule"] if " ring " in ln][0], r["schedule"]
    assert r["counts"] == {k: 0 for k in SAFETY}, format_summary(r)
    assert r["panics"] == 0, r.get("panic_lines")
    assert r["drain_ok"]
    assert r["info"]["acked"] > 0 and r["info"]["drained"] >= r["info"]["acked"]
    assert r["ok"]
