"""The durable store: messages, the delivery queue, the outbox and vendor state.

Depend on :class:`Store` (the interface); build a :class:`SQLiteStore` in the CLI. CLI
commands that only read or fix rows can use the synchronous :class:`Database` directly.
"""

from engine.store.base import (
    Delivery,
    DeliverySelection,
    Event,
    Incoming,
    Message,
    OutboxItem,
    Receipt,
    StatusPoll,
    Store,
)
from engine.store.crypto import Cipher, load_cipher, load_or_create_key
from engine.store.database import Database
from engine.store.sqlite import SQLiteStore

__all__ = [
    "Cipher",
    "Database",
    "Delivery",
    "DeliverySelection",
    "Event",
    "Incoming",
    "Message",
    "OutboxItem",
    "Receipt",
    "SQLiteStore",
    "StatusPoll",
    "Store",
    "load_cipher",
    "load_or_create_key",
]
