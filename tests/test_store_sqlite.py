"""The async store through the running reactor: commit before fire, group commit, reads.

Each test runs on a SQLite file and on PostgreSQL (``store_location``), unless it says otherwise.
"""

from __future__ import annotations

import os

import pytest
from twisted.internet import defer

from engine.errors import StoreError
from engine.store import open_store
from engine.store.base import DeliverySelection
from engine.store.crypto import Cipher
from engine.store.sqlite import SQLiteStore
from tests.conftest import on_reactor
from tests.support.postgres import committed_rows
from tests.support.waiting import wait_for
from tests.test_store_database import RAW, T0, incoming


@pytest.fixture
def path(store_location):
    return store_location


@pytest.fixture
def store(reactor, path):
    s = open_store(path, reactor=reactor, cipher=Cipher(os.urandom(32)), durability="normal")
    on_reactor(s.start)
    yield s
    on_reactor(s.close)


def count_rows(path, table: str) -> int:
    """Through a separate connection: only committed rows are visible."""
    return committed_rows(path, f"SELECT count(*) FROM {table}")[0][0]


def test_message_is_committed_before_the_deferred_fires(store, path):
    seen = on_reactor(
        lambda: store.receive(incoming()).addCallback(
            lambda receipt: (receipt, count_rows(path, "messages"), count_rows(path, "deliveries"))
        )
    )
    receipt, messages, deliveries = seen
    assert receipt.duplicate is False
    assert (messages, deliveries) == (1, 2)


def test_concurrent_receives_share_commits(store):
    def receive_200():
        before = store.commits
        ds = [store.receive(incoming(control_id=f"G{i}")) for i in range(200)]
        return defer.gatherResults(ds).addCallback(lambda r: (r, store.commits - before))

    receipts, commits = on_reactor(receive_200)
    assert len({r.message_id for r in receipts}) == 200
    assert 1 <= commits <= 20


def test_a_failing_operation_fails_only_its_own_deferred(store):
    def three_writes():
        ds = [
            store.receive(incoming(control_id="OK1")),
            store.mark_sent(424242, "remote"),
            store.receive(incoming(control_id="OK2")),
        ]
        return defer.DeferredList(ds, consumeErrors=True)

    (ok1, r1), (ok2, r2), (ok3, r3) = on_reactor(three_writes)
    assert ok1 and ok3 and not ok2
    assert r2.check(StoreError)
    stored = on_reactor(store.list_messages)
    assert sorted(m.control_id for m in stored) == ["OK1", "OK2"]


def test_duplicate_answers_with_the_original_ack_code(store):
    first = on_reactor(store.receive, incoming(ack_code="CA"))
    again = on_reactor(store.receive, incoming(ack_code="AA"))
    assert again.duplicate and again.message_id == first.message_id and again.ack_code == "CA"
    assert len(on_reactor(store.list_deliveries)) == 2


def test_queue_round_trip_through_the_reactor(store):
    on_reactor(store.receive_many, [incoming(control_id="Q1"), incoming(control_id="Q2")])
    claimed = on_reactor(store.claim_due, "qliq", T0, 10, 30.0)
    assert [d.control_id for d in claimed] == ["Q1", "Q2"]
    assert claimed[0].raw == RAW
    on_reactor(store.mark_sent, claimed[0].id, "r-1")
    on_reactor(store.mark_retry, claimed[1].id, T0 + 5, "timeout")
    on_reactor(store.set_state, claimed[0].id, "DELIVERED", "")
    assert on_reactor(store.get_delivery, claimed[0].id).state == "DELIVERED"
    on_reactor(store.mark_error, claimed[1].id, "gave up")
    assert on_reactor(store.requeue, DeliverySelection(ids=(claimed[1].id,))) == 1
    assert on_reactor(store.cancel, DeliverySelection(ids=(claimed[1].id,))) == 1
    assert on_reactor(store.renew_leases, [claimed[0].id], T0 + 60) == [claimed[0].id], "not SENDING"
    kinds = [e.kind for e in on_reactor(store.timeline, "Q2") if e.delivery_id == claimed[1].id]
    assert kinds == ["queued", "claimed", "retry", "error", "requeued", "cancelled"]
    assert on_reactor(store.get_message, "Q2", True).raw == RAW


def test_outbox_and_kv_through_the_reactor(store, reactor):
    first = on_reactor(store.outbox_add, "lab", "tcp:127.0.0.1:2575", b"ACK-1", "S1")
    on_reactor(store.outbox_add, "lab", "tcp:127.0.0.1:2575", b"ACK-2", "S2")
    now = reactor.seconds()
    assert on_reactor(store.outbox_next, "lab", now).id == first
    on_reactor(store.outbox_retry, first, now + 60, "refused")
    assert on_reactor(store.outbox_next, "lab", now) is None
    on_reactor(store.outbox_done, first)
    assert on_reactor(store.outbox_next, "lab", now).payload == b"ACK-2"
    on_reactor(store.kv_put, "kpn", "token", b"t-1")
    assert on_reactor(store.kv_get, "kpn", "token") == b"t-1"


def test_close_finishes_queued_writes_and_reopens_with_the_same_key(reactor, path):
    cipher = Cipher(os.urandom(32))
    store = open_store(path, reactor=reactor, cipher=cipher)
    on_reactor(store.start)

    def write_then_close():
        ds = [store.receive(incoming(control_id=f"W{i}")) for i in range(20)]
        return store.close().addCallback(lambda _: defer.gatherResults(ds))

    assert len(on_reactor(write_then_close)) == 20
    assert count_rows(path, "messages") == 20
    with pytest.raises(StoreError, match="not running"):
        on_reactor(store.receive, incoming())

    reopened = open_store(path, reactor=reactor, cipher=cipher)
    on_reactor(reopened.start)
    try:
        assert len(on_reactor(reopened.list_messages, None, None, None, 100)) == 20
    finally:
        on_reactor(reopened.close)


def test_start_with_the_wrong_key_fails(reactor, path):
    first = open_store(path, reactor=reactor, cipher=Cipher(os.urandom(32)))
    on_reactor(first.start)
    on_reactor(first.close)
    wrong = open_store(path, reactor=reactor, cipher=Cipher(os.urandom(32)))
    with pytest.raises(StoreError, match="key does not fit"):
        on_reactor(wrong.start)


def test_calls_queued_before_a_failed_open_fail_too(reactor, path):
    first = open_store(path, reactor=reactor, cipher=Cipher(os.urandom(32)))
    on_reactor(first.start)
    on_reactor(first.close)
    wrong = open_store(path, reactor=reactor, cipher=Cipher(os.urandom(32)))

    def start_and_receive():
        started = wrong.start()
        received = wrong.receive(incoming())
        return defer.DeferredList([started, received], consumeErrors=True)

    (started_ok, _), (received_ok, failure) = on_reactor(start_and_receive)
    assert not started_ok and not received_ok
    assert failure.check(StoreError)


def test_store_sets_the_durability_it_was_given(reactor, tmp_path):
    store = SQLiteStore(
        tmp_path / "s.sqlite3", reactor=reactor, cipher=Cipher(os.urandom(32)), durability="normal"
    )
    on_reactor(store.start)
    try:
        synchronous = on_reactor(
            store._writer.submit, lambda db: db.connection.execute("PRAGMA synchronous").fetchone()[0]
        )
    finally:
        on_reactor(store.close)
    assert synchronous == 1  # NORMAL; the default "full" is tested on the Database


def test_the_pruner_deletes_old_finished_messages_in_batches_when_the_engine_starts(store, path, reactor):
    from engine.store.retention import Pruner

    for n in range(5):  # old, and nothing more to do: their deliveries are cancelled
        on_reactor(store.receive, incoming(control_id=f"OLD{n}", received_at=T0))
    on_reactor(store.cancel, DeliverySelection(channel="lab"))
    on_reactor(store.receive, incoming(control_id="NEW", received_at=T0 + 30 * 86400))
    commits = store.commits

    class Clock:  # the reactor's thread and timers, at a time 40 days after the old messages
        def seconds(self) -> float:
            return T0 + 40 * 86400

        def callLater(self, *args, **kwargs):
            return reactor.callLater(*args, **kwargs)

    pruner = Pruner(store, Clock(), after_s=20 * 86400, every_s=3600, batch=2)
    on_reactor(pruner.startService)  # the first pass starts at once
    try:
        wait_for(lambda: count_rows(path, "messages") == 1, what="the old messages pruned")
    finally:
        on_reactor(pruner.stopService)
    assert count_rows(path, "deliveries") == 2, "the new message's two deliveries stay"
    assert store.commits - commits >= 3, "one small batch per commit, not one long transaction"


def test_qliq_conversation_keys_are_keyed_hashes_of_the_patient_and_order(store, path):
    import hashlib

    from engine.delivery.conversations import Conversations, threads_namespace

    thread = "lab\x1fward-qliq\x1f9434765919\x1fORD1"  # a patient id is PHI
    on_reactor(Conversations(store, "qliq").remember, thread, "c-1")
    keys = [
        key
        for (key,) in committed_rows(
            path, "SELECT key FROM kv WHERE namespace = ?", (threads_namespace("qliq"),)
        )
    ]
    assert keys == [store.keyed_hash(thread)]
    assert keys[0] != hashlib.sha256(thread.encode()).hexdigest(), "a plain hash is found by trying ids"
    assert on_reactor(Conversations(store, "qliq").get, thread) == "c-1"
