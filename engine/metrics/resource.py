"""``/metrics``: the registry in Prometheus' text exposition format.

Rendering runs the collectors on the reactor thread; every one of them reads memory only
(counters, the store snapshot of :class:`engine.metrics.gauges.StoreGauges`), never the store.
Authentication is the admin site's, which mounts this resource.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request


class MetricsResource(Resource):
    """GET answers the exposition of ``registry``."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return generate_latest(self.registry)
