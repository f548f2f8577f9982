"""A named thread pool for the blocking parts of delivery (vendor HTTP, mapping big messages).

Each destination gets its own pool, sized to its concurrency, so a vendor that hangs can only
use up its own threads and never delays another vendor's deliveries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Workers:
    """``run(fn, ...)`` in one of ``size`` threads; the result comes back in the reactor thread."""

    def __init__(self, reactor: IReactorFromThreads, name: str, size: int) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=size, name=name)

    def start(self) -> None:
        self._pool.start()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)

    def stop(self) -> None:
        """Join the threads; call when no work is in flight (the join is then immediate).

        Stopping twice is harmless (a queue stopped by hand, then by its service parent)."""
        if not self._pool.joined:
            self._pool.stop()
