"""Quota policies: quota-policy plugins decide quota keys and limits, the broker meters
and enforces them (throttle_time_ms, muting). A producer running flat out is held to
the tier a `tiers` policy gives it and to the new tier within a window of a redeploy; a
policy that traps keeps the limits in force (fail closed) and is reported; bindings to
missing or wrong-kind plugins and bad policy configurations are refused by name; and a
`fair-share` policy divides one cap between two tenants by weight, giving the whole cap
to the one left when the other stops.

Rates are measured by the producers themselves: the bytes whose delivery was reported
in a time span, divided by the span. Every figure is printed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from clients import create_topic, unique_topic
from flood_producer import Flood, rate
from harness import wait_until
from plugins_kit import plugins_dir
from test_tenants import cli, sasl_conf, secured_broker

MB = 1_000_000

WASM = {
    "tiers": "quiver_plugin_tiers.wasm",
    "fair-share": "quiver_plugin_fair_share.wasm",
    "quota-trap": "quiver_test_plugin_quota_trap.wasm",
    "murmur2": "quiver_plugin_murmur2.wasm",
}

def per_second(delivered, a: float, b: float) -> str:
    """The rate in each whole second of [a, b), MB/s, for the printed figures."""
    return " ".join(f"{rate(delivered, a + i, a + i + 1) / MB:.2f}" for i in range(int(b - a)))


def sleep_until(t: float):
    """A measured load period: the traffic is the point, not a readiness wait."""
    time.sleep(max(0.0, t - time.monotonic()))


@pytest.fixture
def floods(tmp_path):
    """Starts FLOOD producers; every one is killed at teardown."""
    started: list[Flood] = []

    def start(name: str, conf: dict, topic: str) -> Flood:
        f = Flood(tmp_path / f"{name}.log", conf, topic)
        started.append(f)
        return f

    yield start
    for f in started:
        f.kill()


def wasm(plugin: str) -> Path:
    p = plugins_dir() / WASM[plugin]
    if not p.is_file():
        pytest.fail(f"plugin {plugin!r} not built: {p} is missing; run `bash plugins/build.sh`", pytrace=False)
    return p


def deploy(b, name: str, plugin: str, config: dict, kind: str = "quota-policy", check: bool = True):
    args = ["plugin", "deploy", name, "--kind", kind, "--file", str(wasm(plugin))]
    for k, v in config.items():
        args += ["-c", f"{k}={v}"]
    return cli(b, *args, "--json", check=check)


def deployed_version(proc) -> int:
    out = json.loads(proc.stdout)
    return out["version"]


def policies(b) -> list:
    return json.loads(cli(b, "quota", "list", "--json").stdout)["policies"]


def key_entry(b, key: str, tenant=None):
    """(the policy bound for `tenant`, its entry for `key`), either None when absent."""
    for p in policies(b):
        if p["tenant"] == tenant:
            return p, next((k for k in p["keys"] if k["key"] == key), None)
    return None, None


def produce_limit(b, key: str, tenant=None):
    """(version, producer_byte_rate) the bound policy shows for `key`, or None."""
    policy, entry = key_entry(b, key, tenant)
    if policy is None or entry is None:
        return None
    return policy["version"], entry["limits"].get("producer_byte_rate")


def within(measured: float, expected: float, tolerance: float) -> bool:
    return abs(measured - expected) <= tolerance * expected


@pytest.mark.timeout(240)
def test_a_redeployed_tier_takes_over_under_load(broker_factory, floods):
    b = broker_factory()
    topic = unique_topic("tiers-flood")
    create_topic(b.bootstrap, topic)
    assert deployed_version(deploy(b, "tiers", "tiers", {"tier.gold.producer_byte_rate": 4 * MB,
                                                         "default": "gold"})) == 1
    cli(b, "quota", "policy", "set", "tiers")
    # Listed at once; the broker opens the plugin when a client first needs it.
    assert [(p["tenant"], p["plugin"], p["failed"]) for p in policies(b)] == [(None, "tiers", None)]

    flood = floods("tiers", {"bootstrap.servers": b.bootstrap}, topic)
    wait_until(lambda: produce_limit(b, "user:ANONYMOUS") == (1, 4 * MB), 30,
               "the producer's key with the gold limit of version 1")
    # v1 serves through its measured window, [2, 8) s of the load.
    sleep_until(wait_until(flood.started, 30, "the flood producer to start") + 8)

    assert deployed_version(deploy(b, "tiers", "tiers", {"tier.gold.producer_byte_rate": 1_500_000,
                                                         "default": "gold"})) == 2
    swapped = time.monotonic()
    wait_until(lambda: produce_limit(b, "user:ANONYMOUS") == (2, 1_500_000), 5,
               "version 2's limit for the producer's key")
    seen = time.monotonic() - swapped
    sleep_until(swapped + 8)
    policy, entry = key_entry(b, "user:ANONYMOUS")
    flood.stop()

    start, delivered, errors = flood.read()
    assert not errors, f"a quota throttles, it never fails records: {errors[:5]}"
    before = rate(delivered, start + 2, start + 8)
    after = rate(delivered, swapped + 2, swapped + 8)
    print(f"\ntiers hot swap: {before / MB:.2f} MB/s over [2, 8) s of v1 (gold 4.00), "
          f"{after / MB:.2f} MB/s over [2, 8) s after the redeploy (gold 1.50); "
          f"v2's limit listed {seen * 1000:.0f} ms after the deploy returned; "
          f"broker-measured usage at the end {entry['usage']}\n"
          f"  per second from the producer's start: {per_second(delivered, start, swapped + 8)} "
          f"(redeploy at {swapped - start:.1f} s)")
    assert within(before, 4 * MB, 0.15), before
    assert within(after, 1_500_000, 0.15), after
    assert (policy["plugin"], policy["version"], policy["failed"]) == ("tiers", 2, None), policy
    assert entry["limits"]["producer_byte_rate"] == 1_500_000.0, entry


@pytest.mark.timeout(240)
def test_a_trapping_policy_keeps_the_limits_in_force(broker_factory, floods):
    b = broker_factory()
    topic = unique_topic("trap-flood")
    create_topic(b.bootstrap, topic)
    assert deployed_version(deploy(b, "tiers", "tiers", {"tier.gold.producer_byte_rate": 2 * MB,
                                                         "default": "gold"})) == 1
    cli(b, "quota", "policy", "set", "tiers")

    flood = floods("trap", {"bootstrap.servers": b.bootstrap}, topic)
    wait_until(lambda: produce_limit(b, "user:ANONYMOUS") == (1, 2 * MB), 30,
               "the producer's key with the gold limit")
    sleep_until(time.monotonic() + 5)

    # Same name, new version: the hostile one, whose every call after init traps.
    assert deployed_version(deploy(b, "tiers", "quota-trap", {})) == 2
    swapped = time.monotonic()

    def reported():
        described = json.loads(cli(b, "plugin", "describe", "tiers", "--json").stdout)
        policy, entry = key_entry(b, "user:ANONYMOUS")
        if described["metrics"]["traps"] > 0 and policy is not None and policy["failed"]:
            return described, policy, entry
        return None
    described, policy, entry = wait_until(reported, 15, "the traps in `plugin describe` and a failed policy")
    reported_after = time.monotonic() - swapped
    sleep_until(swapped + 10)
    _, last_entry = key_entry(b, "user:ANONYMOUS")
    flood.stop()

    start, delivered, errors = flood.read()
    assert not errors, errors[:5]
    before = rate(delivered, start + 2, swapped)
    after = rate(delivered, swapped + 2, swapped + 10)
    print(f"\ntrapping policy: {before / MB:.2f} MB/s before the hostile version, "
          f"{after / MB:.2f} MB/s over [2, 10) s after it (limit in force 2.00); "
          f"reported {reported_after * 1000:.0f} ms after the deploy: traps {described['metrics']['traps']}, "
          f"status {described['status']}, policy failed: {policy['failed']!r}; key at the end: {last_entry}\n"
          f"  per second from the producer's start: {per_second(delivered, start, swapped + 10)} "
          f"(hostile version at {swapped - start:.1f} s)")
    assert described["active_version"] == 2, described
    assert within(after, 2 * MB, 0.15), after
    # The key is still listed with the limit in force.
    assert last_entry is not None and last_entry["limits"].get("producer_byte_rate") == 2 * MB, last_entry


def refused(proc, *words: str) -> str:
    """The message of a refused command, after checking it names every word."""
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"expected a refusal, got exit 0: {message}"
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    return message


@pytest.mark.timeout(120)
def test_bindings_to_missing_or_wrong_plugins_and_bad_configs_are_refused(broker_factory):
    b = broker_factory()
    message = refused(cli(b, "quota", "policy", "set", "no-such-policy", check=False),
                      "plugin 'no-such-policy' does not exist", "unknown_plugin")
    print(f"\nmissing plugin refused: {message.strip()}")

    assert deployed_version(deploy(b, "placer", "murmur2", {}, kind="partitioner")) == 1
    message = refused(cli(b, "quota", "policy", "set", "placer", check=False),
                      "plugin 'placer' is a partitioner, not a quota-policy")
    print(f"partitioner refused: {message.strip()}")

    message = refused(deploy(b, "tiers", "tiers", {"tier.gold.producer_byte_rate": "fast"}, check=False),
                      "tier.gold.producer_byte_rate", "fast")
    print(f"\nbad config refused: {message.strip()}")
    assert cli(b, "plugin", "describe", "tiers", check=False).returncode != 0, "a refused deploy left a plugin"
    message = refused(deploy(b, "tiers", "tiers", {"tier.gold.producer_byte_rate": 1000, "tenant.acme": "platinum"},
                             check=False), "tenant.acme", "platinum")
    assert policies(b) == [], "nothing was bound"


@pytest.mark.timeout(300)
def test_fair_share_divides_the_cap_by_weight_and_gives_it_all_to_the_one_left(broker_factory, floods):
    b, sasl = secured_broker(broker_factory)
    cli(b, "tenant", "create", "acme", "--prefix", "acme.", "--user", "acme-app:pw-acme")
    cli(b, "tenant", "create", "globex", "--prefix", "globex.", "--user", "globex-app:pw-globex")
    cli(b, "user", "create", "admin", "--password", "pw-admin")
    admin = AdminClient(sasl_conf(sasl, "admin", "pw-admin"))
    for fut in admin.create_topics([NewTopic("acme.flood", 1), NewTopic("globex.flood", 1)]).values():
        fut.result(timeout=30)
    del admin  # closes its connection: an open connection would take a share

    assert deployed_version(deploy(b, "fair", "fair-share", {"producer_byte_rate": 4 * MB,
                                                             "weight.acme": 3, "weight.globex": 1})) == 1
    cli(b, "quota", "policy", "set", "fair")
    acme = floods("acme", sasl_conf(sasl, "acme-app", "pw-acme"), "acme.flood")
    globex = floods("globex", sasl_conf(sasl, "globex-app", "pw-globex"), "globex.flood")

    listed = []

    def limits():
        listed[:] = [policies(b)]
        return (produce_limit(b, "tenant:acme"), produce_limit(b, "tenant:globex"))
    try:
        wait_until(lambda: limits() == ((1, 3 * MB), (1, 1 * MB)), 30, "3 and 1 MB/s for acme and globex")
    except AssertionError as e:
        raise AssertionError(f"{e}; last listed: {listed}") from None
    shared = time.monotonic()
    sleep_until(shared + 9)

    globex.stop()
    stopped = time.monotonic()
    # A few one-second windows; more on a loaded machine, where the flood's exit and the
    # broker's window both run late.
    wait_until(lambda: produce_limit(b, "tenant:acme") == (1, 4 * MB), 10,
               "the whole cap for acme within a few windows")
    risen = time.monotonic()
    sleep_until(risen + 7)
    acme.stop()

    _, acme_delivered, acme_errors = acme.read()
    _, globex_delivered, globex_errors = globex.read()
    assert not acme_errors and not globex_errors, (acme_errors[:5], globex_errors[:5])
    acme_shared = rate(acme_delivered, shared + 1, shared + 9)
    globex_shared = rate(globex_delivered, shared + 1, shared + 9)
    acme_alone = rate(acme_delivered, risen + 1, risen + 7)
    print(f"\nfair share of 4 MB/s by weights 3:1: acme {acme_shared / MB:.2f} MB/s, globex "
          f"{globex_shared / MB:.2f} MB/s over 8 s; globex stopped, acme's limit rose to 4 MB/s "
          f"{(risen - stopped) * 1000:.0f} ms later, then acme {acme_alone / MB:.2f} MB/s over 6 s\n"
          f"  acme per second:   {per_second(acme_delivered, shared, risen + 7)}\n"
          f"  globex per second: {per_second(globex_delivered, shared, stopped)}")
    assert within(acme_shared, 3 * MB, 0.20), acme_shared
    assert within(globex_shared, 1 * MB, 0.20), globex_shared
    assert within(acme_alone, 4 * MB, 0.20), acme_alone
