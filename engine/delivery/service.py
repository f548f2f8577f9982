"""Every destination queue and status poller of the engine under one Twisted service.

:class:`DeliveryService` is what the engine assembly adds per run: ``add_channel`` builds a
:class:`DeliveryQueue` for each destination (and a :class:`StatusPoller` where the vendor has
a status API), all sharing one :class:`StatusTracker` so webhooks can find any delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime

from engine.channel.config import Channel
from engine.delivery.conversations import Conversations
from engine.delivery.poller import StatusPoller
from engine.delivery.queue import DeliveryQueue
from engine.delivery.tracker import StatusTracker
from engine.delivery.transitions import TransitionListener
from engine.destinations.registry import plugin
from engine.node import DEFAULT_LEASE_S
from engine.screen import Route
from engine.store.base import Store


class DeliveryService(MultiService):
    """Queues by destination name, their pollers, and the shared tracker."""

    def __init__(
        self,
        *,
        reactor: IReactorFromThreads,
        clock: IReactorTime,
        store: Store,
        listener: TransitionListener | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        super().__init__()
        self._lease_s = lease_s
        self._reactor = reactor
        self._clock = clock
        self._store = store
        self._listener = listener
        self.tracker = StatusTracker(store, clock, listener)
        self.queues: dict[str, DeliveryQueue] = {}
        self.pollers: dict[str, StatusPoller] = {}

    def add_channel(self, channel: Channel, routes: Sequence[Route]) -> None:
        """A queue per destination of the channel (``routes`` as built for its screen)."""
        by_name = {route.name: route for route in routes}
        for config in channel.destinations:
            route = by_name[config.name]
            destination = route.destination
            queue = DeliveryQueue(
                channel=channel.name,
                config=config,
                destination=destination,
                mapping=route.mapping,
                store=self._store,
                reactor=self._reactor,
                clock=self._clock,
                listener=self._listener,
                lease_s=self._lease_s,
                conversations=Conversations(self._store, destination.kind)
                if plugin(config.type).conversations
                else None,
            )
            queue.setServiceParent(self)
            self.queues[config.name] = queue
            if destination.has_status_api and config.status.poll:
                poller = StatusPoller(
                    config=config,
                    destination=destination,
                    store=self._store,
                    tracker=self.tracker,
                    reactor=self._reactor,
                    clock=self._clock,
                )
                poller.setServiceParent(self)
                self.pollers[config.name] = poller
                self.tracker.track(config.name)

    def wake(self, destinations: Iterable[str]) -> None:
        """New deliveries were stored for these destinations (call after the store commit)."""
        for name in destinations:
            queue = self.queues.get(name)
            if queue is not None:
                queue.wake()
