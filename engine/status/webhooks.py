"""What the vendor webhooks share: serving them (TLS-capable), Basic auth, answering late.

Each webhook is a Twisted web resource that answers only after its work is durable, so a
vendor that gets no 200 sends again and nothing is lost.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from engine.tls import TLSSettings, wrap_server_factory

log = logging.getLogger(__name__)


class BasicAuth:
    """HTTP Basic with one user and shared secret, compared in constant time."""

    def __init__(self, user: str, secret: str) -> None:
        self._user = user.encode()
        self._secret = secret.encode()

    def allows(self, request: Request) -> bool:
        header = request.getHeader("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, secret = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        user_ok = hmac.compare_digest(user, self._user)
        return hmac.compare_digest(secret, self._secret) and user_ok


def refuse_unauthorised(request: Request, realm: str) -> bytes:
    request.setResponseCode(401)
    request.setHeader("WWW-Authenticate", f'Basic realm="{realm}"')
    return b"unauthorised\n"


def answer(request: Request, code: int, body: bytes = b"") -> bytes:
    request.setResponseCode(code)
    request.setHeader("Content-Type", "text/plain; charset=utf-8")
    return body


def answer_when_done(
    request: Request, work: Deferred[object], what: str, refused: tuple[type[Exception], ...] = ()
) -> object:
    """Answer 200 once ``work`` fires; 400 if it fails with one of ``refused`` (the vendor sent
    something we will never accept); 500 otherwise, so the vendor sends it again."""
    hung_up: list[Failure] = []
    request.notifyFinish().addErrback(hung_up.append)

    def finish(code: int, body: bytes) -> None:
        if not hung_up:
            request.write(answer(request, code, body))
            request.finish()

    def failed(failure: Failure) -> None:
        if refused and failure.check(*refused):
            log.warning("%s: refused: %s", what, failure.getErrorMessage())
            finish(400, b"refused\n")
        else:
            log.error("%s: not stored, answering 500: %s", what, failure.getErrorMessage())
            finish(500, b"not stored, send again\n")

    work.addCallbacks(lambda _: finish(200, b"OK\n"), failed)
    return NOT_DONE_YET


def listen(
    reactor: object, endpoint: str, routes: dict[str, Resource], tls: TLSSettings | None = None
) -> Deferred[IListeningPort]:
    """Serve ``routes`` (URL path such as ``medallies/<channel>/<destination>/dsn`` → resource) on a Twisted
    server endpoint string, over TLS when ``tls`` is given."""
    root = _Branch()
    for path, resource in routes.items():
        parent, *names = [root, *path.strip("/").encode().split(b"/")]
        for name in names[:-1]:
            parent = parent.children.get(name) or _child(parent, name)
        parent.putChild(names[-1], resource)
    factory = Site(root)
    served = wrap_server_factory(factory, tls) if tls is not None else factory
    return serverFromString(reactor, endpoint).listen(served)


class _Branch(Resource):
    """A path segment on the way to a webhook; anything else below it is 404.

    A path may carry a secret token (Qliq's reply URL), so segments are compared in constant
    time rather than by dictionary lookup, which would leak how much of a guess was right.
    """

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        found = None
        for name, child in self.children.items():
            if hmac.compare_digest(name, path):
                found = child
        return found if found is not None else notFound()


def _child(parent: Resource, name: bytes) -> Resource:
    child = _Branch()
    parent.putChild(name, child)
    return child
