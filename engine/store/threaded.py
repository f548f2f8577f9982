"""The :class:`engine.store.base.Store` over a :class:`Database`, on two threads of its own.

Writes go to a single writer thread that commits whatever queued up meanwhile in one
transaction (group commit); reads go to a second connection on its own thread, so listing
never waits behind writes. Every Deferred fires in the reactor thread after the commit.
The database is a SQLite file (:class:`engine.store.sqlite.SQLiteStore`) or PostgreSQL
(:class:`engine.store.postgres_store.PostgresStore`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

from engine.errors import StoreError
from engine.store.base import (
    Counts,
    Delivery,
    DeliverySelection,
    Event,
    Gauges,
    Incoming,
    Message,
    OperatorAction,
    OutboxItem,
    Receipt,
    Reports,
    StatusPoll,
)
from engine.store.crypto import Cipher, keyed_digest
from engine.store.database import (
    DEFAULT_DUPLICATE_WINDOW_S,
    Database,
    Durability,
)
from engine.store.rate_buckets import RateBucket
from engine.store.reactor_commits import Reactor
from engine.store.worker import Worker, run_each, run_in_one_transaction

if TYPE_CHECKING:
    from engine.node import NodeIdentity

log = logging.getLogger(__name__)

T = TypeVar("T")


WriteCall = Callable[..., Deferred[Any]]
"""How a call is handed to the writer (``Worker.submit`` or a variant of it)."""


class StoreReactor(Reactor, Protocol):
    """What the store needs from the reactor: a clock, a way back into its thread, and the
    end of a turn (for commits on the reactor thread, :mod:`engine.store.reactor_commits`)."""

    def seconds(self) -> float: ...


class ThreadedStore:
    """The durable store at ``location`` (see :meth:`Database.open`): one writer, one reader."""

    def __init__(
        self,
        location: Path | str,
        *,
        reactor: StoreReactor,
        cipher: Cipher,
        durability: Durability = "full",
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        max_batch: int = 256,
        node: NodeIdentity | None = None,
        lease_s: float | None = None,
    ) -> None:
        """With ``node`` (``courier run``) the store registers this process among the nodes
        at start, vouching for it ``lease_s`` ahead (see :mod:`engine.node`)."""
        self.node = node
        self._lease_s = lease_s
        self._clock = reactor.seconds
        open_db = partial(
            Database.open,
            location,
            cipher,
            durability=durability,
            duplicate_window_s=duplicate_window_s,
            clock=reactor.seconds,
            node=node,
        )
        self._writer, self._write_message = self._writer_for(open_db, reactor, durability, max_batch)
        self._hash_key: bytes | None = None  # set by start()
        self._reader = Worker("store-reader", partial(open_db, readonly=True), run_each, reactor)

    def _writer_for(
        self, open_db: Callable[..., Database], reactor: StoreReactor, durability: Durability, max_batch: int
    ) -> tuple[Worker, WriteCall]:
        """The writer thread's worker, and how a received message is handed to it."""
        writer = Worker("store-writer", open_db, run_in_one_transaction, reactor, max_batch=max_batch)
        return writer, writer.submit

    @property
    def commits(self) -> int:
        """Write transactions committed since start (for tests and benchmarks)."""
        return self._writer.commits

    def start(self) -> Deferred[None]:
        """Open (creating and migrating) the store, check its pages, then the read connection."""
        d = self._writer.start()
        d.addCallback(lambda _: self._write(Database.check_pages))
        d.addCallback(lambda _: self._write(attrgetter("hash_key")))
        d.addCallback(self._keep_hash_key)
        if self.node is not None:
            d.addCallback(lambda _: self._register())
        return d.addCallback(lambda _: self._reader.start())

    def _register(self) -> Deferred[None]:
        from engine.node import DEFAULT_LEASE_S, has_ended

        now = self._clock()
        alive_until = now + (self._lease_s or DEFAULT_LEASE_S)
        d = self._write(Database.register_node, now, alive_until, has_ended)
        return d.addCallback(self._registered)

    def _registered(self, taken_back: int) -> None:
        if taken_back:
            log.warning(
                "node %s: %d deliveries its previous run left SENDING are QUEUED again"
                " (at-least-once: the vendor may see them twice, under the same idempotency key)",
                self.node.name,
                taken_back,
            )

    def _keep_hash_key(self, key: bytes) -> None:
        self._hash_key = key

    def keyed_hash(self, text: str) -> str:
        """HMAC-SHA256 (hex) of ``text`` with the store's secret: see :meth:`Database.keyed_hash`."""
        if self._hash_key is None:
            raise StoreError("the store is not started")
        return keyed_digest(self._hash_key, text.encode()).hex()

    def on_queued(self, callback: Callable[[str | None], None]) -> None:
        """Have ``callback(destination)`` called (in the reactor thread) when another engine
        node queues deliveries for ``destination`` (:meth:`Store.on_queued`). SQLite has one
        engine per store: no call."""

    def close(self) -> Deferred[None]:
        """Finish queued work, close both connections and end their threads."""
        return self._reader.stop().addCallback(lambda _: self._writer.stop())

    def _write(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._writer.submit(fn, *args)

    def _read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._reader.submit(fn, *args)

    # Messages

    def receive(self, incoming: Incoming) -> Deferred[Receipt]:
        return self._write(Database.receive, incoming)

    def receive_many(self, incoming: list[Incoming]) -> Deferred[list[Receipt]]:
        return self._write(Database.receive_many, incoming)

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

    def claim_due(
        self, destination: str, now: float, limit: int, lease_s: float, max_in_flight: int | None = None
    ) -> Deferred[list[Delivery]]:
        return self._write(Database.claim_due, destination, now, limit, lease_s, max_in_flight)

    def renew_leases(self, delivery_ids: Iterable[int], until: float) -> Deferred[list[int]]:
        return self._write(Database.renew_leases, list(delivery_ids), until)

    def mark_sent(
        self, delivery_id: int, remote_id: str, detail: str = "", reports: Reports = ()
    ) -> Deferred[None]:
        return self._write(Database.mark_sent, delivery_id, remote_id, detail, reports)

    def mark_retry(
        self, delivery_id: int, next_attempt_at: float, error: str, progress: str | None = None
    ) -> Deferred[None]:
        return self._write(Database.mark_retry, delivery_id, next_attempt_at, error, progress)

    def mark_error(self, delivery_id: int, error: str, reports: Reports = ()) -> Deferred[None]:
        return self._write(Database.mark_error, delivery_id, error, reports)

    def set_state(
        self, delivery_id: int, state: str, detail: str = "", reports: Reports = ()
    ) -> Deferred[None]:
        return self._write(Database.set_state, delivery_id, state, detail, reports)

    def requeue(self, selection: DeliverySelection, by: str = "") -> Deferred[int]:
        return self._write(Database.requeue, selection, by)

    def cancel(self, selection: DeliverySelection, by: str = "") -> Deferred[int]:
        return self._write(Database.cancel, selection, by)

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

    def held_destinations(self) -> Deferred[list[tuple[str, str, float]]]:
        return self._read(Database.held_destinations)

    def book_sends(self, buckets: Sequence[RateBucket], now: float, count: int) -> Deferred[list[float]]:
        return self._write(Database.book_sends, buckets, now, count)

    # Status polls

    def mark_sent_polled(
        self, delivery_id: int, remote_id: str, detail: str, poll: StatusPoll, reports: Reports = ()
    ) -> Deferred[None]:
        return self._write(Database.mark_sent_polled, delivery_id, remote_id, detail, poll, reports)

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

    # Nodes and named leases

    def node_heartbeat(self, alive_until: float) -> Deferred[bool]:
        return self._write(Database.node_heartbeat, alive_until)

    def node_stopped(self) -> Deferred[None]:
        return self._write(Database.node_stopped)

    def take_lease(self, name: str, now: float, until: float) -> Deferred[bool]:
        return self._write(Database.take_lease, name, now, until)

    def release_lease(self, name: str) -> Deferred[None]:
        return self._write(Database.release_lease, name)

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

    def outbox_skip(self, item_id: int, reason: str, by: str = "") -> Deferred[bool]:
        return self._write(Database.outbox_skip, item_id, reason, by)

    def list_outbox(
        self, channel: str | None = None, state: str | None = None, limit: int = 50
    ) -> Deferred[list[OutboxItem]]:
        return self._read(Database.list_outbox, channel, state, limit)

    def get_outbox_item(self, item_id: int) -> Deferred[OutboxItem | None]:
        return self._read(Database.get_outbox_item, item_id)

    # Metrics and statistics

    def gauges(self, destinations: list[str], channels: list[str]) -> Deferred[Gauges]:
        return self._read(Database.gauges, destinations, channels)

    def counts(self, since: float | None = None) -> Deferred[Counts]:
        return self._read(Database.counts, since)

    # What operators did

    def record_action(self, operator: str, action: str, subject: str, detail: str = "") -> Deferred[None]:
        return self._write(Database.record_action, operator, action, subject, detail)

    def list_actions(self, limit: int = 50) -> Deferred[list[OperatorAction]]:
        return self._read(Database.list_actions, limit)

    # Key/value

    def kv_get(self, namespace: str, key: str) -> Deferred[bytes | None]:
        return self._read(Database.kv_get, namespace, key)

    def kv_put(self, namespace: str, key: str, value: bytes) -> Deferred[None]:
        return self._write(Database.kv_put, namespace, key, value)
