"""engine.message.ack: ACK structure per version and mode, checked with our reader and python-hl7."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import hl7
import pytest

from engine.message import (
    ACCEPT,
    ERROR,
    REJECT,
    AckError,
    Message,
    Path,
    build_ack,
    build_batch_ack,
    build_unreadable_nak,
    commit_ack_wanted,
    is_enhanced_mode,
    split_batch,
)

WHEN = datetime(2024, 1, 31, 14, 25, 1, tzinfo=timezone(timedelta(hours=1)))
MISSING_ID = AckError(101, "Patient identifier | missing", Path.parse("PID-3"))


def received(
    version: str = "2.5.1",
    msh15: str = "",
    msh16: str = "",
    msh18: str = "",
    fs: str = "|",
    enc: str = "^~\\&",
) -> Message:
    fields = [
        "MSH",
        enc,
        "LAB^1.2.3^ISO",
        "HOSP",
        "COURIER",
        "DEST",
        "20240131142400",
        "",
        "ORU^R01^ORU_R01",
        "CTL-77",
        "P",
        version,
        "",
        "",
        msh15,
        msh16,
        "",
        msh18,
    ]
    fields[2:] = [field.replace("^", enc[0]) for field in fields[2:]]
    text = fs.join(fields) + "\rPID" + fs + "1" + fs * 2 + "123\r"
    return Message.parse(text.encode("utf-8"))


def ack(message: Message, outcome: str = ACCEPT, **kwargs) -> Message:
    kwargs.setdefault("control_id", "ACK-1")
    kwargs.setdefault("timestamp", WHEN)
    data = build_ack(message, outcome, **kwargs)
    assert data.endswith(b"\r") and not data.startswith(b"\x0b")
    independent = hl7.parse(data.decode(message.charset))  # python-hl7 reads it too
    assert str(independent.segment("MSA")[2]) == message.msh.field(10)
    return Message.parse(data)


def test_accept_ack_header_swaps_sender_and_receiver_and_echoes_the_rest():
    reply = ack(received())
    msh = reply.msh
    assert msh.field(3) == "COURIER" and msh.field(4) == "DEST"
    assert msh.field(5) == "LAB^1.2.3^ISO" and msh.field(6) == "HOSP"
    assert msh.field(7) == "20240131142501+0100"
    assert msh.field(9) == "ACK^R01^ACK"
    assert reply.control_id == "ACK-1"
    assert reply.processing_id == "P"
    assert reply.version == "2.5.1"
    assert [s.name for s in reply.segments] == ["MSH", "MSA"]
    assert reply.get("MSA-1") == "AA"
    assert reply.get("MSA-2") == "CTL-77"


def test_each_ack_gets_its_own_time_and_control_ids():
    """One sender's ACKs share their shape; the time and both control IDs are each ACK's own."""
    first = received()
    second = Message.parse(first.raw.replace(b"CTL-77", b"CTL-78"))
    utc = WHEN.astimezone(UTC)  # the same instant as WHEN, written another way
    replies = [ack(first), ack(second, control_id="ACK-2", timestamp=utc + timedelta(seconds=1)), ack(first)]
    assert [r.msh.field(7) for r in replies] == [
        "20240131142501+0100",
        "20240131132502+0000",
        "20240131142501+0100",
    ]
    assert [r.control_id for r in replies] == ["ACK-1", "ACK-2", "ACK-1"]
    assert [r.get("MSA-2") for r in replies] == ["CTL-77", "CTL-78", "CTL-77"]
    assert ack(first, timestamp=utc).msh.field(7) == "20240131132501+0000"


@pytest.mark.parametrize(("outcome", "code"), [(ACCEPT, "AA"), (ERROR, "AE"), (REJECT, "AR")])
def test_original_mode_codes(outcome, code):
    reply = ack(received(), outcome, errors=[MISSING_ID] if outcome != ACCEPT else ())
    assert reply.get("MSA-1") == code
    assert reply.get("MSA-2") == "CTL-77"


@pytest.mark.parametrize(("outcome", "code"), [(ACCEPT, "CA"), (ERROR, "CE"), (REJECT, "CR")])
def test_enhanced_mode_codes_follow_msh_15_16(outcome, code):
    message = received(msh15="AL", msh16="NE")
    assert is_enhanced_mode(message)
    assert ack(message, outcome).get("MSA-1") == code
    assert ack(message, outcome, enhanced=False).get("MSA-1") == "A" + outcome
    assert ack(received(), outcome, enhanced=True).get("MSA-1") == code


def test_v25_errors_go_to_err_2_3_4_and_8():
    reply = ack(received("2.5"), ERROR, errors=[MISSING_ID, AckError(207, "store down", severity="F")])
    errs = reply.all("ERR")
    assert len(errs) == 2
    first = errs[0]
    assert first.field(1) == ""
    assert first.field(2) == "PID^1^3"
    assert first.value(3, component=1) == "101"
    assert first.value(3, component=2) == "Patient identifier | missing"
    assert first.value(3, component=3) == "HL70357"
    assert first.field(4) == "E"
    assert first.field(8) == "Patient identifier \\F\\ missing"
    assert first.value(8) == "Patient identifier | missing"
    assert errs[1].field(2) == ""
    assert errs[1].field(4) == "E"  # "F" does not exist before v2.7
    assert reply.get("MSA-3") == ""


def test_v27_keeps_fatal_severity():
    reply = ack(received("2.7"), REJECT, errors=[AckError(207, "store down", severity="F")])
    assert reply.get("ERR-4") == "F"


def test_warnings_ride_on_an_accept():
    reply = ack(received(), ACCEPT, errors=[AckError(103, "unknown unit", Path.parse("OBX[2]-6"), "W")])
    assert reply.get("MSA-1") == "AA"
    assert reply.get("ERR-2") == "OBX^2^6"
    assert reply.get("ERR-4") == "W"


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4"])
def test_pre_v25_errors_go_to_err_1_and_msa_3(version):
    second = AckError(207, "disk & full")
    reply = ack(received(version), ERROR, errors=[MISSING_ID, second])
    assert reply.get("MSA-3") == "Patient identifier | missing; disk & full"
    errs = reply.all("ERR")
    assert len(errs) == 1  # one ERR whose ERR-1 repeats
    assert errs[0].field(2) == ""
    assert errs[0].value(1, 1, 1) == "PID"
    assert errs[0].value(1, 1, 2) == "1"
    assert errs[0].value(1, 1, 3) == "3"
    assert errs[0].value(1, 1, 4, 1) == "101"
    assert errs[0].value(1, 1, 4, 2) == "Patient identifier | missing"
    assert errs[0].value(1, 1, 4, 3) == "HL70357"
    assert errs[0].value(1, 2, 1) == ""
    assert errs[0].value(1, 2, 4, 1) == "207"
    assert errs[0].value(1, 2, 4, 2) == "disk & full"


def test_message_structure_component_only_from_v231():
    assert ack(received("2.3")).msh.field(9) == "ACK^R01"
    assert ack(received("2.3.1")).msh.field(9) == "ACK^R01^ACK"


def test_non_accept_without_errors_still_carries_an_err():
    reply = ack(received(), REJECT)
    assert reply.get("ERR-3.1") == "207"


def test_msa_2_is_the_original_control_id_even_when_empty():
    message = Message.parse(b"MSH|^~\\&|LAB||||||ORU^R01||P|2.5\r")
    data = build_ack(message, ACCEPT, control_id="ACK-2", timestamp=WHEN)
    assert b"\rMSA|AA|\r" in data
    assert Message.parse(data).control_id == "ACK-2"


def test_custom_delimiters_are_copied_and_used():
    message = received(fs="#", enc="$*@!")
    data = build_ack(message, ERROR, control_id="A#1", timestamp=WHEN, errors=[MISSING_ID])
    reply = Message.parse(data)
    assert data.startswith(b"MSH#$*@!#COURIER#DEST#LAB$1.2.3$ISO#HOSP#")
    assert reply.delimiters == message.delimiters
    assert reply.msh.field(10) == "A@F@1"
    assert reply.control_id == "A#1"
    assert reply.get("ERR-2") == "PID$1$3"
    assert reply.get("ERR-8") == "Patient identifier | missing"


def test_truncation_character_is_kept_in_msh_2():
    reply = ack(received("2.7", enc="^~\\&#"))
    assert reply.msh.field(2) == "^~\\&#"


def test_charset_is_echoed_and_used_to_encode():
    message = received(msh18="8859/1")
    errors = [AckError(102, "Datum ungültig")]
    data = build_ack(message, ERROR, control_id="A1", timestamp=WHEN, errors=errors)
    assert "ungültig".encode("latin-1") in data
    reply = Message.parse(data)
    assert reply.character_sets == ("8859/1",)
    assert reply.get("ERR-8") == "Datum ungültig"


def test_processing_id_can_be_overridden():
    assert ack(received(), processing_id="T").processing_id == "T"


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError, match="timezone"):
        build_ack(received(), ACCEPT, control_id="A1", timestamp=datetime(2024, 1, 31))


def test_bad_outcome_code_and_severity_are_refused():
    with pytest.raises(ValueError):
        build_ack(received(), "AA", control_id="A1", timestamp=WHEN)
    with pytest.raises(ValueError):
        AckError(999, "no such code")
    with pytest.raises(ValueError):
        AckError(207, "bad severity", severity="X")


@pytest.mark.parametrize(
    ("msh15", "msh16", "wanted"),
    [
        ("", "", {ACCEPT: True, ERROR: True, REJECT: True}),
        ("AL", "", {ACCEPT: True, ERROR: True, REJECT: True}),
        ("NE", "AL", {ACCEPT: False, ERROR: False, REJECT: False}),
        ("ER", "", {ACCEPT: False, ERROR: True, REJECT: True}),
        ("SU", "", {ACCEPT: True, ERROR: False, REJECT: False}),
        ("", "AL", {ACCEPT: True, ERROR: True, REJECT: True}),
        ("al", "", {ACCEPT: True, ERROR: True, REJECT: True}),
    ],
)
def test_commit_ack_wanted_follows_msh_15(msh15, msh16, wanted):
    message = received(msh15=msh15, msh16=msh16)
    assert is_enhanced_mode(message) == bool(msh15 or msh16)
    assert {outcome: commit_ack_wanted(message, outcome) for outcome in wanted} == wanted


def test_unreadable_nak_never_invents_a_control_id():
    data = build_unreadable_nak(control_id="NAK-1", timestamp=WHEN, error=AckError(100, "no MSH segment"))
    reply = Message.parse(data)
    assert data.startswith(b"MSH|^~\\&|")
    assert reply.version == "2.5"
    assert reply.control_id == "NAK-1"
    assert reply.message_type == "ACK"
    assert b"\rMSA|AR|\r" in data
    assert reply.get("ERR-3.1") == "100"
    assert reply.get("ERR-8") == "no MSH segment"
    assert str(hl7.parse(data.decode()).segment("MSA")[1]) == "AR"


def test_batch_ack_answers_a_file_batch():
    text = (
        "FHS|^~\\&|LAB|HOSP|COURIER|DEST|20240131||||F-77\r"
        "BHS|^~\\&|LAB|HOSP|COURIER|DEST|20240131||||B-5\r"
        "MSH|^~\\&|LAB|HOSP|COURIER|DEST|20240131||ORU^R01|M1|P|2.5\r"
        "MSH|^~\\&|LAB|HOSP|COURIER|DEST|20240131||ORU^R01|M2|P|2.5\r"
        "BTS|2\rFTS|1\r"
    )
    batch = split_batch(text.encode())
    acks = [
        build_ack(Message.parse(m), ACCEPT, control_id=f"A{n}", timestamp=WHEN)
        for n, m in enumerate(batch.messages)
    ]
    data = build_batch_ack(batch, acks, control_id="BA-1", timestamp=WHEN)
    names = [line[:3].decode() for line in data.split(b"\r")]
    assert names == ["FHS", "BHS", "MSH", "MSA", "MSH", "MSA", "BTS", "FTS", ""]
    reply = split_batch(data)
    header = reply.header.msh
    assert (header.field(3), header.field(5)) == ("COURIER", "LAB")
    assert header.field(11) == "BA-1"
    assert header.field(12) == "F-77"
    assert reply.declared_count == 2
    assert [Message.parse(m).get("MSA-2") for m in reply.messages] == ["M1", "M2"]
    assert len(hl7.split_file(data.decode())) == 2


def test_batch_ack_answers_a_bhs_batch_with_bhs_and_bts():
    batch = split_batch(b"BHS|^~\\&|LAB||||||||B-5\rMSH|^~\\&|LAB||||||ORU^R01|M1|P|2.5\rBTS|1\r")
    data = build_batch_ack(batch, [], control_id="BA-2", timestamp=WHEN)
    assert data == b"BHS|^~\\&|||LAB||20240131142501+0100||||BA-2|B-5\rBTS|0\r"


def test_ack_wanted_answers_an_ack_only_when_its_msh15_asks() -> None:
    from engine.message import ACCEPT, REJECT, Message, ack_wanted

    def msg(kind: str, msh15: str = "", msh16: str = "") -> Message:
        return Message.parse(f"MSH|^~\\&|A|B|C|D|20260101||{kind}|1|P|2.5|||{msh15}|{msh16}\r".encode())

    assert ack_wanted(msg("ORU^R01"), ACCEPT, enhanced=False)
    assert not ack_wanted(msg("ACK^R01^ACK"), ACCEPT, enhanced=False)
    assert not ack_wanted(msg("ACK^R01^ACK", "", "AL"), ACCEPT, enhanced=True), "MSH-16 alone asks nothing"
    assert ack_wanted(msg("ACK^R01^ACK", "AL", "NE"), ACCEPT, enhanced=True)
    assert not ack_wanted(msg("ACK^R01^ACK", "AL", "NE"), ACCEPT, enhanced=False), "forced original mode"
    assert not ack_wanted(msg("ORU^R01", "ER", "AL"), ACCEPT, enhanced=True)
    assert ack_wanted(msg("ORU^R01", "ER", "AL"), REJECT, enhanced=True)


@pytest.mark.parametrize(
    ("version", "field", "expected"), [("2.5", 2, "^4"), ("2.3", 1, "^4^^100&x&HL70357")]
)
def test_a_whole_segment_location_is_written_as_segment_and_sequence(version, field, expected):
    from engine.message.ack import SegmentLocation

    error = AckError(100, "x", SegmentLocation("", 4))
    reply = ack(received(version=version), REJECT, errors=[error])
    assert reply.segment("ERR").field(field) == expected
