"""What only a shared PostgreSQL store must do: hold between nodes (connections) at once.

The store's behaviour on its own is tested on both backends by tests/test_store_database.py,
test_store_sqlite.py and test_delivery_store.py; here two connections stand for two nodes.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import psycopg
import pytest

from engine.delivery.service import DeliveryService
from engine.store.crypto import Cipher
from engine.store.database import Database
from engine.store.dialect import postgresql
from engine.store.postgres import QUEUED_CHANNEL, redacted
from engine.store.postgres_store import PostgresStore, QueuedListener
from tests.conftest import on_reactor
from tests.support.waiting import wait_for
from tests.test_store_database import T0, incoming


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def nodes(postgres_url, key):
    """Two connections to one database, as two engine nodes hold them."""
    first = Database.open(postgres_url, Cipher(key))
    second = Database.open(postgres_url, Cipher(key))
    yield first, second
    first.close()
    second.close()


def in_thread(fn) -> tuple[threading.Thread, dict]:
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(value=fn()), daemon=True)
    thread.start()
    return thread, outcome


def test_two_nodes_receiving_the_same_message_at_once_store_it_once(nodes):
    first, second = nodes

    def second_node_receives():
        with second.transaction():
            return second.receive(incoming(peer="10.0.0.2:4000"))

    with first.transaction():
        stored = first.receive(incoming())
        thread, outcome = in_thread(second_node_receives)
        time.sleep(0.5)  # the second node's lookup saw nothing committed; its insert now waits
        assert thread.is_alive(), "the second node must wait for the first one's commit"
    thread.join(timeout=10)
    resent = outcome["value"]
    assert resent.duplicate and resent.message_id == stored.message_id
    assert [m.duplicates for m in first.list_messages()] == [1]
    assert len(first.list_deliveries()) == 2, "the second node queued no deliveries of its own"


def test_a_claim_skips_the_deliveries_another_node_is_claiming(nodes):
    first, second = nodes
    for n in range(3):
        with first.transaction():
            first.receive(incoming(control_id=f"C{n}", destinations=("gp",)))
    second.connection.execute("SET lock_timeout = '2s'")  # waiting for a lock fails the test
    with first.transaction():
        mine = first.claim_due("gp", T0 + 1, limit=1, lease_s=30)
        with second.transaction():
            theirs = second.claim_due("gp", T0 + 1, limit=10, lease_s=30)
    assert len(mine) == 1 and len(theirs) == 2
    assert {d.id for d in mine}.isdisjoint(d.id for d in theirs)


def test_a_delivery_queued_on_one_node_wakes_the_other(reactor, postgres_url, key):
    store = PostgresStore(postgres_url, reactor=reactor, cipher=Cipher(key))
    on_reactor(store.start)
    heard: list[str] = []
    try:
        on_reactor(store.on_queued, heard.append)
        other = Database.open(postgres_url, Cipher(key))
        try:
            with other.transaction():
                other.receive(incoming(destinations=("gp", "ward")))
                time.sleep(0.3)
                assert heard == [], "nothing is announced before the commit"
            wait_for(lambda: sorted(heard) == ["gp", "ward"], timeout=5, what="both destinations announced")
            on_reactor(store.receive, incoming(control_id="OWN", destinations=("own",)))
            with other.transaction():
                other.receive(incoming(control_id="C2", destinations=("gp",)))
            wait_for(lambda: heard.count("gp") == 2, timeout=5, what="the second announcement")
            assert "own" not in heard, "a node's own queues are not woken through the server"
        finally:
            other.close()
    finally:
        on_reactor(store.close)


class Queue:
    """Stands for a destination's queue in the node's DeliveryService: counts its wake-ups."""

    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def listening_backends(admin: psycopg.Connection) -> list[int]:
    """The server processes whose last statement was the listener's LISTEN."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
        (f"LISTEN {QUEUED_CHANNEL}",),
    )
    return [pid for (pid,) in rows]


def test_deliveries_queued_while_the_listener_was_cut_off_wake_every_queue_once_it_listens_again(
    reactor, postgres_url, key, monkeypatch
):
    monkeypatch.setattr(QueuedListener, "RECONNECT_S", 2.0)  # time enough to queue in the gap
    store = PostgresStore(postgres_url, reactor=reactor, cipher=Cipher(key))
    deliveries = DeliveryService(reactor=reactor, clock=reactor, store=store)
    deliveries.queues.update(gp=Queue(), ward=Queue())
    store.on_queued(deliveries.queued_elsewhere)  # as build_engine subscribes
    gp, ward = deliveries.queues["gp"], deliveries.queues["ward"]
    on_reactor(store.start)
    other = Database.open(postgres_url, Cipher(key))
    try:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            with other.transaction():
                other.receive(incoming(destinations=("gp",)))
            wait_for(lambda: gp.woken == 1, timeout=5, what="the queue the news names")
            assert ward.woken == 0, "the first LISTEN wakes nobody: the queues look when they start"

            (listener,) = listening_backends(admin)
            admin.execute("SELECT pg_terminate_backend(%s)", (listener,))
            wait_for(lambda: not listening_backends(admin), timeout=5, what="the listener cut off")
            with other.transaction():
                other.receive(incoming(control_id="GAP", destinations=("gp",)))
            assert not listening_backends(admin), "the NOTIFY went out while nobody listened"

            wait_for(
                lambda: gp.woken == 2 and ward.woken == 1,
                timeout=QueuedListener.RECONNECT_S + 2,
                what="every queue woken once the listener listens again",
            )
    finally:
        other.close()
        on_reactor(store.close)


def test_a_listener_whose_first_listen_failed_wakes_every_queue_once_it_listens(reactor, postgres_server):
    late = f"late_{uuid.uuid4().hex}"
    listener = QueuedListener(postgres_server.url(late), reactor)
    heard: list[str | None] = []
    listener.subscribers.append(heard.append)
    try:
        on_reactor(listener.start)  # the database is not there yet: the start goes on all the same
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {late} TEMPLATE template0")
        wait_for(lambda: heard == [None], timeout=QueuedListener.RECONNECT_S + 2, what="every queue woken")
    finally:
        listener.stop()


def test_nodes_opening_a_new_database_at_once_migrate_it_once_and_share_one_hash_key(postgres_url, key):
    opened: list[Database] = []

    def open_one() -> None:
        opened.append(Database.open(postgres_url, Cipher(key)))

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert len(opened) == 2
        assert opened[0].hash_key == opened[1].hash_key is not None
    finally:
        for db in opened:
            db.close()


def test_the_store_s_sql_is_rewritten_for_postgresql_once_per_statement():
    text, order = postgresql("SELECT x FROM t WHERE a < ?1 AND b LIKE 'held:%' AND c >= ?1 LIMIT ?2")
    assert text == "SELECT x FROM t WHERE a < %s AND b LIKE 'held:%%' AND c >= %s LIMIT %s"
    assert order == (0, 0, 1)
    assert postgresql("UPDATE t SET a = ? WHERE id = ?") == ("UPDATE t SET a = %s WHERE id = %s", None)


def test_a_url_s_password_is_redacted():
    assert redacted("postgresql://courier:s3cret@db.example:5432/courier") == (
        "postgresql://courier:***@db.example:5432/courier"
    )
    assert redacted("postgresql:///courier?host=/run/pg") == "postgresql:///courier?host=/run/pg"
    assert redacted("postgresql:///courier?host=/run/pg&password=s3cret&port=5") == (
        "postgresql:///courier?host=/run/pg&password=***&port=5"
    )


def test_without_server_binaries_postgresql_tests_skip_unless_ci_requires_them(monkeypatch):
    from tests.support.postgres import REQUIRE_ENV, unavailable

    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="install the postgresql package"):
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_ENV):
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package")


def test_after_the_server_drops_the_connection_the_next_transaction_runs_on_a_new_one(nodes):
    first, second = nodes
    with second.transaction():
        # with a timeout it waits until the backend is gone, so the next statement cannot win the race
        second.connection.execute("SELECT pg_terminate_backend(?, 5000)", (first.connection.backend_pid,))
    import psycopg

    with pytest.raises(psycopg.OperationalError), first.transaction():
        first.receive(incoming(control_id="LOST"))  # never ACKed: the sender sends it again
    with first.transaction():
        stored = first.receive(incoming(control_id="AGAIN"))
    assert [m.id for m in second.list_messages()] == [stored.message_id]
