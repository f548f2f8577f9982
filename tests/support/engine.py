"""Start real pieces of the engine on the session reactor for tests."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import endpoints

from engine.mllp.server import Limits, MLLPServerFactory
from engine.store import Cipher, SQLiteStore
from tests.conftest import on_reactor

TEST_KEY = os.urandom(32)


def open_store(reactor, path: Path, **kwargs) -> SQLiteStore:
    store = SQLiteStore(path, reactor=reactor, cipher=Cipher(TEST_KEY), **kwargs)
    on_reactor(store.start)
    return store


def listen(reactor, name: str, handler, limits: Limits | None = None, wrap=None):
    """Listen on a free loopback port; returns (port number, listening port, factory)."""
    factory = MLLPServerFactory(name, handler, reactor, limits or Limits())
    served = wrap(factory) if wrap else factory
    endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = on_reactor(endpoint.listen, served)
    return port.getHost().port, port, factory
