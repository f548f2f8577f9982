"""Assemble the running engine from channel configurations, under one parent service.

For each channel: its destinations (mapping + vendor client), the :class:`Screen` of checks,
the :class:`Source`, the MLLP listener (TLS-wrapped when the channel asks), a delivery queue
per destination, and the status reporter that sends HL7 back to the sender.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests
from twisted.application.service import MultiService, Service
from twisted.internet import defer, threads
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory

from engine.channel.config import Channel
from engine.delivery import DeliveryService
from engine.destinations import REGISTRY
from engine.mapping import load_mapping
from engine.message import Message
from engine.message.ack import AckError
from engine.mllp.server import Limits, MLLPServerFactory
from engine.screen import Route, Screen, Validator
from engine.source import Source
from engine.status.reporter import StatusReporter
from engine.store import Store
from engine.tls import TLSSettings, wrap_server_factory


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


def routes(channel: Channel, clock: Callable[[], float]) -> list[Route]:
    """Each destination with its compiled mapping and a vendor client on its own HTTP session."""
    return [
        Route(
            destination.name,
            load_mapping(destination.mapping),
            REGISTRY[destination.type](destination.settings, requests.Session(), clock=clock),
        )
        for destination in channel.destinations
    ]


def hl7apy_validator(reactor, level: str, version: str | None) -> Validator:
    """hl7apy validation (tens of milliseconds a message) in the reactor's thread pool."""
    from engine.channel.validation import validate

    def run(message: Message) -> defer.Deferred[list[AckError]]:
        return threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), validate, message.text, level, version
        )

    return run


def build_source(
    reactor,
    channel: Channel,
    store: Store,
    channel_routes: Sequence[Route],
    on_queued: Callable[[tuple[str, ...]], None] | None = None,
) -> Source:
    validation = channel.source.validation
    validator = None
    if validation.level != "off":
        validator = hl7apy_validator(reactor, validation.level, validation.version)
    return Source(
        channel.name,
        store,
        reactor,
        Screen(channel, channel_routes, validator),
        charset=channel.source.charset,
        force_charset=channel.source.force_charset,
        ack_mode=channel.ack.mode,
        reject_duplicates=channel.ack.duplicates == "reject",
        on_queued=on_queued,
    )


class ListenerService(Service):
    """One channel's MLLP listener; ``port`` is the listening port once started."""

    def __init__(self, reactor, channel: Channel, factory: IProtocolFactory) -> None:
        self.endpoint = serverFromString(reactor, channel.source.listen)
        self.factory = factory
        self.port: IListeningPort | None = None
        self.listening: defer.Deferred[IListeningPort] = defer.Deferred()
        self.setName(f"{channel.name}/listener")

    def startService(self) -> None:
        super().startService()
        d = self.endpoint.listen(self.factory)
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
    return ListenerService(reactor, channel, served)


class ReporterService(Service):
    """Runs the status reporter's per-channel senders for as long as the engine runs."""

    def __init__(self, reporter: StatusReporter) -> None:
        self.reporter = reporter

    def startService(self) -> None:
        super().startService()
        self.reporter.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return self.reporter.stop()


@dataclass
class Engine:
    """The running parts, for the CLI and tests to reach into."""

    service: MultiService
    deliveries: DeliveryService
    reporter: StatusReporter
    listeners: dict[str, ListenerService]

    def start(self) -> defer.Deferred[None]:
        """Start everything; fires once every listener is listening (or fails if one cannot)."""
        self.service.startService()
        waiting = [listener.listening for listener in self.listeners.values()]
        return defer.gatherResults(waiting, consumeErrors=True).addCallback(lambda _: None)

    def stop(self) -> defer.Deferred[None]:
        return defer.maybeDeferred(self.service.stopService)

    def port(self, channel: str) -> int:
        """The TCP port a channel's listener got (useful with ``tcp:0``)."""
        return self.listeners[channel].port.getHost().port


def build_engine(
    reactor, channels: Sequence[Channel], store: Store, *, hold_deliveries: bool = False
) -> Engine:
    """Every enabled channel: listener → source → store, its destination queues, its reports.

    With ``hold_deliveries`` messages are received, stored and ACKed, and their deliveries
    wait QUEUED until the engine runs without it.
    """
    enabled = [channel for channel in channels if channel.enabled]
    service = MultiService()
    reporter = StatusReporter(store, reactor, enabled)
    ReporterService(reporter).setServiceParent(service)
    deliveries = DeliveryService(reactor=reactor, clock=reactor, store=store, listener=reporter)
    if not hold_deliveries:
        deliveries.setServiceParent(service)
    listeners = {}
    for channel in enabled:
        channel_routes = routes(channel, reactor.seconds)
        deliveries.add_channel(channel, channel_routes)
        source = build_source(reactor, channel, store, channel_routes, on_queued=deliveries.wake)
        listeners[channel.name] = build_listener(reactor, channel, source)
        listeners[channel.name].setServiceParent(service)
    return Engine(service, deliveries, reporter, listeners)
