"""The store's schema as an ordered list of migrations, applied when a database is opened.

Migration *n* (1-based) moves a database from version *n-1* to *n*. Never edit a released
migration; append a new one. Columns ending in ``_enc`` hold :mod:`engine.store.crypto` values.
"""

from __future__ import annotations

import sqlite3

from engine.errors import StoreError

KEYS_FROM_MESSAGES = """
    INSERT INTO message_keys
    SELECT channel, sending_application, sending_facility, control_id, body_sha256, MAX(id), MAX(received_at)
    FROM messages GROUP BY channel, sending_application, sending_facility, control_id, body_sha256"""
"""Fills an empty ``message_keys`` from the messages (migration 9, and ``courier store copy``)."""

MIGRATIONS: tuple[str, ...] = (
    # 1: messages, their deliveries, and the audit trail.
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        sending_application TEXT NOT NULL,
        sending_facility TEXT NOT NULL,
        control_id TEXT NOT NULL,
        message_type TEXT NOT NULL,
        body_sha256 BLOB NOT NULL,
        received_at REAL NOT NULL,
        peer TEXT NOT NULL,
        state TEXT NOT NULL,
        ack_code TEXT NOT NULL,
        application_ack TEXT NOT NULL,
        duplicates INTEGER NOT NULL DEFAULT 0,
        last_duplicate_at REAL,
        raw_enc BLOB NOT NULL
    );
    -- One index, written on every ACK's commit: it covers the duplicate lookup (no table
    -- access needed) and finds messages by control id. Listings go by id, which follows time.
    CREATE INDEX messages_by_control_id ON messages (
        control_id, channel, sending_application, sending_facility,
        received_at, body_sha256, ack_code
    );

    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages (id),
        channel TEXT NOT NULL,
        destination TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        remote_id TEXT,
        last_error_enc BLOB,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (destination, state, next_attempt_at);
    CREATE INDEX deliveries_by_message ON deliveries (message_id);

    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages (id),
        delivery_id INTEGER REFERENCES deliveries (id),
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        detail_enc BLOB
    );
    CREATE INDEX events_by_message ON events (message_id);
    """,
    # 2: the outbox of HL7 messages sent back to the hospital, in order per channel.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        target TEXT NOT NULL,
        seq INTEGER NOT NULL,
        payload_enc BLOB NOT NULL,
        control_id TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        sent_at REAL,
        last_error_enc BLOB,
        UNIQUE (channel, seq)
    );
    CREATE INDEX outbox_pending ON outbox (channel, state, seq);
    """,
    # 3: small encrypted key/value state for vendors (conversation ids, OAuth tokens).
    """
    CREATE TABLE kv (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value_enc BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    """,
    # 4: the status-poll schedule of SENT deliveries (survives restarts), and remote id lookup
    # for statuses the vendor pushes (webhooks name the vendor's id, not ours).
    """
    CREATE TABLE status_polls (
        delivery_id INTEGER PRIMARY KEY REFERENCES deliveries (id),
        destination TEXT NOT NULL,
        next_at REAL NOT NULL,
        give_up_at REAL NOT NULL,
        expires_at REAL,
        polls INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX status_polls_due ON status_polls (destination, next_at);
    CREATE INDEX deliveries_by_remote_id ON deliveries (remote_id) WHERE remote_id IS NOT NULL;
    """,
    # 5: how often a delivery was requeued: each requeue is a new message for the vendor
    # (a new idempotency key), while the retries of one generation share theirs.
    """
    ALTER TABLE deliveries ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: Qliq conversation keys were plain SHA-256 hashes of patient id and order number, which
    # can be reversed by trying every patient id. They are now keyed hashes; forget the old
    # ones (each thread simply starts a new Qliq conversation once).
    """
    DELETE FROM kv WHERE namespace = 'qliq-conversation';
    """,
    # 7: how far a send made of several requests got before it failed (Qliq sends each further
    # attachment as its own request), so the next attempt, even after a restart, sends only
    # the rest. Vendor ids only, no PHI; cleared when the delivery is sent, ends or is requeued.
    """
    ALTER TABLE deliveries ADD COLUMN progress TEXT;
    """,
    # 8: when an operator last requeued a delivery, so max_age_s counts from there (it counted
    # from created_at, and a requeued delivery that had aged out gave up after one attempt).
    """
    ALTER TABLE deliveries ADD COLUMN requeued_at REAL;
    """,
    # 9: the newest message stored under each (channel, sender, control id, body digest), held
    # by a primary key: two nodes storing the same resend at once cannot both store it (the
    # second's insert meets the first's row; see Database.receive). Only PostgreSQL keeps it up
    # to date: a SQLite store has one writer at a time, whose insert-if-new decides alone.
    f"""
    CREATE TABLE message_keys (
        channel TEXT NOT NULL,
        sending_application TEXT NOT NULL,
        sending_facility TEXT NOT NULL,
        control_id TEXT NOT NULL,
        body_sha256 BLOB NOT NULL,
        message_id INTEGER NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (channel, sending_application, sending_facility, control_id, body_sha256)
    ) WITHOUT ROWID;
    {KEYS_FROM_MESSAGES};
    """,
    # 10: several engine nodes on one store. A SENDING delivery names the node incarnation
    # that holds its lease (which renews it while the send is in flight; another node takes it
    # over once it runs out). ``nodes`` says which incarnation of each node name is alive, so a
    # restarted node can take back at once what its previous incarnation held. ``leases`` holds
    # named leases: one node sends a channel's outbox, one runs a job such as retention.
    """
    ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        incarnation TEXT NOT NULL,
        host TEXT NOT NULL,
        boot TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        alive_until REAL NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until REAL NOT NULL
    );
    """,
    # 11: a destination's order_by: deliveries with the same key (a keyed hash of, say, the
    # patient id) go one after another. The index finds a key's unfinished deliveries.
    """
    ALTER TABLE deliveries ADD COLUMN order_key TEXT;
    CREATE INDEX deliveries_in_line ON deliveries (destination, order_key, id)
        WHERE order_key IS NOT NULL AND state IN ('QUEUED', 'SENDING');
    """,
    # 12: each rate-limited destination's send times handed out so far, so its limit holds
    # across restarts and across engines sharing the store (engine.delivery.ratelimit). A
    # vendor account's limit has a row too, named "account:" + a keyed hash of its key.
    """
    CREATE TABLE rate_buckets (
        destination TEXT PRIMARY KEY,
        booked_until REAL NOT NULL
    );
    """,
    # 13: what operators did from the console (requeue, cancel, skip, reload, login, logout):
    # who, when, what it touched (ids, channel names) in clear; the detail (an operator's
    # free-text reason) encrypted, as it is typed by hand.
    """
    CREATE TABLE operator_actions (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        operator TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail_enc BLOB
    );
    CREATE INDEX operator_actions_by_time ON operator_actions (at);
    """,
)

LATEST_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The version a database is at; 0 for a new, empty file. Writes nothing."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    return conn.execute("SELECT version FROM schema_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, target: int = LATEST_VERSION) -> int:
    """Apply the migrations a database lacks, each in its own transaction; return the version.

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    lock = getattr(conn, "lock_schema", None)  # PostgreSQL: other nodes may be migrating too
    if lock is None:
        return _migrate(conn, target)
    lock()
    try:
        return _migrate(conn, target)
    finally:
        conn.unlock_schema()


def _migrate(conn: sqlite3.Connection, target: int) -> int:
    current = schema_version(conn)
    if current > LATEST_VERSION:
        raise StoreError(f"database schema version {current} is newer than this Courier ({LATEST_VERSION})")
    for version in range(current + 1, target + 1):
        bump = (
            "CREATE TABLE schema_version (version INTEGER NOT NULL);"
            " INSERT INTO schema_version (version) VALUES (1)"
            if version == 1
            else f"UPDATE schema_version SET version = {version}"
        )
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[version - 1]};\n{bump};\nCOMMIT;")
        except Exception as exc:  # sqlite3.Error or psycopg.Error
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"migration to schema version {version} failed: {exc}") from exc
    return max(current, target)
