"""What the delivery side tells the rest of Courier: one :class:`Transition` per state change.

The status reporter (``engine.status``) implements :class:`TransitionListener` and turns
transitions into HL7 back to the sender. A listener is called only *after* the change is
committed, so a report never claims a state the store could still lose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure

from engine.destinations.base import InvalidParameter
from engine.store.base import Delivery

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
    def on_transition(self, transition: Transition) -> Deferred[None] | None: ...


def announce(listener: TransitionListener | None, transition: Transition) -> Deferred[None]:
    """Tell the listener; its failure is logged, never passed back into the queue."""
    if listener is None:
        return succeed(None)
    d = maybeDeferred(listener.on_transition, transition)
    d.addErrback(_listener_failed, transition)
    return d


def _listener_failed(failure: Failure, transition: Transition) -> None:
    log.error(
        "transition listener failed for delivery %d (%s %s): %s",
        transition.delivery_id,
        transition.destination,
        transition.event,
        failure.getErrorMessage(),
    )
