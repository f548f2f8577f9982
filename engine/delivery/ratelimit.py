"""Rate limits booked in the store, so they hold across restarts and engines.

A send counts against its destination's ``rate_limit`` and, where the vendor plugin declares
one (:attr:`engine.destinations.plugin.DestinationPlugin.account_rate`), against the limit of
the vendor account it uses, which every destination with the same account shares. Each limit
is a bucket row of the store (:mod:`engine.store.rate_buckets`); :meth:`Store.book_sends`
books a send against all of them in one transaction and hands out the time it may start.

A queue books a send only once a request may start (it holds one of its ``concurrency``
places), so a booked time is never missed by waiting for another request to end. Sends that
ask in the same reactor turn share one booking, one store round trip. A booked time this
process stalled past is booked again rather than used late beside the next ones, and one that
a stop or crash leaves unused is lost: the limit errs on the safe side. The queue books a
send's first request; a destination whose send makes more (a Qliq message with several
attachments, KPN's ``Location`` read) books each further one from its worker thread through
``Destination.pace``. Engines sharing a store must have synchronised clocks (NTP), as the
booked times are wall-clock times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from engine.store.base import Store
from engine.store.rate_buckets import RateBucket

LOOKAHEAD_S = 0.5
"""How far ahead a queue claims and books sends: enough that the next send is mapped and
booked before its time comes, little enough that a slow limit does not hold deliveries
SENDING (away from other nodes, and from a stop) for long."""


class Pacer:
    """``wait()`` fires when one more send to the destination may start."""

    def __init__(self, store: Store, buckets: Sequence[RateBucket], clock: IReactorTime) -> None:
        self._store = store
        self._buckets = tuple(buckets)
        self._stall_s = min(bucket.interval_s for bucket in buckets)
        self._clock = clock
        self._asking: list[Deferred[None]] = []
        self._booked_waits: dict[Deferred[None], IDelayedCall] = {}
        self._stopped = False
        self.ahead = min(bucket.burst + math.ceil(bucket.per_second * LOOKAHEAD_S) for bucket in buckets)
        """How many sends may wait for their time at once."""

    def wait(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._ask(d)
        return d

    def stop(self) -> None:
        """The sends still waiting will not start: their waits fail with CancelledError."""
        self._stopped = True
        waiting, self._asking = [*self._asking, *self._booked_waits], []
        for call in self._booked_waits.values():
            call.cancel()
        self._booked_waits.clear()
        for d in waiting:
            d.errback(CancelledError())

    def _ask(self, d: Deferred[None]) -> None:
        if self._stopped:
            d.errback(CancelledError())
            return
        self._asking.append(d)
        if len(self._asking) == 1:
            self._clock.callLater(0, self._book)

    def _book(self) -> None:
        asking, self._asking = self._asking, []
        d = self._store.book_sends(self._buckets, self._clock.seconds(), len(asking))
        d.addCallbacks(self._booked, self._failed, callbackArgs=(asking,), errbackArgs=(asking,))

    def _booked(self, times: list[float], asking: list[Deferred[None]]) -> None:
        answered = self._clock.seconds()
        for d, at in zip(asking, times, strict=True):
            if self._stopped:
                d.errback(CancelledError())
            else:
                call = self._clock.callLater(max(0.0, at - answered), self._due, d, max(at, answered))
                self._booked_waits[d] = call

    def _due(self, d: Deferred[None], at: float) -> None:
        """Send now, unless this process stalled (swapping, a paused VM) past the booked time:
        then book again, so the sends that waited do not all go at once."""
        del self._booked_waits[d]
        if self._clock.seconds() - at > self._stall_s:
            self._ask(d)
        else:
            d.callback(None)

    def _failed(self, failure: Failure, asking: list[Deferred[None]]) -> None:
        for d in asking:
            d.errback(failure)
