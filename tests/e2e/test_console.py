"""The web console (`/` of the admin API) in headless Chromium, against a broker the
test filled with something for every page to show.

The test makes, on a real broker: a topic with records (bytes in), a consumer group 3
records behind (offsets committed explicitly), a partitioner plugin with calls, a tenant
with a producer_byte_rate quota whose SASL client is throttled, a transform, and a mirror
of a second broker. It waits until `/v1/history` has samples of all of it, then opens
every page with tests/console/check.mjs (Playwright's playwright-core driving Debian's
`chromium`), which watches each page until it is drawn with the lines the test waits
for and then through one more of its 2-second redraws, and reports what it drew: console
messages, uncaught errors, failed requests, the error box, every chart line's points and
every table's text.

Asserted on every page: no console error or warning, no page error, no failed request,
no error box, `#status` not in error. Asserted on the figures: the group's lag line ends
at the lag the test made; the topic's bytes-in line has a point above 0 (overview and
topic page); the plugin's calls line too; the tenant's limit line is at its quota and its
produce and throttle lines rose above 0; the mirror has a latency line and the transform
a lag line; the tables name what the test created.

Screenshots (and the script's JSON) are kept in $QUIVER_ARTIFACTS/console/, or
<repo>/target/test-artifacts/console/; the test prints where. Node, Chromium and
tests/console/node_modules come from tests/run; without them the test fails saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

import securitykit as sk
from clients import DeliveryLog, create_topic, flush_all, producer, unique_topic
from harness import wait_until
from plugins_kit import AdminApi, plugin_cli, quiver, wasm_path
from transforms_kit import deploy_transform_plugin, transform_cli

REPO = Path(__file__).resolve().parents[2]
CONSOLE = REPO / "tests" / "console"
CHECK = CONSOLE / "check.mjs"

QUOTA = 20_000  # the tenant's producer_byte_rate, bytes/s
LAG = 3  # records the group is behind


def artifacts_dir() -> Path:
    base = os.environ.get("QUIVER_ARTIFACTS")
    d = (Path(base) if base else REPO / "target" / "test-artifacts") / "console"
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.png"):  # a previous run's screenshots would pass for this one's
        old.unlink()
    return d


def browser_tools() -> tuple[str, str]:
    """(node, chromium), or fail naming what is missing: never a silent skip."""
    missing = []
    node = shutil.which("node")
    if node is None:
        missing.append("node (Debian's nodejs)")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        missing.append(f"Chromium at {chromium} (Debian's chromium; or set $CHROMIUM)")
    if not (CONSOLE / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append(f"{CONSOLE / 'node_modules'}/playwright-core (npm ci in tests/console)")
    if missing:
        pytest.fail("the console test needs " + ", ".join(missing) + ": run tests/run, which installs them",
                    pytrace=False)
    return node, chromium


def history(api: AdminApi, family: str) -> dict:
    """{subject: [[ms, value], ...]} of one family of /v1/history."""
    r = api.request("GET", f"/v1/history?family={family}")
    assert r.status == 200, r
    return r.body["series"].get(family, {})


def values(api: AdminApi, family: str, subject: str) -> list:
    return [v for _, v in history(api, family).get(subject, [])]


def wait_history(api: AdminApi, what: str, pred, timeout: float = 60.0):
    """Polls /v1/history (sampled every 2 s) until pred() holds."""
    return wait_until(pred, timeout, f"/v1/history to show {what}", interval=0.25)


def commit(bootstrap: str, group: str, topic: str, offsets: dict):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def produce_to(bootstrap: str, topic: str, per_partition: int, partitions: int, tag: str, **conf):
    p = producer(bootstrap, **conf)
    log = DeliveryLog()
    for i in range(per_partition * partitions):
        p.produce(topic, key=b"%s-%d" % (tag.encode(), i), value=b"%s-value-%d" % (tag.encode(), i) * 4,
                  partition=i % partitions, on_delivery=log.callback(i))
    flush_all(p)
    assert not log.errors, log.errors


def run_console(node: str, chromium: str, url: str, out: Path, pages: list) -> dict:
    """Runs check.mjs over pages ([(hash, [(family, subject)], [(family, subject)])]:
    lines and limit lines to wait for); returns its JSON."""
    # Pages wait mostly for their 2-second redraw: five at a time.
    args = [node, str(CHECK), url, str(out), "--timeout-ms", "10000", "--parallel", "5"]
    for hash_, lines, limits in pages:
        args.append(hash_)
        for family, subject in lines:
            args += ["--chart", f"{family}={subject}"]
        for family, subject in limits:
            args += ["--limit", f"{family}={subject}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=CONSOLE,
                          env={**os.environ, "CHROMIUM": chromium})
    assert proc.returncode == 0, f"check.mjs exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    (out / "console.json").write_text(json.dumps(report, indent=1))
    return report


def summary(page: dict) -> str:
    lines = {family: {s: (len(pts), max((v for _, v in pts), default=None), pts[-1][1] if pts else None)
                      for s, pts in subjects.items()}
             for family, subjects in page.get("charts", {}).items()}
    limits = {family: {s: pts[-1][1] if pts else None for s, pts in subjects.items()}
              for family, subjects in page.get("limits", {}).items()}
    rows = sum(max(0, len(t) - 1) for t in page.get("tables", []))
    return (f"  {page['hash']:<28} {page.get('title')!r}: lines (points, max, last) {lines}"
            + (f", limits {limits}" if limits else "") + f", {rows} table rows, {page['waited_ms']} ms")


def rows(page: dict, table: int = 0) -> list:
    """The rows of a table as {header: cell}."""
    t = page["tables"][table]
    return [dict(zip(t[0], r)) for r in t[1:]]


@pytest.mark.timeout(240)
def test_every_console_page_loads_cleanly_and_charts_the_tests_data(broker_factory, capsys):
    node, chromium = browser_tools()
    out = artifacts_dir()

    b, listeners = sk.secure_broker(broker_factory, {"sasl": "SASL_PLAINTEXT"}, sets={"cluster.id": "console"})
    source = broker_factory(sets={"cluster.id": "console-src"})
    api = AdminApi(b.admin)

    # Plugins first, so their call counters are sampled at 0 before any call.
    plugin = "console-m2"
    r = api.deploy(plugin, wasm_path("murmur2").read_bytes())
    assert r.status in (200, 201), r
    deploy_transform_plugin(b, "redact", "json-redact")
    plugin_cli(b, "deploy", "mirror", "--kind", "connector", "--file", str(wasm_path("mirror")))

    topic, routed = unique_topic("console-orders"), unique_topic("console-routed")
    create_topic(b.bootstrap, topic, 2)
    create_topic(b.bootstrap, routed, 4, {"partitioner": plugin})

    # A tenant with a produce quota; its client logs in over SASL.
    sk.cli(b, "tenant", "create", "acme", "--prefix", "acme.", "--user", "acme-app:pw-acme")
    sk.cli(b, "quota", "set", "--tenant", "acme", "--producer-byte-rate", str(QUOTA))
    create_topic(b.bootstrap, "acme.events", 1)

    # A transform, with input it has worked through.
    t_in, t_out = unique_topic("console-raw"), unique_topic("console-clean")
    create_topic(b.bootstrap, t_in, 1)
    create_topic(b.bootstrap, t_out, 1)
    transform_cli(b, "deploy", "--name", "clean", "--plugin", "redact", "--input", t_in, "--output", t_out,
                  "--config", "paths=user.email")
    p = producer(b.bootstrap)
    for i in range(20):
        p.produce(t_in, key=b"k%d" % i, value=json.dumps({"id": i, "user": {"email": f"u{i}@x"}}).encode())
    flush_all(p)

    # A mirror of the second broker's topic.
    create_topic(source.bootstrap, "src-events", 1)
    produce_to(source.bootstrap, "src-events", 30, 1, "src")
    quiver("mirror", "create", "from-src", "--source", source.bootstrap, "--source-alias", "src",
           "--topics", "src-events", "--discovery-interval-ms", "500", "--checkpoint-interval-ms", "500",
           "--admin", b.admin)

    # Bytes into the topic in two sampling intervals: /v1/history makes a rate of a
    # counter only once it has sampled it, and a topic's traffic counters appear with its
    # first write, so a first burst alone is a baseline, never a point above 0.
    produce_to(b.bootstrap, topic, 5, 2, "a")
    wait_history(api, "samples of the topic, the plugin and the tenant", lambda: (
        values(api, "topic_bytes_in_per_sec", topic) and values(api, "plugin_calls_per_sec", plugin)
        and values(api, "tenant_produce_bytes_per_sec", "acme")))
    produce_to(b.bootstrap, topic, 5, 2, "b")
    group = unique_topic("console-group")
    commit(b.bootstrap, group, topic, {0: 10 - LAG, 1: 10})
    for batch in range(5):
        r = api.produce(routed, [{"key": f"k{batch}-{i}", "value": "v"} for i in range(20)])
        assert r.status == 200, r

    # The tenant's client sends 4x its quota at once: it is throttled, never refused.
    sasl = {k: v for k, v in sk.rdkafka_conf(listeners["sasl"], "SASL_PLAINTEXT", "SCRAM-SHA-512",
                                              "acme-app", "pw-acme").items() if k != "bootstrap.servers"}
    tp = producer(listeners["sasl"], **sasl, **{"linger.ms": 0})
    tlog = DeliveryLog()
    for i in range(40):
        tp.produce("acme.events", value=bytes(2000), partition=0, on_delivery=tlog.callback(i))
    flush_all(tp)
    assert not tlog.errors and len(tlog.ok) == 40, tlog.errors

    wait_history(api, f"the lag of {group}, the topic's and plugin's rates, the tenant's throttle, "
                      f"the mirror and the transform", lambda: (
        values(api, "group_lag", group)[-1:] == [LAG]
        and max(values(api, "topic_bytes_in_per_sec", topic), default=0) > 0
        and max(values(api, "plugin_calls_per_sec", plugin), default=0) > 0
        and values(api, "tenant_producer_byte_rate", "acme")[-1:] == [QUOTA]
        and max(values(api, "tenant_produce_bytes_per_sec", "acme"), default=0) > 0
        and max(values(api, "tenant_throttle_ms_per_sec", "acme"), default=0) > 0
        and values(api, "mirror_latency_p99_ms", "from-src")
        and values(api, "mirror_lag", "from-src")[-1:] == [0]
        and values(api, "transform_lag", "clean")[-1:] == [0]
        and values(api, "transform_latency_p99_ms", "clean")), timeout=90)

    pages = [
        ("#/", [("topic_bytes_in_per_sec", topic)], []),
        ("#/topics", [], []),
        (f"#/topics/{topic}", [("topic_bytes_in_per_sec", topic)], []),
        ("#/groups", [("group_lag", group)], []),
        (f"#/groups/{group}", [("group_lag", group)], []),
        ("#/plugins", [("plugin_calls_per_sec", plugin)], []),
        (f"#/plugins/{plugin}", [("plugin_calls_per_sec", plugin)], []),
        ("#/tenants", [("tenant_produce_bytes_per_sec", "acme"), ("tenant_throttle_ms_per_sec", "acme")],
         [("tenant_produce_bytes_per_sec", "acme")]),
        ("#/mirrors", [("mirror_latency_p99_ms", "from-src")], []),
        ("#/transforms", [("transform_lag", "clean"), ("transform_latency_p99_ms", "clean")], []),
    ]
    report = run_console(node, chromium, f"http://{b.admin}/", out, pages)
    shown = {page["hash"]: page for page in report["pages"]}
    with capsys.disabled():  # where the screenshots are, also when the test passes
        print(f"\nconsole screenshots (Chromium {report['browser']}): {out}")
        for page in report["pages"]:
            print(summary(page))

    # Every page: drawn, and nothing went wrong on the way.
    problems = []
    for page in report["pages"]:
        for key in ("console_errors", "page_errors", "failed_requests"):
            if page[key]:
                problems.append(f"{page['hash']}: {key}: {page[key]}")
        for key in ("wait_error", "error_box", "screenshot_error"):
            if page.get(key):
                problems.append(f"{page['hash']}: {key}: {page[key]}")
        if page.get("status", {}).get("error"):
            problems.append(f"{page['hash']}: #status says {page['status']['text']!r}")
        if not page.get("screenshot") or not Path(page["screenshot"]).is_file():
            problems.append(f"{page['hash']}: no screenshot")
    assert not problems, "\n".join(problems) + f"\n(screenshots: {out})"

    def line(hash_: str, family: str, subject: str) -> list:
        return shown[hash_]["charts"].get(family, {}).get(subject, [])

    # The charts: what the test made.
    for hash_ in ("#/groups", f"#/groups/{group}"):
        points = line(hash_, "group_lag", group)
        assert points and points[-1][1] == LAG, (hash_, points)
    for hash_ in ("#/", f"#/topics/{topic}"):
        points = line(hash_, "topic_bytes_in_per_sec", topic)
        assert max(v for _, v in points) > 0, (hash_, points)
    for hash_ in ("#/plugins", f"#/plugins/{plugin}"):
        points = line(hash_, "plugin_calls_per_sec", plugin)
        assert max(v for _, v in points) > 0, (hash_, points)
    tenants = shown["#/tenants"]
    limit = tenants["limits"]["tenant_produce_bytes_per_sec"]["acme"]
    assert limit and all(v == QUOTA for _, v in limit), limit
    assert max(v for _, v in line("#/tenants", "tenant_produce_bytes_per_sec", "acme")) > 0
    assert max(v for _, v in line("#/tenants", "tenant_throttle_ms_per_sec", "acme")) > 0
    assert line("#/mirrors", "mirror_latency_p99_ms", "from-src")
    assert line("#/mirrors", "mirror_lag", "from-src")[-1][1] == 0  # caught up
    assert line("#/transforms", "transform_lag", "clean")[-1][1] == 0
    assert line("#/transforms", "transform_latency_p99_ms", "clean")
    # A detail page draws only its own subject.
    assert set(shown[f"#/topics/{topic}"]["charts"]["topic_bytes_in_per_sec"]) == {topic}
    assert set(shown[f"#/groups/{group}"]["charts"]["group_lag"]) == {group}

    # The tables: the names the test created, with their figures.
    listed = {r["Topic"]: r for r in rows(shown["#/topics"])}
    assert {topic, routed, t_in, t_out, "acme.events", "src.src-events"} <= set(listed), sorted(listed)
    assert listed[topic]["Partitions"] == "2" and listed[routed]["Partitions"] == "4", listed
    partitions = rows(shown[f"#/topics/{topic}"])
    assert [(r["Partition"], r["High watermark"]) for r in partitions] == [("0", "10"), ("1", "10")], partitions
    groups = {r["Group"]: r for r in rows(shown["#/groups"])}
    assert groups[group]["Lag"] == str(LAG), groups
    offsets = [t for t in shown[f"#/groups/{group}"]["tables"] if t[0][:2] == ["Topic", "Partition"]]
    assert offsets and offsets[0][1:] == [[topic, "0", "7", "10", "3"], [topic, "1", "10", "10", "0"]], offsets
    plugins = {r["Plugin"]: r for r in rows(shown["#/plugins"])}
    assert {plugin, "redact", "mirror"} <= set(plugins), plugins
    assert (plugins[plugin]["Kind"], plugins[plugin]["Status"], plugins[plugin]["Records"]) == \
        ("partitioner", "active", "100"), plugins[plugin]
    assert shown[f"#/plugins/{plugin}"]["cards"]["Kind"] == "partitioner"
    assert [(r["Tenant"], r["Principals"], r["Topics"], r["Partitions"]) for r in rows(tenants)] == \
        [("acme", "User:acme-app", "1", "1")], tenants["tables"]
    mirrors = {r["Mirror"]: r for r in rows(shown["#/mirrors"])}
    assert (mirrors["from-src"]["Status"], mirrors["from-src"]["Records"], mirrors["from-src"]["Behind"]) == \
        ("running", "30", "0"), mirrors
    transforms = {r["Transform"]: r for r in rows(shown["#/transforms"])}
    assert [transforms["clean"][k] for k in ("Plugin", "Input", "Outputs", "Status", "Lag", "In", "Out")] == \
        ["redact", t_in, t_out, "running", "0", "20", "20"], transforms
    latency = [transforms["clean"][k].replace(",", "") for k in ("Latency p50 ms", "Latency p99 ms")]
    assert all(v.isdigit() for v in latency) and int(latency[0]) <= int(latency[1]), transforms
    overview = shown["#/"]
    assert overview["cards"]["Brokers"] == "1 active", overview["cards"]
    assert [(r["Kafka"], r["State"]) for r in rows(overview)] == [(b.bootstrap, "active")], overview["tables"]
