"""What a webhook route is and who it lets in, and how a webhook answers.

Every route is authenticated by what its vendor can send: Basic auth with a shared secret
(MedAllies; Qliq if its dashboard URL carries user:password), a secret path token of at least
128 random bits (Qliq's reply URL), or both. A :class:`Route` without either cannot be built.
The server (:mod:`engine.status.webhook_server`) applies them before it reads a body.

Each webhook is a Twisted web resource that answers only after its work is durable, so a
vendor that gets no 200 sends again and nothing is lost.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from engine.destinations.webhook_settings import path_token_problem
from engine.errors import ConfigError
from engine.logs import loggable_error

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BasicAuth:
    """HTTP Basic with one user and shared secret, compared in constant time."""

    def __init__(self, user: str, secret: str) -> None:
        self._user = user.encode()
        self._secret = secret.encode()

    def allows(self, headers: Headers) -> bool:
        header = (headers.getRawHeaders(b"Authorization") or [b""])[0]
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, _, secret = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        user_ok = hmac.compare_digest(user, self._user)
        return hmac.compare_digest(secret, self._secret) and user_ok


@dataclass(frozen=True)
class Route:
    """One webhook URL: ``name`` is its path without the secret (logs, ZIN-7); a ``token``
    goes in front of the last segment (``qliq/<channel>/<destination>/<token>/replies``)."""

    name: str
    resource: Resource
    basic: BasicAuth | None = None
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 64 * 1024
    allow_from: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        if self.basic is None and not self.token:
            raise ConfigError(f"webhook {self.name}: neither a path token nor Basic auth would let anyone in")
        problem = path_token_problem(self.token) if self.token else None
        if problem:
            raise ConfigError(f"webhook {self.name}: {problem}")

    @property
    def path(self) -> str:
        """The URL path the vendor is given (holds the token: never log it)."""
        if not self.token:
            return self.name
        head, _, last = self.name.rpartition("/")
        return f"{head}/{self.token}/{last}"

    @property
    def realm(self) -> str:
        return f"courier-{self.name.split('/', 1)[0]}"

    def matches(self, path: bytes) -> bool:
        """Whether ``path`` (no leading or trailing slash) is this route's, in constant time."""
        return hmac.compare_digest(self.path.encode(), path)


def networks(texts: tuple[str, ...] | None) -> tuple[Network, ...]:
    """``webhook_allow_from`` as networks (the spec has checked each one)."""
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts or ())


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
            log.error("%s: not stored, answering 500: %s", what, loggable_error(failure.value))
            finish(500, b"not stored, send again\n")

    work.addCallbacks(lambda _: finish(200, b"OK\n"), failed)
    return NOT_DONE_YET
