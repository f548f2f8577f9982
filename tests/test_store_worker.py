"""Group commit: one transaction per batch; savepoints only once a call has failed."""

from __future__ import annotations

import os

import pytest

from engine.errors import StoreError
from engine.store.crypto import Cipher
from engine.store.database import Database
from engine.store.worker import run_each, run_in_one_transaction
from tests.test_store_database import incoming


@pytest.fixture
def db(tmp_path):
    database = Database.open(tmp_path / "s.sqlite3", Cipher(os.urandom(32)))
    yield database
    database.close()


def test_batch_commits_once_and_a_failing_call_undoes_only_its_own_changes(db):
    half_done = [incoming(control_id="HALF"), incoming(control_id="BAD", state="BOGUS")]
    calls = [
        (Database.receive, (incoming(control_id="A"),)),
        (Database.receive_many, (half_done,)),
        (Database.receive, (incoming(control_id="B"),)),
    ]
    commits = db.commits
    outcomes = run_in_one_transaction(db, calls)
    assert db.commits == commits + 1
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], ValueError)
    assert sorted(m.control_id for m in db.list_messages()) == ["A", "B"]
    assert len(db.list_deliveries()) == 4


def test_a_batch_that_succeeds_runs_no_savepoint(db):
    statements: list[str] = []
    db.connection.set_trace_callback(statements.append)
    good = [(Database.receive, (incoming(control_id=f"G{i}"),)) for i in range(3)]
    assert [ok for ok, _ in run_in_one_transaction(db, good)] == [True, True, True]
    assert not any(s.startswith("SAVEPOINT") for s in statements)
    bad = [(Database.receive, (incoming(control_id="C"),)), (Database.mark_error, (77, "boom"))]
    assert [ok for ok, _ in run_in_one_transaction(db, bad)] == [True, False]
    assert any(s.startswith("SAVEPOINT") for s in statements)
    assert sorted(m.control_id for m in db.list_messages()) == ["C", "G0", "G1", "G2"]


def test_single_failing_call_rolls_back_and_leaves_the_connection_usable(db):
    (outcome,) = run_in_one_transaction(db, [(Database.mark_error, (77, "boom"))])
    assert outcome[0] is False and isinstance(outcome[1], StoreError)
    assert not db.connection.in_transaction
    ((ok, receipt),) = run_in_one_transaction(db, [(Database.receive, (incoming(),))])
    assert ok and db.get_message(receipt.message_id) is not None


def test_failed_commit_fails_every_call_in_the_batch(db):
    def commit_breaker(database: Database) -> None:
        """Leaves a deferred foreign-key violation, so COMMIT itself fails."""
        database.connection.execute("PRAGMA defer_foreign_keys = ON")
        database.connection.execute(
            "INSERT INTO deliveries (message_id, channel, destination, state, next_attempt_at,"
            " created_at, updated_at) VALUES (9999, 'lab', 'qliq', 'QUEUED', 0, 0, 0)"
        )

    calls = [(Database.receive, (incoming(),)), (commit_breaker, ())]
    outcomes = run_in_one_transaction(db, calls)
    assert [ok for ok, _ in outcomes] == [False, False]
    assert not db.connection.in_transaction
    assert db.list_messages() == []


def test_reads_run_independently(db):
    outcomes = run_each(db, [(Database.get_delivery, (1,)), (Database.kv_get, ("x", "y"))])
    assert outcomes == [(True, None), (True, None)]
