"""``/healthz`` and ``/readyz``: what a load balancer or supervisor asks, without a login.

``/healthz`` answers 200 while the process serves HTTP at all. ``/readyz`` answers 200 only
when every listener (each channel's MLLP port, the webhooks) is bound, the store took a small
real write recently (the writer is neither failing nor stalled), and no destination has been
held longer than ``max_held_s``; otherwise 503 with the reasons, as a small JSON document.
The store is probed in the background every ``interval_s``, so a request never writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

log = logging.getLogger(__name__)

PROBE_NAMESPACE = "_health"
PROBE_INTERVAL_S = 1.0
STALL_S = 5.0
"""A probe write outstanding this long means the writer is stalled (SQLite waits up to 10 s
for a lock before it fails; readiness should not wait that long)."""


class Readiness(Service):
    """Probes the store and watches held destinations; :meth:`problems` says what is wrong.

    ``listeners`` gives, each time it is asked, name → whether that port is bound."""

    def __init__(
        self,
        store: Any,
        clock: Any,
        listeners: Callable[[], Mapping[str, bool]],
        max_held_s: float,
        interval_s: float = PROBE_INTERVAL_S,
        stall_s: float = STALL_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._listeners = listeners
        self._max_held_s = max_held_s
        self._interval_s = interval_s
        self._stall_s = stall_s
        self._loop: LoopingCall | None = None
        self._writing_since: float | None = None
        self._write_error: str | None = None
        self._written = False
        self._held_since: dict[str, tuple[str, float]] = {}  # destination → (hold word, first seen)
        self._reading = False

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._probe)
        self._loop.clock = self._clock
        self._loop.start(self._interval_s, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _probe(self) -> None:
        now = self._clock.seconds()
        if self._writing_since is None:
            self._writing_since = now
            d = self._store.kv_put(PROBE_NAMESPACE, "probe", repr(now).encode())
            d.addCallbacks(self._wrote, self._write_failed)
        if not self._reading:
            self._reading = True
            d = self._store.held_destinations()
            d.addCallbacks(self._held, lambda _: None)
            d.addBoth(self._read_done)

    def _wrote(self, _: object) -> None:
        if self._write_error is not None:
            log.warning("readiness: the store takes writes again")
        self._writing_since = None
        self._write_error = None
        self._written = True

    def _write_failed(self, failure: Failure) -> None:
        if self._write_error is None:
            log.error("readiness: the store's probe write failed: %s", failure.getErrorMessage())
        self._writing_since = None
        self._write_error = failure.getErrorMessage()

    def _held(self, held: list[tuple[str, str, float]]) -> None:
        now = self._clock.seconds()
        before = self._held_since
        self._held_since = {
            destination: (word, before[destination][1] if destination in before else now)
            for destination, word, _ in held
        }

    def _read_done(self, _: object) -> None:
        self._reading = False

    def problems(self) -> list[str]:
        """Why the engine is not ready; empty when it is."""
        now = self._clock.seconds()
        found = [
            f"listener {name} is not listening"
            for name, bound in sorted(self._listeners().items())
            if not bound
        ]
        if self._writing_since is not None and now - self._writing_since >= self._stall_s:
            found.append(f"store writer stalled: a write has waited {now - self._writing_since:.0f} s")
        elif self._write_error is not None:
            found.append(f"store not writable: {self._write_error}")
        elif not self._written:
            found.append("store not probed yet")
        for destination, (word, since) in sorted(self._held_since.items()):
            if now - since > self._max_held_s:
                found.append(f"destination {destination} held ({word}) for {now - since:.0f} s")
        return found


class Healthz(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"status": "ok"})


class Readyz(Resource):
    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self._readiness = readiness

    def render_GET(self, request: Request) -> bytes:
        problems = self._readiness.problems()
        if problems:
            return _json(request, 503, {"status": "not ready", "reasons": problems})
        return _json(request, 200, {"status": "ready"})


def _json(request: Request, code: int, document: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(document).encode() + b"\n"
