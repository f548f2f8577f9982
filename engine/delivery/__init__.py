"""Delivery: the durable queue per destination, and the vendor statuses after sending.

* :class:`DeliveryQueue` (one per destination): due QUEUED rows → mapping → vendor → SENT,
  QUEUED again (backoff), or ERROR (rejected / dead letter). At-least-once; see
  :mod:`engine.delivery.queue` for exactly where a duplicate can still happen.
* :class:`StatusPoller` (one per destination with a status API) asks the vendor on the
  schedule in :mod:`engine.delivery.polling`, kept in the store across restarts.
* :class:`StatusTracker` applies vendor statuses (polled or pushed by webhooks) by one rule set.
* Every state change is a :class:`Transition`: the :class:`TransitionListener` (the status
  reporter) says which status reports it causes, the store commits them with the change, and
  the listener is told once both are committed.
"""

from engine.delivery.conversations import Conversations, thread_key
from engine.delivery.poller import StatusPoller
from engine.delivery.queue import DeliveryQueue, idempotency_key
from engine.delivery.service import DeliveryService
from engine.delivery.tracker import StatusTracker
from engine.delivery.transitions import Transition, TransitionListener

__all__ = [
    "Conversations",
    "DeliveryQueue",
    "DeliveryService",
    "StatusPoller",
    "StatusTracker",
    "Transition",
    "TransitionListener",
    "idempotency_key",
    "thread_key",
]
