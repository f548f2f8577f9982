"""The shared part of every vendor sandbox: routing, recording, faults, listening, control API.

A vendor module subclasses :class:`VendorSandbox`, lists its :class:`Route` s and writes
handlers that take a :class:`~courier_sandbox.http.ParsedRequest` and return a
:class:`~courier_sandbox.http.Reply` (or a Deferred of one). Everything under ``/_sandbox/``
is the control API: never faulted, never recorded, no auth (the sandboxes listen on loopback).

Common control routes:
``GET /_sandbox/state`` (the recording), ``POST /_sandbox/faults`` (JSON of
:class:`~courier_sandbox.faults.Faults` settings, plus ``restore_after_s`` to end a refuse
outage by itself), ``POST /_sandbox/reset``, ``POST /_sandbox/config`` (vendor settings such
as webhook URLs) and ``POST /_sandbox/status/<message id>`` (force a status, vendor rules).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from courier_sandbox import webhook
from courier_sandbox.faults import Faults
from courier_sandbox.http import ParsedRequest, Reply, json_reply, parse_request
from courier_sandbox.persistence import StateFile
from courier_sandbox.recording import SandboxState

log = Logger()

Handler = Callable[..., Reply | Deferred[Reply]]
CONTROL_PREFIX = "/_sandbox/"
_FAULT_TEXT = {429: "too many requests", 500: "internal server error", 503: "service unavailable"}


@dataclass(frozen=True)
class Route:
    """``method`` + a full-match path regex; named groups become handler keyword arguments."""

    method: str
    pattern: str
    handler: Handler

    def match(self, path: str) -> re.Match[str] | None:
        return re.fullmatch(self.pattern, path)


@dataclass(frozen=True)
class ServerTLS:
    """PEM files a sandbox serves HTTPS with (see :mod:`courier_sandbox.certs`)."""

    cert_path: str
    key_path: str


class ControlError(Exception):
    """A control request the sandbox refuses; becomes a 4xx on the control API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class VendorSandbox:
    """One vendor's API on loopback. Subclasses provide ``name``, ``routes`` and rules."""

    name = "vendor"
    api_path = ""  # what a client appends to base_url to get the vendor's API base

    def __init__(self, reactor: Any, *, clock: IReactorTime | None = None, seed: int = 0) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.state = SandboxState()
        self.faults = Faults(seed=seed)
        self._seed = seed
        self._timers: list[IDelayedCall] = []
        self._factory = _TrackingSite(_SandboxResource(self))
        self._listening: IListeningPort | None = None
        self._endpoint: Any = None
        self._state_file: StateFile | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.scheme = "http"

    # -- what subclasses provide -------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    def control_routes(self) -> list[Route]:
        """Vendor-specific control routes (paths start with ``/_sandbox/``)."""
        return []

    def configure(self, settings: dict[str, Any]) -> None:
        """Apply vendor settings from ``POST /_sandbox/config``; ValueError when unknown."""
        raise ValueError(f"{self.name} has no settings {sorted(settings)}")

    def force_status(self, message_id: str, change: dict[str, Any]) -> dict[str, Any]:
        """Drive a message to a status (control API); ControlError when the rules forbid it."""
        raise ControlError(404, f"{self.name} has no message statuses")

    def reset_vendor(self) -> None:
        """Forget vendor-specific state (tokens, replies) on reset."""

    def error_reply(self, status: int, detail: str) -> Reply:
        """The vendor's error body; the default is a small JSON object."""
        return json_reply(status, {"error": detail})

    def vendor_snapshot(self) -> dict[str, Any]:
        """What a restarted sandbox must still know besides its messages (tokens, keys), as JSON."""
        return {}

    def restore_vendor(self, saved: dict[str, Any]) -> None:
        """Take back what :meth:`vendor_snapshot` gave."""

    def resume(self, message_id: str) -> None:
        """Schedule again the status changes still ahead of a restored message."""

    # -- state across restarts ---------------------------------------------------------
    def keep_state_in(self, path: Path) -> None:
        """Restore what a previous run saved at ``path`` (tokens issued, messages and their
        statuses, conversations, keys), and save every change there from now on."""
        self._state_file = StateFile(path, self.reactor, self._snapshot)
        saved = self._state_file.load()
        if saved is None:
            return
        self.state.restore(saved["recording"])
        self.restore_vendor(saved["vendor"])
        for message_id in list(self.state.messages):
            self.resume(message_id)

    def _snapshot(self) -> dict[str, Any]:
        return {"recording": self.state.snapshot(), "vendor": self.vendor_snapshot()}

    def changed(self) -> None:
        """Something a restart must keep may have changed: save it soon (when kept)."""
        if self._state_file is not None:
            self._state_file.changed()

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The base URL a client is configured with (the vendor's API root)."""
        return self.base_url + self.api_path

    def listen(
        self, host: str = "127.0.0.1", port: int = 0, tls: ServerTLS | None = None
    ) -> Deferred[VendorSandbox]:
        """Start listening (port 0 picks a free port); fires with self."""
        self.host, self.scheme = host, "https" if tls else "http"
        d = self._make_endpoint(port, tls).listen(self._factory)

        def listening(lp: IListeningPort) -> VendorSandbox:
            self._listening = lp
            self.port = lp.getHost().port
            self._endpoint = self._make_endpoint(self.port, tls)
            return self

        return d.addCallback(listening)

    def _make_endpoint(self, port: int, tls: ServerTLS | None) -> Any:
        if tls is None:
            return TCP4ServerEndpoint(self.reactor, port, interface=self.host)
        # Imported here: pyOpenSSL comes with the optional twisted[tls] extra. The files are
        # loaded by OpenSSL itself; Twisted's PrivateCertificate path hands pyOpenSSL objects
        # over, which pyOpenSSL now deprecates.
        from OpenSSL import SSL
        from twisted.internet import ssl

        context = ssl.DefaultOpenSSLContextFactory(tls.key_path, tls.cert_path)
        context.getContext().set_min_proto_version(SSL.TLS1_2_VERSION)
        return SSL4ServerEndpoint(self.reactor, port, context, interface=self.host)

    def stop(self) -> Deferred[None]:
        """Stop listening, drop open connections and cancel scheduled transitions."""
        self._cancel_timers()
        self._drop_connections()
        if self._state_file is not None:
            self._state_file.flush()
        lp, self._listening, self._endpoint = self._listening, None, None
        return maybeDeferred(lp.stopListening) if lp else succeed(None)

    def set_faults(self, restore_after_s: float | None = None, **changes: Any) -> Deferred[None]:
        """Change fault settings; a "refuse" outage really closes the listening socket."""
        self.faults.update(changes)
        if self.faults.outage == "refuse" and self._listening is not None:
            lp, self._listening = self._listening, None
            # Close open keep-alive connections too, after the current answer (perhaps the
            # control request's own) has been written: a refused server has no connections.
            self.reactor.callLater(0, self._close_connections)
            d = maybeDeferred(lp.stopListening)
            if restore_after_s is not None:
                self.reactor.callLater(restore_after_s, self.set_faults, outage=None)
            return d
        if self.faults.outage != "refuse" and self._listening is None and self._endpoint:
            return self._endpoint.listen(self._factory).addCallback(self._relistened)
        return succeed(None)

    def _relistened(self, lp: IListeningPort) -> None:
        self._listening = lp

    def _drop_connections(self) -> None:
        for transport in self._factory.transports():
            transport.abortConnection()

    def _close_connections(self) -> None:
        for transport in self._factory.transports():
            transport.loseConnection()

    def reset(self) -> Deferred[None]:
        """Back to a fresh sandbox: no recording, no faults (listening again after a refuse
        outage), no timers, no vendor state. Configuration (timings, URLs) stays."""
        self._cancel_timers()
        self.state.reset()
        self.reset_vendor()
        return self.set_faults(**{**Faults.defaults(), "seed": self._seed})

    # -- helpers for subclasses --------------------------------------------------------
    def now(self) -> float:
        return self.clock.seconds()

    def schedule(self, delay_s: float | None, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` after ``delay_s`` on the injected clock; None means never."""
        if delay_s is None:
            return
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self.clock.callLater(delay_s, self._then_changed, fn, *args))

    def _then_changed(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)
        self.changed()

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def deliver_webhook(
        self, kind: str, url: str, body: bytes, headers: dict[str, str]
    ) -> Deferred[dict[str, Any]]:
        """POST to a client webhook and record the outcome (never the body: it may be PHI)."""
        entry: dict[str, Any] = {"kind": kind, "url": url, "at": self.now()}
        self.state.webhooks.append(entry)

        def done(status: int) -> dict[str, Any]:
            entry["status"] = status
            return entry

        def failed(failure: Failure) -> dict[str, Any]:
            entry["error"] = failure.getErrorMessage() or failure.type.__name__
            return entry

        return webhook.post(self.reactor, url, body, headers).addCallbacks(done, failed)

    # -- request handling --------------------------------------------------------------
    def _all_control_routes(self) -> list[Route]:
        return [
            Route("GET", r"/_sandbox/state", self._control_state),
            Route("POST", r"/_sandbox/faults", self._control_faults),
            Route("POST", r"/_sandbox/reset", self._control_reset),
            Route("POST", r"/_sandbox/config", self._control_config),
            Route("POST", r"/_sandbox/status/(?P<message_id>.+)", self._control_status),
            *self.control_routes(),
        ]

    def dispatch(self, request: ParsedRequest, routes: list[Route]) -> Deferred[Reply]:
        allowed = []
        for route in routes:
            found = route.match(request.path)
            if found is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            d = maybeDeferred(route.handler, request, **found.groupdict())
            return d.addErrback(self._handler_failed, request)
        if allowed:
            reply = self.error_reply(405, "method not allowed")
            reply.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return succeed(reply)
        return succeed(self.error_reply(404, "no such resource"))

    def _handler_failed(self, failure: Failure, request: ParsedRequest) -> Reply:
        if failure.check(ControlError):
            return json_reply(failure.value.status, {"error": str(failure.value)})
        log.failure(
            "{sandbox} handler failed for {method} {path}",
            failure,
            sandbox=self.name,
            method=request.method,
            path=request.path,
        )
        return self.error_reply(500, "internal server error")

    def fault_reply(self, fate: str) -> Reply:
        """The vendor's error answer for a drawn fault (a status code as text); 429 and 503
        carry ``Retry-After``."""
        status = int(fate)
        reply = self.error_reply(status, _FAULT_TEXT.get(status, "injected fault"))
        if status in (429, 503):
            reply.headers["Retry-After"] = str(self.faults.retry_after_s)
        return reply

    def _control_state(self, request: ParsedRequest) -> Reply:
        return json_reply(200, {"name": self.name, "faults": self.faults.to_json(), **self.state.to_json()})

    def _control_faults(self, request: ParsedRequest) -> Deferred[Reply]:
        changes = dict(_control_body(request))
        restore = changes.pop("restore_after_s", None)
        try:
            d = self.set_faults(restore_after_s=restore, **changes)
        except ValueError as exc:
            raise ControlError(400, str(exc)) from exc
        return d.addCallback(lambda _: json_reply(200, self.faults.to_json()))

    def _control_reset(self, request: ParsedRequest) -> Deferred[Reply]:
        return self.reset().addCallback(lambda _: json_reply(200, {"reset": self.name}))

    def _control_config(self, request: ParsedRequest) -> Reply:
        try:
            self.configure(_control_body(request))
        except ValueError as exc:
            raise ControlError(400, str(exc)) from exc
        return json_reply(200, {"configured": self.name})

    def _control_status(self, request: ParsedRequest, message_id: str) -> Reply:
        return json_reply(200, self.force_status(message_id, _control_body(request)))


def _control_body(request: ParsedRequest) -> dict[str, Any]:
    if request.json_error or not isinstance(request.json or {}, dict):
        raise ControlError(400, "control requests take a JSON object")
    return request.json or {}


class _TrackedChannel(HTTPChannel):
    """An HTTP/1.1 channel that tells its site when it opens and closes."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.connections.add(self)

    def connectionLost(self, reason: Failure) -> None:
        self.factory.connections.discard(self)
        super().connectionLost(reason)


class _TrackingSite(Site):
    """A Site that knows its open connections, so outages and stop() can close them.

    (``WrappingFactory`` would do this too, but its wrappers break TLS's ALPN.)
    """

    protocol = _TrackedChannel
    noisy = False

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.connections: set[_TrackedChannel] = set()

    def log(self, request: Request) -> None:
        """No access log: query strings carry api keys (Qliq) and message text."""

    def transports(self) -> list[Any]:
        return [channel.transport for channel in list(self.connections)]


class _SandboxResource(Resource):
    """Every request to a sandbox lands here: control API, or faults + record + vendor route."""

    isLeaf = True

    def __init__(self, sandbox: VendorSandbox) -> None:
        super().__init__()
        self.sandbox = sandbox

    def render(self, request: Request) -> int:
        sandbox = self.sandbox
        parsed = parse_request(request)
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        if parsed.path.startswith(CONTROL_PREFIX):
            d = sandbox.dispatch(parsed, sandbox._all_control_routes())
            d.addCallback(_noting_change, sandbox)
            d.addCallback(_write, request, gone)
            return NOT_DONE_YET
        entry = sandbox.state.record(parsed, sandbox.now())
        entry.fault = sandbox.faults.draw()
        if entry.fault == "blackhole":
            return NOT_DONE_YET  # read, recorded, never answered
        if entry.fault is not None:
            d = succeed(sandbox.fault_reply(entry.fault))
        else:
            d = sandbox.dispatch(parsed, sandbox.routes())
        d.addCallback(_noting_change, sandbox)
        latency = sandbox.faults.latency_s
        if latency > 0:
            d.addCallback(_after, sandbox.reactor, latency)
        d.addCallback(_write, request, gone)
        return NOT_DONE_YET


def _noting_change(reply: Reply, sandbox: VendorSandbox) -> Reply:
    sandbox.changed()
    return reply


def _after(reply: Reply, reactor: Any, delay_s: float) -> Deferred[Reply]:
    d: Deferred[Reply] = Deferred()
    reactor.callLater(delay_s, d.callback, reply)
    return d


def _write(reply: Reply, request: Request, gone: list[Failure]) -> None:
    if gone:
        return  # the client went away (e.g. its timeout); nothing to answer
    request.setResponseCode(reply.status)
    for name, value in reply.headers.items():
        request.setHeader(name, value)
    request.write(reply.body)
    request.finish()
