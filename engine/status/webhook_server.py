"""The webhooks' HTTP server: everything a stranger can make it read is bounded before it
knows who is calling (:mod:`engine.limited_http`).

A request is judged as soon as its headers are in, before one byte of its body is read:
unknown path → 404, a source address outside the route's ``allow_from`` → 403, any method but
POST → 405 with ``Allow: POST``, wrong or missing credentials → 401, a ``Content-Length``
above the route's body limit → 413; a chunked body is refused the moment it passes that limit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from http import HTTPStatus

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from engine.limited_http import LimitedChannel, LimitedRequest, LimitedSite, Refusal
from engine.status.webhook_limits import ServerLimits
from engine.status.webhooks import Route
from engine.tls import TLSSettings, wrap_server_factory


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


class WebhookRequest(LimitedRequest):
    """A request that knows its :class:`Route` once admitted."""

    route: Route | None = None


class _WebhookChannel(LimitedChannel):
    """One connection: each request is admitted to its route or refused."""

    site: WebhookSite

    def judge(self, request: WebhookRequest) -> Refusal | None:
        route = self.site.route_for(self._path)
        refusal = self._judge(route, request.requestHeaders)
        if route is not None:
            request.label = route.name
        if refusal is None:
            request.route = route
            request.max_body_bytes = route.max_body_bytes
        return refusal

    def _judge(self, route: Route | None, headers: Headers) -> Refusal | None:
        if route is None:
            return Refusal(HTTPStatus.NOT_FOUND)
        if route.allow_from and not address_in(self._peer(), route.allow_from):
            return Refusal(HTTPStatus.FORBIDDEN)
        if self._command != b"POST":
            return Refusal(HTTPStatus.METHOD_NOT_ALLOWED, (("Allow", "POST"),))
        if route.basic is not None and not route.basic.allows(headers):
            return Refusal(HTTPStatus.UNAUTHORIZED, (("WWW-Authenticate", f'Basic realm="{route.realm}"'),))
        if self.length is not None and self.length > route.max_body_bytes:
            return Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return None


class WebhookSite(LimitedSite):
    """A site of :class:`Route` objects, whose channels enforce :class:`ServerLimits`."""

    requestFactory = WebhookRequest
    protocol = _WebhookChannel

    def __init__(self, routes: Iterable[Route], limits: ServerLimits, reactor: object) -> None:
        super().__init__("webhook", _Dispatch(), limits, reactor)
        self.routes = tuple(routes)

    def route_for(self, path: bytes) -> Route | None:
        """The route whose URL path is ``path``, compared in constant time with every route
        (a path can carry a secret token)."""
        wanted = path.split(b"?", 1)[0].strip(b"/")
        found = None
        for route in self.routes:
            if route.matches(wanted):
                found = route
        return found


def address_in(host: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether ``host`` (an IP address, IPv4-mapped IPv6 read as IPv4) is in one of ``networks``."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
