"""SQLiteStore: the :class:`engine.store.base.Store` on one SQLite file in WAL mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.store.database import DEFAULT_PATH
from engine.store.threaded import ThreadedStore


class SQLiteStore(ThreadedStore):
    """The durable store on SQLite. ``durability="normal"`` survives a killed process but
    not a power cut; ``"full"`` (the default) fsyncs every commit. One engine per file."""

    def __init__(self, path: Path | str = DEFAULT_PATH, **options: Any) -> None:
        super().__init__(Path(path), **options)
