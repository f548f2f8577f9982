"""Commits on the reactor thread (durability normal): order, group commit, and a store that
stalls for a second never freezes listeners or timers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
from twisted.internet import defer, task

from engine.message import Message
from engine.source import Accepted, Source
from engine.store.crypto import Cipher
from engine.store.database import Database
from engine.store.reactor_commits import ReactorCommits
from engine.store.sqlite import REACTOR_COMMIT_MAX_BYTES, SQLiteStore
from tests.conftest import on_reactor
from tests.support.engine import listen
from tests.support.mllp import BlockingClient
from tests.support.waiting import wait_for
from tests.test_store_database import incoming

STALL_S = 1.0
ANSWERED_WITHIN_S = 0.3  # far below the stall, far above a busy machine's scheduling noise


def shared_db(path) -> Database:
    return Database.open(path, Cipher(os.urandom(32)), durability="normal", any_thread=True)


def thread_name(db: Database) -> str:
    return threading.current_thread().name


@pytest.fixture
def store(reactor, tmp_path):
    s = SQLiteStore(
        tmp_path / "engine.sqlite3", reactor=reactor, cipher=Cipher(os.urandom(32)), durability="normal"
    )
    on_reactor(s.start)
    yield s
    on_reactor(s.close)


def test_received_messages_commit_on_the_reactor_thread_while_the_writer_is_idle(store):
    before = store._writer.reactor_commits
    assert on_reactor(store._writer.submit_on_reactor, thread_name) == "reactor"
    assert on_reactor(store.receive, incoming(control_id="R1")).duplicate is False
    assert store._writer.reactor_commits == before + 2
    assert on_reactor(store._writer.submit, thread_name) == "store-writer"


def test_full_durability_commits_only_on_the_writer_thread(reactor, tmp_path):
    store = SQLiteStore(tmp_path / "full.sqlite3", reactor=reactor, cipher=Cipher(os.urandom(32)))
    assert not isinstance(store._writer, ReactorCommits)


def test_calls_run_in_the_order_they_were_made_whatever_thread_commits_them(store):
    done: list[str] = []

    def record(db: Database, name: str) -> str:
        done.append(name)
        return threading.current_thread().name

    def three_calls():
        writer = store._writer
        first, second = writer.submit_on_reactor(record, "a"), writer.submit(record, "b")
        return defer.gatherResults([first, second, writer.submit_on_reactor(record, "c")])

    assert on_reactor(three_calls) == ["store-writer"] * 3  # "b" was queued: all three go after it
    assert done == ["a", "b", "c"]


def test_a_call_made_by_a_callback_runs_after_what_waited_before_it(reactor, tmp_path):
    writer = ReactorCommits("store-writer", partial(shared_db, tmp_path / "o.sqlite3"), reactor, max_batch=2)
    on_reactor(writer.start)
    done: list[tuple[str, str]] = []

    def record(db: Database, name: str) -> None:
        done.append((name, threading.current_thread().name))

    def calls():
        first = writer.submit_on_reactor(record, "a")
        first.addCallback(lambda _: writer.submit(record, "w"))  # made while "c" still waits
        rest = [writer.submit_on_reactor(record, name) for name in "bc"]
        return defer.gatherResults([first, *rest])

    try:
        on_reactor(calls)
    finally:
        on_reactor(writer.stop)
    assert done == [("a", "reactor"), ("b", "reactor"), ("c", "store-writer"), ("w", "store-writer")]


def test_receives_of_one_reactor_turn_share_one_commit(store):
    def receive_50():
        before = store._writer.reactor_commits, store.commits
        ds = [store.receive(incoming(control_id=f"G{i}")) for i in range(50)]
        return defer.gatherResults(ds).addCallback(
            lambda _: (store._writer.reactor_commits - before[0], store.commits - before[1])
        )

    assert on_reactor(receive_50) == (1, 1)


def test_the_writer_thread_checkpoints_what_the_reactor_thread_committed(reactor, tmp_path):
    path = tmp_path / "checkpointed.sqlite3"
    writer = ReactorCommits("store-writer", partial(shared_db, path), reactor, checkpoint_every=5)
    on_reactor(writer.start)
    try:
        size = path.stat().st_size
        for n in range(5):
            on_reactor(writer.submit_on_reactor, Database.receive, incoming(control_id=f"C{n}"))
        assert writer.reactor_commits == 5
        deadline = time.monotonic() + 10
        while path.stat().st_size == size and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_size > size, "the WAL's pages were copied into the database file"
    finally:
        on_reactor(writer.stop)


def test_a_commit_that_waits_longer_than_the_bound_sends_commits_to_the_writer_thread(reactor, tmp_path):
    open_db = partial(shared_db, tmp_path / "w.sqlite3")
    writer = ReactorCommits("store-writer", open_db, reactor, stall_s=0.005, cooldown_s=0.5)
    on_reactor(writer.start)

    def stalls(db: Database) -> str:
        time.sleep(0.02)  # a disk that holds the write up
        return threading.current_thread().name

    try:
        assert on_reactor(writer.submit_on_reactor, stalls) == "reactor"
        assert on_reactor(writer.submit_on_reactor, thread_name) == "store-writer"
        time.sleep(0.6)
        assert on_reactor(writer.submit_on_reactor, thread_name) == "reactor"
    finally:
        on_reactor(writer.stop)


class Responsiveness:
    """A listener of another channel answers a frame that needs no store (its NAK), and a
    timer ticks every 10 ms: both must keep working while the store waits."""

    def __init__(self, reactor, store) -> None:
        source = Source("other", store, reactor, lambda message: Accepted(("x",)))
        self.port, self._listening, _ = listen(reactor, "other", source)
        self.ticks: list[float] = []
        self._timer = task.LoopingCall(lambda: self.ticks.append(time.monotonic()))
        self._timer.clock = reactor
        on_reactor(lambda: self._timer.start(0.01) and None)  # its Deferred fires when it stops

    def ping_takes(self) -> float:
        with BlockingClient(self.port) as client:
            started = time.monotonic()
            reply = client.request(b"not HL7 at all")
            took = time.monotonic() - started
        assert Message.parse(reply).segment("MSA").value(1) == "AR"
        return took

    def longest_tick_gap(self, since: float) -> float:
        ticks = [t for t in self.ticks if t >= since]
        return max(b - a for a, b in zip(ticks, ticks[1:], strict=False))

    def stop(self) -> None:
        on_reactor(self._timer.stop)
        on_reactor(self._listening.stopListening)


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


def receive_during_a_stall(reactor, store) -> list:
    """Receive one message while the store stalls: it waits, listeners and timers do not."""
    watch = Responsiveness(reactor, store)
    try:
        started = time.monotonic()
        received: list = []
        on_reactor(lambda: store.receive(incoming(control_id="S1")).addCallback(received.append) and None)
        assert watch.ping_takes() < ANSWERED_WITHIN_S
        time.sleep(0.3)
        assert not received, "the message waits for the store, on the writer thread"
        assert watch.longest_tick_gap(started) < ANSWERED_WITHIN_S
    finally:
        watch.stop()
    return received


def test_a_lock_another_process_holds_for_a_second_freezes_neither_listeners_nor_timers(
    reactor, store, tmp_path
):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "engine.sqlite3"), str(STALL_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        received = receive_during_a_stall(reactor, store)
        holder.wait(10)
        assert wait_for(lambda: received, what="the message stored once the lock is free")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_writer_thread_stalled_for_a_second_freezes_neither_listeners_nor_timers(reactor, store):
    def stalled(db: Database) -> None:
        time.sleep(STALL_S)  # a slow disk under a long write (a prune, a checkpoint)

    stall = on_reactor(lambda: {"d": store._writer.submit(stalled)})["d"]
    received = receive_during_a_stall(reactor, store)  # queued behind the stall, never beside it
    wait_for(lambda: received and stall.called, what="the stalled call, then the message")


def test_a_large_message_commits_on_the_writer_thread(store):
    before = store._writer.reactor_commits
    big = incoming(control_id="BIG", raw=b"MSH|^~\\&|" + b"x" * (REACTOR_COMMIT_MAX_BYTES + 1))
    assert on_reactor(store.receive, big).duplicate is False
    assert store._writer.reactor_commits == before
