"""Fixtures: brokers as real child processes, always killed on teardown."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Broker, tail  # noqa: E402


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class BrokerFactory:
    def __init__(self, base: Path):
        self.base = base
        self.brokers: list[Broker] = []

    def __call__(self, sets: dict | None = None, env: dict | None = None, args: list | None = None,
                 start: bool = True) -> Broker:
        """A broker with its own data dir and reserved ports; started and
        ready unless start=False."""
        b = Broker(self.base / f"broker{len(self.brokers)}", sets=sets, env=env, args=args)
        self.brokers.append(b)
        if start:
            b.start()
        return b


@pytest.fixture
def broker_factory(request, tmp_path):
    factory = BrokerFactory(tmp_path)
    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    panics, errors = [], []
    for b in factory.brokers:
        try:
            b.close()
        except Exception as e:  # keep killing the others
            errors.append(f"{b.bootstrap}: {e!r}")
        panics += [f"{b.bootstrap}: {line}" for line in b.panics()]
        if failed:
            print(f"\n--- {b.bootstrap} ({b.workdir}) stderr tail ---\n{tail(b.stderr_path, 60)}")
    if errors:
        pytest.fail("could not stop brokers: " + "; ".join(errors), pytrace=False)
    if panics:
        pytest.fail("broker panicked during the test:\n" + "\n".join(panics[:20]), pytrace=False)


class ClusterFactory:
    def __init__(self, base: Path):
        self.base = base
        self.clusters: list = []

    def __call__(self, n: int = 3, start: bool = True, **kwargs):
        """A cluster of n brokers (ids 1..n; see cluster.Cluster for the keyword
        arguments: netns, racks, cluster, extra, sets); started and formed
        unless start=False."""
        from cluster import Cluster
        c = Cluster(self.base / f"cluster{len(self.clusters)}", n=n, **kwargs)
        self.clusters.append(c)
        if start:
            c.start()
        return c


@pytest.fixture
def cluster_factory(request, tmp_path):
    factory = ClusterFactory(tmp_path)
    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    panics, errors = [], []
    for c in factory.clusters:
        if failed:
            try:
                print("\n" + c.describe())
            except Exception as e:  # the description is a courtesy; teardown must go on
                print(f"\n(no cluster description: {e!r})")
            print(c.log_tails())
        panics += c.panics()
        try:
            c.close()
        except Exception as e:
            errors.append(repr(e))
    if errors:
        pytest.fail("could not tear the cluster down: " + "; ".join(errors), pytrace=False)
    if panics:
        pytest.fail("broker panicked during the test:\n" + "\n".join(panics[:20]), pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A default single-node broker."""
    return broker_factory()


@pytest.fixture
def seed(request) -> int:
    """A seed for anything random; printed so a failure can be replayed
    (QUIVER_E2E_SEED=<n> to reuse one)."""
    s = int(os.environ.get("QUIVER_E2E_SEED", random.SystemRandom().randrange(2**32)))
    print(f"\n[{request.node.nodeid}] seed={s}")
    return s


@pytest.fixture
def rng(seed) -> random.Random:
    return random.Random(seed)
