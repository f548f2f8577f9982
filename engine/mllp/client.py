"""The MLLP client: send a frame, wait for the whole reply frame, one exchange at a time.

Used by ``courier send`` and by the status reporter that sends HL7 back to the hospital.
A reply that does not come in time closes the connection, so a late ACK can never be
matched to the next message (Camel's CAMEL-17022, Mirth's #1441).
"""

from __future__ import annotations

import logging
from collections import deque

from twisted.internet import defer, protocol
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from engine.mllp.framing import BrokenFrame, Frame, Framer, Junk, Oversize, frame

log = logging.getLogger(__name__)

_COMMIT_ACCEPT = b"\x06"
_COMMIT_REJECT = b"\x15"


class ReplyTimeout(Exception):
    """No reply frame arrived in time; the connection was closed."""


class ConnectionLost(ConnectionError):
    """The connection closed (or was never open) before the reply came."""


class CommitRejected(Exception):
    """The peer answered with an MLLP release 2 negative commit byte (0x15)."""


class MLLPClientProtocol(protocol.Protocol):
    """Send frames and collect their replies in order."""

    def __init__(self, clock: IReactorTime, max_reply_bytes: int = 16 * 1024 * 1024) -> None:
        self.clock = clock
        self._framer = Framer(max_reply_bytes)
        self._waiting: deque[tuple[defer.Deferred[bytes], IDelayedCall | None]] = deque()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._connected = False

    def connectionMade(self) -> None:
        self._connected = True

    @property
    def is_open(self) -> bool:
        """False once the peer (or we) closed the connection."""
        return self._connected

    def send(self, payload: bytes, timeout: float | None = 30.0) -> defer.Deferred[bytes]:
        """Write ``payload`` framed; fire with the payload of its reply frame."""
        if not self._connected:
            return defer.fail(ConnectionLost("not connected"))
        d: defer.Deferred[bytes] = defer.Deferred()
        call = None if timeout is None else self.clock.callLater(timeout, self._timed_out)
        self._waiting.append((d, call))
        self.transport.write(frame(payload))
        return d

    def close(self) -> defer.Deferred[None]:
        if self._connected:
            self.transport.loseConnection()
        return self.closed

    def dataReceived(self, data: bytes) -> None:
        for event in self._framer.feed(data):
            if isinstance(event, Frame):
                self._received(event.payload)
            elif isinstance(event, (Junk, BrokenFrame)):
                log.error("MLLP client: peer sent bytes outside a frame: %r", event)
            elif isinstance(event, Oversize):
                self._fail_all(ConnectionError("reply frame too large"))
                self.transport.abortConnection()

    def _received(self, payload: bytes) -> None:
        if payload == _COMMIT_ACCEPT:
            return
        if not self._waiting:
            log.error("MLLP client: reply frame with no request waiting; discarded")
            return
        d, call = self._waiting.popleft()
        if call is not None and call.active():
            call.cancel()
        if payload == _COMMIT_REJECT:
            # A NAK frame may follow the 0x15: close, so it can never answer the next request.
            d.errback(CommitRejected("peer answered with MLLP negative commit (0x15)"))
            self.close()
        else:
            d.callback(payload)

    def _timed_out(self) -> None:
        self._fail_all(ReplyTimeout("no reply frame in time"))
        self.transport.abortConnection()

    def _fail_all(self, error: Exception) -> None:
        while self._waiting:
            d, call = self._waiting.popleft()
            if call is not None and call.active():
                call.cancel()
            d.errback(Failure(error))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._connected = False
        self._fail_all(ConnectionLost(f"connection lost: {reason.getErrorMessage()}"))
        self.closed.callback(None)


def connect(
    reactor: IReactorTime, endpoint: str, *, timeout: float = 10.0
) -> defer.Deferred[MLLPClientProtocol]:
    """Connect to a Twisted client endpoint string such as ``tcp:host=127.0.0.1:port=2575``."""
    description = endpoint if "timeout=" in endpoint else f"{endpoint}:timeout={timeout:g}"
    return connectProtocol(clientFromString(reactor, description), MLLPClientProtocol(reactor))
