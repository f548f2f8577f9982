"""Retention: the store forgets, in the background, what it no longer needs.

Mirth's data pruner, without its complaint that the database never shrinks: every hour the
:class:`Pruner` deletes what was received more than ``after_s`` ago and needs nothing more
(see :meth:`engine.store.database.Database.prune_batch`), and SQLite reuses the freed pages
for new messages. It deletes one small batch per writer commit, so an ACK never waits behind
more than one batch.

With several nodes on one store, one of them prunes each hour: a pass first takes the
named lease ``job:retention`` for most of the interval, and a node that finds it taken skips
its pass.
"""

from __future__ import annotations

import logging

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from engine.leases import take_turn
from engine.logs import loggable_error
from engine.store.base import PRUNED_TABLES, Store

log = logging.getLogger(__name__)


class Pruner(Service):
    """Every ``every_s``, prune what was received more than ``after_s`` ago."""

    def __init__(
        self, store: Store, clock: IReactorTime, after_s: float, every_s: float = 3600.0, batch: int = 200
    ) -> None:
        self.store = store
        self.clock = clock
        self.after_s = after_s
        self.every_s = every_s
        self.batch = batch
        self._loop: LoopingCall | None = None
        self._pass: Deferred[None] = succeed(None)

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._start_pass)
        self._loop.clock = self.clock
        self._loop.start(self.every_s, now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._pass

    def _start_pass(self) -> Deferred[None]:
        self._pass = self._my_turn()
        return self._pass

    @inlineCallbacks
    def _my_turn(self):
        """Prune unless another node has this interval's turn."""
        try:
            mine = yield take_turn(self.store, self.clock, "retention", self.every_s)
        except Exception as exc:
            log.error("retention: the store did not answer: %s", loggable_error(exc))
            return
        if mine:
            yield self.prune()

    @inlineCallbacks
    def prune(self):
        """One pass: batch after batch until nothing is left (or the engine stops)."""
        before = self.clock.seconds() - self.after_s
        done = dict.fromkeys(PRUNED_TABLES, 0)
        try:
            while self.running:
                pruned = yield self.store.prune_batch(before, self.batch)
                for table, count in pruned.items():
                    done[table] += count
                if not any(pruned.values()):
                    break
        except Exception as exc:  # the store failed: try again at the next pass
            log.error("retention: pruning failed: %s", loggable_error(exc))
        if any(done.values()):
            log.info(
                "retention: deleted %d messages, %d deliveries, %d events, %d outbox items and "
                "%d operator actions older than %g days",
                done["messages"],
                done["deliveries"],
                done["events"],
                done["outbox"],
                done["operator_actions"],
                self.after_s / 86400,
            )
