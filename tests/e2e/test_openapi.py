"""The admin API's OpenAPI document (`GET /v1/openapi.json`, the file
host/src/admin/openapi.json embedded in the binary) against the broker itself.

1. The document is valid OpenAPI 3.1 and written to a few house rules (every
   operation has an id, a tag, a summary and a description; every JSON error answer
   is the shared `Error` schema).
2. Its (method, path) pairs are exactly the routes of `router` in
   host/src/admin/mod.rs, read from the source, so a route added without
   documentation (or documentation of a route that is gone) fails here.
3. Against two real brokers (a mirror needs a source cluster), every documented
   operation is exercised with what it needs set up first (topics, records, plugins
   of each kind, a transform, a consumer group, a mirror with a checkpoint, users,
   ACLs, quotas, a quota policy, a tenant), both on its successful path and on the
   error answers a client can provoke. Each answer must have a status the document
   lists for the operation, a documented content type, and a body valid against the
   documented schema (OpenAPI 3.1 dialect, $refs resolved in the document); the
   request bodies and query parameters of requests meant to succeed must be valid
   against the documented request too. Every operation must have answered
   successfully at least once.

Schema failures are collected and reported together, each naming the operation
(`GET /v1/topics/{topic}`), the status and the validation error; an answer whose
status is not the one a step needs to go on fails at once."""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import Optional

import pytest
from confluent_kafka import Consumer, TopicPartition
from jsonschema.exceptions import best_match
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from openapi_spec_validator import validate as validate_spec

from harness import wait_until
from plugins_kit import NATIVE_MURMUR2, AdminApi, native_murmur2_path, plugins_dir, wasm_path

REPO = Path(__file__).resolve().parents[2]
DOC_FILE = REPO / "host" / "src" / "admin" / "openapi.json"
ROUTER_FILE = REPO / "host" / "src" / "admin" / "mod.rs"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Large enough for every plugin this test deploys (the mirror connector is ~3 MB), small
# enough that a body over it is cheap to send.
MAX_BODY = 4 * 1024 * 1024


def load_doc() -> dict:
    return json.loads(DOC_FILE.read_text())


def operations(doc: dict) -> dict:
    """{(METHOD, path): operation} of the document."""
    return {(m.upper(), p): o for p, item in doc["paths"].items() for m, o in item.items() if m in METHODS}


# --- 1. the document itself -----------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    doc = load_doc()
    assert doc["openapi"].startswith("3.1"), doc["openapi"]
    validate_spec(doc)
    problems = []
    ids = defaultdict(list)
    error_ref = {"$ref": "#/components/schemas/Error"}
    for (method, path), o in operations(doc).items():
        name = f"{method} {path}"
        ids[o.get("operationId")].append(name)
        for field in ("operationId", "summary", "description", "tags"):
            if not o.get(field):
                problems.append(f"{name}: no {field}")
        for status, r in o["responses"].items():
            if not re.fullmatch(r"[1-5]\d\d", status):
                problems.append(f"{name}: response key {status!r} is not a status code")
                continue
            json_content = r.get("content", {}).get("application/json")
            if status[0] in "45" and json_content is not None and json_content.get("schema") != error_ref:
                problems.append(f"{name} {status}: a JSON error answer must use the Error schema")
            if status[0] in "45" and set(r.get("content", {})) != {"application/json"}:
                problems.append(f"{name} {status}: an error answer must be JSON (the Error schema) only, "
                                f"not {sorted(r.get('content', {}))}")
            if status == "204" and r.get("content"):
                problems.append(f"{name} 204: has content")
        if not any(s.startswith("2") for s in o["responses"]):
            problems.append(f"{name}: documents no successful answer")
    for op_id, names in ids.items():
        if op_id and len(names) > 1:
            problems.append(f"operationId {op_id} is used by {names}")
    # every schema is a valid 3.1 schema with resolvable references
    for name, schema in doc["components"]["schemas"].items():
        try:
            OAS31Validator.check_schema(schema)
        except Exception as e:  # noqa: BLE001 - reported with the schema's name
            problems.append(f"components/schemas/{name}: {e}")
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    missing = refs - set(doc["components"]["schemas"])
    if missing:
        problems.append(f"$refs to missing schemas: {sorted(missing)}")
    assert not problems, "the OpenAPI document:\n" + "\n".join(problems)


# --- 2. the document against the router ------------------------------------------------------


def router_routes(source: str) -> set:
    """(METHOD, path) of every `.route("path", get(..).post(..))` in `fn router`."""
    m = re.search(r"pub fn router\b.*?\n}\n", source, re.S)
    assert m, "no `pub fn router` in host/src/admin/mod.rs"
    body = m.group(0)
    for other in (".nest(", ".nest_service(", ".merge(", ".route_service(", ".fallback("):
        assert other not in body, (f"`router` uses `{other}`: teach test_openapi.py's route parser about it "
                                   f"so the document can be checked against every route")
    routes = set()
    starts = list(re.finditer(r'\.route\(\s*"([^"]+)"\s*,', body))
    assert starts, "no .route(...) calls found in `router`"
    for start in starts:
        depth, i = 1, start.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(body[i], 0)
            i += 1
        handlers = body[start.end():i - 1]
        methods = re.findall(r"(?<![\w])(get|post|put|delete|patch|head|options|trace)\s*\(", handlers)
        assert methods, f"route {start.group(1)}: no method found in {handlers.strip()!r}"
        routes |= {(verb.upper(), start.group(1)) for verb in methods}
    return routes


def test_the_document_describes_exactly_the_routes_of_the_router():
    routes = router_routes(ROUTER_FILE.read_text())
    documented = set(operations(load_doc()))
    undocumented = sorted(routes - documented)
    stale = sorted(documented - routes)
    assert not undocumented and not stale, (
        f"host/src/admin/openapi.json and `router` in host/src/admin/mod.rs disagree:\n"
        f"  routes without documentation: {undocumented}\n"
        f"  documented operations without a route: {stale}")


# --- 3. every operation against a running broker ----------------------------------------------


class Answer:
    def __init__(self, status: int, content_type: str, raw: bytes):
        self.status, self.content_type, self.raw = status, content_type, raw
        self.body = None
        if raw and content_type.split(";")[0].strip().lower() == "application/json":
            try:
                self.body = json.loads(raw)
            except ValueError:
                pass

    def __repr__(self):
        return f"{self.status} {self.content_type} {self.raw[:600]!r}"


class Conformance:
    """Sends requests to one broker's admin API and checks each answer against the
    document: status listed for the operation, content type documented, body valid."""

    def __init__(self, doc: dict, address: str):
        self.doc = doc
        self.ops = operations(doc)
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.validators: dict = {}
        self.problems: list = []
        self.answered = defaultdict(set)  # (METHOD, path) -> statuses seen

    def validator(self, schema: dict) -> OAS31Validator:
        key = json.dumps(schema, sort_keys=True)
        v = self.validators.get(key)
        if v is None:
            # the schema as the root, with the document's components beside it, so
            # "#/components/schemas/..." resolves
            root = {**schema, "components": self.doc["components"]}
            v = self.validators[key] = OAS31Validator(root, format_checker=oas31_format_checker)
        return v

    def schema_error(self, instance, schema: dict) -> Optional[str]:
        error = best_match(self.validator(schema).iter_errors(instance))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(the body)"
        return f"at {where}: {error.message}"

    def send(self, method: str, path: str, body: Optional[bytes], headers: dict) -> Answer:
        c = http.client.HTTPConnection(self.host, self.port, timeout=90)
        try:
            try:
                c.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                # the server answered (a body over the limit) and closed before taking
                # the whole body: its answer is still there to read
                pass
            r = c.getresponse()
            return Answer(r.status, r.getheader("Content-Type") or "", r.read())
        finally:
            c.close()

    def call(self, method: str, template: str, params: Optional[dict] = None, query=None,
             json_body=None, raw: Optional[bytes] = None, content_type: Optional[str] = None,
             expect: Optional[int] = None, valid_request: Optional[bool] = None) -> Answer:
        """One request to the operation (method, template). `query`: dict or list of
        pairs; `json_body`: sent as JSON; `raw`: sent as is with `content_type`.
        `expect`: the status this step needs (else the test stops here).
        `valid_request` (default: whether `expect` is 2xx): the request must be valid
        against the documented parameters and request body."""
        name = f"{method} {template}"
        op = self.ops.get((method, template))
        assert op is not None, f"{name} is not documented, yet the test calls it"
        path = template
        for k, v in (params or {}).items():
            path = path.replace("{" + k + "}", urllib.parse.quote(v, safe=""))
        pairs = list(query.items()) if isinstance(query, dict) else list(query or [])
        if pairs:
            path += "?" + urllib.parse.urlencode(pairs)
        headers = {}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            body = raw
            if content_type:
                headers["Content-Type"] = content_type
        if valid_request is None:
            valid_request = expect is not None and 200 <= expect < 300
        if valid_request:
            self.check_request(name, op, pairs, json_body, raw is not None)

        answer = self.send(method, path, body, headers)
        self.answered[(method, template)].add(answer.status)
        self.check_answer(name, op, answer)
        if expect is not None and answer.status != expect:
            earlier = ("\nearlier disagreements with the document:\n" + "\n".join(self.problems)
                       if self.problems else "")
            pytest.fail(f"{name} ({method} {path}): this step needs {expect}, answered {answer!r}{earlier}",
                        pytrace=False)
        return answer

    def check_request(self, name: str, op: dict, pairs: list, json_body, has_raw: bool):
        documented = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        for k, v in pairs:
            if k not in documented:
                self.problems.append(f"{name}: the test sends query parameter {k!r}, which the document does not list")
                continue
            schema = documented[k]["schema"]
            if schema.get("type") == "array":  # a repeated (form, exploded) parameter: one item
                schema = schema["items"]
            value = v
            if schema.get("type") == "integer":
                try:
                    value = int(v)
                except ValueError:
                    pass
            error = self.schema_error(value, schema)
            if error:
                self.problems.append(f"{name}: query parameter {k}={v!r} of a request meant to succeed does not "
                                     f"match its documented schema: {error}")
        for p in documented.values():
            if p.get("required") and p["name"] not in dict(pairs):
                self.problems.append(f"{name}: the required query parameter {p['name']!r} is not sent, "
                                     f"yet the request is meant to succeed")
        rb = op.get("requestBody")
        if json_body is not None:
            media = (rb or {}).get("content", {}).get("application/json")
            if media is None:
                self.problems.append(f"{name}: a JSON request body is not documented")
            else:
                error = self.schema_error(json_body, media["schema"])
                if error:
                    self.problems.append(f"{name}: a request meant to succeed does not match the documented "
                                         f"request body {error}\n    request: {json.dumps(json_body)[:400]}")
        elif has_raw and not rb:
            self.problems.append(f"{name}: a request body is not documented")
        elif rb and rb.get("required") and not has_raw:
            self.problems.append(f"{name}: the documented request body is required, yet a request meant to succeed has none")

    def check_answer(self, name: str, op: dict, answer: Answer):
        if answer.status >= 400 and not (isinstance(answer.body, dict) and
                                         isinstance(answer.body.get("error"), str) and
                                         isinstance(answer.body.get("message"), str)):
            self.problems.append(f"{name}: an error answer that is not the JSON "
                                 f"{{\"error\": code, \"message\": ...}}: {answer!r}")
        responses = op["responses"]
        documented = responses.get(str(answer.status))
        if documented is None:
            self.problems.append(f"{name}: answered {answer.status}, which the document does not list "
                                 f"(it lists {sorted(responses)}): {answer!r}")
            return
        content = documented.get("content") or {}
        if not content:
            if answer.raw:
                self.problems.append(f"{name} {answer.status}: documented without a body, answered {answer!r}")
            return
        media = answer.content_type.split(";")[0].strip().lower()
        entry = content.get(media)
        if entry is None:
            self.problems.append(f"{name} {answer.status}: content type {answer.content_type!r} is not one of "
                                 f"the documented {sorted(content)}: {answer!r}")
            return
        if media == "application/json":
            if answer.body is None:
                self.problems.append(f"{name} {answer.status}: the body is not JSON: {answer!r}")
                return
            instance = answer.body
        else:
            try:
                instance = answer.raw.decode()
            except UnicodeDecodeError:
                self.problems.append(f"{name} {answer.status}: a {media} body that is not UTF-8")
                return
        error = self.schema_error(instance, entry["schema"])
        if error:
            self.problems.append(f"{name} {answer.status}: the body does not match the documented schema "
                                 f"{error}\n    body: {answer.raw[:600]!r}")

    def finish(self):
        """Every documented operation answered successfully at least once, and every
        answer matched the document."""
        for key in self.ops:
            statuses = self.answered.get(key, set())
            if not statuses:
                self.problems.append(f"{key[0]} {key[1]}: the test never exercised it")
            elif not any(200 <= s < 300 for s in statuses):
                self.problems.append(f"{key[0]} {key[1]}: never answered successfully (saw {sorted(statuses)})")
        assert not self.problems, (f"{len(self.problems)} answer(s) of the admin API disagree with "
                                   f"host/src/admin/openapi.json:\n" + "\n".join(self.problems))


def refused(answer: Answer, code: str, *message_parts: str):
    """An error answer with `code` whose message contains each of `message_parts`."""
    assert answer.body and answer.body.get("error") == code, (code, answer)
    for part in message_parts:
        assert part in answer.body["message"], (part, answer)


def transform_status_agrees(body: dict):
    """`status` says what the partitions say (the document's rule for it)."""
    states = [p["state"] for p in body["partitions"]]
    assert "paused" not in states or body["paused"], f"a running transform's partition says paused: {body}"
    if body["paused"]:
        want = "paused"
    elif not states:
        want = "not_running_here"
    else:
        want = next((s for s in ("failed", "stopped", "waiting", "starting") if s in states), "running")
    assert body["status"] == want, (want, body)


def wasm(plugin: str) -> bytes:
    return wasm_path(plugin).read_bytes()


def tiers_wasm() -> bytes:
    """The `tiers` quota policy (plugins_kit.WASM lists no quota policies)."""
    p = plugins_dir() / "quiver_plugin_tiers.wasm"
    if not p.is_file():
        pytest.fail(f"plugin tiers not built: {p} is missing; run `bash plugins/build.sh`", pytrace=False)
    return p.read_bytes()


def commit_at(bootstrap: str, group: str, topic: str, offsets: dict):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


@pytest.mark.timeout(240)
def test_every_operation_answers_as_documented(broker_factory, tmp_path):
    doc = load_doc()
    sets = {"group.initial_rebalance_delay_ms": "0", "admin.max_body_bytes": str(MAX_BODY)}
    native_dir = tmp_path / "native"
    native_dir.mkdir()
    shutil.copy(native_murmur2_path(), native_dir / NATIVE_MURMUR2)
    target = broker_factory(sets={**sets, "cluster.id": "openapi-target", "plugins.native.enabled": "true",
                                  "plugins.native.dirs": json.dumps([str(native_dir)])}, start=False)
    source = broker_factory(sets={**sets, "cluster.id": "openapi-source"}, start=False)
    for b in (target, source):
        b.spawn()
    for b in (target, source):
        b.wait_ready()
    api = Conformance(doc, target.admin)
    S, T = "/v1/topics", "/v1/topics/{topic}"

    # --- the document, served -------------------------------------------------------------
    served = api.call("GET", "/v1/openapi.json", expect=200)
    assert served.raw == DOC_FILE.read_bytes(), (
        "GET /v1/openapi.json serves another document than host/src/admin/openapi.json: rebuild the "
        "binary (the file is embedded with include_str!)")
    api.call("GET", "/health", expect=200)
    api.call("GET", "/v1/cluster", expect=200)
    api.call("GET", "/metrics", expect=200)
    # A fresh broker: no groups, and its coordinator may still be loading; any documented
    # answer will do.
    api.call("GET", "/v1/groups")
    api.call("GET", "/v1/groups/{group}", {"group": "nobody"})

    # --- the mirror's source, set up first so its checkpoint is ready when needed -------------
    src = AdminApi(source.admin)
    r = src.request("POST", S, json.dumps({"name": "events", "partitions": 2}).encode(),
                    {"Content-Type": "application/json"})
    assert r.status == 201, r
    r = src.produce("events", [{"key": f"k{i}", "value": f"v{i}", "partition": i % 2} for i in range(40)])
    assert r.status == 200, r
    commit_at(source.bootstrap, "billing", "events", {0: 5, 1: 7})

    # --- plugins ------------------------------------------------------------------------------------
    P, PN = "/v1/plugins", "/v1/plugins/{name}"
    murmur2 = wasm("murmur2")
    deployed = api.call("PUT", PN, {"name": "murmur2"}, query={"kind": "partitioner"}, raw=murmur2,
                        content_type="application/wasm", expect=201)
    assert deployed.body["version"] == 1, deployed
    api.call("PUT", PN, {"name": "murmur2"},
             query=[("kind", "partitioner"), ("max_memory_bytes", "33554432"), ("call_timeout_ms", "500"),
                    ("max_output_bytes", "1048576")],
             raw=murmur2, content_type="application/wasm", expect=201)
    api.call("PUT", PN, {"name": "filter"}, query={"kind": "transform"}, raw=wasm("filter"),
             content_type="application/wasm", expect=201)
    api.call("PUT", PN, {"name": "mirror"}, query={"kind": "connector"}, raw=wasm("mirror"),
             content_type="application/octet-stream", expect=201)
    api.call("PUT", PN, {"name": "tiers"},
             query=[("kind", "quota-policy"), ("config", "tier.gold.producer_byte_rate=100000000"),
                    ("config", "default=gold")],
             raw=tiers_wasm(), content_type="application/wasm", expect=201)
    api.call("PUT", PN, {"name": "murmur2"}, raw=murmur2, content_type="application/wasm", expect=400)
    api.call("PUT", PN, {"name": "murmur2"}, query={"kind": "sorter"}, raw=murmur2, expect=422)
    api.call("PUT", PN, {"name": "murmur2"}, query={"kind": "partitioner"}, raw=b"", expect=400)
    api.call("PUT", PN, {"name": "murmur2"}, query={"kind": "partitioner", "colour": "red"}, raw=murmur2,
             expect=400)
    api.call("PUT", PN, {"name": "murmur2"}, query={"kind": "partitioner", "config": "novalue"}, raw=murmur2,
             expect=400)
    api.call("PUT", PN, {"name": "NotLowercase"}, query={"kind": "partitioner"}, raw=murmur2, expect=400)
    api.call("PUT", PN, {"name": "junk"}, query={"kind": "partitioner"}, raw=b"\0asm not really", expect=422)
    api.call("PUT", PN, {"name": "murmur2"}, query={"kind": "transform"}, raw=murmur2, expect=422)
    api.call("PUT", PN, {"name": "native"}, query={"kind": "partitioner", "native": NATIVE_MURMUR2}, expect=201)
    api.call("PUT", PN, {"name": "native"}, query={"kind": "partitioner", "native": "../elsewhere.so"}, expect=403)
    # a partitioner that traps on every call: produce fails, and after plugins.max_traps
    # (3) traps it is marked failed
    api.call("PUT", PN, {"name": "crashy"}, query={"kind": "partitioner"}, raw=wasm("panic"), expect=201)
    big = api.call("PUT", PN, {"name": "big"}, query={"kind": "partitioner"}, raw=b"\0" * (MAX_BODY + 1),
                   expect=413)
    refused(big, "payload_too_large", f"admin.max_body_bytes ({MAX_BODY} bytes)")
    api.call("GET", P, expect=200)
    api.call("GET", PN, {"name": "murmur2"}, expect=200)
    api.call("GET", PN, {"name": "nope"}, expect=404)
    api.call("GET", PN + "/logs", {"name": "murmur2"}, query={"lines": "5"}, expect=200)
    api.call("GET", PN + "/logs", {"name": "murmur2"}, query={"lines": "many"}, expect=400)
    api.call("GET", PN + "/logs", {"name": "nope"}, expect=404)
    api.call("POST", PN + "/rollback", {"name": "murmur2"}, expect=200)
    api.call("POST", PN + "/rollback", {"name": "murmur2"}, expect=409)
    api.call("POST", PN + "/rollback", {"name": "nope"}, expect=404)
    api.call("DELETE", PN, {"name": "nope"}, expect=404)

    # --- the mirror, started early: it copies and checkpoints while the rest runs ------------------
    M, MN = "/v1/mirrors", "/v1/mirrors/{name}"
    mirror = {"name": "east", "source": source.bootstrap, "source_alias": "east", "topics": "events",
              "groups": "billing", "discovery_interval_ms": 200, "checkpoint_interval_ms": 200,
              "exclude_configs": ["retention.ms"], "config": {}}
    api.call("POST", M, json_body=mirror, expect=201)
    api.call("POST", M, json_body=mirror, expect=409)
    api.call("POST", M, json_body={**mirror, "name": "bad", "via": "quic"}, expect=400)
    api.call("POST", M, json_body={**mirror, "name": "bad", "colour": "red"}, expect=400)
    api.call("POST", M, json_body={**mirror, "name": "bad", "plugin": "murmur2"}, expect=422)
    api.call("POST", M, json_body={**mirror, "name": "bad", "plugin": "nope"}, expect=404)
    api.call("POST", M, raw=b"{", content_type="application/json", expect=400)

    # --- topics --------------------------------------------------------------------------------------
    api.call("POST", S, json_body={"name": "orders", "partitions": 3, "replication_factor": 1,
                                   "configs": {"retention.ms": "3600000"}}, expect=201)
    api.call("POST", S, json_body={"name": "keyed", "partitions": 4, "configs": {"partitioner": "murmur2"}},
             expect=201)
    api.call("POST", S, json_body={"name": "audit"}, expect=201)
    api.call("POST", S, json_body={"name": "small", "configs": {"max.message.bytes": "1024"}}, expect=201)
    api.call("POST", S, json_body={"name": "orders"}, expect=409)
    api.call("POST", S, json_body={"name": "bad/name"}, expect=422)
    api.call("POST", S, json_body={"name": "x", "colour": "red"}, expect=400)
    api.call("POST", S, raw=b"not json", content_type="application/json", expect=400)
    refused(api.call("POST", S, raw=b'{"name": "y"}', expect=415), "unsupported_media_type",  # no Content-Type
            "Content-Type: application/json")
    refused(api.call("POST", S, raw=b'{"name": "' + b"y" * (MAX_BODY + 1) + b'"}', content_type="application/json",
                     expect=413), "payload_too_large")
    api.call("GET", S, expect=200)
    api.call("GET", T, {"topic": "orders"}, expect=200)
    api.call("GET", T, {"topic": "nope"}, expect=404)

    # --- produce -------------------------------------------------------------------------------------
    R = "/v1/topics/{topic}/records"
    records = [
        {"key": "k1", "value": "v1", "headers": {"h": "1", "bin": {"base64": "AAEC"}}, "partition": 0,
         "timestamp": 1_700_000_000_000},
        {"key": {"base64": base64.b64encode(b"\xff\xfe").decode()}, "value": None, "headers": [["a", "x"], ["b", None]]},
        {"value": "no key"},
    ]
    produced = api.call("POST", R, {"topic": "orders"}, json_body={"records": records}, expect=200)
    assert len(produced.body["offsets"]) == 3, produced
    api.call("POST", R, {"topic": "orders"}, query={"encoding": "base64", "acks": "1"},
             json_body={"records": [{"key": base64.b64encode(b"k").decode(), "value": base64.b64encode(b"v").decode()}]},
             expect=200)
    api.call("POST", R, {"topic": "orders"}, query={"key": "raw-key", "partition": "2"}, raw=b"a raw value",
             content_type="text/plain", expect=200)
    api.call("POST", R, {"topic": "orders"}, query={"acks": "0"}, json_body={"records": [{"value": "fire"}]},
             expect=202)
    api.call("POST", R, {"topic": "keyed"}, json_body={"records": [{"key": f"user-{i}", "value": "x"}
                                                                   for i in range(20)]}, expect=200)
    api.call("POST", S, json_body={"name": "fragile", "configs": {"partitioner": "crashy"}}, expect=201)
    for _ in range(3):
        api.call("POST", R, {"topic": "fragile"}, json_body={"records": [{"key": "k", "value": "x"}]}, expect=503)
    crashy = api.call("GET", PN, {"name": "crashy"}, expect=200)
    assert crashy.body["status"]["state"] == "failed", crashy
    api.call("GET", PN + "/logs", {"name": "crashy"}, expect=200)
    api.call("GET", P, expect=200)  # a failed plugin and a native one among them
    api.call("DELETE", T, {"topic": "fragile"}, expect=204)
    api.call("DELETE", PN, {"name": "crashy"}, expect=204)
    api.call("DELETE", PN, {"name": "native"}, expect=204)
    api.call("POST", R, {"topic": "nope"}, json_body={"records": [{"value": "x"}]}, expect=404)
    api.call("POST", R, {"topic": "orders"}, raw=b"{", content_type="application/json", expect=400)
    api.call("POST", R, {"topic": "orders"}, json_body={"records": []}, expect=400)
    api.call("POST", R, {"topic": "orders"}, json_body={"records": [{"value": "x", "partition": 99}]}, expect=400)
    api.call("POST", R, {"topic": "orders"}, json_body={"records": [{"value": "x", "colour": "red"}]}, expect=400)
    api.call("POST", R, {"topic": "orders"}, query={"acks": "2"}, json_body={"records": [{"value": "x"}]},
             expect=400)
    api.call("POST", R, {"topic": "small"}, json_body={"records": [{"value": "x" * 4096}]}, expect=413)
    refused(api.call("POST", R, {"topic": "orders"}, raw=b"x" * (MAX_BODY + 1),
                     content_type="application/octet-stream", expect=413), "payload_too_large")
    # ?key= and ?partition= are for a raw body; with JSON they are refused, not ignored
    ends = api.call("GET", T, {"topic": "orders"}, expect=200).body["partition_details"]
    for query in ({"partition": "5"}, {"key": "k"}, {"key": "k", "partition": "0"}):
        refused(api.call("POST", R, {"topic": "orders"}, query=query, json_body={"records": [{"value": "x"}]},
                         expect=400), "bad_request", "only to a raw body", "carries its own")
    again = api.call("GET", T, {"topic": "orders"}, expect=200).body["partition_details"]
    assert [p["log_end_offset"] for p in again] == [p["log_end_offset"] for p in ends], "a refused produce wrote"

    # --- transforms -----------------------------------------------------------------------------------
    X, XN = "/v1/transforms", "/v1/transforms/{name}"
    transform = {"name": "tiered", "plugin": "filter", "input": "orders", "outputs": ["audit"],
                 "config": {"header": "h", "exists": "true"}, "from": "earliest", "deterministic": True,
                 "max_amplification": 10}
    transform_status_agrees(api.call("POST", X, json_body=transform, expect=201).body)
    api.call("POST", X, json_body=transform, expect=409)
    api.call("POST", X, json_body={**transform, "name": "t2", "plugin": "murmur2"}, expect=422)
    api.call("POST", X, json_body={**transform, "name": "t2", "plugin": "nope"}, expect=404)
    api.call("POST", X, json_body={**transform, "name": "t2", "input": "missing"}, expect=404)
    api.call("POST", X, json_body={**transform, "name": "t2", "outputs": ["orders"]}, expect=400)
    refused(api.call("POST", X, json_body={**transform, "name": "t2", "colour": "red"}, expect=400),
            "invalid_transform", "the request body: ", "colour")
    refused(api.call("POST", X, raw=json.dumps(transform).encode(), expect=415), "unsupported_media_type")
    api.call("POST", X, json_body={**transform, "name": "t2", "config": {"header": "h", "frobnicate": "yes"}},
             expect=422)
    api.call("GET", X, expect=200)
    api.call("GET", XN, {"name": "tiered"}, expect=200)
    api.call("GET", XN, {"name": "nope"}, expect=404)
    paused = api.call("POST", XN + "/pause", {"name": "tiered"}, expect=200).body
    transform_status_agrees(paused)
    assert paused["status"] == "paused", paused
    # the answer to a resume never shows the partitions as still paused
    resumed = api.call("POST", XN + "/resume", {"name": "tiered"}, expect=200).body
    transform_status_agrees(resumed)
    assert resumed["paused"] is False and resumed["partitions"], resumed
    transform_status_agrees(api.call("GET", XN, {"name": "tiered"}, expect=200).body)
    api.call("POST", XN + "/pause", {"name": "nope"}, expect=404)
    api.call("POST", XN + "/resume", {"name": "nope"}, expect=404)
    api.call("DELETE", PN, {"name": "filter"}, expect=409)  # a transform runs it
    api.call("DELETE", PN, {"name": "murmur2"}, expect=409)  # topic `keyed` names it

    # --- quota policy, then Kafka traffic the policy meters: a consumer group --------------------------
    Q = "/v1/quotas"
    api.call("PUT", Q + "/policy", json_body={"plugin": "tiers"}, expect=200)
    api.call("PUT", Q + "/policy", json_body={"plugin": "murmur2"}, expect=400)
    api.call("PUT", Q + "/policy", json_body={"tenant": "nope", "plugin": "tiers"}, expect=404)
    api.call("PUT", Q + "/policy", json_body={"plugin": "nope"}, expect=404)
    refused(api.call("PUT", Q + "/policy", json_body={"plugin": "tiers", "colour": "red"}, expect=400),
            "bad_request", "colour")
    api.call("PUT", Q + "/policy", raw=b'{"plugin": "tiers"}', expect=415)
    api.call("PUT", Q + "/policy", raw=b"{", content_type="application/json", expect=400)
    # a bound policy cannot go; the message says how to unbind it
    refused(api.call("DELETE", PN, {"name": "tiers"}, expect=409), "plugin_in_use",
            "plugin 'tiers' is the quota policy of the cluster", "`quiver quota policy clear`")

    member = Consumer({"bootstrap.servers": target.bootstrap, "group.id": "readers", "enable.auto.commit": False,
                       "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    try:
        member.subscribe(["orders"])

        def joined():
            member.poll(0.2)
            return bool(member.assignment())
        wait_until(joined, 30, "the consumer to join group readers")
        member.commit(offsets=[TopicPartition("orders", p, 1) for p in range(3)], asynchronous=False)
        groups = api.call("GET", "/v1/groups", expect=200)
        assert [g["group"] for g in groups.body["groups"]] == ["readers"], groups
        detail = api.call("GET", "/v1/groups/{group}", {"group": "readers"}, expect=200)
        assert detail.body["members"] and detail.body["offsets"], detail
    finally:
        member.close()
    api.call("GET", "/v1/groups/{group}", {"group": "nobody"}, expect=404)
    # The policy is opened when a client first needs it; give it a moment to have keys
    # (their schema is checked then), but an empty list is a documented answer too.
    deadline = time.monotonic() + 10
    while not api.call("GET", Q, expect=200).body["policies"][0]["keys"] and time.monotonic() < deadline:
        time.sleep(0.2)  # poll interval

    api.call("POST", Q, json_body={"entity": {"user": "alice"}, "set": {"producer_byte_rate": 1048576,
                                                                        "consumer_byte_rate": 2097152}},
             expect=200)
    api.call("POST", Q, json_body={"entity": {"user": "alice", "client-id": None},
                                   "set": {"request_percentage": 50}}, expect=200)
    api.call("POST", Q, json_body={"entity": {"ip": None}, "set": {"connection_creation_rate": 100}}, expect=200)
    api.call("POST", Q, json_body={"entity": {"user": "alice"}, "remove": ["consumer_byte_rate"]}, expect=200)
    api.call("POST", Q, json_body={"entity": {"user": "alice"}}, expect=400)
    api.call("POST", Q, json_body={"entity": {"planet": "mars"}, "set": {"producer_byte_rate": 1}}, expect=400)
    api.call("POST", Q, json_body={"entity": {"user": "alice"}, "set": {"producer_byte_rate": -1}}, expect=400)
    refused(api.call("POST", Q, json_body={"set": {"producer_byte_rate": 1}}, expect=400), "bad_request", "entity")
    api.call("POST", Q, raw=b'{"entity": {}}', expect=415)
    api.call("POST", Q, raw=b"[", content_type="application/json", expect=400)
    api.call("GET", Q, expect=200)

    # --- users, ACLs, logins ---------------------------------------------------------------------------
    U, UN = "/v1/users", "/v1/users/{name}"
    api.call("PUT", UN, {"name": "alice"}, json_body={"password": "alice-secret"}, expect=200)
    api.call("PUT", UN, {"name": "bob"}, json_body={"password": "bob-secret", "mechanisms": ["SCRAM-SHA-256"],
                                                    "iterations": 4096}, expect=200)
    api.call("PUT", UN, {"name": "bad,name"}, json_body={"password": "x"}, expect=400)
    api.call("PUT", UN, {"name": "carol"}, json_body={"password": ""}, expect=400)
    api.call("PUT", UN, {"name": "carol"}, json_body={"password": "x", "mechanisms": ["MD5"]}, expect=400)
    api.call("PUT", UN, {"name": "carol"}, json_body={"password": "x", "iterations": 100}, expect=400)
    refused(api.call("PUT", UN, {"name": "carol"}, json_body={"password": 5}, expect=400), "bad_request", "password")
    api.call("PUT", UN, {"name": "carol"}, raw=b"{", content_type="application/json", expect=400)
    refused(api.call("PUT", UN, {"name": "carol"}, raw=b'{"password": "x"}', expect=415), "unsupported_media_type")
    refused(api.call("PUT", UN, {"name": "carol"}, raw=b'{"password": "' + b"x" * (MAX_BODY + 1) + b'"}',
                     content_type="application/json", expect=413), "payload_too_large")
    api.call("GET", U, expect=200)
    api.call("DELETE", UN, {"name": "bob"}, expect=200)
    api.call("DELETE", UN, {"name": "bob"}, expect=404)

    A = "/v1/acls"
    acl = {"resource_type": "topic", "name": "orders", "principal": "User:alice", "operation": "read"}
    api.call("POST", A, json_body=acl, expect=200)
    api.call("POST", A, json_body=[{**acl, "operation": "describe", "pattern": "prefixed", "name": "ord"},
                                   {"resource_type": "cluster", "principal": "User:alice",
                                    "operation": "describe_configs", "permission": "deny", "host": "127.0.0.1"}],
             expect=200)
    api.call("POST", A, json_body={"resource_type": "topic", "principal": "User:alice"}, expect=400)
    api.call("POST", A, json_body={**acl, "colour": "red"}, expect=400)
    api.call("POST", A, raw=b"{", content_type="application/json", expect=400)
    api.call("POST", A, raw=json.dumps(acl).encode(), expect=415)
    api.call("GET", A, expect=200)
    api.call("GET", A, query={"resource_type": "topic", "name": "orders", "pattern": "match"}, expect=200)
    api.call("GET", A, query={"operation": "fly"}, expect=400)
    refused(api.call("GET", A, query={"colour": "red"}, expect=400), "bad_request", "colour")
    api.call("DELETE", A, expect=400)
    api.call("DELETE", A, query={"colour": "red"}, expect=400)
    api.call("DELETE", A, query={"principal": "User:alice", "resource_type": "topic"}, expect=200)
    api.call("DELETE", A, query={"all": "true"}, expect=200)
    api.call("GET", "/v1/security/logins", expect=200)

    # --- tenants -----------------------------------------------------------------------------------------
    N, NN = "/v1/tenants", "/v1/tenants/{name}"
    tenant = {"name": "acme", "prefix": "acme.", "principals": ["User:acme-ops"],
              "users": [{"name": "acme-app", "password": "pw-acme"}],
              "limits": {"max_partitions": 10, "max_retention_ms": 86_400_000}}
    api.call("POST", N, json_body=tenant, expect=200)
    # refused before any user is made: no user left behind, no password changed
    api.call("POST", N, json_body={"name": "acme", "prefix": "acme.",
                                   "users": [{"name": "acme-intruder", "password": "pw"}]}, expect=409)
    api.call("PUT", NN, {"name": "nope"}, json_body={"prefix": "nope.",
                                                      "users": [{"name": "nope-app", "password": "pw"}]},
             expect=404)
    users = [u["name"] for u in api.call("GET", U, expect=200).body["users"]]
    assert "acme-intruder" not in users and "nope-app" not in users, users
    api.call("POST", N, json_body={"prefix": "nameless."}, expect=400)
    api.call("POST", N, json_body={"name": "overlap", "prefix": "acme.sub."}, expect=400)
    refused(api.call("POST", N, json_body={"name": "x", "prefix": "x.", "limits": {"colour": 1}}, expect=400),
            "bad_request", "colour")
    api.call("POST", N, raw=b'{"name": "x", "prefix": "x."}', expect=415)
    api.call("POST", N, raw=b"{", content_type="application/json", expect=400)
    api.call("POST", S, json_body={"name": "acme.orders", "partitions": 2}, expect=201)
    api.call("POST", S, json_body={"name": "acme.huge", "partitions": 20}, expect=403)
    api.call("PUT", Q + "/policy", json_body={"tenant": "acme", "plugin": "tiers"}, expect=200)
    api.call("GET", N, expect=200)
    api.call("GET", NN, {"name": "acme"}, expect=200)
    api.call("GET", NN, {"name": "nope"}, expect=404)
    api.call("PUT", NN, {"name": "acme"}, json_body={"prefix": "acme.", "principals": ["User:acme-ops"],
                                                      "limits": {"max_partitions": 20, "max_connections": 5}},
             expect=200)
    api.call("PUT", NN, {"name": "acme"}, json_body={"name": "renamed", "prefix": "acme."}, expect=400)
    api.call("PUT", NN, {"name": "nope"}, json_body={"prefix": "nope."}, expect=404)
    api.call("PUT", NN, {"name": "acme"}, json_body={"prefix": 1}, expect=400)
    api.call("PUT", NN, {"name": "acme"}, raw=b'{"prefix": "acme."}', expect=415)
    api.call("DELETE", NN, {"name": "acme"}, expect=200)
    api.call("DELETE", NN, {"name": "acme"}, expect=404)

    # --- the mirror: checkpoints, failover, pause, resume ---------------------------------------------
    def checkpointed():
        got = api.call("GET", MN + "/checkpoints", {"name": "east"})
        return got.status == 200 and got.body["groups"].get("billing")
    wait_until(checkpointed, 60, "a checkpoint of group billing at mirror east")
    api.call("GET", M, expect=200)
    described = api.call("GET", MN, {"name": "east"}, expect=200)
    assert described.body["status"] in ("running", "starting", "retrying"), described
    api.call("GET", MN, {"name": "nope"}, expect=404)
    api.call("GET", MN + "/checkpoints", {"name": "nope"}, expect=404)
    api.call("POST", MN + "/failover", {"name": "east"}, json_body={"group": "billing", "dry_run": True}, expect=200)
    failed_over = api.call("POST", MN + "/failover", {"name": "east"}, json_body={"group": "billing"}, expect=200)
    assert sorted((o["partition"], o["source_offset"]) for o in failed_over.body["offsets"]) == [(0, 5), (1, 7)], \
        failed_over
    api.call("POST", MN + "/failover", {"name": "east"}, json_body={"group": "nobody"}, expect=404)
    api.call("POST", MN + "/failover", {"name": "east"}, json_body={"group": 1}, expect=400)
    api.call("POST", MN + "/failover", {"name": "nope"}, json_body={"group": "billing"}, expect=404)
    api.call("POST", MN + "/pause", {"name": "east"}, expect=200)
    api.call("POST", MN + "/resume", {"name": "east"}, expect=200)
    api.call("POST", MN + "/pause", {"name": "nope"}, expect=404)
    api.call("POST", MN + "/resume", {"name": "nope"}, expect=404)
    api.call("DELETE", PN, {"name": "mirror"}, expect=409)  # the mirror runs it

    # --- everything goes, and the deletes answer as documented --------------------------------------------
    api.call("GET", "/metrics", expect=200)  # with plugins, a transform, a group and a mirror to describe
    api.call("GET", "/", expect=200)
    api.call("GET", "/console/{asset}", {"asset": "app.js"}, expect=200)
    api.call("GET", "/console/{asset}", {"asset": "style.css"}, expect=200)
    api.call("GET", "/console/{asset}", {"asset": "nope.js"}, expect=404)
    api.call("GET", "/v1/history", expect=200)
    api.call("GET", "/v1/history", query={"family": "group_lag", "since": "0"}, expect=200)
    api.call("GET", "/v1/history", query={"colour": "red"}, expect=400)
    api.call("GET", "/v1/cluster", expect=200)
    api.call("DELETE", MN, {"name": "east"}, expect=204)
    api.call("DELETE", MN, {"name": "east"}, expect=404)
    api.call("DELETE", XN, {"name": "tiered"}, expect=204)
    api.call("DELETE", XN, {"name": "tiered"}, expect=404)
    api.call("PUT", Q + "/policy", json_body={}, expect=200)  # unbinds the cluster's policy
    api.call("DELETE", T, {"topic": "keyed"}, expect=204)
    api.call("DELETE", T, {"topic": "keyed"}, expect=404)
    api.call("DELETE", T, {"topic": "__consumer_offsets"}, expect=403)
    for name in ("murmur2", "filter", "mirror", "tiers"):
        api.call("DELETE", PN, {"name": name}, expect=204)
    api.call("GET", P, expect=200)

    api.finish()
