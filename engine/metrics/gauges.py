"""Gauges read at scrape time from what is already in memory: never a store query on the reactor.

:class:`StoreGauges` asks the store for its depths and ages every few seconds (a read on the
store's own thread) and keeps the last answer; a scrape turns that answer into families, with
ages counted to the scrape's moment. :class:`ListenerConnections` reads each MLLP listener's
open-connection count, an attribute the listener keeps anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from engine.store.base import GAUGED_STATES, Gauges, Store

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 10.0
"""How often the store's gauges are read; a scrape every 15 s or more sees fresh enough figures."""


class StoreGauges(Service, Collector):
    """Queue depth by state and oldest waiting age per destination, outbox depth and oldest
    age per channel, and the store's size, from a snapshot refreshed every ``refresh_s``.

    ``channels`` and ``destinations`` (each destination's channel) are asked at each refresh,
    so a reloaded engine's new channels and destinations are read from then on."""

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        channels: Callable[[], Iterable[str]],
        destinations: Callable[[], Mapping[str, str]],
        refresh_s: float = DEFAULT_REFRESH_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._channels = channels
        self._destinations = destinations
        self._refresh_s = refresh_s
        self._loop = LoopingCall(self._refresh)
        self._loop.clock = clock
        self._snapshot: tuple[list[str], dict[str, str], Gauges] | None = None
        self._taken_at = 0.0

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._refresh_s, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _refresh(self):
        """One read; the loop waits for it, so a slow store never gets two at once."""
        taken_at = self._clock.seconds()
        channels, destinations = sorted(self._channels()), dict(self._destinations())
        d = self._store.gauges(sorted(destinations), channels)
        return d.addCallbacks(self._keep, self._failed, callbackArgs=(taken_at, channels, destinations))

    def _keep(
        self, gauges: Gauges, taken_at: float, channels: list[str], destinations: dict[str, str]
    ) -> None:
        self._snapshot, self._taken_at = (channels, destinations, gauges), taken_at

    def _failed(self, failure: Failure) -> None:
        log.warning("metrics: could not read the store's gauges: %s", failure.getErrorMessage())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._snapshot is None:
            return
        channels, destinations, snapshot = self._snapshot
        now = self._clock.seconds()
        depth = GaugeMetricFamily(
            "courier_queue_depth",
            "Deliveries by state (QUEUED, SENDING, ERROR)",
            labels=("channel", "destination", "state"),
        )
        oldest = GaugeMetricFamily(
            "courier_queue_oldest_age_seconds",
            "Age of the oldest QUEUED or SENDING delivery (0: none waiting)",
            labels=("channel", "destination"),
        )
        for destination, channel in sorted(destinations.items()):
            for state in GAUGED_STATES:
                depth.add_metric(
                    (channel, destination, state), snapshot.deliveries.get((destination, state), 0)
                )
            oldest.add_metric((channel, destination), _age(now, snapshot.oldest_waiting.get(destination)))
        outbox = GaugeMetricFamily(
            "courier_outbox_depth", "HL7 messages waiting to go back", labels=("channel",)
        )
        outbox_oldest = GaugeMetricFamily(
            "courier_outbox_oldest_age_seconds",
            "Age of the oldest one waiting (0: none)",
            labels=("channel",),
        )
        for channel in channels:
            pending, since = snapshot.outbox.get(channel, (0, None))
            outbox.add_metric((channel,), pending)
            outbox_oldest.add_metric((channel,), _age(now, since))
        yield from (depth, oldest, outbox, outbox_oldest)
        yield GaugeMetricFamily(
            "courier_store_size_bytes", "Size of the store's database", value=snapshot.size_bytes
        )
        yield GaugeMetricFamily(
            "courier_store_gauges_age_seconds",
            "How old the figures read from the store are",
            value=now - self._taken_at,
        )


class ListenerConnections(Collector):
    """Open MLLP connections per listener, read from each listener's own count."""

    def __init__(self) -> None:
        self._listeners: dict[str, Callable[[], int]] = {}

    def watch(self, channel: str, open_connections: Callable[[], int]) -> None:
        self._listeners[channel] = open_connections

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "courier_listener_connections", "Open MLLP connections per channel listener", labels=("channel",)
        )
        for channel, count in sorted(self._listeners.items()):
            family.add_metric((channel,), count())
        yield family


def _age(now: float, since: float | None) -> float:
    return 0.0 if since is None else max(now - since, 0.0)
