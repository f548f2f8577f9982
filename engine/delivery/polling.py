"""How often to ask each vendor for a SENT delivery's status, and when to stop.

* **Qliq** (``message_status``): every ``poll_every_s`` until READ (or every recipient
  failed), or until ``give_up_after_s``.
* **conneQt**: "poll no more than four times a day", plus once just before the projected
  expiry if no final state has been reached (``expiryDateTime`` from the mapped payload), and
  once just after it so an EXPIRED status is seen. COMPLETED, REJECTED and EXPIRED are final.
* **MedAllies**: every ``poll_every_s`` until DISPATCHED (delivered) or a failure; a later
  DISPLAYED still arrives through the DSN webhook (:meth:`StatusTracker.apply_update`).
* **KPN** has no delivered/read state: ACCEPTED (SENT) is the last state we can know, so a
  KPN delivery is never polled.

The schedule lives in the store (``status_polls``), so it survives a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.channel.config import StatusPolling
from engine.destinations import rules
from engine.store.base import DELIVERED, ERROR, READ, StatusPoll

CONNEQT_MIN_INTERVAL_S = 24 * 3600 / 4
EXPIRY_MARGIN_S = 120.0

#: Delivery states after which a vendor's status no longer needs polling.
FINAL_STATES: Mapping[str, frozenset[str]] = {
    "qliq": frozenset({READ, ERROR}),
    "conneqt": frozenset({DELIVERED, READ, ERROR}),
    "medallies": frozenset({DELIVERED, READ, ERROR}),
}


def payload_expiry(kind: str, payload: Mapping[str, Any]) -> float | None:
    """When the vendor will expire the message (conneQt ``expiryDateTime``), as epoch seconds."""
    if kind != "conneqt" or not isinstance(payload.get("expiryDateTime"), str):
        return None
    when = rules.parse_rfc3339(payload["expiryDateTime"])
    return when.timestamp() if when is not None else None


def first_poll(
    kind: str, config: StatusPolling, destination: str, sent_at: float, expires_at: float | None
) -> StatusPoll | None:
    """The poll to schedule when a delivery becomes SENT, or None when it is never polled."""
    if not config.poll or kind not in FINAL_STATES:
        return None
    give_up_at = sent_at + config.give_up_after_s
    if expires_at is not None:
        give_up_at = min(give_up_at, expires_at + EXPIRY_MARGIN_S)
    poll = StatusPoll(0, destination, "", sent_at, give_up_at, expires_at, 0)
    next_at = next_poll_at(kind, config, poll, sent_at)
    return None if next_at is None else StatusPoll(0, destination, "", next_at, give_up_at, expires_at, 0)


def poll_interval(kind: str, config: StatusPolling) -> float:
    """The wait between two polls that really applies: ``poll_every_s``, unless the vendor
    asks for fewer polls (``courier check`` warns when it does)."""
    if kind == "conneqt":
        return max(config.poll_every_s, CONNEQT_MIN_INTERVAL_S)
    return config.poll_every_s


def next_poll_at(kind: str, config: StatusPolling, poll: StatusPoll, now: float) -> float | None:
    """After a poll at ``now`` that found no final state: the next one, or None to give up."""
    next_at = now + poll_interval(kind, config)
    if poll.expires_at is not None:
        just_before, just_after = poll.expires_at - EXPIRY_MARGIN_S, poll.expires_at + EXPIRY_MARGIN_S
        if now < just_before < next_at:
            next_at = just_before
        elif now < just_after < next_at:
            next_at = just_after
    if next_at > poll.give_up_at:
        return poll.give_up_at if now < poll.give_up_at else None
    return next_at
