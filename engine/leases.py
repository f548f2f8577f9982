"""The leases a node keeps alive on the reactor: its heartbeat, and named leases.

See :mod:`engine.node` for what a node and its incarnation are. A lease is renewed every
``lease_s / RENEW_FRACTION``, so two renewals may fail before it runs out; a holder acts only
while its own clock says the lease still holds, from the moment it asked for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from engine.logs import loggable_error
from engine.node import RENEW_FRACTION, TURN_SHARE

log = logging.getLogger(__name__)


def take_turn(store, clock: IReactorTime, job: str, period_s: float) -> Deferred[bool]:
    """Whether this node runs ``job`` (a periodic pass every node schedules) this time: the
    one that takes the named lease ``job:<job>`` for most of ``period_s`` does; the others skip."""
    now = clock.seconds()
    return store.take_lease(f"job:{job}", now, now + TURN_SHARE * period_s)


class Heartbeat(Service):
    """Renews this node's row every ``lease_s / RENEW_FRACTION``; ``on_replaced`` is called
    if another process took the name over (this one was presumed dead: it must stop)."""

    def __init__(self, store, clock: IReactorTime, lease_s: float, on_replaced: Callable[[], object]) -> None:
        self._store = store
        self._clock = clock
        self._lease_s = lease_s
        self._on_replaced = on_replaced
        self._loop = LoopingCall(self._beat)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._lease_s / RENEW_FRACTION, now=False)

    def stopService(self) -> Deferred[None] | None:
        if not self._loop.running:  # never started (the store did not open), or replaced
            return super().stopService()
        super().stopService()
        self._loop.stop()
        d = self._store.node_stopped()
        return d.addErrback(lambda f: log.error("node stop not recorded: %s", loggable_error(f.value)))

    def _beat(self) -> Deferred[None]:
        d = self._store.node_heartbeat(self._clock.seconds() + self._lease_s)
        d.addCallbacks(self._answered, self._failed)
        return d

    def _answered(self, still_ours: bool) -> None:
        if not still_ours and self._loop.running:
            self._loop.stop()  # once: from here on the name is the other process's
            log.critical("another process took over this node's name: this one stops now")
            self._on_replaced()

    def _failed(self, failure) -> None:
        log.error("node heartbeat failed (the store did not answer): %s", loggable_error(failure.value))


class NamedLease:
    """A named lease (``leases`` table) held while this node does one job that must run on
    one node at a time, such as sending a channel's outbox: :meth:`take` it when free or run
    out; while held it is renewed every ``lease_s / RENEW_FRACTION``; :meth:`release` it at stop.
    """

    def __init__(self, store, clock: IReactorTime, name: str, lease_s: float) -> None:
        self.name = name
        self._store = store
        self._clock = clock
        self._lease_s = lease_s
        self._until = 0.0  # until when this node surely holds it (its own clock)
        self._renewal = LoopingCall(self._renew)
        self._renewal.clock = clock

    def held(self) -> bool:
        return self._clock.seconds() < self._until

    def take(self) -> Deferred[bool]:
        """Fires True when this node holds the lease (it already did, or it was free)."""
        if self.held():
            return succeed(True)
        return self._ask()

    def release(self) -> Deferred[None]:
        if self._renewal.running:
            self._renewal.stop()
        if self._until == 0.0:
            return succeed(None)
        self._until = 0.0
        return self._store.release_lease(self.name).addErrback(self._release_failed)

    def _ask(self) -> Deferred[bool]:
        asked_at = self._clock.seconds()
        d = self._store.take_lease(self.name, asked_at, asked_at + self._lease_s)
        return d.addCallback(self._answered, asked_at)

    def _answered(self, taken: bool, asked_at: float) -> bool:
        if taken:
            self._until = asked_at + self._lease_s
            if not self._renewal.running:
                self._renewal.start(self._lease_s / RENEW_FRACTION, now=False)
        else:
            self._until = 0.0
            if self._renewal.running:
                self._renewal.stop()
        return taken

    def _renew(self) -> Deferred[None]:
        d = self._ask()
        d.addCallbacks(self._renewed, self._renewal_failed)
        return d

    def _renewed(self, taken: bool) -> None:
        if not taken:
            log.error("lease %s passed to another node (this one stalled longer than the lease)", self.name)

    def _renewal_failed(self, failure) -> None:
        log.error("renewing lease %s failed: %s", self.name, loggable_error(failure.value))

    def _release_failed(self, failure) -> None:
        """A release only lets another node in sooner: when it fails the lease runs out, and
        whoever waits for the release (a sender restarting) goes on."""
        log.warning("releasing lease %s failed: %s", self.name, loggable_error(failure.value))
