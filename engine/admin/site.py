"""The admin endpoint's root resource: who may see what, and where each page lives.

Without a login: ``/healthz``, ``/readyz``, ``/login`` and ``/static/``. Everything else needs
an operator: a GET a session cookie or a bearer token (a page without either redirects to
``/login``, anything else answers 401), a POST a session plus its CSRF token and the console's
own origin (401 without a session, 403 for a forged request). ``extra`` mounts more resources
behind the same check, e.g. ``{b"metrics": resource}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files

from twisted.web.resource import Resource
from twisted.web.server import Request

from engine.admin import console, login
from engine.admin.auth import Sessions, bearer_operator, csrf_matches, same_origin
from engine.admin.health import Healthz, Readiness, Readyz
from engine.admin.options import Operators
from engine.store import Store

SECURITY_HEADERS = {
    b"cache-control": b"no-store",
    b"content-security-policy": b"default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
}
PAGES = (b"", b"message")
"""Children a browser opens: without a login they redirect to /login instead of 401."""


class _Refused(Resource):
    isLeaf = True

    def __init__(self, code: int, text: str, headers: Mapping[bytes, bytes] = {}) -> None:
        super().__init__()
        self._code, self._text, self._headers = code, text, headers

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self._code)
        for name, value in self._headers.items():
            request.setHeader(name, value)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self._text.encode() + b"\n"


class _ToLogin(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.redirect(b"/login")
        return b""


class AdminRoot(Resource):
    """Routes each request to its resource once it is allowed (see the module's docstring)."""

    def __init__(
        self,
        operators: Operators,
        sessions: Sessions,
        public: Mapping[bytes, Resource],
        guarded: Mapping[bytes, Resource],
    ) -> None:
        super().__init__()
        self._operators = operators
        self._sessions = sessions
        self._public = dict(public)
        self._guarded = dict(guarded)

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if path in self._public:
            return self._public[path]
        child = self._guarded.get(path)
        if child is None:
            return _Refused(404, "Not found")
        session = self._sessions.of(request)
        if request.method == b"POST":
            if session is None:
                return _Refused(401, "Log in first")
            if not same_origin(request) or not csrf_matches(session, request):
                return _Refused(403, "Refused: this action was not sent from the console's own page")
        elif session is None and bearer_operator(self._operators, request) is None:
            if path in PAGES:
                return _ToLogin()
            return _Refused(401, "Unauthorized", {b"www-authenticate": b'Bearer realm="courier"'})
        request.console_session = session
        return child


class _Static(Resource):
    """One file of ``engine/admin/static``, read once."""

    isLeaf = True

    def __init__(self, name: str, kind: bytes) -> None:
        super().__init__()
        self._data = files("engine.admin").joinpath("static", name).read_bytes()
        self._kind = kind

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self._kind)
        return self._data


def build_admin_site(
    reactor: object,
    store: Store,
    operators: Operators,
    readiness: Readiness,
    engine: console.EngineView,
    *,
    secure: bool,
    extra: Mapping[bytes, Resource] = {},
) -> AdminRoot:
    """The admin endpoint's root; ``secure``: served over TLS (cookies then need it);
    ``extra``: more children behind the operators' check (``/metrics``)."""
    sessions = Sessions(reactor.seconds, secure)
    static = Resource()
    static.putChild(b"console.css", _Static("console.css", b"text/css; charset=utf-8"))
    static.putChild(b"console.js", _Static("console.js", b"text/javascript; charset=utf-8"))
    public = {
        b"healthz": Healthz(),
        b"readyz": Readyz(readiness),
        b"login": login.Login(operators, sessions, reactor, store),
        b"static": static,
    }
    actions = Resource()
    actions.putChild(b"requeue", console.Requeue(store, engine))
    actions.putChild(b"cancel", console.Cancel(store, engine))
    outbox = Resource()
    outbox.putChild(b"skip", console.Skip(store, engine))
    guarded = {
        b"": console.Dashboard(store, engine),
        b"message": console.MessageSearch(store),
        b"deliveries": actions,
        b"outbox": outbox,
        b"reload": console.Reload(store, engine),
        b"logout": login.Logout(sessions, store),
        **extra,
    }
    return AdminRoot(operators, sessions, public, guarded)
