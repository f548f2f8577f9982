"""Who is asking: the console's sessions, bearer tokens, and the checks on every action.

A browser logs in once (name and secret) and gets a session cookie (HttpOnly, SameSite=Strict,
Secure over TLS); the session carries a synchronizer token every action form posts back, and
an action is refused unless that token matches and the request's Origin (or, without one, its
Referer) is the console's own. A scraper or script sends ``Authorization: Bearer <secret>`` on
GET requests instead; a bearer never authorises an action. Secrets are compared with
:func:`hmac.compare_digest` and never logged.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from twisted.web.server import Request

from engine.admin.options import Operators

COOKIE = b"courier_session"
SESSION_IDLE_S = 8 * 3600.0
MAX_SESSIONS = 256
"""Older sessions are forgotten beyond this many, so logging in in a loop cannot fill memory."""


@dataclass
class Session:
    """One logged-in operator; ``csrf`` is the token its action forms carry."""

    operator: str
    csrf: str
    last_seen: float
    notice: str = field(default="")
    """What the last action did, shown once on the next page."""


def find_operator(operators: Operators, name: str, secret: str) -> str | None:
    """``name`` if its secret is ``secret``; every operator is compared, so timing tells nothing."""
    found = None
    for candidate, expected in operators.secrets.items():
        same_name = hmac.compare_digest(candidate.encode(), name.encode())
        same_secret = hmac.compare_digest(expected.encode(), secret.encode())
        if same_name and same_secret:
            found = candidate
    return found


def bearer_operator(operators: Operators, request: Request) -> str | None:
    """The operator whose secret the ``Authorization: Bearer`` header carries, if any."""
    header = request.getHeader(b"authorization") or b""
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not token:
        return None
    found = None
    for name, expected in operators.secrets.items():
        if hmac.compare_digest(expected.encode(), token.strip()):
            found = name
    return found


class Sessions:
    """The open sessions, in memory (a restart logs everyone out)."""

    def __init__(self, clock: Callable[[], float], secure: bool) -> None:
        self._clock = clock
        self._secure = secure
        self._open: OrderedDict[str, Session] = OrderedDict()

    def start(self, request: Request, operator: str) -> Session:
        """A new session for ``operator``, its cookie set on ``request``'s answer."""
        key = secrets.token_urlsafe(32)
        session = Session(operator, secrets.token_urlsafe(32), self._clock())
        self._open[key] = session
        while len(self._open) > MAX_SESSIONS:
            self._open.popitem(last=False)
        request.addCookie(
            COOKIE, key.encode(), path=b"/", httpOnly=True, secure=self._secure, sameSite="strict"
        )
        return session

    def of(self, request: Request) -> Session | None:
        """The request's live session, if its cookie names one."""
        key = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        session = self._open.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > SESSION_IDLE_S:
            del self._open[key]
            return None
        session.last_seen = now
        self._open.move_to_end(key)
        return session

    def end(self, request: Request) -> None:
        key = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        self._open.pop(key, None)
        request.addCookie(
            COOKIE, b"", path=b"/", httpOnly=True, secure=self._secure, sameSite="strict", max_age=0
        )


def same_origin(request: Request) -> bool:
    """Whether the request comes from one of the console's own pages: its Origin (or, when a
    browser sends none, its Referer) names the scheme, host and port it was sent to."""
    host = request.getHeader(b"host")
    if not host:
        return False
    scheme = b"https" if request.isSecure() else b"http"
    origin = request.getHeader(b"origin")
    if origin is None:
        referer = request.getHeader(b"referer")
        if referer is None:
            return False
        parts = urlsplit(referer)
        origin = parts.scheme + b"://" + parts.netloc
    return hmac.compare_digest(origin.lower(), scheme + b"://" + host.lower())


def csrf_matches(session: Session, request: Request) -> bool:
    """Whether the posted ``csrf`` field is the session's token."""
    posted = (request.args.get(b"csrf") or [b""])[0]
    return hmac.compare_digest(posted, session.csrf.encode())
