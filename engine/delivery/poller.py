"""Asks one vendor for the status of its SENT deliveries when the stored schedule says so.

One :class:`StatusPoller` per destination with a status API, on its own thread, so a slow
status API delays neither sending nor another vendor's polls. What a status means is decided
by the shared :class:`~engine.delivery.tracker.StatusTracker`; when to ask is
:mod:`engine.delivery.polling`.
"""

from __future__ import annotations

import logging

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime

from engine.channel.config import Destination as DestinationConfig
from engine.delivery import polling
from engine.delivery.pump import Pump
from engine.delivery.tracker import StatusTracker
from engine.delivery.workers import Workers
from engine.destinations.base import Destination
from engine.logs import loggable_error
from engine.store.base import StatusPoll, Store

log = logging.getLogger(__name__)

DEFAULT_IDLE_S = 5.0
DEFAULT_BATCH = 16


class StatusPoller(Service):
    """Polls ``destination.check_status`` for due rows of the ``status_polls`` table."""

    def __init__(
        self,
        *,
        config: DestinationConfig,
        destination: Destination,
        store: Store,
        tracker: StatusTracker,
        reactor: IReactorFromThreads,
        clock: IReactorTime,
        idle_s: float = DEFAULT_IDLE_S,
        batch: int = DEFAULT_BATCH,
        lease_s: float = 300.0,
    ) -> None:
        self.name = f"{config.name}/status"
        self.config = config
        self.destination = destination
        self._store = store
        self._tracker = tracker
        self._clock = clock
        self._idle_s = idle_s
        self._batch = batch
        self._lease_s = lease_s
        self._workers = Workers(reactor, f"status-{config.name}", 1)
        self._pump = Pump(f"status poller {config.name}", clock, self._step)

    def start(self) -> None:
        self._workers.start()
        self._pump.start()

    def wake(self) -> None:
        self._pump.wake()

    def stop(self) -> Deferred[None]:
        return self._pump.stop().addCallback(lambda _: self._workers.stop())

    def startService(self) -> None:
        super().startService()
        self.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.stop()

    def _step(self) -> Deferred[float]:
        now = self._clock.seconds()
        d = self._store.claim_status_polls(self.config.name, now, self._batch, self._lease_s)
        d.addCallback(lambda polls: DeferredList([self._poll(p) for p in polls]))
        d.addCallback(lambda _: self._store.next_status_poll_due(self.config.name))
        return d.addCallback(self._sleep_until)

    def _sleep_until(self, due: float | None) -> float:
        if due is None:
            return self._idle_s
        return min(max(due - self._clock.seconds(), 0.0), self._idle_s)

    @inlineCallbacks
    def _poll(self, poll: StatusPoll):
        kind = self.destination.kind
        try:
            updates = yield self._workers.run(self.destination.check_status, poll.remote_id)
        except Exception as exc:
            log.warning(  # by type: a vendor's error text can quote the message
                "status poller %s: query for delivery %d failed: %s",
                self.config.name,
                poll.delivery_id,
                loggable_error(exc),
            )
            state = None
        else:
            state = yield self._tracker.apply_updates(poll.delivery_id, updates)
        if state is not None and state in polling.final_states(kind):
            yield self._store.end_status_poll(poll.delivery_id)
            return
        now = self._clock.seconds()
        next_at = polling.next_poll_at(kind, self.config.status, poll, now)
        if next_at is None:
            log.info(
                "status poller %s: delivery %d reached no final state before give-up; polling stops",
                self.config.name,
                poll.delivery_id,
            )
            yield self._store.end_status_poll(poll.delivery_id)
        else:
            yield self._store.reschedule_status_poll(poll.delivery_id, next_at)
