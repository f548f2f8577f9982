"""SQLiteStore: the :class:`engine.store.base.Store` on one SQLite file in WAL mode.

Writes go to a single writer thread that commits whatever queued up meanwhile in one
transaction (group commit); reads go to a second connection on its own thread, so listing
never waits behind writes. At ``durability="normal"`` received messages are committed on the
reactor thread while the writer is idle (:mod:`engine.store.reactor_commits`). Every Deferred
fires in the reactor thread after the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from engine.store.base import Incoming, Receipt
from engine.store.database import DEFAULT_PATH, Database, Durability
from engine.store.reactor_commits import ReactorCommits
from engine.store.threaded import StoreReactor, ThreadedStore, WriteCall
from engine.store.worker import Worker

REACTOR_COMMIT_MAX_BYTES = 64 * 1024
"""Larger messages go to the writer thread: their hashing, encryption and page writes (about a
millisecond at 200 KB) cost more than the hand-off, and the writer thread runs them while the
reactor thread serves other connections."""


class SQLiteStore(ThreadedStore):
    """The durable store on SQLite. ``durability="normal"`` survives a killed process but
    not a power cut; ``"full"`` (the default) fsyncs every commit. ``reactor_commits``
    (``"normal"`` only) commits received messages on the reactor thread while the writer
    thread is idle."""

    def __init__(
        self, path: Path | str = DEFAULT_PATH, *, reactor_commits: bool = True, **options: Any
    ) -> None:
        self._reactor_commits = reactor_commits
        super().__init__(Path(path), **options)

    def _writer_for(
        self, open_db: Callable[..., Database], reactor: StoreReactor, durability: Durability, max_batch: int
    ) -> tuple[Worker, WriteCall]:
        if not (self._reactor_commits and durability == "normal"):
            return super()._writer_for(open_db, reactor, durability, max_batch)
        shared = partial(open_db, any_thread=True)
        writer = ReactorCommits("store-writer", shared, reactor, max_batch=max_batch)
        return writer, writer.submit_on_reactor

    def receive(self, incoming: Incoming) -> Deferred[Receipt]:
        if len(incoming.raw) > REACTOR_COMMIT_MAX_BYTES:
            return self._write(Database.receive, incoming)
        return self._write_message(Database.receive, incoming)
