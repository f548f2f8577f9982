"""The admin endpoint's HTTP server, within the webhooks' pre-auth limits
(:mod:`engine.limited_http`): bounded headers, connections and deadlines, and a small body
(the console posts short forms), all judged before a byte of the body is read."""

from __future__ import annotations

from http import HTTPStatus

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource

from engine.limited_http import LimitedChannel, LimitedRequest, LimitedSite, Refusal
from engine.status.webhook_limits import ServerLimits
from engine.tls import TLSSettings, wrap_server_factory

MAX_BODY_BYTES = 16 * 1024
METHODS = (b"GET", b"HEAD", b"POST")


class _AdminChannel(LimitedChannel):
    def judge(self, request: LimitedRequest) -> Refusal | None:
        if self._command not in METHODS:
            return Refusal(HTTPStatus.METHOD_NOT_ALLOWED, (("Allow", "GET, HEAD, POST"),))
        if self.length is not None and self.length > MAX_BODY_BYTES:
            return Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        request.max_body_bytes = MAX_BODY_BYTES
        return None


class AdminSite(LimitedSite):
    protocol = _AdminChannel


def listen(
    reactor: object,
    endpoint: str,
    root: Resource,
    tls: TLSSettings | None = None,
    limits: ServerLimits | None = None,
) -> Deferred[IListeningPort]:
    """Serve ``root`` on a Twisted server endpoint string, over TLS when ``tls`` is given."""
    site = AdminSite("admin", root, limits or ServerLimits(), reactor)
    served = wrap_server_factory(site, tls) if tls is not None else site
    return serverFromString(reactor, endpoint).listen(served)
