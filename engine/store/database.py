"""The store's synchronous core: plain methods on one SQLite connection.

The async :class:`engine.store.sqlite.SQLiteStore` queues calls to these methods on its
writer and reader threads; CLI commands use a :class:`Database` directly. Write methods do
not commit: run them inside :meth:`Database.transaction` (the writer thread does that for a
whole batch at once).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engine.errors import StoreError
from engine.message.batch import canonical
from engine.message.display import printable
from engine.store import postgres
from engine.store.base import (
    CANCELLED,
    DELIVERY_STATES,
    ERROR,
    GAUGED_STATES,
    MESSAGE_STATES,
    PRUNED_TABLES,
    QUEUED,
    SENDING,
    SENT,
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
from engine.store.dialect import RETURNING_ID, SKIP_LOCKED
from engine.store.postgres import is_postgres
from engine.store.rate_buckets import RateBucket, schedule
from engine.store.schema import KEYS_FROM_MESSAGES, LATEST_VERSION, migrate, schema_version

if TYPE_CHECKING:
    from engine.node import NodeIdentity

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("var/engine.sqlite3")
DEFAULT_DUPLICATE_WINDOW_S = 7 * 24 * 3600.0
Durability = Literal["full", "normal"]
BUSY_TIMEOUT_MS = 10_000  # how long a write waits for a lock another connection holds
_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
_REQUEUEABLE = DELIVERY_STATES - {QUEUED, SENDING}
_CANCELLABLE = frozenset({QUEUED, ERROR})

_ENCRYPTED_COLUMNS = (  # (table, its key columns, an encrypted column): every *_enc column
    ("messages", "id", "raw_enc"),
    ("deliveries", "id", "last_error_enc"),
    ("events", "id", "detail_enc"),
    ("outbox", "id", "payload_enc"),
    ("outbox", "id", "last_error_enc"),
    ("kv", "namespace, key", "value_enc"),
    ("operator_actions", "id", "detail_enc"),
)
# Ids follow time, so both prunes read only the rows below the first one young enough to keep
# (a range of the primary key), not the whole table on every batch.
_NO_ID = 1 << 62  # above every id: written out as a number, which both databases read as a 64-bit integer
_PRUNABLE = f"""
    SELECT id FROM messages m WHERE received_at < ?1
    AND id < COALESCE((SELECT id FROM messages WHERE received_at >= ?1 ORDER BY id LIMIT 1), {_NO_ID})
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id
        AND (d.state IN ('QUEUED', 'SENDING')
             OR EXISTS (SELECT 1 FROM status_polls p WHERE p.delivery_id = d.id)))
    ORDER BY id LIMIT ?2"""
_PRUNE_MESSAGES = (  # children first: the foreign keys are enforced
    ("events", "DELETE FROM events WHERE message_id IN (SELECT value FROM json_each(?))"),
    ("deliveries", "DELETE FROM deliveries WHERE message_id IN (SELECT value FROM json_each(?))"),
    ("messages", "DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))"),
)
_PRUNE_KEYS = """
    DELETE FROM message_keys
    WHERE (channel, sending_application, sending_facility, control_id, body_sha256) IN (
        SELECT channel, sending_application, sending_facility, control_id, body_sha256 FROM messages
        WHERE id IN (SELECT value FROM json_each(?)))
    AND message_id IN (SELECT value FROM json_each(?))"""
_PRUNE_OUTBOX = f"""
    DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
        WHERE state IN ('SENT', 'ERROR') AND created_at < ?1
        AND id < COALESCE((SELECT id FROM outbox WHERE created_at >= ?1 ORDER BY id LIMIT 1), {_NO_ID})
        ORDER BY id LIMIT ?2)"""
_PRUNE_ACTIONS = f"""
    DELETE FROM operator_actions WHERE id IN (SELECT id FROM operator_actions
        WHERE at < ?1
        AND id < COALESCE((SELECT id FROM operator_actions WHERE at >= ?1 ORDER BY id LIMIT 1), {_NO_ID})
        ORDER BY id LIMIT ?2)"""
_RECORD_ACTION = """
    INSERT INTO operator_actions (at, operator, action, subject, detail_enc) VALUES (?, ?, ?, ?, ?)"""
_LIST_ACTIONS = (
    "SELECT id, at, operator, action, subject, detail_enc FROM operator_actions ORDER BY id DESC LIMIT ?"
)
KEY_CHECK = ("_store", "key_check")  # each store's own: it says the key fits this store
_HASH_KEY = ("_store", "hash_key")  # the secret of keyed hashes; encrypted like every kv value
_KEY_CHECK_PLAINTEXT = b"courier store key check"
_ORDER_KEY_PREFIX = b"order_by\x1f"  # its own domain: never equal to another keyed hash

_FIND_SAME_CONTROL_ID = """
    SELECT id, body_sha256, ack_code FROM messages
    WHERE channel = ? AND sending_application = ? AND sending_facility = ? AND control_id = ?
      AND received_at >= ?"""
_COUNT_DUPLICATE = (
    "UPDATE messages SET duplicates = duplicates + 1, last_duplicate_at = ? WHERE id = ? RETURNING state"
)
_INSERT_MESSAGE = f"""
    INSERT INTO messages (channel, sending_application, sending_facility, control_id,
        message_type, body_sha256, received_at, peer, state, ack_code, application_ack, raw_enc)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {RETURNING_ID}"""
_FORGET_MESSAGE = "DELETE FROM messages WHERE id = ?"
_FORGET_DELIVERIES = "DELETE FROM deliveries WHERE message_id = ?"
_FORGET_KEY = "DELETE FROM message_keys WHERE message_id = ?"
# PostgreSQL only (a data-modifying WITH): the duplicate lookup, the message, its key and its
# deliveries in one statement. The lookup (f) sees the rows stored before this statement, not
# the one it inserts. The deliveries are queued only if the key names this message; the row
# gives the new id, the key's holder and what the lookup found (as arrays, in id order).
# ?13: the window's start; ?14 and ?15: the destinations and their order keys.
# The arbiter between nodes: the key's row names the newest message stored under it, and is
# taken over by a newer one only once it is older than the duplicate window. A node whose
# insert meets another's uncommitted row waits for its commit, then keeps that message.
_STORE_MESSAGE = """
    WITH f AS (
        SELECT id, body_sha256, ack_code FROM messages
        WHERE channel = ?1 AND sending_application = ?2 AND sending_facility = ?3 AND control_id = ?4
          AND received_at >= ?13
    ), m AS (
        INSERT INTO messages (channel, sending_application, sending_facility, control_id,
            message_type, body_sha256, received_at, peer, state, ack_code, application_ack, raw_enc)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id
    ), k AS (
        INSERT INTO message_keys (channel, sending_application, sending_facility, control_id,
            body_sha256, message_id, received_at)
        SELECT ?1, ?2, ?3, ?4, ?6, id, ?7 FROM m
        ON CONFLICT (channel, sending_application, sending_facility, control_id, body_sha256)
        DO UPDATE SET
            message_id = CASE WHEN message_keys.received_at < ?13 THEN excluded.message_id
                              ELSE message_keys.message_id END,
            received_at = CASE WHEN message_keys.received_at < ?13 THEN excluded.received_at
                               ELSE message_keys.received_at END
        RETURNING message_id
    ), d AS (
        INSERT INTO deliveries (message_id, channel, destination, state, next_attempt_at,
            created_at, updated_at, order_key)
        SELECT m.id, ?1, q.destination, 'QUEUED', ?7, ?7, ?7, q.order_key
        FROM m JOIN k ON k.message_id = m.id, unnest(?14::text[], ?15::text[]) AS q (destination, order_key)
    )
    SELECT m.id, k.message_id, (SELECT array_agg(id ORDER BY id) FROM f),
        (SELECT array_agg(body_sha256 ORDER BY id) FROM f), (SELECT array_agg(ack_code ORDER BY id) FROM f)
    FROM m, k"""
_INSERT_DELIVERY = """
    INSERT INTO deliveries (message_id, channel, destination, state, next_attempt_at,
        created_at, updated_at, order_key)
    VALUES (?, ?, ?, 'QUEUED', ?, ?, ?, ?)"""
_INSERT_EVENT = """
    INSERT INTO events (message_id, delivery_id, at, kind, state, detail_enc)
    VALUES (?, ?, ?, ?, ?, ?)"""

# Recorded events, plus the "received" and "queued" events implied by the rows themselves.
_TIMELINE = """
    SELECT id, message_id, delivery_id, at, kind, state, detail_enc FROM (
        SELECT e.id, e.message_id, e.delivery_id, e.at, e.kind, e.state, e.detail_enc, 2 AS rank
        FROM events e JOIN messages m ON m.id = e.message_id WHERE m.control_id = ?
        UNION ALL
        SELECT 0, m.id, NULL, m.received_at, 'received', m.state, NULL, 0
        FROM messages m WHERE m.control_id = ?
        UNION ALL
        SELECT 0, d.message_id, d.id, d.created_at, 'queued', 'QUEUED', NULL, 1
        FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE m.control_id = ?
    ) AS timeline ORDER BY at, rank, id, delivery_id"""  # events first: their types name the columns

_MESSAGE_COLUMNS = """id, channel, sending_application, sending_facility, control_id,
    message_type, received_at, peer, state, ack_code, application_ack, duplicates"""
# What a delivery with an order_by key waits for: another one of its destination and key that
# is SENDING, or QUEUED and earlier (a requeued, older one waits for the one being sent).
_EARLIER_IN_LINE = """
    SELECT {pick} FROM deliveries e WHERE e.destination = d.destination AND e.order_key = d.order_key
        AND e.state IN ('QUEUED', 'SENDING') AND e.id != d.id
        AND (e.state = 'SENDING' OR e.id < d.id)"""
_WAITS_FOR = f"""CASE WHEN d.state = 'QUEUED' AND d.order_key IS NOT NULL
    THEN ({_EARLIER_IN_LINE.format(pick="MIN(e.id)")}) END"""
_DELIVERY_COLUMNS = f"""d.id, d.message_id, d.channel, d.destination, m.control_id, d.state,
    d.attempts, d.next_attempt_at, d.lease_until, d.remote_id, d.created_at, d.updated_at,
    d.requeues, d.progress, d.requeued_at, {_WAITS_FOR}, d.last_error_enc"""
_DELIVERY_FROM = " FROM deliveries d JOIN messages m ON m.id = d.message_id"

_CLAIM = f"""
    UPDATE deliveries SET state = 'SENDING', lease_until = ?, lease_owner = ?,
        attempts = attempts + 1, updated_at = ?
    WHERE id IN (SELECT id FROM deliveries d
                 WHERE destination = ? AND state = 'QUEUED' AND next_attempt_at <= ?
                   AND (order_key IS NULL OR NOT EXISTS ({_EARLIER_IN_LINE.format(pick="1")}))
                 ORDER BY next_attempt_at, id LIMIT ? {SKIP_LOCKED})
    RETURNING id, message_id"""
# A lease that ran out: its holder died or stalled. Back to QUEUED with its due time kept, so
# it goes first again (a destination with concurrency 1 keeps its order across nodes).
_EXPIRE_LEASES = """
    UPDATE deliveries SET state = 'QUEUED', lease_until = NULL, lease_owner = NULL, updated_at = ?
    WHERE destination = ? AND state = 'SENDING' AND lease_until < ?
    RETURNING id, message_id"""
# A row lock held until commit, for work of several nodes that must take turns (see _in_turn).
_TURN_LOCK = """
    INSERT INTO leases (name, holder, until) VALUES (?, ?, 0)
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder"""
_SENDING_NOW = "SELECT COUNT(*) FROM deliveries WHERE destination = ? AND state = 'SENDING'"
_RENEW_DELIVERIES = """
    UPDATE deliveries SET lease_until = ?
    WHERE id IN (SELECT value FROM json_each(?)) AND state = 'SENDING' AND COALESCE(lease_owner, '') = ?
    RETURNING id"""
# Every outcome of a send changes the delivery only while this node holds its lease: one that
# lost it (paused past its lease) must not undo what the node that took over recorded.
_OURS = "state = 'SENDING' AND COALESCE(lease_owner, '') = ?"
_MARK_SENT = f"""
    UPDATE deliveries SET state = 'SENT', remote_id = ?, lease_until = NULL, lease_owner = NULL,
        progress = NULL, updated_at = ?
    WHERE id = ? AND {_OURS} RETURNING message_id"""
_MARK_RETRY = f"""
    UPDATE deliveries SET state = 'QUEUED', next_attempt_at = ?, last_error_enc = ?,
        progress = COALESCE(?, progress), lease_until = NULL, lease_owner = NULL, updated_at = ?
    WHERE id = ? AND {_OURS} RETURNING message_id"""
_MARK_ERROR = """
    UPDATE deliveries SET state = 'ERROR', last_error_enc = ?, lease_until = NULL, lease_owner = NULL,
        progress = NULL, updated_at = ?
    WHERE id = ? AND (state != 'SENDING' OR COALESCE(lease_owner, '') = ?) RETURNING message_id"""
_SET_STATE = """
    UPDATE deliveries SET state = ?, lease_until = NULL, updated_at = ?
    WHERE id = ? AND state != 'SENDING' RETURNING message_id"""
_MOVE = """
    UPDATE deliveries SET state = ?, next_attempt_at = ?, lease_until = NULL, progress = NULL,
        updated_at = ?, requeues = requeues + ?, attempts = CASE WHEN ? > 0 THEN 0 ELSE attempts END,
        requeued_at = CASE WHEN ? > 0 THEN ? ELSE requeued_at END
    WHERE id = ?"""  # a requeue (a new generation) starts again from attempt 0; a cancel does not
_RELEASE = f"""
    UPDATE deliveries SET state = 'QUEUED', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
        next_attempt_at = ?, last_error_enc = ?, progress = COALESCE(?, progress), lease_until = NULL,
        lease_owner = NULL, updated_at = ?
    WHERE id = ? AND {_OURS} RETURNING message_id"""
_TAKE_BACK = """
    UPDATE deliveries SET state = 'QUEUED', lease_until = NULL, lease_owner = NULL, updated_at = ?
    WHERE state = 'SENDING' AND (lease_owner = ? OR lease_owner IS NULL)
    RETURNING id, message_id, destination"""  # no owner: left SENDING by a Courier from before leases

_NODE = "SELECT incarnation, host, boot, pid, alive_until FROM nodes WHERE name = ?"
_NODE_UPSERT = """
    INSERT INTO nodes (name, incarnation, host, boot, pid, started_at, alive_until)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET incarnation = excluded.incarnation, host = excluded.host,
        boot = excluded.boot, pid = excluded.pid, started_at = excluded.started_at,
        alive_until = excluded.alive_until"""
_NODE_HEARTBEAT = "UPDATE nodes SET alive_until = ? WHERE name = ? AND incarnation = ? RETURNING name"
_LEASE_TAKE = """
    INSERT INTO leases (name, holder, until) VALUES (?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
    WHERE leases.holder = excluded.holder OR leases.until < ?
    RETURNING name"""
_LEASE_RELEASE = "DELETE FROM leases WHERE name = ? AND holder = ?"
_LEASES_OF = "DELETE FROM leases WHERE holder = ?"

HELD_EVENT = "held:"
_HELD_DESTINATIONS = """
    WITH outcomes AS (
        SELECT d.destination, e.id, e.kind, e.at FROM events e JOIN deliveries d ON d.id = e.delivery_id
        WHERE e.kind IN ('sent', 'retry', 'error') OR e.kind LIKE 'held:%'),
    latest AS (SELECT MAX(id) AS id FROM outcomes GROUP BY destination)
    SELECT o.destination, substr(o.kind, 6), o.at FROM outcomes o JOIN latest USING (id)
    WHERE o.kind LIKE 'held:%' ORDER BY o.destination"""
# One destination (or channel) at a time, so each reads a range of its index, not the table.
_DEPTH = "SELECT COUNT(*) FROM deliveries WHERE destination = ? AND state = ?"
_OLDEST_WAITING = """SELECT MIN(COALESCE(requeued_at, created_at)) FROM deliveries
    WHERE destination = ? AND state IN ('QUEUED', 'SENDING')"""
_OUTBOX_PENDING = "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE channel = ? AND state = 'PENDING'"

_OPEN_RATE_BUCKET = """
    INSERT INTO rate_buckets (destination, booked_until) VALUES (?, 0)
    ON CONFLICT (destination) DO NOTHING"""
# The no-op UPDATE reads the bucket and, on PostgreSQL, locks its row until the booking commits.
_READ_RATE_BUCKET = """
    UPDATE rate_buckets SET booked_until = booked_until WHERE destination = ? RETURNING booked_until"""
_SET_RATE_BUCKET = "UPDATE rate_buckets SET booked_until = ? WHERE destination = ?"
_NEXT_ATTEMPT_DUE = "SELECT MIN(next_attempt_at) FROM deliveries WHERE destination = ? AND state = 'QUEUED'"

_STATUS_POLL_COLUMNS = """p.delivery_id, p.destination, d.remote_id, p.next_at, p.give_up_at,
    p.expires_at, p.polls"""
_ADD_STATUS_POLL = """
    INSERT INTO status_polls (delivery_id, destination, next_at, give_up_at, expires_at)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (delivery_id) DO UPDATE SET next_at = excluded.next_at,
        give_up_at = excluded.give_up_at, expires_at = excluded.expires_at, polls = 0"""
_CLAIM_STATUS_POLLS = f"""
    UPDATE status_polls SET next_at = ?, polls = polls + 1
    WHERE delivery_id IN (SELECT delivery_id FROM status_polls
                          WHERE destination = ? AND next_at <= ? ORDER BY next_at LIMIT ? {SKIP_LOCKED})
    RETURNING delivery_id"""
_RESCHEDULE_STATUS_POLL = "UPDATE status_polls SET next_at = ? WHERE delivery_id = ?"
_END_STATUS_POLL = "DELETE FROM status_polls WHERE delivery_id = ?"
_NEXT_STATUS_POLL_DUE = "SELECT MIN(next_at) FROM status_polls WHERE destination = ?"

_OUTBOX_COLUMNS = """id, channel, target, seq, control_id, state, attempts, next_attempt_at,
    created_at, last_error_enc, payload_enc"""
_OUTBOX_ADD = f"""
    INSERT INTO outbox (channel, target, seq, payload_enc, control_id, state, next_attempt_at,
        created_at)
    SELECT ?, ?, COALESCE(MAX(seq), 0) + 1, ?, ?, 'PENDING', ?, ? FROM outbox WHERE channel = ?
    {RETURNING_ID}"""
_OUTBOX_HEAD = f"""
    SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE channel = ? AND state = 'PENDING'
    ORDER BY seq LIMIT 1"""
_OUTBOX_DONE = "UPDATE outbox SET state = 'SENT', sent_at = ? WHERE id = ? RETURNING id"
_OUTBOX_RETRY = """
    UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,
        last_error_enc = CASE state WHEN 'PENDING' THEN ? ELSE last_error_enc END
    WHERE id = ? RETURNING id"""  # an attempt that ends after an operator's skip keeps the reason
_OUTBOX_ERROR = """
    UPDATE outbox SET state = 'ERROR', attempts = attempts + 1, last_error_enc = ?
    WHERE id = ? RETURNING id"""
_OUTBOX_SKIP = """
    UPDATE outbox SET state = 'ERROR', last_error_enc = ? WHERE id = ? AND state = 'PENDING'
    RETURNING id"""

_KV_GET = "SELECT value_enc FROM kv WHERE namespace = ? AND key = ?"
_KV_ADD = """
    INSERT INTO kv (namespace, key, value_enc, updated_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (namespace, key) DO NOTHING"""
_KV_PUT = """
    INSERT INTO kv (namespace, key, value_enc, updated_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (namespace, key) DO UPDATE SET value_enc = excluded.value_enc,
        updated_at = excluded.updated_at"""


def _create_private(path: Path) -> None:
    """A new store file is made 0600 before SQLite opens it (SQLite gives its -wal and -shm
    files the same mode): the clear columns say who sent what, when."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _warn_if_shared(path: Path) -> None:
    """An older store with a wider mode is left alone, with a warning: tightening it behind the
    operator's back could break a backup job that reads it."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("store %s has mode %04o; run: chmod 600 %s", path, stat.S_IMODE(mode), path)


class Database:
    """One SQLite connection plus the cipher for its PHI columns."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        cipher: Cipher,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        clock: Callable[[], float] = time.time,
        node: NodeIdentity | None = None,
    ) -> None:
        self.connection = connection
        self.node = node
        self._owner = node.incarnation if node is not None else ""  # what SENDING rows name
        self.backend: str = getattr(connection, "dialect", "sqlite")
        # Several engine nodes may write at once (PostgreSQL): message_keys decides between them.
        # SQLite lets one writer in at a time, so its insert-if-new decides alone.
        self.commits = 0
        self._cipher = cipher
        self._window = duplicate_window_s
        self._clock = clock
        self._hash_key: bytes | None = None  # loaded at open (see keyed_hash)
        self._announce: Callable[[str], None] = getattr(connection, "announce", _no_one_to_tell)

    @classmethod
    def open(
        cls,
        path: Path | str,
        cipher: Cipher,
        *,
        durability: Durability = "full",
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
        node: NodeIdentity | None = None,
        any_thread: bool = False,
    ) -> Database:
        """Open (creating and migrating unless ``readonly``) and check the key fits the data.

        ``path`` is a SQLite file, or a ``postgresql://`` URL (see :mod:`engine.store.postgres`).
        ``any_thread`` (SQLite): the caller makes sure one thread at a time uses the connection,
        and not always the same one (:mod:`engine.store.reactor_commits`).
        """
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        if is_postgres(path):
            return cls._open_postgres(
                str(path), cipher, durability, duplicate_window_s, clock, readonly, node
            )
        path = Path(path)
        if not readonly:
            _create_private(path)
        uri = path.resolve().as_uri() + ("?mode=ro" if readonly else "")
        try:
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, cached_statements=256, check_same_thread=not any_thread
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        db = cls(conn, cipher, duplicate_window_s, clock, node)
        try:
            db._configure(durability, readonly)
        except BaseException:
            conn.close()
            raise
        if not readonly:
            _warn_if_shared(path)
        return db

    @classmethod
    def _open_postgres(
        cls,
        url: str,
        cipher: Cipher,
        durability: Durability,
        duplicate_window_s: float,
        clock: Callable[[], float],
        readonly: bool,
        node: NodeIdentity | None,
    ) -> Database:
        conn = postgres.connect(url, readonly=readonly, synchronous_commit=durability == "full")
        db = cls(conn, cipher, duplicate_window_s, clock, node)
        try:
            db._prepare_schema(readonly)
            db._check_key(write=not readonly)
        except BaseException:
            conn.close()
            raise
        return db

    def check_pages(self) -> None:
        """Refuse a damaged file at start, not at the first message that lands on a bad page.

        ``PRAGMA quick_check`` reads every page once (about 0.1 s per 100 MB cached, 2.4 s from
        a cold disk); what it finds (page numbers, never data) is in the error. PostgreSQL
        checks its own pages as it reads them.
        """
        if self.backend != "sqlite":
            return
        try:
            rows = self.connection.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the store file is damaged ({exc}); restore it from a backup") from None
        found = [line for (text,) in rows for line in str(text).splitlines() if not line.startswith("***")]
        if found != ["ok"]:
            raise StoreError(f"the store file is damaged (quick_check: {found[0]}); restore it from a backup")

    def _configure(self, durability: Durability, readonly: bool) -> None:
        conn = self.connection
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StoreError(f"store cannot use WAL journal mode (got {mode!r})")
            self._prepare_schema(readonly)
            conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[durability]}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store: {exc}") from exc
        self._check_key(write=not readonly)

    def _prepare_schema(self, readonly: bool) -> None:
        """Migrate to the latest schema; a read-only connection only checks it is there."""
        if not readonly:
            migrate(self.connection)
            return
        version = schema_version(self.connection)
        if version != LATEST_VERSION:
            raise StoreError(f"store schema is at version {version}, not {LATEST_VERSION}")

    def _check_key(self, write: bool) -> None:
        """Fail at open, not at the first read, when the key is not the one the data needs;
        then load (or, the first time, make) the secret of :meth:`keyed_hash`."""
        stored = self.connection.execute(_KV_GET, KEY_CHECK).fetchone()
        if stored is None:
            if write:
                with self.transaction():
                    self.kv_put(*KEY_CHECK, _KEY_CHECK_PLAINTEXT)
        else:
            try:
                self._cipher.decrypt(stored[0])
            except StoreError as exc:
                raise StoreError(f"the store key does not fit this database: {exc}") from None
        self._hash_key = self.kv_get(*_HASH_KEY)
        if self._hash_key is None and write:
            with self.transaction():  # the first of two first opens (or nodes) makes the secret
                self.connection.execute(
                    _KV_ADD, (*_HASH_KEY, self._cipher.encrypt(os.urandom(32)), self._clock())
                )
            self._hash_key = self.kv_get(*_HASH_KEY)

    @property
    def hash_key(self) -> bytes | None:
        """The secret of :meth:`keyed_hash`, for the async store to hash in the reactor thread."""
        return self._hash_key

    def keyed_hash(self, data: bytes) -> bytes:
        """HMAC-SHA256 with the store's own secret, for what is kept in clear but must not be
        guessable: a plain hash of a patient id or a message body can be found by trying
        candidates, one keyed with a secret from inside the encrypted store cannot. The
        secret survives key rotation (``rekey`` re-encrypts it like any value)."""
        if self._hash_key is None:
            raise StoreError("this store has no hash key yet; open it for writing once")
        return keyed_digest(self._hash_key, data)

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one write transaction; commit on success, roll back on error."""
        conn = self.connection
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: undo only this block's changes if it raises."""
        conn = self.connection
        conn.execute("SAVEPOINT op")
        try:
            yield
            if self.backend != "sqlite":
                conn.flush()  # PostgreSQL sends ahead: wait here, so an error is this block's
        except BaseException:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            raise
        conn.execute("RELEASE op")

    # Messages ---------------------------------------------------------------------------

    def receive(self, incoming: Incoming) -> Receipt:
        """Store a message and queue its deliveries, or count it as a resend of one stored.

        On PostgreSQL this is :meth:`_receive_shared`: one statement, one round trip.
        """
        m = incoming
        if m.state not in MESSAGE_STATES:
            raise ValueError(f"unknown message state {m.state!r}")
        digest = self.keyed_hash(canonical(m.raw))
        cutoff = m.received_at - (self._window if m.duplicate_window_s is None else m.duplicate_window_s)
        sender = (m.channel, m.sending_application, m.sending_facility, m.control_id)
        if self.backend != "sqlite":
            return self._receive_shared(m, sender, digest, cutoff)
        execute = self.connection.execute
        same_control_id = execute(_FIND_SAME_CONTROL_ID, (*sender, cutoff)).fetchall()
        earlier = self._stored_copy(m, digest, same_control_id)
        if earlier is not None:
            return self._count_duplicate(*earlier, m.received_at)
        columns = (*sender, m.message_type, digest, m.received_at, m.peer, m.state, m.ack_code)
        new = execute(_INSERT_MESSAGE, (*columns, m.application_ack, self._cipher.encrypt(m.raw)))
        message_id = new.lastrowid
        self._warn_if_reused(m, same_control_id)
        # The "received" and "queued" events are read from these rows by timeline(): writing
        # them here too would cost two more table and index pages in every ACK's commit.
        at = m.received_at
        for destination, order_key in self._order_keys(m):
            execute(_INSERT_DELIVERY, (message_id, m.channel, destination, at, at, at, order_key))
            self._announce(destination)
        return Receipt(message_id, False, m.ack_code)

    def _receive_shared(self, m: Incoming, sender: tuple[str, ...], digest: bytes, cutoff: float) -> Receipt:
        """PostgreSQL: one statement looks for an earlier copy, inserts the message, holds its
        key and queues its deliveries, in one round trip (psycopg's Python cost per statement,
        not the server, bounds the writer). A resend found either way is then taken out
        again: rare, so it may cost more."""
        execute = self.connection.execute
        queued = list(self._order_keys(m))
        columns = (*sender, m.message_type, digest, m.received_at, m.peer, m.state, m.ack_code)
        params = (*columns, m.application_ack, self._cipher.encrypt(m.raw), cutoff)
        stored = execute(_STORE_MESSAGE, (*params, [d for d, _ in queued], [k for _, k in queued]))
        message_id, holder, ids, digests, ack_codes = stored.fetchone()
        same_control_id = list(zip(ids or (), digests or (), ack_codes or (), strict=True))
        earlier = self._stored_copy(m, digest, same_control_id)
        if earlier is None and holder == message_id:
            self._warn_if_reused(m, same_control_id)
            for destination, _ in queued:
                self._announce(destination)
            return Receipt(message_id, False, m.ack_code)
        if holder == message_id:  # an older digest matched: the key we just took is not ours
            execute(_FORGET_DELIVERIES, (message_id,))
            execute(_FORGET_KEY, (message_id,))
        execute(_FORGET_MESSAGE, (message_id,))
        if earlier is None:  # another node stored it since we looked, or this batch did
            (ack_code,) = execute("SELECT ack_code FROM messages WHERE id = ?", (holder,)).fetchone()
            earlier = (holder, ack_code)
        return self._count_duplicate(*earlier, m.received_at)

    def _stored_copy(
        self, m: Incoming, digest: bytes, same_control_id: list[tuple[int, bytes, str]]
    ) -> tuple[int, str] | None:
        """The (id, ack code) of a stored message that this one repeats, if any."""
        # Older rows hold a digest of the exact bytes: keyed, or before that a plain SHA-256.
        exact: tuple[bytes, bytes] | None = None  # made once, and only if a row needs them
        for message_id, body_sha256, ack_code in same_control_id:
            if body_sha256 != digest:
                exact = exact or (self.keyed_hash(m.raw), hashlib.sha256(m.raw).digest())
                if body_sha256 not in exact:
                    continue
            return message_id, ack_code
        return None

    def _warn_if_reused(self, m: Incoming, same_control_id: list[tuple[int, bytes, str]]) -> None:
        if same_control_id:
            log.warning(
                "channel %s: control id %s from %s/%s reused with a different body; stored as a new message",
                m.channel,
                printable(m.control_id),
                printable(m.sending_application),
                printable(m.sending_facility),
            )

    def _order_keys(self, m: Incoming) -> Iterator[tuple[str, str | None]]:
        """Each destination with its order key, keyed-hashed (the key itself can be PHI)."""
        keys = dict(m.order_keys)
        for destination in m.destinations:
            key = keys.get(destination)
            hashed = None if key is None else self.keyed_hash(_ORDER_KEY_PREFIX + key.encode()).hex()
            yield destination, hashed

    def _count_duplicate(self, message_id: int, ack_code: str, at: float) -> Receipt:
        (state,) = self.connection.execute(_COUNT_DUPLICATE, (at, message_id)).fetchone()
        self.connection.execute(_INSERT_EVENT, (message_id, None, at, "duplicate", state, None))
        return Receipt(message_id, True, ack_code)

    def receive_many(self, incoming: Iterable[Incoming]) -> list[Receipt]:
        return [self.receive(m) for m in incoming]

    def list_messages(
        self,
        channel: str | None = None,
        state: str | None = None,
        since: float | None = None,
        limit: int = 50,
    ) -> list[Message]:
        """Newest first, without bodies."""
        where, params = _where(("channel = ?", channel), ("state = ?", state), ("received_at >= ?", since))
        rows = self.connection.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages{where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [Message(*row) for row in rows]

    def get_message(self, ref: int | str, with_body: bool = False) -> Message | None:
        """By id, or by control id (the newest message with it)."""
        column = "control_id" if isinstance(ref, str) else "id"
        row = self.connection.execute(
            f"SELECT {_MESSAGE_COLUMNS}, raw_enc FROM messages WHERE {column} = ? ORDER BY id DESC LIMIT 1",
            (ref,),
        ).fetchone()
        if row is None:
            return None
        raw = self._cipher.decrypt(row[-1]) if with_body else None
        return Message(*row[:-1], raw=raw)

    def timeline(self, control_id: str) -> list[Event]:
        """Every event of every message with this control id, oldest first."""
        rows = self.connection.execute(_TIMELINE, (control_id,) * 3)
        return [Event(*row[:-1], detail=self._decrypt_text(row[-1])) for row in rows]

    # Deliveries -------------------------------------------------------------------------

    def claim_due(
        self, destination: str, now: float, limit: int, lease_s: float, max_in_flight: int | None = None
    ) -> list[Delivery]:
        """Lease up to ``limit`` due QUEUED deliveries (oldest due first) for sending, first
        taking back those whose lease ran out. With ``max_in_flight`` (the destination's
        concurrency), no more than that many are SENDING at once across every node."""
        if max_in_flight is not None:  # the count of SENDING must not change before the claim
            self._in_turn(f"claim:{destination}")
        expired = self.connection.execute(_EXPIRE_LEASES, (now, destination, now)).fetchall()
        self._append_events(expired, now, "lease_expired", QUEUED)
        if max_in_flight is not None:
            (sending,) = self.connection.execute(_SENDING_NOW, (destination,)).fetchone()
            limit = min(limit, max_in_flight - sending)
            if limit <= 0:
                return []
        params = (now + lease_s, self._owner or None, now, destination, now, limit)
        claimed = self.connection.execute(_CLAIM, params).fetchall()
        self._append_events(claimed, now, "claimed", SENDING)
        return self._deliveries_by_id([delivery_id for delivery_id, _ in claimed], with_body=True)

    def renew_leases(self, delivery_ids: Iterable[int], until: float) -> list[int]:
        """Push the leases of this node's sends in flight to ``until``; the ids it no longer
        holds (another node took them over after the lease ran out)."""
        asked = list(delivery_ids)
        renewed = {
            i for (i,) in self.connection.execute(_RENEW_DELIVERIES, (until, _json_ids(asked), self._owner))
        }
        return [delivery_id for delivery_id in asked if delivery_id not in renewed]

    def mark_sent(self, delivery_id: int, remote_id: str, detail: str = "", reports: Reports = ()) -> None:
        at = self._clock()
        params = (remote_id, at, delivery_id, self._owner)
        self._change(delivery_id, _MARK_SENT, params, at, "sent", SENT, detail, reports)

    def mark_retry(
        self, delivery_id: int, next_attempt_at: float, error: str, progress: str | None = None
    ) -> None:
        """Back to QUEUED for another attempt; ``progress`` (if given) is kept for it."""
        at = self._clock()
        params = (next_attempt_at, self._encrypt_text(error), progress, at, delivery_id, self._owner)
        self._change(delivery_id, _MARK_RETRY, params, at, "retry", QUEUED, error)

    def mark_error(self, delivery_id: int, error: str, reports: Reports = ()) -> None:
        """Dead letter: no more attempts until someone requeues it."""
        at = self._clock()
        params = (self._encrypt_text(error), at, delivery_id, self._owner)
        self._change(delivery_id, _MARK_ERROR, params, at, "error", ERROR, error, reports)
        self.end_status_poll(delivery_id)  # in the same commit: an ERROR is never polled again

    def set_state(self, delivery_id: int, state: str, detail: str = "", reports: Reports = ()) -> None:
        """A status the destination reported later, such as DELIVERED or READ."""
        if state not in DELIVERY_STATES:
            raise ValueError(f"unknown delivery state {state!r}")
        at = self._clock()
        self._change(delivery_id, _SET_STATE, (state, at, delivery_id), at, "status", state, detail, reports)

    def requeue(self, selection: DeliverySelection, by: str = "") -> int:
        """Queue the selected deliveries again from attempt 0 (not those QUEUED or SENDING),
        as their next generation: the vendor sees a new message id. ``by`` names the
        operator, kept in each event's detail."""
        return self._move(selection, _REQUEUEABLE, QUEUED, "requeued", generation=1, by=by)

    def cancel(self, selection: DeliverySelection, by: str = "") -> int:
        """Stop the selected deliveries that are still QUEUED or in ERROR (``by``: as requeue)."""
        return self._move(selection, _CANCELLABLE, CANCELLED, "cancelled", by=by)

    # Nodes and named leases --------------------------------------------------------------

    def register_node(
        self, now: float, alive_until: float, has_ended: Callable[[str, str, int], bool]
    ) -> int:
        """Record this node's incarnation as the live one of its name (see :mod:`engine.node`).

        A previous incarnation still vouched for must have ``has_ended`` (host, boot, pid), else
        this raises StoreError. What an ended one held is taken back at once (how many
        deliveries is returned); one that merely stopped vouching keeps its leases until they
        run out, as it may only be stalled. Deliveries left SENDING with no owner (by a Courier from before
        leases) are taken back too.
        """
        node = self.node
        if node is None:
            raise ValueError("this store was opened without a node identity")
        row = self.connection.execute(_NODE, (node.name,)).fetchone()
        ended = None  # the previous incarnation, when it has surely ended
        if row is not None:
            previous, host, boot, pid, vouched_until = row
            if has_ended(host, boot, pid):
                ended = previous
            elif vouched_until >= now:
                raise StoreError(
                    f"node name {node.name!r} is in use by a running engine (pid {pid} on {host}); "
                    "give each node its own --node-name"
                )
        taken = self._take_back(now, ended)
        if ended is not None:
            self.connection.execute(_LEASES_OF, (ended,))
        self.connection.execute(
            _NODE_UPSERT, (node.name, node.incarnation, node.host, node.boot, node.pid, now, alive_until)
        )
        return len(taken)

    def node_heartbeat(self, alive_until: float) -> bool:
        """Vouch for this incarnation until ``alive_until``; False if another took its name."""
        node = self.node
        found = self.connection.execute(_NODE_HEARTBEAT, (alive_until, node.name, node.incarnation))
        return found.fetchone() is not None

    def node_stopped(self) -> None:
        """A clean stop: vouch no longer, hand back the named leases (and any send left
        SENDING after a store failure), so another node need not wait for them."""
        self.node_heartbeat(0.0)
        self._take_back(self._clock(), self._owner)
        self.connection.execute(_LEASES_OF, (self._owner,))

    def _take_back(self, at: float, incarnation: str | None) -> list[tuple[int, int, str]]:
        """QUEUED again: what ``incarnation`` left SENDING (its holder is gone), and any
        SENDING row with no owner; the nodes waiting on those destinations are told."""
        taken = self.connection.execute(_TAKE_BACK, (at, incarnation)).fetchall()
        self._append_events([(d, m) for d, m, _ in taken], at, "lease_expired", QUEUED)
        for destination in sorted({destination for _, _, destination in taken}):
            self._announce(destination)
        return taken

    def _in_turn(self, name: str) -> None:
        """Wait here, until its commit, for another node's transaction that took the same turn.

        For what reads before it writes and must not interleave across nodes (a claim that
        counts what is in flight, the next outbox number). Claims without a cap do not take it:
        they run side by side, skipping each other's locked rows. SQLite has one writer at a
        time, so there it costs nothing.
        """
        if self.backend != "sqlite":
            self.connection.execute(_TURN_LOCK, (name, self._owner))

    def take_lease(self, name: str, now: float, until: float) -> bool:
        """Hold the named lease until ``until`` if it is free, run out, or already this node's."""
        found = self.connection.execute(_LEASE_TAKE, (name, self._owner, until, now)).fetchone()
        return found is not None

    def release_lease(self, name: str) -> None:
        self.connection.execute(_LEASE_RELEASE, (name, self._owner))

    def list_deliveries(
        self,
        channel: str | None = None,
        destination: str | None = None,
        state: str | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        """Newest first, without message bodies."""
        where, params = _where(
            ("d.channel = ?", channel), ("d.destination = ?", destination), ("d.state = ?", state)
        )
        rows = self.connection.execute(
            f"SELECT {_DELIVERY_COLUMNS}{_DELIVERY_FROM}{where} ORDER BY d.id DESC LIMIT ?",
            (*params, limit),
        )
        return [self._delivery(row) for row in rows]

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        """One delivery, without its message body (statuses and operators never need it)."""
        found = self._deliveries_by_id([delivery_id], with_body=False)
        return found[0] if found else None

    def find_delivery(self, destination: str, remote_id: str) -> Delivery | None:
        """The newest delivery the vendor knows as ``remote_id`` (for statuses it pushes)."""
        row = self.connection.execute(
            f"SELECT {_DELIVERY_COLUMNS}{_DELIVERY_FROM} WHERE d.destination = ? AND d.remote_id = ?"
            " ORDER BY d.id DESC LIMIT 1",
            (destination, remote_id),
        ).fetchone()
        return None if row is None else self._delivery(row)

    def release(
        self,
        delivery_id: int,
        next_attempt_at: float,
        error: str,
        progress: str | None = None,
        hold: str = "auth",
    ) -> None:
        """Back to QUEUED without counting the attempt: the set-up failed, not the message.

        The event kind ``held:<hold>`` is what :meth:`held_destinations` reads (unencrypted:
        ``hold`` is one of a few fixed words, never PHI)."""
        at = self._clock()
        params = (next_attempt_at, self._encrypt_text(error), progress, at, delivery_id, self._owner)
        self._change(delivery_id, _RELEASE, params, at, HELD_EVENT + hold, QUEUED, error)

    def held_destinations(self) -> list[tuple[str, str, float]]:
        """(destination, hold word, when last tried) for each destination whose latest send
        outcome was a hold: the queue is waiting for its set-up to be fixed."""
        return self.connection.execute(_HELD_DESTINATIONS).fetchall()

    def next_attempt_due(self, destination: str) -> float | None:
        """When the destination's earliest QUEUED delivery is due, so its queue can sleep till then."""
        return self.connection.execute(_NEXT_ATTEMPT_DUE, (destination,)).fetchone()[0]

    def book_sends(self, buckets: Sequence[RateBucket], now: float, count: int) -> list[float]:
        """Book ``count`` sends against every one of ``buckets`` at once; returns when each
        send may start (:func:`engine.store.rate_buckets.schedule`).

        The buckets are read and locked in name order, so concurrent engines on one store each
        get their own stretch of time, and two bookings never wait for each other in a cycle.
        """
        ordered = sorted(buckets, key=lambda bucket: bucket.name)
        booked = []
        for bucket in ordered:
            self.connection.execute(_OPEN_RATE_BUCKET, (bucket.name,))
            booked.append(self.connection.execute(_READ_RATE_BUCKET, (bucket.name,)).fetchone()[0])
        times, until = schedule(ordered, booked, now, count)
        for bucket, booked_until in zip(ordered, until, strict=True):
            self.connection.execute(_SET_RATE_BUCKET, (booked_until, bucket.name))
        return times

    # Status polls -----------------------------------------------------------------------

    def mark_sent_polled(
        self, delivery_id: int, remote_id: str, detail: str, poll: StatusPoll, reports: Reports = ()
    ) -> None:
        """SENT and the first status poll scheduled, in one change: no SENT row goes unpolled."""
        self.mark_sent(delivery_id, remote_id, detail, reports)
        self.connection.execute(
            _ADD_STATUS_POLL,
            (delivery_id, poll.destination, poll.next_at, poll.give_up_at, poll.expires_at),
        )

    def claim_status_polls(
        self, destination: str, now: float, limit: int, lease_s: float
    ) -> list[StatusPoll]:
        """Take up to ``limit`` due polls; each is pushed ``lease_s`` ahead until rescheduled."""
        claimed = self.connection.execute(
            _CLAIM_STATUS_POLLS, (now + lease_s, destination, now, limit)
        ).fetchall()
        if not claimed:
            return []
        rows = self.connection.execute(
            f"SELECT {_STATUS_POLL_COLUMNS} FROM status_polls p JOIN deliveries d ON d.id = p.delivery_id"
            " WHERE p.delivery_id IN (SELECT value FROM json_each(?)) ORDER BY p.delivery_id",
            (_json_ids(i for (i,) in claimed),),
        )
        return [StatusPoll(*row) for row in rows]

    def reschedule_status_poll(self, delivery_id: int, next_at: float) -> None:
        self.connection.execute(_RESCHEDULE_STATUS_POLL, (next_at, delivery_id))

    def end_status_poll(self, delivery_id: int) -> None:
        """Stop polling: a final state was reached, or polling gave up."""
        self.connection.execute(_END_STATUS_POLL, (delivery_id,))

    def next_status_poll_due(self, destination: str) -> float | None:
        return self.connection.execute(_NEXT_STATUS_POLL_DUE, (destination,)).fetchone()[0]

    def _deliveries_by_id(self, delivery_ids: list[int], with_body: bool) -> list[Delivery]:
        if not delivery_ids:
            return []
        columns = _DELIVERY_COLUMNS + (", m.raw_enc" if with_body else "")
        rows = self.connection.execute(
            f"SELECT {columns}{_DELIVERY_FROM} WHERE d.id IN (SELECT value FROM json_each(?))"
            " ORDER BY d.next_attempt_at, d.id",
            (_json_ids(delivery_ids),),
        )
        return [self._delivery(row) for row in rows]

    def _delivery(self, row: tuple[Any, ...]) -> Delivery:
        raw = self._cipher.decrypt(row[17]) if len(row) > 17 else None
        return Delivery(*row[:16], last_error=self._decrypt_text(row[16]), raw=raw)

    def _change(
        self,
        delivery_id: int,
        sql: str,
        params: tuple[Any, ...],
        at: float,
        kind: str,
        state: str,
        detail: str,
        reports: Reports = (),
    ) -> None:
        """Run one delivery UPDATE … RETURNING message_id, record the event and add the
        ``reports`` the change causes to the outbox: a crash keeps all of it, or none."""
        row = self.connection.execute(sql, params).fetchone()
        if row is None:
            raise StoreError(
                f"delivery {delivery_id} not changed: unknown, or SENDING under another node's lease"
            )
        self.connection.execute(
            _INSERT_EVENT, (row[0], delivery_id, at, kind, state, self._encrypt_text(detail))
        )
        for entry in reports:
            self.outbox_add(entry.channel, entry.target, entry.payload, entry.control_id)

    def _move(
        self,
        selection: DeliverySelection,
        from_states: frozenset[str],
        to_state: str,
        kind: str,
        generation: int = 0,
        by: str = "",
    ) -> int:
        s = selection
        ids = None if s.ids is None else _json_ids(s.ids)
        where, params = _where(
            ("id IN (SELECT value FROM json_each(?))", ids),
            ("channel = ?", s.channel),
            ("destination = ?", s.destination),
            ("state = ?", s.state),
        )
        if not where:
            raise ValueError(f"{kind}: select deliveries by id or filter, not all of them")
        rows = self.connection.execute(
            f"SELECT id, message_id, state, destination FROM deliveries{where}", params
        ).fetchall()
        moving_rows = [(d, m, destination) for d, m, state, destination in rows if state in from_states]
        moving = [(d, m) for d, m, _ in moving_rows]
        at = self._clock()
        params = [(to_state, at, at, generation, generation, generation, at, d) for d, _ in moving]
        self.connection.executemany(_MOVE, params)
        self._append_events(moving, at, kind, to_state, f"by operator {by}" if by else "")
        if by and moving:
            self.record_action(by, kind, _deliveries_named([d for d, _ in moving]))
        if to_state == QUEUED:
            for destination in {destination for _, _, destination in moving_rows}:
                self._announce(destination)
        return len(moving)

    def _append_events(
        self, pairs: list[tuple[int, int]], at: float, kind: str, state: str, detail: str = ""
    ) -> None:
        """One event per (delivery id, message id) pair, all with the same ``detail``."""
        detail_enc = self._encrypt_text(detail)
        self.connection.executemany(_INSERT_EVENT, [(m, d, at, kind, state, detail_enc) for d, m in pairs])

    # Outbox -----------------------------------------------------------------------------

    def outbox_add(self, channel: str, target: str, payload: bytes, control_id: str) -> int:
        self._in_turn(f"outbox-seq:{channel}")  # two nodes would number their items alike
        at = self._clock()
        return self.connection.execute(
            _OUTBOX_ADD,
            (channel, target, self._cipher.encrypt(payload), control_id, at, at, channel),
        ).lastrowid

    def outbox_next(self, channel: str, now: float) -> OutboxItem | None:
        """The oldest PENDING item of the channel, if due; a later item never overtakes it."""
        row = self.connection.execute(_OUTBOX_HEAD, (channel,)).fetchone()
        if row is None or row[7] > now:
            return None
        return self._outbox_item(row, with_payload=True)

    def outbox_done(self, item_id: int) -> None:
        self._change_outbox(item_id, _OUTBOX_DONE, (self._clock(), item_id))

    def outbox_retry(self, item_id: int, next_attempt_at: float, error: str) -> None:
        self._change_outbox(item_id, _OUTBOX_RETRY, (next_attempt_at, self._encrypt_text(error), item_id))

    def outbox_error(self, item_id: int, error: str) -> None:
        """Give up on an item, which lets the channel's later items go."""
        self._change_outbox(item_id, _OUTBOX_ERROR, (self._encrypt_text(error), item_id))

    def outbox_skip(self, item_id: int, reason: str, by: str = "") -> bool:
        """An operator gives up on a PENDING item so the channel's later items can go;
        False when the item is not PENDING (already sent, or already given up). ``by`` names
        the operator: the skip is recorded among the operators' actions, with ``reason``."""
        found = self.connection.execute(_OUTBOX_SKIP, (self._encrypt_text(reason), item_id)).fetchone()
        if found is not None and by:
            self.record_action(by, "skipped", f"outbox item {item_id}", reason)
        return found is not None

    def list_outbox(
        self, channel: str | None = None, state: str | None = None, limit: int = 50
    ) -> list[OutboxItem]:
        """Newest first, without the HL7 payloads (they carry PHI)."""
        where, params = _where(("channel = ?", channel), ("state = ?", state))
        rows = self.connection.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox{where} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [self._outbox_item(row, with_payload=False) for row in rows]

    def get_outbox_item(self, item_id: int, with_payload: bool = False) -> OutboxItem | None:
        row = self.connection.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (item_id,)
        ).fetchone()
        return None if row is None else self._outbox_item(row, with_payload)

    def _outbox_item(self, row: tuple[Any, ...], with_payload: bool) -> OutboxItem:
        payload = self._cipher.decrypt(row[-1]) if with_payload else None
        return OutboxItem(*row[:9], payload=payload, last_error=self._decrypt_text(row[9]) or None)

    def _change_outbox(self, item_id: int, sql: str, params: tuple[Any, ...]) -> None:
        if self.connection.execute(sql, params).fetchone() is None:
            raise StoreError(f"no outbox item {item_id}")

    # What operators did -----------------------------------------------------------------

    def record_action(self, operator: str, action: str, subject: str, detail: str = "") -> None:
        """One line of the operators' audit trail; ``subject`` names ids and channels only
        (kept in clear), ``detail`` is encrypted (an operator may type anything in a reason)."""
        self.connection.execute(
            _RECORD_ACTION, (self._clock(), operator, action, subject, self._encrypt_text(detail))
        )

    def list_actions(self, limit: int = 50) -> list[OperatorAction]:
        """Newest first."""
        rows = self.connection.execute(_LIST_ACTIONS, (limit,))
        return [OperatorAction(*row[:-1], detail=self._decrypt_text(row[-1])) for row in rows]

    # Statistics -------------------------------------------------------------------------

    def counts(self, since: float | None = None) -> Counts:
        """How many messages, deliveries and outbox items are in each state, per channel
        (and destination), received since ``since`` when given: the dashboard's numbers."""
        messages = self.connection.execute(
            "SELECT channel, state, COUNT(*), SUM(duplicates) FROM messages"
            " WHERE received_at >= ? GROUP BY channel, state",
            (since or 0.0,),
        ).fetchall()
        deliveries = self.connection.execute(
            "SELECT channel, destination, state, COUNT(*) FROM deliveries"
            " WHERE created_at >= ? GROUP BY channel, destination, state",
            (since or 0.0,),
        ).fetchall()
        outbox = self.connection.execute(
            "SELECT channel, state, COUNT(*) FROM outbox WHERE created_at >= ? GROUP BY channel, state",
            (since or 0.0,),
        ).fetchall()
        return Counts(messages, deliveries, outbox)

    def gauges(self, destinations: list[str], channels: list[str]) -> Gauges:
        """The queue depths and ages the metrics show, read by index ranges only (see
        :class:`engine.store.base.Gauges`)."""
        run = self.connection.execute
        depths = {
            (d, state): run(_DEPTH, (d, state)).fetchone()[0] for d in destinations for state in GAUGED_STATES
        }
        oldest = {d: at for d in destinations if (at := run(_OLDEST_WAITING, (d,)).fetchone()[0]) is not None}
        outbox = {channel: run(_OUTBOX_PENDING, (channel,)).fetchone() for channel in channels}
        pages = run("PRAGMA page_count").fetchone()[0] * run("PRAGMA page_size").fetchone()[0]
        return Gauges(depths, oldest, outbox, pages)

    # Retention --------------------------------------------------------------------------

    def prune(self, before: float, batch: int = 500) -> dict[str, int]:
        """:meth:`prune_batch` until nothing is left, each batch in its own transaction, so it
        runs beside the engine. How many rows, by table."""
        done = dict.fromkeys(PRUNED_TABLES, 0)
        while True:
            with self.transaction():
                pruned = self.prune_batch(before, batch)
            for table, count in pruned.items():
                done[table] += count
            if not any(pruned.values()):
                return done

    def prune_batch(self, before: float, batch: int = 500) -> dict[str, int]:
        """Delete up to ``batch`` messages received before ``before`` that need nothing more
        (every delivery final and no longer polled for a status), with their deliveries and
        events, up to ``batch`` outbox items sent or given up, and up to ``batch`` operator
        actions recorded before ``before``. How many rows, by table.

        Freed pages are reused by new messages; :meth:`vacuum` gives them back to the file system.
        """
        ids = _json_ids(i for (i,) in self.connection.execute(_PRUNABLE, (before, batch)))
        # Before the messages they name; on SQLite only keys migration 9 made are left to prune.
        self.connection.execute(_PRUNE_KEYS, (ids, ids))
        done = {table: self.connection.execute(delete, (ids,)).rowcount for table, delete in _PRUNE_MESSAGES}
        done["outbox"] = self.connection.execute(_PRUNE_OUTBOX, (before, batch)).rowcount
        done["operator_actions"] = self.connection.execute(_PRUNE_ACTIONS, (before, batch)).rowcount
        return done

    def vacuum(self) -> None:
        """Rewrite the file without its free pages (the store is locked meanwhile)."""
        self.connection.execute("VACUUM")

    # Key rotation -----------------------------------------------------------------------

    def reencrypt(self, batch: int = 200) -> dict[str, int]:
        """Re-encrypt with the current key every value an old key wrote; how many, by column.

        Each batch commits on its own, so a running engine waits at most one batch for the
        write lock. Values written meanwhile by an engine still on the old key are caught by
        running this again. A value no loaded key can read stops it with a StoreError.
        """
        done: dict[str, int] = {}
        for table, key_columns, column in _ENCRYPTED_COLUMNS:
            select = (
                f"SELECT {key_columns}, {column} FROM {table}"
                f" WHERE {column} IS NOT NULL AND substr({column}, 2, 4) != ? LIMIT ?"
            )
            match = " AND ".join(f"{name} = ?" for name in key_columns.split(", "))
            update = f"UPDATE {table} SET {column} = ? WHERE {match}"
            done[f"{table}.{column}"] = 0
            while True:
                with self.transaction():
                    rows = self.connection.execute(select, (self._cipher.key_id, batch)).fetchall()
                    for *key, value in rows:
                        self.connection.execute(
                            update, (self._cipher.encrypt(self._cipher.decrypt(value)), *key)
                        )
                done[f"{table}.{column}"] += len(rows)
                if len(rows) < batch:
                    break
        return done

    # Whole tables (courier store copy) -------------------------------------------------

    def columns(self, table: str) -> list[str]:
        return [column[0] for column in self.connection.execute(f"SELECT * FROM {table} LIMIT 0").description]

    def plain_rows(self, table: str, limit: int | None = None) -> Iterator[tuple[Any, ...]]:
        """Every row of ``table`` with its ``*_enc`` columns decrypted (PHI: for copying only)."""
        cursor = self.connection.execute(
            f"SELECT * FROM {table}" + ("" if limit is None else f" LIMIT {limit:d}")
        )
        encrypted = [column[0].endswith("_enc") for column in cursor.description]
        decrypt = self._cipher.decrypt
        for row in cursor:
            yield tuple(
                decrypt(value) if secret and value is not None else value
                for secret, value in zip(encrypted, row, strict=True)
            )

    def put_plain_rows(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        """Insert rows as :meth:`plain_rows` gives them, encrypting with this store's key."""
        encrypted = [column.endswith("_enc") for column in columns]
        encrypt = self._cipher.encrypt
        values = [
            tuple(
                encrypt(value) if secret and value is not None else value
                for secret, value in zip(encrypted, row, strict=True)
            )
            for row in rows
        ]
        marks = ", ".join("?" * len(columns))
        insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        if table == "kv":  # the secret of keyed hashes comes with the data it made
            insert += (
                " ON CONFLICT (namespace, key)"
                " DO UPDATE SET value_enc = excluded.value_enc, updated_at = excluded.updated_at"
            )
        self.connection.executemany(insert, values)

    def ids_follow_rows(self, tables: Iterable[str]) -> None:
        """After rows came with their ids: new rows get ids above them (PostgreSQL's identity
        sequences do not look at the rows; SQLite's row ids do)."""
        follow = getattr(self.connection, "ids_follow_rows", None)
        if follow is not None:
            for table in tables:
                follow(table)

    def rebuild_message_keys(self) -> None:
        """Fill the empty ``message_keys`` from the messages (after a copy)."""
        self.connection.execute(KEYS_FROM_MESSAGES)

    def reload_hash_key(self) -> None:
        self._hash_key = self.kv_get(*_HASH_KEY)

    # Key/value --------------------------------------------------------------------------

    def kv_get(self, namespace: str, key: str) -> bytes | None:
        row = self.connection.execute(_KV_GET, (namespace, key)).fetchone()
        return None if row is None else self._cipher.decrypt(row[0])

    def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        self.connection.execute(_KV_PUT, (namespace, key, self._cipher.encrypt(value), self._clock()))

    # Encrypted text columns: NULL stands for "" so detail-less events cost no encryption.

    def _encrypt_text(self, text: str) -> bytes | None:
        return self._cipher.encrypt(text.encode()) if text else None

    def _decrypt_text(self, value: bytes | None) -> str:
        return self._cipher.decrypt(value).decode() if value is not None else ""


def _no_one_to_tell(destination: str) -> None:
    """SQLite: one engine per store, whose queues learn of new work from it directly."""


def _where(*conditions: tuple[str, object]) -> tuple[str, tuple[object, ...]]:
    """A WHERE clause from the conditions whose value is not None."""
    used = [(clause, value) for clause, value in conditions if value is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(c for c, _ in used), tuple(v for _, v in used)


def _deliveries_named(ids: list[int]) -> str:
    """What an operator's requeue or cancel touched, for the audit trail."""
    return ("delivery " if len(ids) == 1 else "deliveries ") + ", ".join(str(i) for i in ids)


def _json_ids(ids: Iterable[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"
