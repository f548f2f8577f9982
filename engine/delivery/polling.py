"""How often to ask a vendor for a SENT delivery's status, and when to stop.

Each destination type says it in its plugin (``DestinationPlugin.polling``): the states after
which polling stops, the shortest interval the vendor allows (a shorter ``poll_every_s`` is
raised to it), and when the vendor expires a message (read from the mapped payload: polled
once just before and once just after, so an expiry is seen). A type without ``polling`` is
never polled. The schedule lives in the store (``status_polls``), so it survives a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.channel.config import StatusPolling
from engine.destinations.registry import plugin
from engine.store.base import StatusPoll

EXPIRY_MARGIN_S = 120.0


def final_states(kind: str) -> frozenset[str]:
    """Delivery states after which a destination type's status no longer needs polling."""
    rules = plugin(kind).polling
    return rules.final_states if rules is not None else frozenset()


def payload_expiry(kind: str, payload: Mapping[str, Any]) -> float | None:
    """When the vendor will expire the message, as epoch seconds, or None."""
    rules = plugin(kind).polling
    if rules is None or rules.expiry is None:
        return None
    return rules.expiry(payload)


def first_poll(
    kind: str, config: StatusPolling, destination: str, sent_at: float, expires_at: float | None
) -> StatusPoll | None:
    """The poll to schedule when a delivery becomes SENT, or None when it is never polled."""
    if not config.poll or plugin(kind).polling is None:
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
    rules = plugin(kind).polling
    return max(config.poll_every_s, rules.min_interval_s if rules is not None else 0.0)


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
