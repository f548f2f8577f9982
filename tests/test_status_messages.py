"""Status messages: MSA codes, ERR, ZDS, MSH-15/16, the original's delimiters, and which are sent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.delivery.transitions import Transition
from engine.destinations.base import InvalidParameter
from engine.message import Message
from engine.status.messages import build_status_message, describe_failure, hl7_time, is_wanted

ORU = (
    b"MSH|^~\\&|LIS|LAB|COURIER|HOSP|20240131120000+0000||ORU^R01^ORU_R01|LAB0001|P|2.5.1\r"
    b"PID|1||123^^^HOSP^MR||DOE^JANE\r"
    b"OBR|1||F1|CBC\r"
)
NOW = datetime(2024, 1, 31, 14, 25, 1, tzinfo=UTC)


def transition(**changes) -> Transition:
    fields = dict(
        delivery_id=7,
        message_id=3,
        channel="lis-oru",
        destination="gp-conneqt",
        control_id="LAB0001",
        state="DELIVERED",
        event="delivered",
        at=NOW.timestamp(),
        remote_id="v-42",
        recipient="gp@example.org",
        detail="",
    )
    return Transition(**{**fields, **changes})


def build(original: bytes = ORU, **changes) -> Message:
    payload = build_status_message(
        Message.parse(original), transition(**changes), vendor="conneqt", control_id="S1", now=NOW
    )
    return Message.parse(payload)


def test_delivered_is_an_application_accept_with_the_status_segment():
    status = build()
    assert status.msh.field(9) == "ACK^R01^ACK"
    assert (status.sending_application, status.sending_facility) == ("COURIER", "HOSP")
    assert (status.receiving_application, status.receiving_facility) == ("LIS", "LAB")
    assert status.control_id == "S1"
    assert status.version == "2.5.1"
    assert (status.accept_ack_type, status.application_ack_type) == ("AL", "NE")
    assert status.get("MSA-1") == "AA" and status.get("MSA-2") == "LAB0001"
    assert status.segment("ERR") is None
    zds = status.segment("ZDS")
    assert [zds.value(n) for n in range(1, 9)] == [
        "delivered",
        "20240131142501+0000",
        "gp-conneqt",
        "conneqt",
        "v-42",
        "gp@example.org",
        "DELIVERED",
        "lis-oru",
    ]


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ("accepted", "AA"),
        ("read", "AA"),
        ("failed", "AE"),
        ("expired", "AE"),
        ("dead_letter", "AE"),
        ("rejected", "AR"),
    ],
)
def test_msa_code_follows_the_event(event, code):
    assert build(event=event, state="ERROR").get("MSA-1") == code


def test_rejection_names_the_vendors_invalid_parameters_in_err():
    status = build(
        event="rejected",
        state="ERROR",
        detail="HTTP 400",
        invalid_parameters=(InvalidParameter("to", "unknown recipient"), InvalidParameter("subject", "")),
    )
    err = status.segment("ERR")
    assert err.value(3, component=1) == "207" and err.value(3, component=3) == "HL70357"
    assert err.value(4) == "E"
    text = err.value(8)
    assert "rejected" in text and "gp-conneqt" in text and "HTTP 400" in text
    assert "to (unknown recipient), subject" in text


def test_uses_the_original_delimiters_and_escapes_values():
    original = ORU.replace(b"|", b"#").replace(b"^", b"$")
    status = build(original, recipient="a#b$c")
    assert status.delimiters.field == "#" and status.delimiters.component == "$"
    assert status.segment("ZDS").value(6) == "a#b$c"
    assert status.get("MSA-2") == "LAB0001"


def test_before_v25_the_error_goes_to_msa3_and_err1():
    status = build(ORU.replace(b"|2.5.1", b"|2.3"), event="failed", state="ERROR")
    assert status.msh.field(9) == "ACK^R01"
    assert "Delivery failed" in status.get("MSA-3")
    assert status.segment("ERR").value(1, component=4, subcomponent=1) == "207"


def test_describe_failure_without_detail():
    assert describe_failure(transition(event="expired")) == (
        "Delivery expired before the recipient got the message (destination gp-conneqt)"
    )


def test_hl7_time_has_an_offset():
    assert hl7_time(NOW.timestamp()) == "20240131142501+0000"


@pytest.mark.parametrize(
    ("msh16", "event", "wanted"),
    [
        ("AL", "read", True),
        ("NE", "failed", False),
        ("ER", "failed", True),
        ("ER", "delivered", False),
        ("SU", "delivered", True),
        ("SU", "rejected", False),
    ],
)
def test_enhanced_mode_follows_msh16(msh16, event, wanted):
    original = Message.parse(ORU.replace(b"|2.5.1\r", b"|2.5.1|||NE|" + msh16.encode() + b"\r"))
    assert is_wanted(original, event, channel_events=()) is wanted


@pytest.mark.parametrize(
    ("event", "wanted"),
    [
        ("accepted", False),
        ("delivered", True),
        ("read", False),
        ("expired", True),
        ("rejected", True),
    ],
)
def test_original_mode_follows_the_channel_events(event, wanted):
    assert is_wanted(Message.parse(ORU), event, channel_events=("delivered", "failed")) is wanted
