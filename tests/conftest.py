"""Shared test fixtures.

Twisted's reactor runs once per test session in a background thread. Tests talk to the
servers it hosts over real loopback sockets with ordinary blocking clients, and reach into
the reactor thread with :func:`on_reactor` (``blockingCallFromThread``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.threads import blockingCallFromThread

T = TypeVar("T")

pytest_plugins = ["tests.support.postgres"]  # postgres_server, postgres_url, store_location

_thread: threading.Thread | None = None

# Tests stop `courier run` and friends with SIGINT, as a user's Ctrl-C. A shell that starts the
# suite in the background (`pytest &`, no job control) ignores SIGINT for it and, through exec,
# for every engine it starts, which then never stop. Catching it here gives them the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _start_reactor() -> None:
    global _thread
    if _thread is not None:
        return
    _thread = threading.Thread(
        target=_reactor.run, kwargs={"installSignalHandlers": False}, daemon=True, name="reactor"
    )
    _thread.start()


def on_reactor(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in the reactor thread and wait for its result (Deferreds are awaited)."""
    _start_reactor()
    return blockingCallFromThread(_reactor, fn, *args, **kwargs)


@pytest.fixture(scope="session")
def reactor():
    """The running global reactor; use with :func:`on_reactor`."""
    _start_reactor()
    yield _reactor


@pytest.fixture(scope="session", autouse=True)
def _stop_reactor_at_exit():
    yield
    if _thread is not None:
        _reactor.callFromThread(_reactor.stop)
        _thread.join(timeout=5)
