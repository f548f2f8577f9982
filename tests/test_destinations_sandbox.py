"""The destinations against the vendor sandboxes: two independent readings of the documents.

The sandboxes run in the session reactor thread on 127.0.0.1:0; the destinations talk to them
from the test thread with a real ``requests.Session``, as the dispatcher's worker threads will.
Status progressions use a fake clock advanced in the reactor thread.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from twisted.internet.task import Clock

from courier_sandbox.certs import make_certificates
from courier_sandbox.conneqt import ConneqtSandbox, ConneqtTimings
from courier_sandbox.kpn import KpnSandbox
from courier_sandbox.medallies import MedAlliesSandbox, MedAlliesTimings
from courier_sandbox.qliq import QliqSandbox, QliqTimings
from engine.channel.check import load_channels
from engine.destinations import Outcome, StaticToken
from engine.destinations.conneqt.destination import ConneqtDestination
from engine.destinations.kpn.destination import TOKEN_EXPIRED, KpnDestination
from engine.destinations.kpn.oauth import RedirectReceiver, new_state
from engine.destinations.medallies.destination import MedAlliesDestination
from engine.destinations.qliq.destination import QliqDestination
from engine.destinations.registry import destination_class
from engine.mapping import load_mapping
from engine.message.reader import Message
from engine.store.base import SENT
from tests.conftest import on_reactor
from tests.support.drain_node import serve
from tests.support.sandbox import TEST_CREDENTIALS
from tests.support.waiting import wait_for
from tests.test_delivery_drain import Engine, kpn_channel_file
from tests.test_destinations_http import make_settings

PDF = base64.b64encode(b"%PDF-1.4 sandbox result").decode()
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()


@pytest.fixture(scope="module")
def clock() -> Clock:
    fake = Clock()
    fake.advance(time.time())
    return fake


def start(sandbox):
    on_reactor(sandbox.listen)
    return sandbox


@pytest.fixture(scope="module")
def sandboxes(reactor, clock) -> Iterator[dict]:
    started = {
        "conneqt": start(
            ConneqtSandbox(
                reactor,
                credentials=TEST_CREDENTIALS,
                clock=clock,
                timings=ConneqtTimings(completed_after_s=5),
            )
        ),
        "medallies": start(
            MedAlliesSandbox(
                reactor,
                credentials=TEST_CREDENTIALS,
                clock=clock,
                timings=MedAlliesTimings(processed_after_s=1, dispatched_after_s=2, mdn_timeout_s=60),
            )
        ),
        "qliq": start(
            QliqSandbox(
                reactor,
                credentials=TEST_CREDENTIALS,
                clock=clock,
                timings=QliqTimings(delivered_after_s=2, read_after_s=5, recipient_stagger_s=0),
            )
        ),
        # real time: the rate limit and token expiry are measured on the reactor's clock
        "kpn": start(KpnSandbox(reactor, credentials=TEST_CREDENTIALS)),
    }
    yield started
    for sandbox in started.values():
        on_reactor(sandbox.stop)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def fresh(sandboxes, name):
    sandbox = sandboxes[name]
    on_reactor(sandbox.reset)
    on_reactor(sandbox.set_faults, outage=None)
    return sandbox


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def advance(clock: Clock, seconds: float) -> None:
    on_reactor(clock.advance, seconds)


# -- conneQt -----------------------------------------------------------------------------


@pytest.fixture
def conneqt(sandboxes):
    return fresh(sandboxes, "conneqt")


def conneqt_destination(
    sandbox, session, *, api_key=TEST_CREDENTIALS.conneqt_api_key, token=None, **settings
):
    table = {"base_url": sandbox.base_url, "api_key": api_key, **settings}
    destination = ConneqtDestination(make_settings(ConneqtDestination, table), session)
    if token is None:
        token = destination.exchange_access_code(TEST_CREDENTIALS.conneqt_access_code)
    destination.token_provider = StaticToken(token)
    return destination


def conneqt_payload(**changes):
    return {
        "topic": "PathologyResult",
        "recipientId": "A81001",
        "nhsNumber": "9434765919",
        "bodyContent": "Full blood count attached",
        "attachments": [{"mimeType": "application/pdf", "fileName": "FBC.pdf", "content": PDF}],
        "codedDataItems": [{"code": "407554009", "value": "140", "unit": "mmHg"}],
        **changes,
    }


def test_conneqt_accepts_what_we_validate_and_records_the_fields(conneqt, session):
    destination = conneqt_destination(conneqt, session)
    payload = conneqt_payload()
    assert destination.validate(payload) == []
    result = destination.send(payload, idempotency_key="1:conneqt")
    assert result.outcome is Outcome.ACCEPTED
    assert conneqt.state.messages[result.remote_id]["recipient"] == "A81001"
    body = conneqt.state.requests[-1].body
    assert body["subject"] == {"id": {"type": "VerifiedNhsNumber", "value": "9434765919"}}
    assert body["attachments"][0]["fileName"] == "FBC.pdf"
    # the recording masks every key named "code" (meant for OAuth codes), SNOMED codes too
    assert body["codedDataItems"][0]["value"] == 140


def test_conneqt_resend_is_recognised_as_a_duplicate(conneqt, session):
    destination = conneqt_destination(conneqt, session)
    first = destination.send(conneqt_payload(), idempotency_key="2:conneqt")
    again = destination.send(conneqt_payload(), idempotency_key="2:conneqt")
    assert first.remote_id == again.remote_id
    assert again.outcome is Outcome.ACCEPTED
    assert conneqt.state.duplicates[first.remote_id] == 1


def test_conneqt_problem_details_reach_the_result(conneqt, session):
    # validate() would refuse this NHS number; sending it anyway shows the RFC 7807 path
    result = conneqt_destination(conneqt, session).send(
        conneqt_payload(nhsNumber="9434765918", recipientId="UNKNOWN1"), idempotency_key="3"
    )
    assert result.outcome is Outcome.REJECTED
    assert result.http_status == 400
    names = {p.name for p in result.invalid_parameters}
    assert {"recipient", "subject.id.value"} <= names


def test_conneqt_wrong_token_is_an_auth_failure(conneqt, session):
    result = conneqt_destination(conneqt, session, token="not-a-token").send(
        conneqt_payload(), idempotency_key="4"
    )
    assert result.outcome is Outcome.AUTH_FAILED


def test_conneqt_unauthorised_client_holds_the_destination(conneqt, session):
    destination = conneqt_destination(
        conneqt, session, api_key=TEST_CREDENTIALS.conneqt_unauthorised_api_key, token="whatever"
    )
    result = destination.send(conneqt_payload(), idempotency_key="5")
    assert (result.outcome, result.hold) == (Outcome.AUTH_FAILED, "forbidden")


def test_conneqt_status_moves_to_completed(conneqt, session, clock):
    destination = conneqt_destination(conneqt, session)
    result = destination.send(conneqt_payload(), idempotency_key="6:conneqt")
    assert [u.state for u in destination.check_status(result.remote_id)] == ["pending"]
    advance(clock, 6)
    assert [u.state for u in destination.check_status(result.remote_id)] == ["delivered"]


def test_conneqt_429_carries_retry_after(conneqt, session):
    destination = conneqt_destination(conneqt, session)
    on_reactor(conneqt.set_faults, throttle_next=1, retry_after_s=3)
    result = destination.send(conneqt_payload(), idempotency_key="7")
    assert (result.outcome, result.retry_after_s) == (Outcome.RETRY, 3.0)
    assert destination.send(conneqt_payload(), idempotency_key="7").outcome is Outcome.ACCEPTED


def test_conneqt_blackhole_times_out_and_is_retried(conneqt, session):
    destination = conneqt_destination(conneqt, session, read_timeout_s=0.3)
    on_reactor(conneqt.set_faults, blackhole_next=1)
    result = destination.send(conneqt_payload(), idempotency_key="8")
    assert (result.outcome, result.reason) == (Outcome.RETRY, "conneqt: timed out")


def test_conneqt_refused_connection_is_retried(conneqt, session):
    destination = conneqt_destination(conneqt, session)
    on_reactor(conneqt.set_faults, outage="refuse")
    result = destination.send(conneqt_payload(), idempotency_key="9")
    on_reactor(conneqt.set_faults, outage=None)
    assert (result.outcome, result.reason) == (Outcome.RETRY, "conneqt: ConnectionError")


# -- MedAllies ---------------------------------------------------------------------------


@pytest.fixture
def medallies(sandboxes):
    return fresh(sandboxes, "medallies")


def medallies_destination(sandbox, session, password=TEST_CREDENTIALS.medallies_password):
    table = {
        "base_url": f"{sandbox.base_url}/MessagingAPI",
        "username": "courier",
        "password": password,
        "from_direct_address": "lab@direct.example.org",
    }
    return MedAlliesDestination(make_settings(MedAlliesDestination, table), session)


MEDALLIES_PAYLOAD = {
    "toDirectAddress": "smith@direct.example.org,jones@direct.example.org",
    "messageSubject": "Radiology report",
    "emailAttachmentList": [
        {
            "attachmentClass": "application/pdf",
            "attachmentContent": PDF,
            "attachmentTitle": "MR Lumbar Spine",
            "attachmentFileName": "mr",
        }
    ],
    "patientLastname": "Kramden",
    "patientDOB": "19160226",
    "xdm": "true",
}


def test_medallies_send_and_status_to_dispatched(medallies, session, clock):
    destination = medallies_destination(medallies, session)
    assert destination.validate(MEDALLIES_PAYLOAD) == []
    result = destination.send(MEDALLIES_PAYLOAD, idempotency_key="1:medallies")
    assert result.outcome is Outcome.ACCEPTED
    assert result.remote_id.startswith("urn:uuid:")
    assert medallies.state.requests[-1].body["xdm"] is True
    advance(clock, 3)
    states = {u.state for u in destination.check_status(result.remote_id)}
    assert states == {"delivered"}


def test_medallies_wrong_password_is_an_auth_failure(medallies, session):
    result = medallies_destination(medallies, session, "wrong").send(MEDALLIES_PAYLOAD, idempotency_key="2")
    assert result.outcome is Outcome.AUTH_FAILED


@pytest.mark.parametrize("fault", [{"throttle_next": 1}, {"outage": "503"}, {"fail_next": 1}])
def test_medallies_transient_faults_are_retried(medallies, session, fault):
    on_reactor(medallies.set_faults, **fault)
    result = medallies_destination(medallies, session).send(MEDALLIES_PAYLOAD, idempotency_key="3")
    assert result.outcome is Outcome.RETRY


# -- Qliq --------------------------------------------------------------------------------


@pytest.fixture
def qliq(sandboxes):
    return fresh(sandboxes, "qliq")


def qliq_destination(sandbox, session, api_key=TEST_CREDENTIALS.qliq_api_key):
    table = {"base_url": sandbox.base_url, "api_key": api_key}
    return QliqDestination(make_settings(QliqDestination, table), session)


def test_qliq_attachments_share_one_conversation(qliq, session):
    payload = {
        "to": "doctor@sandbox.qliq",
        "from": "nurse@sandbox.qliq",
        "subject": "Discharge",
        "text": "Discharge summary " + "x" * 200,
        "priority": "asap",
        "attachments": [
            {"content_type": "application/pdf", "file_name": "summary.pdf", "base64": PDF},
            {"content_type": "image/png", "file_name": "wound.png", "base64": PNG},
        ],
    }
    destination = qliq_destination(qliq, session)
    assert destination.validate(payload) == []
    result = destination.send(payload, idempotency_key="1")
    assert result.outcome is Outcome.ACCEPTED
    messages = list(qliq.state.messages.values())
    assert [m["attachment"]["file_name"] for m in messages] == ["summary.pdf", "wound.png"]
    assert {m["conversation_id"] for m in messages} == {result.conversation_id}


def test_qliq_status_moves_per_recipient(qliq, session, clock):
    destination = qliq_destination(qliq, session)
    result = destination.send({"to": "469841783", "text": "On-call handover"}, idempotency_key="2")
    assert {u.state for u in destination.check_status(result.remote_id)} == {"pending"}
    advance(clock, 6)
    updates = destination.check_status(result.remote_id)
    assert len(updates) == 3
    assert {u.state for u in updates} == {"read"}


def test_qliq_sms_reaches_the_sandbox(qliq, session):
    payload = {"to": "4693110979", "text": "Please call the clinic", "no_phi": True}
    destination = qliq_destination(qliq, session)
    assert destination.validate(payload) == []
    assert destination.send(payload, idempotency_key="3").outcome is Outcome.ACCEPTED


def test_qliq_wrong_key_is_an_auth_failure(qliq, session):
    result = qliq_destination(qliq, session, api_key="wrong").send(
        {"to": "doctor@sandbox.qliq", "text": "x"}, idempotency_key="4"
    )
    assert result.outcome is Outcome.AUTH_FAILED


def test_qliq_unknown_sender_holds_the_destination(qliq, session):
    """403 "Not allowed to send message": the sender set-up, not the message, is wrong."""
    result = qliq_destination(qliq, session).send(
        {"to": "doctor@sandbox.qliq", "from": "stranger@example.org", "text": "x"},
        idempotency_key="5",
    )
    assert (result.outcome, result.http_status, result.hold) == (Outcome.AUTH_FAILED, 403, "forbidden")


# -- KPN ---------------------------------------------------------------------------------


@pytest.fixture
def kpn(sandboxes):
    return fresh(sandboxes, "kpn")


def authorised_kpn(sandbox, session) -> KpnDestination:
    """Run the three legs of ``courier kpn authorize`` against the sandbox."""
    table = {
        "base_url": f"{sandbox.base_url}/communication/kpn/healthcare-messenger",
        "client_id": "sandbox-kpn-client",
        "client_secret": TEST_CREDENTIALS.kpn_client_secret,
        "authorize_url": f"{sandbox.base_url}/healthcaremessenger_oauth/authorize",
        "token_url": f"{sandbox.base_url}/healthcaremessenger_oauth/token",
        "redirect_uri": f"http://127.0.0.1:{free_port()}/callback",
    }
    destination = KpnDestination(make_settings(KpnDestination, table), session)
    state = new_state()
    receiver = RedirectReceiver.for_redirect_uri(table["redirect_uri"], state)
    requests.get(destination.authorization_url(state), timeout=5)  # the operator's browser
    token = destination.exchange_code(receiver.wait(timeout=5))
    destination.token_provider = StaticToken(token.access_token)
    return destination


def test_kpn_oauth_then_a_message_to_a_group_chat_by_aux_id(kpn, session):
    destination = authorised_kpn(kpn, session)
    payload = {"chat_type": "groupchat", "aux_id": "ward-7", "body": "Discharge letter ready"}
    assert destination.validate(payload) == []
    result = destination.send(payload, idempotency_key="1")
    assert result.outcome is Outcome.ACCEPTED
    assert kpn.state.requests[-1].path.endswith("/aux/groupchats/ward-7/messages")


def test_kpn_attachments_arrive_as_files(kpn, session):
    destination = authorised_kpn(kpn, session)
    payload = {
        "chat_type": "conversation",
        "chat_id": "sandbox-user-1",
        "body": "See letter",
        "attachments": [{"file_name": "letter.pdf", "mime_type": "application/pdf", "content": PDF}],
    }
    result = destination.send(payload, idempotency_key="2")
    assert result.outcome is Outcome.ACCEPTED
    files = kpn.state.requests[-1].body["files"]
    assert [f["filename"] for f in files] == ["letter.pdf"]


def test_kpn_unknown_chat_is_rejected(kpn, session):
    result = authorised_kpn(kpn, session).send(
        {"chat_type": "groupchat", "aux_id": "no-such-ward", "body": "x"}, idempotency_key="3"
    )
    assert (result.outcome, result.http_status) == (Outcome.REJECTED, 404)


def test_kpn_expired_token_asks_for_authorisation(kpn, session):
    on_reactor(kpn.configure, {"token_ttl_s": 0.2})
    destination = authorised_kpn(kpn, session)
    time.sleep(0.3)
    result = destination.send(
        {"chat_type": "groupchat", "chat_id": "sandbox-group-1", "body": "x"}, idempotency_key="4"
    )
    on_reactor(kpn.configure, {"token_ttl_s": 3 * 24 * 3600})
    assert result.outcome is Outcome.AUTH_FAILED
    assert result.reason.startswith(TOKEN_EXPIRED)


def test_kpn_queues_of_two_nodes_sharing_a_client_id_never_meet_the_sandboxs_limit(
    reactor, kpn, session, tmp_path
):
    """Two destinations on one client id, served by two nodes' queues (each with its own store
    connection) on one store: the sandbox's sliding window of 30 calls a second answers no 429."""
    token = authorised_kpn(kpn, session).token_provider
    base_url = f"{kpn.base_url}/communication/kpn/healthcare-messenger"
    wards = {"ward-a": "sandbox-kpn-client", "ward-b": "sandbox-kpn-client"}
    (channel,) = load_channels([kpn_channel_file(tmp_path, base_url, 30, wards)], env={})
    key = os.urandom(32)
    nodes = [Engine(reactor, tmp_path / "courier.sqlite3", key, channel, f"node-{n}") for n in (1, 2)]
    services = []
    try:
        services = [on_reactor(serve, reactor, node.store, channel, token) for node in nodes]
        nodes[0].receive(30)
        for queue in (queue for service in services for queue in service.queues.values()):
            on_reactor(queue.wake)

        def deliveries():
            return on_reactor(nodes[0].store.list_deliveries, channel="wards", limit=100)

        wait_for(lambda: {d.state for d in deliveries()} == {SENT}, 15, "all sent")
        assert [d.attempts for d in deliveries()] == [1] * 60  # none answered 429 and retried
    finally:
        for service in services:
            on_reactor(service.stopService)
        for node in nodes:
            node.close()


# -- shipped mappings end to end ---------------------------------------------------------

SETTINGS_FOR_SANDBOX = {
    "conneqt": lambda base: {"base_url": base, "api_key": TEST_CREDENTIALS.conneqt_api_key},
    "medallies": lambda base: {
        "base_url": f"{base}/MessagingAPI",
        "username": "courier",
        "password": TEST_CREDENTIALS.medallies_password,
        "from_direct_address": "lab@direct.example.org",
    },
    "qliq": lambda base: {"base_url": base, "api_key": TEST_CREDENTIALS.qliq_api_key},
}


@pytest.mark.parametrize(
    ("mapping", "sample"),
    [
        ("oru_r01_to_conneqt.toml", "oru_r01_lab_fbc_pdf.hl7"),
        ("oru_r01_to_medallies.toml", "oru_r01_radiology_mri.hl7"),
        ("mdm_t02_to_qliq.toml", "mdm_t02_discharge_summary.hl7"),
    ],
)
def test_shipped_mappings_pass_preflight_and_the_sandbox_accepts_them(sandboxes, session, mapping, sample):
    root = Path(__file__).resolve().parent.parent
    loaded = load_mapping(root / "mappings" / mapping)
    payload = loaded.apply(
        Message.parse((root / "sample_messages" / sample).read_bytes()), context={"channel": "test"}
    )
    sandbox = fresh(sandboxes, loaded.output)
    cls = destination_class(loaded.output)
    destination = cls(make_settings(cls, SETTINGS_FOR_SANDBOX[loaded.output](sandbox.base_url)), session)
    if loaded.output == "conneqt":
        destination.token_provider = StaticToken(
            destination.exchange_access_code(TEST_CREDENTIALS.conneqt_access_code)
        )
    assert destination.validate(payload) == []
    result = destination.send(payload, idempotency_key=f"{sample}:{mapping}")
    assert result.outcome is Outcome.ACCEPTED, result.reason


def test_the_shipped_kpn_mapping_reaches_the_care_team_chat(kpn, session):
    root = Path(__file__).resolve().parent.parent
    loaded = load_mapping(root / "mappings" / "mdm_to_kpn.toml")
    message = Message.parse((root / "sample_messages" / "mdm_t02_discharge_summary.hl7").read_bytes())
    payload = loaded.apply(message, context={"channel": "test"})
    on_reactor(kpn.directory.aux_groupchats.__setitem__, payload["aux_id"], "sandbox-group-1")
    destination = authorised_kpn(kpn, session)
    assert destination.validate(payload) == []
    result = destination.send(payload, idempotency_key="mdm:kpn")
    on_reactor(kpn.directory.aux_groupchats.pop, payload["aux_id"])
    assert result.outcome is Outcome.ACCEPTED, result.reason


# -- HTTPS with the sandbox CA -----------------------------------------------------------


@pytest.fixture(scope="module")
def https_medallies(reactor, tmp_path_factory):
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    sandbox = MedAlliesSandbox(reactor, credentials=TEST_CREDENTIALS)
    on_reactor(sandbox.listen, tls=certs.server_tls())
    yield sandbox, certs
    on_reactor(sandbox.stop)


def test_https_is_verified_against_the_configured_ca(https_medallies, session):
    sandbox, certs = https_medallies
    assert sandbox.base_url.startswith("https://127.0.0.1:")
    table = {
        "base_url": f"{sandbox.base_url}/MessagingAPI",
        "username": "courier",
        "password": TEST_CREDENTIALS.medallies_password,
        "from_direct_address": "lab@direct.example.org",
    }
    trusted = MedAlliesDestination(
        make_settings(MedAlliesDestination, {**table, "ca_file": str(certs.ca_cert)}), session
    )
    assert trusted.send(MEDALLIES_PAYLOAD, idempotency_key="tls").outcome is Outcome.ACCEPTED
    untrusted = MedAlliesDestination(make_settings(MedAlliesDestination, table), session)
    result = untrusted.send(MEDALLIES_PAYLOAD, idempotency_key="tls")
    assert (result.outcome, result.hold) == (Outcome.AUTH_FAILED, "tls")
    assert result.reason == "medallies: TLS certificate not verified: check base_url and ca_file (SSLError)"
