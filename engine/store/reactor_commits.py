"""SQLite at ``durability = normal``: commit on the reactor thread while the writer is idle.

Handing a message to the writer thread and its result back costs two thread wake-ups, a trip
through the reactor's waker pipe and the GIL passed back and forth: as much CPU as the commit
itself, which without an fsync is a few tens of µs. So while nothing is queued for the writer
thread, the calls given to :meth:`ReactorCommits.submit_on_reactor` run on the reactor thread
at the end of the reactor turn that queued them, all in one transaction (group commit, as on
the writer thread). Every other call, and all calls while any is queued for the writer thread,
go to the writer thread in the order they were made.

A disk that stalls must not freeze listeners, webhooks and timers, so what can make such a
commit wait is kept off the reactor thread:

- lock waits: the busy timeout is 0 there, so a lock another process holds sends the batch to
  the writer thread (which waits for it) at once;
- checkpoints (an fsync of the WAL and of the database): SQLite's automatic checkpoint is off
  there; the writer thread checkpoints instead, after as many reactor commits as write about
  1000 pages (SQLite's own cadence; measured at each checkpoint);
- fsync: only ``durability = normal`` commits here (``full`` fsyncs every commit);
- the rest (a write or read the kernel holds up): a watchdog. A reactor commit that takes
  longer than ``stall_s`` and waited for something (a voluntary context switch: the disk, a
  lock; not another process taking the CPU, which stalls the reactor whatever it runs) sends
  every commit to the writer thread for ``cooldown_s``.

The writer thread and the reactor thread share the connection, never at the same time: the
reactor thread uses it only when no call is queued for or running on the writer thread.
"""

from __future__ import annotations

import logging
import resource
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from engine.errors import StoreError
from engine.store.database import BUSY_TIMEOUT_MS, Database
from engine.store.worker import Call, Outcome, Worker, run_in_one_transaction

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]

SQLITE_AUTOCHECKPOINT = 1000  # pages: SQLite's default, kept on the writer thread
_LOCK_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class Reactor(Protocol):
    """What the worker needs: a way back into the reactor thread, and the end of a turn."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None: ...

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kwargs: Any) -> IDelayedCall: ...


def _wake(db: Database) -> None:
    """A call that writes nothing: sent to the writer thread to have it checkpoint."""


class ReactorCommits(Worker):
    """The SQLite writer :class:`Worker`, plus :meth:`submit_on_reactor`."""

    def __init__(
        self,
        name: str,
        open_db: Callable[[], Database],
        reactor: Reactor,
        *,
        max_batch: int = 256,
        stall_s: float = 0.005,
        cooldown_s: float = 10.0,
        checkpoint_every: int = 100,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(name, open_db, run_in_one_transaction, reactor, max_batch=max_batch)
        self._later = reactor.callLater
        self._stall_s = stall_s
        self._cooldown_s = cooldown_s
        self._checkpoint_every = checkpoint_every
        self._clock = clock
        self._pending: list[Item] = []
        self._flush_call: IDelayedCall | None = None
        self._in_flight = 0  # calls handed to the writer thread and not yet answered
        self._on_reactor = False  # whom the connection's settings are for now
        self._paused_until = 0.0
        self._since_checkpoint = 0
        self._checkpoint_due = False
        self.reactor_commits = 0
        """Transactions committed on the reactor thread (for tests and benchmarks)."""

    def submit(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Queue ``fn(db, *args)`` for the writer thread, after every call made before it."""
        if self._pending:
            self._hand_over(self._take_pending())
        d = super().submit(fn, *args)
        self._in_flight += 1
        return d

    def submit_on_reactor(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Like :meth:`submit`, but run at the end of this reactor turn on the reactor thread
        when the writer thread is idle. ``fn`` must do little (a message, not a prune)."""
        if self._stopping or self._thread is None:
            raise StoreError(f"{self._name} is not running")
        d: Deferred[T] = Deferred()
        self._pending.append((fn, args, d))
        if self._flush_call is None:
            self._flush_call = self._later(0, self._flush)
        return d

    def stop(self) -> Deferred[None]:
        """Hand what waits for the end of this turn to the writer thread, then stop it."""
        self._hand_over(self._take_pending())
        return super().stop()

    def _take_pending(self) -> list[Item]:
        pending, self._pending = self._pending, []
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        return pending

    def _flush(self) -> None:
        """End of the turn. Callbacks of one batch may make calls: those after the rest."""
        self._flush_call = None
        while self._pending:
            if self._in_flight or self._db is None or self._stopping or self._clock() < self._paused_until:
                self._hand_over(self._take_pending())
                return
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            outcomes = self._commit_here(self._db, [(fn, args) for fn, args, _ in batch])
            if outcomes is None:
                self._hand_over(batch + self._take_pending())
                return
            super()._finished([d for _, _, d in batch], outcomes)

    def _commit_here(self, db: Database, calls: list[Call]) -> list[Outcome] | None:
        """One transaction on the reactor thread; None if a lock held elsewhere stopped it
        (nothing was written: the writer thread runs the calls, waiting for the lock)."""
        if not self._on_reactor:
            db.connection.execute("PRAGMA busy_timeout = 0")
            db.connection.execute("PRAGMA wal_autocheckpoint = 0")
            self._on_reactor = True
        started, waits = self._clock(), _waits()
        outcomes = self._run_batch(db, calls)
        took = self._clock() - started
        if took > self._stall_s and _waited(waits):
            self._paused_until = self._clock() + self._cooldown_s
            log.warning(
                "store: a commit on the reactor thread took %.1f ms; the writer thread commits "
                "for the next %.0f s",
                took * 1000,
                self._cooldown_s,
            )
        if all(not ok and _is_lock_wait(value) for ok, value in outcomes):
            return None
        self.reactor_commits += 1
        self._since_checkpoint += 1
        if self._since_checkpoint >= self._checkpoint_every:
            self._since_checkpoint = 0
            self._checkpoint_due = True
            # Nobody waits for this call: a failure of its batch reached that batch's callers.
            self._hand_over([(_wake, (), Deferred().addErrback(lambda _: None))])
        return outcomes

    def _hand_over(self, items: list[Item]) -> None:
        """To the writer thread, in order (or failed, once it has stopped)."""
        for fn, args, d in items:
            if self._stopping:
                d.errback(Failure(StoreError(f"{self._name} is not running")))
            else:
                self._queue.put((fn, args, d))
                self._in_flight += 1

    def _execute(self, db: Database, calls: list[Call]) -> list[Outcome]:
        """In the writer thread: its own settings back, the batch, then a checkpoint if due."""
        try:
            if self._on_reactor:
                db.connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                db.connection.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT}")
                self._on_reactor = False
        except sqlite3.Error as exc:
            return [(False, exc)] * len(calls)
        outcomes = super()._execute(db, calls)
        if self._checkpoint_due:
            self._checkpoint_due = False
            try:
                _, frames, _ = db.connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:  # the next one may succeed; the WAL only grows meanwhile
                log.warning("store: checkpoint failed: %s", exc)
            else:  # aim at SQLite's own cadence: a checkpoint every 1000 pages or so
                every = self._checkpoint_every * SQLITE_AUTOCHECKPOINT // max(frames, 1)
                self._checkpoint_every = min(max(every, 1), SQLITE_AUTOCHECKPOINT)
        return outcomes

    def _finished(self, deferreds: list[Deferred[Any]], outcomes: list[Outcome]) -> None:
        self._in_flight -= len(deferreds)
        super()._finished(deferreds, outcomes)


def _waits() -> int:
    """How often this thread has waited (voluntary context switches); 0 where unknown."""
    return 0 if _RUSAGE_THREAD is None else resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


def _waited(before: int) -> bool:
    """Whether this thread waited since ``before`` (always, where that is unknown)."""
    return _RUSAGE_THREAD is None or _waits() != before


_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)  # Linux


def _is_lock_wait(error: object) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.OperationalError) and code in _LOCK_CODES
