"""conneQt statuses: "poll no more than four times a day", plus once just before the message's
projected expiry (``expiryDateTime`` of the mapped payload) and once just after it, so an
EXPIRED status is seen. COMPLETED, REJECTED and EXPIRED are final."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.destinations import rules
from engine.destinations.plugin import StatusPolling
from engine.store.base import DELIVERED, ERROR, READ

MIN_POLL_INTERVAL_S = 24 * 3600 / 4


def payload_expiry(payload: Mapping[str, Any]) -> float | None:
    """When conneQt will expire the message (``expiryDateTime``), as epoch seconds."""
    if not isinstance(payload.get("expiryDateTime"), str):
        return None
    when = rules.parse_rfc3339(payload["expiryDateTime"])
    return when.timestamp() if when is not None else None


POLLING = StatusPolling(
    final_states=frozenset({DELIVERED, READ, ERROR}),
    min_interval_s=MIN_POLL_INTERVAL_S,
    expiry=payload_expiry,
)
