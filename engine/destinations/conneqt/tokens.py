"""The conneQt AccessToken: one per destination, stored encrypted (:mod:`engine.delivery.tokens`).

Unless ``access_token`` is written in the settings, the destination reads the stored one; at
start, a destination with an ``access_code`` and no stored token exchanges the code for one.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from twisted.internet import defer, threads

from engine.channel.config import Channel
from engine.channel.config import Destination as DestinationConfig
from engine.delivery.tokens import StoredToken, StoredTokens, missing_token
from engine.leases import take_turn
from engine.logs import loggable_error

log = logging.getLogger(__name__)

EXCHANGE_TURN_S = 60.0
"""How long other nodes leave the exchange to the node that started it."""


def token_key(channel: str, destination: str) -> str:
    return f"conneqt:{channel}/{destination}"


def stored_token(channel: Channel, config: DestinationConfig, tokens: StoredTokens) -> StoredToken | None:
    """The stored AccessToken, unless ``access_token`` is given in the settings."""
    if config.settings.get("access_token"):
        return None
    return tokens.get(token_key(channel.name, config.name))


@defer.inlineCallbacks
def exchange_access_code(reactor, queue) -> Generator[defer.Deferred, Any, None]:
    """A destination with an ``access_code`` and no stored token: exchange and store.

    A failed exchange is logged, not fatal: the queue then reports the missing token. An
    access code works once: of several nodes starting together, the one that takes the turn
    exchanges it, and the others read the stored token at their next reload.
    """
    stored = missing_token(queue.destination)
    code = queue.destination.settings.get("access_code")
    if stored is None or not code:
        return
    try:
        mine = yield take_turn(stored.store, reactor, f"conneqt-exchange:{queue.name}", EXCHANGE_TURN_S)
    except Exception as exc:  # the store did not answer: the queue reports the missing token
        log.error("queue %s: conneQt access code not exchanged: %s", queue.name, loggable_error(exc))
        return
    if not mine:
        log.warning("queue %s: another node exchanges the conneQt access code", queue.name)
        return
    try:
        token = yield threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), queue.destination.exchange_access_code, code
        )
    except Exception as exc:
        log.error("queue %s: conneQt access code exchange failed: %s", queue.name, loggable_error(exc))
        return
    yield stored.save(token)
    log.warning("queue %s: conneQt access code exchanged; the AccessToken is stored", queue.name)
