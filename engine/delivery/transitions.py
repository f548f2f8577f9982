"""What the delivery side tells the rest of Courier: one :class:`Transition` per state change.

The status reporter (``engine.status``) implements :class:`TransitionListener` and turns
transitions into HL7 back to the sender. :func:`record` asks the listener for those reports
*before* the change is stored and hands them to the store call that makes the change, so the
new state and its reports commit in one transaction: a crash keeps both or neither, and a
report never claims a state the store could still lose. The listener hears of the
transition again once it is committed (to send the reports at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from engine.destinations.base import InvalidParameter
from engine.logs import loggable_error
from engine.store.base import Delivery, OutboxEntry

log = logging.getLogger(__name__)

# Transition events (``Transition.event``).
ACCEPTED = "accepted"
DELIVERED = "delivered"
READ = "read"
FAILED = "failed"
EXPIRED = "expired"
REJECTED = "rejected"
DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Transition:
    """One committed change of a delivery's state. ``detail`` never carries PHI."""

    delivery_id: int
    message_id: int
    channel: str
    destination: str
    control_id: str
    state: str  # SENT | DELIVERED | READ | ERROR
    event: str  # accepted | delivered | read | failed | expired | rejected | dead_letter
    at: float  # epoch seconds
    remote_id: str | None
    recipient: str | None
    detail: str
    invalid_parameters: tuple[InvalidParameter, ...] = ()


def transition_of(
    delivery: Delivery,
    state: str,
    event: str,
    at: float,
    detail: str,
    *,
    remote_id: str | None = None,
    recipient: str | None = None,
    invalid_parameters: tuple[InvalidParameter, ...] = (),
) -> Transition:
    """The transition of a stored delivery; ``remote_id`` defaults to the one stored."""
    return Transition(
        delivery_id=delivery.id,
        message_id=delivery.message_id,
        channel=delivery.channel,
        destination=delivery.destination,
        control_id=delivery.control_id,
        state=state,
        event=event,
        at=at,
        remote_id=remote_id or delivery.remote_id,
        recipient=recipient,
        detail=detail,
        invalid_parameters=invalid_parameters,
    )


class TransitionListener(Protocol):
    def reports(self, transition: Transition, original: bytes) -> Sequence[OutboxEntry]:
        """The outbox entries ``transition`` causes (``original``: the message as stored).
        Runs on the reactor thread before the change is stored, and is stored with it: quick,
        no I/O."""
        ...

    def on_transition(self, transition: Transition) -> None:
        """``transition`` and its reports are committed."""
        ...


def record(
    listener: TransitionListener | None,
    transition: Transition,
    original: bytes,
    change: Callable[..., Deferred[None]],
) -> Deferred[None]:
    """Commit a state change with the reports it causes, then tell the listener.

    ``change(reports=...)`` is the store call that changes the delivery's state; its failure
    passes to the caller. A listener that fails is logged, never passed back: the change is
    then stored without its report.
    """
    d = change(reports=_reports(listener, transition, original))
    d.addCallback(lambda _: _announce(listener, transition))
    return d


def _reports(
    listener: TransitionListener | None, transition: Transition, original: bytes
) -> tuple[OutboxEntry, ...]:
    if listener is None:
        return ()
    try:
        return tuple(listener.reports(transition, original))
    except Exception as exc:
        _listener_failed(exc, transition)
        return ()


def _announce(listener: TransitionListener | None, transition: Transition) -> None:
    if listener is None:
        return
    try:
        listener.on_transition(transition)
    except Exception as exc:
        _listener_failed(exc, transition)


def _listener_failed(exc: Exception, transition: Transition) -> None:
    """Logged by type: the listener builds HL7 from the message, so its text can quote a patient."""
    log.error(
        "transition listener failed for delivery %d (%s %s): %s",
        transition.delivery_id,
        transition.destination,
        transition.event,
        loggable_error(exc),
    )
