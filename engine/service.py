"""Assemble the running engine from channel configurations, under one parent service.

For each channel: its destinations (mapping + vendor client), the :class:`Screen` of checks,
the :class:`Source`, the MLLP listener (TLS-wrapped when the channel asks), a delivery queue
per destination, and the status reporter that sends HL7 back to the sender. Tokens the
vendors need are read from the store (:mod:`engine.delivery.tokens`); what each destination
type needs is asked of its plugin (:mod:`engine.destinations.registry`).

With a ``webhooks`` endpoint the engine also serves the vendors' webhooks, one URL per
channel and destination (:mod:`engine.status.routes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource

from engine.channel.config import Channel
from engine.channel.config import Destination as DestinationConfig
from engine.delivery import DeliveryQueue, DeliveryService
from engine.delivery.tokens import StoredTokens
from engine.destinations import TokenProvider
from engine.destinations.registry import destination_class, plugin
from engine.destinations.transport import pooled_session
from engine.leases import Heartbeat
from engine.mapping import load_mapping
from engine.mllp.server import Limits, MLLPServerFactory
from engine.node import DEFAULT_LEASE_S
from engine.screen import Route, Screen, Validator
from engine.source import Source
from engine.status import webhook_server
from engine.status.reporter import StatusReporter
from engine.status.routes import webhook_routes
from engine.status.webhook_limits import ServerLimits
from engine.store import Store
from engine.store.retention import Pruner
from engine.tls import TLSSettings, wrap_server_factory
from engine.validation_pool import ValidationPool

log = logging.getLogger(__name__)


def limits(channel: Channel) -> Limits:
    source = channel.source
    return Limits(
        max_message_bytes=source.max_message_bytes,
        idle_timeout_s=source.idle_timeout_s,
        frame_timeout_s=source.frame_timeout_s,
        max_connections=source.max_connections,
        max_pending_frames=source.max_pending_frames,
        mllp_release2=source.mllp_release2,
    )


def routes(channel: Channel, clock: Callable[[], float], tokens: StoredTokens | None = None) -> list[Route]:
    """Each destination with its compiled mapping and a vendor client on its own HTTP session,
    which keeps a connection open for each delivery thread and the status poller's."""
    return [
        Route(
            config.name,
            load_mapping(config.mapping),
            destination_class(config.type)(
                config.settings,
                pooled_session(config.concurrency + 1),
                token_provider=token_provider(channel, config, tokens),
                clock=clock,
            ),
        )
        for config in channel.destinations
    ]


def token_provider(
    channel: Channel, config: DestinationConfig, tokens: StoredTokens | None
) -> TokenProvider | None:
    """The stored token the destination type reads (``DestinationPlugin.token``), if any."""
    provide = plugin(config.type).token
    if tokens is None or provide is None:
        return None
    return provide(channel, config, tokens)


def prepare_queues(reactor, queues: Iterable[DeliveryQueue]) -> defer.Deferred[None]:
    """Each plugin's ``on_start`` for each of its queues, one after the other."""
    d: defer.Deferred[None] = defer.succeed(None)
    for queue in queues:
        on_start = plugin(queue.config.type).on_start
        if on_start is not None:
            d.addCallback(lambda _, on_start=on_start, queue=queue: on_start(reactor, queue))
    return d


def validation_pool(reactor, channel: Channel) -> ValidationPool | None:
    """The channel's hl7apy validation workers (none start before a message needs one), or
    None when the channel does not validate."""
    if channel.source.validation.level == "off":
        return None
    return ValidationPool(reactor, channel.name, channel.source.validation)


def build_source(
    reactor,
    channel: Channel,
    store: Store,
    channel_routes: Sequence[Route],
    on_queued: Callable[[tuple[str, ...]], None] | None = None,
    validator: Validator | None = None,
) -> Source:
    """The channel's source; a channel that validates needs its ``validator``
    (:func:`validation_pool`, stopped by whoever runs it)."""
    if validator is None and channel.source.validation.level != "off":
        raise ValueError(f"channel {channel.name} validates messages: pass its validation pool")
    return Source(
        channel.name,
        store,
        reactor,
        Screen(channel, channel_routes, validator),
        charset=channel.source.charset,
        force_charset=channel.source.force_charset,
        strict_charset=channel.source.strict_charset,
        ack_mode=channel.ack.mode,
        reject_duplicates=channel.ack.duplicates == "reject",
        duplicate_window_s=channel.ack.duplicate_window_s,
        on_queued=on_queued,
    )


class ListenerService(Service):
    """A listening port (a channel's MLLP listener, the webhooks); ``port`` once started."""

    def __init__(self, name: str, listen: Callable[[], defer.Deferred[IListeningPort]]) -> None:
        self.listen = listen
        self.port: IListeningPort | None = None
        self.listening: defer.Deferred[IListeningPort] = defer.Deferred()
        self.setName(name)

    def startService(self) -> None:
        super().startService()
        d = self.listen()
        d.addCallback(self._listening)
        d.chainDeferred(self.listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        return self.port.stopListening() if self.port is not None else None


def build_listener(reactor, channel: Channel, source: Source) -> ListenerService:
    factory = MLLPServerFactory(channel.name, source, reactor, limits(channel))
    tls = channel.source.tls
    served = factory
    if tls is not None:
        settings = TLSSettings(tls.cert_file, tls.key_file, tls.ca_file, tls.require_client_cert)
        served = wrap_server_factory(factory, settings)
    endpoint = serverFromString(reactor, channel.source.listen)
    return ListenerService(f"{channel.name}/listener", lambda: endpoint.listen(served))


class Running(Service):
    """Runs something with ``start()`` and ``stop()`` (the status reporter, a reply poller)
    for as long as the engine runs."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def startService(self) -> None:
        super().startService()
        self.runner.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.maybeDeferred(self.runner.stop)


@dataclass
class Engine:
    """The running parts, for the CLI and tests to reach into."""

    reactor: Any
    service: MultiService
    deliveries: DeliveryService
    reporter: StatusReporter
    listeners: dict[str, ListenerService]
    tokens: StoredTokens
    webhooks: ListenerService | None = None
    webhook_resources: dict[str, Resource] = field(default_factory=dict)  # URL path → webhook
    webhook_scheme: str = "http"
    """How vendors reach the webhooks: https when served over TLS (``webhook_tls`` or ``ssl:``)."""

    def start(self) -> defer.Deferred[None]:
        """Load the stored tokens, let each plugin prepare its queues (``on_start``), then
        start everything; fires once every listener is listening (or fails if one cannot)."""
        d = self.tokens.load()
        d.addCallback(lambda _: prepare_queues(self.reactor, self.deliveries.queues.values()))
        d.addCallback(lambda _: self._start_services())
        return d

    def _start_services(self) -> defer.Deferred[None]:
        self.service.startService()
        ports = [*self.listeners.values(), *([self.webhooks] if self.webhooks else [])]
        waiting = [listener.listening for listener in ports]
        return defer.gatherResults(waiting, consumeErrors=True).addCallback(lambda _: None)

    def stop(self) -> defer.Deferred[None]:
        return defer.maybeDeferred(self.service.stopService)

    def port(self, channel: str) -> int:
        """The TCP port a channel's listener got (useful with ``tcp:0``)."""
        return self.listeners[channel].port.getHost().port

    def webhook_port(self) -> int:
        """The TCP port the webhooks are served on."""
        return self.webhooks.port.getHost().port


def build_engine(
    reactor,
    channels: Sequence[Channel],
    store: Store,
    *,
    hold_deliveries: bool = False,
    webhook_endpoint: str | None = None,
    webhook_tls: TLSSettings | None = None,
    webhook_limits: ServerLimits | None = None,
    prune_after_s: float | None = None,
    lease_s: float | None = None,
    on_replaced: Callable[[], object] | None = None,
) -> Engine:
    """Every enabled channel: listener → source → store, its destination queues, its reports.

    With ``hold_deliveries`` messages are received, stored and ACKed, and their deliveries
    wait QUEUED until the engine runs without it. ``webhook_endpoint`` is the server endpoint (such as
    ``tcp:8480:interface=127.0.0.1``) the vendor webhooks are served on, over TLS with
    ``webhook_tls``, within ``webhook_limits``. With ``prune_after_s`` the store forgets, every
    hour, what is older and needs nothing more (:mod:`engine.store.retention`). With
    ``lease_s`` the store was opened as one node among several (:mod:`engine.node`): the
    engine vouches for it (``on_replaced`` is called if another process took its name), and
    leases its sends and its channels' outboxes for ``lease_s`` at a time. Raises
    ConfigError when a webhook's settings cannot be used (a key that cannot be loaded, say) or
    a webhook would take anyone's POST.
    """
    enabled = [channel for channel in channels if channel.enabled]
    service = MultiService()
    if lease_s is not None:  # first in, last out: it stops once every send has ended
        Heartbeat(store, reactor, lease_s, on_replaced or reactor.stop).setServiceParent(service)
    tokens = StoredTokens(store, reactor)
    tokens.setServiceParent(service)
    reporter = StatusReporter(store, reactor, enabled, lease_s=lease_s)
    Running(reporter).setServiceParent(service)
    if prune_after_s is not None:
        Pruner(store, reactor, prune_after_s).setServiceParent(service)
    deliveries = DeliveryService(
        reactor=reactor, clock=reactor, store=store, listener=reporter, lease_s=lease_s or DEFAULT_LEASE_S
    )
    if not hold_deliveries:
        deliveries.setServiceParent(service)
        store.on_queued(lambda destination: deliveries.wake((destination,)))  # by another node
    listeners = {}
    for channel in enabled:
        channel_routes = routes(channel, reactor.seconds, tokens)
        deliveries.add_channel(channel, channel_routes)
        validator = validation_pool(reactor, channel)
        if validator is not None:
            validator.setServiceParent(service)
        source = build_source(
            reactor, channel, store, channel_routes, on_queued=deliveries.wake, validator=validator
        )
        listeners[channel.name] = build_listener(reactor, channel, source)
        listeners[channel.name].setServiceParent(service)
    served_routes, pollers = webhook_routes(
        reactor, enabled, store, reporter, deliveries.tracker, serve=webhook_endpoint is not None
    )
    for poller in pollers:
        Running(poller).setServiceParent(service)
    served = None
    scheme = "http"
    if webhook_endpoint is not None:
        scheme = "https" if webhook_tls is not None or webhook_endpoint.startswith("ssl:") else "http"
        served = ListenerService(
            "webhooks",
            lambda: webhook_server.listen(
                reactor, webhook_endpoint, served_routes, webhook_tls, webhook_limits
            ),
        )
        served.setServiceParent(service)
    resources = {route.path: route.resource for route in served_routes}
    return Engine(reactor, service, deliveries, reporter, listeners, tokens, served, resources, scheme)
