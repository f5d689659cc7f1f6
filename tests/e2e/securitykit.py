"""Helpers for the security tests (TLS and SASL listeners, SCRAM users, ACLs): test
certificates and users made through the `quiver` CLI, brokers with extra listeners on
the test's own reserved ports, client configurations for confluent-kafka, kafka-python
and kcat, and a raw Kafka connection (optionally over TLS) that logs in with SASL by
hand and speaks any request kafka-python's protocol classes describe.

Only plumbing lives here; every assertion stays in the tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import kproto
from harness import Broker, quiver_bin

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36

# Kafka error codes the security tests name
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
AUTH_ERRORS = {TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED,
               TRANSACTIONAL_ID_AUTHORIZATION_FAILED}

# ports slot.base+3 .. slot.base+9 of a broker's PortSlot are the test's to use
EXTRA_PORTS = 7


# --- the CLI -----------------------------------------------------------------

def quiver(*args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
    proc = subprocess.run([quiver_bin(), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"quiver {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                             f"stderr: {proc.stderr}")
    return proc


def cli(broker: Broker, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`quiver ARGS --admin <the broker's admin address>`."""
    return quiver(*args, "--admin", broker.admin, check=check)


@dataclass
class Certs:
    """A directory written by `quiver tls certs`."""
    dir: Path

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.pem")

    @property
    def server_cert(self) -> str:
        return str(self.dir / "server.pem")

    @property
    def server_key(self) -> str:
        return str(self.dir / "server.key")

    def client(self, name: str) -> tuple[str, str]:
        """(certificate, key) of client <name> (subject CN=<name>)."""
        return str(self.dir / f"client-{name}.pem"), str(self.dir / f"client-{name}.key")


def make_certs(directory: Path, clients=(), hosts: str = "127.0.0.1,localhost") -> Certs:
    """A CA, a server certificate for `hosts` and client certificates, all by the CLI.
    Another directory gets another CA (for untrusted client certificates)."""
    args = ["tls", "certs", str(directory), "--hosts", hosts]
    if clients:
        args += ["--clients", ",".join(clients)]
    quiver(*args)
    c = Certs(Path(directory))
    for p in [c.ca, c.server_cert, c.server_key] + [f for n in clients for f in c.client(n)]:
        if not Path(p).is_file():
            raise AssertionError(f"quiver tls certs did not write {p}")
    return c


def create_user(broker: Broker, name: str, password: str, mechanisms=(), iterations: Optional[int] = None):
    args = ["user", "create", name, "--password", password]
    for m in mechanisms:
        args += ["--mechanism", m]
    if iterations is not None:
        args += ["--iterations", str(iterations)]
    return cli(broker, *args)


def create_acl(broker: Broker, principal: str, operations, *, topic=None, group=None, cluster=False,
               transactional_id=None, pattern: str = "literal", deny: bool = False, host: str = "*"):
    args = ["acl", "create", "--principal", principal]
    for op in ([operations] if isinstance(operations, str) else operations):
        args += ["--operation", op]
    if topic is not None:
        args += ["--topic", topic]
    if group is not None:
        args += ["--group", group]
    if transactional_id is not None:
        args += ["--transactional-id", transactional_id]
    if cluster:
        args += ["--cluster"]
    args += ["--pattern", pattern, "--host", host]
    if deny:
        args += ["--deny"]
    return cli(broker, *args)


# --- brokers with extra listeners -------------------------------------------

def extra_port(broker: Broker, i: int) -> int:
    """The i-th (0..6) extra port of the broker's reserved slot."""
    if not 0 <= i < EXTRA_PORTS:
        raise ValueError(f"extra port index {i} outside 0..{EXTRA_PORTS - 1}")
    return broker.slot.base + 3 + i


def tls_sets(certs: Certs, client_auth: str = "none") -> dict:
    return {"security.tls.cert_file": certs.server_cert, "security.tls.key_file": certs.server_key,
            "security.tls.client_ca_file": certs.ca, "security.tls.client_auth": client_auth}


def secure_broker(broker_factory, listeners: dict, sets: Optional[dict] = None) -> tuple[Broker, dict]:
    """A broker whose main listener stays PLAINTEXT (the harness probes it) with extra
    listeners {name: security protocol} on the slot's extra ports.  Returns the started
    broker and {name: "127.0.0.1:PORT"}."""
    b = broker_factory(start=False)
    addrs = {}
    for i, (name, protocol) in enumerate(listeners.items()):
        addrs[name] = f"127.0.0.1:{extra_port(b, i)}"
        b.sets[f"kafka.listeners.{name}.listen"] = addrs[name]
        b.sets[f"kafka.listeners.{name}.security_protocol"] = protocol
    b.sets.update(sets or {})
    b.start()
    return b, addrs


def admin_get(broker: Broker, path: str):
    with urllib.request.urlopen(f"http://{broker.admin}{path}", timeout=10) as r:
        return json.loads(r.read())


def logins(broker: Broker) -> dict:
    """GET /v1/security/logins -> {"succeeded": N, "failed": N, "failures": {reason: N}}."""
    return admin_get(broker, "/v1/security/logins")


# --- client configurations ---------------------------------------------------

def rdkafka_conf(addr: str, protocol: str = "PLAINTEXT", mechanism: Optional[str] = None,
                 user: Optional[str] = None, password: Optional[str] = None, ca: Optional[str] = None,
                 cert: Optional[str] = None, key: Optional[str] = None, **extra) -> dict:
    """A confluent-kafka (librdkafka) configuration."""
    conf = {"bootstrap.servers": addr, "security.protocol": protocol, "socket.timeout.ms": 10000}
    if mechanism:
        conf.update({"sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password})
    if ca:
        conf["ssl.ca.location"] = ca
        conf["ssl.endpoint.identification.algorithm"] = "https"
    if cert:
        conf.update({"ssl.certificate.location": cert, "ssl.key.location": key})
    conf.update(extra)
    return conf


def kcat_args(conf: dict) -> list:
    """`-X key=value` for every setting of an rdkafka_conf except bootstrap.servers."""
    out = []
    for k, v in conf.items():
        if k != "bootstrap.servers":
            out += ["-X", f"{k}={v}"]
    return out


def kafkapython_conf(addr: str, protocol: str = "PLAINTEXT", mechanism: Optional[str] = None,
                     user: Optional[str] = None, password: Optional[str] = None, ca: Optional[str] = None,
                     cert: Optional[str] = None, key: Optional[str] = None, **extra) -> dict:
    """Keyword arguments for kafka-python's KafkaClient / KafkaProducer / KafkaConsumer."""
    conf = {"bootstrap_servers": addr, "security_protocol": protocol}
    if mechanism:
        conf.update({"sasl_mechanism": mechanism, "sasl_plain_username": user, "sasl_plain_password": password})
    if ca:
        conf["ssl_cafile"] = ca
    if cert:
        conf.update({"ssl_certfile": cert, "ssl_keyfile": key})
    conf.update(extra)
    return conf


def tls_context(ca: str, cert: Optional[str] = None, key: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


# --- SCRAM (RFC 5802 / 7677), client side -------------------------------------

SCRAM_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


def _saslname(s: str) -> str:
    return s.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(self, mechanism: str, user: str, password: str, nonce: Optional[str] = None):
        self.hash = SCRAM_HASHES[mechanism]
        self.mechanism = mechanism
        self.user = user
        self.password = password
        self.cnonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = f"n={_saslname(user)},r={self.cnonce}"
        self.server_signature: Optional[bytes] = None

    def first(self) -> bytes:
        return ("n,," + self.client_first_bare).encode()

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash).digest()

    def final(self, server_first: bytes, forge_proof: bool = False) -> bytes:
        """The client-final message; forge_proof sends a proof made with a wrong key."""
        text = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.cnonce):
            raise ValueError(f"server nonce {nonce!r} does not extend ours {self.cnonce!r}")
        salted = hashlib.pbkdf2_hmac(self.hash().name, self.password.encode(), salt, iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = self.hash(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.client_first_bare},{text},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        if forge_proof:
            proof = bytes(b ^ 0x5A for b in proof)
        self.server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check_server_final(self, server_final: bytes) -> bool:
        text = server_final.decode()
        return text.startswith("v=") and base64.b64decode(text[2:]) == self.server_signature


# --- raw connections ------------------------------------------------------------

class LoginRefused(Exception):
    def __init__(self, step: str, code: int, message: Optional[str]):
        super().__init__(f"{step}: error {code} {message!r}")
        self.step, self.code, self.message = step, code, message


def _build(dc_cls, version: int, vals: dict):
    """A kafka-python DataContainer from nested dicts (field names in snake_case)."""
    kwargs = {}
    for name, v in vals.items():
        f = dc_cls._struct.fields[name]
        if v is not None and f.is_struct_array():
            v = [_build(f.data_class, version, x) if isinstance(x, dict) else x for x in v]
        elif v is not None and f.is_struct() and isinstance(v, dict):
            v = _build(f.data_class, version, v)
        kwargs[name] = v
    return dc_cls(version=version, **kwargs)


class KConn(kproto.Conn):
    """A Kafka connection, plain or TLS, speaking kproto frames and kafka-python's
    JSON-schema request classes."""

    def __init__(self, addr: str, tls: Optional[ssl.SSLContext] = None, timeout: float = 10.0,
                 server_hostname: str = "127.0.0.1"):
        host, port = addr.rsplit(":", 1)
        super().__init__(host, int(port), timeout)
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
            except BaseException:
                self.close()
                raise
            self.sock.settimeout(timeout)

    def call(self, req_cls, version: int, **fields):
        """Send req_cls[version](**fields) (nested dicts allowed); return the decoded
        response object."""
        req = _build(req_cls[version], version, fields)
        self._corr += 1
        req.with_header(correlation_id=self._corr, client_id="quiver-e2e")
        self.send_raw(bytes(req.encode(header=True, framed=True)))
        frame = self.recv_frame()
        resp_cls = req.header.get_response_class()
        resp = resp_cls.decode(frame, version=version, header=True)
        if resp.header.correlation_id != self._corr:
            raise ValueError(f"correlation id {resp.header.correlation_id} != {self._corr}")
        return resp

    # SASL, by hand (kproto framing, non-flexible versions)
    def sasl_handshake(self, mechanism: str, version: int = 1) -> tuple[int, list]:
        r = self.request(SASL_HANDSHAKE, version, kproto.string(mechanism))
        err = r.i16()
        return err, r.array(lambda rr: rr.string())

    def sasl_authenticate(self, token: bytes, version: int = 1) -> tuple[int, Optional[str], bytes]:
        if version not in (0, 1):
            raise ValueError("SaslAuthenticate v0/v1 only (v2 is flexible)")
        r = self.request(SASL_AUTHENTICATE, version, kproto.kbytes(token))
        err, msg, data = r.i16(), r.string(), r.bytes() or b""
        if version >= 1:
            r.i64()  # session_lifetime_ms
        return err, msg, data

    def login(self, mechanism: str, user: str, password: str, version: int = 1, forge_proof: bool = False):
        """SaslHandshake v1 + SaslAuthenticate; raises LoginRefused with the broker's
        error code on a refusal."""
        err, mechs = self.sasl_handshake(mechanism)
        if err:
            raise LoginRefused(f"SaslHandshake({mechanism}) offered {mechs}", err, None)
        if mechanism == "PLAIN":
            err, msg, _ = self.sasl_authenticate(f"\0{user}\0{password}".encode(), version)
            if err:
                raise LoginRefused("SaslAuthenticate(PLAIN)", err, msg)
            return
        sc = ScramClient(mechanism, user, password)
        err, msg, server_first = self.sasl_authenticate(sc.first(), version)
        if err:
            raise LoginRefused("SaslAuthenticate(client-first)", err, msg)
        err, msg, server_final = self.sasl_authenticate(sc.final(server_first, forge_proof), version)
        if err:
            raise LoginRefused("SaslAuthenticate(client-final)", err, msg)
        if not sc.check_server_final(server_final):
            raise AssertionError(f"server-final {server_final!r} does not prove the server knows the key")


def connect(addr: str, mechanism: Optional[str] = None, user: Optional[str] = None,
            password: Optional[str] = None, tls: Optional[ssl.SSLContext] = None,
            timeout: float = 10.0) -> KConn:
    """A connection, logged in when a mechanism is given."""
    c = KConn(addr, tls=tls, timeout=timeout)
    if mechanism:
        try:
            c.login(mechanism, user, password)
        except BaseException:
            c.close()
            raise
    return c


def peer_closed(conn: kproto.Conn, timeout: float = 10.0) -> bool:
    """True once the broker has closed the connection (EOF, reset or TLS alert)."""
    try:
        conn.wait_closed(timeout)
        return True
    except TimeoutError:
        return False
    except (ssl.SSLError, OSError):
        return True


def kerror_name(code: int) -> str:
    try:
        from kafka.errors import for_code
        return f"{for_code(code).__name__}({code})"
    except Exception:
        return str(code)


