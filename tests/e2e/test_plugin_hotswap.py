"""Hot swap: new versions of a partitioner deployed (and rolled back) while a client
produces over HTTP without pause. No request fails, every request is placed by one
whole version (the one serving when it started, or one swapped in during it), every
request that starts after a deploy or rollback returned uses that version, and every
acknowledged record is readable at its offset."""

from __future__ import annotations

import threading
import time

import pytest

from clients import unique_topic
from plugins_kit import (AdminApi, HASHES, Rec, create_topic, deploy_cli, deployed_version, expect_log,
                         plugin_cli, vip_partition, wasm_path)

PARTITIONS = 8
BATCH = 200


class Producer:
    def __init__(self, api: AdminApi, topic: str):
        self.api, self.topic = api, topic
        self.requests = []  # (started, ended, records, placements)
        self.failures = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="hot-swap-producer", daemon=True)

    def run(self):
        n = 0
        while not self.stop.is_set():
            recs = [Rec(b"hs-%d" % i, b"value-%d" % i, {"i": str(i)}) for i in range(n, n + BATCH)]
            n += BATCH
            started = time.monotonic()
            try:
                r = self.api.produce(self.topic, [x.json() for x in recs])
            except OSError as e:
                self.failures.append((started, repr(e)))
                continue
            ended = time.monotonic()
            if r.status != 200:
                self.failures.append((started, r))
                continue
            self.requests.append((started, ended, recs, [(o["partition"], o["offset"]) for o in r.body["offsets"]]))
            time.sleep(0.01)  # pace: bounded load

    def completed_after(self, t: float) -> int:
        return sum(1 for s, _, _, _ in list(self.requests) if s > t)

    def wait_after(self, t: float, n: int = 10, at_least: float = 0.5, timeout: float = 30.0):
        """Until n requests that started after t have completed, and at_least seconds passed."""
        deadline = time.monotonic() + timeout
        while self.completed_after(t) < n or time.monotonic() < t + at_least:
            assert not self.failures, f"produce failed during hot swap: {self.failures[:3]}"
            assert time.monotonic() < deadline, f"only {self.completed_after(t)} requests completed in {timeout}s"
            time.sleep(0.01)


@pytest.mark.timeout(120)
def test_plugin_hot_swap_under_continuous_produce(broker):
    api = AdminApi(broker.admin)
    topic = unique_topic("hotswap")
    vip_keys, vip_prefixes = {b"hs-7"}, (b"hs-1",)
    fns = {  # version -> its placement of a key
        1: lambda k: HASHES["murmur2"](k, PARTITIONS),
        2: lambda k: HASHES["fnv1a"](k, PARTITIONS),
        3: lambda k: HASHES["crc32"](k, PARTITIONS),
        4: lambda k: vip_partition(k, PARTITIONS, 3, vip_keys, vip_prefixes),
    }
    assert deployed_version(deploy_cli(broker, "h", wasm_path("hash"), {"hash.algorithm": "murmur2"})) == 1
    create_topic(broker, topic, PARTITIONS, {"partitioner": "h"})

    prod = Producer(AdminApi(broker.admin), topic)
    events = []  # (call started, call returned, version serving from then on)
    prod.thread.start()
    try:
        prod.wait_after(0)
        # v2 and v4 through the CLI, v3 over HTTP; v4 is another plugin's code
        for version, deploy in [
                (2, lambda: deployed_version(deploy_cli(broker, "h", wasm_path("hash"), {"hash.algorithm": "fnv1a"}))),
                (3, lambda: api.deploy("h", wasm_path("hash").read_bytes(),
                                       {"hash.algorithm": "crc32"}).body["version"]),
                (4, lambda: deployed_version(deploy_cli(broker, "h", wasm_path("vip"), {
                    "vip.partitions": "3", "vip.keys": "hs-7", "vip.prefixes": "hs-1"})))]:
            started = time.monotonic()
            assert deploy() == version
            events.append((started, time.monotonic(), version))
            prod.wait_after(events[-1][1])
        # rollback twice: v3, then v2 serve again
        for version in (3, 2):
            started = time.monotonic()
            out = plugin_cli(broker, "rollback", "h").stdout
            assert out.strip() == f"h now serves version {version}", out
            events.append((started, time.monotonic(), version))
            prod.wait_after(events[-1][1])
    finally:
        prod.stop.set()
        prod.thread.join(30)
    assert not prod.failures, f"{len(prod.failures)} requests failed during hot swap: {prod.failures[:3]}"

    d = api.describe("h").body
    assert (d["active_version"], [v["version"] for v in d["versions"]], d["status"]) == \
        (2, [1, 2, 3, 4], {"state": "active"}), d

    bad, seen_after = [], {}  # event index -> requests served by it alone
    for started, ended, recs, placements in prod.requests:
        chosen = [p for p, _ in placements]
        matches = {v for v, fn in fns.items() if chosen == [fn(r.key) for r in recs]}
        # what may have served it: the version in place when it started, and any swapped in while it ran
        before = [v for s, e, v in events if e <= started]
        allowed = {before[-1] if before else 1} | {v for s, e, v in events if s < ended and e > started}
        if not matches & allowed:
            bad.append((started, sorted(matches), sorted(allowed)))
        if before and len(allowed) == 1:  # started after a swap returned, finished before the next began
            seen_after[len(before) - 1] = seen_after.get(len(before) - 1, 0) + 1
    assert not bad, f"{len(bad)} of {len(prod.requests)} requests not placed by a serving version " \
                    f"(start, matching versions, allowed): {bad[:5]}"
    # every deploy and rollback served requests on its own (and those matched it, above)
    assert sorted(seen_after) == list(range(len(events))), (seen_after, events)

    records = [r for _, _, recs, _ in prod.requests for r in recs]
    placements = [p for _, _, _, pl in prod.requests for p in pl]
    assert len(prod.requests) >= 10 * len(events)
    expect_log(broker.bootstrap, topic, PARTITIONS, records, placements)
