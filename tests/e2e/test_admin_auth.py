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
