"""The MLLP listener: one Twisted protocol per connection, one factory per listener.

The protocol knows framing and bounds, nothing about HL7 content: each complete frame
goes to a :class:`FrameHandler`, whose reply (an ACK, or nothing) is written back.
One frame is in flight per connection, so replies leave strictly in arrival order;
reading pauses while too many frames wait.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from engine.logs import context_log, loggable_error
from engine.mllp.framing import (
    BrokenFrame,
    Frame,
    Framer,
    Junk,
    MissingCarriageReturn,
    Oversize,
    frame,
)

log = logging.getLogger(__name__)

COMMIT_ACCEPT = frame(b"\x06")
COMMIT_REJECT = frame(b"\x15")
DRAIN_GRACE_S = 30.0
"""How long a stopping listener waits for its connections to answer the frames they read."""


@dataclass(frozen=True)
class Limits:
    """The bounds every listener enforces (Mirth has none of these by default)."""

    max_message_bytes: int = 16 * 1024 * 1024
    idle_timeout_s: float = 300.0
    frame_timeout_s: float = 30.0
    max_connections: int = 64
    max_pending_frames: int = 16
    mllp_release2: bool = False


@dataclass(frozen=True)
class Reply:
    """What to send back for one frame: ``payload`` is framed; None sends nothing."""

    payload: bytes | None
    committed: bool = True
    """For MLLP release 2: whether the message reached safe storage (0x06) or not (0x15)."""


class FrameHandler(TypingProtocol):
    """Turns one frame into its reply; the source of a channel implements this."""

    def handle_frame(self, payload: bytes, peer: str) -> defer.Deferred[Reply]: ...

    def refuse_oversize(self, head: bytes, peer: str) -> bytes | None:
        """A NAK for a frame that exceeded the size limit, if its MSH is readable."""
        ...

    def refuse_failed(self, payload: bytes, peer: str) -> bytes | None:
        """A NAK (AR/CR 207) for a frame whose ``handle_frame`` failed, or None when the
        frame must get no answer (an inbound ACK). Must not fail the way handling did."""
        ...


def describe(address: IAddress) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


class MLLPServerProtocol(protocol.Protocol):
    """One MLLP connection: frames in, replies out, bounds enforced."""

    factory: MLLPServerFactory

    def __init__(self) -> None:
        self.peer = "?"
        self._framer: Framer | None = None
        self._pending: deque[bytes] = deque()
        self._busy = False
        self._in_loop = False
        self._paused = False
        self._closing = False
        self._idle_call: IDelayedCall | None = None
        self._frame_call: IDelayedCall | None = None
        self._draining = False
        self.closed: defer.Deferred[None] = defer.Deferred()
        """Fires once the connection is gone (:meth:`MLLPServerFactory.drain` waits for it)."""

    @property
    def reading_paused(self) -> bool:
        """True while reading is paused because too many frames wait for their replies."""
        return self._paused

    # Twisted callbacks

    def connectionMade(self) -> None:
        factory = self.factory
        self.peer = describe(self.transport.getPeer())
        factory.connections += 1
        if factory.connections > factory.limits.max_connections:
            self.factory.log.error(
                "listener %s: refusing connection from %s: %d connections open (max %d)",
                factory.name,
                self.peer,
                factory.connections - 1,
                factory.limits.max_connections,
            )
            self._close(abort=True)
            return
        self._framer = Framer(factory.limits.max_message_bytes)
        factory.open.add(self)
        self.factory.log.info("listener %s: connection from %s", factory.name, self.peer)
        self._touch()

    def dataReceived(self, data: bytes) -> None:
        if self._closing or self._framer is None:
            return
        self._touch()
        for event in self._framer.feed(data):
            if isinstance(event, Frame):
                self._pending.append(event.payload)
            elif isinstance(event, Junk):
                self.factory.log.error(
                    "listener %s: %s: discarded %d bytes outside an MLLP frame",
                    self.factory.name,
                    self.peer,
                    event.count,
                )
            elif isinstance(event, MissingCarriageReturn):
                self.factory.log.warning(
                    "listener %s: %s: frame ended with <FS> but no <CR>; accepted",
                    self.factory.name,
                    self.peer,
                )
            elif isinstance(event, BrokenFrame):
                self.factory.log.error(
                    "listener %s: %s: start block inside an unfinished frame; discarded "
                    "%d bytes of the broken frame, reading the new one",
                    self.factory.name,
                    self.peer,
                    event.discarded,
                )
            elif isinstance(event, Oversize):
                self._refuse_oversize(event.head)
                return
        self._watch_frame()
        self._next()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closing = True  # an answer still in flight must not start an idle timer
        self._cancel_timers()
        self.factory.connections -= 1
        self.factory.open.discard(self)
        self.closed.callback(None)
        if self._framer is not None and self._framer.in_frame:
            self.factory.log.error(
                "listener %s: %s: connection closed inside a frame; %d bytes discarded",
                self.factory.name,
                self.peer,
                self._framer.buffered,
            )
        if self._pending:
            self.factory.log.error(
                "listener %s: %s: connection lost with %d frames not yet handled; they were "
                "not acknowledged, so the sender will resend them",
                self.factory.name,
                self.peer,
                len(self._pending),
            )
            self._pending.clear()

    # Frame processing, strictly one at a time

    def _next(self) -> None:
        """Handle the queued frames in order, one in flight at a time.

        A loop, not a chain of calls: a reply that is ready at once (an unreadable frame, a
        refusal) lets the loop take the next frame, where a callback calling back into
        ``_next`` would recurse once per pipelined frame.
        """
        if self._in_loop:
            return  # the loop below is running further up this stack and goes on by itself
        self._in_loop = True
        try:
            while not self._busy and not self._closing and self._pending:
                self._busy = True
                payload = self._pending.popleft()
                try:
                    d = self.factory.handler.handle_frame(payload, self.peer)
                except Exception:
                    d = defer.fail()
                d.addCallbacks(self._reply, self._handler_failed, errbackArgs=(payload,))
                d.addErrback(self._unanswered)
                d.addBoth(self._done)
        finally:
            self._in_loop = False
        self._flow_control()

    def _flow_control(self) -> None:
        """Stop reading while ``max_pending_frames`` wait (busy or not); read again once none do."""
        if self._closing or self._draining:
            return
        if len(self._pending) >= self.factory.limits.max_pending_frames and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
            self._watch_frame()
        elif not self._pending and self._paused:
            self._paused = False
            self.transport.resumeProducing()
            self._watch_frame()

    def _reply(self, reply: Reply) -> None:
        if self._closing:
            return
        if self.factory.limits.mllp_release2:
            self.transport.write(COMMIT_ACCEPT if reply.committed else COMMIT_REJECT)
        if reply.payload is not None:
            self.transport.write(frame(reply.payload))

    def _handler_failed(self, failure: Failure, payload: bytes) -> None:
        """Answer a frame whose handling failed with the handler's NAK and keep serving.

        Closing instead would make the sender resend the same frame for ever, stalling the
        feed behind it; only when even the NAK cannot be built is the connection closed.
        """
        self.factory.log.error(
            "listener %s: %s: internal error handling a frame (%s); answering with a NAK",
            self.factory.name,
            self.peer,
            loggable_error(failure.value),
        )
        try:
            nak = self.factory.handler.refuse_failed(payload, self.peer)
        except Exception as error:
            self.factory.log.error(
                "listener %s: %s: could not build the NAK either (%s); closing so the sender resends",
                self.factory.name,
                self.peer,
                type(error).__name__,
            )
            self._close(abort=False)
            return
        self._reply(Reply(nak, committed=False))

    def _unanswered(self, failure: Failure) -> None:
        """Writing the answer itself failed: say so and close, so the sender resends."""
        self.factory.log.error(
            "listener %s: %s: could not answer a frame (%s); closing so the sender resends",
            self.factory.name,
            self.peer,
            failure.type.__name__,
        )
        self._close(abort=False)

    def _done(self, _: object) -> None:
        self._busy = False
        self._touch()
        self._next()
        self._close_if_drained()

    # Draining (the listener stops: a channel reloaded or removed)

    def drain(self) -> defer.Deferred[None]:
        """Read nothing more, answer every frame already read, then close; fires once closed.

        Bytes not yet read (a frame half sent) are never acknowledged, so the sender sends
        them again on its next connection, as after any lost connection.
        """
        if not self._closing and not self._draining:
            self._draining = True
            self.transport.pauseProducing()
            self._close_if_drained()
        return self.closed

    def _close_if_drained(self) -> None:
        """Close once every frame read is answered; reading again first, so that a TLS close
        (which waits for the peer's close_notify) and the peer's own close are seen."""
        if self._draining and not self._closing and not self._busy and not self._pending:
            self._close(abort=False)
            self.transport.resumeProducing()

    # Bounds

    def _refuse_oversize(self, head: bytes) -> None:
        limit = self.factory.limits.max_message_bytes
        self.factory.log.error(
            "listener %s: %s: frame exceeds max_message_bytes=%d; refused and closing",
            self.factory.name,
            self.peer,
            limit,
        )
        nak = self.factory.handler.refuse_oversize(head, self.peer)
        if nak is not None and not self._busy and not self._pending:
            self.transport.write(frame(nak))
        self._close(abort=False)

    def _touch(self) -> None:
        timeout = self.factory.limits.idle_timeout_s
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(timeout)
        elif not self._closing:
            self._idle_call = self.factory.clock.callLater(timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        if self._busy or self._pending:
            self._touch()
            return
        self.factory.log.info(
            "listener %s: %s: idle for %ss; closing",
            self.factory.name,
            self.peer,
            self.factory.limits.idle_timeout_s,
        )
        self._close(abort=False)

    def _watch_frame(self) -> None:
        """Time a started frame only while we read: while reading is paused the rest of the frame
        waits in our own socket buffer, and a sender must never be reset for our slowness."""
        in_frame = self._framer is not None and self._framer.in_frame and not self._paused
        if in_frame and self._frame_call is None:
            self._frame_call = self.factory.clock.callLater(
                self.factory.limits.frame_timeout_s, self._frame_timeout
            )
        elif not in_frame and self._frame_call is not None:
            if self._frame_call.active():
                self._frame_call.cancel()
            self._frame_call = None

    def _frame_timeout(self) -> None:
        self._frame_call = None
        buffered = self._framer.buffered if self._framer else 0
        self.factory.log.error(
            "listener %s: %s: frame not finished within %ss; dropped %d bytes and closing",
            self.factory.name,
            self.peer,
            self.factory.limits.frame_timeout_s,
            buffered,
        )
        self._close(abort=True)

    def _cancel_timers(self) -> None:
        for call in (self._idle_call, self._frame_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._frame_call = None

    def _close(self, *, abort: bool) -> None:
        self._closing = True
        self._cancel_timers()
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()


class MLLPServerFactory(protocol.ServerFactory):
    """One listener: its name (for logs), bounds, clock and the handler of its frames."""

    protocol = MLLPServerProtocol

    def __init__(
        self, name: str, handler: FrameHandler, clock: IReactorTime, limits: Limits = Limits()
    ) -> None:
        self.name = name
        self.handler = handler
        self.clock = clock
        self.limits = limits
        self.connections = 0
        self.log = context_log(log, channel=name)
        """The module's logger with this listener's name as the channel of each line."""
        self.open: set[MLLPServerProtocol] = set()
        """The connections being served (refused ones are not)."""

    def drain(self, grace_s: float = DRAIN_GRACE_S) -> defer.Deferred[None]:
        """Every connection answers what it has read and closes (:meth:`MLLPServerProtocol.drain`);
        one still open after ``grace_s`` (a handler that never answers) is aborted."""
        connections = list(self.open)
        waiting = defer.DeferredList([connection.drain() for connection in connections])
        late = self.clock.callLater(grace_s, _abort_open, self.name, connections)
        return waiting.addCallback(lambda _: late.cancel() if late.active() else None)


def _abort_open(name: str, connections: list[MLLPServerProtocol]) -> None:
    still = [c for c in connections if not c.closed.called]
    if still:
        log.error(
            "listener %s: %d connections still busy after the drain grace time; aborted", name, len(still)
        )
    for connection in still:
        connection.transport.abortConnection()
