"""KPN: pre-flight rules, chat paths, JSON and multipart sends, OAuth pieces, the account limit."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from engine.destinations import DestinationError, Outcome, StaticToken
from engine.destinations.kpn.destination import TOKEN_EXPIRED, KpnDestination, account_rate, chat_path
from engine.destinations.kpn.oauth import RedirectReceiver, new_state
from engine.destinations.kpn.plugin import PLUGIN
from engine.destinations.plugin import AccountRate
from tests import test_destinations_http as loopback
from tests.test_destinations_http import Reply, make_settings

server, session = loopback.server, loopback.session  # the loopback fixtures

PDF_BYTES = b"%PDF-1.4 discharge letter"
PDF = {
    "file_name": "letter.pdf",
    "mime_type": "application/pdf",
    "content": base64.b64encode(PDF_BYTES).decode(),
}


def destination(base_url="http://127.0.0.1:9", session=None, token="kpn-token", **extra):
    settings = make_settings(
        KpnDestination,
        {
            "base_url": base_url,
            "client_id": "client-1",
            "client_secret": "s3cret",
            "token_url": f"{base_url}/oauth/token",
            **extra,
        },
    )
    return KpnDestination(settings, session, token_provider=StaticToken(token))


def problems_of(**changes):
    payload = {"chat_type": "groupchat", "aux_id": "ward-7", "body": "Letter ready", **changes}
    return [(p.key, p.code) for p in destination().validate(payload)]


def test_a_good_payload_has_no_problems():
    assert problems_of() == []
    assert problems_of(aux_id="", chat_id="123", chat_type="conversation", attachments=[PDF]) == []


def test_chat_type_table():
    assert problems_of(chat_type="channel") == [("chat_type", 103)]


def test_exactly_one_of_chat_id_and_aux_id():
    assert problems_of(aux_id="") == [("chat_id", 101)]
    assert problems_of(chat_id="123") == [("aux_id", 102)]


def test_body_is_required():
    assert problems_of(body="") == [("body", 101)]


def test_attachment_content_must_be_base64():
    assert problems_of(attachments=[{**PDF, "content": "!!"}]) == [("attachments[0].content", 102)]


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"chat_type": "conversation", "chat_id": "42"}, "/conversations/42"),
        ({"chat_type": "groupchat", "chat_id": "42"}, "/groupchats/42"),
        ({"chat_type": "conversation", "aux_id": "pat/1 2"}, "/aux/conversations/pat%2F1%202"),
        ({"chat_type": "groupchat", "aux_id": "ward-7"}, "/aux/groupchats/ward-7"),
    ],
)
def test_chat_paths(payload, path):
    assert chat_path(payload) == path


# -- sending -----------------------------------------------------------------------------


def test_text_goes_as_json_with_the_bearer_token(server, session):
    server.reply(Reply(201, {"id": "msg-1"}))
    result = destination(server.base_url, session).send(
        {"chat_type": "groupchat", "aux_id": "ward-7", "body": "Letter ready"},
        idempotency_key="k",
    )
    request = server.received[0]
    assert (request.method, request.path) == ("POST", "/aux/groupchats/ward-7/messages")
    assert request.headers["Authorization"] == "Bearer kpn-token"
    assert request.json() == {"body": "Letter ready"}
    assert (result.outcome, result.remote_id) == (Outcome.ACCEPTED, "msg-1")


TEXT = {"chat_type": "groupchat", "aux_id": "ward-7", "body": "Letter ready"}


def test_the_api_version_is_pinned_in_a_header(server, session):
    kpn = destination(server.base_url, session)
    kpn.send(TEXT, idempotency_key="k")
    destination(server.base_url, session, api_version="v2.0").send(TEXT, idempotency_key="k")
    assert [r.headers["version"] for r in server.received] == ["v1.0", "v2.0"]


def test_a_302_is_never_posted_again_its_location_is_read_once(server, session):
    server.reply(Reply(302, "", {"Location": "/groupchats/g-1/messages/msg-9"}), Reply(200, {"id": "msg-9"}))
    result = destination(server.base_url, session).send(TEXT, idempotency_key="k")
    assert [(r.method, r.path) for r in server.received] == [
        ("POST", "/aux/groupchats/ward-7/messages"),
        ("GET", "/groupchats/g-1/messages/msg-9"),
    ]
    assert (result.outcome, result.remote_id) == (Outcome.ACCEPTED, "msg-9")


def test_a_302_whose_location_fails_fails_the_delivery(server, session):
    server.reply(Reply(302, "", {"Location": "/elsewhere"}), Reply(500, {}))
    result = destination(server.base_url, session).send(TEXT, idempotency_key="k")
    assert [r.method for r in server.received] == ["POST", "GET"]
    assert result.outcome is Outcome.REJECTED
    assert "Location answered HTTP 500" in result.reason


def test_a_404_for_a_missing_chat_is_rejected(server, session):
    server.reply(Reply(404, {"error": "chat not found"}), Reply(200, {"id": "me"}))
    result = destination(server.base_url, session).send(TEXT, idempotency_key="k")
    assert server.received[1].path == "/me"
    assert result.outcome is Outcome.REJECTED


def test_a_404_for_the_endpoint_holds_the_destination(server, session):
    server.reply(Reply(404, ""), Reply(404, ""))
    result = destination(server.base_url, session).send(TEXT, idempotency_key="k")
    assert (result.outcome, result.hold) == (Outcome.AUTH_FAILED, "endpoint not found")


def test_each_further_call_of_a_send_waits_for_the_rate_limits_first(server, session):
    kpn = destination(server.base_url, session)
    paced: list[int] = []  # how many requests the server had when a further one was paced
    kpn.pace = lambda: paced.append(len(server.received)) or True
    server.reply(Reply(302, "", {"Location": "/groupchats/g-1/messages/msg-9"}), Reply(200, {"id": "msg-9"}))
    kpn.send(TEXT, idempotency_key="k1")
    server.reply(Reply(404, ""), Reply(200, {"id": "me"}))
    kpn.send(TEXT, idempotency_key="k2")
    server.reply(Reply(201, {"id": "msg-3"}))
    kpn.send(TEXT, idempotency_key="k3")  # one call: the queue paced it
    assert paced == [1, 3]
    assert len(server.received) == 5


def test_a_stopping_queue_lets_no_further_call_go(server, session):
    kpn = destination(server.base_url, session)
    kpn.pace = lambda: False
    server.reply(Reply(404, ""), Reply(302, "", {"Location": "/groupchats/g-1/messages/msg-9"}))
    missing = kpn.send(TEXT, idempotency_key="k1")
    found = kpn.send(TEXT, idempotency_key="k2")
    assert [r.method for r in server.received] == ["POST", "POST"]
    assert missing.outcome is not Outcome.REJECTED  # not known to be the chat: tried again
    assert "Location not read: the engine is stopping" in found.reason


def test_attachments_go_as_multipart(server, session):
    server.reply(Reply(201, {"id": "msg-2"}))
    png = {
        "file_name": "wound.png",
        "mime_type": "image/png",
        "content": base64.b64encode(b"\x89PNG").decode(),
    }
    result = destination(server.base_url, session).send(
        {"chat_type": "conversation", "chat_id": "42", "body": "See attached", "attachments": [PDF, png]},
        idempotency_key="k",
    )
    request = server.received[0]
    assert request.path == "/conversations/42/attachments"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = request.body
    assert b'name="message"\r\n\r\nSee attached' in body
    assert b'name="files"; filename="letter.pdf"\r\nContent-Type: application/pdf' in body
    assert b'name="files"; filename="wound.png"\r\nContent-Type: image/png' in body
    assert PDF_BYTES in body
    assert result.remote_id == "msg-2"


def test_an_expired_token_tells_the_operator_what_to_do(server, session):
    server.reply(Reply(401, {}))
    result = destination(server.base_url, session).send(
        {"chat_type": "groupchat", "chat_id": "1", "body": "x"}, idempotency_key="k"
    )
    assert result.outcome is Outcome.AUTH_FAILED
    assert TOKEN_EXPIRED in result.reason


def test_no_token_yet_sends_nothing(server, session):
    result = destination(server.base_url, session, token=None).send(
        {"chat_type": "groupchat", "chat_id": "1", "body": "x"}, idempotency_key="k"
    )
    assert (result.outcome, result.reason) == (Outcome.AUTH_FAILED, TOKEN_EXPIRED)
    assert server.received == []


# -- OAuth -------------------------------------------------------------------------------


def test_authorization_url_carries_the_documented_parameters():
    url = urlsplit(destination().authorization_url("st-1"))
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "api-prd.kpn.com",
        "/healthcaremessenger_oauth/authorize",
    )
    assert parse_qs(url.query) == {
        "response_type": ["code"],
        "client_id": ["client-1"],
        "scope": ["read write"],
        "redirect_uri": ["http://127.0.0.1:8765/callback"],
        "state": ["st-1"],
    }


def test_the_redirect_receiver_returns_the_code_for_the_right_state():
    state = new_state()
    receiver = RedirectReceiver(state)
    answer = requests.get(receiver.redirect_uri, params={"code": "c-1", "state": state}, timeout=5)
    assert answer.status_code == 200
    assert receiver.wait(timeout=5) == "c-1"


def test_the_redirect_receiver_aborts_on_a_wrong_state():
    receiver = RedirectReceiver(new_state())
    requests.get(receiver.redirect_uri, params={"code": "c-1", "state": "forged"}, timeout=5)
    with pytest.raises(DestinationError, match="state does not match"):
        receiver.wait(timeout=5)


@pytest.mark.parametrize(
    "uri", ["https://127.0.0.1:8765/callback", "http://example.org:80/cb", "http://127.0.0.1/callback"]
)
def test_the_redirect_receiver_listens_only_on_loopback_http(uri):
    with pytest.raises(DestinationError, match="redirect_uri must be"):
        RedirectReceiver.for_redirect_uri(uri, "state")


def test_the_redirect_receiver_times_out():
    with pytest.raises(DestinationError, match="timed out"):
        RedirectReceiver(new_state()).wait(timeout=0.05)


def test_code_exchange_posts_the_documented_form(server, session):
    server.reply(Reply(200, {"access_token": "at-1", "scope": "read write", "token_type": "bearer"}))
    token = destination(server.base_url, session).exchange_code("c-1")
    assert (token.access_token, token.scope, token.token_type) == ("at-1", "read write", "bearer")
    assert "at-1" not in repr(token)
    request = server.received[0]
    assert request.path == "/oauth/token"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode()) == {
        "client_id": ["client-1"],
        "client_secret": ["s3cret"],
        "code": ["c-1"],
        "grant_type": ["authorization_code"],
        "redirect_uri": ["http://127.0.0.1:8765/callback"],
    }


def test_the_code_exchange_never_posts_again_on_a_redirect(server, session):
    server.reply(Reply(307, "", {"Location": "/elsewhere"}))
    with pytest.raises(DestinationError, match="HTTP 307"):
        destination(server.base_url, session).exchange_code("c-1")
    assert [r.path for r in server.received] == ["/oauth/token"]


def test_a_refused_code_raises(server, session):
    server.reply(Reply(400, {"error": "invalid_grant"}))
    with pytest.raises(DestinationError, match="HTTP 400"):
        destination(server.base_url, session).exchange_code("stale")


def test_the_account_limit_is_the_client_ids_at_ninety_percent_of_the_setting():
    settings = destination(requests_per_second=20).settings
    assert account_rate(settings) == AccountRate("kpn:client-1", 18.0, 1)
    other = destination(client_id="client-2").settings
    assert account_rate(other).key != account_rate(settings).key
    assert PLUGIN.account_rate is account_rate  # what the queues are built with
