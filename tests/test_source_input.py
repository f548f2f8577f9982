"""Input that must get an answer, fast: whatever a frame holds, the sender gets an ACK naming its
MSH-10 and the connection keeps serving. Real sockets, a real store."""

from __future__ import annotations

import logging

import pytest

from engine.errors import StoreError
from engine.listener import AcknowledgingReceiver
from engine.message import Message
from engine.message.ack import AckError
from engine.source import Refused
from tests import test_source
from tests.conftest import on_reactor
from tests.support.engine import listen
from tests.support.mllp import BlockingClient
from tests.test_source import ack, oru, rows

engine = test_source.engine  # the fixture: a Source listening on a free port, with a real store


def with_msh_field(message: bytes, n: int, value: bytes) -> bytes:
    """``message`` with MSH-``n`` set to the raw ``value`` (fields added as needed)."""
    head, rest = message.split(b"\r", 1)
    fields = head.split(b"|")
    fields += [b""] * (n - len(fields))
    fields[n - 1] = value
    return b"|".join(fields) + b"\r" + rest


def msa(reply: bytes) -> tuple[str, str]:
    segment = ack(reply).segment("MSA")
    return segment.value(1), segment.value(2)


def err(reply: bytes) -> tuple[str, str]:
    """ERR-3.1 code and ERR-2 location of an ACK."""
    segment = ack(reply).segment("ERR")
    return segment.value(3, component=1), segment.field(2)


@pytest.mark.parametrize(
    "charset",
    [b"\x00", b"UTF\x00-8", b"NOT-A-CHARSET", b"\xff\xfe\x01", b"UTF-16", b"x" * 300],
    ids=["nul", "nul-inside", "unknown", "junk-bytes", "not-ascii-safe", "long"],
)
def test_an_msh18_that_names_no_usable_charset_is_read_with_the_default_and_acked(
    engine, tmp_path, caplog, charset
) -> None:
    port, _ = engine()
    with caplog.at_level(logging.WARNING), BlockingClient(port) as client:
        reply = client.request(with_msh_field(oru("CS1"), 18, charset))
        assert msa(reply) == ("AA", "CS1")
        assert msa(client.request(oru("CS2"))) == ("AA", "CS2"), "the connection keeps serving"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("CS1" in w and "MSH-18" in w for w in warnings)
    assert not any("\x00" in w or len(w) > 400 for w in warnings)
    assert rows(tmp_path / "courier.sqlite3", "SELECT control_id FROM messages ORDER BY id") == [
        ("CS1",),
        ("CS2",),
    ]


def test_a_strict_channel_refuses_an_unusable_msh18_with_ar_207_at_msh18(engine, tmp_path) -> None:
    port, _ = engine(strict_charset=True)
    with BlockingClient(port) as client:
        reply = client.request(with_msh_field(oru("CS3"), 18, b"\x00"))
        assert msa(reply) == ("AR", "CS3")
        assert err(reply) == ("207", "MSH^1^18")
        assert msa(client.request(oru("CS4"))) == ("AA", "CS4")
    assert rows(tmp_path / "courier.sqlite3", "SELECT control_id FROM messages") == [("CS4",)]


class RaisingStore:
    """A store that raises at once instead of returning a failed Deferred (one closed while the
    engine stops, or a bug)."""

    def receive(self, incoming):
        raise StoreError("store-writer is not running")

    receive_many = receive


def test_a_store_that_raises_at_once_is_answered_ae_207_and_the_connection_kept(engine, caplog) -> None:
    """Nothing was stored, through no fault of the message: AE says "send it again" (an AR would
    make many senders drop it)."""
    port, _ = engine(store=RaisingStore())
    with caplog.at_level(logging.ERROR), BlockingClient(port) as client:
        for control_id in ("BUG1", "BUG2"):
            reply = client.request(oru(control_id))
            assert msa(reply) == ("AE", control_id)
            assert err(reply)[0] == "207"
    assert any("could not store control id BUG1" in r.getMessage() for r in caplog.records)


def test_a_check_that_raises_is_answered_ar_207(engine) -> None:
    def broken(message: Message):
        raise KeyError("a bug")

    port, _ = engine(check=broken)
    with BlockingClient(port) as client:
        reply = client.request(oru("BUG3"))
    assert msa(reply) == ("AR", "BUG3") and err(reply)[0] == "207"


@pytest.mark.parametrize("control_id", [b"", b"   "])
def test_an_empty_msh10_is_refused_ar_101_at_msh10(engine, tmp_path, control_id) -> None:
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = client.request(with_msh_field(oru("X"), 10, control_id))
    assert msa(reply)[0] == "AR"
    assert err(reply) == ("101", "MSH^1^10")
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*) FROM messages") == [(0,)]


@pytest.mark.parametrize(
    "line", [b"PIDX|1||999", b"UNKNOWN|1", b"PV|1|I", b"pid|1", b"PI D|1", b"AB|"], ids=str
)
def test_a_line_whose_name_is_not_a_segment_name_is_refused_ar_100_at_its_position(
    engine, tmp_path, line
) -> None:
    message = oru("SEG1").replace(b"OBR|", line + b"\rOBR|")  # becomes segment 3
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = client.request(message)
        assert msa(reply) == ("AR", "SEG1")
        assert err(reply) == ("100", "^3")
        assert msa(client.request(oru("SEG2"))) == ("AA", "SEG2")
    assert rows(tmp_path / "courier.sqlite3", "SELECT control_id FROM messages") == [("SEG2",)]


def test_two_messages_in_one_frame_without_a_batch_header_are_refused_not_half_stored(
    engine, tmp_path
) -> None:
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = client.request(oru("TWO1") + oru("TWO2"))
        assert msa(reply) == ("AR", "TWO1")
        assert err(reply) == ("100", "MSH^2")
        assert "BHS" in ack(reply).segment("ERR").value(8)
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*) FROM messages") == [(0,)]


def test_an_inbound_ack_is_still_recorded_whatever_its_structure(engine, tmp_path) -> None:
    """ACKs are never answered in original mode, so refusing one would only lose it."""
    port, _ = engine()
    with BlockingClient(port) as client:
        client.send(b"MSH|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101||ACK^R01^ACK||P|2.5\rMSA|AA|X1\r")
        assert msa(client.request(oru("NEXT"))) == ("AA", "NEXT")
    assert rows(tmp_path / "courier.sqlite3", "SELECT state FROM messages ORDER BY id") == [
        ("ACK_RECEIVED",),
        ("RECEIVED",),
    ]


def test_three_encoding_characters_are_read_without_an_escape_character_and_echoed(engine, tmp_path) -> None:
    """Epic and older senders write ``MSH|^~&|``: read it, and answer in its own delimiters."""
    epic = oru("EPIC1").replace(b"MSH|^~\\&|", b"MSH|^~&|")
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = client.request(epic)
    assert reply.startswith(b"MSH|^~&|COURIER|NHS|LAB|CITYHOSP|")
    assert msa(reply) == ("AA", "EPIC1")
    assert rows(tmp_path / "courier.sqlite3", "SELECT control_id FROM messages") == [("EPIC1",)]


def test_a_refusal_in_a_message_without_an_escape_character_cannot_break_the_ack(engine) -> None:
    def refuse(message: Message):
        raise Refused(AckError(101, "PID-3 ^ | ~ & missing\nsee the mapping"))

    port, _ = engine(check=refuse)
    with BlockingClient(port) as client:
        reply = client.request(oru("EPIC2").replace(b"MSH|^~\\&|", b"MSH|^~&|"))
    segment = ack(reply).segment("ERR")
    assert msa(reply) == ("AR", "EPIC2")
    assert segment.value(3, component=1) == "101"
    assert segment.value(8) == "PID-3         missing see the mapping"


def test_the_same_message_resent_with_lf_line_ends_is_a_duplicate_not_new_work(engine, tmp_path) -> None:
    port, _ = engine()
    with BlockingClient(port) as client:
        first = client.request(oru("DUP1"))
        again = client.request(oru("DUP1").replace(b"\r", b"\n").rstrip(b"\n"))
    assert msa(first) == msa(again) == ("AA", "DUP1")
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*), max(duplicates) FROM messages") == [(1, 1)]
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*) FROM deliveries") == [(2,)]


def test_a_control_id_decoding_to_control_characters_is_logged_escaped(engine, caplog) -> None:
    def refuse(message: Message):
        raise Refused(AckError(200, "not accepted"))

    port, _ = engine(check=refuse)
    with caplog.at_level(logging.INFO), BlockingClient(port) as client:
        reply = client.request(oru("LOG\\X0A\\FORGED\\X1B\\"))
    assert msa(reply) == ("AR", "LOG\nFORGED\x1b"), "MSA-2 is the sender's MSH-10, unchanged"
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.source"]
    assert any("LOG\\nFORGED\\x1b" in line for line in lines)
    assert not any("\n" in line or "\x1b" in line for line in lines)


def test_the_printing_listener_answers_ar_207_when_its_callback_fails(reactor) -> None:
    """``courier listen``'s receiver: a failure in what it does with a message is answered too."""

    def broken(message: Message) -> None:
        raise BrokenPipeError("stdout closed")

    port, listening, _ = listen(reactor, "listen", AcknowledgingReceiver(reactor, broken))
    try:
        with BlockingClient(port) as client:
            for control_id in ("LIS1", "LIS2"):
                reply = client.request(oru(control_id))
                assert msa(reply) == ("AR", control_id) and err(reply)[0] == "207"
    finally:
        on_reactor(listening.stopListening)
