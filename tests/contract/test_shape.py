"""The comparison itself: a request that differs from a fixture in shape is reported.

Real requests to the recording server, each one wrong in a single way, against real fixtures.
"""

from __future__ import annotations

import contextlib

import pytest
import requests

from tests.contract.drive import proxied_session
from tests.contract.shape import differences, key_paths, load_fixture
from tests.support.recording_server import RecordingServer

QLIQ_SEND = "http://capi.qliqsoft.com/secure_messages/send"
QLIQ_MESSAGE = {"api_key": "k", "to": "a@example.org", "text": "t"}


def recorded(method: str, url: str, **kwargs):
    # the recorder refuses a CONNECT: only its host is recorded
    with RecordingServer() as recorder, contextlib.suppress(requests.RequestException):
        proxied_session(recorder.url).request(method, url, timeout=5, **kwargs)
    (request,) = recorder.requests
    return request


def test_key_paths_of_nested_json():
    assert key_paths({"a": [{"b": 1}], "c": {"d": None}}) == {"a", "a[]", "a[].b", "c", "c.d"}


def test_a_matching_request_has_no_differences():
    assert differences(recorded("POST", QLIQ_SEND, json=QLIQ_MESSAGE), load_fixture("qliq/send")) == []


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "expected"),
    [
        ("PUT", QLIQ_SEND, {"json": QLIQ_MESSAGE}, "method PUT, document: POST"),
        (
            "POST",
            QLIQ_SEND + "s",
            {"json": QLIQ_MESSAGE},
            "path '/secure_messages/sends', document: '/secure_messages/send'",
        ),
        (
            "POST",
            "http://capi.qliqsoft.com:8443/secure_messages/send",
            {"json": QLIQ_MESSAGE},
            "host 'capi.qliqsoft.com:8443', document: 'capi.qliqsoft.com'",
        ),
        (
            "POST",
            "https://example.org/secure_messages/send",
            {"json": QLIQ_MESSAGE},
            "host 'example.org', document: 'capi.qliqsoft.com'",
        ),
        ("POST", QLIQ_SEND, {"json": {**QLIQ_MESSAGE, "txt": "x"}}, "JSON key 'txt' not in the document"),
        (
            "POST",
            QLIQ_SEND,
            {"json": {"to": "a@example.org", "text": "t"}},
            "JSON key 'api_key' (mandatory) missing",
        ),
        (
            "POST",
            QLIQ_SEND,
            {"data": QLIQ_MESSAGE},
            "header Content-Type 'application/x-www-form-urlencoded', document: 'application/json'",
        ),
    ],
)
def test_each_difference_is_named(method, url, kwargs, expected):
    assert expected in differences(recorded(method, url, **kwargs), load_fixture("qliq/send"))


def test_a_fixed_json_value_is_compared():
    fixture = load_fixture("conneqt/send")
    body = {**fixture["request"]["body"]["example"], "type": "ToolbarMessage"}
    body["attachments"] = [{**body["attachments"][0], "fileName": "a.pdf"}]  # the table requires it
    headers = {"ApiKey": "k", "AccessToken": "t"}
    request = recorded(
        "POST", "http://int.conneqt.health/api/v1/messages/instant", json=body, headers=headers
    )
    assert differences(request, fixture) == [
        "JSON type = 'ToolbarMessage', document: 'ToolbarInstantMessage'"
    ]


def test_form_parts_and_empty_mandatory_parameters():
    url = "http://capi.qliqsoft.com/secure_messages/update_message_status"
    fields = {"api_key": "k", "sender": "", "conversation_id": "c", "message_id": "m", "status": "opened"}
    multipart = {k: (None, v) for k, v in fields.items()}
    fixture = load_fixture("qliq/update_message_status")
    assert differences(recorded("PUT", url, files=multipart), fixture) == [
        "parameter 'sender' is empty (mandatory)"
    ]
    assert "body 'application/x-www-form-urlencoded', document: 'multipart/form-data'" in differences(
        recorded("PUT", url, data={**fields, "sender": "s"}), fixture
    )


def test_auth_scheme_and_version_header():
    fixture = load_fixture("kpn/api_call")
    request = recorded("POST", "http://api-prd.kpn.com/x", json={}, headers={"Authorization": "Basic abc"})
    assert differences(request, fixture) == [
        "header Authorization scheme 'Basic', document: 'Bearer'",
        "no header whose name matches '(?i)version'",
    ]
    pinned = recorded(
        "POST",
        "http://api-prd.kpn.com/x",
        json={},
        headers={"Authorization": "Bearer t", "API-Version": "v1.0"},
    )
    assert differences(pinned, fixture) == []


def test_an_https_request_through_the_proxy_is_compared_by_host():
    fixture = load_fixture("medallies/status")
    assert (
        differences(recorded("GET", "https://api.medalliesdirect.com/MessagingAPI/dirmsg/status"), fixture)
        == []
    )
    wrong_port = recorded("GET", "https://api.medalliesdirect.com:9443/MessagingAPI/dirmsg/status")
    assert differences(wrong_port, fixture) == [
        "host 'api.medalliesdirect.com:9443', document: 'api.medalliesdirect.com'"
    ]
