"""Prometheus metrics: one registry per engine, the parts that count, and ``/metrics``.

No label ever carries a control id or anything read from a message: channel and destination
names and fixed words only (the README's "Monitoring" lists every metric).
"""

from engine.metrics.gauges import StoreGauges
from engine.metrics.instruments import ChannelMetrics, DestinationMetrics, Metrics
from engine.metrics.resource import MetricsResource

__all__ = ["ChannelMetrics", "DestinationMetrics", "Metrics", "MetricsResource", "StoreGauges"]
