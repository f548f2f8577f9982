"""The pieces of ``courier kpn authorize``: KPN's three-legged OAuth (authorization code).

1. :func:`new_state` and :func:`authorization_url`: the URL the operator opens in a browser.
2. :class:`RedirectReceiver`: a one-shot HTTP listener on loopback that receives the redirect
   with ``code`` and ``state``, and refuses a state that does not match (CSRF).
3. :func:`exchange_code`: POST the code to the token URL (form-encoded) for an access token.

The caller stores the token encrypted and hands it to the destination through a
:class:`~engine.destinations.base.TokenProvider`. KPN documents no refresh token: when the
token expires (3 days in the sandbox) an operator runs the command again.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from engine.destinations.base import DestinationError
from engine.destinations.transport import get_ci, json_body


def new_state() -> str:
    """An unguessable ``state`` for one authorization attempt."""
    return secrets.token_urlsafe(24)


def authorization_url(
    authorize_url: str, *, client_id: str, redirect_uri: str, scope: str, state: str
) -> str:
    """Where the user authorises Courier (KPN's documented GET parameters)."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
        }
    )
    return f"{authorize_url}?{query}"


@dataclass(frozen=True)
class KpnToken:
    """An access token as KPN returns it. ``repr`` hides the token."""

    access_token: str
    scope: str
    token_type: str

    def __repr__(self) -> str:
        return f"KpnToken(access_token='***', scope={self.scope!r}, token_type={self.token_type!r})"


def exchange_code(
    session: requests.Session,
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    timeout: tuple[float, float],
    verify: str | bool = True,
) -> KpnToken:
    """Trade an authorization code for an access token; raises DestinationError on failure."""
    try:
        response = session.post(
            token_url,
            data={
                "client_id": client_id,
                "client_secret": client_secret,
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
            },
            timeout=timeout,
            verify=verify,
            allow_redirects=False,  # a 307/308 would post the client secret again, elsewhere
        )
    except requests.RequestException as exc:
        raise DestinationError(f"KPN token exchange failed: {type(exc).__name__}") from exc
    body = json_body(response)
    token = get_ci(body, "access_token")
    if response.status_code != 200 or not isinstance(token, str) or not token:
        raise DestinationError(f"KPN token exchange failed: HTTP {response.status_code}")
    return KpnToken(token, str(get_ci(body, "scope") or ""), str(get_ci(body, "token_type") or ""))


class RedirectReceiver:
    """Receives the OAuth redirect on ``http://127.0.0.1:<port><path>`` exactly once.

    Loopback only: the code never crosses the network, and plain HTTP is acceptable there
    (RFC 8252 §7.3). Port 0 picks a free port; :attr:`redirect_uri` tells which.
    """

    def __init__(self, expected_state: str, *, port: int = 0, path: str = "/callback") -> None:
        self.expected_state = expected_state
        self.path = path
        self._done = threading.Event()
        self._code: str | None = None
        self._error: str | None = None
        self._server = HTTPServer(("127.0.0.1", port), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @classmethod
    def for_redirect_uri(cls, redirect_uri: str, expected_state: str) -> RedirectReceiver:
        """A receiver on the port and path of a loopback ``redirect_uri`` (the registered one)."""
        url = urlsplit(redirect_uri)
        if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost") or not url.port:
            raise DestinationError(
                "redirect_uri must be http://127.0.0.1:<port>/<path> to receive "
                "the authorization code locally"
            )
        return cls(expected_state, port=url.port, path=url.path or "/")

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def wait(self, timeout: float) -> str:
        """The authorization code; raises DestinationError on timeout, error or bad state."""
        try:
            if not self._done.wait(timeout):
                raise DestinationError("KPN authorization timed out: no redirect received")
            if self._error:
                raise DestinationError(f"KPN authorization failed: {self._error}")
            assert self._code is not None
            return self._code
        finally:
            self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _receive(self, query: dict[str, list[str]]) -> str:
        """Record the redirect's outcome; returns the text shown in the browser."""
        state, code = query.get("state", [""])[0], query.get("code", [""])[0]
        if not secrets.compare_digest(state, self.expected_state):
            self._error = "state does not match: authorization aborted"
        elif not code:
            self._error = query.get("error", ["no code in the redirect"])[0]
        else:
            self._code = code
        self._done.set()
        return self._error or "Courier is authorised. You can close this window."

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != receiver.path or receiver._done.is_set():
                    self.send_error(404)
                    return
                text = receiver._receive(parse_qs(url.query)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: the request line carries the authorization code."""

        return Handler
