"""The store on PostgreSQL: a connection that runs the store's SQLite-flavoured statements.

:class:`engine.store.database.Database` talks to its connection the way it talks to
``sqlite3`` (``execute``, ``executemany``, ``executescript``, ``in_transaction``);
:class:`PgConnection` gives a psycopg connection that face and rewrites each statement once
(:mod:`engine.store.dialect`). psycopg is imported only when a ``postgresql://`` store is used.

A write transaction runs in psycopg's pipeline mode: a statement is sent at once, but its
result is waited for only when it is read, so the statements whose results nobody reads (the
deliveries of a message, the NOTIFYs, BEGIN) share the next round trip to the server instead
of each costing one. An error then surfaces at the next read, or at COMMIT: the writer's group
commit rolls the batch back and runs each call in a savepoint, which :meth:`flush` ends so that
a call's error stays its own.

Each connection comes from a psycopg_pool pool of one: when the server drops it (a restart, a
failover to a replica), the transaction that noticed fails and the next one gets a new one.

Other nodes learn of new work through ``NOTIFY``: :meth:`PgConnection.announce` sends one per
destination and transaction, delivered when (and only if) the transaction commits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

from engine.errors import StoreError
from engine.store.dialect import postgresql, postgresql_ddl

SCHEMES = ("postgresql://", "postgres://")
QUEUED_CHANNEL = "courier_queued"
"""The NOTIFY channel; its payload is a destination name (never PHI)."""
CONNECT_TIMEOUT_S = 30.0
_SCHEMA_LOCK = 0x636F7572  # pg_advisory_lock key: one node at a time migrates


def is_postgres(location: object) -> bool:
    """Whether a ``--store`` value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(SCHEMES)


def redacted(url: str) -> str:
    """The URL without its password (after the user name, or as ``?password=``), for messages."""
    password = urlsplit(url).password
    if password is not None:
        url = url.replace(f":{password}@", ":***@", 1)
    return re.sub(r"([?&])password=[^&]*", r"\1password=***", url)


def error_text(exc: BaseException) -> str:
    """What a psycopg error says, without the DETAIL line (which can quote a row's values)."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    lines = str(exc).splitlines()
    return primary or (lines[0] if lines else type(exc).__name__)


class PgConnection:
    """A psycopg connection in autocommit mode, behind the subset of ``sqlite3`` the store uses."""

    dialect = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._pool = pool  # of one connection: it opens a new one when the server dropped ours
        self._conn = pool.getconn()
        self._announced: set[str] = set()
        self._pipeline: Any = None  # psycopg's pipeline context, during a write transaction
        self._sync: Callable[[], None] | None = None  # its sync(): wait for all that was sent

    @property
    def backend_pid(self) -> int:
        """The server process of this connection: NOTIFYs carry it."""
        return self._conn.info.backend_pid

    @property
    def raw(self) -> Any:
        """The psycopg connection itself (to LISTEN on it)."""
        return self._conn

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._pipeline is not None or self._conn.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        text, order = postgresql(sql)
        if sql == "BEGIN IMMEDIATE":
            self._leave_pipeline(quietly=True)  # what a transaction cut short by a lost connection left
        if self._pipeline is None and (self._conn.broken or self._conn.closed):  # between transactions only
            self._reconnect()
        if sql == "BEGIN IMMEDIATE":
            self._announced.clear()
            pipeline = self._conn.pipeline()
            self._sync = pipeline.__enter__().sync
            self._pipeline = pipeline
        elif sql == "ROLLBACK":
            self._leave_pipeline(quietly=True)  # what failed is already being reported
        elif sql == "ROLLBACK TO op" and self._pipeline is not None:
            self._settle()
        cursor = self._conn.execute(text, _ordered(params, order), prepare=None)
        if sql == "COMMIT":
            self._leave_pipeline(quietly=False)  # waits for the COMMIT, or raises what failed
        return _Cursor(cursor, self._sync)

    def flush(self) -> None:
        """Wait for every statement sent so far; raise the first error among them."""
        if self._sync is not None:
            self._sync()

    def _settle(self) -> None:
        """After an error: wait out the rest of what was sent, so the next statement runs."""
        import psycopg

        with suppress(psycopg.Error):
            self.flush()

    def _leave_pipeline(self, quietly: bool) -> None:
        import psycopg

        pipeline, self._pipeline, self._sync = self._pipeline, None, None
        if pipeline is None:
            return
        try:
            pipeline.__exit__(None, None, None)
        except psycopg.Error:
            if not quietly:
                raise

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any:
        text, order = postgresql(sql)
        cursor = self._conn.cursor()
        cursor.executemany(text, [_ordered(p, order) for p in params])
        return cursor

    def executescript(self, script: str) -> None:
        self._conn.execute(postgresql_ddl(script))

    def _reconnect(self) -> None:
        """The server dropped the connection (restart, failover): the transaction that saw it
        failed and was reported; the next one runs on a new connection."""
        broken, self._conn = self._conn, None
        self._pool.putconn(broken)  # the pool sees it is broken and discards it
        self._conn = self._pool.getconn()

    def announce(self, destination: str) -> None:
        """NOTIFY the other nodes, at commit, that ``destination`` has new QUEUED deliveries."""
        if destination not in self._announced:
            self._announced.add(destination)
            self._conn.execute("SELECT pg_notify(%s, %s)", (QUEUED_CHANNEL, destination))

    def ids_follow_rows(self, table: str) -> None:
        """The table's next generated id is above every id it holds (after a copy)."""
        self._conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)"
            f" FROM {table}"
        )

    def lock_schema(self) -> None:
        """Held until :meth:`unlock_schema`: two nodes starting at once migrate one after the other."""
        self._conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))

    def unlock_schema(self) -> None:
        self._conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    def close(self) -> None:
        if self._conn is not None:
            self._pool.putconn(self._conn)
        self._pool.close()


class _Cursor:
    """psycopg's cursor with what the store reads of sqlite3's: ``lastrowid`` (of an INSERT
    ending in ``RETURNING id``), and in pipeline mode a ``rowcount`` that waits for it."""

    __slots__ = ("_cursor", "_sync")

    def __init__(self, cursor: Any, sync: Callable[[], None] | None) -> None:
        self._cursor = cursor
        self._sync = sync

    @property
    def rowcount(self) -> int:
        if self._sync is not None:
            self._sync()
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int:
        return self._cursor.fetchone()[0]

    @property
    def description(self) -> Any:
        return self._cursor.description

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def __iter__(self) -> Any:
        return iter(self._cursor)


def _ordered(params: Sequence[Any], order: tuple[int, ...] | None) -> Sequence[Any]:
    return params if order is None else [params[i] for i in order]


def connect(url: str, *, readonly: bool = False, synchronous_commit: bool = True) -> PgConnection:
    """Open one connection; ``synchronous_commit`` off is the "normal" durability (see README)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency of the package
        raise StoreError("a postgresql:// store needs psycopg (pip install 'psycopg[binary]')") from None
    from psycopg_pool import ConnectionPool

    settings = [f"SET synchronous_commit = {'on' if synchronous_commit else 'off'}"]
    if readonly:
        settings.append("SET default_transaction_read_only = on")

    def configure(conn: Any) -> None:
        for setting in settings:
            conn.execute(setting)

    options = {"autocommit": True, "application_name": "courier"}
    try:
        psycopg.connect(url, **options).close()  # a refusal says why here; the pool's would not
        pool = ConnectionPool(
            url, min_size=1, max_size=1, kwargs=options, configure=configure, open=False, name="courier-store"
        )
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        return PgConnection(pool)
    except psycopg.Error as exc:
        raise StoreError(f"cannot open store {redacted(url)}: {error_text(exc)}") from None
