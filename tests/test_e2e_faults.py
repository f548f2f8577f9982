"""Fault paths through MLLP and the example channels, with the sandboxes misbehaving.

An outage queues messages and they all arrive once the vendor is back; a 429's Retry-After
is honoured; a rejected message ends in ERROR (reported to the sender) while the messages
behind it still arrive; a message that never gets through is dead-lettered after its
attempts; a slow vendor does not hold up another vendor's deliveries.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from engine.channel.config import Retry
from engine.store.base import ERROR, SENDING, SENT
from tests.conftest import on_reactor
from tests.support import e2e
from tests.support.e2e import (
    RunningEngine,
    example_channels,
    reset_sandboxes,
    sample,
    set_field,
    wait_for,
    with_msh,
)

sandboxes, hospital, store, engine = e2e.sandboxes, e2e.hospital, e2e.store, e2e.engine  # fixtures

PATIENT_RETRY = Retry(
    max_attempts=100, initial_delay_s=0.05, max_delay_s=0.2, factor=2, jitter=0, max_age_s=60
)


@pytest.fixture
def patient_engine(reactor, sandboxes, hospital, store) -> Iterator[RunningEngine]:
    """The example channels with retries that outlast a short outage."""
    reset_sandboxes(sandboxes)
    running = RunningEngine(
        reactor, sandboxes, store, example_channels(sandboxes, hospital.port, retry=PATIENT_RETRY)
    )
    yield running
    running.stop()


def radiology(control_id: str) -> bytes:
    return with_msh(sample("oru_r01_radiology_mri.hl7"), control_id=control_id)


def test_messages_queue_during_an_outage_and_all_arrive_once_after_it(patient_engine, sandboxes):
    medallies = sandboxes.medallies
    outage_s = 1.5
    on_reactor(medallies.set_faults, outage="refuse", restore_after_s=outage_s)
    started = time.time()
    control_ids = [f"RAD-OUT-{n}" for n in range(3)]
    for control_id in control_ids:
        ack = patient_engine.send("ris-oru-to-medallies", radiology(control_id))
        assert ack.segment("MSA").value(1) == "AA"

    deliveries = [patient_engine.wait_state(c, SENT) for c in control_ids]
    first, *later = deliveries
    assert first.attempts > 1, "tried during the outage"
    assert all(d.attempts == 1 for d in later), "one patient (order_by): the later ones waited in line"
    sends = [r for r in medallies.state.requests if r.path.endswith("/dirmsg/send_ccda")]
    assert len(sends) == 3 and all(r.at >= started + outage_s - 0.05 for r in sends)
    assert sorted(medallies.state.messages) == sorted(d.remote_id for d in deliveries)
    assert not medallies.state.duplicates


def test_a_429_retry_after_is_honoured(engine, sandboxes):
    conneqt = sandboxes.conneqt
    on_reactor(conneqt.set_faults, throttle_next=1, retry_after_s=1)
    raw = with_msh(sample("oru_r01_lab_fbc_pdf.hl7"), control_id="LAB-429")
    engine.send("lis-oru-to-conneqt", raw)

    delivery = engine.wait_state("LAB-429", SENT)
    first, second = [r for r in conneqt.state.requests if r.path == "/api/v1/messages/instant"]
    assert first.fault == "429" and second.fault is None
    assert second.at - first.at >= 0.95, "the retry waited for Retry-After, not the 50 ms backoff"
    assert delivery.attempts == 2
    assert list(conneqt.state.messages) == [delivery.remote_id]


def test_a_rejected_message_ends_in_error_and_the_ones_behind_it_arrive(engine, sandboxes, hospital):
    """KPN sends one at a time (concurrency 1); CLINIC4's group chat is unknown to KPN (404)."""
    document = sample("mdm_t02_escapes_lf.hl7")
    unknown_chat = set_field(with_msh(document, control_id="DOC-REJ"), "PV1", 3, "CLINIC4")
    engine.send("ehr-mdm-to-kpn", unknown_chat)
    for n in range(2):
        engine.send("ehr-mdm-to-kpn", with_msh(document, control_id=f"DOC-OK-{n}"))

    rejected = engine.wait_state("DOC-REJ", ERROR)
    assert rejected.attempts == 1, "a rejection is not retried"
    assert [
        engine.wait_state(f"DOC-OK-{n}", SENT).remote_id in sandboxes.kpn.state.messages for n in range(2)
    ] == [True, True]
    [report] = hospital.wait_about("DOC-REJ", 1)
    assert report.segment("MSA").value(1) == "AR"
    assert report.segment("ZDS").value(1) == "rejected"
    assert "404" in report.segment("ERR").value(8)


def test_a_message_that_never_gets_through_is_dead_lettered(engine, sandboxes, hospital):
    """Qliq answers 500 throughout: after the channel's attempts (6 here) the delivery is ERROR."""
    on_reactor(sandboxes.qliq.set_faults, error_rate=1.0)
    raw = with_msh(sample("mdm_t02_discharge_summary.hl7"), control_id="DOC-DEAD", app_ack="AL")
    engine.send("ehr-mdm-to-qliq", raw)
    dead = engine.wait_state("DOC-DEAD", ERROR)
    assert dead.attempts == e2e.FAST_RETRY.max_attempts
    [report] = hospital.wait_about("DOC-DEAD", 1)
    assert (report.segment("MSA").value(1), report.segment("ZDS").value(1)) == ("AE", "dead_letter")

    on_reactor(sandboxes.qliq.set_faults, error_rate=0.0)
    engine.send("ehr-mdm-to-qliq", with_msh(raw, control_id="DOC-NEXT"))
    assert engine.wait_state("DOC-NEXT", SENT).remote_id in sandboxes.qliq.state.messages


def test_a_slow_vendor_does_not_delay_another_vendors_deliveries(engine, sandboxes):
    on_reactor(sandboxes.medallies.set_faults, latency_s=3.0)
    engine.send("ris-oru-to-medallies", radiology("RAD-SLOW"))
    wait_for(lambda: engine.deliveries("RAD-SLOW")[0].state == SENDING, what="the slow send under way")

    sent_at = time.monotonic()
    engine.send("ehr-mdm-to-qliq", with_msh(sample("mdm_t02_discharge_summary.hl7"), control_id="DOC-FAST"))
    engine.wait_state("DOC-FAST", SENT, timeout=2.0)
    assert time.monotonic() - sent_at < 2.0
    assert engine.deliveries("RAD-SLOW")[0].state == SENDING, "MedAllies is still answering"
    engine.wait_state("RAD-SLOW", SENT)
