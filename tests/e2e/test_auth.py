"""Authentication matrix: one broker with SASL_PLAINTEXT, SASL_SSL and SSL
(client_auth=required) listeners beside the plaintext main listener, users made with
`quiver user create`, certificates with `quiver tls certs`.

Right credentials: confluent-kafka and kcat produce and consume over every secured
listener and mechanism, and every record reads back (key, value, headers, offsets, in
order).  Wrong credentials: each refusal is seen by the client as the error Kafka gives,
counted on /v1/security/logins and logged with its reason, and the broker keeps serving
everyone else."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

import kproto
import securitykit as sk
from clients import DeliveryLog, create_topic, kcat, read_partitions
from harness import wait_until

PLAIN, S256, S512 = "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"
USERS = {"alice": "alice-secret", "bob": "bob-secret-2"}
LISTENERS = {"sasl": "SASL_PLAINTEXT", "sasl_ssl": "SASL_SSL", "ssl": "SSL"}


class Env:
    """The broker under test, its listeners' addresses and the certificates."""

    def __init__(self, broker, addrs, certs, rogue):
        self.broker, self.addrs, self.certs, self.rogue = broker, addrs, certs, rogue

    def conf(self, listener: str, mechanism=None, user=None, password=None, cert_of=None,
             rogue_cert=False, **extra) -> dict:
        """A librdkafka configuration for one listener.  cert_of names the client
        certificate to present (rogue_cert: the one signed by the untrusted CA)."""
        protocol = LISTENERS[listener]
        ca = self.certs.ca if "SSL" in protocol else None
        cert = key = None
        if cert_of:
            cert, key = (self.rogue if rogue_cert else self.certs).client(cert_of)
        return sk.rdkafka_conf(self.addrs[listener], protocol, mechanism, user, password, ca, cert, key, **extra)

    def user_conf(self, listener: str, mechanism: str, user: str = "alice", password=None, **extra) -> dict:
        return self.conf(listener, mechanism, user, USERS[user] if password is None else password, **extra)

    def tls(self, cert_of=None, rogue_cert=False) -> ssl.SSLContext:
        if cert_of is None:
            return sk.tls_context(self.certs.ca)
        cert, key = (self.rogue if rogue_cert else self.certs).client(cert_of)
        return sk.tls_context(self.certs.ca, cert, key)


def auth_env(broker_factory, tmp_path, **sets) -> Env:
    certs = sk.make_certs(tmp_path / "certs", clients=["alice"])
    # the same client name under another CA: a certificate the broker must not trust
    rogue = sk.make_certs(tmp_path / "rogue", clients=["alice"])
    b, addrs = sk.secure_broker(broker_factory, LISTENERS, {**sk.tls_sets(certs, "required"), **sets})
    sk.create_user(b, "alice", USERS["alice"])  # both SCRAM mechanisms, default iterations
    sk.create_user(b, "bob", USERS["bob"], mechanisms=[S512], iterations=4096)
    return Env(b, addrs, certs, rogue)


def no_bootstrap(conf: dict) -> dict:
    return {k: v for k, v in conf.items() if k != "bootstrap.servers"}


def produce_and_check(conf: dict, topic: str, n: int = 60, tag: str = "") -> list:
    """Produce n records (2 partitions, keys, values, headers) with the given client
    configuration and read them back with the same configuration: every record, in
    order, at consecutive offsets from 0."""
    p = Producer({**conf, "linger.ms": 5, "message.timeout.ms": 30000})
    log = DeliveryLog()
    sent = []
    for i in range(n):
        rec = (i % 2, f"key-{i}".encode(), f"value-{tag}-{i}-{uuid.uuid4().hex[:6]}".encode(),
               [("i", str(i).encode()), ("tag", tag.encode())])
        sent.append(rec)
        p.produce(topic, key=rec[1], value=rec[2], headers=rec[3], partition=rec[0], on_delivery=log.callback(i))
    left = p.flush(30)
    assert left == 0 and not log.errors, f"{left} undelivered, errors {log.errors}"
    per_part = {0: [], 1: []}
    for i, rec in enumerate(sent):
        assert log.ok[i][0] == rec[0], (i, log.ok[i])
        per_part[rec[0]].append((log.ok[i][1], rec))
    for part, rows in per_part.items():
        assert [o for o, _ in rows] == list(range(len(rows))), f"partition {part} offsets {[o for o, _ in rows]}"
    got = read_partitions(conf["bootstrap.servers"], topic, {0: len(per_part[0]), 1: len(per_part[1])},
                          timeout=30, **no_bootstrap(conf))
    for part, rows in per_part.items():
        seen = [(s.offset, s.key, s.value, [(k, v) for k, v in s.headers]) for s in got[part]]
        want = [(o, r[1], r[2], r[3]) for o, r in rows]
        assert seen == want, f"partition {part}: read {seen[:3]}..., want {want[:3]}..."
    return sent


def advertised(conf: dict) -> dict:
    md = AdminClient(conf).list_topics(timeout=15)
    return {bid: f"{bm.host}:{bm.port}" for bid, bm in md.brokers.items()}


# -- right credentials ---------------------------------------------------------------

CASES = [
    ("sasl_ssl", S256, "alice"),
    ("sasl_ssl", S512, "alice"),
    ("sasl_ssl", PLAIN, "alice"),
    ("sasl_ssl", PLAIN, "bob"),  # PLAIN checked against bob's SCRAM-SHA-512 credential only
    ("sasl", S512, "alice"),
    ("sasl", S512, "bob"),
    ("ssl", None, "alice"),  # a trusted client certificate, no SASL
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("listener,mechanism,user", CASES,
                         ids=[f"{l}-{m or 'cert'}-{u}" for l, m, u in CASES])
def test_right_credentials_produce_and_consume_every_record(broker_factory, tmp_path, listener, mechanism, user):
    env = auth_env(broker_factory, tmp_path)
    if mechanism:
        conf = env.user_conf(listener, mechanism, user)
    else:
        conf = env.conf(listener, cert_of=user)
    before = sk.logins(env.broker)
    topic = f"auth-{listener}-{uuid.uuid4().hex[:6]}"
    create_topic(env.broker.bootstrap, topic, 2)

    # the listener advertises itself, not the plaintext main listener
    assert advertised(conf) == {0: env.addrs[listener]}
    produce_and_check(conf, topic, tag=f"{listener}/{mechanism}/{user}")

    after = sk.logins(env.broker)
    assert after["succeeded"] > before["succeeded"], (before, after)
    assert after["failed"] == before["failed"] == 0, f"right credentials counted as failed logins: {after}"


@pytest.mark.timeout(60)
def test_kcat_produces_and_consumes_over_sasl_ssl_scram(broker_factory, tmp_path):
    env = auth_env(broker_factory, tmp_path)
    addr = env.addrs["sasl_ssl"]
    topic = f"auth-kcat-{uuid.uuid4().hex[:6]}"
    create_topic(env.broker.bootstrap, topic, 1)
    for mechanism, user in [(S256, "alice"), (S512, "bob")]:
        x = sk.kcat_args(env.user_conf("sasl_ssl", mechanism, user))
        meta = kcat(addr, *x, "-L").stdout.decode()
        assert f"broker 0 at {addr}" in meta and f'topic "{topic}"' in meta, meta

    rows = [(f"k{i}", f"value-{i}-{'x' * (i % 7)}") for i in range(200)]
    x256 = sk.kcat_args(env.user_conf("sasl_ssl", S256, "alice"))
    kcat(addr, *x256, "-P", "-t", topic, "-p", "0", "-K", ":", "-H", "via=kcat", "-H", "mech=S256",
         input="".join(f"{k}:{v}\n" for k, v in rows).encode())
    x512 = sk.kcat_args(env.user_conf("sasl_ssl", S512, "bob"))
    out = kcat(addr, *x512, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
               "-f", r"%o\t%k\t%s\t%h\n").stdout.decode()
    got = [line.split("\t") for line in out.split("\n") if line]
    want = [[str(i), k, v, "via=kcat,mech=S256"] for i, (k, v) in enumerate(rows)]
    assert got == want, f"kcat read {len(got)} rows, first {got[:2]}; want {want[:2]}"

    # a wrong password: kcat fails and says authentication failed
    bad = sk.kcat_args(env.user_conf("sasl_ssl", S256, "alice", password="not-it"))
    proc = kcat(addr, *bad, "-L", "-m", "5", check=False, timeout=60)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0 and "Authentication failed" in err, (proc.returncode, err[-2000:])


# -- refusals ----------------------------------------------------------------------------

def client_errors(confs: dict, wait: float = 10.0) -> dict:
    """What confluent-kafka clients report when they cannot get in, all tried at once:
    {name: (errors passed to error_cb, the exception list_topics raised or None)}."""
    out = {}

    def attempt(name, conf):
        errors = []
        a = AdminClient({**conf, "error_cb": errors.append, "reconnect.backoff.ms": 1000,
                         "reconnect.backoff.max.ms": 5000})
        exc = None
        deadline = time.monotonic() + wait
        while not errors and time.monotonic() < deadline:
            a.poll(0.1)  # error_cb runs from poll
        try:
            a.list_topics(timeout=2)
        except KafkaException as e:
            exc = e.args[0]
        a.poll(0.2)
        out[name] = (errors, exc)

    threads = [threading.Thread(target=attempt, args=item) for item in confs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(wait + 20)
    return out


def fail_codes(errors) -> set:
    return {e.code() for e in errors}


REFUSALS = [
    # (name, listener, mechanism, user, password, error_cb codes (one must be seen), words of the error)
    ("plain-wrong-password", "sasl_ssl", PLAIN, "alice", "wrong",
     {KafkaError._AUTHENTICATION}, "authentication"),
    ("scram256-wrong-password", "sasl_ssl", S256, "alice", "wrong",
     {KafkaError._AUTHENTICATION}, "authentication"),
    ("scram512-wrong-password-sasl-plaintext", "sasl", S512, "alice", "wrong",
     {KafkaError._AUTHENTICATION}, "authentication"),
    ("scram512-unknown-user", "sasl_ssl", S512, "mallory", "whatever",
     {KafkaError._AUTHENTICATION}, "authentication"),
    ("scram256-no-credential-for-mechanism", "sasl", S256, "bob", USERS["bob"],
     {KafkaError._AUTHENTICATION}, "authentication"),
    ("plain-over-sasl-plaintext", "sasl", PLAIN, "alice", USERS["alice"],
     {KafkaError._AUTHENTICATION, KafkaError.UNSUPPORTED_SASL_MECHANISM}, "Unsupported SASL mechanism"),
]


@pytest.mark.timeout(90)
def test_sasl_refusals_are_reported_by_the_client(broker_factory, tmp_path):
    env = auth_env(broker_factory, tmp_path)
    good = env.user_conf("sasl_ssl", S512, "alice")
    assert advertised(good) == {0: env.addrs["sasl_ssl"]}
    before = sk.logins(env.broker)
    problems = []
    seen_by = client_errors({r[0]: env.conf(r[1], r[2], r[3], r[4]) for r in REFUSALS})
    for name, listener, mech, user, pw, codes, text in REFUSALS:
        errors, exc = seen_by[name]
        print(f"{name}: error_cb {[(e.name(), e.str()) for e in errors]}; list_topics raised {exc}")
        if exc is None:
            problems.append(f"{name}: list_topics succeeded")
            continue
        seen = fail_codes(errors)
        if not seen & codes:
            problems.append(f"{name}: error_cb got {[(e.name(), e.str()) for e in errors]}, want one of "
                            f"{[KafkaError(c).name() for c in codes]}")
        elif not any(text.lower() in e.str().lower() for e in errors):
            problems.append(f"{name}: no client error mentions {text!r}: {[e.str() for e in errors]}")
    assert not problems, "\n".join(problems)

    after = sk.logins(env.broker)
    grew = after["failed"] - before["failed"]
    # librdkafka retries a refused login, so at least one failure per client
    assert grew >= len(REFUSALS), f"failed logins grew by {grew} for {len(REFUSALS)} refused clients: {after}"
    assert sum(after["failures"].values()) == after["failed"], after
    # the healthy client still works
    produce_and_check(good, make_topic(env), tag="after-refusals")


def make_topic(env, partitions=2) -> str:
    topic = f"auth-{uuid.uuid4().hex[:8]}"
    create_topic(env.broker.bootstrap, topic, partitions)
    return topic


@pytest.mark.timeout(90)
def test_tls_refusals_are_reported_by_the_client(broker_factory, tmp_path):
    env = auth_env(broker_factory, tmp_path)
    good = env.conf("ssl", cert_of="alice")
    assert advertised(good) == {0: env.addrs["ssl"]}
    before = sk.logins(env.broker)
    problems = []
    # librdkafka reports a handshake the broker refused as a transport (or SSL) failure
    tls_codes = {KafkaError._SSL, KafkaError._TRANSPORT}
    seen_by = client_errors({"untrusted-client-cert": env.conf("ssl", cert_of="alice", rogue_cert=True),
                             "no-client-cert": env.conf("ssl")})
    for name, (errors, exc) in seen_by.items():
        print(f"{name}: error_cb {[(e.name(), e.str()) for e in errors]}; list_topics raised {exc}")
        if exc is None:
            problems.append(f"{name}: list_topics succeeded over SSL")
        elif not fail_codes(errors) & tls_codes:
            problems.append(f"{name}: error_cb got {[(e.name(), e.str()) for e in errors]}")
    assert not problems, "\n".join(problems)
    after = sk.logins(env.broker)
    assert after["failed"] - before["failed"] >= 2, (before, after)
    assert after["failures"].get("tls_handshake", 0) - before["failures"].get("tls_handshake", 0) >= 2, after
    produce_and_check(good, make_topic(env), tag="after-tls-refusals")


# -- raw refusals: exact counts and the log ----------------------------------------------

def raw_scram(env, listener, mechanism, user, password, version, forge=False):
    """One raw login attempt; returns (error code, message, local port, closed after)."""
    tls = env.tls() if LISTENERS[listener] == "SASL_SSL" else None
    c = sk.KConn(env.addrs[listener], tls=tls)
    port = c.sock.getsockname()[1]
    try:
        c.login(mechanism, user, password, version=version, forge_proof=forge)
        return 0, None, port, False
    except sk.LoginRefused as e:
        return e.code, e.message, port, sk.peer_closed(c, 10)
    finally:
        c.close()


def raw_tls(env, cert_of=None, rogue=False):
    """A TLS connection to the SSL listener that then asks ApiVersions. Returns
    (refused, local port, what happened)."""
    ctx = env.tls(cert_of, rogue)
    try:
        c = sk.KConn(env.addrs["ssl"], tls=ctx, timeout=10)
    except (ssl.SSLError, OSError) as e:  # TLS 1.2: the handshake itself fails
        return True, None, repr(e)
    port = c.sock.getsockname()[1]
    try:
        res = kproto.api_versions(c, 0)  # TLS 1.3: the refusal arrives as an alert on first read
        return False, port, f"ApiVersions answered {res.error_code}"
    except (ssl.SSLError, OSError, ConnectionError, ValueError) as e:
        return True, port, repr(e)
    finally:
        c.close()


@pytest.mark.timeout(90)
def test_each_refusal_is_counted_once_and_logged_with_its_reason(broker_factory, tmp_path):
    env = auth_env(broker_factory, tmp_path)
    b = env.broker
    # a client that stays connected (and logged in) through all of it
    healthy = sk.connect(env.addrs["sasl"], S256, "alice", USERS["alice"])
    topic = make_topic(env, 1)

    # correct raw logins first: both SaslAuthenticate versions, both SCRAM mechanisms and
    # PLAIN over TLS; the server-final message proves the broker holds the key
    for version in (0, 1):
        for listener, mech in [("sasl", S256), ("sasl", S512), ("sasl_ssl", S256), ("sasl_ssl", PLAIN)]:
            code, msg, _port, _closed = raw_scram(env, listener, mech, "alice", USERS["alice"], version)
            assert code == 0, (listener, mech, version, code, msg)

    before = sk.logins(b)
    log_before = len(b.stderr_text())
    refusals = []  # (what, local port, reason words the log must carry, counter reason or None)
    for version in (0, 1):
        for mech in (S256, S512):
            code, msg, port, closed = raw_scram(env, "sasl", mech, "alice", USERS["alice"], version, forge=True)
            assert (code, closed) == (sk.SASL_AUTHENTICATION_FAILED, True), (
                f"forged {mech} proof (SaslAuthenticate v{version}): error {code} {msg!r}, closed={closed}")
            refusals.append((f"forged {mech} proof v{version}", port, "invalid", "invalid_credentials"))
    code, msg, port, closed = raw_scram(env, "sasl_ssl", PLAIN, "alice", "nope", 1)
    assert (code, closed) == (sk.SASL_AUTHENTICATION_FAILED, True), (code, msg, closed)
    refusals.append(("PLAIN wrong password", port, "invalid", "invalid_credentials"))
    code, msg, port, closed = raw_scram(env, "sasl_ssl", S512, "alice", "nope", 1)
    assert (code, closed) == (sk.SASL_AUTHENTICATION_FAILED, True), (code, msg, closed)
    refusals.append(("SCRAM wrong password", port, "invalid", "invalid_credentials"))
    unknown_msgs = []
    for mech in (PLAIN, S256):
        listener = "sasl_ssl" if mech == PLAIN else "sasl"
        code, msg, port, closed = raw_scram(env, listener, mech, "nobody-" + uuid.uuid4().hex[:4], "pw", 1)
        assert (code, closed) == (sk.SASL_AUTHENTICATION_FAILED, True), (mech, code, msg, closed)
        unknown_msgs.append(msg)
        refusals.append((f"{mech} unknown user", port, "invalid", None))
    # an unknown user and a wrong password read the same to the client (no user probing)
    code, wrong_msg, _p, _c = raw_scram(env, "sasl", S256, "alice", "nope", 1)
    assert unknown_msgs[1] == wrong_msg, (unknown_msgs[1], wrong_msg)
    refusals.append(("SCRAM wrong password (message compared)", _p, "invalid", "invalid_credentials"))

    # PLAIN on SASL_PLAINTEXT: the handshake answers 33 with the mechanisms offered
    c = sk.KConn(env.addrs["sasl"])
    port = c.sock.getsockname()[1]
    err, mechs = c.sasl_handshake(PLAIN)
    assert err == sk.UNSUPPORTED_SASL_MECHANISM and PLAIN not in mechs and {S256, S512} <= set(mechs), (err, mechs)
    assert sk.peer_closed(c), "the connection stays open after a refused SaslHandshake"
    c.close()
    refusals.append(("PLAIN on SASL_PLAINTEXT", port, "PLAIN", "unsupported_mechanism"))

    # TLS: a certificate from another CA, and none at all, on the client_auth=required listener
    for what, kwargs in [("untrusted client certificate", {"cert_of": "alice", "rogue": True}),
                         ("no client certificate", {})]:
        refused, port, detail = raw_tls(env, **kwargs)
        assert refused, f"{what}: the SSL listener let the client in ({detail})"
        refusals.append((what, port, "certificate", "tls_handshake"))

    # a client that does not speak TLS, on the SASL_SSL listener
    c = kproto.Conn.to(env.addrs["sasl_ssl"])
    port = c.sock.getsockname()[1]
    c.send_raw(kproto.request_frame(kproto.API_VERSIONS, 0, 1, b""))
    assert sk.peer_closed(c), "the SASL_SSL listener kept a plaintext connection open"
    c.close()
    refusals.append(("plaintext bytes on the SASL_SSL listener", port, "TLS", "tls_handshake"))

    # the counters: exactly one failure per refusal, none counted as success
    def counted():
        now = sk.logins(b)
        return now if now["failed"] - before["failed"] >= len(refusals) else None
    after = wait_until(counted, 10, f"{len(refusals)} failed logins counted")
    print(f"\nlogins before {before}\nlogins after  {after}")
    assert after["failed"] - before["failed"] == len(refusals), (before, after, [r[0] for r in refusals])
    assert after["succeeded"] == before["succeeded"], "a refused login was counted as a success"
    assert sum(after["failures"].values()) == after["failed"], after
    delta = {k: v - before["failures"].get(k, 0) for k, v in after["failures"].items()}
    for reason in {r[3] for r in refusals if r[3]}:
        want = sum(1 for r in refusals if r[3] == reason)
        assert delta.get(reason, 0) == want, f"failures[{reason!r}] grew by {delta.get(reason, 0)}, want {want}: {delta}"

    # the log names each refusal: one WARN line per peer with the reason
    def logged():
        text = b.stderr_text()[log_before:]
        missing = []
        for what, port, word, _reason in refusals:
            if port is None:
                continue
            lines = [ln for ln in text.splitlines() if f"127.0.0.1:{port}" in ln]
            if not any(word.lower() in ln.lower() for ln in lines):
                missing.append(f"{what} (peer port {port}, want {word!r}): {lines}")
        return missing
    deadline = time.monotonic() + 10
    while (missing := logged()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not missing, "refusals not logged with their reason:\n" + "\n".join(missing)

    # the broker kept serving: the connection that logged in first still works
    res = kproto.produce_v3(healthy, topic, 0, kproto.encode_batch([kproto.Record(b"k", b"still-here")]))
    assert res.error_code == 0, res
    healthy.close()
    produce_and_check(env.user_conf("sasl_ssl", S256, "alice"), make_topic(env), tag="end")


# -- users -------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_user_cli_lists_deletes_and_refuses_weak_iterations(broker_factory, tmp_path):
    env = auth_env(broker_factory, tmp_path)
    b = env.broker
    proc = sk.cli(b, "user", "create", "weak", "--password", "pw", "--iterations", "1000", check=False)
    assert proc.returncode != 0, f"--iterations 1000 accepted: {proc.stdout}"
    listed = json.loads(sk.cli(b, "user", "list", "--json").stdout)
    users = {u["name"]: {m["mechanism"]: m["iterations"] for m in u["mechanisms"]} for u in listed["users"]}
    assert users == {"alice": {S256: 8192, S512: 8192}, "bob": {S512: 4096}}, users
    assert "weak" not in users and "pw" not in json.dumps(listed)

    # a live connection logged in as bob, then bob is deleted: new logins are refused
    conn = sk.connect(env.addrs["sasl"], S512, "bob", USERS["bob"])
    conn.close()
    sk.cli(b, "user", "delete", "bob")
    def refused():
        code, _m, _p, _c = raw_scram(env, "sasl", S512, "bob", USERS["bob"], 1)
        return code == sk.SASL_AUTHENTICATION_FAILED
    wait_until(refused, 10, "bob's login refused after `quiver user delete bob`")
    listed = json.loads(sk.cli(b, "user", "list", "--json").stdout)
    assert [u["name"] for u in listed["users"]] == ["alice"], listed

    # changing a password: the old one stops working, the new one works (SCRAM and PLAIN)
    sk.create_user(b, "alice", "new-password")
    def switched():
        old = raw_scram(env, "sasl", S256, "alice", USERS["alice"], 1)[0]
        new = raw_scram(env, "sasl_ssl", PLAIN, "alice", "new-password", 1)[0]
        return (old, new) == (sk.SASL_AUTHENTICATION_FAILED, 0)
    wait_until(switched, 10, "alice's new password in force, the old one refused")


# -- principals --------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_principal_of_each_kind_of_client(broker_factory, tmp_path):
    """SASL users are User:<name>, certificate clients User:CN=<cn>, plaintext clients
    User:ANONYMOUS: with the authorizer on, each may write exactly the topic its
    principal was granted."""
    env = auth_env(broker_factory, tmp_path, **{"security.authorizer": "true",
                                                "security.super_users": "User:root"})
    b = env.broker
    sk.create_user(b, "root", "root-pw")
    root = sk.connect(env.addrs["sasl"], S256, "root", "root-pw")
    grants = {"User:alice": "p.sasl", "User:CN=alice": "p.cert", "User:ANONYMOUS": "p.anon"}
    for principal, topic in grants.items():
        err, msg = kproto.create_topics_v2(root, topic, 1)
        assert err == 0, (topic, err, msg)
        sk.create_acl(b, principal, ["write", "describe"], topic=topic)
    root.close()

    clients = {
        "User:alice": lambda: sk.connect(env.addrs["sasl"], S512, "alice", USERS["alice"]),
        "User:CN=alice": lambda: sk.connect(env.addrs["ssl"], tls=env.tls("alice")),
        "User:ANONYMOUS": lambda: sk.connect(b.bootstrap),
    }

    def outcomes():
        got = {}
        for principal, make in clients.items():
            with make() as c:
                for topic in grants.values():
                    res = kproto.produce_v3(c, topic, 0, kproto.encode_batch([kproto.Record(None, principal.encode())]))
                    got[(principal, topic)] = res.error_code
        return got

    want = {(p, t): (0 if grants[p] == t else sk.TOPIC_AUTHORIZATION_FAILED) for p in clients for t in grants.values()}
    last = {}

    def matches():
        last.update(outcomes())
        return last == want
    try:
        wait_until(matches, 10, "each principal may write its own topic only")
    except AssertionError:
        diff = {k: (v, want[k]) for k, v in last.items() if v != want[k]}
        raise AssertionError(f"(principal, topic): (got, want) where they differ: {diff}") from None


@pytest.mark.timeout(60)
def test_nothing_but_the_handshake_before_login(broker_factory, tmp_path):
    """Before a SASL client has logged in, the broker answers ApiVersions, SaslHandshake
    and SaslAuthenticate only; anything else (or an oversized frame) closes the
    connection without an answer, and other clients are unaffected."""
    env = auth_env(broker_factory, tmp_path)
    addr = env.addrs["sasl"]
    with sk.KConn(addr) as c:
        res = kproto.api_versions(c, 0)
        assert res.error_code == 0 and {17, 36} <= set(res.ranges), res
        c.send_raw(kproto.request_frame(kproto.METADATA, 1, 2, kproto.i32(-1)))
        got = c.wait_closed(10)
        assert got == b"", f"Metadata before login was answered: {got[:100]!r}"
    with sk.KConn(addr) as c:
        # SaslAuthenticate before SaslHandshake: refused with ILLEGAL_SASL_STATE
        code, msg, _ = c.sasl_authenticate(b"n,,n=alice,r=abc", 1)
        assert code == sk.ILLEGAL_SASL_STATE, (code, msg)
    with sk.KConn(addr) as c:
        c.send_raw(kproto.i32(1 << 20) + bytes(70 * 1024))  # a 1 MiB frame, 70 KiB of it sent
        assert sk.peer_closed(c), "a 1 MiB frame before login was read on"
    with sk.KConn(env.addrs["sasl_ssl"], tls=env.tls()) as c:
        c.send_raw(kproto.request_frame(kproto.PRODUCE, 3, 1, b"\0" * 32))
        assert sk.peer_closed(c), "Produce before login kept the TLS connection open"
    # after a login the same kind of connection works
    with sk.connect(addr, S512, "alice", USERS["alice"]) as c:
        assert kproto.metadata_v1(c, None) is not None


@pytest.mark.timeout(60)
def test_kafkapython_over_sasl_ssl_scram(broker_factory, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    env = auth_env(broker_factory, tmp_path)
    topic = make_topic(env, 1)
    conf = sk.kafkapython_conf(env.addrs["sasl_ssl"], "SASL_SSL", S512, "alice", USERS["alice"], env.certs.ca)
    prod = KafkaProducer(**conf)
    sent = [(f"k{i}".encode(), f"kafka-python-{i}".encode(), [("i", str(i).encode())]) for i in range(100)]
    metas = [prod.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h in sent]
    prod.flush(timeout=30)
    assert [m.get(timeout=30).offset for m in metas] == list(range(len(sent)))
    prod.close(timeout=10)
    cons = KafkaConsumer(**conf, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                         consumer_timeout_ms=2000)
    try:
        tp = TopicPartition(topic, 0)
        cons.assign([tp])
        cons.seek_to_beginning(tp)
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            for recs in cons.poll(timeout_ms=500).values():
                got += [(r.offset, r.key, r.value, list(r.headers)) for r in recs]
    finally:
        cons.close()
    assert got == [(i, k, v, h) for i, (k, v, h) in enumerate(sent)], got[:3]


@pytest.mark.timeout(60)
def test_mechanism_settings(broker_factory, tmp_path):
    """security.sasl.mechanisms limits what SaslHandshake accepts, and
    plain_without_tls=true offers PLAIN on SASL_PLAINTEXT too."""
    env = auth_env(broker_factory, tmp_path, **{"security.sasl.mechanisms": "PLAIN,SCRAM-SHA-512",
                                                "security.sasl.plain_without_tls": "true"})
    for listener in ("sasl", "sasl_ssl"):
        for mech in (PLAIN, S512):
            code, msg, _port, _closed = raw_scram(env, listener, mech, "alice", USERS["alice"], 1)
            assert code == 0, (listener, mech, code, msg)
        tls = env.tls() if listener == "sasl_ssl" else None
        with sk.KConn(env.addrs[listener], tls=tls) as c:
            err, mechs = c.sasl_handshake(S256)
            assert (err, sorted(mechs)) == (sk.UNSUPPORTED_SASL_MECHANISM, [PLAIN, S512]), (listener, err, mechs)
    produce_and_check(env.user_conf("sasl", PLAIN, "bob"), make_topic(env), tag="plain-without-tls")
