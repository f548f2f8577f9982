"""The store methods the delivery queue and status tracker added, on a real SQLite file."""

from __future__ import annotations

import os

import pytest

from engine.store.base import DELIVERED, ERROR, QUEUED, SENDING, SENT, Incoming, OutboxEntry, StatusPoll
from engine.store.crypto import Cipher
from engine.store.database import Database
from engine.store.schema import LATEST_VERSION
from engine.store.worker import run_in_one_transaction
from tests.support.postgres import committed_rows

T0 = 1_700_000_000.0
RAW = b"MSH|^~\\&|LIS|HOSP|COURIER|CLINIC|20240101||ORU^R01|C1|P|2.5\rPID|1||MRN123"


@pytest.fixture
def db(store_location):
    database = Database.open(store_location, Cipher(os.urandom(32)), clock=lambda: T0)
    database.location = store_location
    yield database
    database.close()


def store_message(db: Database, destinations=("gp",)) -> list[int]:
    incoming = Incoming(
        channel="lab",
        raw=RAW,
        sending_application="LIS",
        sending_facility="HOSP",
        control_id="C1",
        message_type="ORU^R01",
        received_at=T0,
        peer="test",
        destinations=destinations,
    )
    with db.transaction():
        db.receive(incoming)
    return [d.id for d in db.list_deliveries()]


def test_release_requeues_without_counting_the_attempt(db):
    (delivery_id,) = store_message(db)
    with db.transaction():
        (claimed,) = db.claim_due("gp", T0, 10, 60)
        assert claimed.attempts == 1
        db.release(delivery_id, T0 + 30, "token expired")
    delivery = db.get_delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == (QUEUED, 0, T0 + 30)
    assert delivery.last_error == "token expired"
    assert [e.kind for e in db.timeline("C1")][-1] == "held:auth"


def test_next_attempt_due_is_the_earliest_queued_row_of_that_destination(db):
    store_message(db, ("gp", "other"))
    assert db.next_attempt_due("gp") == T0
    with db.transaction():
        db.claim_due("gp", T0, 10, 60)
    assert db.next_attempt_due("gp") is None
    assert db.next_attempt_due("other") == T0


def test_status_polls_are_scheduled_with_sent_claimed_leased_and_ended(db):
    (delivery_id,) = store_message(db)
    poll = StatusPoll(delivery_id, "gp", "", T0 + 10, T0 + 1000, T0 + 500, 0)
    with db.transaction():
        db.claim_due("gp", T0, 1, 60)
        db.mark_sent_polled(delivery_id, "remote-1", "", poll)
    assert db.get_delivery(delivery_id).state == SENT
    assert db.next_status_poll_due("gp") == T0 + 10
    with db.transaction():
        assert db.claim_status_polls("gp", T0 + 9, 10, 30) == []
        (claimed,) = db.claim_status_polls("gp", T0 + 10, 10, 30)
    assert claimed == StatusPoll(delivery_id, "gp", "remote-1", T0 + 40, T0 + 1000, T0 + 500, 1)
    with db.transaction():
        assert db.claim_status_polls("gp", T0 + 20, 10, 30) == []  # leased, not taken twice
        db.reschedule_status_poll(delivery_id, T0 + 25)
    assert db.next_status_poll_due("gp") == T0 + 25
    with db.transaction():
        db.end_status_poll(delivery_id)
        db.mark_error(delivery_id, "expired")
    assert db.next_status_poll_due("gp") is None
    assert db.get_delivery(delivery_id).state == ERROR


def test_find_delivery_by_the_vendors_id(db):
    (delivery_id,) = store_message(db)
    with db.transaction():
        db.claim_due("gp", T0, 1, 60)
        db.mark_sent(delivery_id, "remote-7")
    assert db.find_delivery("gp", "remote-7").id == delivery_id
    assert db.find_delivery("gp", "remote-8") is None
    assert db.find_delivery("other", "remote-7") is None


def test_schema_is_at_the_latest_version(db):
    version = db.connection.execute("SELECT version FROM schema_version").fetchone()[0]
    assert version == LATEST_VERSION >= 4


def status_report(control_id: str | None = "S1") -> OutboxEntry:
    return OutboxEntry("lab", "tcp:host=127.0.0.1:port=9", control_id, b"MSH|^~\\&|status " + RAW[-6:])


def committed(db: Database) -> tuple[list[tuple], list[tuple]]:
    """(delivery id, state) and (outbox control id, seq) as another connection sees them."""
    deliveries = committed_rows(db.location, "SELECT id, state FROM deliveries ORDER BY id")
    outbox = committed_rows(db.location, "SELECT control_id, seq FROM outbox ORDER BY seq")
    return deliveries, outbox


@pytest.mark.parametrize(
    "change",
    [
        lambda db, d, reports: db.mark_sent(d, "remote-1", "", reports),
        lambda db, d, reports: db.mark_sent_polled(
            d, "remote-1", "", StatusPoll(d, "gp", "", T0 + 10, T0 + 1000, None, 0), reports
        ),
        lambda db, d, reports: db.mark_error(d, "rejected", reports),
        lambda db, d, reports: (db.mark_sent(d, "remote-1"), db.set_state(d, DELIVERED, "", reports)),
    ],
    ids=["mark_sent", "mark_sent_polled", "mark_error", "set_state"],
)
def test_a_state_change_and_the_status_reports_it_causes_commit_together(db, change):
    (delivery_id,) = store_message(db)
    with db.transaction():
        db.claim_due("gp", T0, 1, 60)
        change(db, delivery_id, [status_report("S1"), status_report("S2")])
    (state,) = [s for _, s in committed(db)[0]]
    assert state in (SENT, ERROR, DELIVERED)
    assert committed(db)[1] == [("S1", 1), ("S2", 2)], "in the channel's order, after what was there"


def test_an_outbox_insert_that_fails_undoes_its_state_change_and_nothing_else_in_the_batch(db):
    """The writer's group commit: a call that fails rolls back alone, state change and report."""
    first, second = store_message(db, ("gp", "other"))
    with db.transaction():
        db.claim_due("gp", T0, 1, 60)
        db.claim_due("other", T0, 1, 60)
    outcomes = run_in_one_transaction(
        db,
        [
            (Database.mark_sent, (first, "remote-1", "", [status_report("S1")])),
            (Database.mark_sent, (second, "remote-2", "", [status_report(None)])),  # NOT NULL refuses it
        ],
    )
    assert [ok for ok, _ in outcomes] == [True, False]
    assert committed(db) == (sorted([(first, SENT), (second, SENDING)]), [("S1", 1)])
    assert [e.kind for e in db.timeline("C1") if e.delivery_id == second][-1] == "claimed"
