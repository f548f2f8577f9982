"""The ``http`` receiver sandbox over real sockets: each auth mode, stale and forged signatures,
idempotency keys, faults through the shared control API, and a recording readable there."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
import requests

from courier_sandbox.receiver import HttpReceiverSandbox
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS, fake_clock, fresh, serve

BODY = json.dumps({"messageId": "HT0001", "test": "Glucose"}).encode()


@pytest.fixture(scope="module")
def clock():
    return fake_clock()


@pytest.fixture(scope="module")
def started(reactor, clock):
    yield from serve(HttpReceiverSandbox(reactor, credentials=TEST_CREDENTIALS, clock=clock))


@pytest.fixture
def sandbox(started):
    fresh(started)
    yield started
    started.configure({"auth": "any", "accepted_status": 200})


def signed(timestamp: int, body: bytes = BODY, secret: str = TEST_CREDENTIALS.http_signing_secret) -> dict:
    """The headers a sender computes independently of the sandbox (test-side HMAC)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Courier-Timestamp": str(timestamp), "X-Courier-Signature": f"sha256={mac}"}


def post(sandbox, headers: dict, body: bytes = BODY, path: str = "/hooks/results") -> requests.Response:
    headers = {"Content-Type": "application/json", **headers}
    return requests.post(sandbox.base_url + path, data=body, headers=headers, timeout=5)


def now(clock) -> int:
    return int(clock.seconds())


def test_a_signed_post_is_accepted_with_an_id_and_recorded(sandbox, clock):
    answer = post(sandbox, {**signed(now(clock)), "X-Source": "lab"})
    assert answer.status_code == 200
    message_id = answer.json()["id"]
    state = requests.get(sandbox.base_url + "/_sandbox/state", timeout=5).json()
    [request] = state["requests"]
    assert request["method"] == "POST" and request["path"] == "/hooks/results"
    assert request["headers"]["x-source"] == "lab" and request["body"] == json.loads(BODY)
    assert state["messages"][message_id]["auth"] == "hmac"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda t: signed(t, secret="not the secret"), id="wrong secret"),
        pytest.param(lambda t: signed(t, body=b'{"other": 1}'), id="other body"),
        pytest.param(lambda t: signed(t - 301), id="stale timestamp"),
        pytest.param(lambda t: signed(t + 301), id="future timestamp"),
        pytest.param(lambda t: {"X-Courier-Signature": signed(t)["X-Courier-Signature"]}, id="no timestamp"),
        pytest.param(lambda t: {}, id="no credential"),
        pytest.param(lambda t: {"Authorization": "Bearer not-the-token"}, id="wrong token"),
        pytest.param(lambda t: {"Authorization": "Basic !!"}, id="bad basic"),
        pytest.param(lambda t: {"X-Api-Key": "nope"}, id="wrong api key"),
    ],
)
def test_a_bad_or_stale_credential_is_refused_401(sandbox, clock, headers):
    answer = post(sandbox, headers(now(clock)))
    assert answer.status_code == 401
    assert sandbox.state.messages == {} and len(sandbox.state.requests) == 1


def test_a_timestamp_within_five_minutes_is_accepted(sandbox, clock):
    assert post(sandbox, signed(now(clock) - 299)).status_code == 200


@pytest.mark.parametrize(
    ("headers", "mode"),
    [
        ({"Authorization": f"Bearer {TEST_CREDENTIALS.http_token}"}, "bearer"),
        ({"X-Api-Key": TEST_CREDENTIALS.http_api_key}, "header"),
        (None, "basic"),
    ],
)
def test_each_other_mode_is_accepted_and_the_secret_not_recorded(sandbox, headers, mode):
    if headers is None:
        auth = ("courier", TEST_CREDENTIALS.http_password)
        answer = requests.post(sandbox.base_url + "/in", json={"a": 1}, auth=auth, timeout=5)
    else:
        answer = post(sandbox, headers, path="/in")
    assert answer.status_code == 200
    assert sandbox.state.messages[answer.json()["id"]]["auth"] == mode
    recorded = requests.get(sandbox.base_url + "/_sandbox/state", timeout=5).text
    assert TEST_CREDENTIALS.http_token not in recorded and TEST_CREDENTIALS.http_api_key not in recorded
    basic = base64.b64encode(f"courier:{TEST_CREDENTIALS.http_password}".encode()).decode()
    assert basic not in recorded and TEST_CREDENTIALS.http_password not in recorded
    assert sandbox.state.requests[-1].headers.get("authorization") in (None, "***")


def test_a_configured_mode_refuses_the_others(sandbox, clock):
    sandbox.configure({"auth": "bearer", "accepted_status": 201})
    assert post(sandbox, signed(now(clock))).status_code == 401
    assert post(sandbox, {"Authorization": f"Bearer {TEST_CREDENTIALS.http_token}"}).status_code == 201
    with pytest.raises(ValueError):
        sandbox.configure({"auth": "magic"})


def test_a_body_that_is_not_a_json_object_is_400(sandbox, clock):
    for body in (b"[1, 2]", b"not json"):
        assert post(sandbox, signed(now(clock), body=body), body=body).status_code == 400


def test_a_repeated_idempotency_key_answers_the_same_id_and_another_body_409(sandbox, clock):
    key = {"Idempotency-Key": "delivery-42"}
    first = post(sandbox, {**signed(now(clock)), **key})
    again = post(sandbox, {**signed(now(clock)), **key})
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert sandbox.state.duplicates[first.json()["id"]] == 1 and len(sandbox.state.messages) == 1
    other = b'{"messageId": "HT0002"}'
    assert post(sandbox, {**signed(now(clock), body=other), **key}, body=other).status_code == 409


def test_faults_from_the_control_api_status_codes_retry_after_and_counts(sandbox, clock):
    faults = {"pass_next": 1, "fail_next": 2, "status_next": 1, "status_code": 400, "throttle_next": 1}
    assert requests.post(sandbox.base_url + "/_sandbox/faults", json=faults, timeout=5).status_code == 200
    answers = [post(sandbox, signed(now(clock))) for _ in range(6)]
    assert [a.status_code for a in answers] == [200, 429, 400, 500, 500, 200]
    assert answers[1].headers["Retry-After"] == "1"
    assert [r.fault for r in sandbox.state.requests] == [None, "429", "400", "500", "500", None]
    refused = requests.post(sandbox.base_url + "/_sandbox/faults", json={"status_code": 302}, timeout=5)
    assert refused.status_code == 400


def post_after_start(reactor, state_file, clock, headers: dict) -> requests.Response:
    """One POST to a sandbox started from ``state_file`` and stopped after it (saving)."""
    sandbox = HttpReceiverSandbox(reactor, credentials=TEST_CREDENTIALS, clock=clock)
    sandbox.keep_state_in(state_file)
    on_reactor(sandbox.listen)
    try:
        return post(sandbox, headers)
    finally:
        on_reactor(sandbox.stop)


def test_the_idempotency_keys_survive_a_restart(reactor, tmp_path, clock):
    headers = {**signed(now(clock)), "Idempotency-Key": "k1"}
    first = post_after_start(reactor, tmp_path / "http.json", clock, headers)
    again = post_after_start(reactor, tmp_path / "http.json", clock, headers)
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    saved = json.loads((tmp_path / "http.json").read_text())
    assert saved["recording"]["duplicates"] == {first.json()["id"]: 1}
