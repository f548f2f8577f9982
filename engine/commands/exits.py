"""How long-running commands end: a failure to start is one line on stderr and a non-zero
exit code (a supervisor restarts on it), never a traceback and a zero status. Twisted is
imported inside the functions: the CLI imports this module to build its parser."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.python.failure import Failure

log = logging.getLogger("engine.exits")

CANNOT_START = 1
STDOUT_CLOSED = 141
"""128 + SIGPIPE: what a shell reports for a program whose output pipe was closed."""


def serve(reactor: Any, start: Callable[[], Any], command: str) -> int:
    """Run the reactor and call ``start`` once it runs; if ``start`` fails (or the Deferred it
    returns does), say why in one line and stop. 0 after an ordinary stop (a signal)."""
    from twisted.internet import defer
    from twisted.internet.error import ReactorNotRunning

    exit_code = 0

    def failed(failure: Failure) -> None:
        nonlocal exit_code
        exit_code = CANNOT_START
        print(f"courier {command}: cannot start: {reason(failure)}", file=sys.stderr, flush=True)
        log.debug("start-up failed", exc_info=(failure.type, failure.value, failure.getTracebackObject()))
        with suppress(ReactorNotRunning):  # a signal is already stopping it
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.maybeDeferred(start).addErrback(failed))
    reactor.run()
    return exit_code


def reason(failure: Failure) -> str:
    """The error's own message, unwrapped from ``gatherResults``' FirstError."""
    from twisted.internet import defer

    while failure.check(defer.FirstError):
        failure = failure.value.subFailure
    return failure.getErrorMessage()


def stdout_closed() -> int:
    """The reader of stdout went away (``| head``): point stdout at /dev/null so the final
    flush at exit cannot fail again, and end quietly with the shell's exit code for it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return STDOUT_CLOSED
