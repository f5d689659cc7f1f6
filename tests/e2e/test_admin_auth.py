"""The admin API behind `admin.authentication = "basic"`: SCRAM users' names and
passwords, then the Kafka listeners' ACLs; `/health` stays open."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from harness import quiver_bin
from test_tenants import cli, secured_broker


def call(broker, method, path, user=None, password=None, body=None):
    """(status, headers, parsed JSON or text) of one admin API request."""
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://{broker.admin}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, head, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, e.headers, e.read()
    try:
        return status, head, json.loads(raw)
    except ValueError:
        return status, head, raw.decode(errors="replace")


@pytest.mark.timeout(120)
def test_basic_authentication_and_acls_guard_the_admin_api(broker_factory):
    # Users and the reader's ACL are made while the admin API is open, as an operator
    # prepares them before turning authentication on.
    b, _ = secured_broker(broker_factory)
    cli(b, "user", "create", "admin", "--password", "pw-admin")
    cli(b, "user", "create", "reader", "--password", "pw-reader")
    cli(b, "acl", "create", "--principal", "User:reader", "--operation", "describe", "--cluster")
    b.stop()
    b.sets["admin.authentication"] = "basic"
    b.start()

    status, _, body = call(b, "GET", "/health")
    assert status == 200 and body["status"] == "ok"

    status, head, body = call(b, "GET", "/v1/cluster")
    assert (status, body["error"]) == (401, "unauthenticated"), body
    assert "QUIVER_ADMIN_USER" in body["message"]
    assert head["WWW-Authenticate"].startswith("Basic realm=\"quiver\"")
    status, _, body = call(b, "GET", "/", )
    assert status == 401  # the console: the browser asks for the user

    status, _, body = call(b, "GET", "/v1/cluster", "reader", "wrong")
    assert (status, body["error"], body["message"]) == (401, "unauthenticated", "unknown user or wrong password")
    status, _, body = call(b, "GET", "/v1/cluster", "nobody", "pw")
    assert (status, body["message"]) == (401, "unknown user or wrong password")

    # The reader may describe, nothing more.
    status, _, body = call(b, "GET", "/v1/topics", "reader", "pw-reader")
    assert status == 200 and any(t["name"] == "__consumer_offsets" for t in body["topics"])
    status, _, body = call(b, "POST", "/v1/topics", "reader", "pw-reader", {"name": "guarded", "partitions": 1})
    assert (status, body["error"]) == (403, "forbidden"), body
    assert "User:reader may not CREATE" in body["message"], body
    status, _, body = call(b, "PUT", "/v1/quotas/policy", "reader", "pw-reader", {})
    assert (status, body["error"]) == (403, "forbidden"), body

    # The super user may do everything.
    status, _, body = call(b, "POST", "/v1/topics", "admin", "pw-admin", {"name": "guarded", "partitions": 1})
    assert status == 201, body
    status, _, body = call(b, "DELETE", "/v1/topics/guarded", "reader", "pw-reader")
    assert status == 403, body

    # The CLI sends the user from its environment.
    env = {**os.environ, "QUIVER_ADMIN_USER": "admin", "QUIVER_ADMIN_PASSWORD": "pw-admin"}
    ok = subprocess.run([quiver_bin(), "tenant", "list", "--admin", b.admin], env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bare = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_ADMIN_")}
    refused = subprocess.run([quiver_bin(), "tenant", "list", "--admin", b.admin], env=bare,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "unauthenticated" in refused.stderr and "QUIVER_ADMIN_USER" in refused.stderr, refused.stderr


@pytest.mark.timeout(120)
def test_the_admin_api_over_https_with_basic_authentication(broker_factory, tmp_path):
    """`admin.tls = true`: the admin API speaks only HTTPS, with the Kafka TLS
    listeners' certificate; clients that trust its CA get answers (Basic credentials
    inside TLS), plain HTTP gets none, and the CLI needs `https://` and the CA."""
    import ssl
    import socket
    from securitykit import make_certs, tls_context

    certs = make_certs(tmp_path / "certs")
    b, _ = secured_broker(broker_factory)
    cli(b, "user", "create", "admin", "--password", "pw-admin")
    b.stop()
    b.sets.update({"admin.tls": "true", "admin.authentication": "basic",
                   "security.tls.cert_file": certs.server_cert, "security.tls.key_file": certs.server_key})
    b.start()
    url = f"https://{b.admin}"
    auth = {"Authorization": "Basic " + base64.b64encode(b"admin:pw-admin").decode()}

    def get(path, context, headers=None):
        req = urllib.request.Request(url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    trusted = tls_context(certs.ca)
    status, body = get("/v1/cluster", trusted, auth)
    assert status == 200 and body["brokers"], body
    status, body = get("/v1/cluster", trusted)
    assert (status, body["error"]) == (401, "unauthenticated"), body
    assert get("/health", trusted)[0] == 200

    # A client that does not trust the CA refuses the certificate.
    with pytest.raises(urllib.error.URLError) as refused:
        get("/health", ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value), refused.value
    # Plain HTTP gets no HTTP answer: the broker waits for a TLS ClientHello and drops
    # what is not one.
    host, port = b.admin.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert not answer.startswith(b"HTTP/"), answer

    # The CLI: https:// and the CA in QUIVER_ADMIN_CA.
    env = {**os.environ, "QUIVER_ADMIN_USER": "admin", "QUIVER_ADMIN_PASSWORD": "pw-admin",
           "QUIVER_ADMIN_CA": certs.ca}
    run = lambda *args, env=env: subprocess.run([quiver_bin(), *args], capture_output=True, text=True,
                                                timeout=30, env=env)
    ok = run("cluster", "status", "--admin", url, "--output", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["brokers"], ok.stdout
    no_ca = run("cluster", "status", "--admin", url, env={k: v for k, v in env.items() if k != "QUIVER_ADMIN_CA"})
    assert no_ca.returncode != 0
    assert "is HTTPS, and no CA to check its certificate against" in no_ca.stderr, no_ca.stderr
    assert "QUIVER_ADMIN_CA" in no_ca.stderr
    other = make_certs(tmp_path / "other")
    wrong_ca = run("cluster", "status", "--admin", url, env={**env, "QUIVER_ADMIN_CA": other.ca})
    assert wrong_ca.returncode != 0 and f"TLS with the admin API at {url} failed" in wrong_ca.stderr, wrong_ca.stderr


def test_admin_tls_needs_a_certificate(broker_factory):
    """A broker told to serve the admin API over TLS without a certificate refuses to
    start, naming the settings it needs."""
    b = broker_factory(sets={"admin.tls": "true"}, start=False)
    proc = b.spawn()
    assert proc.wait(timeout=30) != 0
    err = b.stderr_text()
    assert "admin.tls = true needs security.tls.cert_file and security.tls.key_file" in err, err
