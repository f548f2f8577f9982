"""conneQt: pre-flight rules (each with a good and a bad value), request building, RFC 7807."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from engine.destinations import DestinationError, Outcome, StaticToken
from engine.destinations.base import message_uuid
from engine.destinations.conneqt.destination import ConneqtDestination
from tests import test_destinations_http as loopback
from tests.test_destinations_http import Reply, make_settings

server, session = loopback.server, loopback.session  # the loopback fixtures

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
PDF = base64.b64encode(b"%PDF-1.4 result").decode()


def good_payload(**changes):
    payload = {
        "topic": "PathologyResult",
        "recipientId": "A81001",
        "nhsNumber": "9434765919",
        "attachments": [{"mimeType": "application/pdf", "fileName": "Result.pdf", "content": PDF}],
        "codedDataItems": [{"code": "407554009", "value": "140", "unit": "mmHg"}],
    }
    payload.update(changes)
    return payload


def destination(base_url="http://127.0.0.1:9", session=None, token="tok-1"):
    settings = make_settings(ConneqtDestination, {"base_url": base_url, "api_key": "key-1"})
    return ConneqtDestination(settings, session, token_provider=StaticToken(token), clock=lambda: NOW)


def problems_of(**changes):
    return [(p.key, p.code) for p in destination().validate(good_payload(**changes))]


def test_a_good_payload_has_no_problems():
    assert problems_of() == []


@pytest.mark.parametrize("key", ["topic", "recipientId", "nhsNumber", "attachments"])
def test_required_fields(key):
    assert problems_of(**{key: ""}) == [(key, 101)]


@pytest.mark.parametrize(("value", "ok"), [("9434765919", True), ("9434765918", False), ("943476591", False)])
def test_nhs_number_modulus_11(value, ok):
    assert (problems_of(nhsNumber=value) == []) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("A81001", True), ("GPPRAC001", True), ("a81001", False), ("A8 001", False)]
)
def test_recipient_ods_code(value, ok):
    assert (problems_of(recipientId=value) == []) is ok


def test_body_mime_type_from_the_table():
    assert problems_of(bodyContent="<p>ok</p>", bodyMimeType="text/html") == []
    assert problems_of(bodyContent="x", bodyMimeType="application/pdf") == [("bodyMimeType", 103)]


def test_a_key_the_destination_does_not_know_is_a_mapping_error():
    assert problems_of(messageId="x") == [("messageId", 207)]


def test_recipient_id_type_from_the_table():
    assert problems_of(recipientIdType="OcsClientIdentifier") == []
    assert problems_of(recipientIdType="Email") == [("recipientIdType", 103)]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-03-02T09:00:00Z", None),
        ("2026-03-02T09:00:00+01:00", None),
        ("2026-03-02T09:00:00", 102),  # no offset
        ("2026-02-28T09:00:00Z", 102),  # in the past
        ("tomorrow", 102),
    ],
)
def test_expiry_is_rfc3339_in_the_future(value, problem):
    expected = [] if problem is None else [("expiryDateTime", problem)]
    assert problems_of(expiryDateTime=value) == expected


def attachment(**changes):
    return {"mimeType": "application/pdf", "fileName": "Result.pdf", "content": PDF, **changes}


def test_one_to_ten_attachments():
    assert problems_of(attachments=[attachment()] * 10) == []
    assert problems_of(attachments=[attachment()] * 11) == [("attachments", 102)]
    assert problems_of(attachments=[]) == [("attachments", 101)]


def test_attachment_mime_types():
    for mime in ("image/jpeg", "text/plain", "text/vnd.qxlva.conneqt.consultation"):
        assert problems_of(attachments=[attachment(mimeType=mime)]) == []
    assert problems_of(attachments=[attachment(mimeType="image/png")]) == [("attachments[0].mimeType", 103)]


def test_attachment_size_limit_is_5mb_decoded():
    at_limit = base64.b64encode(b"x" * 5_000_000).decode()
    over = base64.b64encode(b"x" * 5_000_001).decode()
    assert problems_of(attachments=[attachment(content=at_limit)]) == []
    assert problems_of(attachments=[attachment(content=over)]) == [("attachments[0].content", 104)]


def test_attachment_content_must_be_base64():
    assert problems_of(attachments=[attachment(content="not base64!")]) == [("attachments[0].content", 102)]


@pytest.mark.parametrize("name", ["Result.pdf", "Blood results 2026.pdf"])
def test_valid_windows_file_names(name):
    assert problems_of(attachments=[attachment(fileName=name)]) == []


@pytest.mark.parametrize(
    "name", [" Result.pdf", "Result.pdf ", ".Result", "Result.", "a/b.pdf", "what?.pdf", "CON.pdf", "nul"]
)
def test_invalid_windows_file_names(name):
    assert problems_of(attachments=[attachment(fileName=name)]) == [("attachments[0].fileName", 102)]


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("407554009", True),
        ("248223005", True),
        ("407554008", False),  # Verhoeff check digit wrong
        ("407554019", False),  # a description-partition id, not a concept
        ("012345", False),
    ],
)
def test_coded_items_carry_snomed_concept_ids(code, ok):
    assert (problems_of(codedDataItems=[{"code": code}]) == []) is ok


def test_coded_item_value_must_be_a_number():
    assert problems_of(codedDataItems=[{"code": "407554009", "value": "high"}]) == [
        ("codedDataItems[0].value", 102)
    ]


def test_problem_texts_name_fields_not_values():
    problems = destination().validate(good_payload(nhsNumber="9434765918"))
    assert all("9434765918" not in p.text for p in problems)


# -- sending -----------------------------------------------------------------------------


def test_send_builds_the_instant_message(server, session):
    server.reply(Reply(200, {"messageStatusEndpoint": "/api/v1/messages/x/status"}))
    payload = good_payload(bodyContent="Results attached", expiryDateTime="2026-03-02T09:00:00Z")
    result = destination(server.base_url, session).send(payload, idempotency_key="42:conneqt")

    request = server.received[0]
    assert (request.method, request.path) == ("POST", "/api/v1/messages/instant")
    assert request.headers["ApiKey"] == "key-1"
    assert request.headers["AccessToken"] == "tok-1"
    body = request.json()
    message_id = str(uuid.uuid5(uuid.UUID("5b0c2f4e-8d1a-5c7e-9f3b-6a2d4e8c1b70"), "42:conneqt"))
    assert body == {
        "messageId": message_id,
        "type": "ToolbarInstantMessage",
        "topic": "PathologyResult",
        "recipient": {"id": {"type": "OcsClientIdentifier", "value": "A81001"}},
        "subject": {"id": {"type": "VerifiedNhsNumber", "value": "9434765919"}},
        "expiryDateTime": "2026-03-02T09:00:00Z",
        "body": {"mimeType": "text/plain", "content": "Results attached"},
        "attachments": [{"mimeType": "application/pdf", "fileName": "Result.pdf", "content": PDF}],
        "codedDataItems": [{"code": "407554009", "value": 140, "unit": "mmHg"}],
    }
    assert result.outcome is Outcome.ACCEPTED
    assert result.remote_id == message_id
    assert result.vendor_ids["messageStatusEndpoint"] == "/api/v1/messages/x/status"


def test_the_message_id_is_the_same_on_every_retry():
    assert message_uuid("42:conneqt") == message_uuid("42:conneqt")
    assert message_uuid("42:conneqt") != message_uuid("43:conneqt")


PROBLEM = {
    "type": "https//qxlva.com/im1toolbar/documentation/api/v1/validation-error",
    "title": "Request Validation Error",
    "status": 400,
    "instance": "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
    "invalidParameters": [
        {"name": "recipient", "reason": "Unknown Recipient"},
        {
            "name": "body.mimeType",
            "reason": "Must be 'text/plain' or 'text/html'",
            "value": "application/pdf",
        },
    ],
}


def test_a_validation_problem_is_rejected_with_its_invalid_parameters(server, session):
    server.reply(Reply(400, PROBLEM, {"Content-Type": "application/problem+json"}))
    result = destination(server.base_url, session).send(good_payload(), idempotency_key="k")
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "HTTP 400: Request Validation Error"
    assert [(p.name, p.reason) for p in result.invalid_parameters] == [
        ("recipient", "Unknown Recipient"),
        ("body.mimeType", "Must be 'text/plain' or 'text/html'"),
    ]


def test_the_recipient_id_type_defaults_to_the_documents_value_and_is_mapped(server, session):
    server.reply(Reply(200, {}), Reply(200, {}))
    conneqt = destination(server.base_url, session)
    conneqt.send(good_payload(), idempotency_key="a")
    conneqt.send(good_payload(recipientIdType="OdsOrganisationId"), idempotency_key="b")
    assert [r.json()["recipient"]["id"]["type"] for r in server.received] == [
        "OcsClientIdentifier",
        "OdsOrganisationId",
    ]


def test_a_server_error_is_retried_whatever_its_words(server, session):
    problem = {"title": "Content store unavailable", "detail": "attachment service down", "status": 500}
    server.reply(Reply(500, problem, {"Content-Type": "application/problem+json"}))
    result = destination(server.base_url, session).send(good_payload(), idempotency_key="k")
    assert result.outcome is Outcome.RETRY


def test_a_forbidden_client_system_holds_the_destination(server, session):
    problem = {"title": "Unauthorized Client System", "status": 403}
    server.reply(Reply(403, problem, {"Content-Type": "application/problem+json"}))
    result = destination(server.base_url, session).send(good_payload(), idempotency_key="k")
    assert (result.outcome, result.hold) == (Outcome.AUTH_FAILED, "forbidden")


def test_a_refused_attachment_parameter_is_never_resent(server, session):
    problem = {
        "title": "Service Unavailable",
        "status": 503,
        "invalidParameters": [{"name": "attachments[0].content", "reason": "Malware"}],
    }
    server.reply(Reply(503, problem, {"Content-Type": "application/problem+json"}))
    result = destination(server.base_url, session).send(good_payload(), idempotency_key="k")
    assert result.outcome is Outcome.REJECTED
    assert result.invalid_parameters[0].name == "attachments[0].content"


def test_a_plain_server_error_is_retried(server, session):
    server.reply(Reply(500, {"title": "Internal Server Error", "status": 500}))
    result = destination(server.base_url, session).send(good_payload(), idempotency_key="k")
    assert result.outcome is Outcome.RETRY


def test_no_access_token_holds_the_message_without_a_request(server, session):
    result = destination(server.base_url, session, token=None).send(good_payload(), idempotency_key="k")
    assert result.outcome is Outcome.AUTH_FAILED
    assert server.received == []


def test_access_code_exchange(server, session):
    server.reply(Reply(200, {"token": "ad2ae93e-f2e4-4722-8c20-42ba5a71b3ff"}))
    token = destination(server.base_url, session).exchange_access_code("JH23MA1Z")
    assert token == "ad2ae93e-f2e4-4722-8c20-42ba5a71b3ff"
    request = server.received[0]
    assert request.path == "/api/v1/messages/instant/access/token"
    assert request.json() == {"accessCode": "JH23MA1Z"}
    assert request.headers["ApiKey"] == "key-1"


def test_a_refused_access_code_raises(server, session):
    server.reply(Reply(400, {"title": "Invalid access code", "status": 400}))
    with pytest.raises(DestinationError, match="Invalid access code"):
        destination(server.base_url, session).exchange_access_code("WRONG")


@pytest.mark.parametrize(
    ("vendor", "state"),
    [
        ("PENDING", "pending"),
        ("COMPLETED", "delivered"),
        ("REJECTED", "failed"),
        ("EXPIRED", "expired"),
    ],
)
def test_check_status_normalises_states(server, session, vendor, state):
    server.reply(Reply(200, {"status": vendor, "subStatus": "Failed instant message import"}))
    [update] = destination(server.base_url, session).check_status("abc")
    assert update.state == state
    assert update.detail == f"{vendor}: Failed instant message import"
    assert server.received[0].path == "/api/v1/messages/abc/status"


def test_status_polls_send_the_access_token_like_sending(server, session):
    server.reply(Reply(200, {"status": "PENDING"}))
    destination(server.base_url, session).check_status("abc")
    headers = server.received[0].headers
    assert (headers["ApiKey"], headers["AccessToken"]) == ("key-1", "tok-1")
