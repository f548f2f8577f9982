"""The store on PostgreSQL: a connection that runs the store's SQLite-flavoured statements.

:class:`engine.store.database.Database` talks to its connection the way it talks to
``sqlite3`` (``execute``, ``executemany``, ``executescript``, ``in_transaction``);
:class:`PgConnection` gives a psycopg connection that face and rewrites each statement once
(:mod:`engine.store.dialect`). psycopg is imported only when a ``postgresql://`` store is used.

Other nodes learn of new work through ``NOTIFY``: :meth:`PgConnection.announce` sends one per
destination and transaction, delivered when (and only if) the transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.errors import StoreError
from engine.store.dialect import postgresql, postgresql_ddl

SCHEMES = ("postgresql://", "postgres://")
QUEUED_CHANNEL = "courier_queued"
"""The NOTIFY channel; its payload is a destination name (never PHI)."""
_SCHEMA_LOCK = 0x636F7572  # pg_advisory_lock key: one node at a time migrates


def is_postgres(location: object) -> bool:
    """Whether a ``--store`` value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(SCHEMES)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def error_text(exc: BaseException) -> str:
    """What a psycopg error says, without the DETAIL line (which can quote a row's values)."""
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    lines = str(exc).splitlines()
    return primary or (lines[0] if lines else type(exc).__name__)


class PgConnection:
    """A psycopg connection in autocommit mode, behind the subset of ``sqlite3`` the store uses."""

    dialect = "postgresql"

    def __init__(self, connection: Any) -> None:
        self._conn = connection
        self._announced: set[str] = set()

    @property
    def raw(self) -> Any:
        """The psycopg connection itself (to LISTEN on it)."""
        return self._conn

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        text, order = postgresql(sql)
        if sql == "BEGIN IMMEDIATE":
            self._announced.clear()
        return self._conn.execute(text, _ordered(params, order), prepare=None)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any:
        text, order = postgresql(sql)
        cursor = self._conn.cursor()
        cursor.executemany(text, [_ordered(p, order) for p in params])
        return cursor

    def executescript(self, script: str) -> None:
        self._conn.execute(postgresql_ddl(script))

    def announce(self, destination: str) -> None:
        """NOTIFY the other nodes, at commit, that ``destination`` has new QUEUED deliveries."""
        if destination not in self._announced:
            self._announced.add(destination)
            self._conn.execute("SELECT pg_notify(%s, %s)", (QUEUED_CHANNEL, destination))

    def lock_schema(self) -> None:
        """Held until :meth:`unlock_schema`: two nodes starting at once migrate one after the other."""
        self._conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))

    def unlock_schema(self) -> None:
        self._conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    def close(self) -> None:
        self._conn.close()


def _ordered(params: Sequence[Any], order: tuple[int, ...] | None) -> Sequence[Any]:
    return params if order is None else [params[i] for i in order]


def connect(url: str, *, readonly: bool = False, synchronous_commit: bool = True) -> PgConnection:
    """Open one connection; ``synchronous_commit`` off is the "normal" durability (see README)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency of the package
        raise StoreError("a postgresql:// store needs psycopg (pip install 'psycopg[binary]')") from None
    try:
        conn = psycopg.connect(url, autocommit=True, application_name="courier")
        conn.execute(f"SET synchronous_commit = {'on' if synchronous_commit else 'off'}")
        if readonly:
            conn.execute("SET default_transaction_read_only = on")
    except psycopg.Error as exc:
        raise StoreError(f"cannot open store {redacted(url)}: {error_text(exc)}") from None
    return PgConnection(conn)
