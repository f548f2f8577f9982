"""Vendor statuses → delivery states, by one set of rules whether polled or pushed (webhooks).

Rules:

* states only move forward: SENT → DELIVERED → READ; a status that would go back is ignored;
* a failure (``failed``, ``expired``) ends a delivery in ERROR only while it is SENT: once a
  vendor said delivered (MedAllies DISPATCHED), a later FAILED never overrides it, while
  DISPATCHED can still be upgraded to DISPLAYED (READ);
* a vendor reporting several recipients (Qliq) counts as far as its most advanced recipient:
  read by anyone is READ, and a failure counts only when no recipient got the message;
* ``accepted`` and ``pending`` change nothing;
* read implies delivered: a READ that finds the delivery still SENT (a poll that missed the
  delivered step, or webhooks arriving out of order, as separate HTTP posts may) commits and
  announces DELIVERED first, so the hospital always sees the same trail; the late delivered
  status is then ignored as going back.

Each change is committed (``set_state`` / ``mark_error`` write an event with its time) with
the status reports it causes, then announced as a :class:`~engine.delivery.transitions.Transition`
(:func:`~engine.delivery.transitions.record`).

A vendor can push a status before our send has recorded its id: its webhook may be quicker
than our reading of its HTTP answer and the COMMIT that follows. An unknown remote id is
therefore looked up again a few times over about four seconds (``LOOKUP_AGAIN_AFTER_S``),
before the status is logged and dropped, while the webhook's answer waits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import partial

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from engine.delivery import transitions
from engine.delivery.transitions import Transition, TransitionListener, record, transition_of
from engine.destinations.base import StatusUpdate
from engine.store.base import DELIVERED, ERROR, READ, SENT, Delivery, Store

log = logging.getLogger(__name__)

_PROGRESS = {SENT: 0, DELIVERED: 1, READ: 2}
_TARGETS = {
    "delivered": (DELIVERED, transitions.DELIVERED),
    "read": (READ, transitions.READ),
    "failed": (ERROR, transitions.FAILED),
    "expired": (ERROR, transitions.EXPIRED),
}
#: Waits before looking an unknown remote id up again (see the module docstring).
LOOKUP_AGAIN_AFTER_S = (0.25, 0.5, 1.0, 2.0)
#: How far one recipient's status got, to pick the one a multi-recipient delivery follows.
_RECIPIENT_RANK = {"failed": 0, "expired": 0, "accepted": 1, "pending": 1, "delivered": 2, "read": 3}


def next_state(current: str, update: str) -> tuple[str, str] | None:
    """``(new delivery state, transition event)`` for a vendor status, or None to ignore it."""
    target = _TARGETS.get(update)
    if target is None or current not in _PROGRESS:
        return None
    if target[0] == ERROR:
        return target if current == SENT else None
    return target if _PROGRESS[target[0]] > _PROGRESS[current] else None


def leading_update(updates: Sequence[StatusUpdate]) -> StatusUpdate | None:
    """The update of the most advanced recipient."""
    return max(updates, key=lambda u: _RECIPIENT_RANK.get(u.state, 1), default=None)


class StatusTracker:
    """Applies vendor statuses to deliveries and announces the changes, one at a time."""

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        listener: TransitionListener | None = None,
        destinations: Iterable[str] = (),
    ) -> None:
        self._store = store
        self._clock = clock
        self._listener = listener
        self._destinations = list(destinations)
        self._lock = DeferredLock()  # read state, decide, write: never two at once

    def track(self, destination: str) -> None:
        """Also look up remote ids of ``destination`` in :meth:`apply_update`."""
        self._destinations.append(destination)

    def untrack(self, destination: str) -> None:
        """Stop looking in ``destination`` (its channel was removed or is being reloaded)."""
        if destination in self._destinations:
            self._destinations.remove(destination)

    def apply_update(
        self, ref: int | str, update: StatusUpdate, *, destination: str | None = None
    ) -> Deferred[Transition | None]:
        """A status for a delivery id, or for a vendor's remote id (webhooks know only that).

        A remote id is looked up in ``destination``, or else in every destination this
        tracker was given. Fires with the announced transition, or None when nothing changed.
        """
        if isinstance(ref, int) or update.state not in _TARGETS:
            return self._lock.run(self._apply_ref, ref, update, destination)
        found = self._find_soon(ref, destination)  # outside the lock: the wait holds up no one
        return found.addCallback(self._apply_when_found, ref, update, destination)

    def _apply_when_found(
        self, delivery: Delivery | None, ref: str, update: StatusUpdate, destination: str | None
    ) -> Deferred[Transition | None]:
        """Under the lock, reading the delivery again there (its state may have moved on)."""
        return self._lock.run(self._apply_ref, ref if delivery is None else delivery.id, update, destination)

    @inlineCallbacks
    def _find_soon(self, remote_id: str, destination: str | None):
        """The delivery with ``remote_id``, waiting for a send that may still be committing it;
        None after the last wait (the locked lookup then tries once more, and logs)."""
        for delay in LOOKUP_AGAIN_AFTER_S:
            delivery = yield self._find(remote_id, destination)
            if delivery is not None:
                return delivery
            yield deferLater(self._clock, delay, lambda: None)
        return None

    def apply_updates(self, delivery_id: int, updates: Sequence[StatusUpdate]) -> Deferred[str | None]:
        """A poll's answer (one update per recipient); fires with the delivery's state after it."""
        return self._lock.run(self._apply_polled, delivery_id, updates)

    @inlineCallbacks
    def _apply_ref(self, ref: int | str, update: StatusUpdate, destination: str | None):
        delivery = yield self._find(ref, destination)
        if delivery is None:
            log.warning("status %r for an unknown delivery %r ignored", update.state, ref)
            return None
        _, transition = yield self._apply(delivery, update)
        return transition

    @inlineCallbacks
    def _apply_polled(self, delivery_id: int, updates: Sequence[StatusUpdate]):
        delivery = yield self._store.get_delivery(delivery_id)
        if delivery is None:
            return None
        update = leading_update(updates)
        if update is None:
            return delivery.state
        state, _ = yield self._apply(delivery, update)
        return state

    @inlineCallbacks
    def _find(self, ref: int | str, destination: str | None):
        if isinstance(ref, int):
            return (yield self._store.get_delivery(ref))
        for name in (destination,) if destination else self._destinations:
            delivery = yield self._store.find_delivery(name, ref)
            if delivery is not None:
                return delivery
        return None

    @inlineCallbacks
    def _apply(self, delivery: Delivery, update: StatusUpdate):
        """Returns ``(state after, transition or None)``."""
        change = next_state(delivery.state, update.state)
        if change is None:
            return delivery.state, None
        state, event = change
        original = yield self._original(delivery)
        if state == READ and delivery.state == SENT:
            yield self._commit(
                delivery, original, DELIVERED, transitions.DELIVERED, update, "implied by read"
            )
        transition = yield self._commit(delivery, original, state, event, update, update.detail)
        return state, transition

    def _original(self, delivery: Delivery) -> Deferred[bytes]:
        """The stored message, which the listener builds its reports from (none to build: none read)."""
        if self._listener is None:
            return succeed(b"")
        found = self._store.get_message(delivery.message_id, with_body=True)
        return found.addCallback(lambda message: message.raw if message is not None else b"")

    @inlineCallbacks
    def _commit(
        self,
        delivery: Delivery,
        original: bytes,
        state: str,
        event: str,
        update: StatusUpdate,
        why: str | None,
    ):
        """Commit one state change with its reports, then announce it; fires with its transition."""
        detail = f"{event} ({why})" if why else event
        if state == ERROR:
            change = partial(self._store.mark_error, delivery.id, detail)
        else:
            change = partial(self._store.set_state, delivery.id, state, detail)
        at = update.at.timestamp() if update.at is not None else self._clock.seconds()
        transition = transition_of(delivery, state, event, at, detail, recipient=update.recipient)
        yield record(self._listener, transition, original, change)
        return transition
