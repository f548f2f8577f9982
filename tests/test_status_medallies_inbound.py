"""MedAllies webhooks over real sockets: inbound Direct messages reach the hospital as MDM^T02,
200 only once stored, Basic auth, and DSNs reach the status tracker."""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid

import pytest
import requests
from twisted.internet.defer import Deferred

from courier_sandbox.medallies import MedAlliesSandbox, MedAlliesTimings
from engine.delivery.tracker import StatusTracker
from engine.destinations.medallies.inbound import DSNResource, InboundResource, dsn_update
from engine.message import Message
from engine.status import webhook_server
from engine.status.reporter import StatusReporter
from engine.status.webhooks import BasicAuth, Route
from tests.conftest import on_reactor
from tests.support.hospital import Hospital
from tests.support.sandbox import TEST_CREDENTIALS
from tests.support.waiting import wait_for
from tests.test_status_reporter import (
    FAST,
    ORU,
    channel_file,
    receive,
    temporary_store,
)

SECRET = ("medallies", TEST_CREDENTIALS.medallies_webhook_secret)
AUTH = BasicAuth(*SECRET)
PDF, XML = b"%PDF-1.4 referral letter", b"<ClinicalDocument/>"
TWO_ATTACHMENTS = {
    "emailAttachmentList": [
        {
            "attachmentClass": "text/xml",
            "attachmentContent": base64.b64encode(XML).decode(),
            "attachmentTitle": "CCDA",
        },
        {
            "attachmentClass": "application/pdf",
            "attachmentContent": base64.b64encode(PDF).decode(),
            "attachmentTitle": "Referral letter",
        },
    ],
    "messageBody": "Please see attached\nThanks",
    "patientId": "22943847",
    "assigning_authority": "2.16.840.1.113883.3.9999",
    "patientLastname": "Kramden",
    "patientFirstname": "Ralph",
}


class GatedStore:
    """The real store, but ``outbox_add`` waits until the test opens the gate."""

    def __init__(self, real) -> None:
        self._store = real
        self.gate: Deferred[None] = Deferred()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def outbox_add(self, *args):
        return self.gate.addCallback(lambda _: self._store.outbox_add(*args))


class RecordingTracker:
    """A status tracker that keeps what it is told, or fails as told."""

    def __init__(self) -> None:
        self.updates = []
        self.fails_with: Exception | None = None  # a tracker's bug, once set

    def apply_update(self, ref, update, *, destination=None):
        if self.fails_with is not None:
            raise self.fails_with
        self.updates.append((ref, update))


@pytest.fixture
def store(tmp_path, reactor):
    with temporary_store(tmp_path, reactor) as store:
        yield store


@pytest.fixture
def served(store, reactor):
    hospital = Hospital(reactor).up()
    channel = channel_file("ris_oru_to_medallies.toml", hospital.port)
    gated = GatedStore(store)
    reporter = StatusReporter(gated, reactor, [channel], **FAST)
    on_reactor(reporter.start)
    tracker = RecordingTracker()
    port = on_reactor(
        webhook_server.listen,
        reactor,
        "tcp:0:interface=127.0.0.1",
        [
            Route("medallies/inbound", InboundResource(channel.name, reporter, reactor), AUTH),
            Route("medallies/dsn", DSNResource(tracker), AUTH),
        ],
    )
    url = f"http://127.0.0.1:{port.getHost().port}/medallies"
    yield url, hospital, gated, channel, tracker
    on_reactor(port.stopListening)
    on_reactor(reporter.stop)
    hospital.down()


@pytest.fixture
def sandbox(reactor):
    timings = MedAlliesTimings(processed_after_s=0.05, dispatched_after_s=0.1)
    sandbox = MedAlliesSandbox(reactor, credentials=TEST_CREDENTIALS, timings=timings)
    on_reactor(sandbox.listen)
    yield sandbox
    on_reactor(sandbox.stop)


def test_inbound_message_with_two_attachments_reaches_the_hospital_as_mdm_t02(served, sandbox):
    url, hospital, gated, channel, _ = served
    on_reactor(gated.gate.callback, None)
    sandbox.inbound_url = url + "/inbound"
    entry = on_reactor(sandbox.send_inbound, TWO_ATTACHMENTS)
    assert entry["status"] == 200
    message = hospital.next()
    assert message.msh.field(9) == "MDM^T02^MDM_T02"
    assert message.character_sets == ("UNICODE UTF-8",)
    assert message.get("TXA-12") == entry["messageId"]
    assert message.get("PID-3.1") == "22943847" and message.get("PID-5.1") == "Kramden"
    assert message.get("OBX-5") == "Referral\n\nPlease see attached\nThanks"
    attachments = message.all("OBX")[1:]
    assert [obx.value(2) for obx in attachments] == ["ED", "ED"]
    assert [obx.value(5, component=3) for obx in attachments] == ["XML", "PDF"]
    assert [obx.value(5, component=4) for obx in attachments] == ["Base64", "Base64"]
    assert [base64.b64decode(obx.value(5, component=5)) for obx in attachments] == [XML, PDF]
    assert message.get("ZIN-4") == "referrer@medalliestestdomain.com"
    assert (message.get("MSH-3"), message.get("MSH-4"), message.get("ZIN-7")) == (
        "COURIER",
        "medallies",
        "medallies/inbound",
    )
    assert hospital.nothing_more()


def test_inbound_is_answered_only_after_it_is_stored(served):
    url, hospital, gated, channel, _ = served
    body = {"messageId": "urn:uuid:1", "messageBody": "hello", **TWO_ATTACHMENTS}
    answers = []
    post = threading.Thread(
        target=lambda: answers.append(requests.post(url + "/inbound", json=body, auth=SECRET, timeout=5))
    )
    post.start()
    time.sleep(0.3)
    assert answers == []  # the store has not committed, so MedAllies has no answer yet
    assert on_reactor(gated.outbox_next, channel.name, time.time() + 60) is None
    on_reactor(gated.gate.callback, None)
    post.join(5)
    assert answers[0].status_code == 200
    assert Message.parse(hospital.next().raw).get("TXA-12") == "urn:uuid:1"


@pytest.mark.parametrize(
    "auth", [None, ("medallies", "wrong"), ("someone", TEST_CREDENTIALS.medallies_webhook_secret)]
)
def test_wrong_or_missing_basic_auth_gets_401(served, auth):
    url, hospital, gated, channel, tracker = served
    on_reactor(gated.gate.callback, None)
    for path in ("/inbound", "/dsn"):
        answer = requests.post(url + path, json={"messageId": "x", "Id": "x"}, auth=auth, timeout=5)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert hospital.nothing_more(wait=0.3)
    assert tracker.updates == []
    assert on_reactor(gated.outbox_next, channel.name, time.time() + 60) is None  # nothing stored


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[" * 5_000 + b"]" * 5_000,  # nested past the parser's recursion limit
        b'{"emailAttachmentList": 5}',
        b'{"emailAttachmentList": [{"attachmentClass": 7, "attachmentContent": "QQ=="}]}',
        b"[]",
    ],
    ids=["not-json", "deep", "list-is-a-number", "class-is-a-number", "not-an-object"],
)
@pytest.mark.parametrize("path", ["/inbound", "/dsn"])
def test_a_body_of_the_wrong_form_gets_400_not_500(served, body, path):
    """A 500 tells MedAllies to send again: a message that can never be read would come for ever."""
    url, *_ = served
    answer = requests.post(url + path, data=body, auth=SECRET, timeout=5)
    assert answer.status_code == 400


def test_dsns_from_the_sandbox_reach_the_tracker(served, sandbox):
    url, _, _, _, tracker = served
    sandbox.dsn_url = url + "/dsn"
    message_id = f"urn:uuid:{uuid.uuid4()}"  # the form Courier sends; success DSNs carry the bare uuid
    assert send_direct_message(sandbox, message_id).status_code == 200
    wait_for(lambda: len(tracker.updates) >= 2)
    assert [(ref, update.state) for ref, update in tracker.updates] == [
        (message_id, "pending"),
        (message_id, "delivered"),
    ]
    assert tracker.updates[1][1].detail == "DSN dispatched"
    assert tracker.updates[1][1].at is not None


def test_a_webhook_that_fails_answers_500_and_logs_the_error_s_type_only(served, caplog):
    """A DSN's Description is the vendor's text about a patient's message: a failure quoting it
    stays out of the log."""
    url, _, _, _, tracker = served
    description = "recipient Ralph Kramden 22943847 unknown"
    tracker.fails_with = RuntimeError(f"cannot apply DSN {description}")
    dsn = {"Id": "m-1", "Status": "Error", "Description": description, "Disposition": "x;failed"}
    with caplog.at_level(logging.ERROR, logger="engine.status.webhooks"):
        answer = requests.post(url + "/dsn", json=dsn, auth=SECRET, timeout=5)
    assert answer.status_code == 500, "not stored: MedAllies sends it again"
    assert [r.getMessage() for r in caplog.records] == [
        "MedAllies DSN for m-1: not stored, answering 500: RuntimeError"
    ]
    assert "Kramden" not in caplog.text and "22943847" not in caplog.text


def send_direct_message(sandbox, message_id: str) -> requests.Response:
    """What the MedAllies destination sends, with the 'Dispatched' DSN asked for."""
    direct_message = {
        "fromDirectAddress": "radiology@direct.courier.example",
        "toDirectAddress": "gp@medalliestestdomain.com",
        "messageId": message_id,
        "asmEnabled": True,
        "emailAttachmentList": TWO_ATTACHMENTS["emailAttachmentList"],
    }
    return requests.post(
        f"{sandbox.base_url}/MessagingAPI/dirmsg/send_ccda",
        json=direct_message,
        auth=("courier", TEST_CREDENTIALS.medallies_password),
        timeout=5,
    )


@pytest.mark.parametrize(
    ("body", "state"),
    [
        (
            {
                "Id": "m",
                "Status": "Success",
                "Disposition": "automatic-action/MDN-sent-automatically; displayed",
            },
            "read",
        ),
        (
            {
                "Id": "m",
                "Status": "Error",
                "Description": "9002: ERROR=NoTrustedRecipients",
                "Disposition": "action/MDN-sent-automatically;failed",
            },
            "failed",
        ),
        ({"Id": "m", "Status": "Error", "Disposition": ""}, "failed"),
    ],
)
def test_dsn_is_read_loosely(body, state):
    ref, update = dsn_update(body)
    assert (ref, update.state) == ("m", state)


def test_dsn_without_a_known_disposition_is_refused():
    with pytest.raises(ValueError):
        dsn_update({"Id": "m", "Status": "Success", "Disposition": "x;weird"})


@pytest.fixture
def dsn_webhook(store, reactor):
    """A real status tracker behind the DSN webhook, and a delivery of the radiology channel
    marked SENT under the remote id ``sent(remote_id)`` gives; yields (sent, url, hospital)."""
    hospital = Hospital(reactor).up()
    channel = channel_file("ris_oru_to_medallies.toml", hospital.port)
    destination = channel.destinations[0].name
    reporter = StatusReporter(store, reactor, [channel], **FAST)
    on_reactor(reporter.start)
    tracker = StatusTracker(store, reactor, listener=reporter, destinations=[destination])
    port = on_reactor(
        webhook_server.listen,
        reactor,
        "tcp:0:interface=127.0.0.1",
        [Route("dsn", DSNResource(tracker, destination), AUTH)],
    )

    def sent(remote_id: str) -> None:
        receive(store, channel, ORU, destinations=(destination,))
        (delivery,) = on_reactor(store.claim_due, destination, time.time() + 1, 1, 60.0)
        on_reactor(store.mark_sent, delivery.id, remote_id)

    yield sent, f"http://127.0.0.1:{port.getHost().port}/dsn", hospital
    on_reactor(port.stopListening)
    on_reactor(reporter.stop)
    hospital.down()


def test_a_dispatched_dsn_becomes_a_delivered_status_message_at_the_hospital(dsn_webhook, sandbox):
    sent, url, hospital = dsn_webhook
    remote_id = f"urn:uuid:{uuid.uuid4()}"
    sent(remote_id)
    sandbox.dsn_url = url
    assert send_direct_message(sandbox, remote_id).status_code == 200
    status = hospital.next()
    assert (status.get("MSA-1"), status.get("MSA-2")) == ("AA", "LAB0001")
    assert (status.get("ZDS-1"), status.get("ZDS-4"), status.get("ZDS-5")) == (
        "delivered",
        "medallies",
        remote_id,
    )
    assert hospital.nothing_more()  # "processed" changes nothing, so it is not reported


def test_a_read_receipt_naming_the_message_by_its_bare_uuid_reaches_the_hospital(dsn_webhook):
    """The document's DSN examples print ``Id`` as a bare uuid; Courier sends ``urn:uuid:``."""
    sent, url, hospital = dsn_webhook
    remote_id = "urn:uuid:7d285434-2289-4214-928a-462314994789"
    sent(remote_id)
    displayed = {
        "Timestamp": "2017-06-13T16:25:54.873043z",
        "Id": "7D285434-2289-4214-928A-462314994789",
        "Status": "Success",
        "Description": "displayed",
        "Disposition": "action/MDN-sent-automatically;displayed",
    }
    assert requests.post(url, json=displayed, auth=SECRET, timeout=10).status_code == 200
    reports = [hospital.next(), hospital.next()]
    assert [(r.get("ZDS-1"), r.get("ZDS-5")) for r in reports] == [
        ("delivered", remote_id),
        ("read", remote_id),
    ]
