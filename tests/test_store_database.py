"""The store's synchronous core on a real SQLite file: messages, queue, outbox, kv, schema."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from dataclasses import replace

import pytest

from engine.errors import StoreError
from engine.store import database as database_module
from engine.store.base import DeliverySelection, Incoming, StatusPoll
from engine.store.crypto import Cipher
from engine.store.database import Database
from engine.store.schema import LATEST_VERSION, migrate, schema_version

T0 = 1_700_000_000.0
RAW = b"MSH|^~\\&|LIS|HOSP|COURIER|CLINIC|20240101||ORU^R01|C1|P|2.5\rPID|1||MRN123^^^HOSP||DOE^JANE"


def incoming(**changes) -> Incoming:
    """A stored-to-be ORU with two destinations; override any field."""
    base = Incoming(
        channel="lab",
        raw=RAW,
        sending_application="LIS",
        sending_facility="HOSP",
        control_id="C1",
        message_type="ORU^R01",
        received_at=T0,
        peer="127.0.0.1:40000",
        destinations=("qliq", "kpn"),
    )
    return replace(base, **changes)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(store_location, key, clock):
    """The store on a SQLite file, then on PostgreSQL: every test using it runs on both."""
    database = Database.open(store_location, Cipher(key), clock=clock)
    yield database
    database.close()


@pytest.fixture
def sqlite_db(tmp_path, key, clock):
    """For what only SQLite has (its catalog, its query plans)."""
    database = Database.open(tmp_path / "engine.sqlite3", Cipher(key), clock=clock)
    yield database
    database.close()


def receive(db: Database, message: Incoming):
    with db.transaction():
        return db.receive(message)


# Opening, pragmas, schema -------------------------------------------------------------


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("normal", 1)])
def test_durability_sets_the_synchronous_pragma_and_wal(tmp_path, key, durability, synchronous):
    db = Database.open(tmp_path / "s.sqlite3", Cipher(key), durability=durability)
    try:
        assert db.connection.execute("PRAGMA synchronous").fetchone()[0] == synchronous
        assert db.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_opening_with_the_wrong_key_fails_at_open(tmp_path, key):
    path = tmp_path / "s.sqlite3"
    Database.open(path, Cipher(key)).close()
    with pytest.raises(StoreError, match="key does not fit"):
        Database.open(path, Cipher(os.urandom(32)))
    Database.open(path, Cipher(key)).close()


def test_database_at_version_1_is_migrated_and_keeps_its_rows(tmp_path, key):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    conn.execute(
        "INSERT INTO messages (channel, sending_application, sending_facility, control_id,"
        " message_type, body_sha256, received_at, peer, state, ack_code, application_ack,"
        " raw_enc) VALUES ('lab', 'LIS', 'HOSP', 'OLD1', 'ORU^R01', x'00', 1.0, 'p',"
        " 'RECEIVED', 'AA', '', ?)",
        (Cipher(key).encrypt(b"old body"),),
    )
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone()
    conn.close()

    db = Database.open(path, Cipher(key))
    try:
        assert schema_version(db.connection) == LATEST_VERSION > 1
        assert db.get_message("OLD1", with_body=True).raw == b"old body"
        with db.transaction():
            db.outbox_add("lab", "tcp:127.0.0.1:2575", b"ACK", "C9")
            db.kv_put("qliq", "conversation", b"c-1")
        assert db.kv_get("qliq", "conversation") == b"c-1"
    finally:
        db.close()


def test_a_newer_schema_than_this_code_is_refused(tmp_path, key):
    path = tmp_path / "new.sqlite3"
    Database.open(path, Cipher(key)).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE schema_version SET version = ?", (LATEST_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Database.open(path, Cipher(key))


def test_read_only_connection_cannot_write(tmp_path, key):
    path = tmp_path / "s.sqlite3"
    Database.open(path, Cipher(key)).close()
    reader = Database.open(path, Cipher(key), readonly=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"), reader.transaction():
            reader.receive(incoming())
    finally:
        reader.close()


def test_read_only_open_of_a_missing_store_fails_without_creating_it(tmp_path, key):
    path = tmp_path / "missing.sqlite3"
    with pytest.raises(StoreError, match="cannot open store"):
        Database.open(path, Cipher(key), readonly=True)
    assert not path.exists()


def test_path_with_uri_characters_opens(tmp_path, key):
    path = tmp_path / "odd ?#% name" / "engine.sqlite3"
    Database.open(path, Cipher(key)).close()
    Database.open(path, Cipher(key), readonly=True).close()
    assert path.exists()


# Messages -------------------------------------------------------------------------------


def test_receive_stores_the_message_and_one_queued_delivery_per_destination(db):
    receipt = receive(db, incoming(ack_code="CA", application_ack="AL"))
    assert receipt.duplicate is False and receipt.ack_code == "CA"
    message = db.get_message(receipt.message_id, with_body=True)
    assert message.raw == RAW
    assert (message.control_id, message.state, message.application_ack) == ("C1", "RECEIVED", "AL")
    deliveries = db.list_deliveries()
    assert sorted(d.destination for d in deliveries) == ["kpn", "qliq"]
    assert {d.state for d in deliveries} == {"QUEUED"}
    assert {d.message_id for d in deliveries} == {receipt.message_id}


def test_raw_hl7_is_encrypted_in_the_file_but_control_id_is_clear(tmp_path, key):
    path = tmp_path / "s.sqlite3"
    db = Database.open(path, Cipher(key))
    receive(db, incoming(control_id="CTRL-CLEAR-42"))
    with db.transaction():
        db.kv_put("kpn", "token", b"TOKEN-SECRET-XYZ")
    db.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"CTRL-CLEAR-42" in on_disk
    assert b"DOE^JANE" not in on_disk and b"MRN123" not in on_disk
    assert b"TOKEN-SECRET-XYZ" not in on_disk


def test_duplicate_gets_the_same_ack_no_new_message_and_is_counted(db, clock):
    first = receive(db, incoming(ack_code="CA"))
    clock.now = T0 + 60
    again = receive(db, incoming(received_at=T0 + 60, ack_code="AA", peer="127.0.0.1:40001"))
    assert again.duplicate is True
    assert again.message_id == first.message_id
    assert again.ack_code == "CA"
    assert len(db.list_messages()) == 1
    assert len(db.list_deliveries()) == 2
    assert db.get_message(first.message_id).duplicates == 1
    assert [e.kind for e in db.timeline("C1") if e.delivery_id is None] == [
        "received",
        "duplicate",
    ]


def test_same_control_id_with_another_body_is_a_new_message_and_warns(db, caplog):
    first = receive(db, incoming())
    with caplog.at_level(logging.WARNING, logger="engine.store.database"):
        second = receive(db, incoming(raw=RAW.replace(b"DOE^JANE", b"ROE^RICHARD")))
    assert second.duplicate is False and second.message_id != first.message_id
    assert len(db.list_deliveries()) == 4
    (record,) = caplog.records
    assert "C1" in record.getMessage() and "lab" in record.getMessage()
    assert "ROE" not in record.getMessage() and "MRN" not in record.getMessage()


def test_resend_after_the_duplicate_window_is_a_new_message(tmp_path, key):
    db = Database.open(tmp_path / "s.sqlite3", Cipher(key), duplicate_window_s=3600)
    try:
        first = receive(db, incoming())
        later = receive(db, incoming(received_at=T0 + 3601))
        assert later.duplicate is False and later.message_id != first.message_id
    finally:
        db.close()


def test_duplicate_check_is_per_channel_and_sender(db):
    first = receive(db, incoming())
    other_channel = receive(db, incoming(channel="rad"))
    other_facility = receive(db, incoming(sending_facility="CLINIC2"))
    ids = {first.message_id, other_channel.message_id, other_facility.message_id}
    assert len(ids) == 3


def test_unknown_message_state_is_refused(db):
    with pytest.raises(ValueError, match="state"):
        receive(db, incoming(state="BOGUS"))
    assert db.list_messages() == []


def test_receive_many_stores_a_batch_in_one_transaction(db):
    batch = [incoming(control_id=f"B{i}") for i in range(3)]
    commits = db.commits
    with db.transaction():
        receipts = db.receive_many(batch)
    assert db.commits == commits + 1
    assert [db.get_message(r.message_id).control_id for r in receipts] == ["B0", "B1", "B2"]


def test_list_messages_filters_and_limits_newest_first(db):
    receive(db, incoming(control_id="A", channel="lab"))
    receive(db, incoming(control_id="B", channel="rad", received_at=T0 + 10))
    receive(db, incoming(control_id="C", channel="lab", state="FILTERED", received_at=T0 + 20))
    assert [m.control_id for m in db.list_messages()] == ["C", "B", "A"]
    assert [m.control_id for m in db.list_messages(channel="lab")] == ["C", "A"]
    assert [m.control_id for m in db.list_messages(state="FILTERED")] == ["C"]
    assert [m.control_id for m in db.list_messages(since=T0 + 5)] == ["C", "B"]
    assert [m.control_id for m in db.list_messages(limit=1)] == ["C"]
    assert db.list_messages()[0].raw is None
    assert db.get_message("nope") is None


# Deliveries -----------------------------------------------------------------------------


def test_claim_leases_due_deliveries_of_one_destination(db):
    receive(db, incoming(control_id="A"))
    receive(db, incoming(control_id="B"))
    with db.transaction():
        claimed = db.claim_due("qliq", T0, limit=1, lease_s=30)
    (d,) = claimed
    assert (d.destination, d.control_id, d.state, d.attempts) == ("qliq", "A", "SENDING", 1)
    assert d.lease_until == T0 + 30
    assert d.raw == RAW
    with db.transaction():
        rest = db.claim_due("qliq", T0, limit=10, lease_s=30)
        assert [x.control_id for x in rest] == ["B"]
        assert db.claim_due("qliq", T0, limit=10, lease_s=30) == []
    assert {x.state for x in db.list_deliveries(destination="kpn")} == {"QUEUED"}


def test_a_lease_that_ran_out_is_taken_over_with_its_due_time_kept(db):
    receive(db, incoming(destinations=("qliq", "kpn")))
    receive(db, incoming(control_id="C2", destinations=("qliq",), received_at=T0 + 1))
    with db.transaction():
        (d,) = db.claim_due("qliq", T0, limit=1, lease_s=30)
        db.claim_due("kpn", T0, limit=10, lease_s=30)
        assert [x.id for x in db.claim_due("qliq", T0 + 30, limit=1, lease_s=30)] != [d.id], "still leased"
        db.mark_retry(db.list_deliveries(destination="qliq", state="SENDING")[0].id, T0 + 999, "later")
        (again,) = db.claim_due("qliq", T0 + 30.5, limit=1, lease_s=30)
    assert again.id == d.id and again.attempts == 2, "it goes first again: its due time is kept"
    assert "lease_expired" in [e.kind for e in db.timeline("C1")]
    assert db.get_delivery(db.list_deliveries(destination="kpn")[0].id).state == "SENDING", (
        "one destination only"
    )


def test_retry_waits_until_next_attempt_and_keeps_the_error(db):
    receive(db, incoming(destinations=("qliq",)))
    with db.transaction():
        (d,) = db.claim_due("qliq", T0, limit=10, lease_s=30)
        db.mark_retry(d.id, T0 + 60, "HTTP 503 from vendor")
        assert db.claim_due("qliq", T0 + 59, limit=10, lease_s=30) == []
        (again,) = db.claim_due("qliq", T0 + 60, limit=10, lease_s=30)
    assert again.last_error == "HTTP 503 from vendor"
    assert again.attempts == 2


def test_a_partial_send_s_progress_lasts_until_the_delivery_is_sent_or_ends(db):
    receive(db, incoming(destinations=("qliq", "kpn")))
    with db.transaction():
        (d,) = db.claim_due("qliq", T0, limit=10, lease_s=30)
        db.mark_retry(d.id, T0, "request 2 of 2: HTTP 500", progress='{"done": 1}')
        db.claim_due("qliq", T0, limit=10, lease_s=30)
        db.mark_retry(d.id, T0, "timed out")  # a failure before any request: progress kept
        db.claim_due("qliq", T0, limit=10, lease_s=30)  # and its lease runs out
        (again,) = db.claim_due("qliq", T0 + 31, limit=10, lease_s=30)
        assert again.progress == '{"done": 1}'
        db.mark_sent(d.id, "m-1")
        assert db.get_delivery(d.id).progress is None
        (other,) = db.claim_due("kpn", T0, limit=10, lease_s=30)
        db.release(other.id, T0, "auth failed", progress='{"done": 1}')
        db.claim_due("kpn", T0, limit=10, lease_s=30)
        db.mark_error(other.id, "rejected")
        assert db.get_delivery(other.id).progress is None
        db.requeue(DeliverySelection(ids=(other.id,)))
        db.claim_due("kpn", T0, limit=10, lease_s=30)
        db.mark_retry(other.id, T0, "request 2 of 2: HTTP 500", progress='{"done": 1}')
        db.cancel(DeliverySelection(ids=(other.id,)))
    assert db.get_delivery(other.id).progress is None, "cancelled: a later requeue starts over"


def test_dead_letter_is_not_claimed_until_requeued(db):
    receive(db, incoming(destinations=("qliq",)))
    with db.transaction():
        (d,) = db.claim_due("qliq", T0, limit=10, lease_s=30)
        db.mark_error(d.id, "vendor rejected: unknown recipient")
        assert db.claim_due("qliq", T0 + 3600, limit=10, lease_s=30) == []
    assert db.get_delivery(d.id).state == "ERROR"
    with db.transaction():
        assert db.requeue(DeliverySelection(destination="qliq", state="ERROR")) == 1
        (again,) = db.claim_due("qliq", T0 + 3600, limit=10, lease_s=30)
    assert again.attempts == 1
    kinds = [e.kind for e in db.timeline("C1") if e.delivery_id == d.id]
    assert kinds == ["queued", "claimed", "error", "requeued", "claimed"]


def test_a_cancel_keeps_the_attempt_count_a_requeue_starts_again(db):
    receive(db, incoming(destinations=("qliq",)))
    with db.transaction():
        (d,) = db.claim_due("qliq", T0, limit=10, lease_s=30)
        db.mark_error(d.id, "vendor rejected")
        db.cancel(DeliverySelection(ids=(d.id,)))
        assert db.get_delivery(d.id).attempts == 1, "the operator still sees how often it was tried"
        db.requeue(DeliverySelection(ids=(d.id,)))
        assert db.get_delivery(d.id).attempts == 0


def test_an_error_ends_status_polling_in_the_same_change(db):
    receive(db, incoming(destinations=("qliq",)))
    with db.transaction():
        (d,) = db.claim_due("qliq", T0, limit=10, lease_s=30)
        db.mark_sent_polled(d.id, "v-1", "sent", StatusPoll(d.id, "qliq", "v-1", T0 + 60, T0 + 3600, None, 0))
        db.mark_error(d.id, "failed (FAILED)")
    assert db.next_status_poll_due("qliq") is None


def test_requeue_skips_deliveries_in_flight_and_refuses_an_empty_selection(db):
    receive(db, incoming(destinations=("qliq", "kpn")))
    with db.transaction():
        (sending,) = db.claim_due("qliq", T0, limit=10, lease_s=30)
        assert db.requeue(DeliverySelection(channel="lab")) == 0
        with pytest.raises(ValueError, match="not all"):
            db.requeue(DeliverySelection())
    assert db.get_delivery(sending.id).state == "SENDING"


def test_sent_then_delivered_then_read(db):
    receive(db, incoming(destinations=("qliq",)))
    with db.transaction():
        (d,) = db.claim_due("qliq", T0, limit=10, lease_s=30)
        db.mark_sent(d.id, "remote-77", "202 Accepted")
        db.set_state(d.id, "DELIVERED", "delivered to device")
        db.set_state(d.id, "READ")
    stored = db.get_delivery(d.id)
    assert (stored.state, stored.remote_id, stored.lease_until) == ("READ", "remote-77", None)
    events = [(e.kind, e.state, e.detail) for e in db.timeline("C1") if e.delivery_id == d.id]
    assert events[-3:] == [
        ("sent", "SENT", "202 Accepted"),
        ("status", "DELIVERED", "delivered to device"),
        ("status", "READ", ""),
    ]


def test_state_changes_on_unknown_deliveries_or_states_fail(db):
    receive(db, incoming(destinations=("qliq",)))
    with pytest.raises(StoreError, match="delivery 999 not changed: unknown"), db.transaction():
        db.mark_sent(999, "r")
    with pytest.raises(ValueError, match="unknown delivery state"), db.transaction():
        db.set_state(1, "LOST")


def test_cancel_stops_queued_deliveries_only(db):
    receive(db, incoming(destinations=("qliq", "kpn")))
    with db.transaction():
        (sending,) = db.claim_due("qliq", T0, limit=10, lease_s=30)
        assert db.cancel(DeliverySelection(channel="lab")) == 1
        assert db.claim_due("kpn", T0, limit=10, lease_s=30) == []
    states = {d.destination: d.state for d in db.list_deliveries()}
    assert states == {"qliq": "SENDING", "kpn": "CANCELLED"}


def test_list_deliveries_filters(db):
    receive(db, incoming(control_id="A", destinations=("qliq", "kpn")))
    receive(db, incoming(control_id="B", channel="rad", destinations=("qliq",)))
    assert len(db.list_deliveries(destination="qliq")) == 2
    assert [d.control_id for d in db.list_deliveries(channel="rad")] == ["B"]
    assert len(db.list_deliveries(state="QUEUED", limit=2)) == 2
    assert db.list_deliveries(state="SENT") == []
    assert db.list_deliveries()[0].raw is None
    assert db.get_delivery(db.list_deliveries()[0].id).raw is None, "statuses need no decrypted body"
    assert db.get_delivery(12345) is None


# Outbox and key/value -------------------------------------------------------------------


def test_outbox_keeps_order_per_channel_even_while_the_head_retries(db):
    with db.transaction():
        first = db.outbox_add("lab", "tcp:127.0.0.1:2575", b"ACK-1", "S1")
        second = db.outbox_add("lab", "tcp:127.0.0.1:2575", b"ACK-2", "S2")
        third = db.outbox_add("lab", "tcp:127.0.0.1:2575", b"ACK-3", "S3")
        other = db.outbox_add("rad", "tcp:127.0.0.1:2576", b"ACK-R", "R1")
    head = db.outbox_next("lab", T0)
    assert (head.id, head.seq, head.payload, head.state) == (first, 1, b"ACK-1", "PENDING")
    assert db.outbox_next("rad", T0).seq == 1 and db.outbox_next("rad", T0).id == other

    with db.transaction():
        db.outbox_retry(first, T0 + 30, "connection refused")
    assert db.outbox_next("lab", T0 + 29) is None
    assert db.outbox_next("lab", T0 + 30).attempts == 1

    with db.transaction():
        db.outbox_done(first)
    assert db.outbox_next("lab", T0).id == second
    with db.transaction():
        db.outbox_error(second, "peer answered AR")
    assert db.outbox_next("lab", T0).id == third
    with pytest.raises(StoreError, match="no outbox item"), db.transaction():
        db.outbox_done(999)


def test_kv_round_trip_and_overwrite(db):
    assert db.kv_get("qliq", "conv:MRN1") is None
    with db.transaction():
        db.kv_put("qliq", "conv:MRN1", b"conversation-1")
    assert db.kv_get("qliq", "conv:MRN1") == b"conversation-1"
    with db.transaction():
        db.kv_put("qliq", "conv:MRN1", b"conversation-2")
    assert db.kv_get("qliq", "conv:MRN1") == b"conversation-2"
    assert db.kv_get("kpn", "conv:MRN1") is None


def test_duplicate_lookup_reads_only_the_covering_index(sqlite_db):
    plan = sqlite_db.connection.execute(
        "EXPLAIN QUERY PLAN " + database_module._FIND_SAME_CONTROL_ID, ("lab", "LIS", "HOSP", "C1", T0)
    ).fetchall()
    assert "USING COVERING INDEX messages_by_control_id" in plan[0][-1]


# Key rotation -------------------------------------------------------------------------


def test_reencrypt_moves_every_value_to_the_current_key(tmp_path, key):
    path = tmp_path / "rotate.sqlite3"
    old = Database.open(path, Cipher(key), clock=lambda: T0)
    receive(old, incoming())
    with old.transaction():
        (d,) = old.claim_due("qliq", T0, limit=10, lease_s=30)
        old.mark_retry(d.id, T0 + 60, "HTTP 503 from vendor")
        item = old.outbox_add("lab", "tcp:host=127.0.0.1:port=9", b"MSH|status", "S1")
        old.outbox_retry(item, T0 + 5, "hospital answered AE")
        old.kv_put("qliq", "conv:MRN1", b"conversation-1")
    old.close()

    new_key = os.urandom(32)
    rotating = Database.open(path, Cipher(new_key, old_keys=[key]), clock=lambda: T0)
    done = rotating.reencrypt(batch=2)
    assert done["messages.raw_enc"] == 1 and done["deliveries.last_error_enc"] == 1
    assert done["outbox.payload_enc"] == 1 and done["outbox.last_error_enc"] == 1
    assert done["kv.value_enc"] == 3, "the vendor state, the key check and the hash key"
    assert set(rotating.reencrypt().values()) == {0}, "nothing left for the old key"
    rotating.close()

    rotated = Database.open(path, Cipher(new_key), clock=lambda: T0)  # the old key is gone
    try:
        assert rotated.get_message("C1", with_body=True).raw == RAW
        assert rotated.get_delivery(d.id).last_error == "HTTP 503 from vendor"
        assert rotated.get_outbox_item(item, with_payload=True).payload == b"MSH|status"
        assert rotated.get_outbox_item(item).last_error == "hospital answered AE"
        assert rotated.kv_get("qliq", "conv:MRN1") == b"conversation-1"
        assert rotated.timeline("C1")
    finally:
        rotated.close()


def test_reencrypt_knows_every_encrypted_column(sqlite_db):
    tables = [
        row[0] for row in sqlite_db.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    encrypted = {
        (table, column[1])
        for table in tables
        for column in sqlite_db.connection.execute(f"PRAGMA table_info({table})")
        if column[1].endswith("_enc")
    }
    assert encrypted == {(table, column) for table, _, column in database_module._ENCRYPTED_COLUMNS}


def test_an_attempt_ending_after_an_operator_skip_keeps_the_reason(db):
    with db.transaction():
        item = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", b"MSH|status", "S1")
        assert db.outbox_skip(item, "skipped by an operator: listener rejects it")
        db.outbox_retry(item, T0 + 5, "hospital answered AE")
        assert not db.outbox_skip(item, "twice")
    skipped = db.get_outbox_item(item)
    assert skipped.state == "ERROR" and skipped.last_error == "skipped by an operator: listener rejects it"
    assert db.outbox_next("lab", T0 + 3600) is None


# Operators' actions -------------------------------------------------------------------


def test_an_operator_s_change_is_recorded_in_its_own_transaction_with_the_name(db, clock):
    receive(db, incoming(control_id="A", destinations=("qliq",)))
    (delivery,) = db.claim_due("qliq", T0, limit=1, lease_s=30)
    with db.transaction():
        db.mark_error(delivery.id, "vendor said 400")
        db.requeue(DeliverySelection(ids=(delivery.id,)))  # the engine's own: no operator, no record
        db.mark_error(delivery.id, "vendor said 400")
        item = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", b"MSH|status", "S1")
    assert db.list_actions() == []
    with pytest.raises(RuntimeError), db.transaction():
        assert db.requeue(DeliverySelection(ids=(delivery.id,)), by="alice") == 1
        raise RuntimeError("the change fails after the requeue")
    assert db.list_actions() == [], "the record goes with the change it records"
    clock.now = T0 + 60
    with db.transaction():
        db.requeue(DeliverySelection(ids=(delivery.id,)), by="alice")
        db.cancel(DeliverySelection(ids=(delivery.id,)), by="bob")
        db.cancel(DeliverySelection(ids=(delivery.id,)), by="bob")  # nothing left to cancel: not recorded
        db.outbox_skip(item, "skipped by operator alice: DOE JANE's feed", by="alice")
        db.record_action("carol", "reloaded", "channel files", "restarted lab")
    found = [(a.at, a.operator, a.action, a.subject, a.detail) for a in db.list_actions()]
    assert found == [
        (T0 + 60, "carol", "reloaded", "channel files", "restarted lab"),
        (T0 + 60, "alice", "skipped", f"outbox item {item}", "skipped by operator alice: DOE JANE's feed"),
        (T0 + 60, "bob", "cancelled", f"delivery {delivery.id}", ""),
        (T0 + 60, "alice", "requeued", f"delivery {delivery.id}", ""),
    ]
    assert [a.action for a in db.list_actions(limit=1)] == ["reloaded"]
    stored = db.connection.execute(
        "SELECT detail_enc FROM operator_actions WHERE action = 'skipped'"
    ).fetchone()
    assert b"DOE" not in bytes(stored[0]), "a typed reason is encrypted like every free text"


# Retention ----------------------------------------------------------------------------


def test_prune_deletes_only_old_messages_that_need_nothing_more(db, clock):
    from engine.store.base import StatusPoll

    def old(control_id: str) -> int:
        return receive(db, incoming(control_id=control_id, destinations=("qliq",))).message_id

    done, waiting, polled = old("DONE"), old("WAITING"), old("POLLED")
    with db.transaction():
        for delivery in db.claim_due("qliq", T0, limit=10, lease_s=30):
            if delivery.control_id == "DONE":
                db.mark_sent(delivery.id, "v-1")
            elif delivery.control_id == "POLLED":
                poll = StatusPoll(delivery.id, "qliq", "v-2", T0 + 60, T0 + 3600, None, 0)
                db.mark_sent_polled(delivery.id, "v-2", "", poll)
            else:
                db.release(delivery.id, T0 + 60, "vendor down")  # QUEUED again
        sent = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", b"MSH|status", "S1")
        db.outbox_done(sent)
        pending = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", b"MSH|status", "S2")
        db.record_action("alice", "reloaded", "channel files", "nothing changed")
    clock.now = T0 + 10 * 86400
    recent = receive(db, incoming(control_id="RECENT", received_at=clock.now)).message_id
    with db.transaction():
        db.record_action("alice", "logged in", "session from 127.0.0.1")

    pruned = db.prune(before=T0 + 86400, batch=1)

    assert pruned["messages"] == 1 and pruned["deliveries"] == 1 and pruned["events"] >= 1
    assert pruned["outbox"] == 1
    kept = {m.id for m in db.list_messages(limit=100)}
    assert done not in kept and {waiting, polled, recent} <= kept
    keys = {i for (i,) in db.connection.execute("SELECT message_id FROM message_keys").fetchall()}
    assert done not in keys, "a pruned message's key goes with it (PostgreSQL keeps one per message)"
    assert db.get_outbox_item(sent) is None and db.get_outbox_item(pending) is not None
    assert db.timeline("DONE") == []
    assert pruned["operator_actions"] == 1 and [a.action for a in db.list_actions()] == ["logged in"]
    assert db.prune(before=T0 + 86400) == {
        "messages": 0,
        "deliveries": 0,
        "events": 0,
        "outbox": 0,
        "operator_actions": 0,
    }
    db.vacuum()
    assert db.get_message("WAITING", with_body=True).raw == RAW


# Keyed hashes -------------------------------------------------------------------------


def stored_digest(db: Database, control_id: str) -> bytes:
    (digest,) = db.connection.execute(
        "SELECT body_sha256 FROM messages WHERE control_id = ?", (control_id,)
    ).fetchone()
    return digest


def test_body_digests_are_keyed_so_a_guessed_body_cannot_be_confirmed(tmp_path, key):
    first_store = Database.open(tmp_path / "a.sqlite3", Cipher(key))
    other_store = Database.open(tmp_path / "b.sqlite3", Cipher(key))
    try:
        for db in (first_store, other_store):
            receive(db, incoming())
        digest = stored_digest(first_store, "C1")
        assert digest != hashlib.sha256(RAW).digest()
        assert digest != stored_digest(other_store, "C1"), "each store has its own secret"
        assert receive(first_store, incoming()).duplicate, "the resend is still recognised"
    finally:
        first_store.close()
        other_store.close()


def test_a_resend_of_a_message_stored_with_a_plain_digest_is_still_a_duplicate(db):
    """Rows written before digests were keyed, inside the duplicate window after an upgrade."""
    first = receive(db, incoming())
    with db.transaction():
        db.connection.execute(
            "UPDATE messages SET body_sha256 = ? WHERE id = ?",
            (hashlib.sha256(RAW).digest(), first.message_id),
        )
    again = receive(db, incoming())
    assert again.duplicate and again.message_id == first.message_id


def test_a_resend_of_a_plain_digest_row_without_a_key_leaves_no_row_of_its_own(db):
    """On PostgreSQL a message, its key and its deliveries go in before the lookup's answer is
    read: a resend the lookup finds (a row from before keys and keyed digests) takes them out."""
    first = receive(db, incoming(destinations=("qliq", "kpn")))
    with db.transaction():
        db.connection.execute(
            "UPDATE messages SET body_sha256 = ? WHERE id = ?",
            (hashlib.sha256(RAW).digest(), first.message_id),
        )
        if db.backend != "sqlite":
            db.connection.execute("DELETE FROM message_keys")
    for _ in range(2):
        again = receive(db, incoming(destinations=("qliq", "kpn")))
        assert again.duplicate and again.message_id == first.message_id
    count = "SELECT COUNT(*) FROM {} WHERE message_id <> ?"
    for table in ("deliveries", "message_keys") if db.backend != "sqlite" else ("deliveries",):
        assert db.connection.execute(count.format(table), (first.message_id,)).fetchone()[0] == 0, table
    assert db.connection.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1


def test_migration_6_forgets_the_reversible_qliq_conversation_keys(tmp_path, key):
    path = tmp_path / "v5.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=5) == 5
    for namespace in ("qliq-conversation", "kpn-token"):
        conn.execute(
            "INSERT INTO kv (namespace, key, value_enc, updated_at) VALUES (?, 'k', ?, 1.0)",
            (namespace, Cipher(key).encrypt(b"v")),
        )
    conn.close()
    db = Database.open(path, Cipher(key))
    try:
        assert db.kv_get("qliq-conversation", "k") is None
        assert db.kv_get("kpn-token", "k") == b"v"
    finally:
        db.close()


def test_a_new_store_and_its_wal_and_shm_files_are_private_whatever_the_umask(tmp_path, key) -> None:
    path = tmp_path / "var" / "courier.sqlite3"
    previous = os.umask(0o022)
    try:
        db = Database.open(path, Cipher(key))
        with db.transaction():
            db.receive(incoming())
        modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
        db.close()
    finally:
        os.umask(previous)
    assert modes == {"courier.sqlite3": 0o600, "courier.sqlite3-wal": 0o600, "courier.sqlite3-shm": 0o600}
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_an_older_store_others_may_read_is_opened_with_a_warning(tmp_path, key, caplog) -> None:
    path = tmp_path / "courier.sqlite3"
    Database.open(path, Cipher(key)).close()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="engine.store.database"):
        Database.open(path, Cipher(key)).close()
    assert f"has mode 0644; run: chmod 600 {path}" in caplog.text


@pytest.mark.parametrize(
    "resend",
    [
        RAW.replace(b"\r", b"\n"),
        RAW.replace(b"\r", b"\r\n"),
        RAW + b"\r",
        RAW + b"\r\n\r\n",
        RAW.replace(b"\r", b"  \r") + b" \t",
        b"\r\n" + RAW,
    ],
    ids=["lf", "crlf", "trailing-cr", "blank-lines", "trailing-whitespace", "leading-line-end"],
)
def test_a_resend_with_other_line_ends_or_trailing_whitespace_is_a_duplicate(db, resend):
    first = receive(db, incoming())
    again = receive(db, incoming(raw=resend))
    assert again.duplicate and again.message_id == first.message_id
    assert db.get_message("C1", with_body=True).raw == RAW, "the body stays as first received"


def test_a_resend_with_a_changed_value_is_still_new(db):
    receive(db, incoming())
    assert not receive(db, incoming(raw=RAW.replace(b"DOE", b"ROE"))).duplicate


def test_a_resend_of_a_row_whose_digest_is_of_the_exact_bytes_is_still_a_duplicate(db):
    """Rows stored before digests were of the canonical form, inside the window after an upgrade."""
    first = receive(db, incoming())
    with db.transaction():
        db.connection.execute(
            "UPDATE messages SET body_sha256 = ? WHERE id = ?", (db.keyed_hash(RAW), first.message_id)
        )
    again = receive(db, incoming())
    assert again.duplicate and again.message_id == first.message_id
