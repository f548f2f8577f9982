"""The KPN sandbox over real sockets: OAuth flow, expiry, scopes, chats, attachments, rate limit."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from courier_sandbox.kpn import KpnSandbox, KpnTimings
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS, fake_clock, fresh, serve

CLIENT = {"client_id": "sandbox-kpn-client", "client_secret": TEST_CREDENTIALS.kpn_client_secret}
CALLBACK = "https://courier.example/oauth2/callback"
API = "/communication/kpn/healthcare-messenger"


@pytest.fixture(scope="module")
def clock():
    return fake_clock()


@pytest.fixture(scope="module")
def started(reactor, clock):
    yield from serve(
        KpnSandbox(reactor, credentials=TEST_CREDENTIALS, clock=clock, timings=KpnTimings(token_ttl_s=60))
    )


@pytest.fixture
def sandbox(started):
    return fresh(started)


def authorize(sandbox, **changes):
    params = {
        "response_type": "code",
        "state": "12345",
        "client_id": CLIENT["client_id"],
        "scope": "read write",
        "redirect_uri": CALLBACK,
        **changes,
    }
    return requests.get(
        f"{sandbox.base_url}/healthcaremessenger_oauth/authorize",
        params=params,
        allow_redirects=False,
        timeout=5,
    )


def exchange(sandbox, code, **changes):
    form = {**CLIENT, "code": code, "grant_type": "authorization_code", "redirect_uri": CALLBACK, **changes}
    return requests.post(f"{sandbox.base_url}/healthcaremessenger_oauth/token", data=form, timeout=5)


def login(sandbox, scope="read write") -> str:
    location = authorize(sandbox, scope=scope).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    return exchange(sandbox, code).json()["access_token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_three_legged_flow(sandbox):
    r = authorize(sandbox)
    assert r.status_code == 302
    location = urlsplit(r.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    query = parse_qs(location.query)
    assert query["state"] == ["12345"] and query["code"]
    token = exchange(sandbox, query["code"][0])
    assert token.status_code == 200
    body = token.json()
    assert body["token_type"] == "bearer" and body["scope"] == "read write"
    assert (
        requests.get(
            f"{sandbox.base_url}{API}/me", headers=bearer(body["access_token"]), timeout=5
        ).status_code
        == 200
    )
    again = exchange(sandbox, query["code"][0])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "changes, status",
    [
        ({"client_id": "other"}, 400),
        ({"redirect_uri": "not a url"}, 400),
    ],
)
def test_authorize_refusals_without_redirect(sandbox, changes, status):
    assert authorize(sandbox, **changes).status_code == status


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "read delete"}, "invalid_scope"),
    ],
)
def test_authorize_errors_redirect_back(sandbox, changes, error):
    r = authorize(sandbox, **changes)
    assert r.status_code == 302
    assert parse_qs(urlsplit(r.headers["Location"]).query)["error"] == [error]


def test_token_errors(sandbox):
    code = parse_qs(urlsplit(authorize(sandbox).headers["Location"]).query)["code"][0]
    assert exchange(sandbox, code, client_secret="wrong").status_code == 401
    assert exchange(sandbox, code, grant_type="password").json()["error"] == ("unsupported_grant_type")
    assert exchange(sandbox, code, redirect_uri="https://other.example/cb").json()["error"] == (
        "invalid_grant"
    )
    as_json = requests.post(
        f"{sandbox.base_url}/healthcaremessenger_oauth/token", json={**CLIENT, "code": code}, timeout=5
    )
    assert as_json.status_code == 400


def test_token_expires(sandbox, clock):
    token = login(sandbox)
    url = f"{sandbox.base_url}{API}/conversations/sandbox-user-1/messages"
    assert requests.post(url, json={"body": "hi"}, headers=bearer(token), timeout=5).status_code == 201
    on_reactor(clock.advance, 61)
    r = requests.post(url, json={"body": "hi"}, headers=bearer(token), timeout=5)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert requests.post(url, json={"body": "hi"}, timeout=5).status_code == 401


def test_default_token_lifetime_is_three_days(reactor):
    assert KpnSandbox(reactor, credentials=TEST_CREDENTIALS).timings.token_ttl_s == 3 * 24 * 3600


@pytest.mark.parametrize(
    "chat",
    [
        "conversations/sandbox-user-1",
        "groupchats/sandbox-group-1",
        "aux/conversations/patient-0001",
        "aux/groupchats/ward-7",
    ],
)
def test_send_to_every_chat_form(sandbox, chat):
    token = login(sandbox)
    r = requests.post(
        f"{sandbox.base_url}{API}/v1/{chat}/messages",
        json={"body": "Result"},
        headers=bearer(token),
        timeout=5,
    )
    assert r.status_code == 201
    message = r.json()
    assert message["body"] == "Result" and message["id"] in sandbox.state.messages
    read = requests.get(
        f"{sandbox.base_url}{API}/{chat}/messages/{message['id']}", headers=bearer(token), timeout=5
    )
    assert read.status_code == 200 and read.json()["id"] == message["id"]


@pytest.mark.parametrize(
    "chat",
    [
        "conversations/nobody",
        "groupchats/nothing",
        "aux/conversations/patient-9999",
        "conversations/aux/patient-0001",
    ],
)
def test_unknown_chats_are_404(sandbox, chat):
    r = requests.post(
        f"{sandbox.base_url}{API}/{chat}/messages",
        json={"body": "x"},
        headers=bearer(login(sandbox)),
        timeout=5,
    )
    assert r.status_code == 404


def test_message_body_rules_and_method(sandbox):
    token = login(sandbox)
    url = f"{sandbox.base_url}{API}/conversations/sandbox-user-1/messages"
    assert requests.post(url, json={"body": ""}, headers=bearer(token), timeout=5).status_code == 400
    assert requests.post(url, data="body=x", headers=bearer(token), timeout=5).status_code == 400
    assert requests.put(url, json={"body": "x"}, headers=bearer(token), timeout=5).status_code == 405


def test_read_only_token_cannot_send(sandbox):
    token = login(sandbox, scope="read")
    r = requests.post(
        f"{sandbox.base_url}{API}/conversations/sandbox-user-1/messages",
        json={"body": "x"},
        headers=bearer(token),
        timeout=5,
    )
    assert r.status_code == 403


def test_attachments_with_files_parts(sandbox):
    token = login(sandbox)
    url = f"{sandbox.base_url}{API}/groupchats/sandbox-group-1/attachments"
    files = [
        ("files", ("a.pdf", b"%PDF-1", "application/pdf")),
        ("files", ("b.png", b"\x89PNG", "image/png")),
    ]
    r = requests.post(url, data={"message": "Two results"}, files=files, headers=bearer(token), timeout=5)
    assert r.status_code == 201
    stored = sandbox.state.messages[r.json()["id"]]
    assert stored["body"] == "Two results"
    assert [a["name"] for a in stored["attachments"]] == ["a.pdf", "b.png"]
    empty = [("files", ("a.pdf", b"", "application/pdf"))]
    assert (
        requests.post(url, data={"message": "x"}, files=empty, headers=bearer(token), timeout=5).status_code
        == 400
    )
    wrong = [("file", ("a.pdf", b"%PDF", "application/pdf"))]
    assert (
        requests.post(url, data={"message": "x"}, files=wrong, headers=bearer(token), timeout=5).status_code
        == 400
    )


def test_rate_limit_30_per_second_per_token(sandbox, clock):
    token, other = login(sandbox), login(sandbox)
    url = f"{sandbox.base_url}{API}/me"
    with requests.Session() as session:
        codes = [session.get(url, headers=bearer(token), timeout=5).status_code for _ in range(31)]
        assert codes[:30] == [200] * 30
        assert codes[30] == 429
        limited = session.get(url, headers=bearer(token), timeout=5)
        assert limited.headers["Retry-After"] == "1"
        assert session.get(url, headers=bearer(other), timeout=5).status_code == 200
        on_reactor(clock.advance, 1.01)
        assert session.get(url, headers=bearer(token), timeout=5).status_code == 200


def test_identical_sends_are_counted(sandbox):
    token = login(sandbox)
    url = f"{sandbox.base_url}{API}/conversations/sandbox-user-1/messages"
    first = requests.post(url, json={"body": "same"}, headers=bearer(token), timeout=5).json()
    requests.post(url, json={"body": "same"}, headers=bearer(token), timeout=5)
    assert dict(sandbox.state.duplicates) == {first["id"]: 1}


def test_control_api_expires_tokens_and_adds_chats(sandbox):
    token = login(sandbox)
    added = requests.post(
        f"{sandbox.base_url}/_sandbox/config",
        json={"aux_groupchats": {"ward-9": "sandbox-group-1"}},
        timeout=5,
    )
    assert added.status_code == 200
    url = f"{sandbox.base_url}{API}/aux/groupchats/ward-9/messages"
    assert requests.post(url, json={"body": "x"}, headers=bearer(token), timeout=5).status_code == 201
    assert requests.post(f"{sandbox.base_url}/_sandbox/expire_tokens", timeout=5).json() == {"expired": 1}
    assert requests.post(url, json={"body": "x"}, headers=bearer(token), timeout=5).status_code == 401


@pytest.mark.parametrize(("version", "status"), [(None, 201), ("v1.0", 201), ("1.0", 201), ("v2.0", 400)])
def test_version_header_names_a_known_version(sandbox, version, status):
    """The document: "If no version is provided in the header it defaults to the latest version"; the
    changelog has only v1.0, so another version cannot be served."""
    headers = bearer(login(sandbox)) | ({"version": version} if version else {})
    r = requests.post(
        f"{sandbox.base_url}{API}/conversations/sandbox-user-1/messages",
        json={"body": "Result"},
        headers=headers,
        timeout=5,
    )
    assert r.status_code == status, r.text


@pytest.mark.parametrize(
    ("question", "status"),
    [
        ({"options": [{"name": "yes", "label": "Yes", "style": "green"}], "multi_answer": False}, 201),
        ({"options": []}, 400),
        ({"options": [{"name": "yes"}]}, 400),
        ({"options": [{"name": "yes", "label": "Yes"}], "multi_answer": "no"}, 400),
        ({"options": [{"name": "yes", "label": "Yes"}], "users": "sandbox-user-1"}, 400),
        ("yes or no?", 400),
    ],
)
def test_message_question_follows_the_alterdesk_form(sandbox, question, status):
    r = requests.post(
        f"{sandbox.base_url}{API}/conversations/sandbox-user-1/messages",
        json={"body": "Agree?", "question": question},
        headers=bearer(login(sandbox)),
        timeout=5,
    )
    assert r.status_code == status, r.text
