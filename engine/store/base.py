"""What the durable store promises, independent of the database behind it.

The receiver, the dispatcher and the status reporter depend on :class:`Store` only, so a
PostgreSQL backend can replace :class:`engine.store.sqlite.SQLiteStore` without touching them.
Fields that may carry PHI are kept out of ``repr`` so a logged record never leaks a message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred

from engine.store.rate_buckets import RateBucket

# Message states.
RECEIVED = "RECEIVED"
FILTERED = "FILTERED"
ACK_RECEIVED = "ACK_RECEIVED"
MESSAGE_STATES = frozenset({RECEIVED, FILTERED, ACK_RECEIVED})

# Delivery states: QUEUED → SENDING → SENT → (DELIVERED | READ), or ERROR; also CANCELLED.
QUEUED = "QUEUED"
SENDING = "SENDING"
SENT = "SENT"
DELIVERED = "DELIVERED"
READ = "READ"
ERROR = "ERROR"
CANCELLED = "CANCELLED"
DELIVERY_STATES = frozenset({QUEUED, SENDING, SENT, DELIVERED, READ, ERROR, CANCELLED})
PRUNED_TABLES = ("events", "deliveries", "messages", "outbox", "operator_actions")
"""What retention deletes from (``prune_batch`` counts rows by these names)."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message the source accepted, about to be stored before it is ACKed."""

    channel: str
    raw: bytes = field(repr=False)
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    received_at: float
    peer: str
    state: str = RECEIVED
    ack_code: str = "AA"
    application_ack: str = ""
    destinations: tuple[str, ...] = ()
    order_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(destination, ``order_by`` key): the store keeps a keyed hash of each key, not the key."""
    duplicate_window_s: float | None = None
    """The channel's duplicate window; None means the store's default."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """The store's answer to :meth:`Store.receive`: which ACK code to send back."""

    message_id: int
    duplicate: bool
    ack_code: str


@dataclass(frozen=True, slots=True)
class Message:
    """A stored message; ``raw`` is only filled when the body was asked for."""

    id: int
    channel: str
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    received_at: float
    peer: str
    state: str
    ack_code: str
    application_ack: str
    duplicates: int
    raw: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message queued for one destination; ``raw`` (the message) is filled only when claimed."""

    id: int
    message_id: int
    channel: str
    destination: str
    control_id: str
    state: str
    attempts: int
    next_attempt_at: float
    lease_until: float | None
    remote_id: str | None
    created_at: float
    updated_at: float
    requeues: int = 0  # how often an operator requeued it: its generation for the vendor
    progress: str | None = None  # how far a send of several requests got (opaque to the store)
    requeued_at: float | None = None  # the last requeue; max_age_s counts from it
    waits_for: int | None = None  # QUEUED behind this earlier delivery with its order_by key
    last_error: str | None = field(default=None, repr=False)
    raw: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DeliverySelection:
    """Which deliveries a requeue or cancel applies to: every given criterion must match."""

    ids: tuple[int, ...] | None = None
    channel: str | None = None
    destination: str | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class StatusPoll:
    """When to ask the vendor next about a SENT delivery, kept in the store across restarts."""

    delivery_id: int
    destination: str
    remote_id: str
    next_at: float
    give_up_at: float
    expires_at: float | None
    polls: int


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a message's audit trail: what happened, when, and the state it left."""

    id: int
    message_id: int
    delivery_id: int | None
    at: float
    kind: str
    state: str
    detail: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An HL7 message waiting to be sent back to the hospital, in per-channel order."""

    id: int
    channel: str
    target: str
    seq: int
    control_id: str
    state: str
    attempts: int
    next_attempt_at: float
    created_at: float
    payload: bytes | None = field(default=None, repr=False)
    """The HL7 message (PHI): loaded for sending, and for ``courier outbox show --body``."""
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An HL7 message for the hospital, to add to its channel's outbox. A delivery's state
    change takes the entries it causes (its status reports), so both commit together."""

    channel: str
    target: str
    control_id: str
    payload: bytes = field(repr=False)


Reports = Sequence[OutboxEntry]
"""The outbox entries (status reports) a delivery's state change causes, stored with it."""


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """One thing an operator did from the console or the CLI (``cli:`` and the login name): who,
    when, which action, what it touched (ids, channel names: never PHI) and a detail (a reason
    the operator typed, an outcome)."""

    id: int
    at: float
    operator: str
    action: str
    subject: str
    detail: str = field(default="", repr=False)


def skipped_by(operator: str, reason: str) -> str:
    """What an operator's skip leaves as the outbox item's last error, from the console or the CLI."""
    return f"skipped by operator {operator}: {reason}"


@dataclass(frozen=True)
class Counts:
    """Rows of (keys..., state, count): per channel for messages (with their duplicates) and
    the outbox, per channel and destination for deliveries."""

    messages: list[tuple[str, str, int, int]]
    deliveries: list[tuple[str, str, str, int]]
    outbox: list[tuple[str, str, int]]


@dataclass(frozen=True)
class Gauges:
    """What the metrics read from the store every few seconds: counts and times, never PHI."""

    deliveries: dict[tuple[str, str], int]
    """(destination, state) → how many deliveries, for the states of :data:`GAUGED_STATES`."""
    oldest_waiting: dict[str, float]
    """destination → when its oldest QUEUED or SENDING delivery was queued (or requeued)."""
    outbox: dict[str, tuple[int, float | None]]
    """channel → (PENDING items, when the oldest of them was added)."""
    size_bytes: int


GAUGED_STATES = (QUEUED, SENDING, ERROR)
"""The delivery states whose counts are a queue's depth (the others only grow)."""


class Store(Protocol):
    """The durable store. Every method returns a Deferred fired in the reactor thread.

    A Deferred that fires means the change is committed: a crash afterwards loses nothing.
    Failures arrive as :class:`engine.errors.StoreError` (the sender should resend later).

    The changes of a delivery's state that the hospital hears about (``mark_sent``,
    ``mark_sent_polled``, ``mark_error``, ``set_state``) take the ``reports`` they cause and add
    them to the outbox in the same transaction: both are committed, or neither.
    """

    def start(self) -> Deferred[None]: ...

    def close(self) -> Deferred[None]: ...

    def on_queued(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(destination)`` in the reactor thread when another node (process)
        queued deliveries for ``destination``, so its queue can claim them at once;
        ``callback(None)`` when such news may have been lost (any destination may have new
        deliveries). Only news after the call: a queue looks once itself when it starts."""
        ...

    # Messages (source side).
    def receive(self, incoming: Incoming) -> Deferred[Receipt]: ...

    def receive_many(self, incoming: list[Incoming]) -> Deferred[list[Receipt]]: ...

    def list_messages(
        self,
        channel: str | None = None,
        state: str | None = None,
        since: float | None = None,
        limit: int = 50,
    ) -> Deferred[list[Message]]: ...

    def get_message(self, ref: int | str, with_body: bool = False) -> Deferred[Message | None]: ...

    def timeline(self, control_id: str) -> Deferred[list[Event]]: ...

    # Deliveries (the destination queue).
    def claim_due(
        self, destination: str, now: float, limit: int, lease_s: float, max_in_flight: int | None = None
    ) -> Deferred[list[Delivery]]:
        """Lease due deliveries to this node (taking over those whose lease ran out); at most
        ``max_in_flight`` of the destination SENDING at once across all nodes."""
        ...

    def renew_leases(self, delivery_ids: Iterable[int], until: float) -> Deferred[list[int]]:
        """Renew this node's leases of sends in flight; fires with the ids it lost."""
        ...

    def mark_sent(
        self, delivery_id: int, remote_id: str, detail: str = "", reports: Reports = ()
    ) -> Deferred[None]: ...

    def mark_retry(
        self, delivery_id: int, next_attempt_at: float, error: str, progress: str | None = None
    ) -> Deferred[None]: ...

    def mark_error(self, delivery_id: int, error: str, reports: Reports = ()) -> Deferred[None]: ...

    def set_state(
        self, delivery_id: int, state: str, detail: str = "", reports: Reports = ()
    ) -> Deferred[None]: ...

    def requeue(self, selection: DeliverySelection, by: str = "") -> Deferred[int]: ...

    def cancel(self, selection: DeliverySelection, by: str = "") -> Deferred[int]: ...

    def list_deliveries(
        self,
        channel: str | None = None,
        destination: str | None = None,
        state: str | None = None,
        limit: int = 50,
    ) -> Deferred[list[Delivery]]: ...

    def get_delivery(self, delivery_id: int) -> Deferred[Delivery | None]: ...

    def find_delivery(self, destination: str, remote_id: str) -> Deferred[Delivery | None]: ...

    def release(
        self,
        delivery_id: int,
        next_attempt_at: float,
        error: str,
        progress: str | None = None,
        hold: str = "auth",
    ) -> Deferred[None]: ...

    def next_attempt_due(self, destination: str) -> Deferred[float | None]: ...

    def held_destinations(self) -> Deferred[list[tuple[str, str, float]]]: ...

    # Rate limits (one row per destination or vendor account, shared by every engine on the store).
    def book_sends(self, buckets: Sequence[RateBucket], now: float, count: int) -> Deferred[list[float]]:
        """Book ``count`` sends against all ``buckets``, atomically; returns when each may start."""
        ...

    # Status polls (vendors with a status API).
    def mark_sent_polled(
        self, delivery_id: int, remote_id: str, detail: str, poll: StatusPoll, reports: Reports = ()
    ) -> Deferred[None]: ...

    def claim_status_polls(
        self, destination: str, now: float, limit: int, lease_s: float
    ) -> Deferred[list[StatusPoll]]: ...

    def reschedule_status_poll(self, delivery_id: int, next_at: float) -> Deferred[None]: ...

    def end_status_poll(self, delivery_id: int) -> Deferred[None]: ...

    def next_status_poll_due(self, destination: str) -> Deferred[float | None]: ...

    def keyed_hash(self, text: str) -> str:
        """A keyed hash (hex) of ``text``, for a kv key that must not reveal what it names."""
        ...

    def gauges(self, destinations: list[str], channels: list[str]) -> Deferred[Gauges]:
        """Queue depths and ages of ``destinations``, outbox of ``channels``, size: read off the reactor."""
        ...

    # Nodes (engine.node) and named leases (a channel's outbox, a job's turn).
    def node_heartbeat(self, alive_until: float) -> Deferred[bool]: ...

    def node_stopped(self) -> Deferred[None]: ...

    def take_lease(self, name: str, now: float, until: float) -> Deferred[bool]:
        """Hold ``name`` until ``until`` if it is free, run out or already ours; fires with
        whether this node holds it."""
        ...

    def release_lease(self, name: str) -> Deferred[None]: ...

    # Retention.
    def prune_batch(self, before: float, batch: int) -> Deferred[dict[str, int]]:
        """Delete one batch of what was received before ``before`` and needs nothing more."""
        ...

    # Outbox (HL7 back to the hospital).
    def outbox_add(self, channel: str, target: str, payload: bytes, control_id: str) -> Deferred[int]: ...

    def outbox_next(self, channel: str, now: float) -> Deferred[OutboxItem | None]: ...

    def outbox_done(self, item_id: int) -> Deferred[None]: ...

    def outbox_retry(self, item_id: int, next_attempt_at: float, error: str) -> Deferred[None]: ...

    def outbox_error(self, item_id: int, error: str) -> Deferred[None]: ...

    def outbox_skip(self, item_id: int, reason: str, by: str = "") -> Deferred[bool]: ...

    def list_outbox(
        self, channel: str | None = None, state: str | None = None, limit: int = 50
    ) -> Deferred[list[OutboxItem]]: ...

    def get_outbox_item(self, item_id: int) -> Deferred[OutboxItem | None]: ...

    # Statistics (the console's numbers).
    def counts(self, since: float | None = None) -> Deferred[Counts]: ...

    # What operators did (the console's audit trail).
    def record_action(self, operator: str, action: str, subject: str, detail: str = "") -> Deferred[None]:
        """Record an action that changed nothing in the store itself (a reload, a login); the
        store changes an operator makes (requeue, cancel, skip: ``by``) record themselves."""
        ...

    def list_actions(self, limit: int = 50) -> Deferred[list[OperatorAction]]:
        """Newest first."""
        ...

    # Vendor state.
    def kv_get(self, namespace: str, key: str) -> Deferred[bytes | None]: ...

    def kv_put(self, namespace: str, key: str, value: bytes) -> Deferred[None]: ...
