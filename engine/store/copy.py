"""Copy a whole store into a new, empty one (``courier store copy``): SQLite to PostgreSQL.

Every row of every table moves with its id, in one transaction of the target (all or
nothing). Encrypted columns are decrypted with the source's key and encrypted with the
target's, so the keys may differ. The store's own secret of keyed hashes moves too (body
digests and kv keys are made with it); the target keeps its own key check. At the end each
table is compared by count and by a digest of its decrypted rows, read back from the target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import StoreError
from engine.store.database import KEY_CHECK, Database

TABLES = ("messages", "deliveries", "events", "status_polls", "outbox", "kv", "operator_actions")
"""In foreign-key order: a row's parent is copied before it. ``message_keys`` is made anew from
the messages (a SQLite store does not keep it up to date)."""
_BATCH = 500
_DIGEST_MODULUS = 1 << 256
_STORE_NAMESPACE = KEY_CHECK[0]  # the store's own rows in kv


@dataclass(frozen=True)
class Copied:
    """What one table holds in the source and in the target after the copy."""

    table: str
    rows: int
    digest: int
    target_rows: int
    target_digest: int

    @property
    def same(self) -> bool:
        return (self.rows, self.digest) == (self.target_rows, self.target_digest)


def copy_store(source: Database, target: Database) -> list[Copied]:
    """Copy every table of ``source`` into ``target``, which must hold no data yet; compare."""
    for table in (*TABLES, "message_keys"):
        if any(not _is_the_stores_own(table, row) for row in target.plain_rows(table, limit=3)):
            raise StoreError(f"the target store already holds data (table {table}); copy into an empty one")
    with target.transaction():
        for table in TABLES:
            columns = source.columns(table)
            rows = (row for row in source.plain_rows(table) if not _is_key_check(table, row))
            for batch in _batches(rows):
                target.put_plain_rows(table, columns, batch)
        target.rebuild_message_keys()
        target.ids_follow_rows(("messages", "deliveries", "events", "outbox", "operator_actions"))
    target.reload_hash_key()
    return [_compare(table, source, target) for table in TABLES]


def _compare(table: str, source: Database, target: Database) -> Copied:
    rows, digest = _digest(source, table)
    target_rows, target_digest = _digest(target, table)
    return Copied(table, rows, digest, target_rows, target_digest)


def _digest(db: Database, table: str) -> tuple[int, int]:
    """(rows, a digest of them that does not depend on their order: collations differ)."""
    count = total = 0
    for row in db.plain_rows(table):
        if _is_key_check(table, row):
            continue
        count += 1
        total = (total + int.from_bytes(hashlib.sha256(repr(row).encode()).digest(), "big")) % _DIGEST_MODULUS
    return count, total


def _is_the_stores_own(table: str, row: tuple[Any, ...]) -> bool:
    """What a new, empty store already holds: its key check and its secret of keyed hashes."""
    return table == "kv" and row[0] == _STORE_NAMESPACE


def _is_key_check(table: str, row: tuple[Any, ...]) -> bool:
    """Each store checks its own key: that row is neither copied nor compared."""
    return table == "kv" and tuple(row[:2]) == KEY_CHECK


def _batches(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
