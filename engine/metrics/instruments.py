"""The engine's counters and histograms, on one ``CollectorRegistry`` per engine (no globals).

The parts that count get a small per-channel or per-destination object with its label
children resolved once, so a message costs a few attribute lookups and the metric's own lock,
never a ``labels()`` look-up. Label values are channel and destination names and fixed words
only (an ERR-3 code, an HTTP status class): never a control id, never anything from a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.metrics.gauges import ListenerConnections

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: an ACK or a commit takes milliseconds when all is well, seconds when the disk is not."""
SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds: a vendor answers in a fraction of a second, a big PDF or a slow vendor takes longer."""
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
"""The vendor answer classes; ``error`` is no HTTP answer at all (connection, timeout, DNS, TLS)."""
HOLD_REASONS = {
    "auth": "auth",
    "forbidden": "forbidden",
    "endpoint not found": "endpoint",
    "dns": "dns",
    "tls": "tls",
}
"""A queue's hold word (:mod:`engine.destinations.transport`, or a plugin's) → the metric's
``reason``; any other word is ``other``, so a plugin can never put free text in a label."""
REASONS = (*HOLD_REASONS.values(), "other")
ERR_CODES = frozenset({100, 101, 102, 103, 104, 200, 201, 202, 203, 204, 205, 206, 207})
"""HL7 table 0357's error codes: the ``code`` label is one of these, or ``other``."""


def hold_reason(hold: str) -> str:
    """The fixed ``reason`` label for a queue's hold word."""
    return HOLD_REASONS.get(hold, "other")


def status_class(http_status: int | None) -> str:
    """One of :data:`STATUS_CLASSES` for an HTTP status (None: no answer)."""
    if http_status is None or not 200 <= http_status < 600:
        return "error"
    return f"{http_status // 100}xx"


class Metrics:
    """Every counter and histogram of one engine, on its own ``registry``.

    ``timer`` is a monotonic clock in seconds for the latencies (the reactor's clock is wall
    time and, in tests, a fake one).
    """

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.registry = CollectorRegistry()
        self.timer = timer
        channel, destination = ("channel",), ("channel", "destination")

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=self.registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

        self.received = counter(
            "courier_messages_received",
            "HL7 messages handed to a channel (inbound ACKs not counted)",
            channel,
        )
        self.accepted = counter(
            "courier_messages_accepted", "Messages stored and ACKed with deliveries", channel
        )
        self.filtered = counter(
            "courier_messages_filtered", "Messages stored and ACKed but filtered out", channel
        )
        self.duplicates = counter(
            "courier_messages_duplicate", "Messages received again (same control id and content)", channel
        )
        self.refused = counter(
            "courier_messages_refused", "Messages answered with a NAK, by its ERR-3 code", ("channel", "code")
        )
        self.ack_latency = histogram(
            "courier_ack_latency_seconds", "From a complete frame to its ACK", channel, LATENCY_BUCKETS
        )
        self.commit_latency = histogram(
            "courier_store_commit_seconds",
            "From handing messages to the store to their commit",
            channel,
            LATENCY_BUCKETS,
        )
        self.sent = counter("courier_deliveries_sent", "Deliveries the vendor accepted", destination)
        self.failed = counter(
            "courier_deliveries_failed",
            "Attempts that failed and will be tried again (retry or hold)",
            destination,
        )
        self.dead_lettered = counter(
            "courier_deliveries_dead_lettered",
            "Deliveries that ended in ERROR (rejected or given up)",
            destination,
        )
        self.responses = counter(
            "courier_vendor_responses",
            "Vendor HTTP answers by status class (error: no answer)",
            ("channel", "destination", "class"),
        )
        self.send_latency = histogram(
            "courier_send_seconds", "One send to the vendor, answer included", destination, SEND_BUCKETS
        )
        self.held = Gauge(
            "courier_destination_held",
            "1 while the destination is held by a set-up error, with the reason; 0 otherwise",
            ("channel", "destination", "reason"),
            registry=self.registry,
        )
        self.connections = ListenerConnections()
        self.registry.register(self.connections)

    def refusals(self) -> dict[str, int]:
        """Channel → messages and frames refused since the engine started, every code summed
        (what the console shows: the same count as ``/metrics``, never a second one)."""
        found: dict[str, int] = {}
        for metric in self.refused.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    channel = sample.labels["channel"]
                    found[channel] = found.get(channel, 0) + int(sample.value)
        return found

    def channel(self, name: str) -> ChannelMetrics:
        """What a channel's source counts (its series exist from now on, at zero)."""
        return ChannelMetrics(self, name)

    def destination(self, channel: str, name: str) -> DestinationMetrics:
        """What a destination's queue counts (its series exist from now on, at zero)."""
        return DestinationMetrics(self, channel, name)


class ChannelMetrics:
    """One channel's counters, label children resolved once."""

    def __init__(self, metrics: Metrics, channel: str) -> None:
        self.timer = metrics.timer
        self.received = metrics.received.labels(channel)
        self.accepted = metrics.accepted.labels(channel)
        self.filtered = metrics.filtered.labels(channel)
        self.duplicates = metrics.duplicates.labels(channel)
        self.ack_latency = metrics.ack_latency.labels(channel)
        self.commit_latency = metrics.commit_latency.labels(channel)
        self._refused_family = metrics.refused
        self._channel = channel
        self._refused: dict[int, Counter] = {}

    def refused(self, code: int, count: int = 1) -> None:
        """``count`` NAKs with ERR-3 ``code`` (an HL7 table 0357 number)."""
        child = self._refused.get(code)
        if child is None:
            label = str(code) if code in ERR_CODES else "other"
            child = self._refused[code] = self._refused_family.labels(self._channel, label)
        child.inc(count)


class DestinationMetrics:
    """One destination's counters, label children resolved once."""

    def __init__(self, metrics: Metrics, channel: str, destination: str) -> None:
        self.timer = metrics.timer
        self.sent = metrics.sent.labels(channel, destination)
        self.failed = metrics.failed.labels(channel, destination)
        self.dead_lettered = metrics.dead_lettered.labels(channel, destination)
        self.send_latency = metrics.send_latency.labels(channel, destination)
        self._responses = {
            kind: metrics.responses.labels(channel, destination, kind) for kind in STATUS_CLASSES
        }
        self._held = {reason: metrics.held.labels(channel, destination, reason) for reason in REASONS}
        self._held_for: str | None = None

    def held(self, hold: str | None) -> None:
        """The destination is held for ``hold`` (a queue's hold word), or no longer (None);
        the gauges change only when the reason does (every send says so)."""
        reason = None if hold is None else hold_reason(hold)
        if reason == self._held_for:
            return
        for label, child in self._held.items():
            child.set(1 if label == reason else 0)
        self._held_for = reason

    def answered(self, http_status: int | None, seconds: float) -> None:
        """One send done: its answer's class and how long it took."""
        self._responses[status_class(http_status)].inc()
        self.send_latency.observe(seconds)
