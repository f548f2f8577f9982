"""Run one step of work on the injected clock: now when woken, else when the step asks.

The delivery queue and the status poller both sleep until their next row is due, wake early
when told new work arrived, and never run two steps at once. Every timer is on the clock
passed in, so tests can drive them with ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from engine.logs import loggable_error

log = logging.getLogger(__name__)

Step = Callable[[], "Deferred[float | None] | float | None"]
"""Does one round of work; returns seconds until it wants to run again (None: only on wake)."""


class Pump:
    """Calls ``step`` repeatedly on ``clock``; ``wake()`` runs it as soon as possible."""

    def __init__(self, name: str, clock: IReactorTime, step: Step, *, retry_after_error_s: float = 5.0):
        self.name = name
        self._clock = clock
        self._step = step
        self._retry_after_error_s = retry_after_error_s
        self._timer: IDelayedCall | None = None
        self._running: Deferred[None] | None = None
        self._again = False
        self._stopped = True

    def start(self) -> None:
        self._stopped = False
        self.wake()

    def wake(self) -> None:
        """Run the step soon; if it is running now, run it once more when it finishes."""
        if self._running is not None:
            self._again = True
        else:
            self.run_in(0)

    def run_in(self, delay_s: float) -> None:
        """Run the step after ``delay_s`` unless a run is already due sooner."""
        if self._stopped:
            return
        due = self._clock.seconds() + max(delay_s, 0.0)
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= due:
                return
            self._timer.cancel()
        self._timer = self._clock.callLater(max(delay_s, 0.0), self._run)

    def stop(self) -> Deferred[None]:
        """No more runs; fires when the step running now (if any) has finished."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        running, done = self._running, Deferred()
        if running is None:
            return succeed(None)
        running.addBoth(lambda _: done.callback(None))
        return done

    def _run(self) -> None:
        self._timer = None
        if self._stopped or self._running is not None:
            return
        self._again = False
        d = self._running = maybeDeferred(self._step)
        d.addCallbacks(self._finished, self._failed)

    def _finished(self, delay_s: float | None) -> None:
        self._running = None
        if self._again:
            self.run_in(0)
        elif delay_s is not None:
            self.run_in(delay_s)

    def _failed(self, failure: Failure) -> None:
        self._running = None
        log.error(
            "%s: step failed, trying again in %g s: %s",
            self.name,
            self._retry_after_error_s,
            loggable_error(failure.value),
        )
        self.run_in(self._retry_after_error_s)
