"""A destination's rate limit, booked in the store so it holds across restarts and engines.

The limit is a token bucket of ``per_second`` tokens and ``burst`` capacity, kept in its
equivalent form (GCRA, the "virtual scheduling" of ATM cell rate policing): one time per
destination, ``booked_until``, up to which send times have been handed out. Booking ``n``
sends moves it on by ``n / per_second`` from itself or from now, whichever is later, in one
UPDATE of the store; the sends then start at their booked times, ``burst - 1`` intervals
early at most. Whatever the number of queues, restarts or engines on the store, the send
times handed out never exceed ``burst + per_second × t`` in any ``t`` seconds.

A queue books a send only once a request may start (it holds one of its ``concurrency``
places), so a booked time is never missed by waiting for another request to end. Sends that
ask in the same reactor turn share one booking, one store round trip. A booked time this
process stalled past is booked again rather than used late beside the next ones, and one that
a stop or crash leaves unused is lost: the limit errs on the safe side. It counts sends (a
Qliq send with attachments makes several requests). Engines sharing a
store must have synchronised clocks (NTP), as the booked times are wall-clock times.
"""

from __future__ import annotations

import math

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from engine.store.base import Store


def send_times(booked_until: float, now: float, count: int, interval_s: float, burst: int) -> list[float]:
    """When each of ``count`` sends booked up to ``booked_until`` may start."""
    first = booked_until - count * interval_s - (burst - 1) * interval_s
    return [max(now, first + n * interval_s) for n in range(count)]


LOOKAHEAD_S = 0.5
"""How far ahead a queue claims and books sends: enough that the next send is mapped and
booked before its time comes, little enough that a slow limit does not hold deliveries
SENDING (away from other nodes, and from a stop) for long."""


class Pacer:
    """``wait()`` fires when one more send to the destination may start."""

    def __init__(
        self, store: Store, destination: str, per_second: float, burst: int, clock: IReactorTime
    ) -> None:
        self._store = store
        self._destination = destination
        self._interval_s = 1.0 / per_second
        self._burst = burst
        self._clock = clock
        self._asking: list[Deferred[None]] = []
        self._booked_waits: dict[Deferred[None], IDelayedCall] = {}
        self._stopped = False
        self.ahead = burst + math.ceil(per_second * LOOKAHEAD_S)
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
        now = self._clock.seconds()
        d = self._store.book_sends(self._destination, now, len(asking), self._interval_s)
        d.addCallbacks(self._booked, self._failed, callbackArgs=(now, asking), errbackArgs=(asking,))

    def _booked(self, booked_until: float, now: float, asking: list[Deferred[None]]) -> None:
        times = send_times(booked_until, now, len(asking), self._interval_s, self._burst)
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
        if self._clock.seconds() - at > self._interval_s:
            self._ask(d)
        else:
            d.callback(None)

    def _failed(self, failure: Failure, asking: list[Deferred[None]]) -> None:
        for d in asking:
            d.errback(failure)
