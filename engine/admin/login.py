"""``/login`` and ``/logout``: a session for an operator who knows a name and its secret.

A failed login is answered after a second's pause, so secrets cannot be tried quickly, and
logged with the name tried (never the secret). A login and a logout are recorded among the
operators' actions in the store (a failed one is not: the name tried may be a mistyped secret)."""

from __future__ import annotations

import logging

from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from engine.admin.audit import record
from engine.admin.auth import Sessions, find_operator, same_origin
from engine.admin.options import Operators
from engine.admin.pages import e, layout
from engine.store import Store

log = logging.getLogger(__name__)

FAILED_LOGIN_PAUSE_S = 1.0


def form(request: Request, problem: str = "") -> bytes:
    shown = f'<p class="error">{e(problem)}</p>' if problem else ""
    return layout(
        request,
        "Log in",
        '<form method="post" action="/login" class="login"><h2>Log in to the console</h2>'
        f"{shown}"
        '<label>Operator <input type="text" name="name" id="name" autocomplete="username" required></label>'
        '<label>Token or password <input type="password" name="secret" id="secret" '
        'autocomplete="current-password" required></label>'
        '<button type="submit" id="login">Log in</button></form>',
    )


class Login(Resource):
    isLeaf = True

    def __init__(self, operators: Operators, sessions: Sessions, reactor: object, store: Store) -> None:
        super().__init__()
        self._operators = operators
        self._sessions = sessions
        self._reactor = reactor
        self._store = store

    def render_GET(self, request: Request) -> bytes:
        return form(request)

    def render_POST(self, request: Request) -> bytes | int:
        if not same_origin(request):
            request.setResponseCode(403)
            return form(request, "This form was not sent from the console's own page.")
        name = _field(request, b"name")
        operator = find_operator(self._operators, name, _field(request, b"secret"))
        if operator is None:
            log.warning("console: failed login as %r from %s", name[:64], request.getClientAddress().host)
            d = deferLater(self._reactor, FAILED_LOGIN_PAUSE_S, self._refuse, request)
            d.addErrback(lambda _: None)  # the client went away meanwhile
            return NOT_DONE_YET
        self._sessions.start(request, operator)
        host = request.getClientAddress().host
        log.warning("console: operator %s logged in from %s", operator, host)
        record(self._store, operator, "logged in", f"session from {host}")
        request.redirect(b"/")
        return b""

    def _refuse(self, request: Request) -> None:
        request.setResponseCode(401)
        request.write(form(request, "Unknown operator or wrong token."))
        request.finish()


class Logout(Resource):
    """A POST (the root checks its CSRF token and origin) that ends the session."""

    isLeaf = True

    def __init__(self, sessions: Sessions, store: Store) -> None:
        super().__init__()
        self._sessions = sessions
        self._store = store

    def render_POST(self, request: Request) -> bytes:
        session = self._sessions.of(request)
        if session is not None:
            record(self._store, session.operator, "logged out", "session")
        self._sessions.end(request)
        request.redirect(b"/login")
        return b""


def _field(request: Request, name: bytes) -> str:
    return (request.args.get(name) or [b""])[0].decode("utf-8", "replace")
