"""The operators' audit trail for console actions that change nothing in the store.

A requeue, cancel or skip records itself in the transaction that makes the change (the store
methods take ``by``). A reload, a login and a logout are recorded here, after the fact and
without waiting: a store that cannot record them (stalled, full) is logged, and neither
refuses nor delays the action, since the console is also how an operator finds out that the
store is in trouble.
"""

from __future__ import annotations

import logging

from twisted.python.failure import Failure

from engine.logs import loggable_error
from engine.store import Store

log = logging.getLogger(__name__)


def record(store: Store, operator: str, action: str, subject: str, detail: str = "") -> None:
    """Record that ``operator`` did ``action`` to ``subject`` (ids, channel names: never PHI)."""

    def failed(failure: Failure) -> None:
        log.error(
            "console: could not record that operator %s %s %s: %s",
            operator,
            action,
            subject,
            loggable_error(failure.value),
        )

    store.record_action(operator, action, subject, detail).addErrback(failed)
