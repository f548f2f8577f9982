"""The conneQt sandbox over real sockets: auth, every schema rule, statuses, duplicates."""

from __future__ import annotations

import base64
import copy
import time
import uuid

import pytest
import requests

from courier_sandbox.conneqt import ConneqtSandbox, ConneqtTimings
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS, fake_clock, fresh, serve

KEY = {"ApiKey": TEST_CREDENTIALS.conneqt_api_key}
PDF = base64.b64encode(b"%PDF-1.4 sandbox").decode()


@pytest.fixture(scope="module")
def clock():
    return fake_clock()


@pytest.fixture(scope="module")
def started(reactor, clock):
    sandbox = ConneqtSandbox(
        reactor, credentials=TEST_CREDENTIALS, clock=clock, timings=ConneqtTimings(completed_after_s=5)
    )
    yield from serve(sandbox)


@pytest.fixture
def sandbox(started):
    fresh(started)
    return started


def token(sandbox) -> str:
    r = requests.post(
        f"{sandbox.base_url}/api/v1/messages/instant/access/token",
        json={"accessCode": TEST_CREDENTIALS.conneqt_access_code},
        headers=KEY,
        timeout=5,
    )
    assert r.status_code == 200
    return r.json()["token"]


def message(**changes) -> dict:
    body = {
        "messageId": str(uuid.uuid4()),
        "type": "ToolbarInstantMessage",
        "topic": "DispenseEventNotification",
        "recipient": {"id": {"value": "GPPRAC001", "type": "OcsClientIdentifier"}},
        "subject": {"id": {"value": "9547852140", "type": "VerifiedNhsNumber"}},
        "body": {"mimeType": "text/plain", "content": "Result available"},
        "attachments": [{"mimeType": "application/pdf", "fileName": "Report.pdf", "content": PDF}],
        "codedDataItems": [{"code": "407554009", "value": 140, "unit": "mmHg"}],
    }
    body.update(changes)
    return body


def send(sandbox, body, *, access=None, headers=None):
    h = {**KEY, "AccessToken": access or token(sandbox), **(headers or {})}
    return requests.post(f"{sandbox.base_url}/api/v1/messages/instant", json=body, headers=h, timeout=5)


def problems(response) -> dict[str, str]:
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400 and problem["instance"].startswith("urn:uuid:")
    return {p["name"]: p["reason"] for p in problem["invalidParameters"]}


def test_valid_message_is_accepted_with_status_endpoint(sandbox):
    body = message()
    r = send(sandbox, body)
    assert r.status_code == 200
    assert r.json() == {"messageStatusEndpoint": f"/api/v1/messages/{body['messageId']}/status"}
    assert sandbox.state.messages[body["messageId"]]["status"] == "PENDING"


def test_seed_example_quirks_are_tolerated(sandbox):
    body = message(codedDataItems=[{"code": "248223005", "units": "mmHg"}])
    body["body"]["fileName"] = "Dispense Notification.pdf"
    assert send(sandbox, body).status_code == 200


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),
        ({"ApiKey": "wrong"}, 401),
        ({"ApiKey": TEST_CREDENTIALS.conneqt_unauthorised_api_key}, 403),
    ],
)
def test_api_key_is_required(sandbox, headers, status):
    r = requests.post(
        f"{sandbox.base_url}/api/v1/messages/instant",
        json=message(),
        headers={"AccessToken": "x", **headers},
        timeout=5,
    )
    assert r.status_code == status
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["status"] == status


def test_access_token_is_required_and_codes_are_checked(sandbox):
    assert send(sandbox, message(), access="not-a-token").status_code == 401
    r = requests.post(
        f"{sandbox.base_url}/api/v1/messages/instant/access/token",
        json={"accessCode": "WRONG"},
        headers=KEY,
        timeout=5,
    )
    assert "accessCode" in problems(r)


def test_non_json_body_is_rejected(sandbox):
    r = requests.post(
        f"{sandbox.base_url}/api/v1/messages/instant",
        data="x=1",
        headers={**KEY, "AccessToken": token(sandbox)},
        timeout=5,
    )
    assert "Content-Type" in problems(r)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"messageId": "not-a-uuid"}, "messageId"),
        ({"type": "ToolbarMessage"}, "type"),
        ({"topic": ""}, "topic"),
        ({"recipient": {"id": {"type": "OcsClientIdentifier"}}}, "recipient.id.value"),
        ({"recipient": {"id": {"value": "UNKNOWN9", "type": "OcsClientIdentifier"}}}, "recipient"),
        ({"subject": {"id": {"value": "9547852141", "type": "VerifiedNhsNumber"}}}, "subject.id.value"),
        ({"subject": {"id": {"value": "9547852140"}}}, "subject.id.type"),
        ({"recipient": {"id": {"value": "GPPRAC001", "type": "OdsOrganisationId"}}}, "recipient.id.type"),
        ({"subject": {"id": {"value": "9547852140", "type": "NhsNumber"}}}, "subject.id.type"),
        ({"expiryDateTime": "2030-01-01T00:00:00"}, "expiryDateTime"),
        ({"expiryDateTime": "2001-01-01T00:00:00Z"}, "expiryDateTime"),
        ({"body": {"mimeType": "application/pdf", "content": "x"}}, "body.mimeType"),
        ({"attachments": []}, "attachments"),
        (
            {"attachments": [{"mimeType": "application/pdf", "fileName": "a.pdf", "content": PDF}] * 11},
            "attachments",
        ),
        (
            {"attachments": [{"mimeType": "image/png", "fileName": "a.png", "content": PDF}]},
            "attachments[0].mimeType",
        ),
        ({"attachments": [{"mimeType": "application/pdf", "content": PDF}]}, "attachments[0].fileName"),
        (
            {"attachments": [{"mimeType": "application/pdf", "fileName": "CON.pdf", "content": PDF}]},
            "attachments[0].fileName",
        ),
        (
            {"attachments": [{"mimeType": "application/pdf", "fileName": "a?.pdf", "content": PDF}]},
            "attachments[0].fileName",
        ),
        (
            {"attachments": [{"mimeType": "application/pdf", "fileName": "report.", "content": PDF}]},
            "attachments[0].fileName",
        ),
        (
            {"attachments": [{"mimeType": "application/pdf", "fileName": " r.pdf", "content": PDF}]},
            "attachments[0].fileName",
        ),
        (
            {"attachments": [{"mimeType": "application/pdf", "fileName": "a.pdf", "content": "@@"}]},
            "attachments[0].content",
        ),
        ({"codedDataItems": [{"code": "407554008"}]}, "codedDataItems[0].code"),
        ({"codedDataItems": [{"code": "407554019"}]}, "codedDataItems[0].code"),
        ({"codedDataItems": [{"code": "407554009", "value": "high"}]}, "codedDataItems[0].value"),
    ],
)
def test_each_schema_rule(sandbox, changes, field):
    r = send(sandbox, message(**changes))
    assert field in problems(r)
    assert sandbox.state.messages == {}


def test_attachment_over_5mb_is_rejected_and_at_limit_accepted(sandbox):
    at_limit = base64.b64encode(b"x" * 5 * 1024 * 1024).decode()
    over = base64.b64encode(b"x" * (5 * 1024 * 1024 + 1)).decode()
    ok = [{"mimeType": "text/plain", "fileName": "notes.txt", "content": at_limit}]
    assert send(sandbox, message(attachments=ok)).status_code == 200
    too_big = [{"mimeType": "text/plain", "fileName": "notes.txt", "content": over}]
    assert "attachments[0].content" in problems(send(sandbox, message(attachments=too_big)))


def status(sandbox, message_id, access: str | None = None):
    headers = {**KEY, "AccessToken": access or token(sandbox)}
    return requests.get(f"{sandbox.base_url}/api/v1/messages/{message_id}/status", headers=headers, timeout=5)


@pytest.mark.parametrize("access", ["", "not-a-token"])
def test_status_polls_need_the_access_token_sending_uses(sandbox, access):
    body = message()
    send(sandbox, body)
    headers = {**KEY, **({"AccessToken": access} if access else {})}
    url = f"{sandbox.base_url}/api/v1/messages/{body['messageId']}/status"
    assert requests.get(url, headers=headers, timeout=5).status_code == 401


def test_status_moves_pending_to_completed_and_polls_are_counted(sandbox, clock):
    body = message()
    send(sandbox, body)
    first = status(sandbox, body["messageId"]).json()
    assert first["status"] == "PENDING" and first["subStatus"]
    on_reactor(clock.advance, 5)
    assert status(sandbox, body["messageId"]).json()["status"] == "COMPLETED"
    assert sandbox.state.status_polls[body["messageId"]] == 2


def test_expiry_while_pending_gives_expired(sandbox, clock):
    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.seconds() + 3))
    body = message(expiryDateTime=expiry)
    assert send(sandbox, body).status_code == 200
    on_reactor(clock.advance, 4)
    assert status(sandbox, body["messageId"]).json()["status"] == "EXPIRED"
    on_reactor(clock.advance, 5)
    assert status(sandbox, body["messageId"]).json()["status"] == "EXPIRED"


@pytest.mark.parametrize("final", ["REJECTED", "COMPLETED", "EXPIRED"])
def test_terminal_states_never_change(sandbox, clock, final):
    body = message()
    send(sandbox, body)
    url = f"{sandbox.base_url}/_sandbox/status/{body['messageId']}"
    pending = requests.post(
        url, json={"status": "PENDING", "subStatus": "Failed instant message import"}, timeout=5
    )
    assert pending.status_code == 200
    assert status(sandbox, body["messageId"]).json()["subStatus"] == ("Failed instant message import")
    assert requests.post(url, json={"status": final}, timeout=5).status_code == 200
    assert requests.post(url, json={"status": "PENDING"}, timeout=5).status_code == 409
    on_reactor(clock.advance, 10)
    assert status(sandbox, body["messageId"]).json()["status"] == final


def test_unknown_message_status_is_404(sandbox):
    r = status(sandbox, str(uuid.uuid4()))
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/problem+json"


def test_resend_counts_duplicate_and_conflicting_reuse_is_rejected(sandbox):
    body = message()
    access = token(sandbox)
    assert send(sandbox, body, access=access).status_code == 200
    assert send(sandbox, body, access=access).status_code == 200
    assert sandbox.state.duplicates[body["messageId"]] == 1
    changed = copy.deepcopy(body)
    changed["topic"] = "Other"
    assert "messageId" in problems(send(sandbox, changed, access=access))
    state = requests.get(f"{sandbox.base_url}/_sandbox/state", timeout=5).json()
    assert state["duplicates"] == {body["messageId"]: 1}
    assert all(r["headers"].get("apikey") in (None, "***") for r in state["requests"])


def test_revoked_permission_is_403(sandbox):
    access = token(sandbox)
    assert send(sandbox, message(), access=access).status_code == 200
    assert requests.post(f"{sandbox.base_url}/_sandbox/revoke_tokens", timeout=5).json() == {"revoked": 1}
    r = send(sandbox, message(), access=access)
    assert r.status_code == 403 and r.headers["Content-Type"] == "application/problem+json"
    assert send(sandbox, message()).status_code == 200  # a new access code exchange works
