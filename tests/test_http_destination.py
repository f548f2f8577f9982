"""``type = "http"``, the generic JSON/HTTP destination, against a real loopback HTTP(S) server:
the body, each auth mode, the idempotency header and how answers are classified."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from engine.destinations import Outcome, registry
from engine.destinations.http.destination import JsonHttpDestination
from engine.destinations.registry import settings_problems
from engine.spec import parse
from tests.support.pki import make_pki
from tests.support.scripted_http import Reply, ScriptedServer

PAYLOAD = {"patientId": "943", "results": [{"code": "GLU", "value": "5.4"}]}
SECRET = "signing secret of the test"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def destination(url: str, clock: float = 1_700_000_000.0, **table: Any) -> JsonHttpDestination:
    settings, problems = parse(JsonHttpDestination.settings_spec, {"url": url, **table}, env={})
    assert problems == []
    return JsonHttpDestination(settings, requests.Session(), clock=lambda: clock)


def send(dest: JsonHttpDestination, key: str = "delivery-1"):
    return dest.send(PAYLOAD, idempotency_key=key)


def test_the_mapping_output_is_posted_as_json_with_the_idempotency_key(server):
    result = send(destination(server.base_url + "/in/results", headers={"X-Source": "courier"}))
    assert result.outcome is Outcome.ACCEPTED and result.http_status == 200
    [request] = server.received
    assert (request.method, request.path) == ("POST", "/in/results")
    assert request.json() == PAYLOAD
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "delivery-1"
    assert request.headers["X-Source"] == "courier"
    assert "Authorization" not in request.headers


def test_method_and_idempotency_header_are_settings(server):
    send(destination(server.base_url, method="PUT", idempotency_header="X-Request-Id"))
    send(destination(server.base_url, idempotency_header=""))
    first, second = server.received
    assert first.method == "PUT" and first.headers["X-Request-Id"] == "delivery-1"
    assert "Idempotency-Key" not in second.headers and "X-Request-Id" not in second.headers


def test_hmac_signs_timestamp_and_body_with_the_secret(server):
    send(destination(server.base_url, auth="hmac", signing_secret=SECRET))
    [request] = server.received
    timestamp = request.headers["X-Courier-Timestamp"]
    assert timestamp == "1700000000"
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Courier-Signature"], f"sha256={expected}")


def test_basic_bearer_and_header_auth(server):
    send(destination(server.base_url, auth="basic", username="edge", password="pw one"))
    send(destination(server.base_url, auth="bearer", token="tok one"))
    send(destination(server.base_url, auth="header", auth_header="X-Api-Key", auth_value="key one"))
    basic, bearer, header = (r.headers for r in server.received)
    assert basic["Authorization"] == "Basic " + base64.b64encode(b"edge:pw one").decode()
    assert bearer["Authorization"] == "Bearer tok one"
    assert header["X-Api-Key"] == "key one" and "Authorization" not in header


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, Outcome.ACCEPTED),
        (204, Outcome.ACCEPTED),
        (408, Outcome.RETRY),
        (425, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (401, Outcome.AUTH_FAILED),
        (403, Outcome.AUTH_FAILED),
        (404, Outcome.AUTH_FAILED),
        (400, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (302, Outcome.REJECTED),
        (307, Outcome.REJECTED),
    ],
)
def test_default_status_classes(server, status, outcome):
    server.reply(Reply(status, {"error": "said the receiver"}, {"Location": server.base_url + "/elsewhere"}))
    result = send(destination(server.base_url))
    assert result.outcome is outcome
    assert len(server.received) == 1  # a redirect is not followed: the POST is never resent
    if outcome is not Outcome.ACCEPTED:
        assert f"HTTP {status}: said the receiver" in result.reason


def test_retry_honours_retry_after(server):
    server.reply(Reply(503, {}, {"Retry-After": "7"}))
    result = send(destination(server.base_url))
    assert (result.outcome, result.retry_after_s) == (Outcome.RETRY, 7.0)


def test_status_classes_are_settings(server):
    dest = destination(
        server.base_url, accepted_statuses=["202"], retry_statuses=["409"], hold_statuses=["418"]
    )
    server.reply(Reply(200), Reply(202), Reply(409), Reply(418), Reply(500))
    outcomes = [send(dest).outcome for _ in range(5)]
    assert outcomes == [
        Outcome.REJECTED,
        Outcome.ACCEPTED,
        Outcome.RETRY,
        Outcome.AUTH_FAILED,
        Outcome.REJECTED,
    ]


def test_the_same_delivery_carries_the_same_key_on_a_retry(server):
    dest = destination(server.base_url)
    server.reply(Reply(500))
    assert send(dest, "channel/dest/42").outcome is Outcome.RETRY
    assert send(dest, "channel/dest/42").outcome is Outcome.ACCEPTED
    assert [r.headers["Idempotency-Key"] for r in server.received] == ["channel/dest/42"] * 2


def test_ca_file_verifies_a_private_tls_server(tmp_path):
    pki = make_pki(tmp_path)
    tls = ScriptedServer(pki.server_cert, pki.server_key)
    try:
        assert send(destination(tls.base_url, ca_file=str(pki.ca))).outcome is Outcome.ACCEPTED
        # Not verified: never sent (whether it is retried or holds the destination is the
        # transport's rule for every type, so both are accepted here)
        not_sent = (Outcome.RETRY, Outcome.AUTH_FAILED)
        untrusted = send(destination(tls.base_url))  # the system trust store does not know the CA
        assert untrusted.outcome in not_sent and "SSLError" in untrusted.reason
        other = make_pki(tmp_path / "other", "Other CA")
        assert send(destination(tls.base_url, ca_file=str(other.ca))).outcome in not_sent
        assert len(tls.received) == 1
    finally:
        tls.close()


def problems(table: dict[str, Any]) -> list[str]:
    """What ``courier check`` says about one settings table (per key, then across keys)."""
    settings, found = parse(JsonHttpDestination.settings_spec, table, env={"HOOK_TOKEN": "t"})
    found += settings_problems("http", settings, table) if not found else []
    return [f"{p.key}: {p.message}" for p in found]


def test_settings_are_checked():
    url = "https://hooks.example.org/in"
    assert problems({"url": url, "auth": "bearer", "token": "${HOOK_TOKEN}"}) == []
    assert problems({}) == ["url: missing required key"]
    assert problems({"url": "ftp://x"}) == ["url: must be an http:// or https:// URL"]
    assert problems({"url": url, "auth": "bearer"}) == ["token: required when auth = 'bearer'"]
    assert problems({"url": url, "auth": "hmac"}) == ["signing_secret: required when auth = 'hmac'"]
    assert (
        "looks like a literal secret"
        in problems({"url": url, "auth": "bearer", "token": "sk_live_9fQ2x7LmT4vB8nR1"})[0]
    )
    assert problems({"url": url, "headers": {"X-Key": "${HOOK_TOKEN}"}}) == [
        "headers.X-Key: headers are plain text: put a secret in auth (bearer, basic, hmac or header)"
    ]
    assert problems({"url": url, "headers": {"Authorization": "Basic x"}}) == [
        "headers.Authorization: is set by Courier; use auth for credentials"
    ]
    assert problems({"url": url, "idempotency_header": "Content-Type"}) == [
        "idempotency_header: is set by Courier"
    ]
    assert problems({"url": url, "idempotency_header": "Bad\r\nHeader"}) == [
        "idempotency_header: must be an HTTP header name"
    ]
    assert problems({"url": url, "idempotency_header": ""}) == []
    assert problems({"url": url, "retry_statuses": ["302"]}) == [
        "retry_statuses: 302: only 4xx and 5xx answers can be retried or held"
    ]
    assert problems({"url": url, "hold_statuses": ["4x"]}) == [
        "hold_statuses[0]: '4x' is not a status code (e.g. 404) or a hundred (e.g. 5xx)"
    ]


def test_the_body_is_the_exact_json_that_was_signed(server):
    """What the receiver verifies is what it parses: no re-encoding between the two."""
    send(destination(server.base_url, auth="hmac", signing_secret=SECRET))
    [request] = server.received
    assert request.body == json.dumps(PAYLOAD, separators=(",", ":")).encode()


GENERIC_MODULES = (
    "engine.destinations.base",
    "engine.destinations.plugin",
    "engine.destinations.transport",
    "engine.destinations.http",
    "engine.spec",
)


def test_it_is_built_on_the_plugin_interface_and_generic_modules_only():
    folder = Path(__file__).resolve().parent.parent / "engine" / "destinations" / "http"
    imported = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
                imported.add(node.module)
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("engine")}
    assert imported and not [m for m in imported if not m.startswith(GENERIC_MODULES)]


def test_it_declares_a_url_and_an_open_payload():
    plugin = registry.plugin("http")
    names = [f.name for f in plugin.settings_spec.fields]
    assert names[0] == "url" and {"connect_timeout_s", "read_timeout_s", "ca_file"} <= set(names)
    assert all(
        plugin.settings_spec.field(k).secret for k in ("password", "token", "signing_secret", "auth_value")
    )
    assert plugin.payload_spec is None  # `courier check` compares no keys: any mapping output goes
    assert plugin.polling is None and plugin.webhooks is None


def test_an_output_json_cannot_carry_is_refused_before_the_ack(server):
    dest = destination(server.base_url)
    [problem] = dest.validate({"value": float("nan")})
    assert (problem.code, problem.text) == (102, "the mapping's output holds a number JSON cannot carry")
    assert dest.validate(PAYLOAD) == []
