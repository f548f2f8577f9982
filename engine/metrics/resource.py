"""``/metrics``: the registry in Prometheus' text exposition format.

Rendering runs the collectors on the reactor thread; every one of them reads memory only
(counters, the store snapshot of :class:`engine.metrics.gauges.StoreGauges`), never the store.
Authentication is the admin site's, which mounts this resource.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus reads: Courier's metric names need none of
what the newer versions add (prometheus_client's latest may announce one an older server skips)."""


class WithoutCreated(Collector):
    """The registry's families without the ``_created`` samples, which the classic format shows
    as one more gauge per counter and histogram series (a start time nobody alerts on)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class MetricsResource(Resource):
    """GET answers the exposition of ``registry``."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.exposed = WithoutCreated(registry)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-store")
        return generate_latest(self.exposed)
