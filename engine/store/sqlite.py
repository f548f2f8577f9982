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
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

from engine.errors import StoreError
from engine.store.base import (
    Delivery,
    DeliverySelection,
    Event,
    Incoming,
    Message,
    OutboxItem,
    Receipt,
    StatusPoll,
)
from engine.store.crypto import Cipher, keyed_digest
from engine.store.database import (
    DEFAULT_DUPLICATE_WINDOW_S,
    DEFAULT_PATH,
    Database,
    Durability,
)
from engine.store.reactor_commits import Reactor, ReactorCommits
from engine.store.worker import Worker, run_each, run_in_one_transaction

T = TypeVar("T")

REACTOR_COMMIT_MAX_BYTES = 64 * 1024
"""Larger messages go to the writer thread: their hashing, encryption and page writes (about a
millisecond at 200 KB) cost more than the hand-off, and the writer thread runs them while the
reactor thread serves other connections."""


class StoreReactor(Reactor, Protocol):
    """What the store needs from the reactor: a clock, a way back into its thread, and the
    end of a turn (for commits on the reactor thread)."""

    def seconds(self) -> float: ...


class SQLiteStore:
    """The durable store on SQLite. ``durability="normal"`` survives a killed process but
    not a power cut; ``"full"`` (the default) fsyncs every commit. ``reactor_commits``
    (``"normal"`` only) commits received messages on the reactor thread while the writer
    thread is idle."""

    def __init__(
        self,
        path: Path | str = DEFAULT_PATH,
        *,
        reactor: StoreReactor,
        cipher: Cipher,
        durability: Durability = "full",
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        max_batch: int = 256,
        reactor_commits: bool = True,
    ) -> None:
        open_db = partial(
            Database.open,
            path,
            cipher,
            durability=durability,
            duplicate_window_s=duplicate_window_s,
            clock=reactor.seconds,
        )
        self._writer: Worker
        if reactor_commits and durability == "normal":
            shared = partial(open_db, any_thread=True)
            self._writer = writer = ReactorCommits("store-writer", shared, reactor, max_batch=max_batch)
            self._write_message = writer.submit_on_reactor
        else:
            self._writer = Worker(
                "store-writer", open_db, run_in_one_transaction, reactor, max_batch=max_batch
            )
            self._write_message = self._writer.submit
        self._hash_key: bytes | None = None  # set by start()
        self._reader = Worker("store-reader", partial(open_db, readonly=True), run_each, reactor)

    @property
    def commits(self) -> int:
        """Write transactions committed since start (for tests and benchmarks)."""
        return self._writer.commits

    def start(self) -> Deferred[None]:
        """Open (creating and migrating) the file, check its pages, then the read connection."""
        d = self._writer.start()
        d.addCallback(lambda _: self._write(Database.check_pages))
        d.addCallback(lambda _: self._write(attrgetter("hash_key")))
        d.addCallback(self._keep_hash_key)
        return d.addCallback(lambda _: self._reader.start())

    def _keep_hash_key(self, key: bytes) -> None:
        self._hash_key = key

    def keyed_hash(self, text: str) -> str:
        """HMAC-SHA256 (hex) of ``text`` with the store's secret: see :meth:`Database.keyed_hash`."""
        if self._hash_key is None:
            raise StoreError("the store is not started")
        return keyed_digest(self._hash_key, text.encode()).hex()

    def close(self) -> Deferred[None]:
        """Finish queued work, close both connections and end their threads."""
        return self._reader.stop().addCallback(lambda _: self._writer.stop())

    def _write(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._writer.submit(fn, *args)

    def _read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._reader.submit(fn, *args)

    # Messages

    def receive(self, incoming: Incoming) -> Deferred[Receipt]:
        if len(incoming.raw) > REACTOR_COMMIT_MAX_BYTES:
            return self._write(Database.receive, incoming)
        return self._write_message(Database.receive, incoming)

    def receive_many(self, incoming: list[Incoming]) -> Deferred[list[Receipt]]:
        return self._write(Database.receive_many, incoming)  # a batch may take long: never on the reactor

    def list_messages(
        self,
        channel: str | None = None,
        state: str | None = None,
        since: float | None = None,
        limit: int = 50,
    ) -> Deferred[list[Message]]:
        return self._read(Database.list_messages, channel, state, since, limit)

    def get_message(self, ref: int | str, with_body: bool = False) -> Deferred[Message | None]:
        return self._read(Database.get_message, ref, with_body)

    def timeline(self, control_id: str) -> Deferred[list[Event]]:
        return self._read(Database.timeline, control_id)

    # Deliveries

    def claim_due(self, destination: str, now: float, limit: int, lease_s: float) -> Deferred[list[Delivery]]:
        return self._write(Database.claim_due, destination, now, limit, lease_s)

    def mark_sent(self, delivery_id: int, remote_id: str, detail: str = "") -> Deferred[None]:
        return self._write(Database.mark_sent, delivery_id, remote_id, detail)

    def mark_retry(
        self, delivery_id: int, next_attempt_at: float, error: str, progress: str | None = None
    ) -> Deferred[None]:
        return self._write(Database.mark_retry, delivery_id, next_attempt_at, error, progress)

    def mark_error(self, delivery_id: int, error: str) -> Deferred[None]:
        return self._write(Database.mark_error, delivery_id, error)

    def set_state(self, delivery_id: int, state: str, detail: str = "") -> Deferred[None]:
        return self._write(Database.set_state, delivery_id, state, detail)

    def requeue(self, selection: DeliverySelection) -> Deferred[int]:
        return self._write(Database.requeue, selection)

    def cancel(self, selection: DeliverySelection) -> Deferred[int]:
        return self._write(Database.cancel, selection)

    def recover_left_sending(self, destination: str, now: float) -> Deferred[int]:
        return self._write(Database.recover_left_sending, destination, now)

    def list_deliveries(
        self,
        channel: str | None = None,
        destination: str | None = None,
        state: str | None = None,
        limit: int = 50,
    ) -> Deferred[list[Delivery]]:
        return self._read(Database.list_deliveries, channel, destination, state, limit)

    def get_delivery(self, delivery_id: int) -> Deferred[Delivery | None]:
        return self._read(Database.get_delivery, delivery_id)

    def find_delivery(self, destination: str, remote_id: str) -> Deferred[Delivery | None]:
        return self._read(Database.find_delivery, destination, remote_id)

    def release(
        self,
        delivery_id: int,
        next_attempt_at: float,
        error: str,
        progress: str | None = None,
        hold: str = "auth",
    ) -> Deferred[None]:
        return self._write(Database.release, delivery_id, next_attempt_at, error, progress, hold)

    def next_attempt_due(self, destination: str) -> Deferred[float | None]:
        return self._read(Database.next_attempt_due, destination)

    # Status polls

    def mark_sent_polled(
        self, delivery_id: int, remote_id: str, detail: str, poll: StatusPoll
    ) -> Deferred[None]:
        return self._write(Database.mark_sent_polled, delivery_id, remote_id, detail, poll)

    def claim_status_polls(
        self, destination: str, now: float, limit: int, lease_s: float
    ) -> Deferred[list[StatusPoll]]:
        return self._write(Database.claim_status_polls, destination, now, limit, lease_s)

    def reschedule_status_poll(self, delivery_id: int, next_at: float) -> Deferred[None]:
        return self._write(Database.reschedule_status_poll, delivery_id, next_at)

    def end_status_poll(self, delivery_id: int) -> Deferred[None]:
        return self._write(Database.end_status_poll, delivery_id)

    def next_status_poll_due(self, destination: str) -> Deferred[float | None]:
        return self._read(Database.next_status_poll_due, destination)

    # Retention

    def prune_batch(self, before: float, batch: int) -> Deferred[dict[str, int]]:
        return self._write(Database.prune_batch, before, batch)

    # Outbox

    def outbox_add(self, channel: str, target: str, payload: bytes, control_id: str) -> Deferred[int]:
        return self._write(Database.outbox_add, channel, target, payload, control_id)

    def outbox_next(self, channel: str, now: float) -> Deferred[OutboxItem | None]:
        return self._read(Database.outbox_next, channel, now)

    def outbox_done(self, item_id: int) -> Deferred[None]:
        return self._write(Database.outbox_done, item_id)

    def outbox_retry(self, item_id: int, next_attempt_at: float, error: str) -> Deferred[None]:
        return self._write(Database.outbox_retry, item_id, next_attempt_at, error)

    def outbox_error(self, item_id: int, error: str) -> Deferred[None]:
        return self._write(Database.outbox_error, item_id, error)

    # Key/value

    def kv_get(self, namespace: str, key: str) -> Deferred[bytes | None]:
        return self._read(Database.kv_get, namespace, key)

    def kv_put(self, namespace: str, key: str, value: bytes) -> Deferred[None]:
        return self._write(Database.kv_put, namespace, key, value)
