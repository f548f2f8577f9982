"""Statuses back as HL7 (issue "statuses"): what the sending system's listener receives.

A sample goes in over MLLP to its example channel; the vendor sandbox moves it through its
states, forced through its control API over HTTP, and the engine's poller asks the vendor;
the hospital's test listener receives the status ACKs in order, each answering the original
MSH-10, with MSA-1, ERR and ZDS as documented in :mod:`engine.status.messages`.
"""

from __future__ import annotations

import time

import pytest

from engine.message import Message
from tests.support import e2e
from tests.support.e2e import force_status, sample, with_msh

sandboxes, hospital, store, engine = e2e.sandboxes, e2e.hospital, e2e.store, e2e.engine  # fixtures


def assert_status(
    message: Message,
    *,
    answers: str,
    code: str,
    event: str,
    state: str,
    channel: str,
    destination: str,
    vendor: str,
    remote_id: str,
) -> None:
    """One status ACK, field by field."""
    msh = message.segment("MSH")
    assert message.message_type == "ACK"
    assert (msh.value(15), msh.value(16)) == ("AL", "NE"), "asks the hospital for a commit ACK"
    assert (message.segment("MSA").value(1), message.segment("MSA").value(2)) == (code, answers)
    zds = message.segment("ZDS")
    fields = [zds.value(n) for n in (1, 3, 4, 5, 7, 8)]
    assert fields == [event, destination, vendor, remote_id, state, channel]
    assert len(zds.value(2)) == len("20240131142501+0000") and zds.value(2).endswith("+0000")
    err = message.segment("ERR")
    if code == "AA":
        assert err is None
    else:
        assert err.value(3, component=1) == "207" and err.value(4) == "E"
        assert destination in err.value(8)


@pytest.mark.parametrize(("control_id", "app_ack"), [("EPR-Q-1", "AL"), ("EPR-Q-2", "")])
def test_qliq_reports_accepted_delivered_read_in_order(engine, hospital, sandboxes, control_id, app_ack):
    """MSH-16 AL asks for every status; in original mode (MSH-15/16 empty) the example channel's
    events ask for the same, since Qliq's message_status gives delivered_at and read_at."""
    raw = with_msh(sample("mdm_t02_discharge_summary.hl7"), control_id=control_id, app_ack=app_ack)
    engine.send("ehr-mdm-to-qliq", raw)
    delivery = engine.wait_state(control_id, "SENT")
    common = {
        "answers": control_id,
        "code": "AA",
        "channel": "ehr-mdm-to-qliq",
        "destination": "care-team-qliq",
        "vendor": "qliq",
        "remote_id": delivery.remote_id,
    }
    [accepted] = hospital.wait_about(control_id, 1)
    assert_status(accepted, event="accepted", state="SENT", **common)

    for status, count, state in (("delivered", 2, "DELIVERED"), ("read", 3, "READ")):
        force_status(sandboxes.qliq, delivery.remote_id, status=status)
        engine.poll_now(control_id)
        reports = hospital.wait_about(control_id, count)
        assert len(reports) == count
        assert_status(reports[-1], event=status, state=state, **common)
        recipients = [r["to"] for r in sandboxes.qliq.state.messages[delivery.remote_id]["recipients"]]
        assert reports[-1].segment("ZDS").value(6) in recipients
    assert engine.wait_state(control_id, "READ")


def test_conneqt_reports_delivered_rejected_and_expired(engine, hospital, sandboxes):
    """Original mode: the channel asks for delivered and failed (expired counts as failed).

    A REJECTED status comes after conneQt accepted the message, so it is a delivery failure
    (AE, event ``failed``, the vendor's word in ERR-8), not the send-time rejection (AR).
    """
    outcomes = {
        "LAB-C-1": ("COMPLETED", "delivered", "AA", "DELIVERED"),
        "LAB-C-2": ("REJECTED", "failed", "AE", "ERROR"),
        "LAB-C-3": ("EXPIRED", "expired", "AE", "ERROR"),
    }
    for control_id in outcomes:
        raw = with_msh(sample("oru_r01_lab_fbc_pdf.hl7"), control_id=control_id, app_ack="")
        assert engine.send("lis-oru-to-conneqt", raw).segment("MSA").value(1) == "AA"
    for control_id, (vendor_status, event, code, state) in outcomes.items():
        delivery = engine.wait_state(control_id, "SENT")
        force_status(sandboxes.conneqt, delivery.remote_id, status=vendor_status)
        engine.poll_now(control_id)
        [report] = hospital.wait_about(control_id, 1)
        assert_status(
            report,
            answers=control_id,
            code=code,
            event=event,
            state=state,
            channel="lis-oru-to-conneqt",
            destination="gp-conneqt",
            vendor="conneqt",
            remote_id=delivery.remote_id,
        )
        engine.wait_state(control_id, state)
    rejected, expired = hospital.about("LAB-C-2")[0], hospital.about("LAB-C-3")[0]
    assert "REJECTED" in rejected.segment("ERR").value(8)
    assert "expired" in expired.segment("ERR").value(8).lower()


def test_medallies_reports_dispatched_as_delivered_and_failed_as_failed(engine, hospital, sandboxes):
    """The radiology sample is original mode; the channel reports delivered and failed (default)."""
    for control_id in ("RAD-M-1", "RAD-M-2"):
        raw = with_msh(sample("oru_r01_radiology_mri.hl7"), control_id=control_id)
        engine.send("ris-oru-to-medallies", raw)
    ok, failed = engine.wait_state("RAD-M-1", "SENT"), engine.wait_state("RAD-M-2", "SENT")
    common = {"channel": "ris-oru-to-medallies", "destination": "referrers-direct", "vendor": "medallies"}

    force_status(sandboxes.medallies, ok.remote_id, status="PROCESSED")
    force_status(sandboxes.medallies, ok.remote_id, status="DISPATCHED")
    engine.poll_now("RAD-M-1")
    [delivered] = hospital.wait_about("RAD-M-1", 1)
    assert_status(
        delivered,
        answers="RAD-M-1",
        code="AA",
        event="delivered",
        state="DELIVERED",
        remote_id=ok.remote_id,
        **common,
    )

    force_status(sandboxes.medallies, failed.remote_id, status="FAILED")
    engine.poll_now("RAD-M-2")
    [failure] = hospital.wait_about("RAD-M-2", 1)
    assert_status(
        failure,
        answers="RAD-M-2",
        code="AE",
        event="failed",
        state="ERROR",
        remote_id=failed.remote_id,
        **common,
    )
    assert engine.wait_state("RAD-M-2", "ERROR")


def test_kpn_reports_accepted_and_nothing_more(engine, hospital, sandboxes):
    """KPN documents no delivered or read state: ACCEPTED (SENT) is the last word."""
    raw = with_msh(sample("mdm_t02_escapes_lf.hl7"), control_id="EPR-K-1", app_ack="AL")
    engine.send("ehr-mdm-to-kpn", raw)
    delivery = engine.wait_state("EPR-K-1", "SENT")
    [accepted] = hospital.wait_about("EPR-K-1", 1)
    assert_status(
        accepted,
        answers="EPR-K-1",
        code="AA",
        event="accepted",
        state="SENT",
        channel="ehr-mdm-to-kpn",
        destination="ward-kpn",
        vendor="kpn",
        remote_id=delivery.remote_id,
    )
    assert "ward-kpn" not in engine.engine.deliveries.pollers
    time.sleep(0.3)
    assert len(hospital.about("EPR-K-1")) == 1
