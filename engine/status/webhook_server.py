"""The webhooks' HTTP server: everything a stranger can make it read is bounded before it
knows who is calling.

A request is judged as soon as its headers are in, before one byte of its body is read:
unknown path → 404, a source address outside the route's ``allow_from`` → 403, any method but
POST → 405 with ``Allow: POST``, wrong or missing credentials → 401, a ``Content-Length``
above the route's body limit → 413. A chunked body is counted as it arrives and refused with
413 the moment it passes the limit. Each refusal is one short answer, then the connection is
closed (and aborted if the peer does not let it close), so nothing refused is ever buffered.

Server-wide bounds (:class:`ServerLimits`): the request line and headers together, the number
of headers, open connections (503 above), and two absolute deadlines, one for the headers
(from the connection or the previous answer) and one for the body (from the end of the
headers); a client that sends a byte now and then cannot extend either (408, then closed).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from engine.status.webhook_limits import ServerLimits
from engine.status.webhooks import Route
from engine.tls import TLSSettings, wrap_server_factory

log = logging.getLogger(__name__)

_CLOSE_GRACE_S = 2.0  # a refused peer that does not let the connection close is aborted


@dataclass(frozen=True)
class _Refusal:
    status: HTTPStatus
    headers: tuple[tuple[str, str], ...] = ()


def listen(
    reactor: object,
    endpoint: str,
    routes: Iterable[Route],
    tls: TLSSettings | None = None,
    limits: ServerLimits | None = None,
) -> Deferred[IListeningPort]:
    """Serve ``routes`` on a Twisted server endpoint string, over TLS when ``tls`` is given."""
    return serve(reactor, endpoint, WebhookSite(routes, limits or ServerLimits(), reactor), tls)


def serve(
    reactor: object, endpoint: str, site: WebhookSite, tls: TLSSettings | None = None
) -> Deferred[IListeningPort]:
    """Serve ``site`` (whose routes a reload may replace while it serves), over TLS with ``tls``."""
    served = wrap_server_factory(site, tls) if tls is not None else site
    return serverFromString(reactor, endpoint).listen(served)


class _Dispatch(Resource):
    """The one resource the site renders: the route the request was admitted to."""

    isLeaf = True

    def render(self, request: Request) -> object:
        return request.route.resource.render(request)


class WebhookRequest(Request):
    """A request that knows its :class:`Route` once admitted, and counts a chunked body."""

    route: Route | None = None
    _body_bytes = 0

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or channel.refused:
            return
        self._body_bytes += len(data)
        if self.route is not None and self._body_bytes > self.route.max_body_bytes:
            channel.refuse(_Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE), self.route.name)
            return
        super().handleContentChunk(data)

    def peer_host(self) -> str:
        """The caller's IP address (logged with every document; never a secret)."""
        return _host(self.channel.transport) if self.channel is not None else "?"


class _WebhookChannel(HTTPChannel):
    """One connection: admits or refuses each request once its headers are in."""

    site: WebhookSite
    refused = False
    _deadline: IDelayedCall | None = None
    _abort: IDelayedCall | None = None
    _counted = False

    def connectionMade(self) -> None:
        limits = self.site.limits
        self.maxHeaders = limits.max_headers
        self.totalHeadersSize = limits.max_header_bytes
        self.MAX_LENGTH = limits.max_header_bytes
        super().connectionMade()
        if self.site.connections >= limits.max_connections:
            log.warning(
                "webhooks: %d connections open; refused one from %s", limits.max_connections, self._peer()
            )
            self.refuse(_Refusal(HTTPStatus.SERVICE_UNAVAILABLE, (("Retry-After", "5"),)), "")
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
        route = self.site.route_for(self._path)
        refusal = self._judge(route, request.requestHeaders)
        if refusal is not None:
            self.refuse(refusal, route.name if route else "")
            return
        request.route = route
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
        self.refuse(_Refusal(HTTPStatus.BAD_REQUEST), "")

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(_Refusal(HTTPStatus.BAD_REQUEST), "")

    def _judge(self, route: Route | None, headers: Headers) -> _Refusal | None:
        if route is None:
            return _Refusal(HTTPStatus.NOT_FOUND)
        if route.allow_from and not address_in(self._peer(), route.allow_from):
            return _Refusal(HTTPStatus.FORBIDDEN)
        if self._command != b"POST":
            return _Refusal(HTTPStatus.METHOD_NOT_ALLOWED, (("Allow", "POST"),))
        if route.basic is not None and not route.basic.allows(headers):
            return _Refusal(HTTPStatus.UNAUTHORIZED, (("WWW-Authenticate", f'Basic realm="{route.realm}"'),))
        if self.length is not None and self.length > route.max_body_bytes:
            return _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return None

    def refuse(self, refusal: _Refusal, route_name: str) -> None:
        """Answer ``refusal`` and close; nothing more is read from this connection."""
        if self.refused:
            return
        self.refused = True
        self._cancel_deadline()
        status = refusal.status
        quiet = status in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED)
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "webhook %s: refused a request from %s: %d %s",
            route_name or "(unknown path)",
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
        route = self.requests[-1].route if self.requests else None
        self.refuse(_Refusal(HTTPStatus.REQUEST_TIMEOUT), route.name if route else "")

    def _start_deadline(self, seconds: float) -> None:
        self._cancel_deadline()
        self._deadline = self.callLater(seconds, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _peer(self) -> str:
        return _host(self.transport)


class WebhookSite(Site):
    """A :class:`Site` of :class:`Route` objects, whose channels enforce :class:`ServerLimits`."""

    requestFactory = WebhookRequest
    protocol = _WebhookChannel

    def __init__(self, routes: Iterable[Route], limits: ServerLimits, reactor: object) -> None:
        super().__init__(_Dispatch(), timeout=None, reactor=reactor)
        self.routes = tuple(routes)
        self.limits = limits
        self.connections = 0

    def log(self, request: Request) -> None:
        """No access log: request lines can carry a path token."""

    def route_for(self, path: bytes) -> Route | None:
        """The route whose URL path is ``path``, compared in constant time with every route
        (a path can carry a secret token)."""
        wanted = path.split(b"?", 1)[0].strip(b"/")
        found = None
        for route in self.routes:
            if route.matches(wanted):
                found = route
        return found


def _host(transport: object) -> str:
    peer = transport.getPeer() if transport is not None else None
    return str(getattr(peer, "host", "?"))


def address_in(host: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether ``host`` (an IP address, IPv4-mapped IPv6 read as IPv4) is in one of ``networks``."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
