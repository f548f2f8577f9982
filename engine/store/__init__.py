"""The durable store: messages, the delivery queue, the outbox and vendor state.

Depend on :class:`Store` (the interface); build one with :func:`open_store` in the CLI (a
SQLite file or a ``postgresql://`` URL). CLI commands that only read or fix rows can use the
synchronous :class:`Database` directly, on either.
"""

from pathlib import Path
from typing import Any

from engine.store.base import (
    Delivery,
    DeliverySelection,
    Event,
    Incoming,
    Message,
    OperatorAction,
    OutboxEntry,
    OutboxItem,
    Receipt,
    StatusPoll,
    Store,
)
from engine.store.crypto import Cipher, load_cipher, load_or_create_key
from engine.store.database import Database
from engine.store.postgres import is_postgres
from engine.store.sqlite import SQLiteStore

__all__ = [
    "Cipher",
    "Database",
    "Delivery",
    "DeliverySelection",
    "Event",
    "Incoming",
    "Message",
    "OperatorAction",
    "OutboxEntry",
    "OutboxItem",
    "Receipt",
    "SQLiteStore",
    "StatusPoll",
    "Store",
    "load_cipher",
    "load_or_create_key",
    "open_store",
]


def open_store(location: Path | str, **options: Any) -> Store:
    """The async store at ``location``: a ``postgresql://`` URL or a SQLite file's path."""
    if is_postgres(location):
        from engine.store.postgres_store import PostgresStore

        return PostgresStore(str(location), **options)
    return SQLiteStore(location, **options)
