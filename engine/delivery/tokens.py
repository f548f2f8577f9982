"""Vendor access tokens kept encrypted in the store and read by the destinations.

A token (under a key its destination type chooses: ``DestinationPlugin.token``) is written to
the store's kv (namespace ``tokens``) when it is obtained, by the engine or by a
``courier <type> …`` command in another process. The engine loads every token at start and
reloads them every ``refresh_s``, so a token authorised meanwhile is used without a restart.
Destinations call :meth:`StoredToken.token` from worker threads: it only reads the value
cached in memory, never the store.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from engine.logs import loggable_error
from engine.store.base import Store

log = logging.getLogger(__name__)

NAMESPACE = "tokens"
DEFAULT_REFRESH_S = 30.0


class StoredToken:
    """One token: the :class:`~engine.destinations.base.TokenProvider` a destination reads."""

    def __init__(self, store: Store, key: str) -> None:
        self.key = key
        self.store = store
        self._value: str | None = None

    def token(self) -> str | None:
        return self._value

    def load(self) -> Deferred[str | None]:
        """Read the stored token (None when there is none yet) into memory."""
        return self.store.kv_get(NAMESPACE, self.key).addCallback(self._loaded)

    def _loaded(self, value: bytes | None) -> str | None:
        self._value = value.decode() if value else None
        return self._value

    def save(self, value: str) -> Deferred[None]:
        """Store a newly obtained token; it is used as soon as it is committed."""
        d = self.store.kv_put(NAMESPACE, self.key, value.encode())
        return d.addCallback(lambda _: self._loaded(value.encode())).addCallback(lambda _: None)


def missing_token(destination: Any) -> StoredToken | None:
    """The destination's stored token when it reads one and none is stored yet."""
    provider = destination.token_provider
    if not isinstance(provider, StoredToken):
        return None
    return provider if provider.token() is None else None


class StoredTokens(Service):
    """Every stored token the engine's destinations read, reloaded together every ``refresh_s``."""

    def __init__(self, store: Store, clock: IReactorTime, refresh_s: float = DEFAULT_REFRESH_S) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._tokens: dict[str, StoredToken] = {}
        self._loop = LoopingCall(self._refresh)
        self._loop.clock = clock

    def get(self, key: str) -> StoredToken:
        """The one :class:`StoredToken` for ``key`` (created on first use)."""
        if key not in self._tokens:
            self._tokens[key] = StoredToken(self._store, key)
        return self._tokens[key]

    def load(self) -> Deferred[None]:
        """Read every token into memory (the engine does this before its queues start)."""
        loads = [token.load() for token in self._tokens.values()]
        return gatherResults(loads, consumeErrors=True).addCallback(lambda _: None)

    def _refresh(self) -> Deferred[None]:
        return self.load().addErrback(
            lambda failure: log.warning("reloading stored tokens failed: %s", loggable_error(failure.value))
        )

    def startService(self) -> None:
        super().startService()
        self._loop.start(self._refresh_s, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
