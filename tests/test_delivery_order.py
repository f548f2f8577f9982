"""``order_by``: deliveries with one key go one after another, different keys in parallel.

The rule lives in the store's claim, so it holds on a real SQLite file for every claimer:
after retries, a requeue, a restart (another connection) and another node.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from engine.channel.order import OrderBy, order_by_problem
from engine.message import Message
from engine.node import NodeIdentity
from engine.store.base import DeliverySelection
from engine.store.crypto import Cipher
from engine.store.database import Database
from tests.test_store_database import RAW, T0, incoming, receive

PATIENTS = {"A": "MRN-ALICE-1", "B": "MRN-BOB-2"}


@pytest.fixture
def path(tmp_path):
    return tmp_path / "store.sqlite3"


@pytest.fixture
def open_db(path):
    key = Cipher(os.urandom(32))
    opened: list[Database] = []

    def open_db(node: str = "a") -> Database:
        db = Database.open(path, key, clock=lambda: T0, node=NodeIdentity(node, f"{node}.1", "h", 1))
        opened.append(db)
        return db

    yield open_db
    for db in opened:
        db.close()


def queue(db: Database, *patients: str) -> list[int]:
    """One message per patient letter, in this order, each with one delivery to qliq."""
    ids = []
    for n, patient in enumerate(patients):
        message = incoming(
            control_id=f"{patient}{n}",
            destinations=("qliq",),
            order_keys=(("qliq", PATIENTS[patient]),),
            received_at=T0 + n,
        )
        receive(db, message)
        ids.append(db.list_deliveries(limit=1)[0].id)
    return ids


def claim(db: Database, now: float = T0 + 100, limit: int = 10, max_in_flight: int | None = None):
    with db.transaction():
        return [d.control_id for d in db.claim_due("qliq", now, limit, 30, max_in_flight)]


def retry(db: Database, control_id: str, at: float) -> None:
    (delivery,) = [d for d in db.list_deliveries(state="SENDING") if d.control_id == control_id]
    with db.transaction():
        db.mark_retry(delivery.id, at, "HTTP 503")


def sent(db: Database, control_id: str) -> None:
    (delivery,) = [d for d in db.list_deliveries(state="SENDING") if d.control_id == control_id]
    with db.transaction():
        db.mark_sent(delivery.id, f"r-{control_id}")


def test_one_key_goes_one_at_a_time_and_other_keys_run_beside_it(open_db):
    db = open_db()
    queue(db, "A", "A", "B", "A", "B")
    assert claim(db) == ["A0", "B2"], "the head of each patient's line"
    assert claim(db) == []
    sent(db, "A0")
    assert claim(db) == ["A1"]
    sent(db, "B2")
    sent(db, "A1")
    assert claim(db) == ["A3", "B4"]


def test_a_key_in_retry_holds_its_later_deliveries_but_not_other_keys(open_db):
    db = open_db()
    ids = queue(db, "A", "A", "B", "B")
    assert claim(db) == ["A0", "B2"]
    retry(db, "A0", T0 + 500)  # the vendor failed: A0 waits for its next attempt
    sent(db, "B2")
    assert claim(db) == ["B3"], "B overtakes the stuck A; A1 waits behind A0"
    waiting = {d.control_id: d.waits_for for d in db.list_deliveries()}
    assert waiting["A1"] == ids[0] and waiting["A0"] is None and waiting["B3"] is None
    sent(db, "B3")
    assert claim(db, T0 + 500) == ["A0"], "due again: the earlier one goes first"
    sent(db, "A0")
    assert claim(db, T0 + 500) == ["A1"]


def test_a_dead_letter_or_cancel_lets_the_key_go_on_and_a_requeue_joins_the_line_again(open_db):
    db = open_db()
    ids = queue(db, "A", "A", "A")
    assert claim(db) == ["A0"]
    (head,) = db.list_deliveries(state="SENDING")
    with db.transaction():
        db.mark_error(head.id, "rejected")
    assert claim(db) == ["A1"], "dead-lettered: the next one goes"
    with db.transaction():
        assert db.requeue(DeliverySelection(ids=(ids[0],))) == 1
    assert claim(db) == [], "A1 is SENDING: the requeued A0 waits its turn"
    sent(db, "A1")
    assert claim(db) == ["A0"], "the requeued one is the oldest unfinished: it goes before A2"
    with db.transaction():
        db.cancel(DeliverySelection(ids=(ids[2],)))
    sent(db, "A0")
    assert claim(db) == []


def test_the_rule_holds_for_a_restarted_engine_and_another_node(open_db, path):
    first = open_db("a")
    queue(first, "A", "A", "B")
    assert claim(first, limit=1) == ["A0"]
    retry(first, "A0", T0 + 100)
    first.close()
    restarted, other = open_db("a"), open_db("b")
    assert sorted(claim(other)) == ["A0", "B2"], "the stored rule, not a queue's memory"
    assert claim(restarted) == []
    sent(other, "A0")
    assert claim(restarted) == ["A1"]


def test_a_slow_key_never_blocks_the_destination_within_its_concurrency(open_db):
    db = open_db()
    queue(db, "A", "A", "A", "A", "B")
    assert claim(db, max_in_flight=2) == ["A0", "B4"], "no head-of-line blocking behind A's line"


def test_the_store_keeps_a_keyed_hash_of_the_key_never_the_patient_id(open_db, path):
    db = open_db()
    queue(db, "A", "B")
    receive(db, incoming(control_id="NOKEY", destinations=("qliq",), received_at=T0 + 9))
    conn = sqlite3.connect(path)
    try:
        keys = [k for (k,) in conn.execute("SELECT order_key FROM deliveries ORDER BY id")]
    finally:
        conn.close()
    assert keys[2] is None and len(set(keys[:2])) == 2
    assert all(len(k) == 64 and PATIENTS["A"] not in k for k in keys[:2])
    dump = path.read_bytes() + path.with_name(path.name + "-wal").read_bytes()
    assert PATIENTS["A"].encode() not in dump


def test_order_by_reads_its_paths_and_refuses_what_names_none():
    message = Message.parse(RAW)
    assert OrderBy.parse("{PID-3.4}/{PID-3.1}").key(message) == "HOSP/MRN123"
    assert OrderBy.parse("{PID-3.1}").key(Message.parse(RAW.split(b"\rPID")[0])) == ""
    assert order_by_problem("{PID-3.1}") is None
    assert "at least one HL7 path" in order_by_problem("patient")
    assert "invalid HL7 path" in order_by_problem("{PID-}")
    assert "unbalanced" in order_by_problem("{PID-3.1}}")


def test_the_example_channels_order_each_destination_by_the_patient_identifier_when_routing():
    from pathlib import Path

    from courier_sandbox.credentials import Credentials
    from engine.channel.check import load_channels
    from engine.commands.run import with_sandbox_secrets
    from engine.screen import Screen
    from engine.service import routes

    examples = Path(__file__).resolve().parent.parent / "channels"
    env = with_sandbox_secrets([examples], Credentials.generate(), env={})
    channels = {c.name: c for c in load_channels([examples], env=env)}
    assert {d.order_by for c in channels.values() for d in c.destinations} == {"{PID-3.1}"}
    lab = channels["lis-oru-to-conneqt"]
    raw = (examples.parent / "sample_messages" / "oru_r01_lab_fbc_pdf.hl7").read_bytes()
    accepted = Screen(lab, routes(lab, lambda: T0))(Message.parse(raw))
    (destination,) = accepted.destinations
    assert accepted.order_keys == ((destination, Message.parse(raw).get("PID-3.1")),)
