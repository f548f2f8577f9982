"""PostgresStore: the :class:`engine.store.base.Store` on a PostgreSQL database several engine
nodes share, with wake-ups from the other nodes through LISTEN/NOTIFY."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from engine.store.postgres import QUEUED_CHANNEL, connect, error_text, redacted
from engine.store.threaded import StoreReactor, ThreadedStore

log = logging.getLogger(__name__)


class PostgresStore(ThreadedStore):
    """The durable store on PostgreSQL at ``url``. ``durability="full"`` (the default) commits
    with ``synchronous_commit = on``; ``"normal"`` with ``off`` (a server crash may lose the
    last moments of commits, a killed engine loses nothing)."""

    def __init__(self, url: str, *, reactor: StoreReactor, **options: Any) -> None:
        super().__init__(url, reactor=reactor, **options)
        self._listener = QueuedListener(url, reactor)

    def start(self) -> Deferred[None]:
        d = super().start()
        d.addCallback(lambda _: self._write(_backend_pid))
        d.addCallback(self._listener.start)
        return d

    def on_queued(self, callback: Callable[[str | None], None]) -> None:
        self._listener.subscribers.append(callback)

    def close(self) -> Deferred[None]:
        self._listener.stop()
        return super().close()


def _backend_pid(db: Any) -> int:
    return db.connection.backend_pid


class QueuedListener:
    """A thread with its own connection that LISTENs for the store's NOTIFYs and hands each
    destination name to the subscribers in the reactor thread. It reconnects after a failure;
    what was announced while it had no LISTEN in place is lost, so once it listens again it
    hands the subscribers ``None``: look at every destination.

    With no subscriber (a node that holds its deliveries) nothing is handed on, and the reactor
    is not woken: a subscriber hears only of what is queued after it subscribed."""

    POLL_S = 0.5  # how long a wait lasts before the thread looks whether it should stop
    RECONNECT_S = 1.0

    def __init__(self, url: str, reactor: StoreReactor) -> None:
        self.url = url
        self.reactor = reactor
        self.subscribers: list[Callable[[str | None], None]] = []
        self._stopping = threading.Event()
        self._started: Deferred[None] | None = None
        self._own_pid = 0

    def start(self, own_pid: int = 0) -> Deferred[None]:
        """Fires once the first LISTEN is in place (or failed): no NOTIFY after it is missed, or
        if one is (a failure), the subscribers hear ``None`` once the next LISTEN is in place.

        NOTIFYs from ``own_pid`` (this node's writer) are not passed on: this node's queues
        already know what it queued, and the reactor is not woken for them."""
        self._own_pid = own_pid
        self._started = Deferred()
        threading.Thread(target=self._run, name="store-listener", daemon=True).start()
        return self._started

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except Exception as exc:  # the server went away: try again shortly
                log.warning("store: listening for other nodes failed (%s); reconnecting", error_text(exc))
            self._fire_started()  # a failed first try holds up no start: the next LISTEN tells all
            self._stopping.wait(self.RECONNECT_S)

    def _listen(self) -> None:
        conn = connect(self.url)
        try:
            raw = conn.raw
            raw.execute(f"LISTEN {QUEUED_CHANNEL}")
            self._now_listening()
            log.debug("store: listening for other nodes on %s", redacted(self.url))
            while not self._stopping.is_set():
                started = time.monotonic()
                for notice in raw.notifies(timeout=self.POLL_S):
                    if notice.pid != self._own_pid and self.subscribers:
                        self.reactor.callFromThread(self._tell, notice.payload)
                    if time.monotonic() - started > self.POLL_S:
                        break
        finally:
            conn.close()

    def _now_listening(self) -> None:
        """The first LISTEN lets the store's start go on; a later one ends a gap in which
        NOTIFYs went nowhere: every subscriber looks at every destination (what a claim after
        this LISTEN misses, a NOTIFY brings)."""
        if self._started is not None:
            self._fire_started()
        elif self.subscribers:
            self.reactor.callFromThread(self._tell, None)

    def _fire_started(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            self.reactor.callFromThread(started.callback, None)

    def _tell(self, destination: str | None) -> None:
        for callback in list(self.subscribers):
            try:
                callback(destination)
            except Exception:
                log.exception("store: a queue's wake-up failed")
