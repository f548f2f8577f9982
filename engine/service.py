"""Assemble the running engine from channel configurations, under one parent service.

For each channel: its destinations (mapping + vendor client), the :class:`Screen` of checks,
the :class:`Source`, the MLLP listener (TLS-wrapped when the channel asks), a delivery queue
per destination, and the status reporter that sends HL7 back to the sender. Tokens the
vendors need are read from the store (:mod:`engine.delivery.tokens`); what each destination
type needs is asked of its plugin (:mod:`engine.destinations.registry`).

With a ``webhooks`` endpoint the engine also serves the vendors' webhooks, one URL per
channel and destination (:mod:`engine.status.routes`).

Each channel is a :class:`ChannelUnit`, built, started and stopped on its own, so that
:meth:`Engine.reload` can restart one channel while the others keep their connections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer, threads
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from engine.channel.config import Channel
from engine.channel.config import Destination as DestinationConfig
from engine.delivery import DeliveryQueue, DeliveryService
from engine.delivery.service import ChannelQueues
from engine.delivery.tokens import StoredTokens
from engine.destinations import TokenProvider
from engine.destinations.registry import destination_class, plugin
from engine.destinations.transport import pooled_session
from engine.errors import ConfigError
from engine.leases import Heartbeat
from engine.mapping import Mapping as PayloadMapping
from engine.mapping import load_mapping
from engine.metrics import ChannelMetrics, Metrics, StoreGauges
from engine.mllp.server import Limits, MLLPServerFactory
from engine.node import DEFAULT_LEASE_S
from engine.reload import ChannelLoader, Prepared, Refusal, ReloadReport, plan, prepare, read
from engine.screen import Route, Screen, Validator
from engine.source import Source
from engine.status import webhook_server
from engine.status.reporter import StatusReporter
from engine.status.routes import webhook_routes
from engine.status.webhook_limits import ServerLimits
from engine.status.webhook_server import WebhookSite
from engine.status.webhooks import Route as WebhookRoute
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


def routes(
    channel: Channel,
    clock: Callable[[], float],
    tokens: StoredTokens | None = None,
    mappings: Mapping[str, PayloadMapping] | None = None,
) -> list[Route]:
    """Each destination with its compiled mapping (from ``mappings`` by destination name, when
    given: compiled away from the reactor) and a vendor client on its own HTTP session,
    which keeps a connection open for each delivery thread and the status poller's."""
    return [
        Route(
            config.name,
            mappings[config.name] if mappings is not None else load_mapping(config.mapping),
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
    metrics: ChannelMetrics | None = None,
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
        metrics=metrics,
    )


class ListenerService(Service):
    """A listening port (a channel's MLLP listener, the webhooks); ``port`` while it listens.

    ``drain``, when given, lets the connections it accepted finish what they have read
    (:meth:`MLLPServerFactory.drain`): :meth:`ChannelUnit.drain` calls it once the port is
    closed. Stopping the engine does not wait for it."""

    def __init__(
        self,
        name: str,
        listen: Callable[[], defer.Deferred[IListeningPort]],
        drain: Callable[[], defer.Deferred[None]] | None = None,
    ) -> None:
        self.listen = listen
        self.drain = drain
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
        if not self.running:  # stopped already: a draining channel stops its listener first
            return None
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def build_listener(reactor, prepared: Prepared, source: Source, metrics: Metrics) -> ListenerService:
    """The channel's MLLP listener, over the TLS its files gave (:func:`engine.reload.prepare`)."""
    channel = prepared.channel
    factory = MLLPServerFactory(channel.name, source, reactor, limits(channel))
    metrics.connections.watch(channel.name, lambda: factory.connections)
    served = factory if prepared.listener_tls is None else wrap_server_factory(factory, prepared.listener_tls)
    endpoint = serverFromString(reactor, channel.source.listen)
    return ListenerService(f"{channel.name}/listener", lambda: endpoint.listen(served), factory.drain)


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


class ChannelUnit(MultiService):
    """One channel, built, started and stopped on its own: its validation workers, MLLP
    listener and webhook pollers are its children; its queues (``queues``, in the shared
    :class:`DeliveryService`), webhook routes (on the shared site) and status reports (in the
    shared :class:`StatusReporter`) are added and removed with it by the :class:`Engine`."""

    def __init__(
        self,
        prepared: Prepared,
        listener: ListenerService,
        queues: ChannelQueues,
        webhook_routes: Sequence[WebhookRoute],
    ) -> None:
        super().__init__()
        self.setName(prepared.channel.name)
        self.prepared = prepared
        self.listener = listener
        self.queues = queues
        self.webhook_routes = tuple(webhook_routes)

    @property
    def channel(self) -> Channel:
        return self.prepared.channel

    def drain(self) -> defer.Deferred[None]:
        """Stop accepting, and let each connection answer the frames it has read (the
        validation workers still run) and close; then the channel can be stopped."""
        d = defer.maybeDeferred(self.listener.stopService)
        if self.listener.drain is not None:
            d.addCallback(lambda _: self.listener.drain())
        return d


@dataclass
class Engine:
    """The running parts, for the CLI and tests to reach into; :meth:`reload` applies edited
    channel files while it runs (:mod:`engine.reload`)."""

    reactor: Any
    service: MultiService
    store: Store
    deliveries: DeliveryService
    reporter: StatusReporter
    tokens: StoredTokens
    units: dict[str, ChannelUnit] = field(default_factory=dict)
    webhooks: ListenerService | None = None
    webhook_site: WebhookSite | None = None
    webhook_scheme: str = "http"
    """How vendors reach the webhooks: https when served over TLS (``webhook_tls`` or ``ssl:``)."""
    load_channels: ChannelLoader | None = None
    """What :meth:`reload` reads (``courier run`` gives its channel files with its environment)."""
    queue_setup: Callable[[list[DeliveryQueue]], defer.Deferred[None]] | None = None
    """Run for new queues before they start, after the stored tokens are loaded (the sandbox
    hooks of ``courier run --sandbox``)."""
    metrics: Metrics = field(default_factory=Metrics)
    """The engine's Prometheus registry (``metrics.registry``), for ``/metrics``."""
    _reloading: defer.DeferredLock = field(default_factory=defer.DeferredLock)

    @property
    def listeners(self) -> dict[str, ListenerService]:
        return {name: unit.listener for name, unit in self.units.items()}

    @property
    def webhook_resources(self) -> dict[str, Resource]:
        """URL path → webhook resource, of every channel."""
        return {route.path: route.resource for unit in self.units.values() for route in unit.webhook_routes}

    def start(self) -> defer.Deferred[None]:
        """Load the stored tokens, let each plugin prepare its queues (``on_start``), then
        start everything; fires once every listener is listening (or fails if one cannot)."""
        d = self._prepare(list(self.deliveries.queues.values()))
        d.addCallback(lambda _: self._start_services())
        return d

    def _prepare(self, queues: list[DeliveryQueue]) -> defer.Deferred[None]:
        d = self.tokens.load()
        if self.queue_setup is not None:
            d.addCallback(lambda _: self.queue_setup(queues))
        return d.addCallback(lambda _: prepare_queues(self.reactor, queues))

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

    # -- channels, one by one ------------------------------------------------------------

    def build_unit(self, prepared: Prepared) -> ChannelUnit:
        """A channel's parts, not yet added or started. Raises ConfigError when a webhook's
        settings cannot be used."""
        channel = prepared.channel
        reactor = self.reactor
        hooks, pollers = webhook_routes(
            reactor,
            [channel],
            self.store,
            self.reporter,
            self.deliveries.tracker,
            serve=self.webhook_site is not None,
            preloaded=prepared.preloaded,
        )
        channel_routes = routes(channel, reactor.seconds, self.tokens, prepared.mappings)
        validator = validation_pool(reactor, channel)
        source = build_source(
            reactor,
            channel,
            self.store,
            channel_routes,
            on_queued=self.deliveries.wake,
            validator=validator,
            metrics=self.metrics.channel(channel.name),
        )
        listener = build_listener(reactor, prepared, source, self.metrics)
        queues = self.deliveries.build_channel(channel, channel_routes)
        unit = ChannelUnit(prepared, listener, queues, hooks)
        if validator is not None:
            validator.setServiceParent(unit)
        listener.setServiceParent(unit)
        for poller in pollers:
            Running(poller).setServiceParent(unit)
        return unit

    def add_unit(self, unit: ChannelUnit) -> None:
        """Serve the channel: its parts start at once if the engine runs (a reload), and its
        status reports take over from an earlier version's (see :meth:`StatusReporter.set_channel`)."""
        self.units[unit.name] = unit
        self.deliveries.add(unit.queues)
        self.reporter.set_channel(unit.channel, unit.prepared.reports_tls).addErrback(
            lambda f: log.error(
                "channel %s: status reports did not restart: %s", unit.name, f.getErrorMessage()
            )
        )
        unit.setServiceParent(self.service)

    def stop_unit(self, name: str) -> defer.Deferred[None]:
        """Stop accepting on the channel, answer what its connections read, let its sends in
        flight finish; what waits in the store (queued deliveries, its outbox) stays there."""
        unit = self.units.pop(name)
        d = unit.drain()
        d.addCallback(lambda _: self.service.removeService(unit))
        d.addCallback(lambda _: self.deliveries.remove_channel(name))
        return d

    def serve_webhook_routes(self) -> None:
        """The webhook server answers for the channels as they are now."""
        if self.webhook_site is not None:
            self.webhook_site.routes = tuple(
                route for unit in self.units.values() for route in unit.webhook_routes
            )

    def reload(self) -> defer.Deferred[ReloadReport]:
        """Read the channel files again and apply what changed (:mod:`engine.reload`); a second
        call waits for the first. Fails, changing nothing, when the files cannot be read."""
        if self.load_channels is None:
            return defer.fail(ConfigError("this engine was built without its channel files"))
        return self._reloading.run(self._reload, self.load_channels)

    @defer.inlineCallbacks
    def _reload(self, load: ChannelLoader):
        reactor = self.reactor
        serve = self.webhook_site is not None
        reading = yield threads.deferToThreadPool(reactor, reactor.getThreadPool(), read, load, serve)
        todo = plan({name: unit.prepared for name, unit in self.units.items()}, reading)
        refused = [*reading.refused, *todo.refused]
        built: list[ChannelUnit] = []
        unchanged = list(todo.unchanged)
        for prepared in (*todo.restart, *todo.add):
            try:
                built.append(self.build_unit(prepared))
            except Exception as error:  # keep the running version; say why in one line
                refused.append(Refusal(str(prepared.channel.file), " ".join(str(error).split())))
                if prepared.channel.name in self.units:
                    unchanged.append(prepared.channel.name)
        for refusal in refused:
            log.error("reload: %s refused, the running version is kept: %s", refusal.what, refusal.reason)
        yield self._prepare([queue for unit in built for queue in unit.queues.queues])
        restarting = [unit.name for unit in built if unit.name in self.units]
        yield defer.gatherResults(
            [self.stop_unit(name) for name in (*todo.remove, *restarting)], consumeErrors=True
        )
        yield defer.gatherResults(
            [self.reporter.remove_channel(name) for name in todo.remove], consumeErrors=True
        )
        for unit in built:
            self.add_unit(unit)
        self.serve_webhook_routes()
        failed = yield defer.gatherResults([_listen_problem(unit) for unit in built])
        report = ReloadReport(
            unchanged=tuple(unchanged),
            restarted=tuple(restarting),
            added=tuple(unit.name for unit in built if unit.name not in restarting),
            removed=todo.remove,
            refused=tuple(refused),
            failed=tuple(problem for problem in failed if problem is not None),
        )
        log.warning("reload: %s", report.summary())
        return report


def _listen_problem(unit: ChannelUnit) -> defer.Deferred[Refusal | None]:
    """None once the unit's listener listens; why not, if it cannot (logged; its ``listening``
    then fires with None, as its ``port`` stays None)."""
    outcome: defer.Deferred[Refusal | None] = defer.Deferred()

    def listened(result: IListeningPort | Failure) -> IListeningPort | None:
        if not isinstance(result, Failure):
            outcome.callback(None)
            return result
        log.error("reload: channel %s cannot listen: %s", unit.name, result.getErrorMessage())
        outcome.callback(Refusal(unit.name, f"cannot listen: {result.getErrorMessage()}"))
        return None

    unit.listener.listening.addBoth(listened)
    return outcome


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
    metrics: Metrics | None = None,
    load_channels: ChannelLoader | None = None,
    lease_s: float | None = None,
    on_replaced: Callable[[], object] | None = None,
) -> Engine:
    """Every enabled channel: listener → source → store, its destination queues, its reports.

    With ``hold_deliveries`` messages are received, stored and ACKed, and their deliveries
    wait QUEUED until the engine runs without it. ``webhook_endpoint`` is the server endpoint (such as
    ``tcp:8480:interface=127.0.0.1``) the vendor webhooks are served on, over TLS with
    ``webhook_tls``, within ``webhook_limits``. With ``prune_after_s`` the store forgets, every
    hour, what is older and needs nothing more (:mod:`engine.store.retention`).
    ``load_channels`` reads the channel files again for :meth:`Engine.reload`. With
    ``lease_s`` the store was opened as one node among several (:mod:`engine.node`): the
    engine vouches for it (``on_replaced`` is called if another process took its name), and
    leases its sends and its channels' outboxes for ``lease_s`` at a time. Raises
    ConfigError when a webhook's settings cannot be used (a key that cannot be loaded, say) or
    a webhook would take anyone's POST. ``metrics`` is the engine's own registry of counters
    (a new one by default), which the store's gauges join.
    """
    metrics = metrics or Metrics()
    service = MultiService()
    if lease_s is not None:  # first in, last out: it stops once every send has ended
        Heartbeat(store, reactor, lease_s, on_replaced or reactor.stop).setServiceParent(service)
    tokens = StoredTokens(store, reactor)
    tokens.setServiceParent(service)
    reporter = StatusReporter(store, reactor, [], lease_s=lease_s)
    Running(reporter).setServiceParent(service)
    if prune_after_s is not None:
        Pruner(store, reactor, prune_after_s).setServiceParent(service)
    deliveries = DeliveryService(
        reactor=reactor,
        clock=reactor,
        store=store,
        listener=reporter,
        metrics=metrics,
        lease_s=lease_s or DEFAULT_LEASE_S,
    )
    if not hold_deliveries:
        deliveries.setServiceParent(service)
        store.on_queued(deliveries.queued_elsewhere)
    engine = Engine(
        reactor, service, store, deliveries, reporter, tokens, load_channels=load_channels, metrics=metrics
    )
    gauges = StoreGauges(
        store,
        reactor,
        channels=lambda: list(engine.units),
        destinations=lambda: {q.name: q.channel for q in engine.deliveries.queues.values()},
    )
    gauges.setServiceParent(service)
    metrics.registry.register(gauges)
    if webhook_endpoint is not None:
        secure = webhook_tls is not None or webhook_endpoint.startswith("ssl:")
        engine.webhook_scheme = "https" if secure else "http"
        site = engine.webhook_site = WebhookSite((), webhook_limits or ServerLimits(), reactor)
        engine.webhooks = ListenerService(
            "webhooks", lambda: webhook_server.serve(reactor, webhook_endpoint, site, webhook_tls)
        )
    for channel in channels:
        if channel.enabled:
            engine.add_unit(engine.build_unit(prepare(channel, webhook_endpoint is not None)))
    engine.serve_webhook_routes()
    if engine.webhooks is not None:
        engine.webhooks.setServiceParent(service)
    return engine
