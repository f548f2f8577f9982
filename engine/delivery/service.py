"""Every destination queue and status poller of the engine under one Twisted service.

:class:`DeliveryService` is what the engine assembly adds per run: ``build_channel`` builds a
:class:`DeliveryQueue` for each destination (and a :class:`StatusPoller` where the vendor has
a status API), all sharing one :class:`StatusTracker` so webhooks can find any delivery;
``add`` serves them and ``remove_channel`` stops them again (a reloaded channel).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime

from engine.channel.config import Channel
from engine.delivery.conversations import Conversations
from engine.delivery.poller import StatusPoller
from engine.delivery.queue import DeliveryQueue
from engine.delivery.tracker import StatusTracker
from engine.delivery.transitions import TransitionListener
from engine.destinations.registry import plugin
from engine.metrics import Metrics
from engine.node import DEFAULT_LEASE_S
from engine.screen import Route
from engine.store.base import Store


@dataclass
class ChannelQueues:
    """One channel's queues and status pollers, built before they are added and started."""

    channel: str
    queues: list[DeliveryQueue] = field(default_factory=list)
    pollers: list[StatusPoller] = field(default_factory=list)


class DeliveryService(MultiService):
    """Queues by destination name, their pollers, and the shared tracker."""

    def __init__(
        self,
        *,
        reactor: IReactorFromThreads,
        clock: IReactorTime,
        store: Store,
        listener: TransitionListener | None = None,
        metrics: Metrics | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        super().__init__()
        self._lease_s = lease_s
        self._reactor = reactor
        self._clock = clock
        self._store = store
        self._listener = listener
        self._metrics = metrics or Metrics()
        self.tracker = StatusTracker(store, clock, listener)
        self.queues: dict[str, DeliveryQueue] = {}
        self.pollers: dict[str, StatusPoller] = {}

    def build_channel(self, channel: Channel, routes: Sequence[Route]) -> ChannelQueues:
        """A queue per destination of the channel (``routes`` as built for its screen), and a
        poller where the vendor has a status API; nothing is started or added yet (:meth:`add`)."""
        by_name = {route.name: route for route in routes}
        built = ChannelQueues(channel.name)
        for config in channel.destinations:
            route = by_name[config.name]
            destination = route.destination
            spec = plugin(config.type)
            account_rate = spec.account_rate
            built.queues.append(
                DeliveryQueue(
                    channel=channel.name,
                    config=config,
                    destination=destination,
                    mapping=route.mapping,
                    store=self._store,
                    reactor=self._reactor,
                    clock=self._clock,
                    listener=self._listener,
                    conversations=Conversations(self._store, destination.kind)
                    if spec.conversations
                    else None,
                    lease_s=self._lease_s,
                    metrics=self._metrics.destination(channel.name, config.name),
                    account=account_rate(destination.settings) if account_rate else None,
                )
            )
            if destination.has_status_api and config.status.poll:
                built.pollers.append(
                    StatusPoller(
                        config=config,
                        destination=destination,
                        store=self._store,
                        tracker=self.tracker,
                        reactor=self._reactor,
                        clock=self._clock,
                    )
                )
        return built

    def add(self, built: ChannelQueues) -> None:
        """Serve a channel's queues and pollers; they start at once if this service runs."""
        for queue in built.queues:
            queue.setServiceParent(self)
            self.queues[queue.name] = queue
        for poller in built.pollers:
            poller.setServiceParent(self)
            self.pollers[poller.config.name] = poller
            self.tracker.track(poller.config.name)

    def remove_channel(self, channel: str) -> Deferred[None]:
        """Stop the channel's queues and pollers; fires once the sends in flight have finished.
        What is still QUEUED waits in the store for the channel's next queues."""
        stopping = []
        for name, queue in list(self.queues.items()):
            if queue.channel != channel:
                continue
            del self.queues[name]
            stopping.append(maybeDeferred(self.removeService, queue))
            poller = self.pollers.pop(name, None)
            if poller is not None:
                self.tracker.untrack(name)
                stopping.append(maybeDeferred(self.removeService, poller))
        return gatherResults(stopping, consumeErrors=True).addCallback(lambda _: None)

    def wake(self, destinations: Iterable[str]) -> None:
        """New deliveries were stored for these destinations (call after the store commit)."""
        for name in destinations:
            queue = self.queues.get(name)
            if queue is not None:
                queue.wake()

    def queued_elsewhere(self, destination: str | None) -> None:
        """Another node queued deliveries for ``destination``; ``None``: for any destination
        (the news was lost, see :meth:`engine.store.base.Store.on_queued`)."""
        self.wake(list(self.queues) if destination is None else (destination,))
