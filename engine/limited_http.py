"""An HTTP server that bounds what a stranger can make it read before it knows who calls.

Shared by the webhooks (:mod:`engine.status.webhook_server`) and the admin endpoint
(:mod:`engine.admin.server`). A request is judged as soon as its headers are in, before one
byte of its body is read (:meth:`LimitedChannel.judge`, each server's own rules). A chunked
body is counted as it arrives and refused with 413 the moment it passes the request's
``max_body_bytes``. Each refusal is one short answer, then the connection is closed (and
aborted if the peer does not let it close), so nothing refused is ever buffered.

Server-wide bounds (:class:`ServerLimits`): the request line and headers together, the number
of headers, open connections (503 above), and two absolute deadlines, one for the headers
(from the connection or the previous answer) and one for the body (from the end of the
headers); a client that sends a byte now and then cannot extend either (408, then closed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus

from twisted.internet.interfaces import IDelayedCall
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from engine.status.webhook_limits import ServerLimits

log = logging.getLogger(__name__)

_CLOSE_GRACE_S = 2.0  # a refused peer that does not let the connection close is aborted


@dataclass(frozen=True)
class Refusal:
    status: HTTPStatus
    headers: tuple[tuple[str, str], ...] = ()


class LimitedRequest(Request):
    """A request that counts its body against ``max_body_bytes`` (set when it is admitted)."""

    max_body_bytes: int | None = None
    label = ""  # what the refusal log line names (a webhook route), never a secret
    _body_bytes = 0

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or channel.refused:
            return
        self._body_bytes += len(data)
        if self.max_body_bytes is not None and self._body_bytes > self.max_body_bytes:
            channel.refuse(Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE), self.label)
            return
        super().handleContentChunk(data)

    def peer_host(self) -> str:
        """The caller's IP address (logged with every document; never a secret)."""
        return host_of(self.channel.transport) if self.channel is not None else "?"


class LimitedChannel(HTTPChannel):
    """One connection: admits or refuses each request once its headers are in."""

    site: LimitedSite
    refused = False
    _deadline: IDelayedCall | None = None
    _abort: IDelayedCall | None = None
    _counted = False

    def judge(self, request: LimitedRequest) -> Refusal | None:
        """The refusal for a request whose headers are in, or None to admit it (then set
        its ``max_body_bytes``). Subclasses say."""
        raise NotImplementedError

    def connectionMade(self) -> None:
        limits = self.site.limits
        self.maxHeaders = limits.max_headers
        self.totalHeadersSize = limits.max_header_bytes
        self.MAX_LENGTH = limits.max_header_bytes
        super().connectionMade()
        if self.site.connections >= limits.max_connections:
            log.warning(
                "%s: %d connections open; refused one from %s",
                self.site.name,
                limits.max_connections,
                self._peer(),
            )
            self.refuse(Refusal(HTTPStatus.SERVICE_UNAVAILABLE, (("Retry-After", "5"),)), "")
            return
        self.site.connections += 1
        self._counted = True
        self._start_deadline(limits.header_timeout_s)

    def connectionLost(self, reason: object) -> None:
        self._cancel_deadline()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        if self._counted:
            self.site.connections -= 1
            self._counted = False
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        if self.refused:  # Twisted refused a header, then read on to the end of the buffer
            return
        self._cancel_deadline()
        request = self.requests[-1]
        refusal = self.judge(request)
        if refusal is not None:
            self.refuse(refusal, request.label)
            return
        super().allHeadersReceived()
        if self.length != 0:
            self._start_deadline(self.site.limits.body_timeout_s)

    def allContentReceived(self) -> None:
        if self.refused:
            return
        self._cancel_deadline()
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        # Before the base class replays a pipelined request, which may set its own deadline.
        if self.persistent and not self.refused:
            self._start_deadline(self.site.limits.header_timeout_s)
        super().requestDone(request)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's answer to a malformed request line or header, or too many or too large
        headers: refused like the rest (logged, closed, aborted if the peer holds on)."""
        self.refuse(Refusal(HTTPStatus.BAD_REQUEST), "")

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(Refusal(HTTPStatus.BAD_REQUEST), "")

    def refuse(self, refusal: Refusal, label: str) -> None:
        """Answer ``refusal`` and close; nothing more is read from this connection."""
        if self.refused:
            return
        self.refused = True
        self._cancel_deadline()
        status = refusal.status
        quiet = status in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED)
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "%s %s: refused a request from %s: %d %s",
            self.site.name,
            label or "(unknown path)",
            self._peer(),
            status.value,
            status.phrase,
        )
        body = f"{status.phrase}\n".encode()
        head = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            "Connection: close",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in refusal.headers),
        ]
        self.transport.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        self.loseConnection()
        self._abort = self.callLater(_CLOSE_GRACE_S, self.transport.abortConnection)

    def _too_slow(self) -> None:
        self._deadline = None
        label = self.requests[-1].label if self.requests else ""
        self.refuse(Refusal(HTTPStatus.REQUEST_TIMEOUT), label)

    def _start_deadline(self, seconds: float) -> None:
        self._cancel_deadline()
        self._deadline = self.callLater(seconds, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _peer(self) -> str:
        return host_of(self.transport)


class LimitedSite(Site):
    """A :class:`Site` whose channels enforce :class:`ServerLimits`; ``name`` starts its log lines."""

    requestFactory = LimitedRequest
    protocol = LimitedChannel

    def __init__(self, name: str, resource: Resource, limits: ServerLimits, reactor: object) -> None:
        super().__init__(resource, timeout=None, reactor=reactor)
        self.name = name
        self.limits = limits
        self.connections = 0

    def log(self, request: Request) -> None:
        """No access log: request lines can carry a path token or a control id."""


def host_of(transport: object) -> str:
    peer = transport.getPeer() if transport is not None else None
    return str(getattr(peer, "host", "?"))
