"""Several nodes on one store file: leases of sends, their takeover, node names, named leases.

Each "node" is its own connection to one real SQLite file, opened with its own identity, the
way two ``courier run`` processes share a store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from engine.errors import StoreError
from engine.node import NodeIdentity, has_ended
from engine.store.crypto import Cipher
from engine.store.database import Database
from tests.test_store_database import RAW, T0, incoming, receive

ALIVE_S = 30.0


def ended(host: str, boot: str, pid: int) -> bool:
    return True


def running(host: str, boot: str, pid: int) -> bool:
    return False


@pytest.fixture
def open_node(tmp_path):
    key = Cipher(os.urandom(32))
    opened: list[Database] = []

    def open_node(name: str, incarnation: str | None = None, host: str = "h1", pid: int = 1) -> Database:
        node = NodeIdentity(name, incarnation or f"{name}.{len(opened)}", host, pid)
        db = Database.open(tmp_path / "store.sqlite3", key, clock=lambda: T0, node=node)
        opened.append(db)
        return db

    yield open_node
    for db in opened:
        db.close()


def register(db: Database, now: float = T0, has_ended=running) -> int:
    with db.transaction():
        return db.register_node(now, now + ALIVE_S, has_ended)


def claim(db: Database, now: float = T0, limit: int = 10, lease_s: float = 30, **kwargs):
    with db.transaction():
        return db.claim_due("qliq", now, limit, lease_s, **kwargs)


def test_a_leased_delivery_is_not_claimed_by_another_node_until_its_lease_runs_out(open_node):
    a, b = open_node("a"), open_node("b")
    register(a), register(b)
    receive(a, incoming(destinations=("qliq",)))
    (held,) = claim(a)
    assert claim(b, T0 + 29) == []
    with a.transaction():
        assert a.renew_leases([held.id], T0 + 60) == []
    assert claim(b, T0 + 59) == [], "renewed by the node sending it"
    (taken,) = claim(b, T0 + 61)
    assert (taken.id, taken.attempts, taken.raw) == (held.id, 2, RAW)


def test_a_node_that_lost_its_lease_cannot_record_an_outcome_over_the_new_holder(open_node):
    a, b = open_node("a"), open_node("b")
    receive(a, incoming(destinations=("qliq",)))
    (held,) = claim(a)
    claim(b, T0 + 31)  # a stalled past its lease; b took over
    with a.transaction():
        assert a.renew_leases([held.id], T0 + 90) == [held.id], "a learns it lost the lease"
        for late_outcome in (
            lambda: a.mark_retry(held.id, T0 + 40, "timeout"),
            lambda: a.mark_sent(held.id, "r-a"),
            lambda: a.release(held.id, T0 + 40, "auth"),
            lambda: a.mark_error(held.id, "rejected"),
        ):
            with pytest.raises(StoreError, match="lease"), a.savepoint():
                late_outcome()
    with b.transaction():
        b.mark_sent(held.id, "r-b")
    assert (a.get_delivery(held.id).state, a.get_delivery(held.id).remote_id) == ("SENT", "r-b")


def test_concurrency_counts_the_sends_of_every_node(open_node):
    a, b = open_node("a"), open_node("b")
    for n in range(3):
        receive(a, incoming(control_id=f"C{n}", destinations=("qliq",), received_at=T0 + n))
    (first,) = claim(a, T0 + 5, max_in_flight=1)
    assert claim(b, T0 + 5, max_in_flight=1) == [], "one in flight across both nodes: order kept"
    with a.transaction():
        a.mark_sent(first.id, "r-1")
    (second,) = claim(b, T0 + 5, max_in_flight=1)
    assert second.control_id == "C1"
    assert [d.control_id for d in claim(a, T0 + 5, max_in_flight=3)] == ["C2"]


def test_a_restarted_node_takes_back_at_once_what_its_ended_run_held(open_node):
    before = open_node("a", "a.first")
    register(before)
    receive(before, incoming(destinations=("qliq",)))
    (held,) = claim(before)
    with before.transaction():
        assert before.take_lease("outbox:lab", T0, T0 + 30)
    after = open_node("a", "a.second")
    assert register(after, T0 + 1, has_ended=ended) == 1
    (again,) = claim(after, T0 + 1)
    assert again.id == held.id, "no wait for the lease"
    with after.transaction():
        assert after.take_lease("outbox:lab", T0 + 1, T0 + 31), "its named leases were handed back"
    with before.transaction():
        assert not before.node_heartbeat(T0 + 60), "the old run learns it was replaced"


def test_a_node_name_in_use_by_a_running_process_is_refused(open_node):
    register(open_node("a", "a.first"))
    with pytest.raises(StoreError, match="node name 'a' is in use .*--node-name"):
        register(open_node("a", "a.second"))


def test_a_node_name_whose_heartbeat_ran_out_is_taken_over_but_its_sends_wait_for_their_leases(open_node):
    before = open_node("a", "a.first", host="elsewhere")
    register(before)
    receive(before, incoming(destinations=("qliq",)))
    (held,) = claim(before, lease_s=60)
    after = open_node("a", "a.second")
    assert register(after, T0 + ALIVE_S + 1) == 0, "not provably ended: no take-back"
    assert claim(after, T0 + 59) == []
    assert [d.id for d in claim(after, T0 + 61)] == [held.id]


def test_a_named_lease_has_one_holder_renewed_by_it_and_taken_over_once_it_runs_out(open_node):
    a, b = open_node("a"), open_node("b")
    with a.transaction():
        assert a.take_lease("outbox:lab", T0, T0 + 30)
    with b.transaction():
        assert not b.take_lease("outbox:lab", T0 + 10, T0 + 40)
    with a.transaction():
        assert a.take_lease("outbox:lab", T0 + 20, T0 + 50), "renewed by its holder"
    with b.transaction():
        assert not b.take_lease("outbox:lab", T0 + 40, T0 + 70)
        assert b.take_lease("outbox:lab", T0 + 51, T0 + 81)
    with a.transaction():
        a.release_lease("outbox:lab")  # not a's any more: nothing happens
        assert not a.take_lease("outbox:lab", T0 + 60, T0 + 90)
    with b.transaction():
        b.release_lease("outbox:lab")
    with a.transaction():
        assert a.take_lease("outbox:lab", T0 + 61, T0 + 91)


def test_a_process_has_ended_only_when_this_host_knows_it_has():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    me = NodeIdentity.this_process()
    assert me.boot, "Linux says which boot this is"
    assert not has_ended(me.host, me.boot, os.getppid())
    assert not has_ended("another-host", me.boot, child.pid)
    assert has_ended(me.host, "an-earlier-boot", os.getppid()), "the host restarted since"
    child.wait()
    assert has_ended(me.host, me.boot, child.pid)


def test_a_periodic_job_takes_one_turn_per_period_across_nodes(reactor, tmp_path):
    from engine.leases import take_turn
    from tests.conftest import on_reactor
    from tests.support.engine import open_store

    class At:
        def __init__(self, now: float) -> None:
            self.now = now

        def seconds(self) -> float:
            return self.now

    stores = [
        open_store(reactor, tmp_path / "jobs.sqlite3", node=NodeIdentity(name, f"{name}.1", "elsewhere", 1))
        for name in ("a", "b")
    ]
    try:

        def turn(store, now: float) -> bool:
            return on_reactor(take_turn, store, At(now), "retention", 3600)

        a, b = stores
        assert turn(a, T0) and not turn(b, T0 + 1), "one node per period"
        assert not turn(b, T0 + 3000), "a's turn lasts most of the period"
        assert turn(b, T0 + 3600) and not turn(a, T0 + 3601), "the next period: whoever asks first"
    finally:
        for store in stores:
            on_reactor(store.close)


def test_a_node_whose_name_another_process_took_over_is_told_to_stop(reactor, tmp_path):
    from engine.leases import Heartbeat
    from tests.conftest import on_reactor
    from tests.support.engine import TEST_KEY, open_store
    from tests.support.waiting import wait_for

    path = tmp_path / "beat.sqlite3"
    first = NodeIdentity.this_process("a")
    store = open_store(reactor, path, node=first, lease_s=0.3)
    replaced: list[bool] = []
    beat = Heartbeat(store, reactor, 0.3, lambda: replaced.append(True))
    on_reactor(beat.startService)
    try:
        time.sleep(0.5)
        assert replaced == [], "its heartbeats go through"
        other = Database.open(path, Cipher(TEST_KEY), node=NodeIdentity.this_process("a"))
        with other.transaction():  # the same name started again (here: in this very process)
            other.register_node(time.time(), time.time() + 30, has_ended)
        other.close()
        wait_for(lambda: replaced, timeout=5, what="the replaced node told to stop")
        time.sleep(0.3)
        assert replaced == [True], "told once"
    finally:
        on_reactor(beat.stopService)
        on_reactor(store.close)


def pg_nodes(url: str) -> tuple[Database, Database]:
    key = Cipher(os.urandom(32))
    a, b = (Database.open(url, key, node=NodeIdentity(n, f"{n}.1", "h", 1)) for n in "ab")
    return a, b


def while_open(db: Database, first, then) -> list:
    """``first(db)`` in an open transaction of ``db`` while another thread runs ``then()`` in
    its own; what ``then`` returned, once ``db`` has committed."""
    import threading

    answers: list = []
    with db.transaction():
        first(db)
        other = threading.Thread(target=lambda: answers.append(then()))
        other.start()
        time.sleep(0.3)  # the other node's transaction runs beside this one meanwhile
    other.join(10)
    return answers


def test_two_nodes_adding_to_one_channel_s_outbox_at_once_number_their_items_in_turn(postgres_url):
    a, b = pg_nodes(postgres_url)
    target = "tcp:host=127.0.0.1:port=9"

    def add_on_b() -> int:
        with b.transaction():
            return b.outbox_add("lab", target, b"second", "S2")

    try:
        added = while_open(a, lambda db: db.outbox_add("lab", target, b"first", "S1"), add_on_b)
        assert added, "b's item stored too"
        assert [(i.seq, i.control_id) for i in a.list_outbox()] == [(2, "S2"), (1, "S1")]
    finally:
        a.close()
        b.close()


def test_two_nodes_claiming_at_once_keep_a_concurrency_of_one_together(postgres_url):
    a, b = pg_nodes(postgres_url)
    try:
        for n in range(2):
            receive(a, incoming(control_id=f"C{n}", destinations=("qliq",), received_at=T0 + n))

        def claim_on_b() -> list:
            with b.transaction():
                return b.claim_due("qliq", T0 + 5, 1, 30, max_in_flight=1)

        mine: list = []
        theirs = while_open(a, lambda db: mine.extend(db.claim_due("qliq", T0 + 5, 1, 30, 1)), claim_on_b)
        assert [d.control_id for d in mine] == ["C0"] and theirs == [[]], "one in flight across nodes"
    finally:
        a.close()
        b.close()


def test_a_lease_whose_release_fails_still_lets_its_holder_go_on(caplog):
    """A sender restarting on reload waits for its outbox lease's release: a store that fails
    it must not stop the new sender from starting (the lease runs out by itself)."""
    from twisted.internet import defer, task

    from engine.leases import NamedLease

    class ReleaseFails:
        def take_lease(self, name, now, until):
            return defer.succeed(True)

        def release_lease(self, name):
            return defer.fail(StoreError("store: the disk is gone"))

    lease = NamedLease(ReleaseFails(), task.Clock(), "outbox:lab", 30.0)
    taken, released = [], []
    lease.take().addCallback(taken.append)
    lease.release().addBoth(released.append)
    assert taken == [True] and released == [None]
    assert "releasing lease outbox:lab failed: StoreError" in caplog.text
