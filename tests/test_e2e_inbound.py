"""What the vendors push to the engine's webhook endpoint, through to the hospital.

MedAllies DSNs move deliveries on and are reported as status ACKs.

A Qliq recipient's reply, encrypted by the sandbox with the public key Courier uploaded,
reaches the hospital as HL7 with the decrypted text and attachment; a tampered or wrongly
keyed reply is refused with a log line and the engine carries on. A MedAllies inbound Direct
message with two attachments reaches the hospital as MDM^T02 with two OBX ED segments, and
the webhook answers 200 only once it is stored.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests

from courier_sandbox.http import Part, encode_multipart
from engine.destinations.qliq.keys import generate_key_pair, upload_public_key
from engine.message import Message
from engine.store.base import SENT
from tests.conftest import on_reactor
from tests.support import e2e
from tests.support.e2e import (
    RunningEngine,
    example_channels,
    force_status,
    reset_sandboxes,
    sample,
    wait_for,
    with_msh,
)

sandboxes, hospital, store = e2e.sandboxes, e2e.hospital, e2e.store  # fixtures

QLIQ_SENDER = "poc@sandbox.qliq"  # the sandbox's point of contact, the sender of our messages
PDF = b"%PDF-1.4\n% a scanned reply\n"
REPLY_ROUTE = "qliq/ehr-mdm-to-qliq/care-team-qliq/replies"


def upload(sandboxes, public_pem: bytes) -> None:
    with requests.Session() as session:
        upload_public_key(
            session, sandboxes.qliq.base_url, sandboxes.credentials.qliq_api_key, QLIQ_SENDER, public_pem
        )


@pytest.fixture
def reply_key(tmp_path, sandboxes) -> bytes:
    """Courier's reply key pair (private key file for the engine); the public key uploaded."""
    reset_sandboxes(sandboxes)
    public_pem = generate_key_pair(tmp_path / "qliq_reply_key.pem")
    upload(sandboxes, public_pem)
    return public_pem


@pytest.fixture
def engine(reactor, sandboxes, hospital, store, tmp_path, reply_key) -> Iterator[RunningEngine]:
    """The example channels with the engine's webhooks served and the Qliq reply key set."""
    channels = []
    for channel in example_channels(sandboxes, hospital.port):
        (destination,) = channel.destinations
        if channel.name == "ehr-mdm-to-qliq":
            settings = {
                **destination.settings,
                "reply_key_file": tmp_path / "qliq_reply_key.pem",
                "reply_sender": QLIQ_SENDER,
                "reply_webhook_token": secrets.token_urlsafe(16),
            }
            channel = replace(channel, destinations=(replace(destination, settings=settings),))
        if channel.name == "ris-oru-to-medallies":  # statuses by DSN webhook only
            no_polls = replace(destination.status, poll=False)
            channel = replace(channel, destinations=(replace(destination, status=no_polls),))
        channels.append(channel)
    running = RunningEngine(reactor, sandboxes, store, channels, webhook_endpoint="tcp:0:interface=127.0.0.1")
    yield running
    running.stop()


def documents(hospital) -> list[Message]:
    return [m for m in list(hospital.messages) if m.message_type == "MDM"]


def sent_to_qliq(engine, sandboxes, control_id: str) -> str:
    """Send the discharge summary under ``control_id``; Qliq's message id once SENT."""
    engine.send("ehr-mdm-to-qliq", with_msh(sample("mdm_t02_discharge_summary.hl7"), control_id=control_id))
    return engine.wait_state(control_id, SENT).remote_id


def test_a_qliq_reply_reaches_the_hospital_decrypted_with_its_attachment(engine, sandboxes, hospital):
    qliq_id = sent_to_qliq(engine, sandboxes, "EPR-REPLY-1")
    entry = on_reactor(
        sandboxes.qliq.reply,
        qliq_id,
        "Seen, thanks. Scan attached.",
        attachment=Part("attachment", "scan.pdf", "application/pdf", PDF),
    )
    assert entry["status"] == 200

    [document] = wait_for(lambda: documents(hospital), what="the reply at the hospital")
    assert document.get("MSH-9").startswith("MDM^T02")
    assert document.get("TXA-13") == "EPR-REPLY-1", "answers the original message"
    assert document.get("PID-3.1") == "E4445556"
    text, attachment = [s for s in document.all("OBX")]
    assert (text.value(2), text.value(5)) == ("TX", "Seen, thanks. Scan attached.")
    assert attachment.value(2) == "ED"
    assert attachment.value(5, component=4) == "Base64"
    assert base64.b64decode(attachment.value(5, component=5)) == PDF
    assert "scan.pdf" in attachment.value(3)


def test_a_wrongly_keyed_reply_is_refused_with_a_log_line_and_the_engine_carries_on(
    engine, sandboxes, hospital, tmp_path, reply_key, caplog
):
    qliq_id = sent_to_qliq(engine, sandboxes, "EPR-REPLY-2")
    upload(sandboxes, generate_key_pair(tmp_path / "someone_elses_key.pem"))
    with caplog.at_level(logging.WARNING):
        entry = on_reactor(sandboxes.qliq.reply, qliq_id, "For someone else's eyes")
    assert entry["status"] == 400, "refused for good: resending the same ciphertext cannot help"
    assert any(f"webhook {REPLY_ROUTE}: refused" in r.getMessage() for r in caplog.records)
    assert "someone else" not in caplog.text, "no message text in the log"

    upload(sandboxes, reply_key)
    assert on_reactor(sandboxes.qliq.reply, qliq_id, "Now readable")["status"] == 200
    [document] = wait_for(lambda: documents(hospital), what="the readable reply")
    assert document.all("OBX")[0].value(5) == "Now readable"


def test_a_tampered_reply_is_refused_with_a_log_line(engine, sandboxes, hospital, caplog):
    qliq_id = sent_to_qliq(engine, sandboxes, "EPR-REPLY-3")
    original = sandboxes.qliq.state.messages[qliq_id]
    garbage = base64.b64encode(bytes(range(256)) * 2)  # not our ciphertext
    body, content_type = encode_multipart(
        {"conversation_id": original["conversation_id"], "message_id": "tampered"},
        [Part("message", "message", "text/plain", garbage)],
        boundary="e2e-boundary",
    )
    with caplog.at_level(logging.WARNING):
        answer = requests.post(
            sandboxes.qliq.reply_url, data=body, headers={"Content-Type": content_type}, timeout=5
        )
    assert answer.status_code == 400
    assert any(f"webhook {REPLY_ROUTE}: refused" in r.getMessage() for r in caplog.records)
    assert on_reactor(sandboxes.qliq.reply, qliq_id, "Genuine")["status"] == 200
    [document] = wait_for(lambda: documents(hospital), what="the genuine reply")
    assert document.all("OBX")[0].value(5) == "Genuine"


def test_a_medallies_inbound_message_with_two_attachments_becomes_an_mdm_t02(
    engine, sandboxes, hospital, store
):
    attachments = [
        {
            "attachmentClass": "application/pdf",
            "attachmentTitle": "Referral letter",
            "attachmentContent": base64.b64encode(b"%PDF-1.4 letter").decode(),
        },
        {
            "attachmentClass": "image/png",
            "attachmentTitle": "Wound photo",
            "attachmentContent": base64.b64encode(b"\x89PNG photo").decode(),
        },
    ]
    hospital.down()  # down: the answer must not wait for the hospital, only for the store
    entry = on_reactor(
        sandboxes.medallies.send_inbound, {"emailAttachmentList": attachments, "messageBody": "Please review"}
    )
    assert entry["status"] == 200
    pending = on_reactor(store.outbox_next, "ris-oru-to-medallies", float("inf"))
    assert pending is not None, "stored before the 200"
    document = Message.parse(pending.payload)
    assert document.get("MSH-9").startswith("MDM^T02")
    assert document.get("TXA-12") == entry["messageId"]
    text, *eds = document.all("OBX")
    assert "Please review" in text.value(5)
    assert [ed.value(2) for ed in eds] == ["ED", "ED"]
    assert [ed.value(5, component=3) for ed in eds] == ["PDF", "PNG"]
    decoded = [base64.b64decode(ed.value(5, component=5)) for ed in eds]
    assert decoded == [b"%PDF-1.4 letter", b"\x89PNG photo"]


def test_medallies_dsns_pushed_to_the_engine_are_reported_delivered_then_read(engine, sandboxes, hospital):
    raw = with_msh(sample("oru_r01_radiology_mri.hl7"), control_id="RAD-DSN", app_ack="AL")
    engine.send("ris-oru-to-medallies", raw)
    remote_id = engine.wait_state("RAD-DSN", SENT).remote_id
    for status in ("PROCESSED", "DISPATCHED", "DISPLAYED"):
        force_status(sandboxes.medallies, remote_id, status=status)

    reports = hospital.wait_about("RAD-DSN", 3)
    assert [(r.segment("ZDS").value(1), r.segment("ZDS").value(7)) for r in reports] == [
        ("accepted", "SENT"),
        ("delivered", "DELIVERED"),
        ("read", "READ"),
    ]
    assert all(r.segment("MSA").value(1) == "AA" for r in reports)

    # The 200s reach the sandbox on their own connections, maybe after the reports went out.
    def dsn_answers() -> list[int | None]:
        return [w.get("status") for w in sandboxes.medallies.state.webhooks if w["kind"] == "dsn"]

    wait_for(lambda: len(dsn_answers()) == 3 and None not in dsn_answers(), what="three DSN answers")
    assert dsn_answers() == [200, 200, 200]
    assert not any("/dirmsg/status" in r.path for r in sandboxes.medallies.state.requests), "no polling"
