"""A thread that owns one :class:`Database` and runs queued calls on it, a batch at a time.

SQLite connections belong to one thread, and the reactor thread must never wait on disk, so
each connection gets its own worker. Calls are queued from the reactor thread; results come
back through ``reactor.callFromThread``. The writer runs each batch in one transaction
(group commit: one fsync for everything that queued up while the previous commit ran).
"""

from __future__ import annotations

import queue
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure

from engine.errors import StoreError
from engine.store.database import Database
from engine.store.postgres import error_text

T = TypeVar("T")
Call = tuple[Callable[..., Any], tuple[Any, ...]]
Outcome = tuple[bool, Any]  # (True, result) or (False, exception)
BatchRunner = Callable[[Database, list[Call]], list[Outcome]]

_STOP = object()


def run_in_one_transaction(db: Database, calls: list[Call]) -> list[Outcome]:
    """Group commit: one transaction and one COMMIT for the batch.

    The calls first run back to back. Every SQLite statement lets go of the GIL, and this
    thread then waits for the reactor thread to let go of it in turn, so a savepoint around
    each call (two more statements) would slow every batch to save a rare failure. When a
    call does fail, the batch is rolled back and run again with each call in its own
    savepoint, so the failing call undoes only its own changes (calls only change the
    database, so running them again is safe). If the COMMIT fails, every call fails.
    """
    outcomes: list[Outcome] = []
    try:
        with db.transaction():
            for fn, args in calls:
                outcomes.append((True, fn(db, *args)))
    except Exception as exc:
        if len(calls) == 1 or len(outcomes) == len(calls):  # a lone call, or the COMMIT failed
            return [(False, exc)] * len(calls)
        return _run_each_in_a_savepoint(db, calls)
    return outcomes


def _run_each_in_a_savepoint(db: Database, calls: list[Call]) -> list[Outcome]:
    """One transaction; a call that raises rolls back to its savepoint and fails alone."""
    outcomes: list[Outcome] = []
    try:
        with db.transaction():
            for fn, args in calls:
                try:
                    with db.savepoint():
                        value = fn(db, *args)
                except Exception as exc:
                    outcomes.append((False, exc))
                else:
                    outcomes.append((True, value))
    except Exception as exc:
        return [(False, exc)] * len(calls)
    return outcomes


def run_each(db: Database, calls: list[Call]) -> list[Outcome]:
    """Reads: each call on its own, no transaction to share."""
    outcomes: list[Outcome] = []
    for fn, args in calls:
        try:
            outcomes.append((True, fn(db, *args)))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


class Worker:
    """One thread, one database connection, a queue of calls ``fn(db, *args)``."""

    def __init__(
        self,
        name: str,
        open_db: Callable[[], Database],
        run_batch: BatchRunner,
        reactor: IReactorFromThreads,
        max_batch: int = 256,
    ) -> None:
        self._name = name
        self._open_db = open_db
        self._run_batch = run_batch
        self._reactor = reactor
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: Database | None = None
        self._stopping = False

    @property
    def commits(self) -> int:
        """Transactions committed so far (group commit makes this far fewer than calls)."""
        return 0 if self._db is None else self._db.commits

    def start(self) -> Deferred[None]:
        """Open the database in the new thread; fires once it is open (or failed to)."""
        opened: Deferred[None] = Deferred()
        self._thread = threading.Thread(target=self._run, args=(opened,), name=self._name)
        self._thread.daemon = True
        self._thread.start()
        return opened

    def submit(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Queue ``fn(db, *args)``; call from the reactor thread."""
        if self._stopping or self._thread is None:
            raise StoreError(f"{self._name} is not running")
        d: Deferred[T] = Deferred()
        self._queue.put((fn, args, d))
        return d

    def stop(self) -> Deferred[None]:
        """Finish everything already queued, close the connection, end the thread."""
        stopped: Deferred[None] = Deferred()
        if self._thread is None or self._stopping:
            stopped.callback(None)
            return stopped
        self._stopping = True
        self._queue.put((_STOP, stopped))
        stopped.addCallback(lambda _: self._thread.join())
        return stopped

    def _run(self, opened: Deferred[None]) -> None:
        call_soon = self._reactor.callFromThread
        try:
            db = self._db = self._open_db()
        except Exception as exc:
            call_soon(self._open_failed, opened, Failure(exc))
            return
        call_soon(opened.callback, None)
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            while len(batch) < self._max_batch and batch[-1][0] is not _STOP:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] if batch[-1][0] is _STOP else None
            if stop is not None:
                batch.pop()
            if batch:
                outcomes = self._execute(db, [(fn, args) for fn, args, _ in batch])
                call_soon(self._finished, [d for _, _, d in batch], outcomes)
            if stop is not None:
                db.close()
                call_soon(stop[1].callback, None)
                return

    def _execute(self, db: Database, calls: list[Call]) -> list[Outcome]:
        """In the worker thread: run one batch."""
        return self._run_batch(db, calls)

    def _finished(self, deferreds: list[Deferred[Any]], outcomes: list[Outcome]) -> None:
        """In the reactor thread: a batch is done."""
        _fire(deferreds, outcomes)

    def _open_failed(self, opened: Deferred[None], failure: Failure) -> None:
        """In the reactor thread: nothing queued so far will ever run; say so to each caller."""
        self._stopping = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] is _STOP:
                item[1].callback(None)
            else:
                item[2].errback(failure)
        opened.errback(failure)


def _fire(deferreds: list[Deferred[Any]], outcomes: list[Outcome]) -> None:
    """In the reactor thread: hand each caller its result or its error."""
    for d, (ok, value) in zip(deferreds, outcomes, strict=True):
        if ok:
            d.callback(value)
        elif is_driver_error(value):
            d.errback(Failure(_as_store_error(value)))
        else:
            d.errback(Failure(value))


def is_driver_error(exc: BaseException) -> bool:
    """Whether the database driver raised it (psycopg's errors exist only once it is loaded)."""
    psycopg = sys.modules.get("psycopg")
    return isinstance(exc, sqlite3.Error) or (psycopg is not None and isinstance(exc, psycopg.Error))


def _as_store_error(exc: Exception) -> StoreError:
    error = StoreError(f"store: {error_text(exc)}")
    error.__cause__ = exc
    return error
