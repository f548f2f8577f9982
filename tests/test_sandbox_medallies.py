"""The MedAllies sandbox over real sockets: auth, validation, statuses, DSN and inbound POSTs."""

from __future__ import annotations

import base64
import json
import queue
import uuid

import pytest
import requests

from courier_sandbox.medallies import MedAlliesSandbox, MedAlliesTimings
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS, Receiver, fake_clock, fresh, serve

AUTH = ("courier", TEST_CREDENTIALS.medallies_password)
SENDER = "john@medalliestestdomain.com"


@pytest.fixture(scope="module")
def clock():
    return fake_clock()


@pytest.fixture(scope="module")
def started(reactor, clock):
    sandbox = MedAlliesSandbox(
        reactor,
        credentials=TEST_CREDENTIALS,
        clock=clock,
        timings=MedAlliesTimings(processed_after_s=1, dispatched_after_s=2, mdn_timeout_s=60),
    )
    yield from serve(sandbox)


@pytest.fixture
def sandbox(started):
    fresh(started)
    started.dsn_url = started.inbound_url = None
    return started


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def payload(**changes) -> dict:
    body = {
        "fromDirectAddress": SENDER,
        "toDirectAddress": "smith@medalliestestdomain.com",
        "emailAttachmentList": [
            {
                "attachmentClass": "application/pdf",
                "attachmentContent": base64.b64encode(b"%PDF").decode(),
                "attachmentTitle": "Report",
            }
        ],
        "messageId": f"urn:uuid:{uuid.uuid4()}",
        "messageSubject": "Result",
        "xdm": False,
        "asmEnabled": True,
    }
    body.update(changes)
    return body


def send(sandbox, body, auth=AUTH):
    return requests.post(f"{sandbox.base_url}/MessagingAPI/dirmsg/send_ccda", json=body, auth=auth, timeout=5)


def status(sandbox, message_id, sender=SENDER, auth=AUTH):
    return requests.get(
        f"{sandbox.base_url}/MessagingAPI/dirmsg/status",
        params={"xdMsgId": message_id, "fromDirectAddress": sender},
        auth=auth,
        timeout=5,
    )


def test_send_answers_synchronous_acknowledgement(sandbox):
    body = payload()
    r = send(sandbox, body)
    assert r.status_code == 200
    ack = r.json()
    assert ack["messageId"] == body["messageId"] and ack["status"] == "SUCCESS"
    assert ack["result"] == "Message parse successfully" and uuid.UUID(ack["transactionId"])
    assert status(sandbox, body["messageId"]).json()["status"] == "SMTPINIT"


def test_multi_recipient_addresses_are_split(sandbox):
    body = payload(toDirectAddress="a@x.medalliesdirect.net, b@x.medalliesdirect.net")
    assert send(sandbox, body).status_code == 200
    assert status(sandbox, body["messageId"]).json()["recipient"] == (
        "a@x.medalliesdirect.net,b@x.medalliesdirect.net"
    )


@pytest.mark.parametrize(
    "auth, code",
    [
        (None, 401),
        (("courier", "wrong"), 401),
        (("readonly", TEST_CREDENTIALS.medallies_readonly_password), 403),
    ],
)
def test_auth(sandbox, auth, code):
    r = send(sandbox, payload(), auth=auth)
    assert r.status_code == code
    assert r.json()["status"] == "Error"
    assert status(sandbox, "x", auth=auth).status_code == code


@pytest.mark.parametrize(
    "changes",
    [
        {"fromDirectAddress": "not-an-address"},
        {"toDirectAddress": ""},
        {"toDirectAddress": "a@x.net,broken"},
        {"messageId": ""},
        {"emailAttachmentList": []},
        {"emailAttachmentList": [{"attachmentContent": "@@not base64"}]},
        {"emailAttachmentList": [{"attachmentContent": "QQ==", "attachmentClass": "pdf"}]},
        {"xdm": "yes"},
        {"messageSubject": 12},
    ],
)
def test_validation_rules(sandbox, changes):
    body = payload(**changes)
    r = send(sandbox, body)
    assert r.status_code == 400 and r.json()["status"] == "Error"
    assert sandbox.state.messages == {}


def test_missing_required_field_and_non_json(sandbox):
    body = payload()
    del body["messageId"]
    assert send(sandbox, body).status_code == 400
    r = requests.post(f"{sandbox.base_url}/MessagingAPI/dirmsg/send_ccda", data="a=b", auth=AUTH, timeout=5)
    assert r.status_code == 400


def test_status_query_errors(sandbox):
    body = payload()
    send(sandbox, body)
    assert status(sandbox, body["messageId"], sender="other@x.net").status_code == 403
    assert status(sandbox, "urn:uuid:unknown").status_code == 404
    r = requests.get(
        f"{sandbox.base_url}/MessagingAPI/dirmsg/status",
        params={"xdMsgId": body["messageId"]},
        auth=AUTH,
        timeout=5,
    )
    assert r.status_code == 400
    assert (
        requests.get(f"{sandbox.base_url}/MessagingAPI/dirmsg/nothing", auth=AUTH, timeout=5).status_code
        == 404
    )
    assert sandbox.state.status_polls[body["messageId"]] == 1  # the 400 is not a poll


def test_progression_with_dsn_webhooks(sandbox, clock, receiver):
    sandbox.dsn_url = receiver.url + "/dsn"
    body = payload()
    send(sandbox, body)
    on_reactor(clock.advance, 1)
    path, headers, raw = receiver.next()
    dsn = json.loads(raw)
    assert path == "/dsn" and headers["Authorization"].startswith("Basic ")
    # the document's success examples carry the bare uuid; sending used urn:uuid:
    assert dsn["Id"] == body["messageId"].removeprefix("urn:uuid:") and dsn["Status"] == "Success"
    assert dsn["Description"] == "processed"
    assert dsn["Disposition"] == "action/MDN-sent-automatically;processed"
    assert dsn["Timestamp"].endswith("z")
    assert status(sandbox, body["messageId"]).json()["status"] == "PROCESSED"
    on_reactor(clock.advance, 1)
    assert json.loads(receiver.next()[2])["Description"] == "dispatched"
    assert status(sandbox, body["messageId"]).json()["status"] == "DISPATCHED"
    forced = requests.post(
        f"{sandbox.base_url}/_sandbox/status/{body['messageId']}", json={"status": "DISPLAYED"}, timeout=5
    )
    assert forced.status_code == 200
    assert json.loads(receiver.next()[2])["Disposition"].endswith(";displayed")
    on_reactor(clock.advance, 120)
    assert status(sandbox, body["messageId"]).json()["status"] == "DISPLAYED"


def test_dispatched_is_only_upgraded_to_displayed(sandbox, clock):
    body = payload()
    send(sandbox, body)
    on_reactor(clock.advance, 2)
    url = f"{sandbox.base_url}/_sandbox/status/{body['messageId']}"
    assert requests.post(url, json={"status": "FAILED"}, timeout=5).status_code == 409
    on_reactor(clock.advance, 120)
    assert status(sandbox, body["messageId"]).json()["status"] == "DISPATCHED"


def test_no_dispatched_dsn_without_asm(sandbox, clock, receiver):
    sandbox.dsn_url = receiver.url
    body = payload(asmEnabled=False)
    send(sandbox, body)
    on_reactor(clock.advance, 2)
    assert json.loads(receiver.next()[2])["Description"] == "processed"
    with pytest.raises(queue.Empty):
        receiver.next(timeout=0.3)
    assert status(sandbox, body["messageId"]).json()["status"] == "DISPATCHED"


def test_untrusted_recipient_fails_with_reason(sandbox, clock, receiver):
    sandbox.dsn_url = receiver.url
    body = payload(toDirectAddress="fail-untrusted@nowhere.example")
    send(sandbox, body)
    on_reactor(clock.advance, 1)
    dsn = json.loads(receiver.next()[2])
    assert dsn["Status"] == "Error" and dsn["Description"].startswith("9002")
    assert dsn["Id"] == body["messageId"]  # the failure example keeps the urn:uuid: form
    assert dsn["Disposition"].endswith(";failed")
    answer = status(sandbox, body["messageId"]).json()
    assert answer["status"] == "FAILED" and answer["failureReason"].startswith("9002")


def test_no_mdn_within_timeout_becomes_failed_to(sandbox, clock):
    body = payload(toDirectAddress="noreply@silent.example")
    send(sandbox, body)
    on_reactor(clock.advance, 30)
    assert status(sandbox, body["messageId"]).json()["status"] == "SMTPINIT"
    on_reactor(clock.advance, 31)
    answer = status(sandbox, body["messageId"]).json()
    assert answer["status"] == "FAILED-TO" and answer["failureReason"]


def test_duplicates_are_counted_and_conflicting_ids_rejected(sandbox):
    body = payload()
    first = send(sandbox, body).json()
    again = send(sandbox, body).json()
    assert first == again
    assert sandbox.state.duplicates[body["messageId"]] == 1
    assert send(sandbox, {**body, "messageSubject": "changed"}).status_code == 400


def test_inbound_message_is_posted_with_basic_auth(sandbox, receiver):
    sandbox.inbound_url = receiver.url + "/inbound"
    r = requests.post(f"{sandbox.base_url}/_sandbox/inbound", json={"messageSubject": "Discharge"}, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == 200
    path, headers, raw = receiver.next()
    message = json.loads(raw)
    assert path == "/inbound"
    assert (
        base64.b64decode(headers["Authorization"][6:])
        == f"medallies:{TEST_CREDENTIALS.medallies_webhook_secret}".encode()
    )
    assert message["messageSubject"] == "Discharge" and message["emailAttachmentList"]
    assert base64.b64decode(message["emailAttachmentList"][0]["attachmentContent"])
    assert message["messageId"] == r.json()["messageId"]


def test_inbound_without_url_is_refused(sandbox):
    assert requests.post(f"{sandbox.base_url}/_sandbox/inbound", json={}, timeout=5).status_code == 409


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"xdmFileName": "referral"}, 200),
        ({"xdmFileName": "order-12.5"}, 200),
        ({"xdmFileName": "referral.zip"}, 400),
        ({"attachmentFileName": "report.pdf"}, 400),
    ],
)
def test_file_names_carry_no_extension(sandbox, changes, code):
    """The document: "The extensions should not be added to the attachmentFileName or xdmFileName"."""
    assert send(sandbox, payload(**changes)).status_code == code


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ({"attachmentFileName": "attachment/ccda"}, 200),
        ({"attachmentFileName": "report.pdf"}, 400),
        ({"attachmentTitle": 7}, 400),
        ({"attachmentFileName": ["report"]}, 400),
    ],
)
def test_each_document_follows_the_field_rules(sandbox, document, code):
    body = payload()
    body["emailAttachmentList"][0].update(document)
    r = send(sandbox, body)
    assert r.status_code == code, r.text
    assert send(sandbox, payload(emailAttachmentList=["QQ=="])).status_code == 400


def test_status_query_needs_a_direct_address(sandbox):
    body = payload()
    send(sandbox, body)
    assert status(sandbox, body["messageId"], sender="john").status_code == 400
    assert status(sandbox, body["messageId"]).status_code == 200
