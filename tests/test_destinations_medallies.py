"""MedAllies Direct: pre-flight rules, the send_ccda request, answers and statuses."""

from __future__ import annotations

import base64

import pytest

from engine.destinations import Outcome
from tests import test_destinations_http as loopback
from tests.test_destinations_http import PAYLOAD, Reply, medallies

server, session = loopback.server, loopback.session  # the loopback fixtures


def problems_of(**changes):
    payload = {**PAYLOAD, **changes}
    return [(p.key, p.code) for p in medallies("http://127.0.0.1:9", None).validate(payload)]


def attachment(**changes):
    return {**PAYLOAD["emailAttachmentList"][0], **changes}


def test_a_good_payload_has_no_problems():
    assert (
        problems_of(
            patientDOB="19160226",
            patientGender="M",
            xdm=True,
            asmEnabled="true",
            assigning_authority="2.16.840.1.113883.3.9999",
        )
        == []
    )


@pytest.mark.parametrize("key", ["toDirectAddress", "emailAttachmentList"])
def test_required_fields(key):
    assert problems_of(**{key: ""}) == [(key, 101)]


@pytest.mark.parametrize("key", ["attachmentClass", "attachmentContent", "attachmentTitle"])
def test_each_attachment_needs_class_content_and_title(key):
    assert problems_of(emailAttachmentList=[attachment(**{key: ""})]) == [
        (f"emailAttachmentList[0].{key}", 101)
    ]


@pytest.mark.parametrize(
    ("to", "ok"),
    [
        ("smith@direct.example.org", True),
        ("a@direct.example.org,b@direct.example.org", True),
        ("a@direct.example.org, b@direct.example.org", True),
        ("a@direct.example.org;b@direct.example.org", False),
        ("smith", False),
    ],
)
def test_recipients_are_comma_separated_direct_addresses(to, ok):
    assert (problems_of(toDirectAddress=to) == []) is ok


@pytest.mark.parametrize(("dob", "ok"), [("19160226", True), ("1916-02-26", False), ("19160230", False)])
def test_patient_dob_is_yyyymmdd(dob, ok):
    assert (problems_of(patientDOB=dob) == []) is ok


def test_patient_gender_from_table_0001():
    assert problems_of(patientGender="F") == []
    assert problems_of(patientGender="Female") == [("patientGender", 103)]


def test_assigning_authority_is_an_oid():
    assert problems_of(assigning_authority="2.16.840.1.113883.3.9999") == []
    assert problems_of(assigning_authority="Hospital") == [("assigning_authority", 102)]


def test_flags_are_booleans():
    assert problems_of(xdm="yes") == [("xdm", 102)]


def test_file_names_have_no_extension():
    assert problems_of(xdmFileName="report-2026") == []
    assert problems_of(xdmFileName="report.zip") == [("xdmFileName", 102)]
    assert problems_of(emailAttachmentList=[attachment(attachmentFileName="ccda")]) == []
    assert problems_of(emailAttachmentList=[attachment(attachmentFileName="ccda.xml")]) == [
        ("emailAttachmentList[0].attachmentFileName", 102)
    ]


def test_attachment_class_is_a_media_type_and_content_base64():
    assert problems_of(emailAttachmentList=[attachment(attachmentClass="pdf")]) == [
        ("emailAttachmentList[0].attachmentClass", 102)
    ]
    assert problems_of(emailAttachmentList=[attachment(attachmentContent="@@")]) == [
        ("emailAttachmentList[0].attachmentContent", 102)
    ]


# -- sending -----------------------------------------------------------------------------


def test_send_uses_basic_auth_and_a_deterministic_urn_uuid(server, session):
    server.reply(
        Reply(200, {"status": "SUCCESS", "transactionId": "t-1"}),
        Reply(200, {"status": "SUCCESS", "transactionId": "t-2"}),
    )
    destination = medallies(server.base_url, session)
    payload = {**PAYLOAD, "xdm": "false", "patientLastname": "Kramden", "messageBody": ""}
    first = destination.send(payload, idempotency_key="7:medallies")
    destination.send(payload, idempotency_key="7:medallies")

    request = server.received[0]
    assert request.path == "/dirmsg/send_ccda"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"edge:pw").decode()
    body = request.json()
    assert body["messageId"].startswith("urn:uuid:")
    assert body["messageId"] == server.received[1].json()["messageId"]
    assert body == {
        "fromDirectAddress": "lab@direct.example.org",
        "messageId": body["messageId"],
        "toDirectAddress": "smith@direct.example.org",
        "emailAttachmentList": PAYLOAD["emailAttachmentList"],
        "xdm": False,
        "patientLastname": "Kramden",
    }
    assert first.outcome is Outcome.ACCEPTED
    assert first.remote_id == body["messageId"]
    assert first.vendor_ids["transactionId"] == "t-1"


@pytest.mark.parametrize("status", ["Error", "FAILED"])
def test_a_2xx_that_says_error_is_a_rejection(server, session, status):
    server.reply(Reply(200, {"status": status, "result": "Message parse failed"}))
    result = medallies(server.base_url, session).send(PAYLOAD, idempotency_key="k")
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "MedAllies: Message parse failed"


@pytest.mark.parametrize(
    ("vendor", "state"),
    [
        ("SMTPINIT", "pending"),
        ("PROCESSED", "pending"),
        ("DISPATCHED", "delivered"),
        ("DISPLAYED", "read"),
        ("FAILED", "failed"),
        ("FAILED-TO", "failed"),
    ],
)
def test_check_status_normalises_direct_states(server, session, vendor, state):
    server.reply(
        Reply(
            200,
            {
                "sender": "lab@direct.example.org",
                "recipient": "smith@direct.example.org",
                "xdMsgId": "urn:uuid:1",
                "status": vendor,
            },
        )
    )
    [update] = medallies(server.base_url, session).check_status("urn:uuid:1")
    assert (update.state, update.recipient) == (state, "smith@direct.example.org")
    assert server.received[0].path == (
        "/dirmsg/status?xdMsgId=urn%3Auuid%3A1&fromDirectAddress=lab%40direct.example.org"
    )


def test_a_failure_reason_is_kept(server, session):
    server.reply(Reply(200, {"status": "FAILED", "failureReason": "9002: "}))
    [update] = medallies(server.base_url, session).check_status("urn:uuid:1")
    assert update.detail == "FAILED: 9002: "


def test_status_queries_go_to_their_own_base_url(server, session):
    """The document prints the status URL without the send URL's :9443: its own setting."""
    status_server = loopback.ScriptedServer()
    try:
        status_server.reply(Reply(200, {"status": "DISPATCHED"}))
        destination = medallies(server.base_url, session, status_base_url=status_server.base_url + "/")
        [update] = destination.check_status("urn:uuid:1")
        assert update.state == "delivered"
        assert [r.path.split("?")[0] for r in status_server.received] == ["/dirmsg/status"]
        assert server.received == []
    finally:
        status_server.close()


@pytest.mark.parametrize(
    ("base_url", "status_url"),
    [
        (
            "https://api.medalliesdirect.com:9443/MessagingAPI",
            "https://api.medalliesdirect.com/MessagingAPI/dirmsg/status",
        ),
        ("https://user@[2001:db8::1]:9443/api", "https://user@[2001:db8::1]/api/dirmsg/status"),
        ("http://127.0.0.1:18443", "http://127.0.0.1:18443/dirmsg/status"),
    ],
)
def test_by_default_the_status_url_is_the_documents_form_of_base_url(base_url, status_url):
    assert medallies(base_url, None).url("/dirmsg/status") == status_url
    assert medallies(base_url, None).url("/dirmsg/send_ccda") == base_url + "/dirmsg/send_ccda"
