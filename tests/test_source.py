"""A channel source over real sockets with a real store: what is ACKed, when, and how."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from twisted.internet import defer

from engine.errors import StoreError
from engine.message import Message
from engine.message.ack import AckError
from engine.source import Accepted, Refused, Source
from tests.conftest import on_reactor
from tests.support.engine import listen, open_store
from tests.support.mllp import BlockingClient

ORU = (
    b"MSH|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101120000+0000||ORU^R01^ORU_R01|%s|P|2.5\r"
    b"PID|1||12345^^^HOSP^MR~9434765919^^^NHS^NH||DOE^JANE||19800101|F\r"
    b"OBR|1|ORD1|ACC1|24331-1^Lipid panel^LN|||20260101110000\r"
    b"OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|||||F\r"
)


def oru(control_id: str, version: bytes = b"2.5", msh15: bytes = b"", msh16: bytes = b"") -> bytes:
    message = ORU % control_id.encode()
    if version != b"2.5" or msh15 or msh16:
        head, rest = message.split(b"\r", 1)
        fields = head.split(b"|")
        fields[11] = version
        fields += [b""] * (17 - len(fields))
        fields[14], fields[15] = msh15, msh16
        message = b"|".join(fields) + b"\r" + rest
    return message


def accept_all(message: Message) -> Accepted:
    return Accepted(("dest-a", "dest-b"))


class BrokenStore:
    """A store whose disk is gone: every write fails the way SQLiteStore reports it."""

    def receive(self, incoming):
        return defer.fail(StoreError("disk I/O error"))

    def receive_many(self, incoming):
        return defer.fail(StoreError("disk I/O error"))


@pytest.fixture
def engine(reactor, tmp_path):
    started = []

    def start(check=accept_all, store=None, **source_options):
        store = store or open_store(reactor, tmp_path / "courier.sqlite3")
        source = Source("lab", store, reactor, check, **source_options)
        port, listening, _ = listen(reactor, "lab", source)
        started.append((listening, store))
        return port, store

    yield start
    for listening, store in started:
        on_reactor(listening.stopListening)
        if hasattr(store, "close"):
            on_reactor(store.close)


def rows(db_path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db_path) as db:
        return db.execute(sql, args).fetchall()


def ack(reply: bytes) -> Message:
    return Message.parse(reply)


def test_message_is_committed_before_the_ack_arrives(engine, tmp_path) -> None:
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = ack(client.request(oru("MSG00001")))
        # Read the database from a separate connection the moment the ACK is in hand.
        stored = rows(tmp_path / "courier.sqlite3", "SELECT control_id, state FROM messages")
        queued = rows(
            tmp_path / "courier.sqlite3", "SELECT destination, state FROM deliveries ORDER BY destination"
        )
    assert reply.segment("MSA").value(1) == "AA"
    assert reply.segment("MSA").value(2) == "MSG00001"
    assert stored == [("MSG00001", "RECEIVED")]
    assert queued == [("dest-a", "QUEUED"), ("dest-b", "QUEUED")]


def test_ack_swaps_sender_and_receiver_and_answers_the_trigger(engine) -> None:
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = ack(client.request(oru("MSG00002")))
    assert reply.message_type == "ACK" and reply.trigger_event == "R01"
    assert (reply.sending_application, reply.sending_facility) == ("COURIER", "NHS")
    assert (reply.receiving_application, reply.receiving_facility) == ("LAB", "CITYHOSP")
    assert reply.control_id and reply.control_id != "MSG00002"


def test_non_hl7_frame_gets_ar_with_err_and_empty_msa2_and_the_connection_keeps_serving(engine) -> None:
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = ack(client.request(b"this is not HL7 at all"))
        assert reply.segment("MSA").value(1) == "AR"
        assert reply.segment("MSA").value(2) == "", "never invent a control id"
        assert reply.segment("ERR").value(3, component=1) == "100"
        assert ack(client.request(oru("MSG00003"))).segment("MSA").value(2) == "MSG00003"


def test_refusal_is_ar_with_the_err_location_and_code_and_nothing_is_stored(engine, tmp_path) -> None:
    def refuse(message: Message) -> Accepted:
        raise Refused(AckError(101, "NHS number is required", None))

    port, _ = engine(check=refuse)
    with BlockingClient(port) as client:
        reply = ack(client.request(oru("MSG00004")))
    assert reply.segment("MSA").value(1) == "AR"
    err = reply.segment("ERR")
    assert err.value(3, component=1) == "101"
    assert err.value(8) == "NHS number is required"
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*) FROM messages") == [(0,)]


def test_version_before_2_5_carries_err_1_and_msa_3(engine) -> None:
    def refuse(message: Message) -> Accepted:
        raise Refused(AckError(200, "message type not accepted"))

    port, _ = engine(check=refuse)
    with BlockingClient(port) as client:
        reply = ack(client.request(oru("MSG00005", version=b"2.3")))
    assert reply.segment("MSA").value(3) == "message type not accepted"
    assert "200" in reply.segment("ERR").field(1)


def test_store_failure_answers_ae_so_the_sender_resends(engine) -> None:
    port, _ = engine(store=BrokenStore())
    with BlockingClient(port) as client:
        reply = ack(client.request(oru("MSG00006")))
    assert reply.segment("MSA").value(1) == "AE"
    assert reply.segment("ERR").value(3, component=1) == "207"


def test_a_check_or_store_that_fails_with_patient_data_in_its_text_logs_only_its_type(engine, caplog) -> None:
    def check_quoting_the_patient(message: Message) -> Accepted:
        raise ValueError(f"cannot map {message.get('PID-5')} {message.get('PID-3')}")

    class StoreQuotingThePatient(BrokenStore):
        def receive(self, incoming):
            return defer.fail(KeyError("DOE^JANE 9434765919"))

    port, _ = engine(check=check_quoting_the_patient)
    other_port, _ = engine(store=StoreQuotingThePatient())
    with caplog.at_level(logging.ERROR):
        with BlockingClient(port) as client:
            assert ack(client.request(oru("MSG00016"))).segment("MSA").value(1) == "AR"
        with BlockingClient(other_port) as client:
            assert ack(client.request(oru("MSG00017"))).segment("MSA").value(1) == "AE"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "MSG00016" in logged and "ValueError" in logged
    assert "MSG00017" in logged and "KeyError" in logged
    assert "DOE" not in logged and "9434765919" not in logged and "12345" not in logged


def test_duplicate_gets_the_same_ack_again_and_creates_no_new_work(engine, tmp_path) -> None:
    port, _ = engine()
    with BlockingClient(port) as client:
        first = ack(client.request(oru("MSG00007")))
        second = ack(client.request(oru("MSG00007")))
    assert first.segment("MSA").value(1) == second.segment("MSA").value(1) == "AA"
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*), max(duplicates) FROM messages") == [(1, 1)]
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*) FROM deliveries") == [(2,)]


def test_duplicates_can_be_rejected_with_205(engine) -> None:
    port, _ = engine(reject_duplicates=True)
    with BlockingClient(port) as client:
        client.request(oru("MSG00008"))
        reply = ack(client.request(oru("MSG00008")))
    assert reply.segment("MSA").value(1) == "AR"
    assert reply.segment("ERR").value(3, component=1) == "205"


def test_an_ack_is_recorded_and_never_answered(engine, tmp_path) -> None:
    port, _ = engine()
    inbound_ack = b"MSH|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101||ACK^R01^ACK|A1|P|2.5\rMSA|AA|X1\r"
    with BlockingClient(port) as client:
        client.send(inbound_ack)
        # The next message's ACK is the next frame: nothing was sent for the ACK.
        assert ack(client.request(oru("MSG00009"))).segment("MSA").value(2) == "MSG00009"
    assert rows(tmp_path / "courier.sqlite3", "SELECT control_id, state FROM messages ORDER BY id") == [
        ("A1", "ACK_RECEIVED"),
        ("MSG00009", "RECEIVED"),
    ]


@pytest.mark.parametrize(
    ("msh15", "outcome_ok", "expect"),
    [
        (b"AL", True, "CA"),
        (b"SU", True, "CA"),
        (b"ER", True, None),
        (b"NE", True, None),
        (b"AL", False, "CR"),
        (b"ER", False, "CR"),
        (b"SU", False, None),
    ],
)
def test_enhanced_mode_commit_ack_follows_msh15(engine, msh15, outcome_ok, expect) -> None:
    def check(message: Message) -> Accepted:
        if not outcome_ok:
            raise Refused(AckError(200, "not accepted"))
        return Accepted(("dest-a",))

    port, _ = engine(check=check)
    with BlockingClient(port, timeout=0.5 if expect is None else 5) as client:
        client.send(oru("ENH" + msh15.decode(), msh15=msh15, msh16=b"AL"))
        if expect is None:
            with pytest.raises(TimeoutError):
                client.receive()
        else:
            assert ack(client.receive()).segment("MSA").value(1) == expect


def test_enhanced_mode_records_that_an_application_ack_is_owed(engine, tmp_path) -> None:
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = ack(client.request(oru("MSG00010", msh15=b"AL", msh16=b"ER")))
    assert reply.segment("MSA").value(1) == "CA"
    assert rows(tmp_path / "courier.sqlite3", "SELECT ack_code, application_ack FROM messages") == [
        ("CA", "ER")
    ]


def test_batch_file_is_split_stored_and_answered_with_an_ack_batch(engine, tmp_path) -> None:
    batch = (
        b"FHS|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101||||F1\r"
        b"BHS|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101||||B1\r"
        + oru("BAT1")
        + oru("BAT2")
        + b"not a message\r"
        + b"BTS|3\rFTS|1\r"
    )
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = client.request(batch)
    text = reply.decode()
    assert text.startswith("FHS|") or text.startswith("BHS|")
    msas = [line.split("|")[1:3] for line in text.split("\r") if line.startswith("MSA|")]
    # The line that is not a segment belongs to BAT2, which it makes unreadable (it was read as
    # a segment called "not" and BAT2 stored with it).
    assert msas == [["AA", "BAT1"], ["AR", "BAT2"]]
    assert rows(tmp_path / "courier.sqlite3", "SELECT control_id FROM messages ORDER BY id") == [("BAT1",)]


def test_a_batch_with_a_segment_before_any_msh_gets_ar_not_a_closed_connection(engine) -> None:
    broken = b"BHS|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101||||B1\rPID|1||42\r" + oru("BAT3") + b"BTS|1\r"
    port, _ = engine()
    with BlockingClient(port) as client:
        reply = ack(client.request(broken))
        assert reply.segment("MSA").value(1) == "AR"
        assert reply.segment("ERR").value(3, component=1) == "100"
        assert ack(client.request(oru("MSG00011"))).segment("MSA").value(2) == "MSG00011"


def test_a_batch_whose_messages_were_all_refused_is_not_reported_committed(reactor, tmp_path) -> None:
    def refuse(message: Message) -> Accepted:
        raise Refused(AckError(200, "not accepted"))

    store = open_store(reactor, tmp_path / "refused.sqlite3")
    try:
        source = Source("lab", store, reactor, refuse)
        batch = b"BHS|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101||||B2\r" + oru("BAT4") + b"BTS|1\r"
        reply = on_reactor(source.handle_frame, batch, "127.0.0.1:1")
    finally:
        on_reactor(store.close)
    assert reply.committed is False, "MLLP release 2 must answer 0x15: nothing was stored"
    assert b"MSA|AR|BAT4" in reply.payload


def test_a_sender_that_lies_about_its_charset_is_stored_as_received_with_a_warning(
    engine, tmp_path, caplog
) -> None:
    lying = (
        oru("LIAR1")
        .replace(b"|P|2.5\r", b"|P|2.5||||||UNICODE UTF-8\r")
        .replace(b"DOE^JANE", "MÜLLER^JANE".encode("latin-1"))
    )
    port, _ = engine()
    with caplog.at_level(logging.WARNING), BlockingClient(port) as client:
        reply = ack(client.request(lying))
    assert reply.segment("MSA").value(1) == "AA"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("LIAR1" in w and "utf" in w.lower() for w in warnings)
    assert not any("MÜLLER" in w or "MLLER" in w for w in warnings), "no PHI in the log"


def test_control_id_generators_started_together_never_repeat_each_other() -> None:
    from engine.source import ControlIds

    generators = [ControlIds() for _ in range(20)]  # channels, reporter, inbound, all at once
    ids = [generate() for generate in generators for _ in range(50)]
    assert len(set(ids)) == len(ids)
    assert max(len(i) for i in ids) <= 20, "MSH-10 is at most 20 characters before v2.7"


def test_control_ids_stay_at_20_characters_past_ten_million() -> None:
    import itertools

    from engine.source import ControlIds

    generate = ControlIds()
    generate._counter = itertools.count(9_999_999)  # as after ten million ids
    last, after = generate(), generate()
    assert len(last) == len(after) == 20 and last != after


def test_an_ack_asking_for_a_commit_ack_gets_one_after_it_is_recorded(engine, tmp_path) -> None:
    port, _ = engine()
    status = (
        b"MSH|^~\\&|QLIQ|WARDS|LAB|CITYHOSP|20260101||ACK^R01^ACK|S1|P|2.5|||AL|NE\rMSA|AA|X1\rZDS|read\r"
    )
    only_msh16 = b"MSH|^~\\&|QLIQ|WARDS|LAB|CITYHOSP|20260101||ACK^R01^ACK|S2|P|2.5||||AL\rMSA|AA|X2\r"
    with BlockingClient(port) as client:
        reply = ack(client.request(status))
        assert (reply.segment("MSA").value(1), reply.segment("MSA").value(2)) == ("CA", "S1")
        client.send(only_msh16)  # MSH-15 empty: nobody asked for a commit ACK, so none comes
        assert ack(client.request(oru("AFTER"))).segment("MSA").value(2) == "AFTER"
    assert rows(tmp_path / "courier.sqlite3", "SELECT control_id, state FROM messages ORDER BY id") == [
        ("S1", "ACK_RECEIVED"),
        ("S2", "ACK_RECEIVED"),
        ("AFTER", "RECEIVED"),
    ]


def test_a_resend_after_the_channels_duplicate_window_is_new_work(engine, tmp_path) -> None:
    port, _ = engine(duplicate_window_s=0.0)
    with BlockingClient(port) as client:
        for _ in range(2):
            assert ack(client.request(oru("LATE1"))).segment("MSA").value(1) == "AA"
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*), max(duplicates) FROM messages") == [(2, 0)]
    assert rows(tmp_path / "courier.sqlite3", "SELECT count(*) FROM deliveries") == [(4,)]
